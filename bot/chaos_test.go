package bot_test

import (
	"context"
	"errors"
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
	"github.com/gpubot/gpubot/internal/domain"
)

// TestChaos drives requests (1x and 8x, approvals and denials) through slacksim while
// the real bot process is SIGKILLed and restarted at random moments, fal answers one
// call in five with 500 or 429, and the websocket drops now and then.
//
// slacksim behaves as Slack does: a slash command or click that reaches no connection,
// or whose connection dies before the ack, fails for its user and is not sent again.
// So the test checks what gpubot promises, exactly: every command it acked is stored
// and settles, unless the ack said otherwise (with etcd electing a leader, "can't
// reach its storage, nothing was done": never stored; "may or may not have been
// done": either); a command that failed for its user may be stored (gpubot committed
// it, then died before the ack) and then settles too, or is missing, and only such a
// command is missing. At the end every approved request has exactly one machine, every
// denial is the one the approvers made, every ready machine was announced once (unless
// the process that recorded the notice was killed before it posted it), the audit
// trail holds every decision, and every instance at fal belongs to a request.
//
// No verdict waits on a clock: the run has three phases, each ending on an event.
// Chaos (the kills, the commands) ends when the last command has its outcome; then the
// last process is killed and the store read, to learn which commands were stored; then
// one process runs undisturbed until each stored request has settled, and is stopped
// with SIGTERM. The only bound is the test's own deadline (go test -timeout).
// GPUBOT_SOAK=1 runs a longer soak with a random seed.
func TestChaos(t *testing.T) {
	runChaos(t, chaosRun{seed: 20261130, requests: 50, kills: 20, replicas: 1})
}

// TestChaosWithReplicas is TestChaos with three replicas on a three-member etcd
// cluster: each kill takes a random replica, and now and then an etcd member is
// stopped and started again. A command may reach any replica; one that reached
// none is one slacksim counted as undeliverable.
func TestChaosWithReplicas(t *testing.T) {
	runChaos(t, chaosRun{seed: 20261202, requests: 50, kills: 30, replicas: 3, etcdMembers: 3})
}

// chaosRun is one chaos test's plan.
type chaosRun struct {
	seed            uint64
	requests, kills int
	replicas        int // gpubot processes at once
	etcdMembers     int // 0: the processes share the bbolt file, one at a time
}

func runChaos(t *testing.T, run chaosRun) {
	if os.Getenv("GPUBOT_SOAK") != "" {
		run.seed, run.requests, run.kills = uint64(time.Now().UnixNano()), 200, 80
	}
	t.Logf("chaos seed %d (GPUBOT_SOAK=1 runs a longer soak with a random seed)", run.seed)

	h := start(t, notStarted(),
		withFal(func(o *falsim.Options) {
			o.ProvisionAfter = 50 * time.Millisecond
			o.ReadyAfter = 200 * time.Millisecond
		}))
	if run.etcdMembers > 0 {
		h.useEtcd(run.etcdMembers)
	}
	ctx := untilDeadline(t)
	k := &killer{h: h, etcdMembers: run.etcdMembers}
	for range run.replicas {
		k.procs = append(k.procs, h.spawn())
	}
	h.registerKey(alice)
	h.registerKey(mallory)
	h.fal.SetFaultRate(0.2, int64(run.seed))

	plan := planRequests(run.requests, rand.New(rand.NewPCG(run.seed, 2)))
	decideCtx, stopDeciding := context.WithCancel(ctx)
	var deciding sync.WaitGroup
	deciding.Go(func() { decideCards(decideCtx, h) })
	var chaos sync.WaitGroup
	chaos.Go(func() { k.run(ctx, run.kills, rand.New(rand.NewPCG(run.seed, 1))) })
	outcomes := driveRequests(ctx, t, h, plan, rand.New(rand.NewPCG(run.seed, 3)))
	chaos.Wait()

	// Which commands did a killed process commit before its ack? The store says.
	finalStart := time.Now()
	k.stop()
	stored := h.storedRequests(t)
	final := h.spawn()
	for _, r := range stored {
		h.waitSettled(ctx, t, r)
	}
	stopDeciding()
	deciding.Wait()
	if err := final.stop(ctx); err != nil {
		t.Fatalf("the last gpubot did not stop cleanly: %v", err)
	}
	h.fal.ClearFaults()
	checkChaosOutcome(t, h, plan, outcomes, finalStart, k.count())
}

// plannedRequest is one command the chaos test types.
type plannedRequest struct {
	tag, user, typ string
}

