package falsim

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Fault is a misbehaviour injected into one call. The parts apply in
// order: Hang, then Drop, then Status, then LoseResponse; a Fault with only
// Hang makes a slow call that is then answered normally.
type Fault struct {
	// Status answers with this status and fal's error body (0: none).
	Status int
	// RetryAfter, with Status 429, is sent as Retry-After in whole
	// seconds, rounded up; 0 sends no Retry-After.
	RetryAfter time.Duration
	// Hang holds the request this long first. The hold ends early when
	// the client gives up or the server closes; the call then gets no
	// answer at all.
	Hang time.Duration
	// Drop closes the connection without answering.
	Drop bool
	// LoseResponse serves the call (a create creates, a delete deletes)
	// and then closes the connection instead of answering, as when a
	// response is lost on the way back.
	LoseResponse bool
}

// queuedFault applies fault to the next remaining calls of op ("" = any).
type queuedFault struct {
	op        string
	remaining int
	fault     Fault
}

// chaos answers a random share of calls with 500 or 429.
type chaos struct {
	rate float64
	rng  *rand.Rand
}

// InjectNext applies f to the next n calls of operation op ("create",
// "list", "get", "delete"; "" for any). Faults queue up in the order
// they are injected.
func (s *Server) InjectNext(op string, n int, f Fault) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.faults = append(s.state.faults, queuedFault{op: op, remaining: n, fault: f})
}

// FailNext answers the next n calls with status (e.g. 500, 502, 503) and
// fal's error body.
func (s *Server) FailNext(n int, status int) {
	s.InjectNext("", n, Fault{Status: status})
}

// RateLimitNext answers the next n calls with 429, sending retryAfter as
// Retry-After when it is positive.
func (s *Server) RateLimitNext(n int, retryAfter time.Duration) {
	s.InjectNext("", n, Fault{Status: http.StatusTooManyRequests, RetryAfter: retryAfter})
}

// HangNext holds each of the next n calls for d before serving it; Close
// or the client giving up releases it sooner.
func (s *Server) HangNext(n int, d time.Duration) {
	s.InjectNext("", n, Fault{Hang: d})
}

// DropNext closes the connection of each of the next n calls without
// answering.
func (s *Server) DropNext(n int) {
	s.InjectNext("", n, Fault{Drop: true})
}

// SetFaultRate makes a share p (0..1) of calls that no queued fault
// claims answer 500 or 429 (without Retry-After), half each, drawn from
// a generator seeded with seed so a failing chaos run can be replayed.
// p <= 0 turns it off.
func (s *Server) SetFaultRate(p float64, seed int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p <= 0 {
		s.state.chaos = nil
		return
	}
	s.state.chaos = &chaos{rate: min(p, 1), rng: rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15))}
}

// ClearFaults drops every queued fault and turns random faults off.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.faults = nil
	s.state.chaos = nil
}

// countCallAndTakeFault records a call of op and claims the fault, if
// any, that applies to it.
func (s *Server) countCallAndTakeFault(op string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state.counters.Calls[op]++
	if op == "create" {
		s.state.counters.CreateCalls++
	}
	fault, ok := s.takeQueuedFault(op)
	if !ok {
		fault, ok = s.state.chaos.draw()
	}
	if ok {
		s.state.counters.Faults++
	}
	return fault, ok
}

func (s *Server) takeQueuedFault(op string) (Fault, bool) {
	for i := range s.state.faults {
		queued := &s.state.faults[i]
		if queued.op != "" && queued.op != op {
			continue
		}
		fault := queued.fault
		queued.remaining--
		if queued.remaining == 0 {
			s.state.faults = append(s.state.faults[:i], s.state.faults[i+1:]...)
		}
		return fault, true
	}
	return Fault{}, false
}

func (c *chaos) draw() (Fault, bool) {
	if c == nil || c.rng.Float64() >= c.rate {
		return Fault{}, false
	}
	if c.rng.IntN(2) == 0 {
		return Fault{Status: http.StatusInternalServerError}, true
	}
	return Fault{Status: http.StatusTooManyRequests}, true
}

// applyFault carries out f and reports whether the call has been dealt
// with (answered, dropped or abandoned).
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f Fault) bool {
	if f.Hang > 0 && !s.pause(r.Context(), f.Hang) {
		return true
	}
	if f.Drop {
		dropConnection(w)
		return true
	}
	if f.Status == 0 {
		return false
	}
	if f.Status == http.StatusTooManyRequests && f.RetryAfter > 0 {
		seconds := (f.RetryAfter + time.Second - 1) / time.Second
		w.Header().Set("Retry-After", strconv.FormatInt(int64(seconds), 10))
	}
	writeError(w, f.Status, errorTypeFor(f.Status), faultMessage(f.Status))
	return true
}

func faultMessage(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "Rate limit exceeded"
	case http.StatusUnauthorized:
		return "Authentication required"
	case http.StatusForbidden:
		return "Access denied"
	default:
		return "An unexpected error occurred"
	}
}

// discardResponse is where a served call's lost response goes.
type discardResponse struct{ header http.Header }

func (d *discardResponse) Header() http.Header {
	if d.header == nil {
		d.header = make(http.Header)
	}
	return d.header
}
func (d *discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardResponse) WriteHeader(int)             {}

// dropConnection closes the client's connection without a response.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (e.g. HTTP/2): aborting the handler makes
		// net/http reset the stream instead, which the client sees the
		// same way.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}
