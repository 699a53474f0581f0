package bot_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/testkit"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/internal/app"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/storage"
)

// childEnv marks the test binary re-executed as a bot process that a test can SIGKILL.
const childEnv = "GPUBOT_TEST_BOT_PROCESS"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runBotProcess())
	}
	os.Exit(m.Run())
}

// runBotProcess is the bot as main runs it: settings from the environment, JSON logs.
func runBotProcess() int {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := app.New(cfg, app.Options{Version: "test", Logger: logger})
	if err == nil {
		err = b.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// environ is the harness's configuration as the environment a gpubot process reads.
func (h *harness) environ() []string {
	c := h.cfg
	return append(os.Environ(), append(h.storeEnviron(),
		childEnv+"=1",
		"SLACK_BOT_TOKEN="+c.SlackBotToken, "SLACK_APP_TOKEN="+c.SlackAppToken, "SLACK_API_URL="+c.SlackAPIURL,
		"FAL_ADMIN_API_KEY="+c.FalAdminAPIKey, "FAL_API_URL="+c.FalAPIURL,
		"APPROVAL_CHANNEL="+c.ApprovalChannel, "NOTIFY_CHANNEL="+c.NotifyChannel,
		"APPROVERS="+strings.Join(c.Approvers, ","), "ADMINS="+strings.Join(c.Admins, ","),
		"APPROVAL_REQUIRED="+strings.Join(c.ApprovalRequired, ","),
		"HOURLY_PRICES=gpu_1x_h100_sxm5=2.5,gpu_8x_h100_sxm5=20",
		"POLL_INTERVAL=20ms", "HTTP_ADDR=off", "LOG_LEVEL=debug",
	)...)
}

// process is a gpubot process started by a test.
type process struct {
	cmd      *exec.Cmd
	logs     *testkit.Buffer // this process's logs alone (the harness's logs hold every process's)
	httpAddr string          // its /metrics and /readyz, when spawnWithHTTP gave it one
}

// spawn starts a gpubot process on the harness's store file and waits until it is connected.
func (h *harness) spawn() *process {
	h.t.Helper()
	p, err := h.spawnProcess()
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// spawnProcess is spawn for goroutines other than the test's: it returns its error.
func (h *harness) spawnProcess() (*process, error) { return h.spawnProcessWith() }

// spawnProcessWith is spawnProcess with settings added to the environment.
func (h *harness) spawnProcessWith(settings ...string) (*process, error) {
	before := h.slack.TotalConnections()
	p := &process{cmd: exec.Command(os.Args[0], "-test.run=^$"), logs: &testkit.Buffer{}}
	p.cmd.Env = append(h.environ(), settings...)
	p.cmd.Stderr = io.MultiWriter(p.logs, h.logs)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start bot process: %w", err)
	}
	h.t.Cleanup(func() { p.kill() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.slack.WaitUntil(ctx, func() bool { return h.slack.TotalConnections() > before && h.slack.Connections() > 0 }); err != nil {
		return p, fmt.Errorf("bot process did not connect: %w", err)
	}
	return p, nil
}

// stop ends the process with SIGTERM, as a deploy does, and waits (ctx-bounded) for
// it to exit; a clean stop exits 0.
func (p *process) stop(ctx context.Context) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		return err
	case <-ctx.Done():
		_ = p.cmd.Process.Kill()
		<-exited
		return fmt.Errorf("no exit after SIGTERM: %w", ctx.Err())
	}
}

// kill ends the process with SIGKILL: no cleanup runs.
func (p *process) kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

// openStore opens the store the gpubot processes use, to read what they did: the
// bbolt file once no process holds it, or the etcd replicas share. close must follow.
func (h *harness) openStore() (store domain.Store, close func()) {
	h.t.Helper()
	if h.etcd != nil {
		return h.openEtcdStore()
	}
	bolt, err := storage.Open(h.cfg.DBPath, storage.Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		h.t.Fatal(err)
	}
	return bolt, func() { _ = bolt.Close() }
}

// requestOf reads user's one request from the store.
func (h *harness) requestOf(user string) domain.Request {
	h.t.Helper()
	store, closeStore := h.openStore()
	defer closeStore()
	reqs, err := store.RequestsByUser(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: user})
	if err != nil || len(reqs) != 1 {
		h.t.Fatalf("requests of %s: %v (%d)", user, err, len(reqs))
	}
	return reqs[0]
}

// checkOneMachine asserts the end state every restart test wants: one instance at fal,
// one ready notice in the thread and one in NOTIFY_CHANNEL.
func (h *harness) checkOneMachine() {
	h.t.Helper()
	h.waitFor(notify, "is ready")
	if c := h.fal.Counters(); c.Instances != 1 || c.Creates != 1 {
		h.t.Fatalf("fal counters %+v: want exactly one instance", c)
	}
	if n := h.count("", "is ready :tada:"); n != 1 {
		h.t.Fatalf("%d ready replies, want 1\n%s", n, h.dump())
	}
	if n := h.count(notify, "is ready"); n != 1 {
		h.t.Fatalf("%d ready notices, want 1", n)
	}
}

func TestRestartAfterCommitBeforeFalAnswers(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	h.registerKey(alice)
	// The create reaches fal but is never served: as if the process died just before calling.
	h.fal.InjectNext("create", 1, falsim.Fault{Hang: time.Minute})
	h.command(alice, general, "create 1x")
	h.eventually("the create call", func() bool { return h.fal.Counters().Calls["create"] == 1 })
	p.kill()
	if r := h.requestOf(alice); r.State != domain.StateCreating || r.IdempotencyKey == "" {
		t.Fatalf("after the kill the request is %s (key %q), want creating with its key", r.State, r.IdempotencyKey)
	}
	h.spawn()
	h.waitFor(general, "is ready :tada:")
	h.checkOneMachine()
}

func TestRestartAfterFalCreatedBeforeStoreUpdated(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	h.registerKey(alice)
	// fal creates the instance but the answer is lost; the retry then hangs, and the process dies.
	h.fal.InjectNext("create", 1, falsim.Fault{LoseResponse: true})
	h.fal.InjectNext("create", 1, falsim.Fault{Hang: time.Minute})
	h.command(alice, general, "create 1x")
	h.eventually("the retried create", func() bool { return h.fal.Counters().Calls["create"] == 2 })
	p.kill()
	if got := len(h.fal.Instances()); got != 1 {
		t.Fatalf("fal has %d instances before the restart, want 1", got)
	}
	h.spawn()
	h.waitFor(general, "is ready :tada:")
	h.checkOneMachine()
}

func TestRestartWhileProvisioning(t *testing.T) {
	h := start(t, notStarted(), withFal(func(o *falsim.Options) { o.Manual = true }))
	p := h.spawn()
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "fal accepted it")
	p.kill()
	inst := h.fal.Instances()[0]
	for range 2 {
		if err := h.fal.Step(inst.ID); err != nil {
			t.Fatal(err)
		}
	}
	h.spawn()
	h.waitFor(general, "is ready :tada:")
	h.checkOneMachine()
}

