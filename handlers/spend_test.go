package handlers

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// groupTable answers usergroups.users.list from a fixed table.
type groupTable map[string][]string

func (g groupTable) GroupMembers(_ context.Context, group string) ([]string, error) {
	return g[group], nil
}

// newSpendEnv is newEnv with prices and the settings change makes, gpubot restarted on them.
func newSpendEnv(t *testing.T, change func(*Config)) *env {
	t.Helper()
	e := newEnv(t)
	e.config.Prices = spend.Prices{fal.Type1xH100: 2.5, fal.Type8xH100: 20}
	change(&e.config)
	e.restart()
	e.registerKeys(testOwner, "UCAROL", testAdmin)
	return e
}

// registerKeys gives users the test key.
func (e *env) registerKeys(users ...string) {
	e.t.Helper()
	pk, err := domain.ParsePublicKey(testKey)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, user := range users {
		if err := e.store.SetKey(context.Background(), domain.UserRef{TeamID: "T1", UserID: user}, pk); err != nil {
			e.t.Fatal(err)
		}
	}
}

// command runs a slash command as user and waits for the work it started.
func (e *env) command(user, text string) *Reply {
	e.t.Helper()
	r := e.h.Command(context.Background(), uuid.NewString(), slack.SlashCommand{TeamID: "T1", UserID: user, ChannelID: "CGENERAL", Text: text})
	e.idle()
	return r
}

// clickAs clicks a button as user and waits for the work it started.
func (e *env) clickAs(user, actionID, value string) {
	e.t.Helper()
	cb := slack.InteractionCallback{Type: slack.InteractionTypeBlockActions, User: slack.User{ID: user, TeamID: "T1"},
		Channel: slack.Channel{GroupConversation: slack.GroupConversation{Conversation: slack.Conversation{ID: "CAPPROVALS"}}}}
	cb.ActionCallback.BlockActions = []*slack.BlockAction{{ActionID: actionID, Value: value}}
	e.h.Interaction(context.Background(), uuid.NewString(), cb)
	e.idle()
}

