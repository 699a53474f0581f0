package storage

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/gpubot/gpubot/internal/domain"
)

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
