package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gpubot/gpubot/internal/domain"
)

func TestCreateRequestFillsIdentityAndAudits(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
	ctx := context.Background()

	r := newRequest(alice, domain.StateAwaitingApproval)
	if err := s.CreateRequest(ctx, r); err != nil {
		t.Fatalf("create: %v", err)
	}
	if uuid.Validate(r.ID) != nil || uuid.Validate(r.IdempotencyKey) != nil || r.ID == r.IdempotencyKey {
		t.Errorf("id %q and idempotency key %q should be distinct UUIDs", r.ID, r.IdempotencyKey)
	}
	if r.Version != 1 || !r.CreatedAt.Equal(clock.Now()) || !r.UpdatedAt.Equal(clock.Now()) {
		t.Errorf("version/times not set: %+v", r)
	}
	stored, err := s.Request(ctx, r.ID)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	if fmt.Sprint(stored) != fmt.Sprint(*r) {
		t.Errorf("stored %+v\nwant   %+v", stored, *r)
	}
	events, err := s.AuditFor(ctx, r.ID)
	if err != nil || len(events) != 1 || events[0].Action != "requested" || events[0].Actor != alice.UserID {
		t.Errorf("audit = %+v, %v; want one \"requested\" by the requester", events, err)
	}
}

func TestCreateRequestRefusesBadInput(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	for _, state := range []domain.State{domain.StateCreating, domain.StateReady, domain.StateDeleted, ""} {
		if err := s.CreateRequest(ctx, newRequest(alice, state)); err == nil {
			t.Errorf("created a request in state %q", state)
		}
	}
	if err := s.CreateRequest(ctx, newRequest(domain.UserRef{TeamID: "T1"}, domain.StateApproved)); err == nil {
		t.Error("created a request with no user")
	}
	first := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	dup := newRequest(alice, domain.StateApproved)
	dup.ID = first.ID
	if err := s.CreateRequest(ctx, dup); !errors.Is(err, domain.ErrDuplicate) {
		t.Errorf("reusing an id: got %v, want domain.ErrDuplicate", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.CreateRequest(canceled, newRequest(alice, domain.StateApproved)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: got %v", err)
	}
}

func TestMoveEveryPairThroughTheStore(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	for _, from := range domain.AllStates() {
		for _, to := range domain.AllStates() {
			r := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))
			forceState(t, s, r.ID, from)
			moved, err := s.Move(ctx, r.ID, to, "UADMIN", "", nil)
			if domain.CanMove(from, to) {
				if err != nil || moved.State != to {
					t.Errorf("%s -> %s: legal move failed: %v", from, to, err)
				}
				continue
			}
			var moveErr *domain.MoveError
			if !errors.As(err, &moveErr) || !errors.Is(err, domain.ErrIllegalMove) {
				t.Errorf("%s -> %s: got %v, want a *domain.MoveError", from, to, err)
				continue
			}
			if moveErr.From != from || moveErr.To != to || moveErr.Current.State != from {
				t.Errorf("%s -> %s: domain.MoveError %+v", from, to, moveErr)
			}
		}
	}
}

func TestMoveAppliesEditAuditsAndBumpsVersion(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))

	clock.Advance(time.Minute)
	approved, err := s.Move(ctx, r.ID, domain.StateApproved, "UBOSS", "looks fine", func(r *domain.Request) error {
		r.ApproverID = "UBOSS"
		return nil
	})
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	if approved.State != domain.StateApproved || approved.ApproverID != "UBOSS" || approved.Version != 2 ||
		!approved.UpdatedAt.Equal(clock.Now()) || !approved.DecidedAt.Equal(clock.Now()) {
		t.Errorf("approved request: %+v", approved)
	}
	events, _ := s.AuditFor(ctx, r.ID)
	last := events[len(events)-1]
	if len(events) != 2 || last.Action != "approved" || last.Actor != "UBOSS" || last.Detail != "looks fine" {
		t.Errorf("audit after approval: %+v", events)
	}

	_, err = s.Move(ctx, r.ID, domain.StateCreating, "gpubot", "", func(r *domain.Request) error {
		r.ID = "something else"
		return nil
	})
	if err == nil {
		t.Error("an edit changed the id")
	}
	boom := errors.New("fal said no")
	if _, err := s.Move(ctx, r.ID, domain.StateCreating, "gpubot", "", func(*domain.Request) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("edit error: got %v", err)
	}
	after, _ := s.Request(ctx, r.ID)
	if after.State != domain.StateApproved || after.Version != 2 {
		t.Errorf("a failed edit changed the request: %+v", after)
	}
	if _, err := s.MoveFrom(ctx, r.ID, []domain.State{domain.StateAwaitingApproval}, domain.StateCancelled, "UALICE", "", nil); !errors.Is(err, domain.ErrIllegalMove) {
		t.Errorf("MoveFrom with a stale from: got %v", err)
	}
	if _, err := s.Move(ctx, "no-such-id", domain.StateCancelled, "UALICE", "", nil); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("unknown id: got %v", err)
	}
}