func (p plannedRequest) index() int {
	i, _ := strconv.Atoi(strings.TrimPrefix(p.tag, "chaos-"))
	return i
}

// denied says whether the approvers deny it: every 8x whose number is a multiple of 4.
func (p plannedRequest) denied() bool { return p.typ == "8x" && p.index()%4 == 0 }

// approver is the one approver who decides it.
func (p plannedRequest) approver() string { return []string{bob, carol}[p.index()%2] }

// planRequests picks who asks for what: about one request in three is 8x.
func planRequests(n int, rng *rand.Rand) []plannedRequest {
	plan := make([]plannedRequest, n)
	for i := range plan {
		plan[i] = plannedRequest{tag: fmt.Sprintf("chaos-%03d", i), user: alice, typ: "1x"}
		if rng.IntN(2) == 0 {
			plan[i].user = mallory
		}
		if rng.IntN(3) == 0 {
			plan[i].typ = "8x"
		}
	}
	return plan
}

// commandOutcome is what the user saw of a command: acked (and with what answer), or
// failed (and why).
type commandOutcome struct {
	envelopeID string
	acked      bool
	answer     string // the ack's payload
	failure    string // slacksim's reason, when it failed for the user
}

// nothingDone says the ack told the user that nothing was done: the store was out of
// reach before anything was written.
func (o commandOutcome) nothingDone() bool {
	return o.acked && strings.Contains(o.answer, "can't reach its storage") && strings.Contains(o.answer, "nothing was done")
}

// maybeDone says the ack told the user the command may or may not have been done:
// the store was lost after the write was sent.
func (o commandOutcome) maybeDone() bool {
	return o.acked && strings.Contains(o.answer, "may or may not have been done")
}

// driveRequests types the planned commands at a random pace while the killer runs, and
// returns what became of each: an ack, or a failure the user saw. It returns once each
// has one of the two.
func driveRequests(ctx context.Context, t *testing.T, h *harness, plan []plannedRequest, rng *rand.Rand) map[string]commandOutcome {
	var mu sync.Mutex
	outcomes := map[string]commandOutcome{}
	var wg sync.WaitGroup
	for _, p := range plan {
		id, err := h.slack.SendSlashCommand(p.user, general, "/gpu", fmt.Sprintf("create %s for 2h %s", p.typ, p.tag))
		if err != nil {
			t.Errorf("send %s: %v", p.tag, err)
			break
		}
		wg.Go(func() {
			ack, err := h.slack.AwaitAck(ctx, id)
			outcome := commandOutcome{envelopeID: id, acked: err == nil, answer: string(ack.Payload)}
			switch {
			case errors.Is(err, slacksim.ErrFailed):
				outcome.failure = strings.TrimPrefix(err.Error(), fmt.Sprintf("await ack of envelope %s: %v: ", id, slacksim.ErrFailed))
			case err != nil:
				t.Errorf("%s: neither acked nor failed: %v", p.tag, err)
			}
			mu.Lock()
			outcomes[p.tag] = outcome
			mu.Unlock()
		})
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(rng.IntN(150)) * time.Millisecond):
		}
	}
	wg.Wait()
	return outcomes
}

// killer SIGKILLs a random bot process at random moments and starts it again; with
// etcd, it also stops an etcd member now and then, and starts it again a kill later.
type killer struct {
	h           *harness
	etcdMembers int
	mu          sync.Mutex
	procs       []*process
	kills       int
	stopped     int // the etcd member stopped, or -1
}

func (k *killer) run(ctx context.Context, n int, rng *rand.Rand) {
	k.stopped = -1
	defer k.restartMember()
	for range n {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(200+rng.IntN(700)) * time.Millisecond):
		}
		if rng.IntN(4) == 0 {
			k.h.slack.DropConnections()
		}
		k.shakeEtcd(rng)
		k.mu.Lock()
		victim := rng.IntN(len(k.procs))
		k.procs[victim].kill()
		k.kills++
		k.mu.Unlock()
		p, err := k.h.spawnProcess()
		if err != nil {
			k.h.t.Errorf("restart after kill %d: %v", k.count(), err)
			return
		}
		k.mu.Lock()
		k.procs[victim] = p
		k.mu.Unlock()
	}
}

// shakeEtcd starts the member it stopped last time, or stops one (about one kill in
// six): the cluster keeps its quorum with one member down.
func (k *killer) shakeEtcd(rng *rand.Rand) {
	switch {
	case k.etcdMembers == 0:
	case k.stopped >= 0:
		k.restartMember()
	case rng.IntN(6) == 0:
		k.stopped = rng.IntN(k.etcdMembers)
		k.h.etcd.Stop(k.stopped)
	}
}

