package bot

import (
	"sync"
	"time"
)

// seenEnvelopes remembers the envelope ids handled in the last 30 minutes, so an
// envelope Slack sends again is acked and otherwise ignored. It lives in memory: the
// ack path must not wait on a disk write. What must hold across restarts (one request
// per slash command) the store checks again.
type seenEnvelopes struct {
	now  func() time.Time
	mu   sync.Mutex
	seen map[string]time.Time
}

const (
	seenFor     = 30 * time.Minute
	seenMaxSize = 100_000
)

func newSeenEnvelopes(now func() time.Time) *seenEnvelopes {
	return &seenEnvelopes{now: now, seen: map[string]time.Time{}}
}

// first reports whether id is new, and remembers it.
func (s *seenEnvelopes) first(id string) bool {
	if id == "" {
		return true
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.seen[id]; ok && now.Sub(at) < seenFor {
		return false
	}
	if len(s.seen) >= seenMaxSize {
		s.prune(now)
	}
	s.seen[id] = now
	return true
}

// prune drops expired ids; if all are young, it drops the whole memory rather than grow
// without bound (the store still stops a repeated create).
func (s *seenEnvelopes) prune(now time.Time) {
	for id, at := range s.seen {
		if now.Sub(at) >= seenFor {
			delete(s.seen, id)
		}
	}
	if len(s.seen) >= seenMaxSize {
		clear(s.seen)
	}
}
