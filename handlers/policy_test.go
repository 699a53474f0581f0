package handlers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/spend"
)

func TestPolicy(t *testing.T) {
	p := NewPolicy([]string{"UBOB", "UCAROL"}, []string{"UADMIN"}, []string{fal.Type8xH100}, 8*time.Hour, 72*time.Hour)
	refusedWith := func(err error, words string) bool {
		var ue *UserError
		return errors.As(err, &ue) && strings.Contains(ue.Message, words)
	}
	tests := []struct {
		name  string
		err   error
		words string // "" when allowed
	}{
		{"approver decides another's request", p.MayDecide("UBOB", "UALICE"), ""},
		{"approver decides own request", p.MayDecide("UBOB", "UBOB"), "<@UCAROL>"},
		{"requester decides", p.MayDecide("UALICE", "UALICE"), "Only approvers"},
		{"admin decides", p.MayDecide("UADMIN", "UALICE"), "Only approvers"},
		{"owner manages", p.MayManage("UALICE", "UALICE"), ""},
		{"admin manages", p.MayManage("UADMIN", "UALICE"), ""},
		{"approver manages", p.MayManage("UBOB", "UALICE"), "belongs to <@UALICE>"},
		{"approver sees", p.MaySee("UBOB", "UALICE"), ""},
		{"stranger sees", p.MaySee("UMALLORY", "UALICE"), "can't show it to you"},
		{"stranger lists all", p.MaySeeAll("UMALLORY"), "Only admins and approvers"},
		{"admin lists all", p.MaySeeAll("UADMIN"), ""},
		{"requester withdraws", p.MayWithdraw("UALICE", "UALICE"), ""},
		{"approver withdraws", p.MayWithdraw("UBOB", "UALICE"), "Approvers decide on it with the card's buttons"},
		{"admin withdraws", p.MayWithdraw("UADMIN", "UALICE"), "As an admin you can end it with `/gpu delete <id>`"},
	}
	for _, tt := range tests {
		if tt.words == "" && tt.err != nil {
			t.Errorf("%s: refused: %v", tt.name, tt.err)
		}
		if tt.words != "" && !refusedWith(tt.err, tt.words) {
			t.Errorf("%s: got %v, want a refusal saying %q", tt.name, tt.err, tt.words)
		}
	}
	if !p.NeedsApproval(fal.Type8xH100) || p.NeedsApproval(fal.Type1xH100) {
		t.Error("only 8x should need approval")
	}
	if d, err := p.Lifetime(0); err != nil || d != 8*time.Hour {
		t.Errorf("no lifetime asked: %v, %v; want the default", d, err)
	}
	if d, err := p.Lifetime(72 * time.Hour); err != nil || d != 72*time.Hour {
		t.Errorf("the maximum: %v, %v", d, err)
	}
	if _, err := p.Lifetime(73 * time.Hour); !refusedWith(err, "The longest lifetime is 3d") {
		t.Errorf("past the maximum: %v", err)
	}
	if p.ApprovalsNeeded(fal.Type8xH100) != 1 || p.WithApprovalsNeeded(map[string]int{fal.Type8xH100: 2}).ApprovalsNeeded(fal.Type8xH100) != 2 {
		t.Error("a type needs 1 approval unless APPROVALS_NEEDED says more")
	}
	lone := NewPolicy([]string{"UBOB"}, nil, nil, time.Hour, time.Hour)
	if err := lone.MayDecide("UBOB", "UBOB"); !refusedWith(err, "there is no other approver") {
		t.Errorf("the only approver deciding their own request: %v", err)
	}
}

// A user group stands for its members as last read: members approve (never their own
// request), non-members do not, and a group never read has nobody in it.
func TestPolicyWithUserGroups(t *testing.T) {
	p := NewPolicy([]string{"S0APPROVE"}, []string{"UADMIN", "S0ADMIN"}, []string{fal.Type8xH100}, time.Hour, time.Hour)
	if p.IsApprover("UDAVE") || p.IsAdmin("UERIN") {
		t.Fatal("a group never read counts people in it")
	}
	p.groups = newGroupCache()
	p.groups.set("S0APPROVE", []string{"UDAVE", "UALICE"}, goldenNow)
	p.groups.set("S0ADMIN", []string{"UERIN"}, goldenNow)
	refusedWith := func(err error, words string) bool {
		var ue *UserError
		return errors.As(err, &ue) && strings.Contains(ue.Message, words)
	}
	if err := p.MayDecide("UDAVE", "UALICE"); err != nil {
		t.Errorf("a group member deciding: %v", err)
	}
	if err := p.MayDecide("UMALLORY", "UALICE"); !refusedWith(err, "<!subteam^S0APPROVE>") {
		t.Errorf("a non-member deciding: %v; want a refusal mentioning the group", err)
	}
	if err := p.MayDecide("UALICE", "UALICE"); !refusedWith(err, "You can't decide on your own request: another approver has to. Ask one of them (<!subteam^S0APPROVE>)") {
		t.Errorf("the requester, a group member, deciding their own: %v", err)
	}
	if !p.IsAdmin("UERIN") || !p.IsAdmin("UADMIN") || p.IsAdmin("UDAVE") {
		t.Error("admins: want the named admin and the admin group's member only")
	}
	if got := p.AdminUsers(); strings.Join(got, ",") != "UADMIN,UERIN" {
		t.Errorf("AdminUsers = %v, want UADMIN and UERIN", got)
	}
	p.groups.set("S0APPROVE", nil, goldenNow) // Slack refused to list it
	if p.IsApprover("UDAVE") {
		t.Error("a group Slack refused to list still counts its old members")
	}
}

func TestPricesCostAndEstimate(t *testing.T) {
	prices := spend.Prices{fal.Type8xH100: 20}
	if got := prices.Cost(fal.Type8xH100, 90*time.Minute); got != "$30.00" {
		t.Errorf("Cost = %q", got)
	}
	if got := prices.Cost(fal.Type1xH100, time.Hour); got != "" {
		t.Errorf("Cost without a price = %q, want none", got)
	}
	if got := prices.Estimate(fal.Type8xH100, 4*time.Hour); got != "$80.00 ($20.00/h × 4h)" {
		t.Errorf("Estimate = %q", got)
	}
}
