package bot_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/internal/app"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/etcdtest"
	"github.com/gpubot/gpubot/storage"
	"github.com/gpubot/gpubot/storage/etcdstore"
)

// Replicas: several gpubot processes on one etcd.

// etcdPrefix is where the test's gpubots keep their state in etcd.
const etcdPrefix = "/gpubot-test/"

// leaderTTL is the replicas' LEADER_TTL: etcd's shortest lease is about a second
// with the test cluster's timings, so a dead leader holds the work this long.
const leaderTTL = "2s"

// useEtcd makes the harness's gpubot processes share an etcd cluster of members
// started in this test process, instead of the bbolt file.
func (h *harness) useEtcd(members int) {
	h.t.Helper()
	h.etcd = etcdtest.Start(h.t, members)
}

// storeEnviron is the store's part of a gpubot process's environment.
func (h *harness) storeEnviron() []string {
	if h.etcd == nil {
		return []string{"DB_PATH=" + h.cfg.DBPath}
	}
	return []string{
		"ETCD_ENDPOINTS=" + strings.Join(h.etcd.Endpoints(), ","),
		"ETCD_PREFIX=" + etcdPrefix,
		"LEADER_TTL=" + leaderTTL,
	}
}

// withHTTP gives the process its own /metrics and /readyz on a free port of
// 127.0.0.1, to ask which replica leads and whether one is ready.
func (h *harness) spawnWithHTTP() *process {
	h.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	p, err := h.spawnProcessWith("HTTP_ADDR=" + addr)
	if err != nil {
		h.t.Fatal(err)
	}
	p.httpAddr = addr
	return p
}

