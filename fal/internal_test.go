package fal

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestBackoffDoublesWithJitterUpToTheCap(t *testing.T) {
	c := &Client{baseDelay: 200 * time.Millisecond, maxDelay: 5 * time.Second}
	steps := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second, 5 * time.Second}
	for i, step := range steps {
		attempt := i + 1
		for range 200 {
			got := c.backoff(attempt)
			if got < step/2 || got > step {
				t.Fatalf("attempt %d: backoff %s, want within [%s, %s]", attempt, got, step/2, step)
			}
		}
	}
	if got := c.backoff(1000); got > 5*time.Second {
		t.Errorf("attempt 1000: %s, want at most the 5s cap", got)
	}
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[c.backoff(3)] = true
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct waits in 50 draws: no jitter", len(seen))
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 7 ", 7 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999999999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(2 * time.Second).Format(time.RFC850), 2 * time.Second},
	}
	for _, tc := range cases {
		header := http.Header{}
		if tc.value != "" {
			header.Set("Retry-After", tc.value)
		}
		if got := retryAfter(header, now); got != tc.want {
			t.Errorf("Retry-After %q: %s, want %s", tc.value, got, tc.want)
		}
	}
}

func TestSnippetCutsAtARuneBoundary(t *testing.T) {
	body := []byte(strings.Repeat("é", 150)) // 300 bytes
	got := snippet(body, 201)
	if !utf8.ValidString(got) || !strings.HasSuffix(got, "…") || len(got) > 201+len("…") {
		t.Errorf("snippet %q (%d bytes): want valid UTF-8 of at most 201 bytes plus an ellipsis", got, len(got))
	}
	if got := snippet([]byte("short"), 200); got != "short" {
		t.Errorf("short body: %q", got)
	}
}

func TestRetryableStatus(t *testing.T) {
	for status, want := range map[int]bool{429: true, 500: true, 502: true, 503: true, 504: true, 501: false, 400: false, 401: false, 403: false, 404: false, 409: false, 422: false} {
		if got := retryableStatus(status); got != want {
			t.Errorf("status %d: retryable %v, want %v", status, got, want)
		}
	}
}
