package handlers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// The Home tab's own buttons and the global shortcut. Its other buttons carry the
// action ids and values of the cards' and reminders' buttons, so a click on Home goes
// through the same handlers, with the same checks, as one anywhere else.
const (
	ActionHomeCreate = "gpubot_home_create" // opens the create form
	ActionHomeKey    = "gpubot_home_key"    // opens the key form
	// ShortcutCreate is the callback id of the global shortcut "Request a GPU" (manifest.yml).
	ShortcutCreate = "gpubot_create"
)

// HomePublisher publishes a person's Home tab (views.publish).
type HomePublisher interface {
	PublishHome(ctx context.Context, user string, view slack.HomeTabViewRequest) error
}

// DefaultHomeEvery is how often at most one person's Home tab is published: changes
// in between are shown together by the next publish.
const DefaultHomeEvery = 5 * time.Second

// maxHomeBlocks is Slack's limit on the blocks of a Home view.
const maxHomeBlocks = 100

// HomeOpened answers someone opening gpubot's Home tab: it records that they did, so
// later changes of theirs reach the tab, and publishes it.
func (h *Handlers) HomeOpened(ctx context.Context, user domain.UserRef) {
	if h.cfg.Home == nil || user.UserID == "" {
		return
	}
	if err := h.store.MarkHomeOpened(ctx, user); err != nil {
		h.log.Error("record home opened", "user", user.UserID, "err", err)
		return
	}
	h.refreshHome(ctx, user)
}

// homesChanged republishes the Home tab of everyone who sees request r there: its
// owner, the admins (the fleet) and, for a request that goes through approval, the
// approvers.
func (h *Handlers) homesChanged(ctx context.Context, r domain.Request) {
	if h.cfg.Home == nil {
		return
	}
	users := append([]string{r.UserID}, h.cfg.Policy.AdminUsers()...)
	if r.ApprovalsNeeded > 0 {
		users = append(users, h.cfg.Policy.ApproverUsers()...)
	}
	slices.Sort(users)
	for _, user := range slices.Compact(users) {
		h.refreshHome(ctx, domain.UserRef{TeamID: r.TeamID, UserID: user})
	}
}

// refreshHome publishes user's Home tab soon, if they ever opened it: at once, or when
// HomeEvery has passed since the last publish. While one is waiting, more changes add
// nothing: it reads the store when it runs, so it shows the newest state.
func (h *Handlers) refreshHome(ctx context.Context, user domain.UserRef) {
	if h.cfg.Home == nil {
		return
	}
	opened, err := h.store.HomeOpened(ctx, user)
	if err != nil || !opened {
		if err != nil {
			h.log.Error("read whether home was opened", "user", user.UserID, "err", err)
		}
		return
	}
	wait, start := h.homes.schedule(user.String(), time.Now(), h.cfg.HomeEvery)
	if !start {
		return
	}
	h.startWork("publish home", false, func(ctx context.Context) {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-h.stopping:
			return // a tab is shown afresh when next opened: not worth holding a stop for
		case <-ctx.Done():
			return
		}
		h.foreground.wait(ctx, maxHoldBack)
		h.homes.begin(user.String(), time.Now())
		h.publishHome(ctx, user)
	})
}

// publishHome publishes user's Home tab as the store has it.
func (h *Handlers) publishHome(ctx context.Context, user domain.UserRef) {
	d, err := h.readHome(ctx, user)
	if err != nil {
		h.log.Error("read home", "user", user.UserID, "err", err)
		return
	}
	page := homePage{now: h.now(), prices: h.cfg.Prices, approvalChannel: h.cfg.ApprovalChannel, extendStep: h.extendStep}
	if err := h.cfg.Home.PublishHome(ctx, user.UserID, page.view(d)); err != nil {
		h.log.Error("publish home", "user", user.UserID, "err", err)
	}
}

// homeThrottle holds back a person's next Home publish until every has passed since
// the last. It is a rate limit on calls to Slack, not a decision, so it lives in memory.
type homeThrottle struct {
	mu      sync.Mutex
	last    map[string]time.Time // when each tab was last published
	pending map[string]bool      // a publish is waiting and has not read the store yet
}

