package handlers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

func goldenHomePage() homePage {
	return homePage{
		now: goldenNow, prices: spend.Prices{fal.Type1xH100: 2.5, fal.Type8xH100: 20}, approvalChannel: "CAPPROVALS",
		extendStep: func(domain.Request) time.Duration { return 8 * time.Hour },
	}
}

func goldenKey(t *testing.T) *domain.StoredKey {
	t.Helper()
	pk, err := domain.ParsePublicKey(testKey)
	if err != nil {
		t.Fatal(err)
	}
	return &domain.StoredKey{PublicKey: pk, SetAt: goldenNow.Add(-48 * time.Hour)}
}

// goldenRequestOf is goldenRequest made by user, id number n, n hours ago.
func goldenRequestOf(state domain.State, user string, n int) domain.Request {
	r := goldenRequest(state)
	r.UserID = user
	r.ID = fmt.Sprintf("%08d-7b4d-4e2a-9c1e-7b4d4e2a9c1e", n)
	r.CreatedAt = goldenNow.Add(-time.Duration(n) * time.Hour)
	return r
}

// homeProblems lists where a Home view breaks Slack's limits.
func homeProblems(v slack.HomeTabViewRequest) []string {
	var problems []string
	if n := len(v.Blocks.BlockSet); n > maxHomeBlocks {
		problems = append(problems, fmt.Sprintf("%d blocks, over %d", n, maxHomeBlocks))
	}
	for i, block := range v.Blocks.BlockSet {
		for _, p := range limitProblems(Message{Blocks: []slack.Block{block}}) {
			problems = append(problems, fmt.Sprintf("block %d: %s", i, p))
		}
	}
	return problems
}

func TestGoldenHomeViews(t *testing.T) {
	page := goldenHomePage()
	deleting := goldenRequestOf(domain.StateDeleting, "UALICE", 4)
	deleting.InstanceID = "inst_old"
	halfway := halfApproved()
	halfway.UserID, halfway.ID = "UCAROL", "00000005-7b4d-4e2a-9c1e-7b4d4e2a9c1e"
	views := map[string]homeData{
		"home_empty": {user: "UALICE"},
		"home_requester": {user: "UALICE", key: goldenKey(t), mySpend: &monthTotals{month: spend.MonthOf(goldenNow),
			this: spend.Totals{Machines: 3, Hours: 12.5, Cost: 250}, before: spend.Totals{Machines: 2, Hours: 10, Cost: 200}}, mine: []domain.Request{
			deleting,
			goldenRequestOf(domain.StateReady, "UALICE", 1),
			goldenRequestOf(domain.StateAwaitingApproval, "UALICE", 3),
			goldenRequestOf(domain.StateProvisioning, "UALICE", 2),
		}},
		"home_approver": {user: "UBOB", key: goldenKey(t), isApprover: true, waiting: []domain.Request{
			goldenRequestOf(domain.StateAwaitingApproval, "UALICE", 3), halfway,
		}},
		"home_admin": {user: "UADMIN", isAdmin: true,
			fleet: []domain.Request{
				goldenRequestOf(domain.StateReady, "UALICE", 1),
				goldenRequestOf(domain.StateProvisioning, "UCAROL", 2),
				goldenRequestOf(domain.StateAwaitingApproval, "UDAVE", 3),
			},
			orphans:  map[string]domain.OrphanSighting{"inst_stray": {Count: 3, First: goldenNow.Add(-2 * time.Hour), Last: goldenNow, Reported: true}},
			allSpend: &monthTotals{month: spend.MonthOf(goldenNow), this: spend.Totals{Machines: 41, Hours: 812, Cost: 12840.5, Unpriced: 1}},
		},
	}
	for name, d := range views {
		view := page.view(d)
		golden(t, name, view)
		for _, p := range homeProblems(view) {
			t.Errorf("%s: %s", name, p)
		}
	}
}

