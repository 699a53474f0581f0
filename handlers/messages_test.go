package handlers

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// golden compares what people would see (the Block Kit JSON) with the reviewed copy.
func golden(t *testing.T, name string, v any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep <@U…> and & readable in review
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	got := buf.Bytes()
	path := filepath.Join("testdata", "golden", name+".json")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test ./handlers -update to create it): %v", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s changed; if that is intended, run go test ./handlers -update and review the diff.\ngot:\n%s", name, got)
	}
}

var goldenNow = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

func goldenRequest(state domain.State) domain.Request {
	r := domain.Request{
		ID: "3f2a9c1e-7b4d-4e2a-9c1e-7b4d4e2a9c1e", TeamID: "T1", UserID: "UALICE",
		ChannelID: "CGENERAL", ThreadTS: "1764493200.000100", CommandChannel: "CGENERAL",
		InstanceType: fal.Type8xH100, Sector: "sector_1", Reason: "fine-tune <llama> & friends",
		Lifetime: 4 * time.Hour, State: state, CreatedAt: goldenNow.Add(-time.Hour),
	}
	switch state {
	case domain.StateProvisioning:
		r.InstanceID, r.FalStatus = "inst_abc123", "provisioning"
	case domain.StateReady:
		r.InstanceID, r.FalStatus, r.IP = "inst_abc123", "ready", "203.0.113.42"
		r.ReadyAt, r.ExpiresAt = goldenNow.Add(-30*time.Minute), goldenNow.Add(210*time.Minute)
	case domain.StateDenied:
		r.ApproverID, r.DecisionReason = "UBOB", "no 8x budget left this week"
	case domain.StateExpired, domain.StateDeleted:
		r.InstanceID, r.IP = "inst_abc123", "203.0.113.42"
		r.ReadyAt, r.EndedAt = goldenNow.Add(-4*time.Hour), goldenNow
		r.EndReason = "by <@UALICE>"
		if state == domain.StateExpired {
			r.EndReason = endExpired
		}
	}
	return r
}

