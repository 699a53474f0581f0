package handlers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// Budget enforcement modes (BUDGET_ENFORCEMENT): a request over budget needs an
// approver, or is refused.
const (
	EnforceApprove = "approve"
	EnforceRefuse  = "refuse"
)

// The extension card's buttons, for an extension over budget.
const (
	ActionExtendApprove = "gpubot_extend_approve"
	ActionExtendDeny    = "gpubot_extend_deny"
)

// monthSpend is what a set of people ran in a month, with what their running and
// waiting machines will have cost once they reach their expiry.
type monthSpend struct {
	month     spend.Month
	committed spend.Summary // running machines to their expiry, waiting ones for their lifetime
	soFar     spend.Summary // running machines to now
	live      []domain.Request
}

// spendOf reads what owners' machines ran in month, and the requests they have live.
// Only these people's records are decoded: it is cheap enough for a command's ack.
func (h *Handlers) spendOf(ctx context.Context, month spend.Month, owners []domain.UserRef) (monthSpend, error) {
	w := month.Window()
	ran, err := h.store.RanDuring(ctx, w.From, w.To, owners...)
	if err != nil {
		return monthSpend{}, fmt.Errorf("read the month's machines: %w", err)
	}
	unfinished, err := h.store.Unfinished(ctx)
	if err != nil {
		return monthSpend{}, fmt.Errorf("read live requests: %w", err)
	}
	var live []domain.Request
	for _, r := range unfinished {
		if slices.Contains(owners, r.Owner()) {
			live = append(live, r)
		}
	}
	all := append(ran, live...)
	now := h.now()
	return monthSpend{
		month:     month,
		committed: spend.Summarize(all, h.cfg.Prices, w, now, spend.Committed),
		soFar:     spend.Summarize(all, h.cfg.Prices, w, now, spend.SoFar),
		live:      live,
	}, nil
}

// budgetGroupsOf lists the user groups with a budget that user is in, as last read.
func (h *Handlers) budgetGroupsOf(user string) []string {
	var in []string
	for _, g := range h.cfg.Budgets.Groups() {
		if h.groups.has(g, user) {
			in = append(in, g)
		}
	}
	return in
}

// limitsOf is every budget owner is held to, and the people whose spend counts
// against them: owner, and the members of each group.
func (h *Handlers) limitsOf(owner domain.UserRef) ([]spend.Limit, []domain.UserRef) {
	limits := h.cfg.Budgets.LimitsFor(owner.UserID, h.budgetGroupsOf(owner.UserID))
	people := []domain.UserRef{owner}
	for _, l := range limits {
		for _, m := range h.groups.members(l.Group) {
			// Group members are known by user id; they work in the owner's workspace.
			if u := (domain.UserRef{TeamID: owner.TeamID, UserID: m}); !slices.Contains(people, u) {
				people = append(people, u)
			}
		}
	}
	return limits, people
}

// spentAgainst is what counts against limit: the owner's own spend, or the spend of
// every member of the limit's group.
func spentAgainst(s spend.Summary, owner string, members func(group string) []string) func(spend.Limit) float64 {
	return func(l spend.Limit) float64 {
		if l.Group == "" {
			return s.ByUser[owner].Cost
		}
		total := 0.0
		for _, m := range members(l.Group) {
			total += s.ByUser[m].Cost
		}
		return total
	}
}

// overBudget weighs running instanceType for d more against owner's budgets this
// month, running machines counted to their expiry. It returns the budgets that would
// be passed; none when no budget applies or the type has no price (nothing can be
// weighed then).
func (h *Handlers) overBudget(ctx context.Context, owner domain.UserRef, instanceType string, d time.Duration) ([]spend.Standing, error) {
	if !h.cfg.Budgets.Set() {
		return nil, nil
	}
	adds, priced := h.cfg.Prices.EstimateUSD(instanceType, d)
	if !priced {
		return nil, nil
	}
	limits, people := h.limitsOf(owner)
	if len(limits) == 0 {
		return nil, nil
	}
	ms, err := h.spendOf(ctx, spend.MonthOf(h.now()), people)
	if err != nil {
		return nil, err
	}
	return spend.Check(limits, spentAgainst(ms.committed, owner.UserID, h.groups.members), adds), nil
}

// overBudgetText gives the figures of the budgets a request would pass, for the card
// and for a refusal: "@alice has spent $1,850.00 of $2,000.00 this month; this adds
// $160.00". A group is named by its id: a mention would notify all its members.
func overBudgetText(owner string, over []spend.Standing) string {
	parts := make([]string, 0, len(over))
	for _, s := range over {
		who := fmt.Sprintf("<@%s> has", owner)
		if s.Group != "" {
			who = fmt.Sprintf("user group `%s` has", s.Group)
		}
		parts = append(parts, fmt.Sprintf("%s spent %s of %s this month", who, spend.USD(s.Spent), spend.USD(s.Budget)))
	}
	return strings.Join(parts, ", and ") + "; this adds " + spend.USD(over[0].Adds)
}

