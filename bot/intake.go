package bot

import (
	"sync"
	"time"
)

// intake admits envelopes while the link is open and tells shutdown when the link
// may close: once nothing taken waits for its ack, and the last ack was queued long
// enough ago for slack-go's writer to have sent it. Once closed it admits nothing,
// so an envelope that reaches gpubot as its link closes changes nothing: Slack shows
// its sender an error (and sends an event again on another connection), and a command
// retried by its sender is handled once.
type intake struct {
	mu        sync.Mutex
	inFlight  int
	lastAcked time.Time
	closed    bool
}

// take admits an envelope, or reports that the link is closing.
func (in *intake) take() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false
	}
	in.inFlight++
	return true
}

// done marks an envelope taken as acked (or given up) at now.
func (in *intake) done(now time.Time) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.inFlight--
	in.lastAcked = now
}

// closeIfQuiet closes the intake when nothing taken waits, no envelope read from the
// link waits to be taken (waiting), and the last ack was queued at least quiet ago.
func (in *intake) closeIfQuiet(now time.Time, quiet time.Duration, waiting int) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.inFlight > 0 || waiting > 0 || now.Sub(in.lastAcked) < quiet {
		return false
	}
	in.closed = true
	return true
}

// close closes the intake whatever waits, and says how many envelopes still wait
// for their acks.
func (in *intake) close() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
	return in.inFlight
}
