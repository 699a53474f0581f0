// Package storetest is the one conformance suite of domain.Store: every
// promise the contract in internal/domain/store.go makes, checked through the
// interface alone, so the bbolt store and the etcd store are held to the same
// behaviour. Each store's own tests call Run; only tests import it.
package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/testkit"
)

// Backend makes stores for the suite.
type Backend interface {
	// Place makes a new, empty place for a store: a bbolt file, an etcd prefix.
	Place(t *testing.T) string
	// Open opens the store at place on the clock now, with the contract's
	// defaults (an envelope is remembered for an hour). The backend closes it
	// when the test ends, and may check its own invariants then; the suite may
	// also close it earlier to open the place again.
	Open(t *testing.T, place string, now func() time.Time) domain.Store
}

// Run runs every conformance test against stores b opens.
func Run(t *testing.T, b Backend) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) { c.run(t, b) })
	}
}

type testCase struct {
	name string
	run  func(t *testing.T, b Backend)
}

func cases() []testCase {
	return slices.Concat(requestCases(), approvalCases(), auditCases(), envelopeCases(), seenCases(), orphanCases(), spendCases(), claimCases(), homeCases())
}

// newClock is the clock the suite's stores start from.
func newClock() *testkit.Clock {
	return testkit.FixedClock(time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC))
}

// open opens a store on a new place with the given clock (nil: the wall clock).
func open(t *testing.T, b Backend, clock *testkit.Clock) domain.Store {
	t.Helper()
	now := time.Now
	if clock != nil {
		now = clock.Now
	}
	return b.Open(t, b.Place(t), now)
}

var alice = domain.UserRef{TeamID: "T1", UserID: "UALICE"}

func newRequest(u domain.UserRef, state domain.State) *domain.Request {
	return &domain.Request{
		TeamID: u.TeamID, UserID: u.UserID, ChannelID: "C1", CommandChannel: "C1",
		InstanceType: "gpu_8x_h100_sxm5", Sector: "sector_1", Reason: "training run",
		SSHKey: "ssh-ed25519 AAAA test", Lifetime: 8 * time.Hour, State: state,
	}
}

func mustCreate(t testing.TB, s domain.Store, r *domain.Request) domain.Request {
	t.Helper()
	if err := s.CreateRequest(context.Background(), r); err != nil {
		t.Fatalf("create request: %v", err)
	}
	return *r
}

func mustMove(t testing.TB, s domain.Store, id string, to domain.State, edit func(*domain.Request) error) domain.Request {
	t.Helper()
	r, err := s.Move(context.Background(), id, to, "UADMIN", "", edit)
	if err != nil {
		t.Fatalf("move %s to %s: %v", id, to, err)
	}
	return r
}

// bringTo moves a request awaiting approval along the shortest legal path
// to state, so a test can start from any state through the contract alone.
func bringTo(t testing.TB, s domain.Store, id string, state domain.State) domain.Request {
	t.Helper()
	path := pathTo(domain.StateAwaitingApproval, state)
	if path == nil {
		t.Fatalf("no legal path from %s to %s", domain.StateAwaitingApproval, state)
	}
	r, err := s.Request(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, next := range path {
		r = mustMove(t, s, id, next, nil)
	}
	return r
}

// pathTo is the shortest sequence of legal moves from one state to another
// (empty when they are the same, nil when there is none).
func pathTo(from, to domain.State) []domain.State {
	previous := map[domain.State]domain.State{from: ""}
	queue := []domain.State{from}
	for len(queue) > 0 {
		at := queue[0]
		queue = queue[1:]
		if at == to {
			var path []domain.State
			for s := to; s != from; s = previous[s] {
				path = append([]domain.State{s}, path...)
			}
			return append([]domain.State{}, path...)
		}
		for _, next := range domain.AllStates() {
			if _, seen := previous[next]; !seen && domain.CanMove(at, next) {
				previous[next] = at
				queue = append(queue, next)
			}
		}
	}
	return nil
}

func requestIDs(rs []domain.Request) string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.ID
	}
	return fmt.Sprint(ids)
}

func auditCount(t *testing.T, s domain.Store, action string) int {
	t.Helper()
	log, err := s.AuditLog(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range log {
		if e.Action == action {
			n++
		}
	}
	return n
}