func TestMoveFillsLifeTimes(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
	r := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	mustMove(t, s, r.ID, domain.StateCreating, nil)
	mustMove(t, s, r.ID, domain.StateProvisioning, func(r *domain.Request) error { r.InstanceID = "inst-1"; return nil })
	clock.Advance(3 * time.Minute)
	readyAt := clock.Now()
	ready := mustMove(t, s, r.ID, domain.StateReady, func(r *domain.Request) error { r.IP = "10.1.2.3"; return nil })
	if !ready.ReadyAt.Equal(readyAt) || !ready.ExpiresAt.Equal(readyAt.Add(8*time.Hour)) {
		t.Errorf("ready at %v expires %v; the lifetime counts from ready", ready.ReadyAt, ready.ExpiresAt)
	}
	clock.Advance(time.Hour)
	mustMove(t, s, r.ID, domain.StateDeleting, nil)
	ended := mustMove(t, s, r.ID, domain.StateDeleted, func(r *domain.Request) error { r.EndReason = "deleted by UALICE"; return nil })
	if !ended.EndedAt.Equal(clock.Now()) || ended.Live() || ended.Version != 6 {
		t.Errorf("ended request: %+v", ended)
	}
}

// Twenty approvers click Approve at once: exactly one wins, and every other
// learns who did.
func TestConcurrentApprovalHasOneWinner(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))

	const approvers = 20
	var wg sync.WaitGroup
	results := make([]error, approvers)
	start := make(chan struct{})
	for i := range approvers {
		wg.Go(func() {
			<-start
			approver := fmt.Sprintf("UAPPROVER%02d", i)
			_, results[i] = s.Move(ctx, r.ID, domain.StateApproved, approver, "", func(r *domain.Request) error {
				r.ApproverID = approver
				return nil
			})
		})
	}
	close(start)
	wg.Wait()

	final, err := s.Request(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	wins := 0
	for i, err := range results {
		if err == nil {
			wins++
			if want := fmt.Sprintf("UAPPROVER%02d", i); final.ApproverID != want {
				t.Errorf("winner %s but stored approver %s", want, final.ApproverID)
			}
			continue
		}
		var moveErr *domain.MoveError
		if !errors.As(err, &moveErr) {
			t.Errorf("loser %d got %v, want *domain.MoveError", i, err)
			continue
		}
		if moveErr.Current.ApproverID != final.ApproverID || moveErr.Current.State != domain.StateApproved {
			t.Errorf("loser %d was told %q won, want %q", i, moveErr.Current.ApproverID, final.ApproverID)
		}
	}
	if wins != 1 || final.Version != 2 {
		t.Errorf("%d approvals succeeded (version %d), want exactly 1", wins, final.Version)
	}
	events, _ := s.AuditFor(ctx, r.ID)
	if len(events) != 2 {
		t.Errorf("audit has %d events, want requested + one approval", len(events))
	}
}

func TestUpdateKeepsStateAndIndexes(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	mustMove(t, s, r.ID, domain.StateCreating, nil)
	mustMove(t, s, r.ID, domain.StateProvisioning, func(r *domain.Request) error { r.InstanceID = "inst-9"; return nil })
	ready := mustMove(t, s, r.ID, domain.StateReady, nil)

	extended, err := s.Update(ctx, r.ID, func(r *domain.Request) error {
		r.ExpiresAt = r.ExpiresAt.Add(4 * time.Hour)
		r.ThreadTS = "1700000000.000100"
		return nil
	})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	if extended.Version != ready.Version+1 || extended.State != domain.StateReady {
		t.Errorf("update: %+v", extended)
	}
	soon, _ := s.ExpiringBefore(ctx, ready.ExpiresAt)
	later, _ := s.ExpiringBefore(ctx, extended.ExpiresAt)
	if len(soon) != 0 || len(later) != 1 || later[0].ThreadTS != "1700000000.000100" {
		t.Errorf("expiry index not rewritten: %d due at the old time, %d at the new", len(soon), len(later))
	}
	if _, err := s.Update(ctx, r.ID, func(r *domain.Request) error { r.State = domain.StateDeleted; return nil }); err == nil {
		t.Error("Update changed the state")
	}
	other := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	mustMove(t, s, other.ID, domain.StateCreating, nil)
	_, err = s.Move(ctx, other.ID, domain.StateProvisioning, "gpubot", "", func(r *domain.Request) error { r.InstanceID = "inst-9"; return nil })
	if err == nil {
		t.Error("two requests share one instance")
	}
}

