package bot_test

import (
	"strings"
	"testing"

	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
)

// The authorization matrix: every action by every role, allowed or refused as PRODUCT.md
// says. alice owns the request or machine; mallory is another engineer; bob approves;
// admin administers.
func TestAuthorizationMatrix(t *testing.T) {
	type role struct{ name, user string }
	roles := []role{{"requester", alice}, {"another user", mallory}, {"approver", bob}, {"admin", admin}}
	allowed := map[string]map[string]bool{
		"approve":  {"approver": true},
		"deny":     {"approver": true},
		"delete":   {"requester": true, "admin": true},
		"extend":   {"requester": true, "admin": true},
		"status":   {"requester": true, "approver": true, "admin": true},
		"list all": {"approver": true, "admin": true},
		"withdraw": {"requester": true},
		// Whose spend one sees: one's own, and everyone's for approvers and admins.
		"see spend":  {"requester": true, "approver": true, "admin": true},
		"report csv": {"admin": true},
	}
	for _, action := range []string{"approve", "deny", "delete", "extend", "status", "list all", "withdraw", "see spend", "report csv"} {
		for _, r := range roles {
			t.Run(action+" by "+r.name, func(t *testing.T) {
				want := allowed[action][r.name]
				if got := tryAction(t, start(t), action, r.user); got != want {
					t.Fatalf("%s by %s: allowed=%v, want %v", action, r.name, got, want)
				}
			})
		}
	}
}

// The matrix with a user group as the approvers: its members decide and see everyone's
// machines; others do not; the requester, though in the group, never decides on their
// own request, and alone may withdraw it.
func TestAuthorizationMatrixWithUserGroups(t *testing.T) {
	type role struct{ name, user string }
	roles := []role{{"group member", dave}, {"non-member", mallory}, {"requester in the group", alice}}
	allowed := map[string]map[string]bool{
		"approve":  {"group member": true},
		"deny":     {"group member": true},
		"status":   {"group member": true, "requester in the group": true},
		"list all": {"group member": true, "requester in the group": true},
		"withdraw": {"requester in the group": true},
	}
	for _, action := range []string{"approve", "deny", "status", "list all", "withdraw"} {
		for _, r := range roles {
			t.Run(action+" by "+r.name, func(t *testing.T) {
				h := start(t, notStarted(), withConfig(func(c *config.Config) { c.Approvers = []string{approverGroup} }))
				h.slack.SetUsergroupMembers(approverGroup, dave, alice)
				h.startBot()
				h.passes(1) // the groups are read before the first pass
				if got, want := tryAction(t, h, action, r.user), allowed[action][r.name]; got != want {
					t.Fatalf("%s by %s: allowed=%v, want %v", action, r.name, got, want)
				}
			})
		}
	}
}

// tryAction has user attempt action on alice's request and reports whether it took effect.
func tryAction(t *testing.T, h *harness, action, user string) bool {
	h.registerKey(alice)
	switch action {
	case "withdraw":
		h.command(alice, general, "create 8x")
		h.waitCard()
		h.command(user, general, "cancel "+h.onlyRequest(alice).ID)
		return h.onlyRequest(alice).State == domain.StateCancelled
	case "approve", "deny":
		h.command(alice, general, "create 8x")
		card := h.waitFor(approvals, "needs approval")
		if action == "approve" {
			h.click(user, card, "Approve")
		} else {
			h.click(user, card, "Deny")
		}
		var decided bool
		h.eventually("an answer", func() bool {
			if _, ok := h.slack.OpenView(user); ok && action == "deny" {
				decided = true
				return true
			}
			if h.onlyRequest(alice).State == domain.StateApproved || h.onlyRequest(alice).State == domain.StateCreating || h.onlyRequest(alice).State == domain.StateProvisioning {
				decided = true
				return true
			}
			return h.count(approvals, "Only approvers") > 0 || h.count(approvals, "your own request") > 0
		})
		return decided
	}
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	id := h.onlyRequest(alice).ID
	switch action {
	case "delete":
		if got := h.command(user, general, "delete "+id); !strings.Contains(got, "Delete <@UALICE>'s") {
			return false
		}
		h.click(user, h.waitFor(general, "Delete <@UALICE>'s"), "Delete")
		h.waitFor(general, "Deleted by")
		return len(h.fal.Instances()) == 0
	case "extend":
		if got := h.command(user, general, "extend "+id+" 1h"); got != "" {
			return false
		}
		h.waitFor(general, "Extended by 1h")
		return true
	case "status":
		return strings.Contains(h.command(user, general, "status "+id), "ssh ubuntu@")
	case "list all":
		return strings.Contains(h.command(user, general, "list all"), "Everyone's machines")
	case "see spend":
		mark := h.mark()
		h.command(user, general, "report")
		report := h.waitForSince(mark, general, "GPU spend in").AllText()
		return strings.Contains(report, "<@UALICE>") || strings.Contains(report, "`"+id[:8]+"`")
	case "report csv":
		mark := h.mark()
		if got := h.command(user, general, "report csv"); strings.Contains(got, "Only admins") {
			return false
		}
		return strings.Contains(h.waitForSince(mark, general, "CSV of GPU machines").AllText(), id)
	}
	t.Fatalf("unknown action %q", action)
	return false
}

// A button whose value was changed to point at someone else's request is refused like
// any other click on that request.
func TestTamperedButtonValuesAreRefused(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.registerKey(mallory)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "<@UALICE> your 1x H100 is ready")
	victim := h.onlyRequest(alice)

	// mallory asks to delete her own machine, then edits the confirm button to alice's request.
	h.command(mallory, general, "create 1x")
	h.waitFor(general, "<@UMALLORY> your 1x H100 is ready")
	h.command(mallory, general, "delete "+h.onlyRequest(mallory).ID)
	confirm := h.waitFor(general, "Delete <@UMALLORY>'s")
	for _, action := range []string{"gpubot_delete_confirm", "gpubot_delete_now", "gpubot_extend", "gpubot_approve"} {
		if _, err := h.slack.ClickAction(h.ctx(), mallory, confirm, action, victim.ID); err != nil {
			t.Fatal(err)
		}
	}
	h.eventually("three refusals", func() bool { return h.count(general, "only they or an admin can change it") >= 3 })
	h.waitFor(general, "Only approvers can approve or deny")
	after := h.onlyRequest(alice)
	if after.State != domain.StateReady || !after.ExpiresAt.Equal(victim.ExpiresAt) {
		t.Fatalf("alice's machine changed: %s, expires %v (was %v)", after.State, after.ExpiresAt, victim.ExpiresAt)
	}
	if h.fal.Counters().Deletes != 0 {
		t.Fatal("a tampered click deleted a machine")
	}
	// Values that name nothing, or garbage, do nothing at all.
	for _, value := range []string{"", "no-such-request", strings.Repeat("x", 3000), "../../etc/passwd"} {
		if _, err := h.slack.ClickAction(h.ctx(), mallory, confirm, "gpubot_delete_confirm", value); err != nil {
			t.Fatal(err)
		}
	}
	if h.fal.Counters().Deletes != 0 || h.onlyRequest(alice).State != domain.StateReady {
		t.Fatal("a garbage click changed something")
	}
}
