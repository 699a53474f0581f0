package bot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/etcdtest"
	"github.com/gpubot/gpubot/internal/testkit"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/internal/app"
	"github.com/gpubot/gpubot/internal/config"
)

// The people and channels of the simulated workspace.
const (
	alice   = "UALICE" // requester
	mallory = "UMALLORY"
	bob     = "UBOB"   // approver
	carol   = "UCAROL" // approver
	admin   = "UADMIN"
	dave    = "UDAVE" // in approverGroup
	erin    = "UERIN" // in approverGroup

	// approverGroup is a Slack user group a test may name in APPROVERS or ADMINS.
	approverGroup = "S0GPUAPPROVERS"

	general   = "CGENERAL" // the bot is a member
	private   = "CPRIVATE" // the bot is not a member
	approvals = "CAPPROVALS"
	notify    = "CNOTIFY"

	botToken = "xoxb-e2e-bot-token-1234567890"
	appToken = "xapp-e2e-app-token-1234567890"
	falKey   = "fal-e2e-admin-key-1234567890"
)

const wait = 15 * time.Second

type harness struct {
	t      testing.TB
	slack  *slacksim.Server
	fal    *falsim.Server
	cfg    config.Config
	clock  *testkit.Clock
	logs   *testkit.Buffer
	app    *app.App
	cancel context.CancelFunc
	done   chan error
	// etcd, when set, is the store the gpubot processes share instead of the bbolt
	// file (see useEtcd).
	etcd *etcdtest.Cluster
}

type setup struct {
	cfg       func(*config.Config)
	falOpts   func(*falsim.Options)
	slackOpts func(*slacksim.Options)
	manual    bool     // don't start the bot
	users     []string // more people in the workspace
}

func withConfig(f func(*config.Config)) func(*setup)   { return func(s *setup) { s.cfg = f } }
func withFal(f func(*falsim.Options)) func(*setup)     { return func(s *setup) { s.falOpts = f } }
func withSlack(f func(*slacksim.Options)) func(*setup) { return func(s *setup) { s.slackOpts = f } }
func notStarted() func(*setup)                         { return func(s *setup) { s.manual = true } }
func withUsers(ids ...string) func(*setup)             { return func(s *setup) { s.users = ids } }

// start runs the real bot, built by the constructor main uses, against slacksim, falsim
// and a bbolt file in a temporary folder.
func start(t testing.TB, options ...func(*setup)) *harness {
	t.Helper()
	var s setup
	for _, o := range options {
		o(&s)
	}
	simOpts := slacksim.Options{BotToken: botToken, AppToken: appToken}
	if s.slackOpts != nil {
		s.slackOpts(&simOpts)
	}
	sim := slacksim.New(simOpts)
	t.Cleanup(sim.Close)
	for _, u := range append([]string{alice, mallory, bob, carol, admin, dave, erin}, s.users...) {
		sim.AddUser(u, strings.ToLower(u[1:]))
	}
	sim.AddUsergroup(approverGroup, dave, erin)
	sim.AddChannel(general, "general", true)
	sim.AddChannel(private, "private", false)
	sim.AddChannel(approvals, "gpu-approvals", true)
	sim.AddChannel(notify, "gpu-notices", true)

	falOpts := falsim.Options{APIKey: falKey, ProvisionAfter: 20 * time.Millisecond, ReadyAfter: 50 * time.Millisecond}
	if s.falOpts != nil {
		s.falOpts(&falOpts)
	}
	fs := falsim.New(falOpts)
	t.Cleanup(fs.Close)

	cfg := config.Config{
		SlackBotToken: botToken, SlackAppToken: appToken, SlackAPIURL: sim.APIURL(),
		FalAdminAPIKey: falKey, FalAPIURL: fs.URL(),
		DBPath:          filepath.Join(t.TempDir(), "gpubot.db"),
		ApprovalChannel: approvals, NotifyChannel: notify,
		Approvers: []string{bob, carol}, Admins: []string{admin},
		ApprovalRequired: []string{fal.Type8xH100},
		DefaultLifetime:  8 * time.Hour, MaxLifetime: 72 * time.Hour, ReminderBefore: 30 * time.Minute,
		HourlyPrices: map[string]float64{fal.Type1xH100: 2.5, fal.Type8xH100: 20},
		PollInterval: 20 * time.Millisecond,
		LogLevel:     "debug",
	}
	if s.cfg != nil {
		s.cfg(&cfg)
	}
	h := &harness{t: t, slack: sim, fal: fs, cfg: cfg, clock: testkit.RunningClock(), logs: &testkit.Buffer{}}
	t.Cleanup(func() {
		h.checkNoSecrets()
		if t.Failed() {
			t.Logf("bot logs:\n%s", h.logs.String())
		}
	})
	if !s.manual {
		h.startBot()
	}
	return h
}