// pastMachine stores a machine of user that ran from ready for d, then was deleted
// (or, with end false, still runs with lifetime d).
func (e *env) pastMachine(user, instanceType string, ready time.Time, d time.Duration, end bool) domain.Request {
	e.t.Helper()
	ctx := context.Background()
	r := domain.Request{TeamID: "T1", UserID: user, CommandChannel: "CGENERAL", InstanceType: instanceType,
		SSHKey: testKey, Lifetime: d, State: domain.StateApproved, CreatedAt: ready.Add(-time.Minute), Reason: "earlier work"}
	if err := e.store.CreateRequest(ctx, &r); err != nil {
		e.t.Fatal(err)
	}
	moves := []domain.State{domain.StateCreating, domain.StateProvisioning, domain.StateReady}
	if end {
		moves = append(moves, domain.StateDeleting, domain.StateDeleted)
	}
	for _, to := range moves {
		var err error
		r, err = e.store.Move(ctx, r.ID, to, actorBot, "", func(u *domain.Request) error {
			if to == domain.StateProvisioning {
				u.InstanceID = "inst-" + u.ID[:8]
			}
			if to == domain.StateReady {
				u.ReadyAt = ready
			}
			if to == domain.StateDeleted {
				u.EndedAt = ready.Add(d)
			}
			return nil
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return r
}

// newestOf returns user's latest request.
func (e *env) newestOf(user string) domain.Request {
	e.t.Helper()
	reqs, err := e.store.RequestsByUser(context.Background(), domain.UserRef{TeamID: "T1", UserID: user})
	if err != nil || len(reqs) == 0 {
		e.t.Fatalf("requests of %s: %v (%d)", user, err, len(reqs))
	}
	return reqs[0]
}

func TestRequestOverOwnBudgetGoesToTheApprovers(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) { c.Budgets = spend.NewBudgets(map[string]float64{testOwner: 20, "default": 1000}) })
	now := e.clock.Now()
	e.pastMachine(testOwner, fal.Type1xH100, now.Add(-30*time.Hour), 6*time.Hour, true) // $15 this month

	got := e.command(testOwner, "create 1x for 4h tuning") // $10 more: $25 of $20
	if !strings.Contains(got.Text, "goes to the approvers, because it would go over budget (<@UALICE> has spent $15.00 of $20.00 this month; this adds $10.00)") {
		t.Fatalf("reply %q does not say it goes to the approvers, with the figures", got.Text)
	}
	r := e.newestOf(testOwner)
	if r.State != domain.StateAwaitingApproval || r.ApprovalsNeeded != 1 {
		t.Fatalf("a 1x over budget is %s needing %d approvals; want awaiting approval by one", r.State, r.ApprovalsNeeded)
	}
	card := e.slack.said("CAPPROVALS", "needs approval")
	if len(card) != 1 || !strings.Contains(card[0], ":money_with_wings: Over budget: <@UALICE> has spent $15.00 of $20.00 this month; this adds $10.00") {
		t.Fatalf("approval card %q does not say why", card)
	}
	if thread := e.slack.said("CGENERAL", "would go over budget"); len(thread) != 1 {
		t.Errorf("the thread does not say why the request waits: %q", e.slack.all())
	}
	if len(e.sim.Instances()) != 0 {
		t.Error("a machine was created before anyone approved")
	}
	// carol, on the default budget, asks for the same and goes ahead.
	e.command("UCAROL", "create 1x for 4h")
	if c := e.newestOf("UCAROL"); c.State == domain.StateAwaitingApproval {
		t.Errorf("carol, well within the default budget, waits for approval")
	}
}

func TestRequestOverBudgetIsRefusedInRefuseMode(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) {
		c.Budgets = spend.NewBudgets(map[string]float64{"default": 100})
		c.Enforcement = EnforceRefuse
	})
	now := e.clock.Now()
	// A machine still running, with 6 of its 8 hours to go: it counts to its expiry ($160).
	e.pastMachine(testOwner, fal.Type8xH100, now.Add(-2*time.Hour), 8*time.Hour, false)
	got := e.command(testOwner, "create 1x for 2h")
	want := ":no_entry: That request would go over budget: <@UALICE> has spent $160.00 of $100.00 this month; this adds $5.00 (running machines counted to their expiry). You can ask for less"
	if got.Outcome != OutcomeRefused || !strings.HasPrefix(got.Text, want) || !strings.Contains(got.Text, "`/gpu budget` shows where you stand") {
		t.Fatalf("reply %q (%s); want a refusal starting %q and saying what to do", got.Text, got.Outcome, want)
	}
	reqs, _ := e.store.RequestsByUser(context.Background(), domain.UserRef{TeamID: "T1", UserID: testOwner})
	if len(reqs) != 1 {
		t.Errorf("%d requests stored; the refused one must change nothing", len(reqs))
	}
}

func TestGroupBudgetAddsUpItsMembersSpend(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) {
		c.Budgets = spend.NewBudgets(map[string]float64{"S0ML": 30, "UALICE": 1000, "default": 1000})
		c.Enforcement = EnforceRefuse
		c.Groups = groupTable{"S0ML": {testOwner, "UCAROL"}}
	})
	if err := e.tick(); err != nil { // reads the groups
		t.Fatal(err)
	}
	now := e.clock.Now()
	e.pastMachine("UCAROL", fal.Type1xH100, now.Add(-20*time.Hour), 10*time.Hour, true) // $25 of the group's $30
	got := e.command(testOwner, "create 1x for 4h")                                     // alice's own $1,000 is far off
	if got.Outcome != OutcomeRefused || !strings.Contains(got.Text, "user group `S0ML` has spent $25.00 of $30.00 this month; this adds $10.00") {
		t.Fatalf("reply %q; want a refusal with the group's figures", got.Text)
	}
	if got := e.command(testOwner, "create 1x for 1h"); got.Outcome != OutcomeOK {
		t.Fatalf("$2.50 more fits the group's budget, yet: %q", got.Text)
	}
	// Someone outside the group is held to the default, not the group's.
	e.pastMachine(testAdmin, fal.Type1xH100, now.Add(-20*time.Hour), 10*time.Hour, true)
	if got := e.command(testAdmin, "create 1x for 4h"); got.Outcome != OutcomeOK {
		t.Fatalf("admin, outside the group, refused: %q", got.Text)
	}
}