// schedule reports how long the next publish of key must wait, and whether the caller
// is to make it (false: one is waiting already).
func (t *homeThrottle) schedule(key string, now time.Time, every time.Duration) (wait time.Duration, start bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending, t.last = map[string]bool{}, map[string]time.Time{}
	}
	if t.pending[key] {
		return 0, false
	}
	t.pending[key] = true
	return max(every-now.Sub(t.last[key]), 0), true
}

// begin marks key's waiting publish as under way: a change from now on schedules the next.
func (t *homeThrottle) begin(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, key)
	t.last[key] = now
}

// homeData is what a person's Home tab shows, as read from the store.
type homeData struct {
	user       string
	key        *domain.StoredKey
	mine       []domain.Request // their live requests
	isApprover bool
	waiting    []domain.Request // requests waiting for approval, not their own
	isAdmin    bool
	fleet      []domain.Request // every live request
	orphans    map[string]domain.OrphanSighting
	// mySpend and allSpend are this month's spend so far of the person and, for an
	// admin, of everyone; nil without prices.
	mySpend, allSpend *monthTotals
}

// monthTotals is a month's spend beside the month before's.
type monthTotals struct {
	month        spend.Month
	this, before spend.Totals
}

// readSpend reads this month's spend of owners (everyone's, with none), beside last month's.
func (h *Handlers) readSpend(ctx context.Context, owners ...domain.UserRef) (*monthTotals, error) {
	month := spend.MonthOf(h.now())
	this, before, err := h.monthSummaries(ctx, month, owners...)
	if err != nil {
		return nil, err
	}
	return &monthTotals{month: month, this: this.Total, before: before.Total}, nil
}

// spendSection shows a month's spend so far, titled.
func spendSection(title string, t *monthTotals) slack.Block {
	return section(fmt.Sprintf("*%s in %s (so far)*\n%s%s", title, t.month.Name(), totalsLine(t.this), changeText(t.month, t.this, t.before)))
}

// readHome reads what user's Home tab shows.
func (h *Handlers) readHome(ctx context.Context, user domain.UserRef) (homeData, error) {
	d := homeData{user: user.UserID, isApprover: h.cfg.Policy.IsApprover(user.UserID), isAdmin: h.cfg.Policy.IsAdmin(user.UserID)}
	key, err := h.store.Key(ctx, user)
	switch {
	case err == nil:
		d.key = &key
	case !errors.Is(err, domain.ErrNotFound):
		return d, fmt.Errorf("read key: %w", err)
	}
	if d.mine, err = h.store.UnfinishedOf(ctx, user); err != nil {
		return d, fmt.Errorf("read own requests: %w", err)
	}
	priced := len(h.cfg.Prices) > 0
	if priced {
		if d.mySpend, err = h.readSpend(ctx, user); err != nil {
			return d, fmt.Errorf("read own spend: %w", err)
		}
	}
	if !d.isApprover && !d.isAdmin {
		return d, nil
	}
	live, err := h.store.Unfinished(ctx)
	if err != nil {
		return d, fmt.Errorf("read live requests: %w", err)
	}
	if d.isApprover {
		for _, r := range live {
			if r.State == domain.StateAwaitingApproval && r.UserID != user.UserID {
				d.waiting = append(d.waiting, r)
			}
		}
	}
	if d.isAdmin {
		d.fleet = live
		if d.orphans, err = h.store.Orphans(ctx); err != nil {
			return d, fmt.Errorf("read untracked instances: %w", err)
		}
		if priced {
			if d.allSpend, err = h.readSpend(ctx); err != nil {
				return d, fmt.Errorf("read everyone's spend: %w", err)
			}
		}
	}
	return d, nil
}

// homePage turns homeData into the Home view.
type homePage struct {
	now             time.Time
	prices          spend.Prices
	approvalChannel string
	extendStep      func(domain.Request) time.Duration // what Extend adds to a machine
}

