package bot_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// ed25519Fields is a fresh public key as an authorized_keys line, in its fields.
func ed25519Fields(t *testing.T, comment string) []string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return append(strings.Fields(string(ssh.MarshalAuthorizedKey(sshPub))), comment)
}

// A key pasted after `/gpu key set` with no-break or other Unicode spaces, as some
// editors and chat clients paste them, is the same key.
func TestKeySetWithUnicodeSpaces(t *testing.T) {
	h := start(t)
	for _, space := range []string{"\u00a0", "\u202f", "\u3000", "\u2009"} {
		fields := ed25519Fields(t, "me@laptop")
		got := h.command(alice, general, "key"+space+"set"+space+strings.Join(fields, space))
		if !strings.Contains(got, "Saved your ssh-ed25519 key") {
			t.Fatalf("key set with U+%04X between the words answered %q", []rune(space)[0], got)
		}
	}
}
