package handlers

import (
	"context"
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// report is `/gpu report [csv] [YYYY-MM]`: a month's spend, the caller's own for a
// requester and everyone's for approvers and admins; the CSV rows for admins. Reading a
// whole month may take longer than an ack, so the ack says it is coming and the report
// follows as a message only the caller sees.
func (h *Handlers) report(ctx context.Context, user domain.UserRef, channel string, cmd Command) *Reply {
	month := cmd.Month
	if month == (spend.Month{}) {
		month = spend.MonthOf(h.now())
	}
	if month.Start().After(h.now()) {
		return refusal(refusef("%s has not begun, so nothing was spent in it yet. `/gpu report` shows this month.", month.Name()))
	}
	everyone := h.cfg.Policy.MaySeeAll(user.UserID) == nil
	if cmd.Verb == VerbReportCSV && !h.cfg.Policy.IsAdmin(user.UserID) {
		return refusal(refusef("Only admins can export the rows of every machine. `/gpu report %s` shows your own spend.", month))
	}
	h.spawn("report", func(ctx context.Context) {
		var messages []Message
		var err error
		if cmd.Verb == VerbReportCSV {
			messages, err = h.csvReport(ctx, month)
		} else {
			var m Message
			m, err = h.spendReport(ctx, user, month, everyone)
			messages = []Message{m}
		}
		if err != nil {
			h.log.Error("build report", "user", user.UserID, "month", month.String(), "err", err)
			messages = []Message{textMessage(userMessage(err))}
		}
		for _, m := range messages {
			h.tell(ctx, channel, user.UserID, m)
		}
	})
	what := "the spend report"
	if cmd.Verb == VerbReportCSV {
		what = "the CSV rows"
	}
	return textReply(fmt.Sprintf(":hourglass_flowing_sand: Working on %s for %s; it appears here in a moment.", what, month.Name()))
}

// monthSummaries reads what ran in month and in the month before, of owners (everyone
// when none), counted to now.
func (h *Handlers) monthSummaries(ctx context.Context, month spend.Month, owners ...domain.UserRef) (this, before spend.Summary, err error) {
	now := h.now()
	for i, m := range []spend.Month{month, month.Previous()} {
		w := m.Window()
		reqs, err := h.store.RanDuring(ctx, w.From, w.To, owners...)
		if err != nil {
			return spend.Summary{}, spend.Summary{}, fmt.Errorf("read the machines of %s: %w", m, err)
		}
		s := spend.Summarize(reqs, h.cfg.Prices, w, now, spend.SoFar)
		if i == 0 {
			this = s
		} else {
			before = s
		}
	}
	return this, before, nil
}

func (h *Handlers) spendReport(ctx context.Context, user domain.UserRef, month spend.Month, everyone bool) (Message, error) {
	var owners []domain.UserRef
	if !everyone {
		owners = []domain.UserRef{user}
	}
	this, before, err := h.monthSummaries(ctx, month, owners...)
	if err != nil {
		return Message{}, err
	}
	if everyone {
		return teamReportMessage(month, this, before, h.now()), nil
	}
	return ownReportMessage(month, this, before, h.now()), nil
}

// maxReportLines bounds the lines of each list in a report, so it stays one message.
const maxReportLines = 25

// teamReportMessage is everyone's spend in a month: totals, by user (the top spenders
// first) and by type, and the change from the month before.
func teamReportMessage(month spend.Month, this, before spend.Summary, now time.Time) Message {
	title := fmt.Sprintf("*GPU spend in %s%s*", month.Name(), soFarText(month, now))
	lines := []string{totalsLine(this.Total) + changeText(month, this.Total, before.Total)}
	if this.Total.Machines == 0 {
		lines = append(lines, "No machine ran this month.")
		return chunked(title, lines)
	}
	lines = append(lines, "*By user, the top spenders first*")
	lines = append(lines, rankedLines(spend.Ranking(this.ByUser), func(k string) string { return "<@" + k + ">" }, this.Total.Cost)...)
	lines = append(lines, "*By type*")
	lines = append(lines, rankedLines(spend.Ranking(this.ByType), ShortType, this.Total.Cost)...)
	return chunked(title, lines)
}

// ownReportMessage is a requester's own spend in a month, machine by machine.
func ownReportMessage(month spend.Month, this, before spend.Summary, now time.Time) Message {
	title := fmt.Sprintf("*Your GPU spend in %s%s*", month.Name(), soFarText(month, now))
	lines := []string{totalsLine(this.Total) + changeText(month, this.Total, before.Total)}
	if this.Total.Machines == 0 {
		lines = append(lines, "You ran no machine this month.")
	}
	for i, u := range this.Rows {
		if i == maxReportLines {
			lines = append(lines, fmt.Sprintf("…and %d more machines.", len(this.Rows)-i))
			break
		}
		lines = append(lines, "• "+usageLine(u))
	}
	return chunked(title, lines)
}

// soFarText marks a report of the month still running.
func soFarText(month spend.Month, now time.Time) string {
	if spend.MonthOf(now) == month {
		return " (so far)"
	}
	return ""
}

// totalsLine is "Total: $1,234.00 · 12 machines · 345.5 machine-hours".
func totalsLine(t spend.Totals) string {
	return fmt.Sprintf("Total: *%s* · %s · %s machine-hours%s", spend.USD(t.Cost), countText(t.Machines, "machine", "machines"), hoursText(t.Hours), unpricedText(t.Unpriced))
}

// changeText compares a month's cost with the month before.
func changeText(month spend.Month, this, before spend.Totals) string {
	prev := month.Previous().Name()
	switch {
	case before.Cost == 0 && this.Cost == 0:
		return fmt.Sprintf(" · nothing spent in %s either", prev)
	case before.Cost == 0:
		return fmt.Sprintf(" · nothing was spent in %s", prev)
	}
	change := 100 * (this.Cost - before.Cost) / before.Cost
	return fmt.Sprintf(" · %s in %s (%+.0f%%)", spend.USD(before.Cost), prev, change)
}

// rankedLines lists totals, the largest first, with their share of the whole.
func rankedLines(ranked []spend.Ranked, name func(string) string, total float64) []string {
	lines := make([]string, 0, min(len(ranked), maxReportLines)+1)
	for i, r := range ranked {
		if i == maxReportLines {
			lines = append(lines, fmt.Sprintf("…and %d more.", len(ranked)-i))
			break
		}
		share := ""
		if total > 0 {
			share = fmt.Sprintf(" (%.0f%%)", 100*r.Cost/total)
		}
		lines = append(lines, fmt.Sprintf("%d. %s: %s%s · %s · %s h", i+1, name(r.Key), spend.USD(r.Cost), share,
			countText(r.Machines, "machine", "machines"), hoursText(r.Hours)))
	}
	return lines
}

// usageLine is one machine in a report: which, when it ran in the window, for how long,
// and what it cost.
func usageLine(u spend.Usage) string {
	r := u.Request
	line := fmt.Sprintf("`%s` %s · %s to %s · %s h", shortID(r.ID), ShortType(r.InstanceType), shortDate(u.From), shortDate(u.To), hoursText(u.Hours))
	if u.StillRuns {
		line += " · still running"
	}
	if !u.Unpriced {
		line += " · " + spend.USD(u.Cost)
	}
	if r.Reason != "" {
		line += " · " + shown(r.Reason, 80)
	}
	return line
}

// shortDate is a UTC time to the minute, as reports and CSV rows show it.
func shortDate(t time.Time) string { return t.UTC().Format("Jan 2 15:04") }

// CSV export limits: a message's section holds 3,000 characters, and the rows of a
// busy month are sent as several messages rather than one cut short.
const (
	maxCSVChunk    = 2800
	maxCSVMessages = 40
	maxCSVReason   = 700 // escaped; a reason made since reasons were bounded is shorter
)

// csvHeader names the columns of `/gpu report csv`.
var csvHeader = []string{"request", "owner", "type", "sector", "ready", "end", "hours", "cost_usd", "reason"}

func (h *Handlers) csvReport(ctx context.Context, month spend.Month) ([]Message, error) {
	w := month.Window()
	reqs, err := h.store.RanDuring(ctx, w.From, w.To)
	if err != nil {
		return nil, fmt.Errorf("read the machines of %s: %w", month, err)
	}
	return csvMessages(month, spend.Summarize(reqs, h.cfg.Prices, w, h.now(), spend.SoFar)), nil
}

// csvRows are the rows of a month, one per machine: its hours and cost within the
// month; ready and end are the machine's own (end empty while it runs).
func csvRows(s spend.Summary) [][]string {
	rows := make([][]string, 0, len(s.Rows))
	for _, u := range s.Rows {
		r := u.Request
		end, cost := "", ""
		if !u.StillRuns {
			end = r.EndedAt.UTC().Format(time.RFC3339)
		}
		if !u.Unpriced {
			cost = strconv.FormatFloat(u.Cost, 'f', 2, 64)
		}
		// The reason is clipped so that a row, escaped and with its quotes doubled, fits one part.
		reason := unescapeSlack(shown(r.Reason, maxCSVReason))
		rows = append(rows, []string{r.ID, r.UserID, r.InstanceType, r.Sector, r.ReadyAt.UTC().Format(time.RFC3339), end,
			strconv.FormatFloat(u.Hours, 'f', 2, 64), cost, reason})
	}
	return rows
}

// csvMessages packs a month's rows into code blocks to copy into a spreadsheet, as
// few messages as they need: the header goes first, and a row is never split.
func csvMessages(month spend.Month, s spend.Summary) []Message {
	rows := csvRows(s)
	lines := make([]string, 0, len(rows)+1)
	for _, row := range append([][]string{csvHeader}, rows...) {
		lines = append(lines, csvLine(row))
	}
	var chunks []string
	var b strings.Builder
	for _, line := range lines {
		if b.Len() > 0 && b.Len()+len(line) > maxCSVChunk {
			chunks = append(chunks, b.String())
			b.Reset()
		}
		b.WriteString(line)
	}
	chunks = append(chunks, b.String())
	left := 0
	if len(chunks) > maxCSVMessages {
		for _, c := range chunks[maxCSVMessages:] {
			left += strings.Count(c, "\n")
		}
		chunks = chunks[:maxCSVMessages]
	}
	messages := make([]Message, 0, len(chunks)+1)
	for i, c := range chunks {
		head := fmt.Sprintf("*CSV of GPU machines in %s*: %s; part %d of %d. Copy the block into a spreadsheet.", month.Name(), countText(len(rows), "row", "rows"), i+1, len(chunks))
		messages = append(messages, Message{Text: fmt.Sprintf("GPU spend CSV for %s, part %d", month, i+1),
			Blocks: []slack.Block{section(head), section("```" + c + "```")}})
	}
	if left > 0 {
		messages = append(messages, textMessage(fmt.Sprintf("…and %d more rows that do not fit in %d messages.", left, maxCSVMessages)))
	}
	return messages
}

// csvLine is one CSV record with its line break, made safe to show in a code block:
// Slack's entities escaped and backticks that would end the block replaced.
func csvLine(fields []string) string {
	var b strings.Builder
	w := csv.NewWriter(&b)
	_ = w.Write(fields) // writing to a strings.Builder cannot fail
	w.Flush()
	return escape(strings.ReplaceAll(b.String(), "`", "'"))
}