// homePart is one part of the Home view: its fixed blocks, then items (the newest
// first) for as long as they fit, then a note on how many did not.
type homePart struct {
	fixed []slack.Block
	items []homeItem
	empty string           // shown when there are no items
	more  func(int) string // the note on n items left out
}

// homeItem is one thing a part lists, in blocks; count is how many things it stands for.
type homeItem struct {
	blocks []slack.Block
	count  int
}

func (p homePart) need() int {
	n := len(p.fixed) + 1 // the empty line or the note
	for _, item := range p.items {
		n += len(item.blocks)
	}
	return n
}

// render shows the part in at most limit blocks.
func (p homePart) render(limit int) []slack.Block {
	out := slices.Clone(p.fixed)
	if len(p.items) == 0 {
		return append(out, contextLine(p.empty))
	}
	for i, item := range p.items {
		room := limit - len(out)
		if i < len(p.items)-1 {
			room-- // for the note, should a later item not fit
		}
		if len(item.blocks) > room {
			left := 0
			for _, rest := range p.items[i:] {
				left += rest.count
			}
			return append(out, contextLine(p.more(left)))
		}
		out = append(out, item.blocks...)
	}
	return out
}

// view is the whole Home tab: the person's own machines, then for approvers what waits
// for them, then for admins the fleet, within Slack's 100 blocks.
func (p homePage) view(d homeData) slack.HomeTabViewRequest {
	parts := []homePart{p.minePart(d)}
	if d.isApprover {
		parts = append(parts, p.waitingPart(d))
	}
	if d.isAdmin {
		parts = append(parts, p.fleetPart(d))
	}
	limits := shareBlocks(parts, maxHomeBlocks-(len(parts)-1)) // a divider between parts
	var blocks []slack.Block
	for i, part := range parts {
		if i > 0 {
			blocks = append(blocks, slack.NewDividerBlock())
		}
		blocks = append(blocks, part.render(limits[i])...)
	}
	return slack.HomeTabViewRequest{Type: slack.VTHomeTab, CallbackID: "gpubot_home", Blocks: slack.Blocks{BlockSet: blocks}}
}

// shareBlocks splits budget between parts: a part that needs less than an even share
// gets what it needs, and the rest is shared by the others.
func shareBlocks(parts []homePart, budget int) []int {
	order := make([]int, len(parts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return parts[order[a]].need() < parts[order[b]].need() })
	limits := make([]int, len(parts))
	for n, i := range order {
		limits[i] = min(parts[i].need(), budget/(len(parts)-n))
		budget -= limits[i]
	}
	return limits
}

func (p homePage) minePart(d homeData) homePart {
	part := homePart{
		fixed: []slack.Block{
			slack.NewHeaderBlock(plain("Your GPU machines")),
			slack.NewActionBlock("home_create", button(ActionHomeCreate, "create", "Request a GPU", slack.StylePrimary)),
			keySection(d.key),
		},
		empty: "You have no machines. *Request a GPU* above, or type `/gpu create 1x`.",
		more: func(n int) string {
			return fmt.Sprintf("…and %s; `/gpu list` shows them all.", countText(n, "more request", "more requests"))
		},
	}
	if d.mySpend != nil {
		part.fixed = append(part.fixed, spendSection("Your spend", d.mySpend))
	}
	for _, r := range newestFirst(d.mine) {
		part.items = append(part.items, homeItem{blocks: p.machineBlocks(r), count: 1})
	}
	return part
}

// keySection shows the person's SSH key with a button to set or replace it.
func keySection(key *domain.StoredKey) slack.Block {
	if key == nil {
		return slack.NewSectionBlock(mrkdwn(":key: You have no SSH key yet, so a machine would not let you in. Set your *public* key first."), nil,
			slack.NewAccessory(button(ActionHomeKey, "set", "Set key", slack.StylePrimary)))
	}
	text := fmt.Sprintf(":key: Your SSH key: %s `%s`, set %s.", key.Type, key.Fingerprint, slackDate(key.SetAt))
	return slack.NewSectionBlock(mrkdwn(text), nil, slack.NewAccessory(button(ActionHomeKey, "replace", "Replace key", slack.StyleDefault)))
}

