package storage

import (
	"context"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestMarkSeenFirstThenRepeat(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
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

func TestMarkSeenPrunesExpiredEntries(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})

	for i := range 100 {
		markSeen(t, s, fmt.Sprintf("old-%d", i), 30*time.Minute)
	}
	clock.Advance(31 * time.Minute)
	// Each write prunes a bounded batch, so two writes clear the 100 expired.
	markSeen(t, s, "new-1", 30*time.Minute)
	markSeen(t, s, "new-2", 30*time.Minute)
	if n := seenCount(t, s); n != 2 {
		t.Errorf("%d entries remembered after the old ones expired, want 2", n)
	}
}

func TestMarkSeenMemoryIsBounded(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now, MaxSeen: 50})
	ctx := context.Background()

	for i := range 120 {
		clock.Advance(time.Second)
		markSeen(t, s, fmt.Sprintf("ev-%03d", i), time.Hour)
	}
	if n := seenCount(t, s); n != 50 {
		t.Errorf("%d entries remembered, want the bound of 50", n)
	}
	// The newest are kept, the oldest went first.
	if first, _ := s.MarkSeen(ctx, "ev-119", time.Hour); first {
		t.Error("the newest entry was evicted")
	}
	if first, _ := s.MarkSeen(ctx, "ev-000", time.Hour); !first {
		t.Error("the oldest entry was kept")
	}
}

func markSeen(t *testing.T, s *Store, key string, ttl time.Duration) {
	t.Helper()
	if first, err := s.MarkSeen(context.Background(), key, ttl); err != nil || !first {
		t.Fatalf("MarkSeen(%s) = %v, %v; want a first sighting", key, first, err)
	}
}

func seenCount(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(tx *bolt.Tx) error {
		n = bucket(tx, bucketSeen).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