func (k *killer) restartMember() {
	if k.stopped < 0 {
		return
	}
	if err := k.h.etcd.Restart(k.stopped); err != nil {
		k.h.t.Errorf("etcd: %v", err)
	}
	k.stopped = -1
}

func (k *killer) count() int { k.mu.Lock(); defer k.mu.Unlock(); return k.kills }

func (k *killer) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.procs {
		p.kill()
	}
}

var chaosTag = regexp.MustCompile(`chaos-\d+`)

// decideCards plays the approvers until ctx ends: each card is decided by the planned
// approver, denied (with a reason) or approved. As a person would, an approver clicks
// again when Slack showed their click failed, or when the card still shows its buttons
// after their click was acked (the process that took it died before editing the card).
func decideCards(ctx context.Context, h *harness) {
	clicked := map[string]time.Time{}
	for ctx.Err() == nil {
		for _, card := range h.slack.Messages() {
			tag := chaosTag.FindString(card.AllText())
			if card.Channel != approvals || tag == "" || len(card.Buttons()) != 2 || time.Since(clicked[card.ID]) < time.Second {
				continue
			}
			p := plannedRequest{tag: tag, typ: "8x"}
			clicked[card.ID] = time.Now()
			if !p.denied() {
				_, _ = h.slack.Click(ctx, p.approver(), card, "Approve")
				continue
			}
			if _, err := h.slack.Click(ctx, p.approver(), card, "Deny"); err != nil {
				continue
			}
			modal, cancel := context.WithTimeout(ctx, wait)
			if h.slack.WaitUntil(modal, func() bool {
				v, ok := h.slack.OpenView(p.approver())
				return ok && v.CallbackID == "gpubot_deny"
			}) == nil {
				_, _ = h.slack.SubmitView(ctx, p.approver(), map[string]string{"reason": "chaos says no"})
			}
			cancel()
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// storedRequests reads every request from the store, once no process writes to it.
func (h *harness) storedRequests(t *testing.T) []domain.Request {
	t.Helper()
	store, closeStore := h.openStore()
	defer closeStore()
	var all []domain.Request
	for _, u := range []string{alice, mallory} {
		reqs, err := store.RequestsByUser(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: u})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, reqs...)
	}
	return all
}

// waitSettled waits until r's thread root says it is ready or denied.
func (h *harness) waitSettled(ctx context.Context, t *testing.T, r domain.Request) {
	t.Helper()
	tag := chaosTag.FindString(r.Reason)
	_, err := h.slack.WaitMessage(ctx, func(m slacksim.Message) bool {
		text := m.AllText()
		return m.ThreadTS == "" && !m.Ephemeral && chaosTag.FindString(text) == tag &&
			(strings.Contains(text, ":large_green_circle: Ready") || strings.Contains(text, ":no_entry: Denied"))
	})
	if err != nil {
		t.Fatalf("%s (stored, %s when read) never settled: %v\n%s", tag, r.State, err, h.dump())
	}
}

func checkChaosOutcome(t *testing.T, h *harness, plan []plannedRequest, outcomes map[string]commandOutcome, finalStart time.Time, kills int) {
	t.Helper()
	store, closeStore := h.openStore()
	defer closeStore()
	byTag := map[string][]domain.Request{}
	for _, u := range []string{alice, mallory} {
		reqs, err := store.RequestsByUser(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: u})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			tag := chaosTag.FindString(r.Reason)
			byTag[tag] = append(byTag[tag], r)
		}
	}
	failed := map[string]int{}
	for _, f := range h.slack.Failures() {
		failed[f.Reason]++
	}
	instances := map[string]bool{}
	missing, unreachable, cut := 0, 0, 0
	for _, p := range plan {
		outcome, reqs := outcomes[p.tag], byTag[p.tag]
		if outcome.nothingDone() || outcome.maybeDone() {
			unreachable++
		}
		switch {
		case len(reqs) > 1:
			t.Errorf("%s: %d requests for one command", p.tag, len(reqs))
			continue
		case len(reqs) > 0 && outcome.nothingDone():
			t.Errorf("%s: stored, yet its user was told nothing was done", p.tag)
		case len(reqs) == 0 && outcome.acked && !outcome.nothingDone() && !outcome.maybeDone():
			t.Errorf("%s: acked but never stored", p.tag)
			continue
		case len(reqs) == 0:
			missing++ // failed for the user, or told it was not (or may not be) done
			continue
		case outcome.failure == slacksim.FailedNoConnection:
			t.Errorf("%s: stored, yet the command reached no connection", p.tag)
		}
		r := reqs[0]
		checkDecision(t, p, r)
		checkAuditHoldsDecision(t, store, r)
		if r.State != domain.StateReady {
			continue
		}
		if instances[r.InstanceID] {
			t.Errorf("instance %s belongs to two requests", r.InstanceID)
		}
		instances[r.InstanceID] = true
		if h.readyAnnouncedOnce(t, r, finalStart) {
			continue
		}
		cut++
	}
	checkNoForgottenMachine(t, h, store)
	c := h.fal.Counters()
	if c.Instances != len(instances) || len(h.fal.Instances()) != len(instances) {
		t.Errorf("fal made %d instances (%d live) for %d ready requests", c.Instances, len(h.fal.Instances()), len(instances))
	}
	t.Logf("%d kills, %d fal faults, %d commands, %d failed for their users %v, %d told the store was out of reach, %d never stored, %d ready, %d ready notices cut by a kill",
		kills, c.Faults, len(plan), len(h.slack.Failures()), failed, unreachable, missing, len(instances), cut)
}