func TestRestartWhileDeleting(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	h.fal.InjectNext("delete", 1, falsim.Fault{Hang: time.Minute})
	h.command(alice, general, "delete "+h.fal.Instances()[0].ID)
	h.click(alice, h.waitFor(general, "Delete <@UALICE>'s"), "Delete")
	h.eventually("the delete call", func() bool { return h.fal.Counters().Calls["delete"] >= 1 })
	p.kill()
	if r := h.requestOf(alice); r.State != domain.StateDeleting {
		t.Fatalf("after the kill the request is %s, want deleting", r.State)
	}
	h.spawn()
	h.waitFor(general, "Deleted by <@UALICE>")
	if len(h.fal.Instances()) != 0 {
		t.Fatal("instance still at fal")
	}
	h.checkOneMachine()
}

func TestApprovalCardWorksAfterRestart(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	card := h.waitFor(approvals, "needs approval")
	p.kill()
	h.spawn()
	h.click(bob, card, "Approve")
	h.waitFor(general, "is ready :tada:")
	h.checkOneMachine()
}

// A create cut off by a stop and taken up more than 10 minutes later is not sent again:
// fal no longer remembers its idempotency key, so a second call could make a second
// machine. The requester and the admins are told.
func TestStaleCreateIsNotSentAgain(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.fal.InjectNext("create", 1, falsim.Fault{Hang: time.Minute})
	h.command(alice, general, "create 1x")
	h.eventually("the create call", func() bool { return h.fal.Counters().Calls["create"] == 1 })
	h.stopBot()
	h.clock.Advance(15 * time.Minute)
	h.startBot()
	h.waitFor(general, "too late to ask fal again safely")
	h.waitFor(h.slack.DMChannel(admin), "fal never confirmed the create of request")
	if n := h.fal.Counters().Calls["create"]; n != 1 {
		t.Fatalf("%d create calls, want the one cut off", n)
	}
	if got := h.onlyRequest(alice).State; got != domain.StateFailed {
		t.Fatalf("state %s, want failed", got)
	}
}

