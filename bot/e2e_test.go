package bot_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
)

// The headline flow: /gpu create 8x sector_1, an approver approves, fal builds it, and
// the requester's thread and NOTIFY_CHANNEL say it is ready with the ssh command.
func TestApprovedRequestBecomesReady(t *testing.T) {
	h := start(t)
	h.registerKey(alice)

	ack := h.command(alice, general, "create 8x sector_1 for 4h fine-tuning run")
	if !strings.Contains(ack, "goes to the approvers") {
		t.Fatalf("ack = %q", ack)
	}
	root := h.waitFor(general, "<@UALICE> asked for 8x H100 · sector_1 · 4h", "fine-tuning run")
	card := h.waitFor(approvals, "needs approval", "<@UALICE>", "$80.00 ($20.00/h × 4h)")
	if got := strings.Join(card.Buttons(), ","); got != "Approve,Deny" {
		t.Fatalf("card buttons = %q", got)
	}
	h.waitFor(general, "I've asked in <#CAPPROVALS>")
	if n := h.fal.Counters().Calls["create"]; n != 0 {
		t.Fatalf("%d creates before approval", n)
	}

	h.click(bob, card, "Approve")
	h.waitFor(general, "approved by <@UBOB>")
	ready := h.waitFor(general, "<@UALICE> your 8x H100 is ready", "ssh ubuntu@")
	if ready.ThreadTS != root.TS {
		t.Fatalf("ready reply in thread %q, want the request's thread %q", ready.ThreadTS, root.TS)
	}
	h.waitFor(notify, "<@UALICE>'s 8x H100", "is ready")
	card = h.waitFor(approvals, "Approved by <@UBOB>")
	if len(card.Buttons()) != 0 {
		t.Fatalf("decided card still has buttons %v", card.Buttons())
	}
	h.waitFor(general, ":large_green_circle: Ready: `ssh ubuntu@") // the root shows the state

	c := h.fal.Counters()
	if c.Creates != 1 {
		t.Fatalf("fal creates = %d, want 1", c.Creates)
	}
	insts := h.fal.Instances()
	if len(insts) != 1 || insts[0].Sector != "sector_1" || insts[0].InstanceType != "gpu_8x_h100_sxm5" {
		t.Fatalf("fal instances = %+v", insts)
	}
	if n := h.count(general, "is ready :tada:"); n != 1 {
		t.Fatalf("%d ready replies, want 1", n)
	}
}

func TestDenyAsksForAReasonAndTellsTheThread(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 8x for 2h eval")
	card := h.waitFor(approvals, "needs approval")
	h.click(bob, card, "Deny")
	h.eventually("the deny modal", func() bool { _, ok := h.slack.OpenView(bob); return ok })
	if _, err := h.slack.SubmitView(h.ctx(), bob, map[string]string{"reason": "no 8x budget this week; a 1x will do"}); err != nil {
		t.Fatal(err)
	}
	h.waitFor(general, "denied by <@UBOB>: no 8x budget this week; a 1x will do")
	card = h.waitFor(approvals, "Denied by <@UBOB>")
	if len(card.Buttons()) != 0 {
		t.Fatalf("denied card still has buttons %v", card.Buttons())
	}
	h.waitFor(general, ":no_entry: Denied by <@UBOB>")
	if n := h.fal.Counters().Calls["create"]; n != 0 {
		t.Fatalf("%d creates for a denied request", n)
	}
}

func TestApproverCannotApproveOwnRequest(t *testing.T) {
	h := start(t)
	h.registerKey(bob)
	h.command(bob, general, "create 8x")
	card := h.waitFor(approvals, "needs approval")
	h.click(bob, card, "Approve")
	refusal := h.waitFor(approvals, "You can't decide on your own request")
	if !refusal.Ephemeral || refusal.User != bob {
		t.Fatalf("refusal should be shown to bob only: %+v", refusal)
	}
	h.click(mallory, card, "Approve")
	h.waitFor(approvals, "Only approvers can approve or deny")
	if n := h.fal.Counters().Calls["create"]; n != 0 {
		t.Fatalf("%d creates after refused approvals", n)
	}
	if len(h.waitFor(approvals, "needs approval").Buttons()) != 2 {
		t.Fatal("the card lost its buttons after a refused click")
	}
}

