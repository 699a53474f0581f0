package bot_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
)

// One test per row of the command table.

func TestHelp(t *testing.T) {
	h := start(t)
	for _, text := range []string{"", "help"} {
		got := h.command(alice, general, text)
		for _, want := range []string{"/gpu key set", "/gpu create 8x sector_1 for 4h", "/gpu list all", "/gpu extend <id> 2h"} {
			if !strings.Contains(got, want) {
				t.Errorf("/gpu %s: help lacks %q", text, want)
			}
		}
	}
}

func TestKeySetShowRemove(t *testing.T) {
	h := start(t)
	if got := h.command(alice, general, "key show"); !strings.Contains(got, "no SSH key registered") {
		t.Fatalf("key show before set = %q", got)
	}
	h.registerKey(alice)
	if got := h.command(alice, general, "key show"); !strings.Contains(got, "Your key: ssh-ed25519 `SHA256:") {
		t.Fatalf("key show = %q", got)
	}
	if got := h.command(alice, general, "key set -----BEGIN OPENSSH PRIVATE KEY-----"); !strings.Contains(got, "private key") {
		t.Fatalf("a pasted private key answered %q", got)
	}
	if got := h.command(alice, general, "key remove"); !strings.Contains(got, "Forgot your SSH key") {
		t.Fatalf("key remove = %q", got)
	}
	if got := h.command(alice, general, "create 1x"); !strings.Contains(got, "/gpu key set") {
		t.Fatalf("create after remove = %q", got)
	}
}

func TestKeyModal(t *testing.T) {
	h := start(t)
	h.command(alice, general, "key")
	h.eventually("the key modal", func() bool { v, ok := h.slack.OpenView(alice); return ok && v.CallbackID == "gpubot_key" })
	if _, err := h.slack.SubmitView(h.ctx(), alice, map[string]string{"key": "not a key"}); err != nil {
		t.Fatal(err)
	}
	if msg := h.slack.ViewErrors(alice)["key"]; !strings.Contains(msg, "cat ~/.ssh/id_ed25519.pub") {
		t.Fatalf("modal error = %q", msg)
	}
	if got := h.command(alice, general, "key show"); !strings.Contains(got, "no SSH key registered") {
		t.Fatal("a refused key was stored")
	}
}

func TestCreateModal(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create")
	h.eventually("the create modal", func() bool { v, ok := h.slack.OpenView(alice); return ok && v.CallbackID == "gpubot_create" })
	if _, err := h.slack.SubmitView(h.ctx(), alice, map[string]string{"type": "gpu_1x_h100_sxm5", "sector": "sector_2", "reason": "x"}); err != nil {
		t.Fatal(err)
	}
	if msg := h.slack.ViewErrors(alice)["sector"]; !strings.Contains(msg, "only apply to 8x") {
		t.Fatalf("sector with 1x: modal error = %q", msg)
	}
	if _, err := h.slack.SubmitView(h.ctx(), alice, map[string]string{"type": "gpu_1x_h100_sxm5", "lifetime": "3h", "reason": "notebook"}); err != nil {
		t.Fatal(err)
	}
	h.waitFor(general, "<@UALICE> asked for 1x H100 · 3h", "notebook")
	h.waitFor(general, "is ready :tada:")
}

func TestListAndListAll(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.registerKey(mallory)
	if got := h.command(alice, general, "list"); !strings.Contains(got, "You have no machines") {
		t.Fatalf("empty list = %q", got)
	}
	h.command(alice, general, "create 1x")
	h.waitFor(general, "<@UALICE> your 1x H100 is ready")
	h.command(mallory, general, "create 1x")
	h.waitFor(general, "<@UMALLORY> your 1x H100 is ready")
	got := h.command(alice, general, "list")
	if !strings.Contains(got, "1x H100 · ready") || !strings.Contains(got, "left") || !strings.Contains(got, "so far") || strings.Count(got, "1x H100 ·") != 1 {
		t.Fatalf("alice's list = %q", got)
	}
	if got := h.command(alice, general, "list all"); !strings.Contains(got, "Only admins and approvers") {
		t.Fatalf("list all by a requester = %q", got)
	}
	got = h.command(admin, general, "list all")
	if !strings.Contains(got, "<@UALICE>") || !strings.Contains(got, "<@UMALLORY>") {
		t.Fatalf("admin's list all = %q", got)
	}
}