func TestQueriesUseTheirIndexes(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now})
	ctx := context.Background()
	bob := domain.UserRef{TeamID: "T1", UserID: "UBOB"}

	var ids []string
	for i := range 4 {
		clock.Advance(time.Minute)
		ids = append(ids, mustCreate(t, s, newRequest(alice, domain.StateApproved)).ID)
		_ = i
	}
	clock.Advance(time.Minute)
	bobs := mustCreate(t, s, newRequest(bob, domain.StateAwaitingApproval))
	mustMove(t, s, ids[1], domain.StateCancelled, nil)
	mustMove(t, s, ids[2], domain.StateCreating, nil)
	mustMove(t, s, ids[2], domain.StateProvisioning, func(r *domain.Request) error { r.InstanceID = "inst-2"; return nil })
	ready := mustMove(t, s, ids[2], domain.StateReady, nil)

	mine, err := s.RequestsByUser(ctx, alice)
	if err != nil || requestIDs(mine) != fmt.Sprint([]string{ids[3], ids[2], ids[1], ids[0]}) {
		t.Errorf("alice's requests newest first: got %v, %v", requestIDs(mine), err)
	}
	unfinished, err := s.Unfinished(ctx)
	if err != nil || requestIDs(unfinished) != fmt.Sprint([]string{ids[0], ids[2], ids[3], bobs.ID}) {
		t.Errorf("unfinished oldest first: got %v, %v", requestIDs(unfinished), err)
	}
	byInstance, err := s.RequestByInstance(ctx, "inst-2")
	if err != nil || byInstance.ID != ids[2] {
		t.Errorf("by instance: %v, %v", byInstance.ID, err)
	}
	if _, err := s.RequestByInstance(ctx, "inst-404"); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("unknown instance: %v", err)
	}
	if due, _ := s.ExpiringBefore(ctx, ready.ExpiresAt.Add(-time.Nanosecond)); len(due) != 0 {
		t.Errorf("expiring too early: %v", requestIDs(due))
	}
	if due, _ := s.ExpiringBefore(ctx, ready.ExpiresAt); requestIDs(due) != fmt.Sprint([]string{ids[2]}) {
		t.Errorf("expiring at its time: %v", requestIDs(due))
	}
	mustMove(t, s, ids[2], domain.StateGone, nil)
	if due, _ := s.ExpiringBefore(ctx, ready.ExpiresAt.Add(time.Hour)); len(due) != 0 {
		t.Errorf("a gone request still expires: %v", requestIDs(due))
	}
	if gone, err := s.RequestByInstance(ctx, "inst-2"); err != nil || gone.State != domain.StateGone {
		t.Errorf("a finished request is still found by its instance: %v, %v", gone.State, err)
	}
	live, _ := s.Unfinished(ctx)
	if len(live) != 3 {
		t.Errorf("live: %v", requestIDs(live))
	}
}

func requestIDs(rs []domain.Request) string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ID
	}
	return fmt.Sprint(ids)
}