// A request whose thread could not be posted (Slack refused beyond retries) is taken
// up again by a later tracking pass, and goes on to its machine.
func TestStalledRequestIsTakenUpAgain(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.slack.FailNext("chat.postMessage", "internal_error", 1)
	h.command(alice, general, "create 1x")
	h.eventually("the refused post", func() bool { return h.slack.CallCount("chat.postMessage") >= 1 })
	if n := h.fal.Counters().Calls["create"]; n != 0 {
		t.Fatalf("fal was called before the thread existed")
	}
	h.clock.Advance(2 * time.Minute)
	h.waitFor(general, "<@UALICE> asked for 1x H100")
	h.waitFor(general, "is ready :tada:")
}

// Found by TestChaos: a process killed after recording a machine ready but before
// telling anyone left the thread silent for good. The next start tells it.
func TestReadyRecordedButNotAnnouncedIsAnnouncedAfterRestart(t *testing.T) {
	h := start(t, notStarted())
	api := slack.New(botToken, slack.OptionAPIURL(h.slack.APIURL()))
	_, rootTS, err := api.PostMessage(general, slack.MsgOptionText("GPU request from <@UALICE>", false))
	if err != nil {
		t.Fatal(err)
	}
	h.fal.AddInstance(fal.Instance{ID: "inst_quiet", InstanceType: "gpu_1x_h100_sxm5", Region: "us-west", Status: fal.StatusReady, IP: "203.0.113.9"})
	store, err := storage.Open(h.cfg.DBPath, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := h.ctx()
	r := domain.Request{TeamID: "T0GPUBOT", UserID: alice, ChannelID: general, CommandChannel: general, ThreadTS: rootTS,
		InstanceType: "gpu_1x_h100_sxm5", Lifetime: time.Hour, State: domain.StateApproved}
	if err := store.CreateRequest(ctx, &r); err != nil {
		t.Fatal(err)
	}
	for _, to := range []domain.State{domain.StateCreating, domain.StateProvisioning, domain.StateReady} {
		if _, err := store.Move(ctx, r.ID, to, "test", "", func(u *domain.Request) error {
			u.InstanceID, u.IP, u.FalStatus = "inst_quiet", "203.0.113.9", "ready"
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	h.startBot()
	reply := h.waitFor(general, "<@UALICE> your 1x H100 is ready", "ssh ubuntu@203.0.113.9")
	if reply.ThreadTS != rootTS {
		t.Fatal("ready reply not in the request's thread")
	}
	h.waitFor(notify, "`inst_quiet` is ready")
	h.waitFor(general, ":large_green_circle: Ready: `ssh ubuntu@203.0.113.9`")
}

// SIGTERM: the process stops taking envelopes, lets work in flight finish, closes the
// store and exits 0.
func TestSIGTERMStopsCleanly(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("no exit within 15 s of SIGTERM")
	}
	if r := h.requestOf(alice); r.ID == "" {
		t.Fatal("the request was lost")
	}
}