func TestStatus(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	r := h.onlyRequest(alice)
	got := h.command(alice, general, "status "+r.ID[:8])
	for _, want := range []string{"ssh ubuntu@" + r.IP, r.InstanceID, "Time left", "Cost so far", "*History*", "<@UALICE>: requested", "gpubot: ready"} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q: %s", want, got)
		}
	}
	if got := h.command(alice, general, "status "+r.InstanceID); !strings.Contains(got, r.ID[:8]) {
		t.Errorf("status by instance id = %q", got)
	}
	if got := h.command(mallory, general, "status "+r.ID); !strings.Contains(got, "belongs to <@UALICE>") {
		t.Errorf("status of someone else's machine = %q", got)
	}
}

func TestDeleteAsksForConfirmation(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	r := h.onlyRequest(alice)

	if got := h.command(mallory, general, "delete "+r.ID); !strings.Contains(got, "only they or an admin") {
		t.Fatalf("delete by another user = %q", got)
	}
	h.command(alice, general, "delete "+r.ID[:8])
	confirm := h.waitFor(general, "Delete <@UALICE>'s 1x H100")
	if !confirm.Ephemeral || strings.Join(confirm.Buttons(), ",") != "Delete,Keep it" {
		t.Fatalf("confirmation = %+v", confirm)
	}
	if h.fal.Counters().Deletes != 0 {
		t.Fatal("deleted before confirmation")
	}
	h.click(alice, confirm, "Delete")
	h.waitFor(general, "Deleted by <@UALICE>; it ran for", "Cost: about $")
	if c := h.fal.Counters(); c.Deletes != 1 || len(h.fal.Instances()) != 0 {
		t.Fatalf("fal counters %+v after delete", c)
	}
	if got := h.onlyRequest(alice).State; got != domain.StateDeleted {
		t.Fatalf("state %s, want deleted", got)
	}
}

func TestAdminCanDeleteAnyMachine(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	r := h.onlyRequest(alice)
	h.command(admin, general, "delete "+r.InstanceID)
	h.click(admin, h.waitFor(general, "Delete <@UALICE>'s"), "Delete")
	h.waitFor(general, "Deleted by <@UADMIN>")
}

func TestExtend(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 1x for 2h")
	h.waitFor(general, "is ready :tada:")
	r := h.onlyRequest(alice)
	if got := h.command(alice, general, "extend "+r.ID[:8]+" 3h"); got != "" {
		t.Fatalf("extend answered %q", got)
	}
	h.waitFor(general, "Extended by 3h by <@UALICE>")
	if got := h.onlyRequest(alice).ExpiresAt.Sub(r.ExpiresAt); got != 3*time.Hour {
		t.Fatalf("expiry moved by %v, want 3h", got)
	}
	if got := h.command(alice, general, "extend "+r.ID[:8]+" 3d"); !strings.Contains(got, "at most 3d ahead") {
		t.Fatalf("extend past the maximum = %q", got)
	}
	if got := h.command(mallory, general, "extend "+r.ID+" 1h"); !strings.Contains(got, "only they or an admin") {
		t.Fatalf("extend by another user = %q", got)
	}
}

// onlyRequest is user's one request, from the store.
func (h *harness) onlyRequest(user string) domain.Request {
	h.t.Helper()
	reqs, err := h.app.Store().RequestsByUser(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: user})
	if err != nil || len(reqs) != 1 {
		h.t.Fatalf("requests of %s: %v (%d)", user, err, len(reqs))
	}
	return reqs[0]
}

// A reply too large for an ack (Slack drops acks of 20 KB or more) arrives through the
// command's response_url instead.
func TestLargeListArrivesThroughResponseURL(t *testing.T) {
	h := start(t, withConfig(func(c *config.Config) { c.PollInterval = time.Hour }))
	ctx := h.ctx()
	store := h.app.Store()
	for i := range 300 {
		r := domain.Request{TeamID: "T0GPUBOT", UserID: alice, InstanceType: "gpu_1x_h100_sxm5", Lifetime: time.Hour,
			State: domain.StateApproved, Reason: fmt.Sprintf("run %d", i)}
		if err := store.CreateRequest(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.command(admin, general, "list all"); got != "" {
		t.Fatalf("the ack carried %d bytes; want an empty ack", len(got))
	}
	m := h.waitFor(general, "Everyone's machines")
	if !m.Ephemeral || m.User != admin || m.Source != "response_url" || strings.Count(m.AllText(), "1x H100") != 300 {
		t.Fatalf("list arrived as %+v", m)
	}
	if errs := h.slack.ProtocolErrors(); len(errs) > 0 {
		t.Fatalf("Slack refused what the bot sent: %v", errs)
	}
}
