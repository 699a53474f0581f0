package fal

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Error types fal puts in its error body.
const (
	ErrorTypeAuthorization  = "authorization_error"
	ErrorTypeValidation     = "validation_error"
	ErrorTypeNotFound       = "not_found"
	ErrorTypeRateLimited    = "rate_limited"
	ErrorTypeServer         = "server_error"
	ErrorTypeNotImplemented = "not_implemented"
)

// bodySnippetLimit bounds how much of an undocumented error body is kept:
// enough to recognise a proxy's HTML page, not enough to flood a log.
const bodySnippetLimit = 200

// Error is a non-2xx answer from fal (or from a proxy in front of it).
type Error struct {
	Status    int    // HTTP status code
	Type      string // fal's error type, e.g. "validation_error"; empty when the body was not fal's
	Message   string // fal's human-readable message
	RequestID string // fal's request id, for support
	DocsURL   string
	// Body holds the start of the body when it was not fal's documented error
	// shape (e.g. an HTML page from a proxy).
	Body string
	// RetryAfter is the wait the server asked for with Retry-After, if any.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "fal: HTTP %d", e.Status)
	if e.Type != "" {
		fmt.Fprintf(&b, " %s", e.Type)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Body != "" {
		fmt.Fprintf(&b, ": body %q", e.Body)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request_id %s)", e.RequestID)
	}
	return b.String()
}

// errorBody is fal's documented error shape.
type errorBody struct {
	Error *struct {
		Type      string `json:"type"`
		Message   string `json:"message"`
		DocsURL   string `json:"docs_url"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

// parseError builds an Error from a non-2xx response. Everything that came
// from the server passes through redact, since a misbehaving proxy may echo
// request headers back.
func parseError(status int, header http.Header, body []byte, redact func(string) string) *Error {
	e := &Error{Status: status, RetryAfter: retryAfter(header, time.Now())}
	var parsed errorBody
	if json.Unmarshal(body, &parsed) == nil && parsed.Error != nil && parsed.Error.Type != "" {
		e.Type = redact(parsed.Error.Type)
		e.Message = redact(parsed.Error.Message)
		e.DocsURL = redact(parsed.Error.DocsURL)
		e.RequestID = redact(parsed.Error.RequestID)
		return e
	}
	// Redact before cutting, so a key straddling the cut cannot leave a piece behind.
	e.Body = snippet([]byte(redact(string(body))), bodySnippetLimit)
	return e
}

// snippet returns at most limit bytes of body, cut at a rune boundary.
func snippet(body []byte, limit int) string {
	if len(body) <= limit {
		return strings.ToValidUTF8(string(body), "?")
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(body[cut]) {
		cut--
	}
	return strings.ToValidUTF8(string(body[:cut]), "?") + "…"
}

// retryAfter reads Retry-After as seconds or an HTTP-date; 0 when absent,
// unparsable or already past.
func retryAfter(header http.Header, now time.Time) time.Duration {
	value := strings.TrimSpace(header.Get("Retry-After"))
	if value == "" {
		return 0
	}
	if isDigits(value) {
		// A day is far beyond any retry budget; capping keeps the
		// multiplication below from overflowing on absurd values.
		const maxSeconds = int64(24 * time.Hour / time.Second)
		seconds, err := strconv.ParseInt(value, 10, 64)
		if err != nil || seconds > maxSeconds {
			seconds = maxSeconds
		}
		return time.Duration(seconds) * time.Second
	}
	when, err := http.ParseTime(value)
	if err != nil {
		return 0
	}
	return max(when.Sub(now), 0)
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// IsAuthorization reports whether err is fal refusing the API key (401 or 403).
func IsAuthorization(err error) bool {
	e, ok := asError(err)
	return ok && (e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden)
}

// IsValidation reports whether err is a request fal rejected as invalid (400
// or validation_error) or one the client refused to send (ErrInvalidRequest).
func IsValidation(err error) bool {
	if errors.Is(err, ErrInvalidRequest) {
		return true
	}
	e, ok := asError(err)
	return ok && (e.Status == http.StatusBadRequest || e.Type == ErrorTypeValidation)
}

// IsNotFound reports whether err is fal answering 404.
func IsNotFound(err error) bool {
	e, ok := asError(err)
	return ok && e.Status == http.StatusNotFound
}

// IsRateLimited reports whether err is fal answering 429.
func IsRateLimited(err error) bool {
	e, ok := asError(err)
	return ok && e.Status == http.StatusTooManyRequests
}

// IsServer reports whether err is a 5xx from fal or a proxy in front of it.
func IsServer(err error) bool {
	e, ok := asError(err)
	return ok && e.Status >= 500 && e.Status <= 599
}

func asError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
