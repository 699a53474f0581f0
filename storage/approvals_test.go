package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/gpubot/gpubot/internal/domain"
)

// Two approvers clicking at the same moment on a request that needs three both
// count, each once, and the request keeps waiting for the third.
func TestApprovalsAtTheSameMomentBothCount(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))

	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, 2)
	for i, approver := range []string{"UBOB", "UCAROL"} {
		wg.Go(func() {
			<-start
			_, errs[i] = s.AddApproval(ctx, r.ID, approver, 3)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("approval %d: %v", i, err)
		}
	}
	got, err := s.Request(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != domain.StateAwaitingApproval || len(got.Approvals) != 2 {
		t.Fatalf("after two of three approvals: %s with %d approvals, want awaiting approval with 2", got.State, len(got.Approvals))
	}
	if !got.ApprovedBy("UBOB") || !got.ApprovedBy("UCAROL") {
		t.Fatalf("approvals %+v, want bob and carol", got.Approvals)
	}
}

// The approval that completes the count moves the request to approved in its own
// transaction: of many approvers clicking at once on a request that needs two,
// exactly two count and every other is told it came too late.
func TestTheApprovalThatCompletesTheCountApproves(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))

	const approvers = 12
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, approvers)
	for i := range approvers {
		wg.Go(func() {
			<-start
			_, errs[i] = s.AddApproval(ctx, r.ID, fmt.Sprintf("UAPPROVER%02d", i), 2)
		})
	}
	close(start)
	wg.Wait()

	counted := 0
	for i, err := range errs {
		switch {
		case err == nil:
			counted++
		case errors.Is(err, domain.ErrIllegalMove):
		default:
			t.Errorf("approver %d: %v, want success or a *domain.MoveError", i, err)
		}
	}
	final, err := s.Request(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if counted != 2 || final.State != domain.StateApproved || len(final.Approvals) != 2 {
		t.Fatalf("%d approvals counted, state %s with %d recorded; want 2, approved, 2", counted, final.State, len(final.Approvals))
	}
	if final.ApproverID != final.Approvals[1].UserID || final.DecidedAt.IsZero() {
		t.Fatalf("approver %q decided at %v; want the second approver, %q, and a time", final.ApproverID, final.DecidedAt, final.Approvals[1].UserID)
	}
	events, err := s.AuditFor(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range events {
		actions = append(actions, e.Action+" "+e.Detail)
	}
	want := []string{"requested " + events[0].Detail, "approval 1 of 2", "approval 2 of 2", "approved "}
	if fmt.Sprint(actions) != fmt.Sprint(want) {
		t.Fatalf("audit trail %q, want %q", actions, want)
	}
}

// The same approver twice counts once: the second is refused, and changes nothing.
func TestTheSameApproverCountsOnce(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))
	if _, err := s.AddApproval(ctx, r.ID, "UBOB", 2); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Request(ctx, r.ID)
	current, err := s.AddApproval(ctx, r.ID, "UBOB", 2)
	if !errors.Is(err, domain.ErrAlreadyApproved) {
		t.Fatalf("second approval by the same approver: %v, want domain.ErrAlreadyApproved", err)
	}
	after, _ := s.Request(ctx, r.ID)
	if after.Version != before.Version || len(after.Approvals) != 1 || current.Version != before.Version {
		t.Fatalf("a repeated approval changed the request: version %d → %d, %d approvals", before.Version, after.Version, len(after.Approvals))
	}
}

// An approval recorded for an envelope is its one effect: the same envelope again
// records nothing and returns what it was answered.
func TestApprovalForAnEnvelopeTakesEffectOnce(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))
	if _, err := s.AddApproval(ctx, r.ID, "UBOB", 2, domain.ForEnvelope("E1", []byte(`{}`))); err != nil {
		t.Fatal(err)
	}
	_, err := s.AddApproval(ctx, r.ID, "UCAROL", 2, domain.ForEnvelope("E1", nil))
	var done *domain.AlreadyDoneError
	if !errors.As(err, &done) {
		t.Fatalf("the same envelope again: %v, want *domain.AlreadyDoneError", err)
	}
	got, _ := s.Request(ctx, r.ID)
	if got.State != domain.StateAwaitingApproval || len(got.Approvals) != 1 {
		t.Fatalf("after a redelivered envelope: %s with %d approvals", got.State, len(got.Approvals))
	}
}
