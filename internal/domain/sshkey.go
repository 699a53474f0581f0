package domain

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/crypto/ssh"
)

// PublicKey is a validated SSH public key as gpubot stores and installs it.
type PublicKey struct {
	Type          string `json:"type"`           // "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", ...
	Bits          int    `json:"bits,omitempty"` // key size where it applies
	Fingerprint   string `json:"fingerprint"`    // "SHA256:..."
	AuthorizedKey string `json:"authorized_key"` // one authorized_keys line: "type base64 [comment]"
	Comment       string `json:"comment,omitempty"`
}

// Reasons a pasted text is refused as a key. They are machine-readable and
// stable; KeyError.Message is what the user reads.
const (
	KeyReasonPrivateKey   = "private_key"
	KeyReasonMultipleKeys = "multiple_keys"
	KeyReasonRSATooShort  = "rsa_too_short"
	KeyReasonDSA          = "dsa"
	KeyReasonCertificate  = "certificate"
	KeyReasonNotAKey      = "not_a_key"
	KeyReasonEmpty        = "empty"
)

// MinRSABits is the smallest RSA key accepted.
const MinRSABits = 2048

// maxKeyPaste bounds the text looked at; the largest RSA public key line is
// well under 4 KiB.
const maxKeyPaste = 16 << 10

// maxCommentRunes keeps a key's comment short enough to show in Slack.
const maxCommentRunes = 200

const pasteHint = "Paste the one line from your .pub file, e.g. the output of `cat ~/.ssh/id_ed25519.pub` " +
	"(it starts with `ssh-ed25519` or `ssh-rsa`). No key yet? Make one with `ssh-keygen -t ed25519`."

// KeyError says why a pasted text is not accepted as a public key. Message
// never repeats what was pasted.
type KeyError struct {
	Reason  string // one of the KeyReason constants
	Message string // for the user: what is wrong and what to paste instead
}

func (e *KeyError) Error() string { return e.Message }

func keyError(reason, message string) *KeyError {
	return &KeyError{Reason: reason, Message: message}
}

func notAKey(problem string) *KeyError {
	return keyError(KeyReasonNotAKey, problem+" "+pasteHint)
}

// ParsePublicKey validates a public key pasted by a user and returns it in
// normalized form. It tolerates what Slack and terminals add around a key
// (surrounding blank space, backticks, code fences, a prompt line) and refuses,
// with a *KeyError, anything that is not exactly one usable public key.
func ParsePublicKey(text string) (PublicKey, error) {
	text = cleanPaste(text)
	if text == "" {
		return PublicKey{}, keyError(KeyReasonEmpty, "No key was given. "+pasteHint)
	}
	if looksLikePrivateKey(text) {
		return PublicKey{}, keyError(KeyReasonPrivateKey,
			"That is a PRIVATE key. Never paste a private key anywhere, not even here. "+
				"gpubot did not store it, but consider it exposed: make a new key pair with `ssh-keygen -t ed25519` "+
				"and remove the old public key wherever it is authorized. "+
				"Then paste the contents of the .pub file, e.g. the output of `cat ~/.ssh/id_ed25519.pub`.")
	}
	if len(text) > maxKeyPaste {
		return PublicKey{}, notAKey("That is far too long to be an SSH public key.")
	}
	if err := otherKeyFormat(text); err != nil {
		return PublicKey{}, err
	}
	candidates := findKeyLines(text)
	switch {
	case len(candidates) == 0:
		return PublicKey{}, notAKey("That doesn't look like an SSH public key.")
	case len(candidates) > 1:
		return PublicKey{}, keyError(KeyReasonMultipleKeys,
			fmt.Sprintf("That is %d keys; gpubot takes exactly one. Paste a single public key: one line like "+
				"`ssh-ed25519 AAAA… you@laptop`, e.g. the output of `cat ~/.ssh/id_ed25519.pub`.", len(candidates)))
	}
	return candidates[0].parse()
}

// lineBreaks are the characters that end a line, as editors and terminals
// write them (Python's splitlines counts the same): a key broken over lines by
// any of them is put back together.
const lineBreaks = "\n\r\v\f\u0085\u2028\u2029"

// cleanPaste removes what pasting through Slack adds around a key: invisible
// and control characters, odd blank space (every kind of space is a space, every
// kind of line break a line break), backticks and code fences, and
// Slack's links around e-mail addresses.
func cleanPaste(text string) string {
	text = strings.ToValidUTF8(text, "")
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.Map(func(r rune) rune {
		switch {
		case strings.ContainsRune(lineBreaks, r):
			return '\n'
		case unicode.IsSpace(r):
			return ' '
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			return -1
		}
		return r
	}, text)
	text = unlinkEmails(text)
	return strings.Trim(text, "` \n")
}