// Someone with 300 machines who is also an approver and an admin, with 300 requests
// waiting and a fleet of 600, gets a tab within Slack's 100 blocks that shows the most
// recent of each and says how many more there are and where to see them.
func TestHomeOf300MachinesStaysWithinLimits(t *testing.T) {
	page := goldenHomePage()
	var mine, waiting []domain.Request
	for i := range 300 {
		mine = append(mine, goldenRequestOf(domain.StateReady, "UALICE", 1000+i))
		r := goldenRequestOf(domain.StateAwaitingApproval, "UCAROL", 2000+i)
		r.Reason = strings.Repeat("&", maxReason)
		waiting = append(waiting, r)
	}
	mine[137].CreatedAt = goldenNow // the newest, in the middle of the list
	sim := slacksim.New(slacksim.Options{BotToken: "xoxb-home", AppToken: "xapp-home"})
	defer sim.Close()
	sim.AddUser("UALICE", "alice")
	api := slack.New("xoxb-home", slack.OptionAPIURL(sim.APIURL()))
	for _, d := range []homeData{
		{user: "UALICE", key: goldenKey(t), mine: mine},
		{user: "UALICE", key: goldenKey(t), mine: mine, isApprover: true, waiting: waiting, isAdmin: true, fleet: append(mine, waiting...)},
	} {
		view := page.view(d)
		for _, p := range homeProblems(view) {
			t.Error(p)
		}
		// Slack's own checks, as slacksim makes them.
		if _, err := api.PublishViewContext(context.Background(), slack.PublishViewContextRequest{UserID: "UALICE", View: view}); err != nil {
			t.Errorf("views.publish refused the view: %v", err)
		}
		text := viewText(view)
		shown := strings.Count(text, "action gpubot_delete_confirm")
		if !strings.Contains(text, fmt.Sprintf("…and %d more requests; `/gpu list` shows them all.", 300-shown)) {
			t.Errorf("%d of alice's 300 machines shown, without saying how many more:\n%s", shown, text)
		}
		if first := strings.Index(text, "action gpubot_extend "); first < 0 || !strings.HasPrefix(text[first:], "action gpubot_extend "+mine[137].ID) {
			t.Error("the newest machine is not shown first")
		}
		if !d.isAdmin {
			if shown < 40 {
				t.Errorf("only %d machines shown on a tab of nothing else", shown)
			}
			continue
		}
		decisions := strings.Count(text, "action gpubot_approve")
		if decisions == 0 || !strings.Contains(text, fmt.Sprintf("…and %d more requests; the cards are in <#CAPPROVALS>.", 300-decisions)) {
			t.Errorf("%d of 300 waiting requests shown, without saying how many more", decisions)
		}
		listed := strings.Count(text, "\n`")
		if !strings.Contains(text, fmt.Sprintf("…and %d more machines; `/gpu list all` shows them all.", 600-listed)) {
			t.Errorf("%d of the fleet of 600 listed, without saying how many more:\n%s", listed, text)
		}
	}
}

// viewText is a view as a test reads it: each block's texts, and each button as
// "action <id> <value>".
func viewText(v slack.HomeTabViewRequest) string {
	var lines []string
	for _, block := range v.Blocks.BlockSet {
		switch b := block.(type) {
		case *slack.HeaderBlock:
			lines = append(lines, b.Text.Text)
		case *slack.SectionBlock:
			lines = append(lines, b.Text.Text)
			if b.Accessory != nil && b.Accessory.ButtonElement != nil {
				lines = append(lines, "action "+b.Accessory.ButtonElement.ActionID+" "+b.Accessory.ButtonElement.Value)
			}
		case *slack.ContextBlock:
			for _, e := range b.ContextElements.Elements {
				if text, ok := e.(*slack.TextBlockObject); ok {
					lines = append(lines, text.Text)
				}
			}
		case *slack.ActionBlock:
			for _, e := range b.Elements.ElementSet {
				if button, ok := e.(*slack.ButtonBlockElement); ok {
					lines = append(lines, "action "+button.ActionID+" "+button.Value)
				}
			}
		}
	}
	return strings.Join(lines, "\n")
}

// homeRecorder is Slack's views.publish as the handlers' tests see it.
type homeRecorder struct {
	mu    sync.Mutex
	views map[string][]string // user -> the text of each view published to them
}

func (r *homeRecorder) PublishHome(_ context.Context, user string, v slack.HomeTabViewRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.views == nil {
		r.views = map[string][]string{}
	}
	r.views[user] = append(r.views[user], viewText(v))
	return nil
}

func (r *homeRecorder) published(user string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.views[user]...)
}

func newHomeEnv(t *testing.T, every time.Duration) (*env, *homeRecorder) {
	e := newEnv(t)
	homes := &homeRecorder{}
	e.close()
	e.config.Home, e.config.HomeEvery = homes, every
	e.open()
	return e, homes
}

var alice = domain.UserRef{TeamID: "T1", UserID: testOwner}

// Only people who opened the Home tab get it published; once they did, a change of
// theirs (a new request, a machine ready) is published without their opening it again.
func TestHomeIsPublishedOnlyToThoseWhoOpenedIt(t *testing.T) {
	e, homes := newHomeEnv(t, time.Nanosecond)
	ctx := context.Background()
	first := e.request()
	if got := homes.published(testOwner); len(got) != 0 {
		t.Fatalf("alice never opened the tab but got %d publishes", len(got))
	}
	e.h.HomeOpened(ctx, alice)
	e.idle()
	got := homes.published(testOwner)
	if len(got) != 1 || !strings.Contains(got[0], "fal is preparing") || !strings.Contains(got[0], "You have no SSH key yet") {
		t.Fatalf("after opening: %q; want one view with her machine being prepared and no key", got)
	}
	if err := e.sim.SetStatus(first.InstanceID, fal.StatusReady); err != nil {
		t.Fatal(err)
	}
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	got = homes.published(testOwner)
	if last := got[len(got)-1]; !strings.Contains(last, "Ready: `ssh ubuntu@") || !strings.Contains(last, "action gpubot_extend "+first.ID) {
		t.Errorf("after the machine became ready the tab shows:\n%s", last)
	}
	if admin := homes.published(testAdmin); len(admin) != 0 {
		t.Errorf("the admin never opened the tab but got %d publishes", len(admin))
	}
	if err := e.store.MarkHomeOpened(ctx, domain.UserRef{TeamID: "T1", UserID: testAdmin}); err != nil {
		t.Fatal(err)
	}
	e.request()
	if admin := homes.published(testAdmin); len(admin) == 0 || !strings.Contains(admin[len(admin)-1], "2 requests live, 1 ready") {
		t.Errorf("the admin, who opened the tab, sees %q; want the fleet of two", admin)
	}
}

