package handlers

import (
	"context"
	"sync"
	"time"
)

// maxHoldBack bounds how long background work waits for a burst of commands to be
// acked, so a steady stream of commands cannot starve it.
const maxHoldBack = 250 * time.Millisecond

// foregroundGate counts the envelopes received and not yet acked. Background work
// (posting threads, calling fal) waits for it to drain before it starts, so that in a
// burst the acks, which Slack wants within 3 seconds, get the CPU and the store's
// writer first.
type foregroundGate struct {
	mu       sync.Mutex
	inFlight int
	drained  chan struct{} // closed when inFlight drops to 0
}

// enter counts one envelope in; the func it returns counts it out (once).
func (g *foregroundGate) enter() (leave func()) {
	g.mu.Lock()
	if g.inFlight == 0 {
		g.drained = make(chan struct{})
	}
	g.inFlight++
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.inFlight--
			if g.inFlight == 0 {
				close(g.drained)
			}
		})
	}
}

// wait returns once no envelope waits for its ack, after at most max, or when ctx ends.
func (g *foregroundGate) wait(ctx context.Context, max time.Duration) {
	g.mu.Lock()
	if g.inFlight == 0 {
		g.mu.Unlock()
		return
	}
	drained := g.drained
	g.mu.Unlock()
	timer := time.NewTimer(max)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
	case <-ctx.Done():
	}
}