// startBot starts (or restarts) the bot on the same store file.
func (h *harness) startBot() {
	h.t.Helper()
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: h.cfg.SlogLevel()}))
	// Home tabs follow every change at once, so tests see them without waiting.
	b, err := app.New(h.cfg, app.Options{Version: "test", Logger: logger, Now: h.clock.Now, ShutdownGrace: 2 * time.Second, HomeEvery: time.Millisecond})
	if err != nil {
		h.t.Fatalf("app.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.app, h.cancel, h.done = b, cancel, make(chan error, 1)
	go func() { h.done <- b.Run(ctx) }()
	h.t.Cleanup(h.stopBot)
	waitCtx, cancelWait := context.WithTimeout(context.Background(), wait)
	defer cancelWait()
	if err := h.slack.WaitConnected(waitCtx); err != nil {
		h.t.Fatalf("bot did not connect to slacksim: %v", err)
	}
}

func (h *harness) stopBot() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("bot.Run: %v", err)
		}
	case <-time.After(wait):
		h.t.Errorf("bot did not stop within %v", wait)
	}
	h.cancel = nil
}

// untilDeadline is a context that ends a little before the test's deadline, so a run
// that cannot settle fails with what it saw rather than a panic.
func untilDeadline(t testing.TB) context.Context {
	type deadliner interface{ Deadline() (time.Time, bool) }
	deadline, ok := time.Time{}, false
	if d, is := t.(deadliner); is {
		deadline, ok = d.Deadline()
	}
	if !ok {
		deadline = time.Now().Add(30 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-time.Until(deadline)/10))
	t.Cleanup(cancel)
	return ctx
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	h.t.Cleanup(cancel)
	return ctx
}

// command types `/gpu <text>` as user in channel and returns what the ack showed them.
func (h *harness) command(user, channel, text string) string {
	h.t.Helper()
	ack, err := h.slack.SlashCommand(h.ctx(), user, channel, "/gpu", text)
	if err != nil {
		h.t.Fatalf("/gpu %s: %v", text, err)
	}
	return ackText(h.t, ack)
}

func ackText(t testing.TB, ack slacksim.Ack) string {
	t.Helper()
	if len(ack.Payload) == 0 {
		return ""
	}
	var m struct {
		Text   string       `json:"text"`
		Blocks slack.Blocks `json:"blocks"`
	}
	if err := json.Unmarshal(ack.Payload, &m); err != nil {
		t.Fatalf("ack payload %s: %v", ack.Payload, err)
	}
	return slacksim.Message{Text: m.Text, Blocks: m.Blocks}.AllText()
}

// registerKey gives user a fresh ed25519 key.
func (h *harness) registerKey(user string) {
	h.t.Helper()
	line := newKeyLine(h.t, user)
	if got := h.command(user, general, "key set "+line); !strings.Contains(got, "Saved your ssh-ed25519 key") {
		h.t.Fatalf("key set answered %q", got)
	}
}

