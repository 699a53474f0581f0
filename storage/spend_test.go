package storage

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gpubot/gpubot/internal/domain"
)

var bob = domain.UserRef{TeamID: "T1", UserID: "UBOB"}

// machine stores a request of u whose machine became ready at ready and, unless end
// is zero, was deleted at end.
func machine(t *testing.T, s *Store, u domain.UserRef, ready, end time.Time) domain.Request {
	t.Helper()
	r := mustCreate(t, s, newRequest(u, domain.StateApproved))
	for _, to := range []domain.State{domain.StateCreating, domain.StateProvisioning} {
		mustMove(t, s, r.ID, to, nil)
	}
	r = mustMove(t, s, r.ID, domain.StateReady, func(u *domain.Request) error { u.ReadyAt = ready; return nil })
	if end.IsZero() {
		return r
	}
	mustMove(t, s, r.ID, domain.StateDeleting, nil)
	return mustMove(t, s, r.ID, domain.StateDeleted, func(u *domain.Request) error { u.EndedAt = end; return nil })
}

func ids(reqs []domain.Request) []string {
	out := make([]string, 0, len(reqs))
	for _, r := range reqs {
		out = append(out, r.ID)
	}
	slices.Sort(out)
	return out
}

func TestRanDuringFindsTheMachinesOfAWindow(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
	ctx := context.Background()
	march := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	april := march.AddDate(0, 1, 0)
	h := time.Hour
	before := machine(t, s, alice, march.Add(-10*h), march.Add(-2*h))            // February only
	across := machine(t, s, alice, march.Add(-2*h), march.Add(3*h))              // across the month's start
	inside := machine(t, s, bob, march.Add(48*h), march.Add(50*h))               // within March
	endsAtStart := machine(t, s, bob, march.Add(-h), march)                      // ends the moment March begins
	live := machine(t, s, bob, march.Add(100*h), time.Time{})                    // still running
	after := machine(t, s, alice, april.Add(h), april.Add(2*h))                  // April
	spansMonth := machine(t, s, alice, march.Add(-h), april.Add(h))              // all of March
	waiting := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval)) // never ready
	neverReady := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	mustMove(t, s, neverReady.ID, domain.StateFailed, nil)

	got, err := s.RanDuring(ctx, march, april)
	if err != nil {
		t.Fatal(err)
	}
	want := ids([]domain.Request{across, inside, live, spansMonth})
	if !slices.Equal(ids(got), want) {
		t.Errorf("ran in March: %v, want %v (not %s before, %s ending at its start, %s after, %s waiting, %s never ready)",
			ids(got), want, before.ID, endsAtStart.ID, after.ID, waiting.ID, neverReady.ID)
	}
	mine, err := s.RanDuring(ctx, march, april, alice)
	if err != nil {
		t.Fatal(err)
	}
	if want := ids([]domain.Request{across, spansMonth}); !slices.Equal(ids(mine), want) {
		t.Errorf("alice's in March: %v, want %v", ids(mine), want)
	}
	both, err := s.RanDuring(ctx, march, april, alice, bob)
	if err != nil || len(both) != 4 {
		t.Errorf("alice's and bob's: %d requests (%v), want 4", len(both), err)
	}
	if feb, _ := s.RanDuring(ctx, march.AddDate(0, -1, 0), march); !slices.Equal(ids(feb), ids([]domain.Request{before, across, endsAtStart, spansMonth})) {
		t.Errorf("ran in February: %v", ids(feb))
	}
}

// A file written before the index existed gets it when opened: its finished machines
// are found like new ones.
func TestRanDuringFindsMachinesStoredBeforeTheIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpubot.db")
	clock := newTestClock()
	s, err := Open(path, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	march := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	old := machine(t, s, alice, march.Add(time.Hour), march.Add(5*time.Hour))
	// Back to schema 1: the index and its entries gone, as an older gpubot left the file.
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte(bucketByEnd)); err != nil {
			return err
		}
		return bucket(tx, bucketMeta).Put([]byte(metaSchemaKey), []byte("1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	s, err = Open(path, Options{Now: clock.Now})
	if err != nil {
		t.Fatalf("open a schema 1 file: %v", err)
	}
	defer s.Close()
	got, err := s.RanDuring(context.Background(), march, march.AddDate(0, 1, 0))
	if err != nil || len(got) != 1 || got[0].ID != old.ID {
		t.Fatalf("after the upgrade found %v (%v), want %s", ids(got), err, old.ID)
	}
	if err := checkConsistent(s); err != nil {
		t.Error(err)
	}
}
