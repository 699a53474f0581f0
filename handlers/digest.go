package handlers

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// budgetWarnShare is the part of a budget past which the digest names the people (or
// groups) using it.
const budgetWarnShare = 0.8

// postDigest posts the spend digest of the period that ended last, once: the period is
// recorded in the store before the post, first-wins, so neither a second pass, a
// second replica nor a restart posts it again. After a time gpubot was not running, the
// period missed is posted once, marked late; the ones before it are not posted at all.
func (h *Handlers) postDigest(ctx context.Context) {
	every := h.cfg.ReportEvery
	if h.cfg.ReportChannel == "" || every.Off() {
		return
	}
	now := h.now()
	period := every.LastEnded(now)
	// Remembered for two periods: long after it stops being the last one ended.
	key := fmt.Sprintf("digest:%s:%d", h.cfg.ReportChannel, period.From.Unix())
	mark := func(ctx context.Context) (bool, error) { return h.store.MarkSeen(ctx, key, 2*every.Every+time.Hour) }
	err := doOnce(ctx, mark, func(ctx context.Context) { h.postDigestOf(ctx, period, now.Sub(period.To) > h.digestGrace()) })
	if err != nil {
		h.log.Error("record the digest's period; not posting it", "period_start", period.From, "err", err)
	}
}

// postDigestOf builds and posts the digest of period, recorded as due. A late digest
// with nothing to say is left out: on gpubot's first start, that is the period
// before it ran at all.
func (h *Handlers) postDigestOf(ctx context.Context, period spend.Window, late bool) {
	facts, err := h.digest(ctx, period, late)
	if err != nil {
		h.log.Error("build the spend digest", "period_start", period.From, "err", err)
		return
	}
	if late && facts.empty() {
		h.log.Info("spend digest left out: it is late and has nothing to say", "period_start", period.From)
		return
	}
	if _, err := h.slack.PostMessage(ctx, h.cfg.ReportChannel, "", digestMessage(facts)); err != nil {
		h.log.Error("post the spend digest", "channel", h.cfg.ReportChannel, "err", err)
		if cannotPost(err) {
			h.alertAdminsEvery(ctx, "report-channel", 24*time.Hour, fmt.Sprintf("I can't post the spend digest in <#%s> (Slack said: %v). Invite me there or fix REPORT_CHANNEL. (I say this at most once a day.)", h.cfg.ReportChannel, err))
		}
		return
	}
	h.log.Info("spend digest posted", "period_start", period.From, "late", late)
}

// digestGrace is how long after its period ends a digest still counts as on time: a
// couple of passes, and at most a minute (half a period for very short ones).
func (h *Handlers) digestGrace() time.Duration {
	return max(2*h.cfg.PollInterval, min(time.Minute, h.cfg.ReportEvery.Every/2))
}

// digest gathers what the digest says: the period's spend, what runs and waits now, and
// who is past budgetWarnShare of a budget this month.
func (h *Handlers) digest(ctx context.Context, period spend.Window, late bool) (digestFacts, error) {
	now := h.now()
	ran, err := h.store.RanDuring(ctx, period.From, period.To)
	if err != nil {
		return digestFacts{}, fmt.Errorf("read the period's machines: %w", err)
	}
	live, err := h.store.Unfinished(ctx)
	if err != nil {
		return digestFacts{}, fmt.Errorf("read live requests: %w", err)
	}
	month := spend.MonthOf(now)
	w := month.Window()
	monthRan, err := h.store.RanDuring(ctx, w.From, w.To)
	if err != nil {
		return digestFacts{}, fmt.Errorf("read the month's machines: %w", err)
	}
	committed := spend.Summarize(append(monthRan, live...), h.cfg.Prices, w, now, spend.Committed)
	return digestFacts{
		period: period, late: late, now: now,
		spent:   spend.Summarize(ran, h.cfg.Prices, period, now, spend.SoFar),
		live:    live,
		prices:  h.cfg.Prices,
		nearing: h.nearBudget(committed),
	}, nil
}

