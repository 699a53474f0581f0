package storage

import (
	"context"
	"testing"
)

func TestClaimWorkIsHeldByOneUntilReleased(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	release, ok, err := s.ClaimWork(ctx, "r1")
	if err != nil || !ok {
		t.Fatalf("first claim: ok %v, err %v", ok, err)
	}
	if _, ok, _ := s.ClaimWork(ctx, "r1"); ok {
		t.Error("a second claim of r1 was granted while the first is held")
	}
	if _, ok, _ := s.ClaimWork(ctx, "r2"); !ok {
		t.Error("a claim of another request was refused")
	}
	release()
	release() // a second release changes nothing
	if _, ok, _ := s.ClaimWork(ctx, "r1"); !ok {
		t.Error("r1 could not be claimed after its release")
	}
}
