package handlers

import (
	"errors"
	"fmt"

	"github.com/gpubot/gpubot/internal/domain"
)

// UserError is a refusal shown to the person as is: bad input, or something they may not do.
// Its message always says what to do instead.
type UserError struct{ Message string }

func (e *UserError) Error() string { return e.Message }

// refusef makes a UserError.
func refusef(format string, args ...any) error {
	return &UserError{Message: fmt.Sprintf(format, args...)}
}

// refusal is the ack of a command that did nothing: what a UserError says, or an
// apology for gpubot's own failure (logged where it happened).
func refusal(err error) *Reply {
	r := reply(textMessage(userMessage(err)))
	r.Outcome = OutcomeRefused
	if _, isUserError := errors.AsType[*UserError](err); !isUserError {
		r.Outcome = OutcomeError
	}
	return r
}

// storageUnreachable answers a command or click that found the store out of reach.
// A store's writes are whole or not at all, so nothing happened and trying again is safe.
const storageUnreachable = ":warning: gpubot can't reach its storage right now, so nothing was done. Please try again in a minute; if it keeps happening, tell an admin."

// storageOutcomeUnknown answers a command or click whose write was sent to the store
// and then lost: it may have been done, whole, so trying again blindly could do it twice.
const storageOutcomeUnknown = ":warning: gpubot lost touch with its storage while saving this, so it may or may not have been done. Check with `/gpu list` before trying again; if it keeps happening, tell an admin."

// userMessage is what to tell the person of an error: a UserError's words, or an
// apology for gpubot's own failure.
func userMessage(err error) string {
	if ue, ok := errors.AsType[*UserError](err); ok {
		return ue.Message
	}
	if errors.Is(err, domain.ErrOutcomeUnknown) {
		return storageOutcomeUnknown
	}
	if errors.Is(err, domain.ErrUnavailable) {
		return storageUnreachable
	}
	return ":warning: Something went wrong on gpubot's side; please try again in a minute. If it keeps happening, tell an admin."
}
