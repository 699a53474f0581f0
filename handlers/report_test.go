package handlers

import (
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// toldTo returns what gpubot showed user alone (ephemeral) in the command's channel.
func (e *env) toldTo(user string) []string {
	var out []string
	for _, p := range e.slack.all() {
		if p.channel == "CGENERAL" && p.thread == "ephemeral:"+user {
			out = append(out, p.text)
		}
	}
	return out
}

// A requester sees their own spend; approvers and admins see everyone's, by user and by
// type, with the month before; only admins get the CSV rows.
func TestReportForEachRole(t *testing.T) {
	e := newSpendEnv(t, func(*Config) {})
	now := e.clock.Now()                                                                                      // 2026-03-02 09:00 UTC
	e.pastMachine(testOwner, fal.Type8xH100, now.Add(-30*time.Hour), 2*time.Hour, true)                       // March: $40
	e.pastMachine("UCAROL", fal.Type1xH100, now.Add(-30*time.Hour), 4*time.Hour, true)                        // March: $10
	e.pastMachine(testOwner, fal.Type1xH100, now.AddDate(0, 0, -10), 8*time.Hour, true)                       // February: $20
	e.pastMachine("UCAROL", fal.Type1xH100, time.Date(2026, 2, 28, 22, 0, 0, 0, time.UTC), 4*time.Hour, true) // 2h each month

	ack := e.command(testOwner, "report")
	if ack.Outcome != OutcomeOK || !strings.Contains(ack.Text, "Working on the spend report for March 2026") {
		t.Fatalf("ack %q", ack.Text)
	}
	own := e.toldTo(testOwner)
	if len(own) != 1 || !strings.Contains(own[0], "*Your GPU spend in March 2026 (so far)*") ||
		!strings.Contains(own[0], "Total: *$40.00* · 1 machine · 2.0 machine-hours · $20.00 in February 2026 (+100%)") ||
		strings.Contains(own[0], "UCAROL") {
		t.Fatalf("alice's report: %q", own)
	}

	e.command("UBOB", "report")
	team := e.toldTo("UBOB")
	if len(team) != 1 || !strings.Contains(team[0], "Total: *$55.00* · 3 machines") ||
		!strings.Contains(team[0], "1. <@UALICE>: $40.00 (73%)") || !strings.Contains(team[0], "2. <@UCAROL>: $15.00 (27%)") ||
		!strings.Contains(team[0], "*By type*") {
		t.Fatalf("the approver's report: %q", team)
	}

	e.command(testOwner, "report 2026-02")
	if feb := e.toldTo(testOwner); len(feb) != 2 || !strings.Contains(feb[1], "Your GPU spend in February 2026*") || !strings.Contains(feb[1], "$20.00") {
		t.Fatalf("alice's February: %q", feb)
	}

	if refused := e.command(testOwner, "report csv"); refused.Outcome != OutcomeRefused || !strings.Contains(refused.Text, "Only admins can export") {
		t.Fatalf("a requester asked for the CSV: %q", refused.Text)
	}
	if refused := e.command("UBOB", "report csv"); refused.Outcome != OutcomeRefused {
		t.Fatalf("an approver got the CSV: %q", refused.Text)
	}
	e.command(testAdmin, "report csv 2026-03")
	csv := e.toldTo(testAdmin)
	if len(csv) != 1 || !strings.Contains(csv[0], "request,owner,type,sector,ready,end,hours,cost_usd,reason\n") ||
		strings.Count(csv[0], ",earlier work\n") != 3 || !strings.Contains(csv[0], ",UCAROL,gpu_1x_h100_sxm5,,2026-02-28T22:00:00Z,2026-03-01T02:00:00Z,2.00,5.00,earlier work") {
		t.Fatalf("CSV: %q", csv)
	}

	for text, want := range map[string]string{
		"report 2026-04": "April 2026 has not begun",
		"report march":   "`march` is not a month I understand: write it YYYY-MM",
		"report csv 1 2": "Too many words after `/gpu report`",
		"budget extra":   "nothing goes after it",
	} {
		if got := e.command(testOwner, text); got.Outcome != OutcomeRefused || !strings.Contains(got.Text, want) {
			t.Errorf("/gpu %s: %q, want a refusal saying %q", text, got.Text, want)
		}
	}
}

func TestBudgetCommandShowsWhereTheCallerStands(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) { c.Budgets = spend.NewBudgets(map[string]float64{testOwner: 100}) })
	now := e.clock.Now()
	e.pastMachine(testOwner, fal.Type8xH100, now.Add(-30*time.Hour), 2*time.Hour, true) // $40
	r := e.readyMachine()                                                               // 1x, 2h: $5 to its expiry
	e.clock.Advance(30 * time.Minute)
	got := e.command(testOwner, "budget")
	text := messageText(Message{Text: got.Text, Blocks: got.Blocks})
	for _, want := range []string{
		"Spent so far: *$41.25* on 2 machines, 2.5 machine-hours.",
		"`" + shortID(r.ID) + "` 1x H100 · running 30m · 1h30m left · $1.25 so far",
		"Your budget: $45.00 of $100.00 used (45%) · $55.00 left",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/gpu budget lacks %q:\n%s", want, text)
		}
	}
	if got := e.command("UCAROL", "budget"); !strings.Contains(messageText(Message{Blocks: got.Blocks}), "No monthly budget applies to you") {
		t.Errorf("carol, without a budget: %q", got.Text)
	}
}

