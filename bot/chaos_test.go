package bot_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/storage"
)

// TestChaos drives requests (1x and 8x, approvals and denials) through slacksim while
// the real bot process is SIGKILLed and restarted at random moments, fal answers one
// call in five with 500 or 429, and the websocket drops now and then with unacked
// envelopes redelivered. At the end every approved request has exactly one machine,
// every ready machine was announced at most once (exactly once unless a kill fell
// between recording the notice and posting it), no request is stuck, and the audit
// trail holds every decision. GPUBOT_SOAK=1 runs a longer soak with a random seed.
func TestChaos(t *testing.T) {
	seed, requests, kills := uint64(20261130), 50, 20
	if os.Getenv("GPUBOT_SOAK") != "" {
		seed, requests, kills = uint64(time.Now().UnixNano()), 200, 80
	}
	t.Logf("chaos seed %d (GPUBOT_SOAK=1 runs a longer soak with a random seed)", seed)

	h := start(t, notStarted(),
		withSlack(func(o *slacksim.Options) { o.RedeliverAfter = 300 * time.Millisecond }),
		withFal(func(o *falsim.Options) {
			o.ProvisionAfter = 50 * time.Millisecond
			o.ReadyAfter = 200 * time.Millisecond
		}))
	proc := h.spawn()
	h.registerKey(alice)
	h.registerKey(mallory)
	h.fal.SetFaultRate(0.2, int64(seed))

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	k := &killer{h: h, proc: proc}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); k.run(ctx, kills, rand.New(rand.NewPCG(seed, 1))) }()
	go func() { defer wg.Done(); driveRequests(ctx, t, h, requests, rand.New(rand.NewPCG(seed, 2))) }()
	go func() { defer wg.Done(); decideCards(ctx, h, requests) }()

	tag := regexp.MustCompile(`chaos-(\d+)`)
	var done map[string]bool
	settled := func() bool {
		done = map[string]bool{}
		for _, m := range h.slack.Messages() {
			if m.ThreadTS == "" && !m.Ephemeral && (strings.Contains(m.AllText(), ":large_green_circle: Ready") || strings.Contains(m.AllText(), ":no_entry: Denied")) {
				if id := tag.FindString(m.AllText()); id != "" {
					done[id] = true
				}
			}
		}
		return len(done) == requests
	}
	for !settled() || !k.finished() {
		select {
		case <-ctx.Done():
			var open []string
			for i := range requests {
				if tag := fmt.Sprintf("chaos-%03d", i); !done[tag] {
					open = append(open, tag)
				}
			}
			t.Fatalf("not settled in time (%d kills done); still open: %v\n%s", k.count(), open, h.dump())
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	wg.Wait()
	k.stop()
	h.fal.ClearFaults()
	checkChaosOutcome(t, h, requests, k.times())
}

// killer SIGKILLs the bot process at random moments and starts it again.
type killer struct {
	h     *harness
	mu    sync.Mutex
	proc  *process
	kills []time.Time
	done  bool
}

func (k *killer) run(ctx context.Context, n int, rng *rand.Rand) {
	defer func() { k.mu.Lock(); k.done = true; k.mu.Unlock() }()
	for range n {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(200+rng.IntN(700)) * time.Millisecond):
		}
		if rng.IntN(4) == 0 {
			k.h.slack.DropConnections()
		}
		k.mu.Lock()
		k.proc.kill()
		k.kills = append(k.kills, time.Now())
		k.mu.Unlock()
		p, err := k.h.spawnProcess()
		if err != nil {
			return
		}
		k.mu.Lock()
		k.proc = p
		k.mu.Unlock()
	}
}

func (k *killer) finished() bool { k.mu.Lock(); defer k.mu.Unlock(); return k.done }
func (k *killer) count() int     { k.mu.Lock(); defer k.mu.Unlock(); return len(k.kills) }
func (k *killer) times() []time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]time.Time(nil), k.kills...)
}
func (k *killer) stop() { k.mu.Lock(); defer k.mu.Unlock(); k.proc.kill() }

// driveRequests types the requests, each with a tag in its reason; about one in three is 8x.
func driveRequests(ctx context.Context, t *testing.T, h *harness, n int, rng *rand.Rand) {
	var wg sync.WaitGroup
	for i := range n {
		user, typ := alice, "1x"
		if rng.IntN(2) == 0 {
			user = mallory
		}
		if rng.IntN(3) == 0 {
			typ = "8x"
		}
		id, err := h.slack.SendSlashCommand(user, general, "/gpu", fmt.Sprintf("create %s for 2h chaos-%03d", typ, i))
		if err != nil {
			t.Errorf("send command %d: %v", i, err)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ackCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if _, err := h.slack.AwaitAck(ackCtx, id); err != nil && ctx.Err() == nil {
				t.Errorf("command %d was never acked: %v", i, err)
			}
		}()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(rng.IntN(150)) * time.Millisecond):
		}
	}
	wg.Wait()
}

