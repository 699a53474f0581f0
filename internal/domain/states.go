package domain

// State is where a request is in its life. The values are stored in the
// database and shown in logs, so they never change once released.
type State string

const (
	StateAwaitingApproval State = "awaiting_approval"
	StateApproved         State = "approved"     // approved or no approval needed; not yet sent to fal
	StateCreating         State = "creating"     // committed with its idempotency key; create call to fal in flight
	StateProvisioning     State = "provisioning" // fal accepted (InstanceID known); waiting for ready
	StateReady            State = "ready"
	StateDeleting         State = "deleting"  // delete decided (owner, admin, or expiry); call to fal in flight
	StateDeleted          State = "deleted"   // terminal
	StateExpired          State = "expired"   // terminal: deleted because its lifetime ran out
	StateGone             State = "gone"      // terminal: vanished at fal without gpubot deleting it
	StateDenied           State = "denied"    // terminal
	StateCancelled        State = "cancelled" // terminal
	StateFailed           State = "failed"    // terminal: fal refused or it never came up
	// StateApprovalExpired is terminal: nobody decided within APPROVAL_TIMEOUT. It is
	// its own state, not a cancellation, because nobody chose it: the requester may
	// ask again, and the audit trail and metrics tell it from a withdrawn request.
	StateApprovalExpired State = "approval_expired"
)

// AllStates lists every state, in the order of a request's life.
func AllStates() []State {
	return []State{
		StateAwaitingApproval, StateApproved, StateCreating, StateProvisioning, StateReady, StateDeleting,
		StateDeleted, StateExpired, StateGone, StateDenied, StateCancelled, StateFailed, StateApprovalExpired,
	}
}

// transitions is the one table of legal moves. A state missing from the map,
// or mapped to nothing, is terminal.
func transitions() map[State][]State {
	return map[State][]State{
		StateAwaitingApproval: {StateApproved, StateDenied, StateCancelled, StateFailed, StateApprovalExpired},
		StateApproved:         {StateCreating, StateCancelled, StateFailed},
		StateCreating:         {StateProvisioning, StateReady, StateFailed, StateDeleting},
		StateProvisioning:     {StateReady, StateDeleting, StateFailed, StateGone},
		StateReady:            {StateDeleting, StateGone},
		StateDeleting:         {StateDeleted, StateExpired, StateGone, StateFailed},
	}
}

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	for _, known := range AllStates() {
		if s == known {
			return true
		}
	}
	return false
}

// Terminal reports whether a request in state s has ended for good.
func (s State) Terminal() bool {
	switch s {
	case StateDeleted, StateExpired, StateGone, StateDenied, StateCancelled, StateFailed, StateApprovalExpired:
		return true
	}
	return false
}

// CanMove reports whether a request may go from one state to another.
// Staying in the same state is not a move.
func CanMove(from, to State) bool {
	for _, next := range transitions()[from] {
		if next == to {
			return true
		}
	}
	return false
}