func TestDoubleClickAndTwoApproversCreateOnce(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 8x sector_2")
	card := h.waitFor(approvals, "needs approval")
	var wg sync.WaitGroup
	for _, approver := range []string{bob, bob, carol, carol} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := h.slack.Click(h.ctx(), approver, card, "Approve"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	h.waitFor(general, "is ready :tada:")
	h.waitFor("", "Too late: :white_check_mark: Approved by")
	if c := h.fal.Counters(); c.Creates != 1 || c.Instances != 1 {
		t.Fatalf("fal counters %+v, want exactly one instance", c)
	}
}

func TestRedeliveredSlashCommandCreatesOnce(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	ack, err := h.slack.SlashCommand(h.ctx(), alice, general, "/gpu", "create 1x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.slack.Redeliver(h.ctx(), ack.EnvelopeID); err != nil {
		t.Fatal(err)
	}
	h.waitFor(general, "is ready :tada:")
	// Give a duplicate every chance to show up before counting.
	h.app.Handlers().Tick(h.ctx())
	if c := h.fal.Counters(); c.Creates != 1 {
		t.Fatalf("fal creates = %d, want 1", c.Creates)
	}
	if n := h.count(general, "<@UALICE> asked for 1x H100"); n != 1 {
		t.Fatalf("%d thread roots, want 1", n)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	for text, want := range map[string]string{
		"create 1x sector_1":  "Sectors only apply to 8x machines",
		"create 4x":           "I don't know the machine type `4x`",
		"create 8x for 100h":  "The longest lifetime is 3d",
		"launch":              "I don't know `/gpu launch`",
		"status nope-nope":    "I can't find a machine `nope-nope`",
		"extend abcdef12 zzz": "not a lifetime I understand",
	} {
		if got := h.command(alice, general, text); !strings.Contains(got, want) {
			t.Errorf("/gpu %s answered %q, want %q", text, got, want)
		}
	}
	if c := h.fal.Counters(); len(c.Calls) != 0 && (c.Calls["create"]+c.Calls["delete"]) != 0 {
		t.Fatalf("fal was called: %+v", c.Calls)
	}
	if n := len(h.slack.Messages()); n != 0+countEphemeral(h) {
		t.Fatalf("bad input posted messages:\n%s", h.dump())
	}
	commands := h.app.Metrics().Commands
	if got := testutil.ToFloat64(commands.WithLabelValues("create", "refused")); got != 3 {
		t.Errorf("gpubot_commands_total{command=create,outcome=refused} = %v, want 3", got)
	}
	if got := testutil.ToFloat64(commands.WithLabelValues("unknown", "refused")); got != 1 {
		t.Errorf("gpubot_commands_total{command=unknown,outcome=refused} = %v, want 1", got)
	}
}

func countEphemeral(h *harness) int {
	n := 0
	for _, m := range h.slack.Messages() {
		if m.Ephemeral {
			n++
		}
	}
	return n
}

func TestCreateWithoutKeyExplainsHowToRegister(t *testing.T) {
	h := start(t)
	got := h.command(alice, general, "create 1x")
	if !strings.Contains(got, "/gpu key set") || !strings.Contains(got, "cat ~/.ssh/id_ed25519.pub") {
		t.Fatalf("answer %q does not say how to register a key", got)
	}
	if c := h.fal.Counters(); c.Calls["create"] != 0 {
		t.Fatal("fal was called")
	}
}

func TestFalFailuresAreRetriedWithOneInstance(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.fal.InjectNext("create", 1, falsim.Fault{Status: 500})
	h.fal.InjectNext("create", 1, falsim.Fault{Status: 429, RetryAfter: time.Second})
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	c := h.fal.Counters()
	if c.Creates != 1 || c.Instances != 1 || c.CreateCalls < 3 {
		t.Fatalf("fal counters %+v: want 3+ create calls and exactly one instance", c)
	}
}

func TestFalRefusingTheKeyIsExplainedAndAlertsAdmins(t *testing.T) {
	h := start(t, withFal(func(o *falsim.Options) { o.APIKey = "another-key" }))
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "<@UALICE> fal refused gpubot's credentials, so no machine was created")
	h.waitFor(h.slack.DMChannel(admin), "fal refused gpubot's admin API key (HTTP 401 Unauthorized)", "FAL_ADMIN_API_KEY")
	h.waitFor(general, ":x: Failed:")
}

func TestNotInChannelFallsBackToDM(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, private, "create 1x")
	dm := h.slack.DMChannel(alice)
	root := h.waitFor(dm, "<@UALICE> asked for 1x H100")
	ready := h.waitFor(dm, "is ready :tada:")
	if ready.ThreadTS != root.TS {
		t.Fatalf("ready reply not in the DM thread")
	}
}