// checkDecision holds each request to the plan: 8x requests decided by their approver,
// denied exactly when planned, with the reason given; 1x requests never need a decision.
func checkDecision(t *testing.T, p plannedRequest, r domain.Request) {
	t.Helper()
	want := domain.StateReady
	if p.denied() {
		want = domain.StateDenied
	}
	if r.State != want {
		t.Errorf("%s is %s (%s), want %s", p.tag, r.State, r.Error, want)
	}
	switch {
	case p.typ == "1x" && r.ApproverID != "":
		t.Errorf("%s: a 1x request was decided by %s", p.tag, r.ApproverID)
	case p.typ == "8x" && r.ApproverID != p.approver():
		t.Errorf("%s: decided by %q, want %s", p.tag, r.ApproverID, p.approver())
	case p.denied() && r.DecisionReason != "chaos says no":
		t.Errorf("%s: denied with reason %q", p.tag, r.DecisionReason)
	}
}

// readyAnnouncedOnce checks r's ready reply and NOTIFY_CHANNEL notice: never twice, and
// both there unless the notice was recorded by a process that was killed before it
// posted them (gpubot records a notice before posting it, so a kill in between loses
// it rather than doubling it). It reports whether both were posted.
func (h *harness) readyAnnouncedOnce(t *testing.T, r domain.Request, finalStart time.Time) bool {
	t.Helper()
	replies := h.countThread(r, "is ready :tada:")
	notices := h.count(notify, "`"+r.InstanceID+"` is ready")
	if replies > 1 || notices > 1 {
		t.Errorf("%s: %d ready replies and %d notices, want one each", r.Reason, replies, notices)
	}
	if replies == 1 && notices == 1 {
		return true
	}
	if recorded := r.Notices["ready"]; recorded.IsZero() || !recorded.Before(finalStart) {
		t.Errorf("%s: ready notice missing (%d replies, %d notices), recorded %v by a process that was not killed", r.Reason, replies, notices, recorded)
	}
	return false
}

// checkNoForgottenMachine holds gpubot's first promise: every instance fal lists is
// tracked by a live request, is being deleted, or was reported to the admins.
func checkNoForgottenMachine(t *testing.T, h *harness, store domain.Store) {
	t.Helper()
	for _, inst := range h.fal.Instances() {
		r, err := store.RequestByInstance(h.ctx(), inst.ID)
		switch {
		case err == nil && !r.State.Terminal():
		case h.count(h.slack.DMChannel(admin), "`"+inst.ID+"`") > 0:
		case err == nil:
			t.Errorf("instance %s (%s) runs for request %s, which is %s", inst.ID, inst.Status, r.ID, r.State)
		default:
			t.Errorf("instance %s (%s) belongs to no request and was never reported to the admins", inst.ID, inst.Status)
		}
	}
}

func checkAuditHoldsDecision(t *testing.T, store domain.Store, r domain.Request) {
	t.Helper()
	events, err := store.AuditFor(context.Background(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"requested": r.UserID}
	switch {
	case r.State == domain.StateDenied:
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
func (h *harness) countThread(r domain.Request, text string) int {
	n := 0
	for _, m := range h.slack.Thread(r.ChannelID, r.ThreadTS) {
		if strings.Contains(m.AllText(), text) {
			n++
		}
	}
	return n
}