// get reads path from the process's HTTP endpoints: the status and the body.
func (p *process) get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.httpAddr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// metric is the value of a metric without labels on the process's /metrics; -1 when
// it cannot be read (a process paused or gone).
func (p *process) metric(ctx context.Context, name string) float64 {
	attempt, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, body, err := p.get(attempt, "/metrics")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(body) {
		if value, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			v, err := strconv.ParseFloat(value, 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func (p *process) leads(ctx context.Context) bool { return p.metric(ctx, "gpubot_leader") == 1 }

// waitLeader waits until exactly one of procs says it leads, and returns it.
func (h *harness) waitLeader(ctx context.Context, procs ...*process) *process {
	h.t.Helper()
	var leader *process
	err := poll(ctx, func() bool {
		leader = nil
		leading := 0
		for _, p := range procs {
			if p.leads(ctx) {
				leader, leading = p, leading+1
			}
		}
		return leading == 1
	})
	if err != nil {
		h.t.Fatalf("no single leader among %d replicas: %v", len(procs), err)
	}
	return leader
}

// leaderAndFollower starts a replica, waits until it leads, then starts a second.
func (h *harness) leaderAndFollower(ctx context.Context) (leader, follower *process) {
	h.t.Helper()
	first := h.spawnWithHTTP()
	leader = h.waitLeader(ctx, first)
	return leader, h.spawnWithHTTP()
}

// TestRollingRestartLosesNoCommand restarts each of two replicas in turn, with
// SIGTERM as a deploy does, while commands arrive at a steady pace: every command a
// replica takes is acked before its link closes, every request gets exactly one
// machine, and every ready notice is posted once.
//
// A command Slack sends into a link as it closes fails for its sender, and nothing a
// client can do prevents it: Slack picks the connection. Such a command must have
// done nothing, so the sender's retry, which this test makes, is handled once.
func TestRollingRestartLosesNoCommand(t *testing.T) {
	h := start(t, notStarted())
	h.useEtcd(1)
	ctx := untilDeadline(t)
	procs := []*process{h.spawn(), h.spawn()}
	users := []string{alice, mallory, dave, erin}
	for _, u := range users {
		h.registerKey(u)
	}

	type command struct{ user, text, envelopeID string }
	const atLeast, every = 100, 30 * time.Millisecond
	var restarted atomic.Bool
	var sent []command
	creates := 0
	var typing sync.WaitGroup
	typing.Go(func() {
		for i := 0; i < atLeast || !restarted.Load(); i++ {
			c := command{user: users[i%len(users)], text: "list"}
			if i%5 == 0 {
				c.text = fmt.Sprintf("create 1x for 2h rolling-%03d", i)
				creates++
			}
			id, err := h.slack.SendSlashCommand(c.user, general, "/gpu", c.text)
			if err != nil {
				t.Errorf("send /gpu %s: %v", c.text, err)
				return
			}
			c.envelopeID = id
			sent = append(sent, c)
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
		}
	})
	// Restart while the commands flow: each replica in turn, the next one only
	// once the restarted one is connected again.
	_ = h.slack.WaitUntil(ctx, func() bool { return len(h.slack.Messages()) >= 10 })
	for i, p := range procs {
		if err := p.stop(ctx); err != nil {
			t.Fatalf("replica %d did not stop cleanly on SIGTERM: %v", i, err)
		}
		procs[i] = h.spawn()
	}
	restarted.Store(true)
	typing.Wait()

	retried := 0
	for _, c := range sent {
		_, err := h.slack.AwaitAck(ctx, c.envelopeID)
		if err == nil {
			continue
		}
		if h.failure(c.envelopeID) != slacksim.FailedConnectionLost || h.tookEnvelope(c.envelopeID) {
			t.Errorf("/gpu %s (envelope %s) was lost after a replica took it: %v", c.text, c.envelopeID, err)
			continue
		}
		retry, err := h.slack.SendSlashCommand(c.user, general, "/gpu", c.text)
		if err == nil {
			_, err = h.slack.AwaitAck(ctx, retry)
		}
		if err != nil {
			t.Errorf("retry of /gpu %s: %v", c.text, err)
		}
		retried++
	}
	if t.Failed() {
		t.FailNow() // a lost create would hold the wait for its notice until the deadline
	}
	store, closeStore := h.openStore()
	defer closeStore()
	if err := h.slack.WaitUntil(ctx, func() bool { return h.count(notify, "is ready") >= creates }); err != nil {
		t.Fatalf("%d ready notices of %d: %v\n%s", h.count(notify, "is ready"), creates, err, h.dump())
	}
	checkOneMachineEach(t, h, store, users, creates)
	t.Logf("%d commands (%d creates) across two rolling restarts; %d sent into a closing link, retried", len(sent), creates, retried)
}

// failure is why Slack failed the envelope for its sender; "" if it did not.
func (h *harness) failure(envelopeID string) string {
	for _, f := range h.slack.Failures() {
		if f.EnvelopeID == envelopeID {
			return f.Reason
		}
	}
	return ""
}

// tookEnvelope reports whether any of the harness's gpubot processes took the
// envelope to handle it.
func (h *harness) tookEnvelope(id string) bool {
	return strings.Contains(h.logs.String(), `"msg":"envelope taken","envelope":"`+id+`"`)
}

// checkOneMachineEach holds every request of users to exactly one machine, announced
// once, and every instance at fal to exactly one request.
func checkOneMachineEach(t *testing.T, h *harness, store domain.Store, users []string, want int) {
	t.Helper()
	machines := map[string]string{}
	for _, u := range users {
		reqs, err := store.RequestsByUser(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: u})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			if r.InstanceID == "" {
				t.Errorf("%s (%s) has no machine", r.Reason, r.State)
				continue
			}
			if other, taken := machines[r.InstanceID]; taken {
				t.Errorf("instance %s belongs to %s and %s", r.InstanceID, other, r.Reason)
			}
			machines[r.InstanceID] = r.Reason
			if n := h.count(notify, "`"+r.InstanceID+"` is ready"); n != 1 {
				t.Errorf("%s: %d ready notices, want 1", r.Reason, n)
			}
		}
	}
	if len(machines) != want || len(h.fal.Instances()) != want || h.fal.Counters().Instances != want {
		t.Errorf("%d requests with machines, fal lists %d and made %d; want %d each",
			len(machines), len(h.fal.Instances()), h.fal.Counters().Instances, want)
	}
	checkNoForgottenMachine(t, h, store)
}

// TestLeaderKilledWhileAMachineProvisions kills the leading replica with SIGKILL while
// fal makes a machine: the other takes over the background work, and the ready
// notice comes once, within LEADER_TTL and a tracking pass of fal saying ready.
func TestLeaderKilledWhileAMachineProvisions(t *testing.T) {
	h := start(t, notStarted(), withFal(func(o *falsim.Options) { o.Manual = true }))
	h.useEtcd(1)
	ctx := untilDeadline(t)
	leader, second := h.leaderAndFollower(ctx)
	h.registerKey(alice)
	h.command(alice, general, "create 1x for 2h failover")
	var instance string
	_ = poll(ctx, func() bool {
		instances := h.fal.Instances()
		if len(instances) == 1 {
			instance = instances[0].ID
		}
		return instance != ""
	})
	if instance == "" {
		t.Fatal("fal never got the create")
	}

	leader.kill()
	falSaidReady := time.Now()
	if err := h.fal.SetStatus(instance, fal.StatusReady); err != nil {
		t.Fatal(err)
	}
	h.waitFor(notify, "`"+instance+"` is ready")
	took := time.Since(falSaidReady)
	if h.waitLeader(ctx, second) != second {
		t.Fatal("the surviving replica does not lead")
	}
	ttl, _ := time.ParseDuration(leaderTTL)
	if bound := 2 * (ttl + h.cfg.PollInterval); took > bound {
		t.Errorf("the ready notice came %v after fal said ready; want within %v (twice LEADER_TTL plus a pass)", took, bound)
	}
	// A replica started now finds nothing left to announce.
	third := h.spawnWithHTTP()
	passes := second.metric(ctx, `gpubot_tracking_passes_total{outcome="ok"}`)
	if err := poll(ctx, func() bool {
		return second.metric(ctx, `gpubot_tracking_passes_total{outcome="ok"}`) >= passes+3
	}); err != nil {
		t.Fatalf("the leader made no more passes: %v", err)
	}
	if n := h.count(notify, "`"+instance+"` is ready"); n != 1 {
		t.Errorf("%d ready notices, want 1", n)
	}
	if n := h.count("", "is ready :tada:"); n != 1 {
		t.Errorf("%d ready replies in the thread, want 1", n)
	}
	_ = third
	t.Logf("ready notice %v after fal said ready, the leader having been SIGKILLed just before (LEADER_TTL %s)", took.Round(time.Millisecond), leaderTTL)
}

// TestEtcdOutOfReachThenBack stops the one etcd member under a replica: commands are
// answered at once that nothing was done, /readyz says 503, nothing is half-done, and
// when etcd is back everything carries on.
func TestEtcdOutOfReachThenBack(t *testing.T) {
	h := start(t, notStarted())
	h.useEtcd(1)
	ctx := untilDeadline(t)
	p := h.spawnWithHTTP()
	h.registerKey(alice)
	h.command(alice, general, "create 1x for 2h before-the-outage")
	h.waitFor(notify, "is ready")

	h.etcd.Stop(0)
	h.waitReady(ctx, p, http.StatusServiceUnavailable)
	for _, text := range []string{"create 1x for 2h during-the-outage", "list", "key remove", "extend 1h"} {
		if got := h.command(alice, general, text); !strings.Contains(got, "can't reach its storage") || !strings.Contains(got, "nothing was done") {
			t.Errorf("/gpu %s during the outage answered %q", text, got)
		}
	}
	if err := h.etcd.Restart(0); err != nil {
		t.Fatal(err)
	}
	h.waitReady(ctx, p, http.StatusOK)
	if got := h.command(alice, general, "create 1x for 2h after-the-outage"); !strings.Contains(got, "Got it") {
		t.Fatalf("create after the outage answered %q", got)
	}
	if err := h.slack.WaitUntil(ctx, func() bool { return h.count(notify, "is ready") == 2 }); err != nil {
		t.Fatalf("the request made after the outage never became ready: %v\n%s", err, h.dump())
	}
	store, closeStore := h.openStore()
	defer closeStore()
	reqs, err := store.RequestsByUser(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: alice})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, r := range reqs {
		reasons = append(reasons, r.Reason)
	}
	slices.Sort(reasons)
	if want := []string{"after-the-outage", "before-the-outage"}; !slices.Equal(reasons, want) {
		t.Errorf("alice's requests are %q, want %q: the outage's create must leave nothing", reasons, want)
	}
	if _, err := store.Key(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: alice}); err != nil {
		t.Errorf("alice's key after the outage: %v (the key remove during it must change nothing)", err)
	}
	checkOneMachineEach(t, h, store, []string{alice}, 2)
}