// machineBlocks shows one of the person's requests with the buttons that apply to it.
func (p homePage) machineBlocks(r domain.Request) []slack.Block {
	lines := []string{
		fmt.Sprintf("*%s* · `%s`", describeMachine(r), shortID(r.ID)),
		statusLine(r, p.approvalChannel),
	}
	if r.State == domain.StateReady {
		left := FormatDuration(r.ExpiresAt.Sub(p.now)) + " left"
		if cost := p.prices.Cost(r.InstanceType, p.now.Sub(r.ReadyAt)); cost != "" {
			left += " · " + cost + " so far"
		}
		lines = append(lines, left)
	}
	lines = append(lines, ">"+reasonText(r))
	blocks := []slack.Block{section(strings.Join(lines, "\n"))}
	if buttons := p.machineButtons(r); len(buttons) > 0 {
		blocks = append(blocks, slack.NewActionBlock("machine_"+shortID(r.ID), buttons...))
	}
	return blocks
}

// machineButtons are the buttons of a request on its owner's Home: those of the
// thread root and the reminder, with the same ids and values.
func (p homePage) machineButtons(r domain.Request) []slack.BlockElement {
	switch r.State {
	case domain.StateAwaitingApproval:
		return []slack.BlockElement{button(ActionWithdraw, r.ID, "Withdraw request", slack.StyleDefault)}
	case domain.StateDeleting:
		return nil
	}
	var buttons []slack.BlockElement
	if step := p.extendStep(r); step >= time.Minute {
		buttons = append(buttons, button(ActionExtend, r.ID, "Extend "+FormatDuration(step), slack.StylePrimary))
	}
	// Slack asks to confirm before the click reaches gpubot, as /gpu delete asks.
	confirm := slack.NewConfirmationBlockObject(plain("Delete this machine?"),
		plain(fmt.Sprintf("Delete your %s %s? Everything on it is lost.", ShortType(r.InstanceType), instanceText(r.InstanceID))),
		plain("Delete"), plain("Keep it"))
	confirm.WithStyle(slack.StyleDanger)
	return append(buttons, button(ActionDeleteConfirm, r.ID, "Delete", slack.StyleDanger).WithConfirm(confirm))
}

func (p homePage) waitingPart(d homeData) homePart {
	part := homePart{
		fixed: []slack.Block{slack.NewHeaderBlock(plain("Waiting for your decision"))},
		empty: "Nothing waits for your decision.",
		more: func(n int) string {
			return fmt.Sprintf("…and %s; the cards are in <#%s>.", countText(n, "more request", "more requests"), p.approvalChannel)
		},
	}
	for _, r := range newestFirst(d.waiting) {
		part.items = append(part.items, homeItem{blocks: p.waitingBlocks(r, d.user), count: 1})
	}
	return part
}

// waitingBlocks shows a request waiting for approval as its card does, with the card's
// Approve and Deny buttons, unless this approver approved it already.
func (p homePage) waitingBlocks(r domain.Request, approver string) []slack.Block {
	lines := []string{
		fmt.Sprintf("*<@%s> asks for %s* · `%s`", r.UserID, describeMachine(r), shortID(r.ID)),
		">" + reasonText(r),
	}
	var facts []string
	if estimate := p.prices.Estimate(r.InstanceType, r.Lifetime); estimate != "" {
		facts = append(facts, "estimated "+estimate)
	}
	if len(r.Approvals) > 0 {
		facts = append(facts, progressText(r))
	}
	facts = append(facts, "asked "+FormatDuration(p.now.Sub(r.CreatedAt))+" ago")
	lines = append(lines, strings.Join(facts, " · "))
	blocks := []slack.Block{section(strings.Join(lines, "\n"))}
	if r.ApprovedBy(approver) {
		return append(blocks, contextLine(fmt.Sprintf("You approved it; it needs %s.", countText(approvalsNeeded(r)-len(r.Approvals), "more approval", "more approvals"))))
	}
	return append(blocks, slack.NewActionBlock("decision_"+shortID(r.ID),
		button(ActionApprove, r.ID, "Approve", slack.StylePrimary),
		button(ActionDeny, r.ID, "Deny", slack.StyleDanger)))
}