func TestBudgetIsNotEnforcedWithoutAPrice(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) {
		c.Budgets = spend.NewBudgets(map[string]float64{"default": 0})
		c.Enforcement = EnforceRefuse
		c.Prices = spend.Prices{fal.Type8xH100: 20}
	})
	if got := e.command(testOwner, "create 1x"); got.Outcome != OutcomeOK {
		t.Fatalf("a type without a price has no cost to weigh, yet: %q", got.Text)
	}
	if got := e.command(testOwner, "create 8x"); got.Outcome != OutcomeRefused || !strings.Contains(got.Text, "of $0.00 this month") {
		t.Fatalf("a priced type over a budget of 0 is not refused: %q", got.Text)
	}
}

func TestMachineCapRefusesWithTheMachinesHeld(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) { c.MaxMachines = 2 })
	first := e.command(testOwner, "create 1x")
	second := e.command(testOwner, "create 8x")
	if first.Outcome != OutcomeOK || second.Outcome != OutcomeOK {
		t.Fatalf("the first two are refused: %q, %q", first.Text, second.Text)
	}
	got := e.command(testOwner, "create 1x")
	if got.Outcome != OutcomeRefused || !strings.Contains(got.Text, "You already hold 2 machines, the most one person may at once (MAX_MACHINES_PER_USER)") ||
		!strings.Contains(got.Text, "8x H100 · awaiting approval") || !strings.Contains(got.Text, "`/gpu delete <id>`") {
		t.Fatalf("third request: %q; want a refusal listing both and how to free one", got.Text)
	}
	// Freeing one makes room.
	waiting := e.newestOf(testOwner)
	if waiting.InstanceType != fal.Type8xH100 {
		reqs, _ := e.store.UnfinishedOf(context.Background(), domain.UserRef{TeamID: "T1", UserID: testOwner})
		for _, r := range reqs {
			if r.State == domain.StateAwaitingApproval {
				waiting = r
			}
		}
	}
	if got := e.command(testOwner, "cancel "+waiting.ID); got.Outcome != OutcomeOK {
		t.Fatal(got.Text)
	}
	if got := e.command(testOwner, "create 1x"); got.Outcome != OutcomeOK {
		t.Fatalf("after cancelling one: %q", got.Text)
	}
	// Others are not held to alice's machines.
	if got := e.command("UCAROL", "create 1x"); got.Outcome != OutcomeOK {
		t.Fatalf("carol: %q", got.Text)
	}
}

func TestExtensionOverBudgetIsRefusedInRefuseMode(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) {
		c.Budgets = spend.NewBudgets(map[string]float64{"default": 10})
		c.Enforcement = EnforceRefuse
	})
	r := e.readyMachine() // 1x for 2h: $5 committed
	got := e.command(testOwner, "extend "+r.ID+" 4h")
	if got.Outcome != OutcomeRefused || !strings.Contains(got.Text, "That extension would go over budget: <@UALICE> has spent $5.00 of $10.00 this month; this adds $10.00") {
		t.Fatalf("reply %q; want the extension refused with the figures", got)
	}
	if after := e.get(r.ID); !after.ExpiresAt.Equal(r.ExpiresAt) {
		t.Errorf("expiry moved from %s to %s", r.ExpiresAt, after.ExpiresAt)
	}
	if got := e.command(testOwner, "extend "+r.ID+" 1h"); got != nil {
		t.Fatalf("$2.50 more fits, yet: %q", got.Text)
	}
}

