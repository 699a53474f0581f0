package domain

import (
	"errors"
	"fmt"
)

// Sentinel errors; test for them with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrDuplicate   = errors.New("already seen")
	ErrIllegalMove = errors.New("illegal state change")
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

// ErrAlreadyApproved refuses a second approval by the same approver: each counts once.
var ErrAlreadyApproved = errors.New("already approved by this approver")

// ErrAlreadyDone matches an *AlreadyDoneError with errors.Is.
var ErrAlreadyDone = errors.New("envelope already handled")

// AlreadyDoneError is returned by a write made ForEnvelope when that envelope
// already did its write: nothing was written, and Answer is what the first
// delivery was answered with, to answer the redelivery the same way.
type AlreadyDoneError struct {
	EnvelopeID string
	Answer     []byte
}

func (e *AlreadyDoneError) Error() string {
	return fmt.Sprintf("envelope %s was handled already", e.EnvelopeID)
}

func (e *AlreadyDoneError) Is(target error) bool { return target == ErrAlreadyDone }