func TestMarkNoticeOnlyOnce(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateApproved))

	var wg sync.WaitGroup
	var mu sync.Mutex
	firsts := 0
	for range 10 {
		wg.Go(func() {
			first, err := s.MarkNotice(ctx, r.ID, "ready")
			if err != nil {
				t.Errorf("mark notice: %v", err)
			}
			if first {
				mu.Lock()
				firsts++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firsts != 1 {
		t.Errorf("%d callers were told they were first", firsts)
	}
	stored, _ := s.Request(ctx, r.ID)
	if !stored.NoticeSent("ready") || stored.NoticeSent("reminder") || stored.Version != 2 {
		t.Errorf("notices after marking: %+v (version %d)", stored.Notices, stored.Version)
	}
	if _, err := s.MarkNotice(ctx, "missing", "ready"); !errors.Is(err, domain.ErrNotFound) {
		t.Errorf("unknown request: %v", err)
	}
}

// Unfinished keeps decoded requests between calls; every change must still
// show on the next call, and callers must not be able to change its copies.
func TestUnfinishedSeesEveryChange(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	a := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	b := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))

	first, err := s.Unfinished(ctx)
	if err != nil || requestIDs(first) != fmt.Sprint([]string{a.ID, b.ID}) {
		t.Fatalf("unfinished: %v, %v", requestIDs(first), err)
	}
	first[0].Notices = map[string]time.Time{"tampered": {}}
	first[0].IP = "tampered"

	mustMove(t, s, a.ID, domain.StateCreating, func(r *domain.Request) error { r.FalStatus = "pending"; return nil })
	if _, err := s.MarkNotice(ctx, b.ID, "approval_card"); err != nil {
		t.Fatal(err)
	}
	second, _ := s.Unfinished(ctx)
	if len(second) != 2 || second[0].State != domain.StateCreating || second[0].FalStatus != "pending" ||
		second[0].IP != "" || second[0].NoticeSent("tampered") || !second[1].NoticeSent("approval_card") {
		t.Errorf("second listing is stale: %+v", second)
	}
	second[1].Notices["tampered"] = time.Time{}
	mustMove(t, s, b.ID, domain.StateDenied, nil)
	third, _ := s.Unfinished(ctx)
	if requestIDs(third) != fmt.Sprint([]string{a.ID}) || third[0].NoticeSent("tampered") {
		t.Errorf("third listing: %+v", third)
	}
}

// Listings taken while other goroutines write are each a consistent
// snapshot: only live requests, oldest first, never going back in time.
func TestUnfinishedUnderConcurrentWrites(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var writers sync.WaitGroup
	for w := range 3 {
		writers.Go(func() {
			for i := range 15 {
				r := newRequest(domain.UserRef{TeamID: "T1", UserID: fmt.Sprintf("U%d", w)}, domain.StateApproved)
				if err := s.CreateRequest(ctx, r); err != nil {
					t.Errorf("create: %v", err)
					return
				}
				path := []domain.State{domain.StateCreating, domain.StateProvisioning, domain.StateReady, domain.StateDeleting, domain.StateDeleted}
				for _, to := range path[:i%len(path)+1] {
					if _, err := s.Move(ctx, r.ID, to, "gpubot", "", nil); err != nil {
						t.Errorf("move: %v", err)
						return
					}
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { writers.Wait(); close(done) }()

	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			seen := map[string]int64{}
			// Bounded: nonstop readers would hold off the writers, which need
			// a moment without readers to grow the file's memory map.
			for range 200 {
				live, err := s.Unfinished(ctx)
				if err != nil {
					t.Errorf("unfinished: %v", err)
					return
				}
				for i, r := range live {
					if !r.Live() || seen[r.ID] > r.Version || (i > 0 && r.CreatedAt.Before(live[i-1].CreatedAt)) {
						t.Errorf("inconsistent listing entry %+v", r)
						return
					}
					seen[r.ID] = r.Version
				}
				select {
				case <-done:
					return
				default:
				}
			}
		})
	}
	readers.Wait()
	<-done
	final, _ := s.Unfinished(ctx)
	if len(final) != 3*12 { // per writer, 12 of 15 requests stop before deleted
		t.Errorf("%d unfinished at the end, want %d", len(final), 3*12)
	}
}

// A short id finds the requests whose ids start with it, by seeking, however long the
// history around them.
func TestRequestsWithIDPrefix(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	var ids []string
	for _, id := range []string{"3f2a9c1e-0001", "3f2a9c1e-0002", "3f2b0000-0003", "40000000-0004"} {
		r := newRequest(alice, domain.StateApproved)
		r.ID = id
		ids = append(ids, mustCreate(t, s, r).ID)
	}
	for _, c := range []struct {
		prefix string
		limit  int
		want   []string
	}{
		{"3f2a9c1e", 10, ids[:2]},
		{"3f2a9c1e", 1, ids[:1]},
		{"3f2b", 10, ids[2:3]},
		{"3f2a9c1e-0002", 10, ids[1:2]},
		{"4", 10, ids[3:]},
		{"5", 10, nil},
	} {
		got, err := s.RequestsWithIDPrefix(ctx, c.prefix, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		var gotIDs []string
		for _, r := range got {
			gotIDs = append(gotIDs, r.ID)
		}
		if !slices.Equal(gotIDs, c.want) {
			t.Errorf("prefix %q limit %d: got %v, want %v", c.prefix, c.limit, gotIDs, c.want)
		}
	}
}

// A person's live requests come from the live ones, not from their history.
func TestUnfinishedOf(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	mine := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	over := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	mustMove(t, s, over.ID, domain.StateCancelled, nil)
	mustCreate(t, s, newRequest(domain.UserRef{TeamID: "T1", UserID: "UBOB"}, domain.StateApproved))
	later := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))
	for range 2 { // a second call answers from what the first decoded
		got, err := s.UnfinishedOf(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].ID != mine.ID || got[1].ID != later.ID {
			t.Fatalf("alice's live requests: %+v, want %s then %s", got, mine.ID, later.ID)
		}
	}
}
