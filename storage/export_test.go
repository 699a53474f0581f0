package storage

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/testkit"
)

// Export gives every request, key, audit event, live seen key and orphan
// sighting, as the store's own reads give them, and nothing expired.
func TestExportGivesEverythingTheStoreHolds(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
	ctx := context.Background()
	odd := domain.UserRef{TeamID: "T/2", UserID: "U odd"}
	key, err := domain.ParsePublicKey(testkit.KeyLine(t, "odd@laptop"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetKey(ctx, odd, key); err != nil {
		t.Fatal(err)
	}
	a := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	b := newRequest(odd, domain.StateAwaitingApproval)
	if err := s.CreateRequest(ctx, b, domain.ForEnvelope("Ev1", []byte("answer"))); err != nil {
		t.Fatal(err)
	}
	mustMove(t, s, b.ID, domain.StateDenied, nil)
	if _, err := s.MarkSeen(ctx, "alert:short", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkHomeOpened(ctx, odd); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	if _, err := s.SightOrphans(ctx, []string{"inst-x"}); err != nil {
		t.Fatal(err)
	}

	var requests []domain.Request
	var keys []UserKey
	var audit []domain.AuditEvent
	seen := map[string]string{}
	var orphans map[string]domain.OrphanSighting
	var seq uint64
	var homes []HomeMark
	err = s.Export(ctx, func(r Record) error {
		switch {
		case r.Request != nil:
			requests = append(requests, *r.Request)
		case r.Key != nil:
			keys = append(keys, *r.Key)
		case r.Audit != nil:
			audit = append(audit, *r.Audit)
		case r.Seen != nil:
			seen[r.Seen.Key] = string(r.Seen.Value)
		case r.Orphans != nil:
			orphans = r.Orphans
		case r.AuditSeq != nil:
			seq = *r.AuditSeq
		case r.Home != nil:
			homes = append(homes, *r.Home)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantA, _ := s.Request(ctx, a.ID)
	wantB, _ := s.Request(ctx, b.ID)
	if len(requests) != 2 || !reflect.DeepEqual(map[string]domain.Request{requests[0].ID: requests[0], requests[1].ID: requests[1]},
		map[string]domain.Request{a.ID: wantA, b.ID: wantB}) {
		t.Errorf("requests exported: %+v", requests)
	}
	storedKey, _ := s.Key(ctx, odd)
	if len(keys) != 1 || keys[0].User != odd || keys[0].Key != storedKey {
		t.Errorf("keys exported: %+v", keys)
	}
	wantAudit, _ := s.AuditLog(ctx, 0, 0)
	if !reflect.DeepEqual(audit, wantAudit) || seq != wantAudit[len(wantAudit)-1].Seq {
		t.Errorf("audit exported: %+v (sequence %d), want %+v", audit, seq, wantAudit)
	}
	if len(seen) != 1 || seen["envelope:Ev1"] != "answer" {
		t.Errorf("seen keys exported: %q; want the envelope with its answer, not the expired throttle", seen)
	}
	if len(homes) != 1 || homes[0].User != odd || !homes[0].At.Equal(clock.Now().Add(-2*time.Minute)) {
		t.Errorf("home marks exported: %+v, want %s's", homes, odd)
	}
	wantOrphans, _ := s.SightOrphans(ctx, []string{"inst-x"})
	if orphans["inst-x"].Count != 1 || wantOrphans["inst-x"].Count != 2 {
		t.Errorf("orphans exported: %+v", orphans)
	}
}