func TestGoldenMessages(t *testing.T) {
	p := NewPolicy([]string{"UBOB"}, []string{"UADMIN"}, []string{fal.Type8xH100}, 8*time.Hour, 72*time.Hour)
	prices := spend.Prices{fal.Type1xH100: 2.5, fal.Type8xH100: 20}
	for _, state := range []domain.State{domain.StateAwaitingApproval, domain.StateProvisioning, domain.StateReady, domain.StateDenied, domain.StateExpired, domain.StateDeleted} {
		golden(t, "root_"+string(state), rootMessage(goldenRequest(state), "CAPPROVALS"))
	}
	facts := cardFacts{estimate: prices.Estimate(fal.Type8xH100, 4*time.Hour), approvers: "<@UBOB>, <!subteam^S0GPUAPPROVE>", expires: goldenNow.Add(23 * time.Hour)}
	golden(t, "approval_card", approvalCard(goldenRequest(domain.StateAwaitingApproval), facts))
	approved := goldenRequest(domain.StateProvisioning)
	approved.ApproverID = "UBOB"
	golden(t, "approval_card_decided", approvalCard(approved, cardFacts{}))
	golden(t, "approval_card_one_of_two", approvalCard(halfApproved(), facts))
	golden(t, "root_one_of_two", rootMessage(halfApproved(), "CAPPROVALS"))
	twice := goldenRequest(domain.StateProvisioning)
	twice.ApprovalsNeeded, twice.ApproverID = 2, "UCAROL"
	twice.Approvals = []domain.Approval{{UserID: "UBOB"}, {UserID: "UCAROL"}}
	golden(t, "approval_card_approved_by_two", approvalCard(twice, cardFacts{}))
	golden(t, "decision_dm_approved", decisionDM(twice, "https://gpubot.slack.com/archives/CGENERAL/p1764493200000100"))
	golden(t, "decision_dm_denied", decisionDM(goldenRequest(domain.StateDenied), "https://gpubot.slack.com/archives/CGENERAL/p1764493200000100"))
	expired := goldenRequest(domain.StateApprovalExpired)
	expired.EndReason = "nobody decided within 1d"
	golden(t, "approval_card_expired", approvalCard(expired, cardFacts{}))
	golden(t, "root_approval_expired", rootMessage(expired, "CAPPROVALS"))
	withdrawn := goldenRequest(domain.StateCancelled)
	withdrawn.EndReason = "withdrawn by <@UALICE>"
	golden(t, "approval_card_withdrawn", approvalCard(withdrawn, cardFacts{}))
	golden(t, "approval_reminder", approvalReminder(halfApproved(), "<!subteam^S0GPUAPPROVE>", 2*time.Hour, goldenNow.Add(22*time.Hour)))
	golden(t, "ready_reply", readyReply(goldenRequest(domain.StateReady)))
	golden(t, "ready_notice", readyNotice(goldenRequest(domain.StateReady)))
	golden(t, "delete_confirm", deleteConfirmMessage(goldenRequest(domain.StateReady)))
	golden(t, "reminder", reminderMessage(goldenRequest(domain.StateReady), 8*time.Hour))
	golden(t, "help", helpMessage())
	golden(t, "list", listMessage([]domain.Request{goldenRequest(domain.StateReady), goldenRequest(domain.StateProvisioning)}, goldenNow, prices, true))
	history := []domain.AuditEvent{
		{At: goldenNow.Add(-time.Hour), Actor: "UALICE", Action: "requested", Detail: "gpu_8x_h100_sxm5 sector_1 for 4h0m0s"},
		{At: goldenNow.Add(-50 * time.Minute), Actor: "UBOB", Action: "approved"},
		{At: goldenNow.Add(-49 * time.Minute), Actor: "gpubot", Action: "provisioning", Detail: "inst_abc123"},
		{At: goldenNow.Add(-30 * time.Minute), Actor: "gpubot", Action: "ready", Detail: "203.0.113.42"},
	}
	golden(t, "status", statusMessage(goldenRequest(domain.StateReady), history, goldenNow, prices, "CAPPROVALS"))
	golden(t, "key_modal", keyModal())
	golden(t, "create_modal", createModal(p))
	golden(t, "deny_modal", denyModal(goldenRequest(domain.StateAwaitingApproval)))
	golden(t, "key_saved", keySavedMessage(domain.PublicKey{Type: "ssh-ed25519", Fingerprint: "SHA256:abc"}))
}

// halfApproved is a request that needs two approvals and has one, bob's.
func halfApproved() domain.Request {
	r := goldenRequest(domain.StateAwaitingApproval)
	r.ApprovalsNeeded = 2
	r.Approvals = []domain.Approval{{UserID: "UBOB", At: goldenNow.Add(-10 * time.Minute)}}
	return r
}

func TestListStaysWithinSlackLimits(t *testing.T) {
	reqs := make([]domain.Request, 3000)
	for i := range reqs {
		reqs[i] = goldenRequest(domain.StateReady)
	}
	m := listMessage(reqs, goldenNow, spend.Prices{}, true)
	if len(m.Blocks) > 50 {
		t.Fatalf("%d blocks, Slack allows 50", len(m.Blocks))
	}
	raw, _ := json.Marshal(m.Blocks)
	var sections []struct {
		Text *struct{ Text string } `json:"text"`
	}
	if err := json.Unmarshal(raw, &sections); err != nil {
		t.Fatal(err)
	}
	for _, s := range sections {
		if s.Text != nil && len(s.Text.Text) > 3000 {
			t.Fatalf("a section of %d characters; Slack allows 3,000", len(s.Text.Text))
		}
	}
}

func TestEscapeKeepsMentionsOut(t *testing.T) {
	r := goldenRequest(domain.StateAwaitingApproval)
	r.Reason = "<!channel> please <@UADMIN>"
	raw, _ := json.Marshal(rootMessage(r, "C1").Blocks)
	for _, bad := range []string{"<!channel>", "<@UADMIN>"} {
		if json.Valid(raw) && strings.Contains(string(raw), bad) {
			t.Fatalf("reason %q reached the message unescaped: %s", bad, raw)
		}
	}
}
