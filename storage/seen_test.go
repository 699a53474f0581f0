package storage

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"

	bolt "go.etcd.io/bbolt"
)

// A write made with no envelope remembers nothing: the memory of seen keys
// holds only what a redelivery or a throttle needs.
func TestWithoutEnvelopeNothingIsRemembered(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	for range 2 {
		if err := s.CreateRequest(ctx, newRequest(alice, domain.StateApproved), domain.ForEnvelope("", []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	if n := seenCount(t, s); n != 0 {
		t.Errorf("%d entries remembered for writes with no envelope, want 0", n)
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