// nearBudget lists the budgets past budgetWarnShare this month, the fullest first.
func (h *Handlers) nearBudget(committed spend.Summary) []digestStanding {
	if !h.cfg.Budgets.Set() {
		return nil
	}
	var out []digestStanding
	seenGroups := map[string]bool{}
	for _, user := range slices.Sorted(maps.Keys(committed.ByUser)) {
		for _, l := range h.cfg.Budgets.LimitsFor(user, h.budgetGroupsOf(user)) {
			if l.Group != "" {
				if seenGroups[l.Group] {
					continue
				}
				seenGroups[l.Group] = true
			}
			s := spend.Standing{Limit: l, Spent: spentAgainst(committed, user, h.groups.members)(l)}
			if s.Share() >= budgetWarnShare {
				out = append(out, digestStanding{user: user, Standing: s})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b digestStanding) int { return cmp.Compare(b.Share(), a.Share()) })
	return out
}

// digestStanding is a budget nearly or wholly used: a person's own, or a group's.
type digestStanding struct {
	user string
	spend.Standing
}

type digestFacts struct {
	period  spend.Window
	late    bool
	now     time.Time
	spent   spend.Summary
	live    []domain.Request
	prices  spend.Prices
	nearing []digestStanding
}

// empty says the digest has nothing to say: no machine ran in its period, none runs or
// waits now, and no budget is nearly used.
func (f digestFacts) empty() bool {
	return f.spent.Total.Machines == 0 && len(f.live) == 0 && len(f.nearing) == 0
}

// digestMessage is the digest posted to REPORT_CHANNEL.
func digestMessage(f digestFacts) Message {
	title := fmt.Sprintf("*GPU spend digest: %s to %s UTC*", shortDate(f.period.From), shortDate(f.period.To))
	if f.late {
		title += "\n_Posted late: gpubot was not running when this period ended._"
	}
	lines := []string{totalsLine(f.spent.Total)}
	if f.spent.Total.Machines > 0 {
		lines = append(lines, "*By user*")
		lines = append(lines, rankedLines(spend.Ranking(f.spent.ByUser), func(k string) string { return "<@" + k + ">" }, f.spent.Total.Cost)...)
		lines = append(lines, "*By type*")
		lines = append(lines, rankedLines(spend.Ranking(f.spent.ByType), ShortType, f.spent.Total.Cost)...)
	}
	lines = append(lines, runningLines(f.live, f.prices, f.now)...)
	lines = append(lines, waitingLines(f.live, f.now)...)
	if len(f.nearing) > 0 {
		lines = append(lines, fmt.Sprintf("*Past %.0f%% of a budget this month* (running machines counted to their expiry)", 100*budgetWarnShare))
		for _, s := range f.nearing {
			who := "<@" + s.user + ">"
			if s.Group != "" {
				who = fmt.Sprintf("user group `%s`", s.Group)
			}
			lines = append(lines, fmt.Sprintf("• %s: %s of %s (%.0f%%)", who, spend.USD(s.Spent), spend.USD(s.Budget), 100*s.Share()))
		}
	}
	return chunked(title, lines)
}

// runningLines lists the machines running now, the oldest first: owner, age, time
// left and cost so far.
func runningLines(live []domain.Request, prices spend.Prices, now time.Time) []string {
	var ready []domain.Request
	for _, r := range live {
		if r.State == domain.StateReady {
			ready = append(ready, r)
		}
	}
	if len(ready) == 0 {
		return []string{"*Running now*: nothing."}
	}
	slices.SortStableFunc(ready, func(a, b domain.Request) int { return a.ReadyAt.Compare(b.ReadyAt) })
	lines := []string{fmt.Sprintf("*Running now*: %s, the oldest first", countText(len(ready), "machine", "machines"))}
	for i, r := range ready {
		if i == maxReportLines {
			lines = append(lines, fmt.Sprintf("…and %d more.", len(ready)-i))
			break
		}
		line := fmt.Sprintf("• <@%s> %s `%s` · running %s · %s left", r.UserID, ShortType(r.InstanceType), shortID(r.ID), FormatDuration(now.Sub(r.ReadyAt)), FormatDuration(r.ExpiresAt.Sub(now)))
		if cost := prices.MachineCost(r, now); cost != "" {
			line += " · " + cost + " so far"
		}
		lines = append(lines, line)
	}
	return lines
}

// waitingLines lists the requests waiting for an approver, the longest waiting first.
func waitingLines(live []domain.Request, now time.Time) []string {
	var waiting []string
	for _, r := range live {
		if r.State != domain.StateAwaitingApproval {
			continue
		}
		if len(waiting) == maxReportLines {
			waiting = append(waiting, "…and more.")
			break
		}
		waiting = append(waiting, fmt.Sprintf("• <@%s> %s `%s` · waiting %s", r.UserID, describeMachine(r), shortID(r.ID), FormatDuration(now.Sub(r.CreatedAt))))
	}
	if len(waiting) == 0 {
		return nil
	}
	return append([]string{"*Waiting for approval*"}, waiting...)
}
