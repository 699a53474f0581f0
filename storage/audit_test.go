package storage

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/testkit"
)

func TestAuditTrailInOrderAndPerRequest(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
	ctx := context.Background()

	a := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))
	b := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	mustMove(t, s, a.ID, domain.StateApproved, nil)
	mustMove(t, s, b.ID, domain.StateCreating, nil)
	if err := s.Audit(ctx, domain.AuditEvent{Actor: "gpubot", Action: "orphan_reported", Detail: "inst-x"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if err := s.Audit(ctx, domain.AuditEvent{Actor: "gpubot", Action: "ready_notice", RequestID: a.ID}); err != nil {
		t.Fatal(err)
	}
	if err := s.Audit(ctx, domain.AuditEvent{Actor: "gpubot"}); err == nil {
		t.Error("an event without an action was accepted")
	}

	all, err := s.AuditLog(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantActions := []string{"requested", "requested", "approved", "creating", "orphan_reported", "ready_notice"}
	if len(all) != len(wantActions) {
		t.Fatalf("log has %d events, want %d: %+v", len(all), len(wantActions), all)
	}
	for i, e := range all {
		if e.Action != wantActions[i] || e.Seq != uint64(i+1) {
			t.Errorf("event %d: %+v, want action %s seq %d", i, e, wantActions[i], i+1)
		}
	}
	if !all[5].At.Equal(clock.Now()) {
		t.Errorf("event time %v, want the store clock %v", all[5].At, clock.Now())
	}

	page, _ := s.AuditLog(ctx, 2, 2)
	if len(page) != 2 || page[0].Seq != 3 || page[1].Seq != 4 {
		t.Errorf("page after seq 2: %+v", page)
	}
	forA, _ := s.AuditFor(ctx, a.ID)
	if len(forA) != 3 || forA[0].Action != "requested" || forA[1].Action != "approved" || forA[2].Action != "ready_notice" {
		t.Errorf("audit of a: %+v", forA)
	}
	if none, err := s.AuditFor(ctx, "unknown"); len(none) != 0 || err != nil {
		t.Errorf("audit of an unknown request: %+v, %v", none, err)
	}
}

func TestKeysPerUser(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
	ctx := context.Background()
	line := testkit.KeyLine(t, "me@laptop")
	key, err := domain.ParsePublicKey(line)
	if err != nil {
		t.Fatal(err)
	}
	otherTeam := domain.UserRef{TeamID: "T2", UserID: alice.UserID}

	if _, err := s.Key(ctx, alice); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("key before set: %v", err)
	}
	if err := s.SetKey(ctx, alice, key); err != nil {
		t.Fatalf("set key: %v", err)
	}
	stored, err := s.Key(ctx, alice)
	if err != nil || stored.PublicKey != key || !stored.SetAt.Equal(clock.Now()) {
		t.Errorf("stored key %+v, %v", stored, err)
	}
	if _, err := s.Key(ctx, otherTeam); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("the same user id in another workspace sees the key: %v", err)
	}
	forged := key
	forged.Fingerprint = "SHA256:forged"
	if err := s.SetKey(ctx, alice, forged); err == nil {
		t.Error("a key whose fingerprint does not match its line was stored")
	}
	if err := s.RemoveKey(ctx, alice); err != nil {
		t.Fatalf("remove key: %v", err)
	}
	if err := s.RemoveKey(ctx, alice); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	log, _ := s.AuditLog(ctx, 0, 0)
	if len(log) != 2 || log[0].Action != "key_set" || log[1].Action != "key_removed" ||
		log[0].Detail != key.Fingerprint || log[0].Actor != alice.UserID {
		t.Errorf("key audit: %+v", log)
	}
}