// waitReady waits until the process's /readyz answers status.
func (h *harness) waitReady(ctx context.Context, p *process, status int) {
	h.t.Helper()
	var last string
	err := poll(ctx, func() bool {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		got, body, err := p.get(attempt, "/readyz")
		last = fmt.Sprintf("%d %q %v", got, body, err)
		return err == nil && got == status
	})
	if err != nil {
		h.t.Fatalf("/readyz never answered %d (last: %s): %v", status, last, err)
	}
}

// TestPausedLeaderStepsDownAndWritesNothing pauses the leading replica (SIGSTOP) past
// its session, lets the other take over and act, then wakes it (SIGCONT): the woken
// one steps down without a write of its own (its writes are fenced with its old
// election key), and what happened meanwhile is announced once.
func TestPausedLeaderStepsDownAndWritesNothing(t *testing.T) {
	h := start(t, notStarted())
	h.useEtcd(1)
	ctx := untilDeadline(t)
	paused, second := h.leaderAndFollower(ctx)
	h.registerKey(alice)
	h.command(alice, general, "create 1x for 2h fenced")
	h.waitFor(notify, "is ready")
	r := h.requestOf(alice)

	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = paused.cmd.Process.Signal(syscall.SIGCONT) }()
	if h.waitLeader(ctx, second) != second {
		t.Fatal("the other replica did not take over")
	}
	// What the paused leader would have acted on: the machine vanishes at fal.
	h.fal.Remove(r.InstanceID)
	h.waitFor("", "deleted outside gpubot")
	pausedLogs := paused.logs.String()

	if err := paused.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := poll(ctx, func() bool { return paused.metric(ctx, "gpubot_leader") == 0 }); err != nil {
		t.Fatalf("the woken replica still says it leads: %v", err)
	}
	if h.waitLeader(ctx, paused, second) != second {
		t.Fatal("leadership moved back to the woken replica")
	}
	woken := strings.TrimPrefix(paused.logs.String(), pausedLogs)
	for line := range strings.Lines(woken) {
		if strings.Contains(line, `"msg":"record move"`) || strings.Contains(line, "ready_notice") {
			t.Errorf("the woken replica wrote after it lost leadership: %s", line)
		}
	}
	store, closeStore := h.openStore()
	defer closeStore()
	events, err := store.AuditFor(h.ctx(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	gone := 0
	for _, e := range events {
		if e.Action == string(domain.StateGone) {
			gone++
		}
	}
	if gone != 1 {
		t.Errorf("%d 'gone' events in the audit trail, want 1: %+v", gone, events)
	}
	if n := h.count("", "deleted outside gpubot"); n != 1 {
		t.Errorf("%d messages say the machine was deleted outside gpubot, want 1\n%s", n, h.dump())
	}
}

// openEtcdStore opens the store the replicas share, as one more of its clients.
func (h *harness) openEtcdStore() (domain.Store, func()) {
	h.t.Helper()
	store, err := etcdstore.Open(h.ctx(), h.etcd.Client(h.t), etcdPrefix, etcdstore.Options{})
	if err != nil {
		h.t.Fatalf("open the replicas' store: %v", err)
	}
	return store, func() { _ = store.Close() }
}

// poll waits until cond holds, asking every few milliseconds, for what slacksim does
// not see change (a process's metrics, its /readyz); ctx bounds it.
func poll(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("condition never held: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// TestMigrateThenAReplicaCarriesOn moves a team from one gpubot on the bbolt file to a
// replica on etcd, the way the README says: stop gpubot, gpubot migrate, start the
// replica. The replica shows the machine and tracks it when it vanishes at fal, as the
// single gpubot would have; the history made it across.
func TestMigrateThenAReplicaCarriesOn(t *testing.T) {
	h := start(t, notStarted())
	ctx := untilDeadline(t)
	single := h.spawn()
	h.registerKey(alice)
	h.command(alice, general, "create 1x for 2h migrated-tracked")
	h.waitFor(notify, "is ready")
	if err := single.stop(ctx); err != nil {
		t.Fatalf("stop the single gpubot: %v", err)
	}
	const history = 1000
	fillHistory(t, h.cfg.DBPath, history)

	h.useEtcd(1)
	env := map[string]string{
		"DB_PATH": h.cfg.DBPath, "ETCD_ENDPOINTS": strings.Join(h.etcd.Endpoints(), ","), "ETCD_PREFIX": etcdPrefix,
	}
	settings, err := config.LoadMigration(func(key string) string { return env[key] })
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	if err := app.Migrate(ctx, settings, &progress); err != nil {
		t.Fatalf("gpubot migrate: %v\n%s", err, progress.String())
	}
	if err := app.Migrate(ctx, settings, io.Discard); !errors.Is(err, etcdstore.ErrTargetNotEmpty) {
		t.Errorf("a second migrate into the same prefix: %v, want it refused", err)
	}

	h.spawn() // a replica on etcd
	tracked := h.requestOf(alice)
	if got := h.command(alice, general, "status "+tracked.ID[:8]); !strings.Contains(got, "ready") {
		t.Errorf("/gpu status of the migrated machine on the replica: %q", got)
	}
	h.fal.Remove(tracked.InstanceID)
	h.waitFor("", "deleted outside gpubot")
	if got := h.requestOf(alice).State; got != domain.StateGone {
		t.Errorf("after migrating, the replica left the vanished machine's request %s, want gone", got)
	}
	store, closeStore := h.openStore()
	defer closeStore()
	if got := countHistory(t, store, history); got != history {
		t.Errorf("%d of %d finished requests made it to etcd", got, history)
	}
}

// fillHistory adds n finished requests of other people to the bbolt file at path.
func fillHistory(t *testing.T, path string, n int) {
	t.Helper()
	store, err := storage.Open(path, storage.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for i := range n {
		if err := fillOne(t.Context(), store, i, false, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// countHistory counts the finished requests fillHistory made, as the store lists them.
func countHistory(t *testing.T, store domain.Store, n int) int {
	t.Helper()
	seen := 0
	for user := range min(n, 300) {
		reqs, err := store.RequestsByUser(t.Context(), domain.UserRef{TeamID: "T0GPUBOT", UserID: fmt.Sprintf("UFILL%03d", user)})
		if err != nil {
			t.Fatal(err)
		}
		seen += len(reqs)
	}
	return seen
}