// The digest of each period is posted once: at the boundary, never again on later passes
// or after a restart, and a period missed while gpubot was down is posted once, late.
func TestDigestPostedOncePerPeriod(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) {
		c.ReportChannel, c.ReportEvery, c.PollInterval = "CSPEND", spend.Every(10*time.Second), time.Second
	})
	digests := func() []string { return e.slack.said("CSPEND", "GPU spend digest") }
	pass := func() {
		t.Helper()
		if err := e.tick(); err != nil {
			t.Fatal(err)
		}
	}
	pass() // 09:00:00 ends the period [08:59:50, 09:00:00)
	if got := digests(); len(got) != 1 || !strings.Contains(got[0], "Mar 2 08:59 to Mar 2 09:00 UTC") || strings.Contains(got[0], "late") {
		t.Fatalf("at the boundary: %q", got)
	}
	pass()
	e.clock.Advance(9 * time.Second)
	pass()
	if n := len(digests()); n != 1 {
		t.Fatalf("%d digests within one period", n)
	}
	r := e.readyMachine() // ready at 09:00:09, seen by the next digest
	e.clock.Advance(time.Second)
	pass()
	got := digests()
	if len(got) != 2 || !strings.Contains(got[1], "*Running now*: 1 machine") || !strings.Contains(got[1], "`"+shortID(r.ID)+"`") {
		t.Fatalf("at the next boundary: %q", got)
	}
	e.restart()
	pass()
	if n := len(digests()); n != 2 {
		t.Fatalf("a restart posted the period again: %d digests", n)
	}
	e.close() // down across three boundaries
	e.clock.Advance(37 * time.Second)
	e.open()
	pass()
	pass()
	got = digests()
	if len(got) != 3 || !strings.Contains(got[2], "_Posted late: gpubot was not running when this period ended._") {
		t.Fatalf("after the missed periods: %d digests, the last %q", len(got), got[len(got)-1])
	}
}

// gpubot started for the first time long after a period ended has nothing to say of
// it: that late digest is left out, and stays out once there is something to say.
// The next period's digest is posted as usual.
func TestFirstStartPostsNoEmptyLateDigest(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) { c.ReportChannel, c.ReportEvery = "CSPEND", spend.Daily })
	digests := func() []string { return e.slack.said("CSPEND", "GPU spend digest") }
	e.clock.Advance(time.Hour)       // 10:00: the last day's period ended at 09:00
	if err := e.tick(); err != nil { // the first pass of a new gpubot
		t.Fatal(err)
	}
	e.readyMachine()
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	if got := digests(); len(got) != 0 {
		t.Fatalf("a first start posted %d digests of a period before it ran: %q", len(got), got)
	}
	e.clock.Advance(23 * time.Hour) // 09:00 the next day: today's period ends
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	if got := digests(); len(got) != 1 || strings.Contains(got[0], "late") || !strings.Contains(got[0], "*Running now*: 1 machine") {
		t.Fatalf("at the next boundary: %q", got)
	}
}

func TestDigestNamesWhoIsPastMostOfABudget(t *testing.T) {
	e := newSpendEnv(t, func(c *Config) {
		c.ReportChannel, c.ReportEvery = "CSPEND", spend.Daily
		c.Budgets = spend.NewBudgets(map[string]float64{"default": 50})
	})
	now := e.clock.Now()
	e.pastMachine(testOwner, fal.Type8xH100, now.Add(-20*time.Hour), 2*time.Hour, true) // $40 of $50
	e.pastMachine("UCAROL", fal.Type1xH100, now.Add(-20*time.Hour), 2*time.Hour, true)  // $5 of $50
	e.command("UCAROL", "create 8x for 1h")
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	got := e.slack.said("CSPEND", "GPU spend digest")
	if len(got) != 1 || !strings.Contains(got[0], "• <@UALICE>: $40.00 of $50.00 (80%)") || strings.Contains(got[0], "<@UCAROL>: $25.00 of") ||
		!strings.Contains(got[0], "*Waiting for approval*\n• <@UCAROL> 8x H100 · 1h") {
		t.Fatalf("digest %q", got)
	}
}