// overBudgetRefusal refuses a request or an extension over budget (BUDGET_ENFORCEMENT=refuse)
// with the figures and what the person can do.
func overBudgetRefusal(owner, what string, over []spend.Standing) error {
	return refusef(":no_entry: That %s would go over budget: %s (running machines counted to their expiry). "+
		"You can ask for less (a shorter lifetime with `for 2h`, or a 1x), delete a machine you no longer need (`/gpu list`), "+
		"or ask an admin to raise MONTHLY_BUDGETS. `/gpu budget` shows where you stand.", what, overBudgetText(owner, over))
}

// overBudgetLine is the approval card's line on why a request needs approval.
func overBudgetLine(note string) string { return ":money_with_wings: Over budget: " + note }

// How long a person's request waits for the weighing of their previous one, and how
// often it looks: two commands at once, a form submitted twice.
const (
	admitWait  = time.Second
	admitRetry = 5 * time.Millisecond
)

// admit holds the cap and budget checks of owner's request or extension until it is
// committed: requests of one person, or of members of one budgeted group, arriving at
// once are weighed one after the other (on every replica, through the store's claims),
// so together they never pass the cap or a budget. release must be called once the
// request or extension is committed or refused.
func (h *Handlers) admit(ctx context.Context, owner domain.UserRef) (release func(), err error) {
	if h.cfg.MaxMachines <= 0 && !h.cfg.Budgets.Set() {
		return func() {}, nil
	}
	keys := h.admitKeys(owner)
	deadline := time.NewTimer(admitWait)
	defer deadline.Stop()
	for {
		release, ok, err := h.claimAll(ctx, keys)
		if err != nil {
			return nil, fmt.Errorf("claim the checks of %s's request: %w", owner, err)
		}
		if ok {
			return release, nil
		}
		select {
		case <-deadline.C:
			return nil, refusef("I'm still weighing another request against the same budget; try again in a moment.")
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(admitRetry):
		}
	}
}

// admitKeys names what owner's request is weighed against: the owner, and each
// budgeted user group they are in.
func (h *Handlers) admitKeys(owner domain.UserRef) []string {
	keys := []string{"admit:" + owner.String()}
	for _, g := range h.budgetGroupsOf(owner.UserID) {
		keys = append(keys, "admit-group:"+owner.TeamID+"/"+g)
	}
	return keys
}

// claimAll claims every key or none: holding some while waiting for the rest could
// hold up another request that waits for those.
func (h *Handlers) claimAll(ctx context.Context, keys []string) (release func(), ok bool, err error) {
	var held []func()
	releaseAll := func() {
		for _, r := range slices.Backward(held) {
			r()
		}
	}
	for _, key := range keys {
		r, ok, err := h.store.ClaimWork(ctx, key)
		if err != nil || !ok {
			releaseAll()
			return nil, false, err
		}
		held = append(held, r)
	}
	return releaseAll, true, nil
}

// checkCap refuses a request that would give its owner more machines at once than
// MAX_MACHINES_PER_USER, listing the machines they hold.
func (h *Handlers) checkCap(ctx context.Context, owner domain.UserRef) error {
	if h.cfg.MaxMachines <= 0 {
		return nil
	}
	live, err := h.store.UnfinishedOf(ctx, owner)
	if err != nil {
		return fmt.Errorf("read %s's machines: %w", owner, err)
	}
	held := slices.DeleteFunc(live, func(r domain.Request) bool { return r.State == domain.StateDeleting })
	if len(held) < h.cfg.MaxMachines {
		return nil
	}
	return capRefusal(held, h.now(), h.cfg.Prices)
}

// capRefusal refuses a request past MAX_MACHINES_PER_USER, with the machines held.
func capRefusal(held []domain.Request, now time.Time, prices spend.Prices) error {
	lines := make([]string, 0, len(held))
	for _, r := range held {
		lines = append(lines, "• "+listLine(r, now, prices, false))
	}
	return refusef(":no_entry: You already hold %s, the most one person may at once (MAX_MACHINES_PER_USER):\n%s\nFree one with `/gpu delete <id>` (or `/gpu cancel <id>` for a request still waiting for approval), then ask again.",
		countText(len(held), "machine", "machines"), strings.Join(lines, "\n"))
}

// budget is `/gpu budget`: the caller's spend this month, their budgets, what is
// running and its cost so far, and what is left.
func (h *Handlers) budget(ctx context.Context, user domain.UserRef) *Reply {
	limits, people := h.limitsOf(user)
	ms, err := h.spendOf(ctx, spend.MonthOf(h.now()), people)
	if err != nil {
		h.log.Error("read spend for /gpu budget", "user", user.UserID, "err", err)
		return refusal(err)
	}
	standings := make([]spend.Standing, 0, len(limits))
	spent := spentAgainst(ms.committed, user.UserID, h.groups.members)
	for _, l := range limits {
		standings = append(standings, spend.Standing{Limit: l, Spent: spent(l)})
	}
	return reply(budgetMessage(user.UserID, ms, standings, h.cfg.Prices, h.now(), h.cfg.Enforcement == EnforceRefuse))
}