var _ = config.Config{}
var _ = domain.StateReady

// A bot that cannot post approval cards tells the admins once, not at every retry, and
// posts the card as soon as it can.
func TestUnpostableApprovalChannelAlertsAdminsOnce(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.slack.AddChannel(approvals, "gpu-approvals", false) // nobody invited the bot
	h.command(alice, general, "create 8x")
	h.waitFor(h.slack.DMChannel(admin), "I can't post approval cards in <#CAPPROVALS>")
	for range 3 { // three more passes, each a minute apart, each failing again
		before := h.slack.CallCount("chat.postMessage")
		h.clock.Advance(2 * time.Minute)
		h.eventually("another try", func() bool { return h.slack.CallCount("chat.postMessage") > before })
	}
	h.slack.AddChannel(approvals, "gpu-approvals", true) // invited at last
	h.clock.Advance(2 * time.Minute)
	h.waitFor(approvals, "needs approval")
	if n := h.count(h.slack.DMChannel(admin), "approval cards"); n != 1 {
		t.Fatalf("%d alerts, want 1", n)
	}
}

// A NOTIFY_CHANNEL the bot may not post in is a misconfiguration the admins hear of; the
// requester's own ready reply is unaffected.
func TestUnpostableNotifyChannelAlertsAdmins(t *testing.T) {
	h := start(t)
	h.slack.AddChannel(notify, "gpu-notices", false)
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	h.waitFor(h.slack.DMChannel(admin), "I can't post readiness notices in <#CNOTIFY>", "NOTIFY_CHANNEL")
}

// A decision is committed before the click is acked; showing it follows. If that part
// is cut short (here Slack refuses the edits; a gpubot stopped at that moment does the
// same), the card keeps its buttons: the next click on it is told who decided and
// mends the card and the thread root, and the thread hears of the decision once.
func TestClickOnAStaleCardMendsIt(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 8x for 2h eval")
	card := h.waitFor(approvals, "needs approval")
	h.slack.FailNext("chat.update", "cant_update_message", 2) // the card, then the root
	h.click(bob, card, "Deny")
	h.eventually("the deny modal", func() bool { _, ok := h.slack.OpenView(bob); return ok })
	if _, err := h.slack.SubmitView(h.ctx(), bob, map[string]string{"reason": "not this week"}); err != nil {
		t.Fatal(err)
	}
	h.waitFor(general, "denied by <@UBOB>: not this week")
	if card, _ = h.slack.Message(card.ID); len(card.Buttons()) != 2 {
		t.Fatalf("the card was edited although Slack refused it: %s", card.AllText())
	}
	h.click(carol, card, "Deny")
	h.waitFor(approvals, "Too late: :no_entry: Denied by <@UBOB>: not this week")
	h.eventually("the card mended", func() bool {
		m, _ := h.slack.Message(card.ID)
		return len(m.Buttons()) == 0 && strings.Contains(m.AllText(), "Denied by <@UBOB>")
	})
	h.waitFor(general, ":no_entry: Denied by <@UBOB>")
	if n := h.count(general, "denied by <@UBOB>"); n != 1 {
		t.Fatalf("%d denial replies in the thread, want 1", n)
	}
}

// A setting that is valid but probably not what the operator meant is said in the log
// at start.
func TestStartLogsSettingWarnings(t *testing.T) {
	h := start(t, withConfig(func(c *config.Config) { c.ReminderBefore = c.DefaultLifetime }))
	h.eventually("the warning about REMINDER_BEFORE in the start-up log", func() bool {
		return strings.Contains(h.logs.String(), "REMINDER_BEFORE (8h) is not shorter than DEFAULT_LIFETIME (8h)")
	})
}
