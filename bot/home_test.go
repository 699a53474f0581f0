package bot_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/handlers"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
)

// openHome opens user's Home tab and waits for the tab gpubot publishes.
func (h *harness) openHome(user string) {
	h.t.Helper()
	before := len(h.slack.HomePublishes(user))
	if _, err := h.slack.OpenHome(h.ctx(), user); err != nil {
		h.t.Fatalf("%s opens Home: %v", user, err)
	}
	h.eventually(user+"'s Home tab published", func() bool { return len(h.slack.HomePublishes(user)) > before })
}

// homeText is what user's Home tab shows now.
func (h *harness) homeText(user string) string {
	v, ok := h.slack.HomeView(user)
	if !ok {
		return ""
	}
	return slacksim.Message{Blocks: v.Blocks}.AllText()
}

// waitHome waits until user's Home tab shows every text, without their opening it again.
func (h *harness) waitHome(user string, texts ...string) {
	h.t.Helper()
	h.eventually(fmt.Sprintf("%s's Home tab to show %q", user, texts), func() bool {
		shown := h.homeText(user)
		for _, text := range texts {
			if !strings.Contains(shown, text) {
				return false
			}
		}
		return true
	})
}

// clickHome presses a button on user's Home tab.
func (h *harness) clickHome(user, actionID, value string) {
	h.t.Helper()
	if _, err := h.slack.ClickHome(h.ctx(), user, actionID, value); err != nil {
		h.t.Fatalf("%s clicks %s on Home: %v\nthe tab shows:\n%s", user, actionID, err, h.homeText(user))
	}
}

func (h *harness) submit(user string, values map[string]string) {
	h.t.Helper()
	if _, err := h.slack.SubmitView(h.ctx(), user, values); err != nil {
		h.t.Fatalf("%s submits %v: %v", user, values, err)
	}
}

// A requester's whole life on the Home tab: open it with no key, set the key from it,
// request a GPU from it and from the shortcut, watch the machines appear and become
// ready without reopening it, extend one and delete it from there.
func TestRequesterLivesOnTheHomeTab(t *testing.T) {
	h := start(t)
	dm := h.slack.DMChannel(alice)
	h.openHome(alice)
	h.waitHome(alice, "You have no SSH key yet", "Set key", "You have no machines", "Request a GPU")

	h.clickHome(alice, handlers.ActionHomeKey, "set")
	h.eventually("the key form", func() bool { v, ok := h.slack.OpenView(alice); return ok && v.CallbackID == handlers.ViewKey })
	h.submit(alice, map[string]string{handlers.BlockKey: newKeyLine(t, alice)})
	h.waitHome(alice, "Your SSH key: ssh-ed25519 `SHA256:", "Replace key")

	h.clickHome(alice, handlers.ActionHomeCreate, "create")
	h.eventually("the create form", func() bool { v, ok := h.slack.OpenView(alice); return ok && v.CallbackID == handlers.ViewCreate })
	h.submit(alice, map[string]string{handlers.BlockType: fal.Type1xH100, handlers.BlockReason: "from the Home tab"})
	h.waitFor(dm, "<@UALICE> your 1x H100 is ready")
	h.waitHome(alice, "from the Home tab", "Ready: `ssh ubuntu@", "left · $", "Your spend in ", "(so far)")

	if _, err := h.slack.Shortcut(h.ctx(), alice, handlers.ShortcutCreate); err != nil {
		t.Fatal(err)
	}
	h.eventually("the create form from the shortcut", func() bool { v, ok := h.slack.OpenView(alice); return ok && v.CallbackID == handlers.ViewCreate })
	h.submit(alice, map[string]string{handlers.BlockType: fal.Type1xH100, handlers.BlockReason: "from the shortcut"})
	h.waitHome(alice, "from the shortcut")
	h.eventually("both machines ready on the tab", func() bool { return strings.Count(h.homeText(alice), "Ready: `ssh ubuntu@") == 2 })

	reqs, err := h.app.Store().UnfinishedOf(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: alice})
	if err != nil || len(reqs) != 2 {
		t.Fatalf("alice's live requests: %v (%d)", err, len(reqs))
	}
	fromHome := reqs[0]
	if fromHome.Reason != "from the Home tab" {
		fromHome = reqs[1]
	}
	mark := h.mark()
	h.clickHome(alice, handlers.ActionExtend, fromHome.ID)
	h.waitForSince(mark, dm, "Extended by 8h by <@UALICE>")
	if after := h.request(fromHome.ID); !after.ExpiresAt.Equal(fromHome.ExpiresAt.Add(8 * time.Hour)) {
		t.Errorf("expiry %v after Extend on Home, want %v", after.ExpiresAt, fromHome.ExpiresAt.Add(8*time.Hour))
	}

	h.clickHome(alice, handlers.ActionDeleteConfirm, fromHome.ID)
	h.waitForSince(mark, dm, "Deleted by <@UALICE>")
	h.eventually("the machine gone at fal", func() bool { return len(h.fal.Instances()) == 1 })
	h.eventually("the deleted machine gone from the tab", func() bool {
		shown := h.homeText(alice)
		return !strings.Contains(shown, "from the Home tab") && strings.Contains(shown, "from the shortcut")
	})
	for _, c := range h.slack.Calls() {
		if c.Method == "views.publish" && c.Params["user_id"] != alice {
			t.Errorf("views.publish for %s, who never opened the tab", c.Params["user_id"])
		}
	}
	if errs := h.slack.ProtocolErrors(); len(errs) > 0 {
		t.Fatalf("Slack refused what the bot sent: %v", errs)
	}
}

