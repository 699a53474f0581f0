package handlers

import (
	"context"
	"testing"
	"time"
)

// Background work waits while envelopes wait for their acks, and goes on as soon as
// the last one is acked; it never waits longer than its bound.
func TestBackgroundWaitsForAcks(t *testing.T) {
	var g foregroundGate
	ctx := context.Background()
	g.wait(ctx, time.Hour) // nothing in flight: returns at once

	first, second := g.enter(), g.enter()
	resumed := make(chan struct{})
	go func() { g.wait(ctx, time.Hour); close(resumed) }()
	first()
	second()
	second() // a second call changes nothing
	<-resumed

	stuck := g.enter()
	defer stuck()
	start := time.Now()
	g.wait(ctx, 20*time.Millisecond)
	if waited := time.Since(start); waited < 20*time.Millisecond {
		t.Errorf("waited %v, want the whole bound while an envelope is in flight", waited)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	g.wait(cancelled, time.Hour) // a cancelled wait returns
}
