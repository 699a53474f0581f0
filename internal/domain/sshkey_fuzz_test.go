package domain

import (
	"errors"
	"slices"
	"testing"
)

// FuzzParsePublicKey checks that no paste makes the parser panic, that every
// refusal is a KeyError with a known reason, and that every accepted key's
// normalized line parses back to the same key. Seeds (valid keys, private
// keys, certificates, junk) are in testdata/fuzz/FuzzParsePublicKey.
func FuzzParsePublicKey(f *testing.F) {
	f.Add("")
	f.Add("```ssh-ed25519```")
	reasons := []string{
		KeyReasonPrivateKey, KeyReasonMultipleKeys, KeyReasonRSATooShort, KeyReasonDSA,
		KeyReasonCertificate, KeyReasonNotAKey, KeyReasonEmpty,
	}
	f.Fuzz(func(t *testing.T, paste string) {
		key, err := ParsePublicKey(paste)
		if err != nil {
			var keyErr *KeyError
			if !errors.As(err, &keyErr) || !slices.Contains(reasons, keyErr.Reason) || keyErr.Message == "" {
				t.Fatalf("refusal is not a proper KeyError: %#v", err)
			}
			return
		}
		again, err := ParsePublicKey(key.AuthorizedKey)
		if err != nil {
			t.Fatalf("accepted %q but refused its normalized line %q: %v", paste, key.AuthorizedKey, err)
		}
		if again.Fingerprint != key.Fingerprint || again.Type != key.Type || again.Bits != key.Bits {
			t.Fatalf("round trip changed the key: %+v then %+v", key, again)
		}
		if key.Fingerprint == "" || key.AuthorizedKey == "" {
			t.Fatalf("accepted key lacks fingerprint or line: %+v", key)
		}
	})
}