// unlinkEmails undoes Slack's linking of e-mail addresses in message text:
// "<mailto:a@b|a@b>" becomes "a@b". (The &, <, > entities of a slash command's
// text are decoded where the command is read, so the text here is as typed.)
func unlinkEmails(text string) string {
	var out strings.Builder
	for {
		start := strings.Index(text, "<mailto:")
		if start < 0 {
			break
		}
		end := strings.IndexByte(text[start:], '>')
		if end < 0 {
			break
		}
		link := text[start+1 : start+end]
		shown := strings.TrimPrefix(link, "mailto:")
		if bar := strings.IndexByte(link, '|'); bar >= 0 {
			shown = link[bar+1:]
		}
		out.WriteString(text[:start])
		out.WriteString(shown)
		text = text[start+end+1:]
	}
	out.WriteString(text)
	return out.String()
}

// looksLikePrivateKey matches on the text with blank space squeezed, so the
// verdict does not change when a key's comment is normalized.
func looksLikePrivateKey(text string) bool {
	upper := squeezedUpper(text)
	armored := strings.Contains(upper, "-----BEGIN") || strings.Contains(upper, "---- BEGIN")
	return armored && strings.Contains(upper, "PRIVATE KEY") || // PEM, OpenSSH, PGP, RFC 4716
		strings.Contains(upper, "PUTTY-USER-KEY-FILE") ||
		strings.Contains(text, "b3BlbnNzaC1rZXktdjE") // base64 of "openssh-key-v1": an OpenSSH private key body
}

// otherKeyFormat recognizes public keys in formats other than OpenSSH's one
// line, so the answer can say how to convert them.
func otherKeyFormat(text string) *KeyError {
	upper := squeezedUpper(text)
	switch {
	case strings.Contains(upper, "BEGIN SSH2 PUBLIC KEY"):
		return notAKey("That is a public key in RFC 4716 (SSH2) format; gpubot needs the OpenSSH one-line format. " +
			"Convert it with `ssh-keygen -i -f key.pub`.")
	case strings.Contains(upper, "BEGIN PUBLIC KEY") || strings.Contains(upper, "BEGIN RSA PUBLIC KEY"):
		return notAKey("That is a PEM public key; gpubot needs the OpenSSH one-line format. " +
			"Convert it with `ssh-keygen -i -m PKCS8 -f key.pem`.")
	case strings.Contains(upper, "-----BEGIN"):
		return notAKey("That is not an SSH public key (it is some other kind of PEM block).")
	}
	return nil
}

func squeezedUpper(text string) string {
	return strings.Join(strings.Fields(strings.ToUpper(text)), " ")
}

// keyLine is a candidate key found in a paste: a key type name followed by
// base64 data.
type keyLine struct {
	typ, data, comment string
	// following are the lines after the key's, for when a terminal broke a
	// long key over several lines.
	following []string
}

// findKeyLines finds every "type AAAA…" pair in text. Lines without one
// (a shell prompt, a fence's language tag) are ignored; a second pair, even
// on the same line, counts as a second key.
func findKeyLines(text string) []keyLine {
	var found []keyLine
	lines := strings.Split(text, "\n")
	for n, line := range lines {
		fields := strings.Fields(line)
		for i := 0; i+1 < len(fields); i++ {
			if !isAlgorithmName(fields[i]) || !strings.HasPrefix(fields[i+1], "AAAA") {
				continue
			}
			k := keyLine{typ: fields[i], data: fields[i+1]}
			rest := fields[i+2:]
			if next := nextKeyStart(rest); next >= 0 {
				rest = rest[:next]
			}
			k.comment = strings.Join(rest, " ")
			if len(fields) == i+2 {
				k.following = lines[n+1:]
			}
			found = append(found, k)
			i++
		}
	}
	return found
}

func nextKeyStart(fields []string) int {
	for i := 0; i+1 < len(fields); i++ {
		if isAlgorithmName(fields[i]) && strings.HasPrefix(fields[i+1], "AAAA") {
			return i
		}
	}
	return -1
}

// isAlgorithmName reports whether s could name an SSH key algorithm, such as
// "ssh-ed25519" or "sk-ecdsa-sha2-nistp256@openssh.com". Every key blob
// starts with a 4-byte length below 2^24, which is why real key data always
// begins with "AAAA".
func isAlgorithmName(s string) bool {
	if len(s) < 3 || len(s) > 64 || !strings.Contains(s, "-") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '@' || r == '.') {
			return false
		}
	}
	return true
}

// acceptedType reports whether t is a key type the GPU machines' OpenSSH
// server takes.
func acceptedType(t string) bool {
	switch t {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoRSA, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
		return true
	}
	return false
}