func TestExtensionOverBudgetWaitsForAnApprover(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) { c.Budgets = spend.NewBudgets(map[string]float64{"default": 10}) })
	r := e.readyMachine()
	if got := e.command(testOwner, "extend "+r.ID+" 4h"); got != nil {
		t.Fatalf("reply %q; want the extension asked", got.Text)
	}
	waiting := e.get(r.ID)
	if waiting.ExtensionAsked != 4*time.Hour || !waiting.ExpiresAt.Equal(r.ExpiresAt) {
		t.Fatalf("extension asked %s, expiry %s; want 4h waiting and the expiry unchanged", waiting.ExtensionAsked, waiting.ExpiresAt)
	}
	card := e.slack.said("CAPPROVALS", "Extension of")
	if len(card) != 1 || !strings.Contains(card[0], "Over budget: <@UALICE> has spent $5.00 of $10.00 this month; this adds $10.00") {
		t.Fatalf("extension card %q", card)
	}
	if again := e.command(testOwner, "extend "+r.ID+" 3h"); again == nil || !strings.Contains(again.Text, "An extension of 4h for `"+shortID(r.ID)+"` already waits for an approver") {
		t.Fatalf("a second extension while one waits: %v", again)
	}
	e.clickAs(testOwner, ActionExtendApprove, r.ID)
	if e.get(r.ID).ExtensionAsked == 0 {
		t.Fatal("the owner approved their own extension")
	}
	e.clickAs("UBOB", ActionExtendApprove, r.ID)
	after := e.get(r.ID)
	if after.ExtensionAsked != 0 || !after.ExpiresAt.Equal(r.ExpiresAt.Add(4*time.Hour)) {
		t.Fatalf("after bob approved: waiting %s, expiry %s; want the expiry 4h later", after.ExtensionAsked, after.ExpiresAt)
	}
	if said := e.slack.said("CGENERAL", "approved by <@UBOB>"); len(said) != 1 {
		t.Errorf("the thread does not tell the approved extension: %q", e.slack.all())
	}
	// A click on the decided card changes nothing.
	e.clickAs("UBOB", ActionExtendApprove, r.ID)
	if again := e.get(r.ID); !again.ExpiresAt.Equal(after.ExpiresAt) {
		t.Fatalf("a second click extended again: %s", again.ExpiresAt)
	}
}

func TestExtensionOverBudgetDeniedKeepsTheExpiry(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) { c.Budgets = spend.NewBudgets(map[string]float64{"default": 10}) })
	r := e.readyMachine()
	e.command(testOwner, "extend "+r.ID+" 4h")
	e.clickAs("UBOB", ActionExtendDeny, r.ID)
	after := e.get(r.ID)
	if after.ExtensionAsked != 0 || !after.ExpiresAt.Equal(r.ExpiresAt) {
		t.Fatalf("after the denial: waiting %s, expiry %s", after.ExtensionAsked, after.ExpiresAt)
	}
	if said := e.slack.said("CGENERAL", "the extension was denied by <@UBOB>"); len(said) != 1 {
		t.Errorf("the thread does not tell the denial: %q", e.slack.all())
	}
}

