package storage

import (
	"errors"
	"fmt"
)

// Sentinel errors; test for them with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrDuplicate   = errors.New("already seen")
	ErrIllegalMove = errors.New("illegal state change")
	ErrInUse       = errors.New("in use by another gpubot")
	ErrNewerSchema = errors.New("written by a newer gpubot")
)

// MoveError is returned by Move when the request is not in a state it may
// leave for the one asked. Current is the request as it is now, so the loser
// of a race can tell who won (for instance Current.ApproverID).
type MoveError struct {
	From, To State // From is the request's state at the time of the attempt
	Current  Request
}

func (e *MoveError) Error() string {
	return fmt.Sprintf("request %s is %s: it cannot move to %s", e.Current.ID, e.From, e.To)
}

func (e *MoveError) Is(target error) bool { return target == ErrIllegalMove }

// sentinelError carries a full user-facing message while still matching a
// sentinel with errors.Is.
type sentinelError struct {
	message  string
	sentinel error
}

func (e *sentinelError) Error() string { return e.message }
func (e *sentinelError) Unwrap() error { return e.sentinel }
