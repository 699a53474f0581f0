package domain

import (
	"fmt"
	"testing"
)

// legalMoves restates the state table from the product's point of view; the
// test compares every pair of states against it.
var legalMoves = map[State][]State{
	StateAwaitingApproval: {StateApproved, StateDenied, StateCancelled, StateFailed, StateApprovalExpired},
	StateApproved:         {StateCreating, StateCancelled, StateFailed},
	StateCreating:         {StateProvisioning, StateReady, StateFailed, StateDeleting},
	StateProvisioning:     {StateReady, StateDeleting, StateFailed, StateGone},
	StateReady:            {StateDeleting, StateGone},
	StateDeleting:         {StateDeleted, StateExpired, StateGone, StateFailed},
}

func TestCanMoveEveryPair(t *testing.T) {
	for _, from := range AllStates() {
		for _, to := range AllStates() {
			want := false
			for _, next := range legalMoves[from] {
				want = want || next == to
			}
			t.Run(fmt.Sprintf("%s to %s", from, to), func(t *testing.T) {
				if got := CanMove(from, to); got != want {
					t.Errorf("CanMove(%s, %s) = %v, want %v", from, to, got, want)
				}
			})
		}
	}
}

func TestTerminalStatesMoveNowhere(t *testing.T) {
	terminal := map[State]bool{
		StateDeleted: true, StateExpired: true, StateGone: true, StateDenied: true, StateCancelled: true, StateFailed: true,
		StateApprovalExpired: true,
	}
	for _, s := range AllStates() {
		if s.Terminal() != terminal[s] {
			t.Errorf("%s.Terminal() = %v, want %v", s, s.Terminal(), terminal[s])
		}
		if !s.Valid() {
			t.Errorf("%s is not Valid", s)
		}
		if terminal[s] && len(legalMoves[s]) > 0 {
			t.Errorf("terminal %s has moves", s)
		}
	}
	if State("paused").Valid() || CanMove("paused", StateReady) || CanMove(StateReady, "paused") {
		t.Error("an unknown state is accepted")
	}
}