// homeFleetLines is how many machines one section of the fleet lists; each line is
// well under 150 characters, so a section stays within Slack's 3,000.
const homeFleetLines = 15

func (p homePage) fleetPart(d homeData) homePart {
	part := homePart{
		fixed: []slack.Block{slack.NewHeaderBlock(plain("Every machine")), section(p.fleetSummary(d.fleet))},
		empty: "Nobody has a machine right now.",
		more: func(n int) string {
			return fmt.Sprintf("…and %s; `/gpu list all` shows them all.", countText(n, "more machine", "more machines"))
		},
	}
	if d.allSpend != nil {
		part.fixed = append(part.fixed, spendSection("Everyone's spend", d.allSpend))
	}
	if len(d.orphans) > 0 {
		part.fixed = append(part.fixed, section(orphansText(d.orphans)))
	}
	lines := make([]string, 0, len(d.fleet))
	for _, r := range newestFirst(d.fleet) {
		lines = append(lines, listLine(r, p.now, p.prices, true))
	}
	for chunk := range slices.Chunk(lines, homeFleetLines) {
		part.items = append(part.items, homeItem{blocks: []slack.Block{section(strings.Join(chunk, "\n"))}, count: len(chunk)})
	}
	return part
}

// fleetSummary counts the live machines and what the ready ones cost so far.
func (p homePage) fleetSummary(fleet []domain.Request) string {
	ready, total := 0, 0.0
	for _, r := range fleet {
		if r.State != domain.StateReady {
			continue
		}
		ready++
		if price, ok := p.prices[r.InstanceType]; ok {
			total += price * p.now.Sub(r.ReadyAt).Hours()
		}
	}
	text := fmt.Sprintf("%s live, %d ready", countText(len(fleet), "request", "requests"), ready)
	if len(p.prices) > 0 {
		text += " · " + spend.USD(total) + " so far on the ready ones"
	}
	return text + "."
}

// maxHomeOrphans bounds the untracked instances listed, so the section stays within
// Slack's 3,000 characters.
const maxHomeOrphans = 20

// orphansText lists the instances fal shows that gpubot did not make.
func orphansText(orphans map[string]domain.OrphanSighting) string {
	ids := make([]string, 0, len(orphans))
	for id := range orphans {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		return cmp.Or(orphans[b].First.Compare(orphans[a].First), strings.Compare(a, b))
	})
	lines := []string{"*At fal, not made by gpubot* (delete them at fal if nobody needs them)"}
	for _, id := range ids[:min(len(ids), maxHomeOrphans)] {
		seen := orphans[id]
		line := fmt.Sprintf("`%s` listed since %s", shown(id, 64), slackDate(seen.First))
		if seen.Reported {
			line += " · admins told"
		}
		lines = append(lines, line)
	}
	if len(ids) > maxHomeOrphans {
		lines = append(lines, fmt.Sprintf("…and %d more.", len(ids)-maxHomeOrphans))
	}
	return strings.Join(lines, "\n")
}

// newestFirst orders requests by when they were made, the newest first.
func newestFirst(reqs []domain.Request) []domain.Request {
	out := slices.Clone(reqs)
	slices.SortStableFunc(out, func(a, b domain.Request) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(a.ID, b.ID))
	})
	return out
}

// homeClick handles the Home tab's own buttons: they open the create and key forms.
func (h *Handlers) homeClick(actionID, triggerID, user string) {
	switch actionID {
	case ActionHomeCreate:
		h.openView(triggerID, "", user, createModal(h.cfg.Policy))
	case ActionHomeKey:
		h.openView(triggerID, "", user, keyModal())
	}
}

// shortcut handles a global shortcut: "Request a GPU" opens the create form. With no
// channel to start the thread in, the request's thread lives in a DM with the requester.
func (h *Handlers) shortcut(cb slack.InteractionCallback) {
	if cb.CallbackID != ShortcutCreate || cb.User.ID == "" {
		return
	}
	h.openView(cb.TriggerID, "", cb.User.ID, createModal(h.cfg.Policy))
}
