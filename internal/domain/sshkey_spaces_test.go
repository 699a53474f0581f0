package domain

import (
	"fmt"
	"strings"
	"testing"
	"unicode"

	"golang.org/x/crypto/ssh"
)

// lineEnds are the blank characters that end a line (as Python's splitlines
// counts them); a key's fields are never split across them.
const lineEnds = "\n\r\v\f\u0085\u2028\u2029"

// unicodeSpaces is every character Unicode counts as blank space within a line:
// the no-break spaces, the typographic ones (en, em, thin, hair…), the ideographic.
func unicodeSpaces() []rune {
	var spaces []rune
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if unicode.IsSpace(r) && !strings.ContainsRune(lineEnds, r) {
			spaces = append(spaces, r)
		}
	}
	return spaces
}

// A key pasted with any kind of space between its fields is the same key.
func TestParsePublicKeyAcceptsEveryKindOfSpace(t *testing.T) {
	edLine, edPub := ed25519Line(t, "me at laptop")
	fields := strings.Fields(edLine)
	for _, space := range unicodeSpaces() {
		t.Run(fmt.Sprintf("U+%04X", space), func(t *testing.T) {
			paste := string(space) + strings.Join(fields, string(space)) + string(space)
			got, err := ParsePublicKey(paste)
			if err != nil {
				t.Fatalf("refused a good key: %v", err)
			}
			if got.AuthorizedKey != edLine || got.Comment != "me at laptop" || got.Fingerprint != ssh.FingerprintSHA256(edPub) {
				t.Errorf("got %+v, want the line %q", got, edLine)
			}
		})
	}
}

// A terminal's hard line breaks inside a long key come in many forms; each is a
// line break, so the key is put back together.
func TestParsePublicKeyRejoinsAcrossEveryKindOfLineBreak(t *testing.T) {
	rsaLine, rsaPub := authorizedLine(t, &rsaKey(t, 2048).PublicKey, "build box")
	for _, lineBreak := range append(strings.Split(lineEnds, ""), "\r\n") {
		t.Run(fmt.Sprintf("%q", lineBreak), func(t *testing.T) {
			paste := strings.ReplaceAll(hardWrap(rsaLine, 80), "\n", lineBreak)
			got, err := ParsePublicKey(paste)
			if err != nil {
				t.Fatalf("refused a wrapped key: %v", err)
			}
			if got.AuthorizedKey != rsaLine || got.Fingerprint != ssh.FingerprintSHA256(rsaPub) {
				t.Errorf("got %+v, want the line %q", got, rsaLine)
			}
		})
	}
}