// newKeyLine is a fresh ed25519 public key as user would paste it.
func newKeyLine(t testing.TB, user string) string {
	t.Helper()
	return testkit.KeyLine(t, strings.ToLower(user)+"@laptop")
}

// waitFor waits for a message matching all of: in channel (if set), containing every
// text, posted at any time. To wait for what an action causes, use waitForSince.
func (h *harness) waitFor(channel string, texts ...string) slacksim.Message {
	h.t.Helper()
	return h.waitForSince(0, channel, texts...)
}

// mark is the point in Slack's history of messages reached now.
func (h *harness) mark() slacksim.Mark { return h.slack.Mark() }

// waitForSince is waitFor for messages posted or edited after mark, so that an older,
// similar message cannot answer.
func (h *harness) waitForSince(mark slacksim.Mark, channel string, texts ...string) slacksim.Message {
	h.t.Helper()
	m, err := h.slack.WaitMessageSince(h.ctx(), mark, func(m slacksim.Message) bool {
		if channel != "" && m.Channel != channel {
			return false
		}
		all := m.AllText()
		for _, text := range texts {
			if !strings.Contains(all, text) {
				return false
			}
		}
		return true
	})
	if err != nil {
		h.t.Fatalf("no message in %q with %q: %v\nmessages:\n%s", channel, texts, err, h.dump())
	}
	return m
}

// count is how many messages match.
func (h *harness) count(channel string, texts ...string) int {
	n := 0
	for _, m := range h.slack.Messages() {
		if channel != "" && m.Channel != channel {
			continue
		}
		all := m.AllText()
		ok := true
		for _, text := range texts {
			ok = ok && strings.Contains(all, text)
		}
		if ok {
			n++
		}
	}
	return n
}

func (h *harness) dump() string {
	var b strings.Builder
	for _, m := range h.slack.Messages() {
		who := ""
		if m.Ephemeral {
			who = " (only " + m.User + ")"
		}
		b.WriteString("  [" + m.Channel + " " + m.ThreadTS + who + "] " + strings.ReplaceAll(m.AllText(), "\n", " / ") + "\n")
	}
	return b.String()
}

func (h *harness) click(user string, m slacksim.Message, label string) {
	h.t.Helper()
	if _, err := h.slack.Click(h.ctx(), user, m, label); err != nil {
		h.t.Fatalf("%s clicks %q: %v", user, label, err)
	}
}

// passes waits until the bot has made n more background passes (tracking, reminders,
// expiries) than when it was called: the event a "nothing more happens" check needs,
// rather than a sleep.
func (h *harness) passes(n int) {
	h.t.Helper()
	counted := func() int {
		var total float64
		for _, outcome := range []string{"ok", "error"} {
			total += testutil.ToFloat64(h.app.Metrics().TrackingPasses.WithLabelValues(outcome))
		}
		return int(total)
	}
	target := counted() + n
	h.eventually(fmt.Sprintf("%d tracking passes", n), func() bool { return counted() >= target })
}

// eventually waits for cond, checking every few milliseconds, for at most wait.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s\nmessages:\n%s", what, h.dump())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoSecrets runs after every end-to-end test: the Slack tokens and the fal key
// appear in no log line and no message anyone could see.
func (h *harness) checkNoSecrets() {
	logs := h.logs.String()
	var posted strings.Builder
	for _, m := range h.slack.Messages() {
		posted.WriteString(m.AllText())
	}
	for _, c := range h.slack.Calls() {
		for _, v := range c.Params {
			posted.WriteString(v)
		}
	}
	for name, secret := range map[string]string{"SLACK_BOT_TOKEN": botToken, "SLACK_APP_TOKEN": appToken, "FAL_ADMIN_API_KEY": falKey} {
		if strings.Contains(logs, secret) {
			h.t.Errorf("%s appears in the bot's logs", name)
		}
		if strings.Contains(posted.String(), secret) {
			h.t.Errorf("%s appears in what the bot sent to Slack", name)
		}
	}
}
