package storetest

import (
	"context"
	"testing"
	"time"
)

// Sightings of untracked instances count listings in a row, survive a reopen, and are
// forgotten when a run breaks (unreported) or a day after fal stopped listing them
// (reported).
func testOrphanSightingsAreCountedAndPruned(t *testing.T, b Backend) {
	ctx := context.Background()
	clock := newClock()
	place := b.Place(t)
	store := b.Open(t, place, clock.Now)
	first := clock.Now()
	for range 2 {
		if _, err := store.SightOrphans(ctx, []string{"inst_a", "inst_b"}); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	store = b.Open(t, place, clock.Now)
	seen, err := store.SightOrphans(ctx, []string{"inst_a"})
	if err != nil {
		t.Fatal(err)
	}
	if a := seen["inst_a"]; a.Count != 3 || !a.First.Equal(first) {
		t.Errorf("inst_a: %+v, want 3 sightings from %s", a, first)
	}
	if sighting, ok := seen["inst_b"]; ok {
		t.Errorf("inst_b missed a listing but is remembered: %+v", sighting)
	}

	if reported, err := store.MarkOrphanReported(ctx, "inst_a"); err != nil || !reported {
		t.Fatalf("first report: %v, %v", reported, err)
	}
	if again, err := store.MarkOrphanReported(ctx, "inst_a"); err != nil || again {
		t.Fatalf("second report: %v, %v; want not first", again, err)
	}
	seen, err = store.SightOrphans(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !seen["inst_a"].Reported {
		t.Errorf("a reported instance is forgotten as soon as a listing misses it: %+v", seen)
	}
	clock.Advance(24*time.Hour + time.Minute) // a day after it was last listed
	if seen, err = store.SightOrphans(ctx, nil); err != nil || len(seen) != 0 {
		t.Errorf("a day after fal stopped listing it: %+v, %v; want nothing remembered", seen, err)
	}
}

func orphanCases() []testCase {
	return []testCase{
		{"OrphanSightingsAreCountedAndPruned", testOrphanSightingsAreCountedAndPruned},
	}
}
