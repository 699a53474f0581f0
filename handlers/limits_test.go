package handlers

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// Slack's limits on what a message may hold (docs.slack.dev, Block Kit reference).
const (
	slackMaxText        = 4000 // a message's text, beyond which Slack truncates it
	slackMaxSectionText = 3000 // a section's text, and any text object
	slackMaxField       = 2000 // one of a section's fields
	slackMaxBlocks      = 50
	slackMaxInput       = 3000 // the most a plain_text_input's max_length may be
)

// limitProblems lists where m breaks Slack's limits, measured on the text Slack gets
// (after escaping), in characters.
func limitProblems(m Message) []string {
	var problems []string
	check := func(what, text string, limit int) {
		if n := utf8.RuneCountInString(text); n > limit {
			problems = append(problems, fmt.Sprintf("%s has %d characters, over %d", what, n, limit))
		}
	}
	check("text", m.Text, slackMaxText)
	if len(m.Blocks) > slackMaxBlocks {
		problems = append(problems, fmt.Sprintf("%d blocks, over %d", len(m.Blocks), slackMaxBlocks))
	}
	for i, block := range m.Blocks {
		switch b := block.(type) {
		case *slack.SectionBlock:
			if b.Text != nil {
				check(fmt.Sprintf("block %d's text", i), b.Text.Text, slackMaxSectionText)
			}
			for j, field := range b.Fields {
				check(fmt.Sprintf("block %d's field %d", i, j), field.Text, slackMaxField)
			}
		case *slack.ContextBlock:
			for j, element := range b.ContextElements.Elements {
				if text, ok := element.(*slack.TextBlockObject); ok {
					check(fmt.Sprintf("block %d's element %d", i, j), text.Text, slackMaxSectionText)
				}
			}
		}
	}
	return problems
}

// worstRequest holds the longest text each field can get, made of the characters that
// grow most when escaped: a reason from before reasons were bounded, a deny reason of
// the most the deny form takes, an audit detail as long.
func worstRequest(state domain.State) domain.Request {
	r := goldenRequest(state)
	r.Reason = strings.Repeat("&", 3*maxReason)
	r.ApproverID = "UBOB"
	r.DecisionReason = strings.Repeat("<&>", maxDenyReason/3)
	return r
}

func TestEveryMessageStaysWithinSlackLimits(t *testing.T) {
	prices := spend.Prices{"gpu_8x_h100_sxm5": 20}
	var history []domain.AuditEvent
	for range maxHistory + 1 {
		history = append(history, domain.AuditEvent{At: goldenNow, Actor: "UBOB", Action: "denied", Detail: strings.Repeat("&", maxDenyReason)})
	}
	messages := map[string]Message{}
	worstApprovers := strings.Repeat("<!subteam^S0123456789>, ", 20)
	for _, state := range []domain.State{domain.StateAwaitingApproval, domain.StateProvisioning, domain.StateReady, domain.StateDenied, domain.StateExpired, domain.StateDeleted, domain.StateApprovalExpired} {
		r := worstRequest(state)
		r.ApprovalsNeeded = 10
		for i := range 9 {
			r.Approvals = append(r.Approvals, domain.Approval{UserID: fmt.Sprintf("U0APPROVER%02d", i)})
		}
		messages["root "+string(state)] = rootMessage(r, "CAPPROVALS")
		messages["card "+string(state)] = approvalCard(r, cardFacts{estimate: prices.Estimate(r.InstanceType, r.Lifetime), approvers: worstApprovers, expires: goldenNow})
		messages["reminder "+string(state)] = approvalReminder(r, worstApprovers, time.Hour, goldenNow)
		messages["status "+string(state)] = statusMessage(r, history, goldenNow, prices, "CAPPROVALS")
	}
	denied := worstRequest(domain.StateDenied)
	messages["denial reply"] = textMessage(denialText(denied))
	messages["too late"] = textMessage("Too late: " + decisionLine(denied) + ".")
	messages["decision DM, denied"] = decisionDM(denied, "https://example.slack.com/archives/CGENERAL/p1764493200000100")
	for name, m := range messages {
		for _, problem := range limitProblems(m) {
			t.Errorf("%s: %s", name, problem)
		}
	}
}

// Every text a person types into a form is bounded where it is typed, within what
// Slack allows an input.
func TestEveryFormInputIsBounded(t *testing.T) {
	p := NewPolicy(nil, nil, nil, 8*3600e9, 72*3600e9)
	for name, view := range map[string]slack.ModalViewRequest{
		"key": keyModal(), "create": createModal(p), "deny": denyModal(goldenRequest(domain.StateAwaitingApproval)),
	} {
		raw, err := json.Marshal(view.Blocks)
		if err != nil {
			t.Fatal(err)
		}
		var blocks []struct {
			BlockID string `json:"block_id"`
			Element *struct {
				Type      string `json:"type"`
				MaxLength int    `json:"max_length"`
			} `json:"element"`
		}
		if err := json.Unmarshal(raw, &blocks); err != nil {
			t.Fatal(err)
		}
		for _, b := range blocks {
			if b.Element != nil && b.Element.Type == "plain_text_input" && (b.Element.MaxLength < 1 || b.Element.MaxLength > slackMaxInput) {
				t.Errorf("%s form: input %q has max_length %d, want 1…%d", name, b.BlockID, b.Element.MaxLength, slackMaxInput)
			}
		}
	}
}

// The spend messages of a busy month, with every reason as long as it can be, stay
// within Slack's limits: lists are cut short with a count, and the CSV rows are spread
// over several messages.
func TestSpendMessagesStayWithinSlackLimits(t *testing.T) {
	prices := spend.Prices{"gpu_8x_h100_sxm5": 20, "gpu_1x_h100_sxm5": 2.5}
	march := spend.Month{Year: 2026, Month: time.March}
	now := time.Date(2026, 3, 20, 9, 0, 0, 0, time.UTC)
	var reqs []domain.Request
	for i := range 3000 {
		r := worstRequest(domain.StateReady)
		r.ID, r.UserID = fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), fmt.Sprintf("U%09d", i)
		r.ReadyAt, r.ExpiresAt = now.Add(-time.Duration(i)*time.Minute), now.Add(time.Hour)
		reqs = append(reqs, r)
		waiting := worstRequest(domain.StateAwaitingApproval)
		waiting.ID = fmt.Sprintf("%08d-1111-4000-8000-000000000000", i)
		reqs = append(reqs, waiting)
	}
	s := spend.Summarize(reqs, prices, march.Window(), now, spend.SoFar)
	messages := map[string]Message{
		"team report": teamReportMessage(march, s, s, now),
		"own report":  ownReportMessage(march, s, s, now),
		"budget": budgetMessage("U000000001", monthSpend{month: march, soFar: s, live: reqs},
			[]spend.Standing{{Limit: spend.Limit{Budget: 10}, Spent: 1e9}}, prices, now, true),
		"digest": digestMessage(digestFacts{period: march.Window(), now: now, spent: s, live: reqs, prices: prices}),
	}
	csv := csvMessages(march, s)
	if len(csv) != maxCSVMessages+1 || !strings.Contains(csv[maxCSVMessages].Text, "more rows that do not fit") {
		t.Errorf("%d CSV messages for 3,000 rows; want %d and a last one saying how many rows did not fit", len(csv), maxCSVMessages+1)
	}
	for i, m := range csv {
		messages[fmt.Sprintf("csv %d", i)] = m
	}
	for name, m := range messages {
		for _, problem := range limitProblems(m) {
			t.Errorf("%s: %s", name, problem)
		}
	}
}