// budgetMessage is the answer to `/gpu budget`.
func budgetMessage(user string, ms monthSpend, standings []spend.Standing, prices spend.Prices, now time.Time, refuse bool) Message {
	mine := ms.soFar.ByUser[user]
	lines := []string{fmt.Sprintf("*Your GPU spend in %s*", ms.month.Name())}
	if len(prices) == 0 {
		lines = append(lines, "No hourly prices are set (HOURLY_PRICES), so I can't put a figure on spend, and no budget can be enforced.")
	}
	lines = append(lines, fmt.Sprintf("Spent so far: *%s* on %s, %s machine-hours%s.",
		spend.USD(mine.Cost), countText(mine.Machines, "machine", "machines"), hoursText(mine.Hours), unpricedText(mine.Unpriced)))
	var running []string
	for _, r := range ms.live {
		if r.UserID != user || r.State != domain.StateReady {
			continue
		}
		u := prices.Usage(r, spend.Always, now, spend.SoFar)
		line := fmt.Sprintf("• `%s` %s · running %s · %s left", shortID(r.ID), ShortType(r.InstanceType), FormatDuration(u.Duration()), FormatDuration(r.ExpiresAt.Sub(now)))
		if cost := prices.MachineCost(r, now); cost != "" {
			line += " · " + cost + " so far"
		}
		running = append(running, line)
	}
	if len(running) > 0 {
		lines = append(lines, "*Running now*\n"+strings.Join(running, "\n"))
	}
	if len(standings) == 0 {
		lines = append(lines, "No monthly budget applies to you (MONTHLY_BUDGETS).")
	}
	for _, s := range standings {
		lines = append(lines, standingText(s, refuse))
	}
	if len(standings) > 0 {
		lines = append(lines, "_Budgets count machines still running up to their expiry, so what is left is what remains if they run their full time._")
	}
	return chunked(lines[0], lines[1:])
}

// standingText is one budget's line in `/gpu budget`.
func standingText(s spend.Standing, refuse bool) string {
	whose := "Your budget"
	switch {
	case s.Group != "":
		whose = fmt.Sprintf("Budget of user group `%s` (its members together)", s.Group)
	case s.Default:
		whose = "Your budget (the default)"
	}
	left := s.Left()
	leftText := spend.USD(left) + " left"
	if left < 0 {
		consequence := "new requests and extensions need an approver"
		if refuse {
			consequence = "new requests and extensions with a price are refused"
		}
		leftText = fmt.Sprintf(":warning: over by %s: %s", spend.USD(-left), consequence)
	}
	return fmt.Sprintf("%s: %s of %s used (%.0f%%) · %s", whose, spend.USD(s.Spent), spend.USD(s.Budget), 100*s.Share(), leftText)
}

// hoursText shows machine-hours to one decimal.
func hoursText(h float64) string { return fmt.Sprintf("%.1f", h) }

// unpricedText notes machines whose type has no price, so their cost is missing.
func unpricedText(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%s without a price in HOURLY_PRICES, not in the cost)", countText(n, "machine", "machines"))
}

// extensionCard asks the approvers for an extension that would go over budget.
func extensionCard(r domain.Request, approvers string) Message {
	text := fmt.Sprintf("*Extension of `%s` needs approval*\n<@%s> asks to keep <@%s>'s %s `%s` for %s more.\n%s",
		shortID(r.ID), r.ExtensionAskedBy, r.UserID, ShortType(r.InstanceType), instanceText(r.InstanceID),
		FormatDuration(r.ExtensionAsked), overBudgetLine(r.ExtensionNote))
	blocks := []slack.Block{section(text), contextLine("Approvers: " + approvers),
		slack.NewActionBlock("extension",
			button(ActionExtendApprove, r.ID, "Approve extension", slack.StylePrimary),
			button(ActionExtendDeny, r.ID, "Deny", slack.StyleDanger))}
	return Message{Text: fmt.Sprintf("Extension of GPU request %s needs approval", shortID(r.ID)), Blocks: blocks}
}

// extensionDecidedCard is the extension card once decided: the facts, no buttons.
func extensionDecidedCard(r domain.Request, outcome string) Message {
	text := fmt.Sprintf("*Extension of `%s`*\n<@%s> asked to keep <@%s>'s %s `%s` for %s more.\n%s",
		shortID(r.ID), r.ExtensionAskedBy, r.UserID, ShortType(r.InstanceType), instanceText(r.InstanceID), FormatDuration(r.ExtensionAsked), overBudgetLine(r.ExtensionNote))
	return Message{Text: fmt.Sprintf("Extension of GPU request %s: %s", shortID(r.ID), outcome),
		Blocks: []slack.Block{section(text), contextLine(outcome)}}
}
