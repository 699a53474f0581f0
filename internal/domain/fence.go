package domain

import (
	"context"
	"errors"
)

// ErrFenced refuses a write made for a leadership that no longer holds: a
// replica that led, was paused past its session and woke up after another
// took over changes nothing.
var ErrFenced = errors.New("no longer the leader: write refused")

// ErrUnavailable says the store could not be reached; the write it refused
// did not happen (a store's writes are atomic), so the user can try again.
var ErrUnavailable = errors.New("storage unreachable")

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
