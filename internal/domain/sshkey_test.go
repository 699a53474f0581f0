package domain

import (
	"crypto/elliptic"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestParsePublicKeyAccepts(t *testing.T) {
	edLine, edPub := ed25519Line(t, "me@laptop")
	bareLine, barePub := ed25519Line(t, "")
	rsaLine, rsaPub := authorizedLine(t, &rsaKey(t, 2048).PublicKey, "build box")
	p256Line, p256Pub := ecdsaLine(t, elliptic.P256(), "")
	p384Line, p384Pub := ecdsaLine(t, elliptic.P384(), "x")
	p521Line, p521Pub := ecdsaLine(t, elliptic.P521(), "y")
	edParts := strings.Fields(edLine)

	cases := []struct {
		name     string
		paste    string
		pub      ssh.PublicKey
		wantType string
		bits     int
		wantLine string
		comment  string
	}{
		{"plain line", edLine, edPub, "ssh-ed25519", 256, edLine, "me@laptop"},
		{"no comment", bareLine, barePub, "ssh-ed25519", 256, bareLine, ""},
		{"surrounding blank space", "\n\t  " + edLine + "  \n\n", edPub, "ssh-ed25519", 256, edLine, "me@laptop"},
		{"backticks", "`" + edLine + "`", edPub, "ssh-ed25519", 256, edLine, "me@laptop"},
		{"slack code fence", "```" + edLine + "```", edPub, "ssh-ed25519", 256, edLine, "me@laptop"},
		{"code fence on own lines", "```\n" + edLine + "\n```\n", edPub, "ssh-ed25519", 256, edLine, "me@laptop"},
		{"windows line ending", edLine + "\r\n", edPub, "ssh-ed25519", 256, edLine, "me@laptop"},
		{"non-breaking spaces", strings.Join(edParts, "\u00a0"), edPub, "ssh-ed25519", 256, edLine, "me@laptop"},
		{"shell prompt line above", "$ cat ~/.ssh/id_ed25519.pub\n" + edLine, edPub, "ssh-ed25519", 256, edLine, "me@laptop"},
		{"slack-linked e-mail comment", edParts[0] + " " + edParts[1] + " <mailto:me@example.com|me@example.com>",
			edPub, "ssh-ed25519", 256, edParts[0] + " " + edParts[1] + " me@example.com", "me@example.com"},
		{"authorized_keys options dropped", `no-pty,from="10.0.0.1" ` + edLine, edPub, "ssh-ed25519", 256, edLine, "me@laptop"},
		{"rsa 2048", rsaLine, rsaPub, "ssh-rsa", 2048, rsaLine, "build box"},
		{"rsa broken over lines by a terminal", hardWrap(rsaLine, 80), rsaPub, "ssh-rsa", 2048, rsaLine, "build box"},
		{"ecdsa p256", p256Line, p256Pub, "ecdsa-sha2-nistp256", 256, p256Line, ""},
		{"ecdsa p384", p384Line, p384Pub, "ecdsa-sha2-nistp384", 384, p384Line, "x"},
		{"ecdsa p521", p521Line, p521Pub, "ecdsa-sha2-nistp521", 521, p521Line, "y"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePublicKey(tc.paste)
			if err != nil {
				t.Fatalf("refused a good key: %v", err)
			}
			want := PublicKey{
				Type: tc.wantType, Bits: tc.bits, Fingerprint: ssh.FingerprintSHA256(tc.pub),
				AuthorizedKey: tc.wantLine, Comment: tc.comment,
			}
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			again, err := ParsePublicKey(got.AuthorizedKey)
			if err != nil || again != got {
				t.Errorf("normalized line does not parse to itself: %+v, %v", again, err)
			}
		})
	}
}

