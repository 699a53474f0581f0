package storage

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/gpubot/gpubot/internal/domain"
)

// Whether someone opened gpubot's Home tab is kept in the file: a mark survives a
// reopen, belongs to one user of one workspace, and marking again changes nothing.
func TestHomeOpenedIsRememberedPerUser(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gpubot.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
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
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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

// A file written before the Home tab existed is brought up to date and keeps its data.
func TestFileFromBeforeHomeTabIsUpgraded(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gpubot.db")
	old, err := openWith(path, Options{}, migrations()[:2]) // schema 2, the last without the Home tab
	if err != nil {
		t.Fatal(err)
	}
	kept := mustCreate(t, old, newRequest(alice, domain.StateApproved))
	_ = old.Close()

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open the older file: %v", err)
	}
	defer s.Close()
	if v := schemaVersionOf(t, s); v != SchemaVersion() {
		t.Errorf("schema %d, want %d", v, SchemaVersion())
	}
	if r, err := s.Request(ctx, kept.ID); err != nil || r.ID != kept.ID {
		t.Errorf("request lost in the upgrade: %v", err)
	}
	if err := s.MarkHomeOpened(ctx, alice); err != nil {
		t.Fatalf("mark after the upgrade: %v", err)
	}
	if opened, err := s.HomeOpened(ctx, alice); err != nil || !opened {
		t.Errorf("after the upgrade: %v, %v; want true", opened, err)
	}
}

// The admins' Home reads the untracked instances without counting a listing.
func TestOrphansAreReadWithoutASighting(t *testing.T) {
	ctx := context.Background()
	s := openTestStore(t, Options{})
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
