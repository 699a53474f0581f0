package fal

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzParseError feeds arbitrary bodies through the error parser: it must
// not panic, must keep Body short, and must never let the key through.
func FuzzParseError(f *testing.F) {
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		const key = "fuzz-secret-key"
		c := &Client{apiKey: key}
		e := parseError(status, http.Header{}, body, c.redact)
		if len(e.Body) > bodySnippetLimit+len("…") {
			t.Errorf("Body kept %d bytes", len(e.Body))
		}
		if strings.Contains(e.Error(), key) {
			t.Errorf("key in error %q", e.Error())
		}
	})
}