// A burst of changes is published at most once per HomeEvery, and the last publish
// shows the newest state.
func TestHomePublishesAreThrottledAndTheNewestWins(t *testing.T) {
	const every = 100 * time.Millisecond
	e, homes := newHomeEnv(t, every)
	ctx := context.Background()
	if err := e.store.MarkHomeOpened(ctx, alice); err != nil {
		t.Fatal(err)
	}
	const changes = 30
	start := time.Now()
	for i := range changes {
		r := domain.Request{TeamID: "T1", UserID: testOwner, InstanceType: fal.Type1xH100, SSHKey: testKey,
			Lifetime: time.Hour, State: domain.StateApproved, Reason: fmt.Sprintf("change %d", i)}
		if err := e.store.CreateRequest(ctx, &r); err != nil {
			t.Fatal(err)
		}
		e.h.refreshHome(ctx, alice)
	}
	e.idle()
	elapsed := time.Since(start)
	got := homes.published(testOwner)
	if most := 1 + int(elapsed/every); len(got) > most {
		t.Errorf("%d publishes in %s, want at most %d at one per %s", len(got), elapsed, most, every)
	}
	if len(got) == 0 || !strings.Contains(got[len(got)-1], fmt.Sprintf(">change %d", changes-1)) {
		t.Errorf("the last publish does not show the last change")
	}
	t.Logf("%d changes in %s made %d publishes", changes, elapsed, len(got))
}

// A change before someone ever opened the tab holds nothing back: their first opening
// is published at once, however long HomeEvery is.
func TestFirstOpeningIsNotHeldBackByEarlierChanges(t *testing.T) {
	e, homes := newHomeEnv(t, time.Hour)
	ctx := context.Background()
	e.h.refreshHome(ctx, alice) // as setting the key does
	e.idle()
	e.h.homes.mu.Lock()
	_, throttled := e.h.homes.last[alice.String()]
	e.h.homes.mu.Unlock()
	if throttled {
		t.Fatal("a change of someone who never opened the tab counts against their first publish")
	}
	e.h.HomeOpened(ctx, alice)
	e.idle()
	if got := homes.published(testOwner); len(got) != 1 {
		t.Errorf("%d publishes after the first opening, want 1", len(got))
	}
}

// A publish waiting out HomeEvery does not hold a stop: it is dropped, and the tab
// shows the newest state when next opened.
func TestStopDropsAWaitingHomePublish(t *testing.T) {
	const every = 10 * shutdownGrace
	e, homes := newHomeEnv(t, every)
	ctx := context.Background()
	e.h.HomeOpened(ctx, alice) // published at once
	e.idle()
	e.h.refreshHome(ctx, alice) // waits out every
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.close()
	}()
	select {
	case <-stopped:
	case <-time.After(shutdownGrace / 2):
		t.Fatalf("the stop waited for a Home publish held back for %s", every)
	}
	if got := homes.published(testOwner); len(got) != 1 {
		t.Errorf("%d publishes, want only the one at opening", len(got))
	}
}

// Extend on the Home tab offers what one click may add: the default lifetime, or what
// the maximum leaves, counted on the expiry of a ready machine and on the lifetime of
// one not ready yet; none when nothing is left.
func TestHomeExtendOffersWhatTheMaximumAllows(t *testing.T) {
	e := newEnv(t) // default lifetime 8h, maximum 72h
	page := homePage{now: e.clock.Now(), extendStep: e.h.extendStep}
	provisioning := func(lifetime time.Duration) domain.Request {
		r := goldenRequest(domain.StateProvisioning)
		r.Lifetime = lifetime
		return r
	}
	ready := goldenRequest(domain.StateReady)
	ready.ExpiresAt = e.clock.Now().Add(70 * time.Hour)
	for _, tc := range []struct {
		name string
		r    domain.Request
		want string
	}{
		{"provisioning, 4h", provisioning(4 * time.Hour), "Extend 8h"},
		{"provisioning, 70h", provisioning(70 * time.Hour), "Extend 2h"},
		{"provisioning, 72h", provisioning(72 * time.Hour), ""},
		{"ready, 70h left", ready, "Extend 2h"},
	} {
		got := ""
		for _, b := range page.machineButtons(tc.r) {
			if button := b.(*slack.ButtonBlockElement); button.ActionID == ActionExtend {
				got = button.Text.Text
			}
		}
		if got != tc.want {
			t.Errorf("%s: Extend button %q, want %q", tc.name, got, tc.want)
		}
	}
}