func isCertificateType(t string) bool { return strings.Contains(t, "-cert-v0") }

func certificateError() *KeyError {
	return keyError(KeyReasonCertificate,
		"That is an SSH certificate, and certificates are not supported. Paste the plain public key instead: "+
			"the .pub file without `-cert` in its name, e.g. the output of `cat ~/.ssh/id_ed25519.pub`.")
}

func dsaError() *KeyError {
	return keyError(KeyReasonDSA,
		"That is a DSA (ssh-dss) key: DSA is insecure and modern OpenSSH refuses it. "+
			"Make a new key with `ssh-keygen -t ed25519` and paste the output of `cat ~/.ssh/id_ed25519.pub`.")
}

func (k keyLine) parse() (PublicKey, error) {
	switch {
	case isCertificateType(k.typ):
		return PublicKey{}, certificateError()
	case k.typ == ssh.InsecureKeyAlgoDSA:
		return PublicKey{}, dsaError()
	}
	k = k.rejoined()
	blob, err := base64.StdEncoding.DecodeString(k.data)
	if err != nil {
		return PublicKey{}, notAKey("The key data is damaged or cut off (was the line copied whole?).")
	}
	switch embedded := blobType(blob); {
	case isCertificateType(embedded):
		return PublicKey{}, certificateError()
	case embedded == ssh.InsecureKeyAlgoDSA:
		return PublicKey{}, dsaError()
	}
	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return PublicKey{}, notAKey("The key data is damaged, cut off, or of a type gpubot does not know.")
	}
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return PublicKey{}, certificateError()
	}
	if pub.Type() != k.typ {
		return PublicKey{}, notAKey("The key's type label does not match its data (was the line edited?).")
	}
	if !acceptedType(pub.Type()) {
		return PublicKey{}, notAKey("That key type is not supported on the GPU machines; use an ed25519, RSA or ECDSA key.")
	}
	bits := keyBits(pub)
	if pub.Type() == ssh.KeyAlgoRSA && bits < MinRSABits {
		return PublicKey{}, keyError(KeyReasonRSATooShort, fmt.Sprintf(
			"That RSA key is only %d bits; gpubot needs at least %d. Make a new key with `ssh-keygen -t ed25519` "+
				"and paste the output of `cat ~/.ssh/id_ed25519.pub`.", bits, MinRSABits))
	}
	comment := shortComment(k.comment)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return PublicKey{
		Type:          pub.Type(),
		Bits:          bits,
		Fingerprint:   ssh.FingerprintSHA256(pub),
		AuthorizedKey: line,
		Comment:       comment,
	}, nil
}

// maxWrappedLines bounds how many lines a broken key is rejoined from.
const maxWrappedLines = 64

// rejoined undoes a terminal's hard line breaks inside a key: when the data
// alone is not a key, the first word of each following line that is all
// base64 is appended until the data parses. It returns k unchanged when no
// such joining gives a key.
func (k keyLine) rejoined() keyLine {
	if len(k.following) == 0 || isKeyData(k.data) {
		return k
	}
	data := k.data
	for i, line := range k.following {
		fields := strings.Fields(line)
		if i >= maxWrappedLines || len(fields) == 0 || !isBase64Text(fields[0]) {
			break
		}
		data += fields[0]
		if isKeyData(data) {
			return keyLine{typ: k.typ, data: data, comment: strings.Join(fields[1:], " ")}
		}
	}
	return k
}

func isKeyData(data string) bool {
	blob, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return false
	}
	_, err = ssh.ParsePublicKey(blob)
	return err == nil
}

func isBase64Text(s string) bool {
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '=') {
			return false
		}
	}
	return true
}

// blobType reads the algorithm name every SSH key blob starts with.
func blobType(blob []byte) string {
	if len(blob) < 4 {
		return ""
	}
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) {
		return ""
	}
	return string(blob[4 : 4+n])
}

func keyBits(pub ssh.PublicKey) int {
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519:
		return 256
	case ssh.KeyAlgoECDSA256, ssh.KeyAlgoSKECDSA256:
		return 256
	case ssh.KeyAlgoECDSA384:
		return 384
	case ssh.KeyAlgoECDSA521:
		return 521
	}
	if c, ok := pub.(ssh.CryptoPublicKey); ok {
		if k, ok := c.CryptoPublicKey().(*rsa.PublicKey); ok {
			return k.N.BitLen()
		}
	}
	return 0
}

func shortComment(comment string) string {
	comment = strings.Join(strings.Fields(comment), " ")
	if r := []rune(comment); len(r) > maxCommentRunes {
		comment = strings.TrimSpace(string(r[:maxCommentRunes]))
	}
	return comment
}
