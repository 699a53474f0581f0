package bot_test

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
)

// withGroupApprovers makes approverGroup (dave and erin) the approvers, beside bob.
func withGroupApprovers(c *config.Config) { c.Approvers = []string{bob, approverGroup} }

// groupReads is how many times gpubot has read a user group's members.
func (h *harness) groupReads() int { return h.slack.CallCount("usergroups.users.list") }

// refreshGroups pushes the clock past USERGROUP_REFRESH and waits until gpubot has
// read the groups again and finished that pass, so what it read counts.
func (h *harness) refreshGroups() {
	h.t.Helper()
	before := h.groupReads()
	h.clock.Advance(h.cfg.UsergroupRefresh)
	h.eventually("the user groups read again", func() bool { return h.groupReads() > before })
	h.passes(1)
}

// messageAt is the message Slack shows at channel and ts now.
func (h *harness) messageAt(channel, ts string) slacksim.Message {
	h.t.Helper()
	for _, m := range h.slack.Messages() {
		if m.Channel == channel && m.TS == ts {
			return m
		}
	}
	h.t.Fatalf("no message at %s %s", channel, ts)
	return slacksim.Message{}
}

// waitCard waits for the approval card with every text, and until gpubot has recorded
// it (it then tells the thread), so a click on it finds the request knowing its card.
func (h *harness) waitCard(texts ...string) slacksim.Message {
	h.t.Helper()
	card := h.waitFor(approvals, append([]string{"needs approval"}, texts...)...)
	h.waitFor(general, "I've asked in <#CAPPROVALS>")
	return card
}

// restartReadingGroups restarts gpubot on the same store and waits for its first pass:
// it reads the user groups before that, so clicks then meet the groups as Slack has them.
func (h *harness) restartReadingGroups() {
	h.t.Helper()
	h.stopBot()
	h.startBot()
	h.passes(1)
}

// dmTo waits for a direct message from gpubot to user with every text.
func (h *harness) dmTo(user string, texts ...string) slacksim.Message {
	h.t.Helper()
	return h.waitFor(h.slack.DMChannel(user), texts...)
}

// A member of the approvers' user group approves after a restart; the card mentions the
// group, which notifies its members; someone outside the group cannot approve; the
// requester hears the decision by DM with a link to the thread.
func TestGroupMemberApproves(t *testing.T) {
	h := start(t, withConfig(withGroupApprovers))
	h.registerKey(alice)
	h.command(alice, general, "create 8x for 2h eval")
	root := h.waitFor(general, "<@UALICE> asked for 8x H100")
	card := h.waitCard("<!subteam^" + approverGroup + ">")
	if !slices.Contains(card.Notified, dave) || !slices.Contains(card.Notified, erin) || !slices.Contains(card.Notified, bob) {
		t.Fatalf("the card notified %v; want the group's members and bob", card.Notified)
	}

	h.restartReadingGroups()
	h.click(mallory, card, "Approve")
	h.waitFor(approvals, "Only approvers can approve or deny", "<!subteam^"+approverGroup+">")
	h.click(dave, card, "Approve")
	h.waitFor(general, "<@UALICE> your 8x H100 is ready")
	h.waitFor(approvals, "Approved by <@UDAVE>")
	dm := h.dmTo(alice, "was approved by <@UDAVE>")
	if link := h.slack.PermalinkFor(general, root.TS); link == "" || !strings.Contains(dm.AllText(), link) {
		t.Fatalf("the DM %q lacks the thread's link %q", dm.AllText(), link)
	}
	if c := h.fal.Counters(); c.Creates != 1 {
		t.Fatalf("fal creates = %d, want 1", c.Creates)
	}
}

// A member removed from the group can no longer approve once gpubot has read the
// group again (within USERGROUP_REFRESH), also after a restart; a member still in it can.
func TestMemberRemovedFromGroupCannotApproveAfterRefresh(t *testing.T) {
	h := start(t, withConfig(func(c *config.Config) {
		withGroupApprovers(c)
		c.UsergroupRefresh = time.Hour
	}))
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	card := h.waitCard()

	h.slack.SetUsergroupMembers(approverGroup, erin) // dave leaves the group
	h.refreshGroups()
	mark := h.mark()
	h.click(dave, card, "Approve")
	h.waitForSince(mark, approvals, "Only approvers can approve or deny")

	h.restartReadingGroups()
	mark = h.mark()
	h.click(dave, card, "Approve")
	h.waitForSince(mark, approvals, "Only approvers can approve or deny")
	if r := h.onlyRequest(alice); r.State != domain.StateAwaitingApproval || len(r.Approvals) != 0 {
		t.Fatalf("after a former member's clicks the request is %s with %d approvals", r.State, len(r.Approvals))
	}
	h.click(erin, card, "Approve")
	h.waitFor(general, "<@UALICE> your 8x H100 is ready")
}