func TestParsePublicKeyRefuses(t *testing.T) {
	edLine, _ := ed25519Line(t, "me@laptop")
	otherLine, _ := ed25519Line(t, "other@laptop")
	rsa1024, _ := authorizedLine(t, &rsaKey(t, 1024).PublicKey, "old")
	openssh := opensshPrivateKey(t)
	edParts := strings.Fields(edLine)

	cases := []struct {
		name, paste, reason string
		says                []string // the message says these, so the user knows what to do
	}{
		{"empty", "", KeyReasonEmpty, []string{"cat ~/.ssh/id_ed25519.pub"}},
		{"only blank space", " \n\t ", KeyReasonEmpty, []string{"cat ~/.ssh/id_ed25519.pub"}},
		{"empty code fence", "``````", KeyReasonEmpty, []string{".pub"}},
		{"openssh private key", openssh, KeyReasonPrivateKey, []string{"Never paste a private key", "exposed", ".pub"}},
		{"private key in code fence", "```\n" + openssh + "```", KeyReasonPrivateKey, []string{"Never paste a private key"}},
		{"pkcs1 rsa private key", pkcs1PrivateKey(t), KeyReasonPrivateKey, []string{"Never paste a private key"}},
		{"pkcs8 private key", pkcs8PrivateKey(t), KeyReasonPrivateKey, []string{"Never paste a private key"}},
		{"pgp private key", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGX\n-----END PGP PRIVATE KEY BLOCK-----",
			KeyReasonPrivateKey, []string{"Never paste a private key"}},
		{"private key body without its header", privateBody(openssh), KeyReasonPrivateKey, []string{"exposed"}},
		{"two keys on two lines", edLine + "\n" + otherLine, KeyReasonMultipleKeys, []string{"2 keys", "exactly one"}},
		{"two keys on one line", edLine + " " + otherLine, KeyReasonMultipleKeys, []string{"exactly one"}},
		{"rsa 1024", rsa1024, KeyReasonRSATooShort, []string{"1024 bits", "at least 2048", "ssh-keygen -t ed25519"}},
		{"dsa", dsaLine(t), KeyReasonDSA, []string{"DSA", "ssh-keygen -t ed25519"}},
		{"certificate", certificateLine(t), KeyReasonCertificate, []string{"not supported", ".pub"}},
		{"prose", "my key is on my laptop", KeyReasonNotAKey, []string{"cat ~/.ssh/id_ed25519.pub"}},
		{"type alone", "ssh-ed25519", KeyReasonNotAKey, []string{"cat ~/.ssh/id_ed25519.pub"}},
		{"cut off", edParts[0] + " " + edParts[1][:40], KeyReasonNotAKey, []string{"cut off"}},
		{"type label does not match data", "ssh-rsa " + edParts[1], KeyReasonNotAKey, []string{"does not match"}},
		{"rfc 4716 public key", "---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----",
			KeyReasonNotAKey, []string{"ssh-keygen -i"}},
		{"pem public key", "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----",
			KeyReasonNotAKey, []string{"ssh-keygen -i -m PKCS8"}},
		{"far too long", strings.Repeat("A", maxKeyPaste+1), KeyReasonNotAKey, []string{"too long"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePublicKey(tc.paste)
			var keyErr *KeyError
			if !errors.As(err, &keyErr) {
				t.Fatalf("want a *KeyError, got %v", err)
			}
			if keyErr.Reason != tc.reason {
				t.Errorf("reason %q, want %q (message %q)", keyErr.Reason, tc.reason, keyErr.Message)
			}
			for _, s := range tc.says {
				if !strings.Contains(keyErr.Message, s) {
					t.Errorf("message %q does not say %q", keyErr.Message, s)
				}
			}
			if echoed := echoedPart(keyErr.Message, tc.paste); echoed != "" {
				t.Errorf("message repeats pasted text %q", echoed)
			}
		})
	}
}

// hardWrap breaks text every width bytes, as some terminals do when
// copying a long line.
func hardWrap(text string, width int) string {
	var b strings.Builder
	for len(text) > width {
		b.WriteString(text[:width] + "\n")
		text = text[width:]
	}
	b.WriteString(text)
	return b.String()
}

// privateBody is the base64 inside a PEM block, as a user might copy it
// without the BEGIN/END lines.
func privateBody(pemText string) string {
	var body []string
	for line := range strings.Lines(pemText) {
		if !strings.HasPrefix(line, "-----") {
			body = append(body, strings.TrimSpace(line))
		}
	}
	return strings.Join(body, "\n")
}

// echoedPart returns a 16-byte piece of the paste found in message, if any.
func echoedPart(message, paste string) string {
	for _, field := range strings.Fields(paste) {
		for i := 0; i+16 <= len(field); i += 8 {
			if piece := field[i : i+16]; strings.Contains(message, piece) {
				return piece
			}
		}
	}
	return ""
}

func TestKeyErrorMessageIsItsError(t *testing.T) {
	_, err := ParsePublicKey(opensshPrivateKey(t))
	var keyErr *KeyError
	if !errors.As(err, &keyErr) || err.Error() != keyErr.Message {
		t.Fatalf("Error() should be the user-facing message, got %q", err)
	}
}
