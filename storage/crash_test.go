package storage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
)

// crashWorkload drives requests through their life like the bot does, from
// two goroutines at once, and calls commit after every write that returned,
// with "id version state". It stops after maxWrites writes (0: never) or
// when ctx ends.
func crashWorkload(ctx context.Context, s *Store, maxWrites int, commit func(id string, version int64, state domain.State)) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	writes := 0
	errs := make(chan error, 2)
	record := func(r domain.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		commit(r.ID, r.Version, r.State)
		writes++
		return maxWrites == 0 || writes < maxWrites
	}
	for worker := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(worker), uint64(time.Now().UnixNano())))
			for ctx.Err() == nil {
				more, err := oneRequestLife(ctx, s, rng, worker, record)
				if err != nil {
					errs <- err
					return
				}
				if !more {
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// oneRequestLife creates a request and moves it along a random stretch of
// its life, recording each committed write.
func oneRequestLife(ctx context.Context, s *Store, rng *rand.Rand, worker int, record func(domain.Request) bool) (bool, error) {
	user := domain.UserRef{TeamID: "T1", UserID: fmt.Sprintf("U%d", rng.IntN(5))}
	start := domain.StateApproved
	if rng.IntN(2) == 0 {
		start = domain.StateAwaitingApproval
	}
	r := newRequest(user, start)
	if err := s.CreateRequest(ctx, r, domain.ForEnvelope(fmt.Sprintf("envelope-%d-%d", worker, rng.Uint64()), []byte(`{"text":"Got it"}`))); err != nil {
		return false, err
	}
	if !record(*r) {
		return false, nil
	}
	if _, err := s.MarkSeen(ctx, fmt.Sprintf("envelope-%d", rng.Uint64()), time.Hour); err != nil {
		return false, err
	}
	type step struct {
		to   domain.State
		edit func(*domain.Request) error
	}
	path := []step{
		{domain.StateCreating, nil},
		{domain.StateProvisioning, func(q *domain.Request) error { q.InstanceID = "inst-" + q.ID; return nil }},
		{domain.StateReady, func(q *domain.Request) error { q.IP = "10.0.0.1"; return nil }},
		{"", func(q *domain.Request) error { q.ExpiresAt = q.ExpiresAt.Add(time.Hour); return nil }}, // extend
		{domain.StateDeleting, nil},
		{[]domain.State{domain.StateDeleted, domain.StateExpired, domain.StateGone}[rng.IntN(3)], nil},
	}
	if start == domain.StateAwaitingApproval {
		path = append([]step{{domain.StateApproved, func(q *domain.Request) error { q.ApproverID = "UBOSS"; return nil }}}, path...)
	}
	for _, st := range path {
		if rng.IntN(8) == 0 {
			return true, nil // leave it unfinished
		}
		var next domain.Request
		var err error
		if st.to == "" {
			next, err = s.Update(ctx, r.ID, st.edit)
		} else {
			next, err = s.Move(ctx, r.ID, st.to, "gpubot", "", st.edit)
		}
		if err != nil {
			return false, err
		}
		if !record(next) {
			return false, nil
		}
	}
	return true, nil
}

// TestCrashChild, run as a child, writes until it is killed, printing each
// write after it committed. Run normally, it runs the same workload for a
// while in-process and checks the result.
func TestCrashChild(t *testing.T) {
	if os.Getenv(childRoleEnv) == "crash" {
		runCrashChild(t, os.Getenv(childDBEnv))
		return
	}
	s := openTestStore(t, Options{})
	committed := map[string]string{}
	err := crashWorkload(context.Background(), s, 200, func(id string, version int64, state domain.State) {
		committed[id] = fmt.Sprintf("%d %s", version, state)
	})
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	for id, want := range committed {
		r, err := s.Request(context.Background(), id)
		if err != nil || fmt.Sprintf("%d %s", r.Version, r.State) != want {
			t.Errorf("request %s is %d %s (%v), want %s", id, r.Version, r.State, err, want)
		}
	}
}

func runCrashChild(t *testing.T, path string) {
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("child open: %v", err)
	}
	defer s.Close()
	fmt.Println("open")
	// Bounded in case the parent never kills it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = crashWorkload(ctx, s, 0, func(id string, version int64, state domain.State) {
		fmt.Printf("committed %s %d %s\n", id, version, state)
	})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("child workload: %v", err)
	}
}

// TestCrashLosesNothingCommitted kills a writing gpubot at random moments
// and checks that every write it reported as committed survived, whole,
// with its indexes and audit trail agreeing.
func TestCrashLosesNothingCommitted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpubot.db")
	committed := map[string]committedWrite{}
	for round := range 5 {
		c := startChild(t, "TestCrashChild", "crash", path)
		c.waitFor(t, "open", 20*time.Second)
		time.Sleep(time.Duration(50+rand.IntN(250)) * time.Millisecond) // the random moment of the crash
		if err := c.cmd.Process.Kill(); err != nil {
			t.Fatalf("kill child: %v", err)
		}
		for line := range c.lines {
			if w, ok := parseCommitted(line); ok {
				committed[w.id] = w
			}
		}
		_ = c.cmd.Wait()
		checkAfterCrash(t, path, committed, round)
	}
	if len(committed) == 0 {
		t.Fatal("the child committed nothing before it was killed")
	}
	t.Logf("%d requests survived 5 crashes", len(committed))
}

type committedWrite struct {
	id      string
	version int64
	state   domain.State
}

func parseCommitted(line string) (committedWrite, bool) {
	fields := strings.Fields(line)
	if len(fields) != 4 || fields[0] != "committed" {
		return committedWrite{}, false
	}
	version, err := strconv.ParseInt(fields[2], 10, 64)
	if err != nil {
		return committedWrite{}, false
	}
	return committedWrite{id: fields[1], version: version, state: domain.State(fields[3])}, true
}

func checkAfterCrash(t *testing.T, path string, committed map[string]committedWrite, round int) {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("round %d: reopen after crash: %v", round, err)
	}
	defer s.Close()
	if err := checkConsistent(s); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	ctx := context.Background()
	for _, w := range committed {
		r, err := s.Request(ctx, w.id)
		if err != nil {
			t.Errorf("round %d: committed request %s lost: %v", round, w.id, err)
			continue
		}
		// The write after the last reported one may have committed just
		// before the kill, so the record may be one step ahead, never behind.
		if r.Version < w.version || (r.Version == w.version && r.State != w.state) {
			t.Errorf("round %d: request %s is v%d %s, committed v%d %s", round, w.id, r.Version, r.State, w.version, w.state)
		}
		events, err := s.AuditFor(ctx, w.id)
		if err != nil || len(events) == 0 || events[0].Action != "requested" {
			t.Errorf("round %d: audit of %s: %+v, %v", round, w.id, events, err)
			continue
		}
		if last := events[len(events)-1]; len(events) > 1 && last.Action != string(r.State) {
			t.Errorf("round %d: request %s is %s but its audit ends with %s", round, w.id, r.State, last.Action)
		}
	}
}
