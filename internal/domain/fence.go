package domain

import (
	"context"
	"errors"
	"fmt"
)

// ErrFenced refuses a write made for a leadership that no longer holds: a
// replica that led, was paused past its session and woke up after another
// took over changes nothing.
var ErrFenced = errors.New("no longer the leader: write refused")

// ErrUnavailable says the store could not be reached; the write it refused
// did not happen (a store's writes are atomic), so the user can try again,
// unless it is also ErrOutcomeUnknown.
var ErrUnavailable = errors.New("storage unreachable")

// ErrOutcomeUnknown says the store was lost after a write was sent: the store
// may have applied it, whole, and the answer never came back. It is an
// ErrUnavailable too.
var ErrOutcomeUnknown = fmt.Errorf("%w after the write was sent: it may have been applied", ErrUnavailable)

// Fence is the proof of a leadership: the leader's election key and the
// revision at which it was created. A store shared by replicas makes every
// write carrying a fence conditional on that key still existing with that
// revision; a store only one process can open (bbolt) has nothing to check.
type Fence struct {
	Key      string
	Revision int64
}

type fenceKey struct{}

// WithFence makes every store write done with the returned context
// conditional on f. The leader runs the background work with it.
func WithFence(ctx context.Context, f Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceFrom is the fence ctx carries, if any.
func FenceFrom(ctx context.Context) (Fence, bool) {
	f, ok := ctx.Value(fenceKey{}).(Fence)
	return f, ok
}
