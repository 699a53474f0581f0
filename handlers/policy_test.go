package handlers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
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
	lone := NewPolicy([]string{"UBOB"}, nil, nil, time.Hour, time.Hour)
	if err := lone.MayDecide("UBOB", "UBOB"); !refusedWith(err, "there is no other approver") {
		t.Errorf("the only approver deciding their own request: %v", err)
	}
}

func TestPricesCostAndEstimate(t *testing.T) {
	prices := Prices{fal.Type8xH100: 20}
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