func TestGoldenSpendMessages(t *testing.T) {
	march := spend.Month{Year: 2026, Month: time.March}
	now := time.Date(2026, 3, 20, 9, 0, 0, 0, time.UTC)
	prices := spend.Prices{fal.Type1xH100: 2.5, fal.Type8xH100: 20}
	ran := goldenRequest(domain.StateDeleted)
	ran.ReadyAt, ran.EndedAt = time.Date(2026, 3, 3, 10, 0, 0, 0, time.UTC), time.Date(2026, 3, 3, 14, 0, 0, 0, time.UTC)
	running := goldenRequest(domain.StateReady)
	running.ID, running.UserID, running.InstanceType, running.Sector = "9b1c2d3e-0000-4000-8000-000000000001", "UCAROL", fal.Type1xH100, ""
	running.ReadyAt, running.ExpiresAt = now.Add(-3*time.Hour), now.Add(5*time.Hour)
	waiting := goldenRequest(domain.StateAwaitingApproval)
	waiting.ID, waiting.UserID, waiting.CreatedAt = "5d6e7f80-0000-4000-8000-000000000002", "UDAVE", now.Add(-2*time.Hour)
	feb := goldenRequest(domain.StateDeleted)
	feb.ID, feb.ReadyAt, feb.EndedAt = "0a0b0c0d-0000-4000-8000-000000000003", time.Date(2026, 2, 3, 10, 0, 0, 0, time.UTC), time.Date(2026, 2, 3, 12, 0, 0, 0, time.UTC)

	this := spend.Summarize([]domain.Request{ran, running}, prices, march.Window(), now, spend.SoFar)
	before := spend.Summarize([]domain.Request{feb}, prices, march.Previous().Window(), now, spend.SoFar)
	golden(t, "report_team", teamReportMessage(march, this, before, now))
	mine := spend.Summarize([]domain.Request{ran}, prices, march.Window(), now, spend.SoFar)
	golden(t, "report_own", ownReportMessage(march, mine, before, now))
	golden(t, "report_csv", csvMessages(march, this))

	ms := monthSpend{month: march, soFar: this, live: []domain.Request{running}}
	golden(t, "budget", budgetMessage("UCAROL", ms, []spend.Standing{
		{Limit: spend.Limit{Budget: 500, Default: true}, Spent: 20},
		{Limit: spend.Limit{Group: "S0MLTEAM", Budget: 1000}, Spent: 1060},
	}, prices, now, false))

	week := spend.Window{From: time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), To: time.Date(2026, 3, 9, 9, 0, 0, 0, time.UTC)}
	facts := digestFacts{period: week, now: now, prices: prices, live: []domain.Request{waiting, running},
		spent:   spend.Summarize([]domain.Request{ran, running}, prices, week, now, spend.SoFar),
		nearing: []digestStanding{{user: "UALICE", Standing: spend.Standing{Limit: spend.Limit{Budget: 100}, Spent: 95}}}}
	golden(t, "digest", digestMessage(facts))
	facts.late = true
	golden(t, "digest_late", digestMessage(facts))

	over := goldenRequest(domain.StateAwaitingApproval)
	over.OverBudget = "<@UALICE> has spent $1,850.00 of $2,000.00 this month; this adds $80.00"
	golden(t, "approval_card_over_budget", approvalCard(over, cardFacts{estimate: prices.Estimate(fal.Type8xH100, 4*time.Hour), approvers: "<@UBOB>", expires: goldenNow.Add(23 * time.Hour)}))
	ext := goldenRequest(domain.StateReady)
	ext.ExtensionAsked, ext.ExtensionAskedBy, ext.ExtensionNote = 4*time.Hour, "UALICE", over.OverBudget
	golden(t, "extension_card", extensionCard(ext, "<@UBOB>"))
	golden(t, "over_budget_refusal", textMessage(userMessage(overBudgetRefusal("UALICE", "request", []spend.Standing{
		{Limit: spend.Limit{Budget: 2000}, Spent: 1850, Adds: 160},
		{Limit: spend.Limit{Group: "S0MLTEAM", Budget: 10000}, Spent: 9900, Adds: 160},
	}))))
	golden(t, "cap_refusal", textMessage(userMessage(capRefusal([]domain.Request{goldenRequest(domain.StateReady), goldenRequest(domain.StateAwaitingApproval)}, goldenNow, prices))))
	golden(t, "extension_card_decided", extensionDecidedCard(ext, ":white_check_mark: Approved by <@UBOB>"))
}