func (h *harness) request(id string) domain.Request {
	h.t.Helper()
	r, err := h.app.Store().Request(h.ctx(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// An approver approves and denies from the Home tab as from the card: the card loses
// its buttons and says who decided, the thread hears the decision, and the tab follows.
func TestApproverDecidesFromTheHomeTab(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.openHome(bob)
	h.waitHome(bob, "Nothing waits for your decision")

	h.command(alice, general, "create 8x for 2h first run")
	h.waitCard()
	first := h.onlyRequest(alice)
	h.waitHome(bob, "<@UALICE> asks for 8x H100", "first run", "Approve", "Deny")
	h.clickHome(bob, handlers.ActionApprove, first.ID)
	h.waitFor(approvals, "needs approval", "Approved by <@UBOB>")
	h.waitFor(general, "<@UALICE> approved by <@UBOB>")
	h.waitHome(bob, "Nothing waits for your decision")
	if card := h.waitFor(approvals, "Approved by <@UBOB>"); len(card.Buttons()) != 0 {
		t.Errorf("the card keeps its buttons %q after the approval from Home", card.Buttons())
	}

	mark := h.mark()
	h.command(alice, general, "create 8x second run")
	h.waitForSince(mark, approvals, "needs approval")
	var second domain.Request
	h.eventually("the second request", func() bool {
		reqs, _ := h.app.Store().UnfinishedOf(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: alice})
		for _, r := range reqs {
			if r.State == domain.StateAwaitingApproval {
				second = r
				return true
			}
		}
		return false
	})
	h.waitHome(bob, "second run")
	h.clickHome(bob, handlers.ActionDeny, second.ID)
	h.eventually("the deny form", func() bool { v, ok := h.slack.OpenView(bob); return ok && v.CallbackID == handlers.ViewDeny })
	h.submit(bob, map[string]string{handlers.BlockReason: "one 8x at a time"})
	h.waitForSince(mark, approvals, "Denied by <@UBOB>: one 8x at a time")
	h.waitForSince(mark, general, "<@UALICE> denied by <@UBOB>: one 8x at a time")
	h.waitHome(bob, "Nothing waits for your decision")
	if got := h.request(second.ID).State; got != domain.StateDenied {
		t.Errorf("second request is %s, want denied", got)
	}
}

// An admin's tab lists every live machine with its owner, and the instances at fal
// that gpubot did not make.
func TestAdminSeesTheFleetOnTheHomeTab(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.registerKey(mallory)
	h.openHome(admin)
	h.command(alice, general, "create 1x alice's run")
	h.command(mallory, general, "create 1x mallory's run")
	h.waitHome(admin, "Every machine", "2 requests live, 2 ready", "<@UALICE>", "<@UMALLORY>", "so far", "Everyone's spend in ")
	const stray = "inst_stray"
	h.fal.AddInstance(fal.Instance{ID: stray, InstanceType: fal.Type1xH100, Status: fal.StatusReady})
	h.eventually("the stray instance reported", func() bool { return h.count(h.slack.DMChannel(admin), stray) > 0 })
	h.openHome(admin)
	h.waitHome(admin, "At fal, not made by gpubot", stray)
}

// With 300 machines a requester's tab stays within Slack's limits (slacksim refuses a
// view that breaks them), shows the most recent and says how many more there are.
func TestHomeOf300MachinesIsAccepted(t *testing.T) {
	h := start(t, withConfig(func(c *config.Config) { c.PollInterval = time.Hour }))
	ctx := h.ctx()
	for i := range 300 {
		r := domain.Request{TeamID: "T0GPUBOT", UserID: alice, InstanceType: fal.Type1xH100, Lifetime: time.Hour,
			State: domain.StateApproved, Reason: fmt.Sprintf("run %d", i)}
		if err := h.app.Store().CreateRequest(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	h.openHome(alice)
	shown := h.homeText(alice)
	n := strings.Count(shown, "run ")
	if n == 0 || !strings.Contains(shown, fmt.Sprintf("…and %d more requests; `/gpu list` shows them all.", 300-n)) || !strings.Contains(shown, ">run 299") {
		t.Fatalf("the tab shows %d of 300, without the newest or the count of the rest:\n%s", n, shown)
	}
	for _, c := range h.slack.Calls() {
		if c.Method == "views.publish" && c.Error != "" {
			t.Errorf("views.publish refused: %s", c.Error)
		}
	}
}

// The authorization matrix from the Home tab: each role presses the button on its own
// tab where the tab shows it, and otherwise sends it with alice's request as a tampered
// client could. The same checks as anywhere else decide, and a refusal changes nothing.
func TestAuthorizationMatrixFromHome(t *testing.T) {
	type role struct{ name, user string }
	roles := []role{{"requester", alice}, {"another user", mallory}, {"approver", bob}, {"admin", admin}}
	allowed := map[string]map[string]bool{
		"approve":  {"approver": true},
		"deny":     {"approver": true},
		"delete":   {"requester": true, "admin": true},
		"extend":   {"requester": true, "admin": true},
		"withdraw": {"requester": true},
	}
	for _, action := range []string{"approve", "deny", "delete", "extend", "withdraw"} {
		for _, r := range roles {
			t.Run(action+" by "+r.name, func(t *testing.T) {
				want := allowed[action][r.name]
				if got := tryHomeAction(t, start(t), action, r.user); got != want {
					t.Fatalf("%s from Home by %s: allowed=%v, want %v", action, r.name, got, want)
				}
			})
		}
	}
}

// tryHomeAction has user press action's button for alice's request on their Home tab
// and reports whether it took effect; a refusal must reach user and change nothing.
func tryHomeAction(t *testing.T, h *harness, action, user string) bool {
	h.registerKey(alice)
	kind := "create 1x"
	if action == "approve" || action == "deny" || action == "withdraw" {
		kind = "create 8x"
	}
	h.command(alice, general, kind)
	if kind == "create 8x" {
		h.waitCard()
	} else {
		h.waitFor(general, "is ready :tada:")
	}
	before := h.onlyRequest(alice)
	actionID := map[string]string{
		"approve": handlers.ActionApprove, "deny": handlers.ActionDeny, "delete": handlers.ActionDeleteConfirm,
		"extend": handlers.ActionExtend, "withdraw": handlers.ActionWithdraw,
	}[action]
	h.openHome(user)
	onTab := strings.Contains(h.homeButtons(user), actionID+" "+before.ID)
	var err error
	if onTab {
		_, err = h.slack.ClickHome(h.ctx(), user, actionID, before.ID)
	} else {
		_, err = h.slack.ClickHomeAction(h.ctx(), user, actionID, before.ID)
	}
	if err != nil {
		t.Fatal(err)
	}
	took := func() bool {
		after := h.onlyRequest(alice)
		switch action {
		case "deny":
			v, ok := h.slack.OpenView(user)
			return ok && v.CallbackID == handlers.ViewDeny
		case "extend":
			return after.ExpiresAt.After(before.ExpiresAt)
		case "withdraw":
			return after.State == domain.StateCancelled
		}
		return after.State != before.State
	}
	refusal := func() bool {
		for _, text := range []string{"Only approvers", "your own request", "only they or an admin", "who asked for it, can withdraw"} {
			if h.count(h.slack.DMChannel(user), text) > 0 {
				return true
			}
		}
		return false
	}
	h.eventually("the click's outcome", func() bool { return took() || refusal() })
	if refusal() {
		h.passes(2) // a refused click must change nothing, also later
		if took() {
			t.Errorf("%s's %s was refused, yet it took effect", user, action)
		}
		return false
	}
	return true
}

// homeButtons lists the buttons on user's Home tab as "action_id value", one a line.
func (h *harness) homeButtons(user string) string {
	v, ok := h.slack.HomeView(user)
	if !ok {
		return ""
	}
	var lines []string
	for _, block := range v.Blocks.BlockSet {
		switch b := block.(type) {
		case *slack.ActionBlock:
			for _, e := range b.Elements.ElementSet {
				if button, ok := e.(*slack.ButtonBlockElement); ok {
					lines = append(lines, button.ActionID+" "+button.Value)
				}
			}
		case *slack.SectionBlock:
			if b.Accessory != nil && b.Accessory.ButtonElement != nil {
				lines = append(lines, b.Accessory.ButtonElement.ActionID+" "+b.Accessory.ButtonElement.Value)
			}
		}
	}
	return strings.Join(lines, "\n")
}

// Slack answering views.publish with 429 delays the tab by its Retry-After; it still
// arrives, once.
func TestHomePublishWaitsOutARateLimit(t *testing.T) {
	h := start(t)
	h.slack.RateLimitNext("views.publish", 1, time.Second)
	h.openHome(alice)
	var outcomes []string
	for _, c := range h.slack.Calls() {
		if c.Method == "views.publish" {
			outcomes = append(outcomes, c.Error)
		}
	}
	if fmt.Sprint(outcomes) != "[ratelimited ]" || len(h.slack.HomePublishes(alice)) != 1 {
		t.Errorf("views.publish answered %q and %d views published; want one 429, then the one view", outcomes, len(h.slack.HomePublishes(alice)))
	}
}