// An extension recorded just before gpubot stopped, its card not yet posted, is asked
// on a pass after the restart, once.
func TestExtensionAskedBeforeARestartIsStillAsked(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) { c.Budgets = spend.NewBudgets(map[string]float64{"default": 10}) })
	r := e.readyMachine()
	_, err := e.store.Update(context.Background(), r.ID, func(u *domain.Request) error {
		u.ExtensionAsked, u.ExtensionAskedBy, u.ExtensionAskedAt, u.ExtensionNote = 4*time.Hour, testOwner, e.clock.Now(), "figures"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.restart()
	e.clock.Advance(time.Minute)
	for range 2 {
		if err := e.tick(); err != nil {
			t.Fatal(err)
		}
	}
	if cards := e.slack.said("CAPPROVALS", "Extension of"); len(cards) != 1 {
		t.Fatalf("%d extension cards after the restart, want 1", len(cards))
	}
	if e.get(r.ID).ExtensionCardTS == "" {
		t.Error("the card's ts was not recorded, so the decision cannot edit it")
	}
}

// Requests of one person arriving at once are weighed one after the other, so together
// they never pass the cap (nor a budget).
func TestConcurrentRequestsStayWithinTheCap(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) { c.MaxMachines = 2 })
	var wg sync.WaitGroup
	replies := make([]*Reply, 6)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = e.h.Command(context.Background(), uuid.NewString(), slack.SlashCommand{TeamID: "T1", UserID: testOwner, ChannelID: "CGENERAL", Text: "create 1x"})
		}()
	}
	wg.Wait()
	e.idle()
	live, err := e.store.UnfinishedOf(context.Background(), domain.UserRef{TeamID: "T1", UserID: testOwner})
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	for _, r := range replies {
		if r.Outcome == OutcomeOK {
			ok++
		}
	}
	if len(live) != 2 || ok != 2 {
		t.Fatalf("%d requests stored and %d accepted of 6 sent at once; the cap is 2", len(live), ok)
	}
}

// Members of one budgeted group asking at once are weighed one after the other too,
// so together they never pass the group's budget.
func TestGroupMembersAskingAtOnceStayWithinTheGroupBudget(t *testing.T) {
	members := []string{testOwner, "UCAROL", "UDAVE", "UERIN", "UFRANK", "UGRACE"}
	e := newSpendEnv(t, func(c *Config) {
		c.Budgets = spend.NewBudgets(map[string]float64{"S0ML": 30, "default": 1000})
		c.Enforcement = EnforceRefuse
		c.Groups = groupTable{"S0ML": members}
	})
	e.registerKeys(members...)
	if err := e.tick(); err != nil { // reads the groups
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	replies := make([]*Reply, len(members))
	for i, user := range members {
		wg.Go(func() {
			// $10 each: the group's $30 fits three.
			replies[i] = e.h.Command(context.Background(), uuid.NewString(), slack.SlashCommand{TeamID: "T1", UserID: user, ChannelID: "CGENERAL", Text: "create 1x for 4h"})
		})
	}
	wg.Wait()
	e.idle()
	ok := 0
	for i, r := range replies {
		switch {
		case r.Outcome == OutcomeOK:
			ok++
		case !strings.Contains(r.Text, "user group `S0ML` has spent"):
			t.Errorf("%s refused for another reason than the group's budget: %q", members[i], r.Text)
		}
	}
	if ok != 3 {
		t.Fatalf("%d of %d members' requests accepted at once; the group's budget fits 3", ok, len(members))
	}
}

// A machine that ends while its extension waits leaves nothing to decide: a click says
// so, and the wait ends.
func TestExtensionOfAMachineThatEndedIsNotApplied(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) { c.Budgets = spend.NewBudgets(map[string]float64{"default": 10}) })
	r := e.readyMachine()
	e.command(testOwner, "extend "+r.ID+" 4h")
	if _, err := e.h.recordDelete(context.Background(), testOwner, r.ID, noEnvelope); err != nil {
		t.Fatal(err)
	}
	e.idle()
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	e.clickAs("UBOB", ActionExtendApprove, r.ID)
	after := e.get(r.ID)
	if after.Live() || after.ExtensionAsked != 0 {
		t.Fatalf("after the click: %s, extension waiting %s; want the machine gone and no wait", after.State, after.ExtensionAsked)
	}
	if told := e.slack.said("CAPPROVALS", "there is nothing left to extend"); len(told) != 1 {
		t.Errorf("the approver was not told: %q", e.slack.all())
	}
}
