package storetest

import (
	"context"
	"testing"
	"time"
)

func testMarkSeenFirstThenRepeat(t *testing.T, b Backend) {
	clock := newClock()
	s := open(t, b, clock)
	ctx := context.Background()

	steps := []struct {
		advance time.Duration
		key     string
		first   bool
	}{
		{0, "Ev01", true},
		{0, "Ev01", false},                // redelivered at once
		{0, "Ev02", true},                 // another envelope
		{29 * time.Minute, "Ev01", false}, // still within its 30 minutes
		{time.Minute, "Ev01", true},       // 30 minutes on: forgotten, new again
		{time.Second, "Ev01", false},
	}
	for i, step := range steps {
		clock.Advance(step.advance)
		first, err := s.MarkSeen(ctx, step.key, 30*time.Minute)
		if err != nil || first != step.first {
			t.Errorf("step %d: MarkSeen(%s) = %v, %v; want %v", i, step.key, first, err, step.first)
		}
	}
	for _, bad := range []struct {
		key string
		ttl time.Duration
	}{{"", time.Minute}, {"x", 0}, {string(make([]byte, 2000)), time.Minute}} {
		if _, err := s.MarkSeen(ctx, bad.key, bad.ttl); err == nil {
			t.Errorf("MarkSeen(%d-byte key, %v) accepted", len(bad.key), bad.ttl)
		}
	}
}

func seenCases() []testCase {
	return []testCase{
		{"MarkSeenFirstThenRepeat", testMarkSeenFirstThenRepeat},
	}
}