// decideCards plays the approvers: every card whose tag is a multiple of 4 is denied
// with a reason, the rest approved. A card whose buttons are still there after a while
// (the click was lost with a killed process) is clicked again, as a person would.
func decideCards(ctx context.Context, h *harness, n int) {
	tag := regexp.MustCompile(`chaos-(\d+)`)
	lastTry := map[string]time.Time{}
	for ctx.Err() == nil {
		for _, card := range h.slack.Messages() {
			if card.Channel != approvals || len(card.Buttons()) != 2 || time.Since(lastTry[card.ID]) < 2*time.Second {
				continue
			}
			m := tag.FindStringSubmatch(card.AllText())
			if m == nil {
				continue
			}
			lastTry[card.ID] = time.Now()
			i, _ := strconv.Atoi(m[1])
			approver := []string{bob, carol}[i%2]
			clickCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if i%4 != 0 {
				_, _ = h.slack.Click(clickCtx, approver, card, "Approve")
			} else if _, err := h.slack.Click(clickCtx, approver, card, "Deny"); err == nil {
				_ = h.slack.WaitUntil(clickCtx, func() bool { v, ok := h.slack.OpenView(approver); return ok && v.CallbackID == "gpubot_deny" })
				if _, ok := h.slack.OpenView(approver); ok {
					_, _ = h.slack.SubmitView(clickCtx, approver, map[string]string{"reason": "chaos says no"})
				}
			}
			cancel()
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	_ = n
}

func checkChaosOutcome(t *testing.T, h *harness, n int, kills []time.Time) {
	t.Helper()
	store, err := storage.Open(h.cfg.DBPath, storage.Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := h.ctx()
	var all []storage.Request
	for _, u := range []string{alice, mallory} {
		reqs, err := store.RequestsByUser(ctx, storage.UserRef{TeamID: "T0GPUBOT", UserID: u})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, reqs...)
	}
	if len(all) != n {
		t.Errorf("%d requests stored for %d commands", len(all), n)
	}
	byTag := map[string]int{}
	instances := map[string]bool{}
	cut := 0
	for _, r := range all {
		byTag[r.Reason]++
		switch r.State {
		case storage.StateReady:
			if instances[r.InstanceID] {
				t.Errorf("instance %s belongs to two requests", r.InstanceID)
			}
			instances[r.InstanceID] = true
			replies := h.countThread(r, "is ready :tada:")
			notices := h.count(notify, r.InstanceID)
			if replies > 1 || notices > 1 {
				t.Errorf("%s: %d ready replies and %d notices, want one each", r.Reason, replies, notices)
			}
			if replies == 0 || notices == 0 {
				if !killedJustAfter(r.Notices["ready"], kills) {
					t.Errorf("%s: ready notice missing (%d replies, %d notices) with no kill to explain it", r.Reason, replies, notices)
				}
				cut++
			}
		case storage.StateDenied:
			i, _ := strconv.Atoi(strings.TrimPrefix(r.Reason, "2h chaos-"))
			_ = i
		default:
			t.Errorf("%s is stuck in %s (%s)", r.Reason, r.State, r.Error)
		}
		checkAuditHoldsDecision(t, store, r)
	}
	for reason, count := range byTag {
		if count != 1 {
			t.Errorf("%d requests for %q, want 1", count, reason)
		}
	}
	c := h.fal.Counters()
	if c.Instances != len(instances) || len(h.fal.Instances()) != len(instances) {
		t.Errorf("fal made %d instances (%d live) for %d ready requests", c.Instances, len(h.fal.Instances()), len(instances))
	}
	t.Logf("%d kills, %d fal faults, %d ready, %d denied, %d ready notices cut by a kill", len(kills), c.Faults, len(instances), len(all)-len(instances), cut)
}

// killedJustAfter says whether the process was killed within moments of t: a notice
// recorded then may never have been posted.
func killedJustAfter(t time.Time, kills []time.Time) bool {
	for _, k := range kills {
		if !k.Before(t) && k.Sub(t) < 250*time.Millisecond {
			return true
		}
	}
	return false
}

func checkAuditHoldsDecision(t *testing.T, store *storage.Store, r storage.Request) {
	t.Helper()
	events, err := store.AuditFor(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"requested": r.UserID}
	switch {
	case r.State == storage.StateDenied:
		want["denied"] = r.ApproverID
	case r.ApproverID != "":
		want["approved"] = r.ApproverID
	}
	for _, e := range events {
		if actor, ok := want[e.Action]; ok && actor == e.Actor {
			delete(want, e.Action)
		}
	}
	if len(want) > 0 {
		t.Errorf("%s: audit trail lacks %v (has %d events)", r.Reason, want, len(events))
	}
}

// countThread counts the replies in r's thread that contain text.
func (h *harness) countThread(r storage.Request, text string) int {
	n := 0
	for _, m := range h.slack.Thread(r.ChannelID, r.ThreadTS) {
		if strings.Contains(m.AllText(), text) {
			n++
		}
	}
	return n
}
