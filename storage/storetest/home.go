package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
)

// Whether someone opened gpubot's Home tab is kept in the file: a mark survives a
// reopen, belongs to one user of one workspace, and marking again changes nothing.
func testHomeOpenedIsRememberedPerUser(t *testing.T, b Backend) {
	ctx := context.Background()
	place := b.Place(t)
	s := b.Open(t, place, time.Now)
	if opened, err := s.HomeOpened(ctx, alice); err != nil || opened {
		t.Fatalf("before any opening: %v, %v; want false", opened, err)
	}
	for range 2 {
		if err := s.MarkHomeOpened(ctx, alice); err != nil {
			t.Fatalf("mark: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = b.Open(t, place, time.Now)
	for _, tc := range []struct {
		user domain.UserRef
		want bool
	}{
		{alice, true},
		{domain.UserRef{TeamID: "T2", UserID: alice.UserID}, false},
		{domain.UserRef{TeamID: alice.TeamID, UserID: "UBOB"}, false},
	} {
		if got, err := s.HomeOpened(ctx, tc.user); err != nil || got != tc.want {
			t.Errorf("HomeOpened(%s) = %v, %v; want %v", tc.user, got, err, tc.want)
		}
	}
	if err := s.MarkHomeOpened(ctx, domain.UserRef{TeamID: "T1"}); err == nil {
		t.Error("a mark for no user was accepted")
	}
}

// The admins' Home reads the untracked instances without counting a listing.
func testOrphansAreReadWithoutASighting(t *testing.T, b Backend) {
	ctx := context.Background()
	s := open(t, b, nil)
	if _, err := s.SightOrphans(ctx, []string{"inst_a"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		seen, err := s.Orphans(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if a := seen["inst_a"]; len(seen) != 1 || a.Count != 1 {
			t.Errorf("Orphans = %+v, want inst_a seen once", seen)
		}
	}
}

func homeCases() []testCase {
	return []testCase{
		{"HomeOpenedIsRememberedPerUser", testHomeOpenedIsRememberedPerUser},
		{"OrphansAreReadWithoutASighting", testOrphansAreReadWithoutASighting},
	}
}
