package falsim

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/gpubot/gpubot/fal"
)

// regions are handed out in turn to new instances ("other" is fal's
// catch-all and never assigned here).
var regions = [...]string{"us-west", "us-central", "us-east", "eu-north", "eu-west"}

// ipBlocks are the documentation ranges (RFC 5737): addresses that look
// real in a message and route nowhere.
var ipBlocks = [...]string{"203.0.113", "198.51.100", "192.0.2"}

// Counters summarise what the server has seen.
type Counters struct {
	Creates     int            // create calls that made a new instance
	CreateCalls int            // every create call, including replays and failures
	Instances   int            // distinct instances ever made (creates and AddInstance)
	Deletes     int            // delete calls that removed an instance
	Faults      int            // calls answered by an injected fault
	Calls       map[string]int // every call by operation: "create", "list", "get", "delete"
}

// record is an instance plus what the lifecycle needs.
type record struct {
	inst fal.Instance
	seq  int // creation order
	// phaseStart is when the current status began, for the timers.
	phaseStart time.Time
}

// idempotentResponse is a create answer kept for replay.
type idempotentResponse struct {
	status int
	body   []byte
	at     time.Time
}

type idempotencyKeyAt struct {
	key string
	at  time.Time
}

// state is everything guarded by Server.mu.
type state struct {
	closed    bool
	instances map[string]*record
	order     []*record // live instances by creation
	seq       int
	ipCount   int
	idem      map[string]idempotentResponse
	idemOrder []idempotencyKeyAt // by insertion, for pruning
	faults    []queuedFault
	chaos     *chaos
	counters  Counters
}

func newState() state {
	return state{
		instances: make(map[string]*record),
		idem:      make(map[string]idempotentResponse),
		counters:  Counters{Calls: make(map[string]int)},
	}
}

// advance moves r along pending -> provisioning -> ready as time passes.
// Statuses are computed when looked at rather than by timers, so there is
// nothing running between calls and nothing to stop on Close.
func (s *Server) advance(r *record, now time.Time) {
	if s.opts.Manual {
		return
	}
	for {
		switch r.inst.Status {
		case fal.StatusPending, fal.StatusInit:
			due := r.phaseStart.Add(s.opts.ProvisionAfter)
			if now.Before(due) {
				return
			}
			s.setStatus(r, fal.StatusProvisioning, due)
		case fal.StatusProvisioning:
			due := r.phaseStart.Add(s.opts.ReadyAfter)
			if now.Before(due) {
				return
			}
			s.setStatus(r, fal.StatusReady, due)
		default:
			return
		}
	}
}

func (s *Server) setStatus(r *record, st fal.Status, since time.Time) {
	r.inst.Status = st
	r.phaseStart = since
	if st == fal.StatusReady && r.inst.IP == "" {
		r.inst.IP = s.nextIP()
	}
}

func (s *Server) nextIP() string {
	n := s.state.ipCount
	s.state.ipCount++
	block := ipBlocks[(n/254)%len(ipBlocks)]
	return fmt.Sprintf("%s.%d", block, n%254+1)
}

// lookup returns the live record for id with its status brought up to date.
func (s *Server) lookup(id string) (*record, bool) {
	r, ok := s.state.instances[id]
	if ok {
		s.advance(r, time.Now())
	}
	return r, ok
}

func (s *Server) insert(inst fal.Instance) *record {
	if old, ok := s.state.instances[inst.ID]; ok {
		s.unlink(old)
	}
	s.state.seq++
	r := &record{inst: inst, seq: s.state.seq, phaseStart: time.Now()}
	s.state.instances[inst.ID] = r
	s.state.order = append(s.state.order, r)
	s.state.counters.Instances++
	return r
}

func (s *Server) unlink(r *record) {
	delete(s.state.instances, r.inst.ID)
	s.state.order = slices.DeleteFunc(s.state.order, func(o *record) bool { return o == r })
}

// Step advances an instance one status: pending (or init) -> provisioning
// -> ready, assigning its IP at ready. It is how Manual servers move.
func (s *Server) Step(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.lookup(id)
	if !ok {
		return fmt.Errorf("falsim: step %s: no such instance", id)
	}
	switch r.inst.Status {
	case fal.StatusPending, fal.StatusInit:
		s.setStatus(r, fal.StatusProvisioning, time.Now())
	case fal.StatusProvisioning:
		s.setStatus(r, fal.StatusReady, time.Now())
	default:
		return fmt.Errorf("falsim: step %s: status %s has no next status", id, r.inst.Status)
	}
	return nil
}

// SetStatus forces an instance's status (e.g. stopped or unknown). Setting
// ready assigns an IP if it has none.
func (s *Server) SetStatus(id string, st fal.Status) error {
	if !st.Known() {
		return fmt.Errorf("falsim: set status of %s: unknown status %q", id, st)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.lookup(id)
	if !ok {
		return fmt.Errorf("falsim: set status of %s: no such instance", id)
	}
	s.setStatus(r, st, time.Now())
	return nil
}

// AddInstance makes an instance exist as if created outside gpubot. Empty
// fields are filled in: an id, a region, status ready (with an IP).
// An instance with the same id is replaced.
func (s *Server) AddInstance(inst fal.Instance) {
	if inst.ID == "" {
		inst.ID = newID("inst_")
	}
	if inst.Region == "" {
		inst.Region = regions[0]
	}
	if inst.InstanceType == "" {
		inst.InstanceType = fal.Type1xH100
	}
	if inst.Status == "" {
		inst.Status = fal.StatusReady
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.insert(inst)
	s.setStatus(r, inst.Status, r.phaseStart)
}

// Remove makes an instance vanish, as if deleted outside gpubot.
func (s *Server) Remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.state.instances[id]; ok {
		s.unlink(r)
	}
}

// Instances returns the live instances in creation order.
func (s *Server) Instances() []fal.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshot(0, len(s.state.order))
}

// snapshot copies order[from:to], statuses brought up to date.
func (s *Server) snapshot(from, to int) []fal.Instance {
	now := time.Now()
	out := make([]fal.Instance, 0, to-from)
	for _, r := range s.state.order[from:to] {
		s.advance(r, now)
		out = append(out, r.inst)
	}
	return out
}

// Counters returns a copy of the counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.state.counters
	c.Calls = maps.Clone(c.Calls)
	return c
}

// replay returns the cached create answer for key, if still within the
// idempotency window, pruning expired entries on the way.
func (s *Server) replay(key string, now time.Time) (idempotentResponse, bool) {
	s.pruneIdempotency(now)
	resp, ok := s.state.idem[key]
	if !ok || now.Sub(resp.at) >= IdempotencyWindow {
		return idempotentResponse{}, false
	}
	return resp, true
}

func (s *Server) remember(key string, resp idempotentResponse) {
	s.state.idem[key] = resp
	s.state.idemOrder = append(s.state.idemOrder, idempotencyKeyAt{key: key, at: resp.at})
}

func (s *Server) pruneIdempotency(now time.Time) {
	expired := 0
	for _, entry := range s.state.idemOrder {
		if now.Sub(entry.at) < IdempotencyWindow {
			break
		}
		if cached, ok := s.state.idem[entry.key]; ok && cached.at.Equal(entry.at) {
			delete(s.state.idem, entry.key)
		}
		expired++
	}
	s.state.idemOrder = s.state.idemOrder[expired:]
}