// When Slack refuses to list the group (the app lacks usergroups:read), the admins are
// told once what to fix, the group counts as empty (never as everyone), and once the
// scope is granted its members approve.
func TestRefusedGroupAlertsAdminsOnceAndCountsAsEmpty(t *testing.T) {
	h := start(t, notStarted(), withConfig(func(c *config.Config) {
		c.Approvers = []string{approverGroup}
		c.UsergroupRefresh = time.Hour
	}))
	h.slack.RevokeScope("usergroups:read")
	h.startBot()
	alert := h.dmTo(admin, "user group `"+approverGroup+"`", "missing_scope", "usergroups:read")
	if strings.Contains(alert.AllText(), "<!subteam^") || len(alert.Notified) != 0 {
		t.Fatalf("the alert mentions the group, notifying its members: %q", alert.AllText())
	}
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	card := h.waitCard()
	h.click(dave, card, "Approve")
	h.waitFor(approvals, "Only approvers can approve or deny")

	h.refreshGroups()
	h.stopBot()
	h.startBot()
	h.passes(2)
	if n := h.count(h.slack.DMChannel(admin), "missing_scope"); n != 1 {
		t.Fatalf("%d alerts about the refused group across two reads and a restart, want 1", n)
	}
	if r := h.onlyRequest(alice); r.State != domain.StateAwaitingApproval {
		t.Fatalf("request is %s, want still awaiting approval", r.State)
	}

	h.slack.GrantScope("usergroups:read")
	h.refreshGroups()
	h.click(dave, card, "Approve")
	h.waitFor(general, "<@UALICE> your 8x H100 is ready")
}

// withTwoApprovals makes 8x machines need two different approvers.
func withTwoApprovals(c *config.Config) {
	c.ApprovalsNeeded = map[string]int{fal.Type8xH100: 2}
}

// Two approvals needed: one approver twice counts once and nothing is created; the
// card shows the count and keeps its buttons; after a restart a second approver
// completes it; every approval is in the audit trail.
func TestTwoApprovalsOneApproverTwiceCountsOnce(t *testing.T) {
	h := start(t, withConfig(withTwoApprovals))
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	card := h.waitCard("needs 2 different approvers")

	h.click(bob, card, "Approve")
	card = h.waitFor(approvals, "1 of 2: approved by <@UBOB>")
	if got := strings.Join(card.Buttons(), ","); got != "Approve,Deny" {
		t.Fatalf("card after one of two approvals has buttons %q, want Approve,Deny", got)
	}
	h.waitFor(general, "Approved by <@UBOB> (1 of 2); waiting for 1 more approver.")
	h.click(bob, card, "Approve")
	h.waitFor(approvals, "You already approved request")
	h.passes(2)
	if r := h.onlyRequest(alice); r.State != domain.StateAwaitingApproval || len(r.Approvals) != 1 {
		t.Fatalf("after bob approved twice: %s with %d approvals, want awaiting with 1", r.State, len(r.Approvals))
	}
	if n := h.fal.Counters().Calls["create"]; n != 0 {
		t.Fatalf("%d creates with one of two approvals", n)
	}

	h.stopBot()
	h.startBot()
	h.click(carol, card, "Approve")
	h.waitFor(general, "<@UALICE> your 8x H100 is ready")
	h.waitFor(approvals, "Approved by <@UBOB> and <@UCAROL>")
	h.dmTo(alice, "was approved by <@UBOB> and <@UCAROL>")
	if c := h.fal.Counters(); c.Creates != 1 {
		t.Fatalf("fal creates = %d, want 1", c.Creates)
	}
	events, err := h.app.Store().AuditFor(h.ctx(), h.onlyRequest(alice).ID)
	if err != nil {
		t.Fatal(err)
	}
	var approvalsSeen []string
	for _, e := range events {
		if e.Action == "approval" {
			approvalsSeen = append(approvalsSeen, e.Actor+" "+e.Detail)
		}
	}
	if want := []string{bob + " 1 of 2", carol + " 2 of 2"}; !slices.Equal(approvalsSeen, want) {
		t.Fatalf("audit trail approvals %q, want %q", approvalsSeen, want)
	}
}

// Two approvers clicking at the same moment, after a restart, both count, exactly: the
// request is approved and one machine made.
func TestTwoApprovalsAtTheSameMomentBothCount(t *testing.T) {
	h := start(t, withConfig(withTwoApprovals))
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	card := h.waitCard()
	h.stopBot()
	h.startBot()
	var wg sync.WaitGroup
	for _, approver := range []string{bob, carol} {
		wg.Go(func() {
			if _, err := h.slack.Click(h.ctx(), approver, card, "Approve"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	h.waitFor(general, "<@UALICE> your 8x H100 is ready")
	r := h.onlyRequest(alice)
	if len(r.Approvals) != 2 || r.ApprovalsNeeded != 2 {
		t.Fatalf("approvals %+v (needed %d), want bob's and carol's of 2", r.Approvals, r.ApprovalsNeeded)
	}
	if c := h.fal.Counters(); c.Creates != 1 {
		t.Fatalf("fal creates = %d, want 1", c.Creates)
	}
}

// One approval, a restart, then one deny: the deny ends it; nothing is created; the
// requester hears the reason by DM.
func TestTwoApprovalsOneApproveThenOneDeny(t *testing.T) {
	h := start(t, withConfig(withTwoApprovals))
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	card := h.waitCard()
	h.click(bob, card, "Approve")
	card = h.waitFor(approvals, "1 of 2: approved by <@UBOB>")

	h.stopBot()
	h.startBot()
	h.click(carol, card, "Deny")
	h.eventually("the deny modal", func() bool { _, ok := h.slack.OpenView(carol); return ok })
	if _, err := h.slack.SubmitView(h.ctx(), carol, map[string]string{"reason": "one 8x at a time, please"}); err != nil {
		t.Fatal(err)
	}
	h.waitFor(general, "denied by <@UCAROL>: one 8x at a time, please")
	card = h.waitFor(approvals, "Denied by <@UCAROL>")
	if len(card.Buttons()) != 0 {
		t.Fatalf("denied card still has buttons %v", card.Buttons())
	}
	h.dmTo(alice, "was denied by <@UCAROL>: one 8x at a time, please", h.slack.PermalinkFor(general, h.onlyRequest(alice).ThreadTS))
	if n := h.fal.Counters().Calls["create"]; n != 0 {
		t.Fatalf("%d creates for a denied request", n)
	}
}

// A request nobody decides on: after APPROVAL_REMINDER the card's thread reminds the
// approvers once (not again after a restart, nor on later passes), again after another
// period, and at APPROVAL_TIMEOUT it expires: card, root and thread say so, a late
// click is told, and nothing reaches fal.
func TestWaitingRequestIsRemindedThenExpires(t *testing.T) {
	h := start(t, withConfig(func(c *config.Config) {
		withGroupApprovers(c)
		c.ApprovalTimeout = 24 * time.Hour
		c.ApprovalReminder = 2 * time.Hour
	}))
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	card := h.waitCard()
	h.waitFor(general, "the request expires")
	h.passes(2)
	if n := h.count(approvals, "waited"); n != 0 {
		t.Fatalf("%d reminders before APPROVAL_REMINDER", n)
	}

	h.clock.Advance(2 * time.Hour)
	reminder := h.waitFor(approvals, "<!subteam^"+approverGroup+">", "has waited 2h for a decision")
	if reminder.ThreadTS != card.TS || !slices.Contains(reminder.Notified, dave) || slices.Contains(reminder.Notified, alice) {
		t.Fatalf("reminder %+v: want it in the card's thread, notifying the group and not the requester", reminder)
	}
	h.stopBot()
	h.startBot()
	h.passes(3)
	if n := h.count(approvals, "has waited"); n != 1 {
		t.Fatalf("%d reminders after a restart within the period, want 1", n)
	}
	h.clock.Advance(2 * time.Hour)
	h.waitFor(approvals, "has waited 4h for a decision")

	h.clock.Advance(20 * time.Hour)
	h.waitFor(general, "<@UALICE> nobody decided on this request within 1d, so it expired")
	card = h.waitFor(approvals, "Expired: nobody decided within 1d")
	if len(card.Buttons()) != 0 {
		t.Fatalf("expired card still has buttons %v", card.Buttons())
	}
	h.waitFor(general, "Expired: nobody decided in time")
	if r := h.onlyRequest(alice); r.State != domain.StateApprovalExpired {
		t.Fatalf("request is %s, want approval_expired", r.State)
	}
	// A click from a client that still shows the buttons.
	if _, err := h.slack.ClickAction(h.ctx(), bob, card, "gpubot_approve", h.onlyRequest(alice).ID); err != nil {
		t.Fatal(err)
	}
	h.waitFor(approvals, "Too late: :hourglass: Expired")
	h.passes(2)
	if n := h.fal.Counters().Calls["create"]; n != 0 {
		t.Fatalf("%d creates for an expired request", n)
	}
	if n := h.count(approvals, "has waited"); n != 2 {
		t.Fatalf("%d reminders in all, want 2", n)
	}
}

// The requester withdraws a waiting request with /gpu cancel: nobody else can; the
// card and the root lose their buttons; once approved it can only be deleted.
func TestWithdrawByCommand(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	card := h.waitCard()
	id := h.onlyRequest(alice).ID

	if got := h.command(mallory, general, "cancel "+id); !strings.Contains(got, "Only <@UALICE>, who asked for it, can withdraw") {
		t.Fatalf("mallory's cancel answered %q", got)
	}
	if got := h.command(alice, general, "cancel "+id[:8]); !strings.Contains(got, "Withdrew request `"+id[:8]+"`") {
		t.Fatalf("alice's cancel answered %q", got)
	}
	card = h.waitFor(approvals, "Withdrawn by <@UALICE>")
	if len(card.Buttons()) != 0 {
		t.Fatalf("withdrawn card still has buttons %v", card.Buttons())
	}
	root := h.waitFor(general, ":heavy_multiplication_x: Cancelled")
	if len(root.Buttons()) != 0 {
		t.Fatalf("the root of a withdrawn request still has buttons %v", root.Buttons())
	}
	h.waitFor(general, "Withdrawn by <@UALICE> before anyone decided")
	if got := h.command(alice, general, "cancel "+id); !strings.Contains(got, "already over") {
		t.Fatalf("a second cancel answered %q", got)
	}

	h.command(alice, general, "create 8x")
	h.eventually("the second card", func() bool { return h.count(approvals, "needs approval") == 2 })
	var second domain.Request
	h.eventually("the second request", func() bool {
		reqs, _ := h.app.Store().RequestsByUser(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: alice})
		for _, r := range reqs {
			if r.State == domain.StateAwaitingApproval && r.ApprovalTS != "" {
				second = r
				return true
			}
		}
		return false
	})
	h.click(bob, h.messageAt(approvals, second.ApprovalTS), "Approve")
	h.waitFor(general, "<@UALICE> your 8x H100 is ready")
	if got := h.command(alice, general, "cancel "+second.ID); !strings.Contains(got, "no longer waiting for approval") || !strings.Contains(got, "/gpu delete") {
		t.Fatalf("cancelling an approved request answered %q", got)
	}
}

// The requester withdraws with the button on the thread root, after a restart; a
// click by someone else is refused and changes nothing.
func TestWithdrawByButtonAfterRestart(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	h.waitCard()
	root := h.waitFor(general, "<@UALICE> asked for 8x H100")
	if got := strings.Join(root.Buttons(), ","); got != "Withdraw request" {
		t.Fatalf("root buttons %q, want Withdraw request", got)
	}

	h.stopBot()
	h.startBot()
	h.click(mallory, root, "Withdraw request")
	h.waitFor(general, "Only <@UALICE>, who asked for it, can withdraw")
	if r := h.onlyRequest(alice); r.State != domain.StateAwaitingApproval {
		t.Fatalf("mallory's click left the request %s", r.State)
	}
	h.click(alice, root, "Withdraw request")
	h.waitFor(approvals, "Withdrawn by <@UALICE>")
	h.waitFor(general, "Withdrawn by <@UALICE> before anyone decided")
	if r := h.onlyRequest(alice); r.State != domain.StateCancelled {
		t.Fatalf("request is %s, want cancelled", r.State)
	}
}
