package bot_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/storage"
)

// These tests kill gpubot between the moment a command or click took effect and the
// moment its ack would have reached Slack; Slack then delivers the same envelope again
// (retry_attempt 1) to the gpubot that started next. Each effect must happen once, and
// the redelivery is answered as the first delivery would have been.

// loseAckAndRedeliver sends an envelope whose ack is lost on its way to Slack, waits
// until gpubot has acked it (so its effect is committed) and until settled returns
// (what gpubot did after the ack, as people see it), lets restart replace that gpubot
// with a new one, redelivers the envelope to it and lets stop end it, which finishes
// whatever the redelivery set going. The redelivery must be acked with the first
// answer; the lost ack is returned.
func (h *harness) loseAckAndRedeliver(send func() (slacksim.Ack, error), settled, restart, stop func()) slacksim.Ack {
	h.t.Helper()
	h.slack.LoseNextAck()
	lost, err := send()
	if !errors.Is(err, slacksim.ErrAckLost) {
		h.t.Fatalf("the first delivery: %v, want its ack lost", err)
	}
	settled()
	restart()
	again, err := h.slack.Redeliver(h.ctx(), lost.EnvelopeID)
	if err != nil {
		h.t.Fatalf("redeliver: %v", err)
	}
	stop()
	if !bytes.Equal(again.Payload, lost.Payload) {
		h.t.Errorf("the redelivery was acked with %s, want the first answer %s", again.Payload, lost.Payload)
	}
	return lost
}

// crashBeforeAck is loseAckAndRedeliver with gpubot processes: p is SIGKILLed, and
// the next process is stopped with SIGTERM.
func (h *harness) crashBeforeAck(p *process, send func() (slacksim.Ack, error), settled func()) slacksim.Ack {
	h.t.Helper()
	var next *process
	return h.loseAckAndRedeliver(send, settled,
		func() { p.kill(); h.waitDisconnected(); next = h.spawn() },
		func() {
			if err := next.stop(h.ctx()); err != nil {
				h.t.Fatalf("stop the gpubot that took the redelivery: %v", err)
			}
		})
}

// restartBeforeAck is loseAckAndRedeliver with the in-process gpubot, stopped and
// started again on the same store: its memory goes, the store stays.
func (h *harness) restartBeforeAck(send func() (slacksim.Ack, error), settled func()) slacksim.Ack {
	h.t.Helper()
	return h.loseAckAndRedeliver(send, settled, func() { h.stopBot(); h.waitDisconnected(); h.startBot() }, h.stopBot)
}

// waitDisconnected waits until Slack has seen the stopped gpubot's connection close, so
// that the redelivery goes to the gpubot started next and not down a dead connection.
func (h *harness) waitDisconnected() {
	h.t.Helper()
	if err := h.slack.WaitUntil(h.ctx(), func() bool { return h.slack.Connections() == 0 }); err != nil {
		h.t.Fatalf("the stopped gpubot's connection is still open: %v", err)
	}
}

// audited counts the audit events with action, read from the store file once no
// gpubot holds it.
func (h *harness) audited(action string) int {
	h.t.Helper()
	store, err := storage.Open(h.cfg.DBPath, storage.Options{OpenTimeout: 5 * time.Second})
	if err != nil {
		h.t.Fatal(err)
	}
	defer store.Close()
	events, err := store.AuditLog(h.ctx(), 0, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, e := range events {
		if e.Action == action {
			n++
		}
	}
	return n
}

// noMessage fails the test if any message anyone was shown contains text.
func (h *harness) noMessage(text string) {
	h.t.Helper()
	if n := h.count("", text); n != 0 {
		h.t.Errorf("%d messages with %q after the redelivery, want none\n%s", n, text, h.dump())
	}
}

func TestRedeliveredExtendAfterCrashExtendsOnce(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	instance := h.fal.Instances()[0].ID
	var extended time.Time
	h.crashBeforeAck(p, func() (slacksim.Ack, error) {
		return h.slack.SlashCommand(h.ctx(), alice, general, "/gpu", "extend "+instance+" 2h")
	}, func() {
		h.waitFor(general, "Extended by 2h by <@UALICE>")
		p.kill()
		extended = h.requestOf(alice).ExpiresAt
	})
	r := h.requestOf(alice)
	if !r.ExpiresAt.Equal(extended) {
		t.Errorf("the expiry moved from %s to %s on the redelivery", extended, r.ExpiresAt)
	}
	if r.ExpiresAt.Sub(r.ReadyAt) != 8*time.Hour+2*time.Hour {
		t.Errorf("expiry %s after ready %s, want the 8h lifetime plus 2h once", r.ExpiresAt, r.ReadyAt)
	}
	if n := h.audited("extended"); n != 1 {
		t.Errorf("%d extensions audited, want 1", n)
	}
	if n := h.count(general, "Extended by 2h"); n != 1 {
		t.Errorf("%d \"Extended\" replies, want 1", n)
	}
}

func TestRedeliveredDeleteAfterCrashDeletesOnce(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	h.registerKey(alice)
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	h.command(alice, general, "delete "+h.fal.Instances()[0].ID)
	confirm := h.waitFor(general, "Delete <@UALICE>'s")
	h.crashBeforeAck(p, func() (slacksim.Ack, error) {
		return h.slack.Click(h.ctx(), alice, confirm, "Delete")
	}, func() {
		h.waitFor(general, "Deleted by <@UALICE>")
	})
	if got := h.requestOf(alice).State; got != domain.StateDeleted {
		t.Errorf("request is %s, want deleted", got)
	}
	if n := h.fal.Counters().Calls["delete"]; n != 1 {
		t.Errorf("%d DELETE calls at fal, want 1", n)
	}
	if n := h.count(general, ":wastebasket: Deleting `"); n != 1 {
		t.Errorf("%d \"Deleting\" messages, want 1\n%s", n, h.dump())
	}
	if n := h.audited(string(domain.StateDeleting)); n != 1 {
		t.Errorf("%d deletes audited, want 1", n)
	}
	h.noMessage("is already")
}

func TestRedeliveredKeySetAfterCrashSetsOnce(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	line := newKeyLine(t, alice)
	lost := h.crashBeforeAck(p, func() (slacksim.Ack, error) {
		return h.slack.SlashCommand(h.ctx(), alice, general, "/gpu", "key set "+line)
	}, func() {})
	if got := ackText(t, lost); !strings.Contains(got, "Saved your ssh-ed25519 key") {
		t.Errorf("key set answered %q", got)
	}
	if n := h.audited("key_set"); n != 1 {
		t.Errorf("%d key_set events audited, want 1", n)
	}
}

func TestRedeliveredApproveAfterCrashDecidesOnce(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	h.registerKey(alice)
	h.command(alice, general, "create 8x sector_1")
	card := h.waitFor(approvals, "needs approval")
	h.crashBeforeAck(p, func() (slacksim.Ack, error) {
		return h.slack.Click(h.ctx(), bob, card, "Approve")
	}, func() {
		h.waitFor(general, "is ready :tada:")
	})
	if c := h.fal.Counters(); c.Creates != 1 || c.Instances != 1 {
		t.Errorf("fal counters %+v, want one create and one instance", c)
	}
	if n := h.audited(string(domain.StateApproved)); n != 1 {
		t.Errorf("%d approvals audited, want 1", n)
	}
	if n := h.count(general, "approved by <@UBOB>"); n != 1 {
		t.Errorf("%d \"approved\" replies, want 1", n)
	}
	h.noMessage("Too late")
}

func TestRedeliveredDenyAfterCrashDeniesOnce(t *testing.T) {
	h := start(t, notStarted())
	p := h.spawn()
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	h.click(bob, h.waitFor(approvals, "needs approval"), "Deny")
	h.eventually("the deny modal", func() bool { v, ok := h.slack.OpenView(bob); return ok && v.CallbackID == "gpubot_deny" })
	lost := h.crashBeforeAck(p, func() (slacksim.Ack, error) {
		return h.slack.SubmitView(h.ctx(), bob, map[string]string{"reason": "no 8x budget this week"})
	}, func() {
		h.waitFor(general, "denied by <@UBOB>: no 8x budget this week")
	})
	if !strings.Contains(string(lost.Payload), `"response_action":"clear"`) {
		t.Errorf("the deny modal was answered with %s, want it closed", lost.Payload)
	}
	if got := h.requestOf(alice).State; got != domain.StateDenied {
		t.Errorf("request is %s, want denied", got)
	}
	if n := h.audited(string(domain.StateDenied)); n != 1 {
		t.Errorf("%d denials audited, want 1", n)
	}
	if n := h.count(general, "denied by <@UBOB>"); n != 1 {
		t.Errorf("%d denial replies, want 1", n)
	}
	h.noMessage("Too late")
}

// The other commands and clicks that take effect, each redelivered to a gpubot that
// restarted after it acked: one effect each, and the first answer again.

func TestRedeliveredCreateAfterRestartCreatesOnce(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	lost := h.restartBeforeAck(func() (slacksim.Ack, error) {
		return h.slack.SlashCommand(h.ctx(), alice, general, "/gpu", "create 1x")
	}, func() {
		h.waitFor(general, "is ready :tada:")
	})
	if got := ackText(t, lost); !strings.Contains(got, "Got it: request `") {
		t.Errorf("create answered %q", got)
	}
	h.requestOf(alice) // exactly one
	if c := h.fal.Counters(); c.Creates != 1 {
		t.Errorf("%d creates at fal, want 1", c.Creates)
	}
	if n := h.count(general, "<@UALICE> asked for 1x H100"); n != 1 {
		t.Errorf("%d thread roots, want 1", n)
	}
}

func TestRedeliveredCreateFormAfterRestartCreatesOnce(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create")
	h.eventually("the create modal", func() bool { v, ok := h.slack.OpenView(alice); return ok && v.CallbackID == "gpubot_create" })
	lost := h.restartBeforeAck(func() (slacksim.Ack, error) {
		return h.slack.SubmitView(h.ctx(), alice, map[string]string{"type": "gpu_1x_h100_sxm5", "reason": "notebook"})
	}, func() {
		h.waitFor(general, "is ready :tada:")
	})
	if !strings.Contains(string(lost.Payload), `"response_action":"clear"`) {
		t.Errorf("the create form was answered with %s, want it closed", lost.Payload)
	}
	h.requestOf(alice) // exactly one
	if c := h.fal.Counters(); c.Creates != 1 {
		t.Errorf("%d creates at fal, want 1", c.Creates)
	}
}

func TestRedeliveredKeyRemoveAfterRestartAnswersTheSame(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	lost := h.restartBeforeAck(func() (slacksim.Ack, error) {
		return h.slack.SlashCommand(h.ctx(), alice, general, "/gpu", "key remove")
	}, func() {})
	if got := ackText(t, lost); !strings.Contains(got, "Forgot your SSH key") {
		t.Errorf("key remove answered %q", got)
	}
	if n := h.audited("key_removed"); n != 1 {
		t.Errorf("%d key_removed events audited, want 1", n)
	}
}

func TestRedeliveredKeyFormAfterRestartSetsOnce(t *testing.T) {
	h := start(t)
	h.command(carol, general, "key")
	h.eventually("the key modal", func() bool { v, ok := h.slack.OpenView(carol); return ok && v.CallbackID == "gpubot_key" })
	lost := h.restartBeforeAck(func() (slacksim.Ack, error) {
		return h.slack.SubmitView(h.ctx(), carol, map[string]string{"key": newKeyLine(t, carol)})
	}, func() {})
	if !strings.Contains(string(lost.Payload), `"response_action":"update"`) {
		t.Errorf("the key form was answered with %s, want the saved key shown", lost.Payload)
	}
	if n := h.audited("key_set"); n != 1 {
		t.Errorf("%d key_set events audited, want 1", n)
	}
}

// The Extend button commits before its ack, as every other click does: a stop right
// after the ack cannot lose the extension.
func TestRedeliveredExtendButtonAfterRestartExtendsOnce(t *testing.T) {
	h := start(t)
	r := h.readyMachine("1h")
	h.clock.Advance(45 * time.Minute)
	reminder := h.waitFor(general, "Need it longer?")
	h.restartBeforeAck(func() (slacksim.Ack, error) {
		return h.slack.Click(h.ctx(), alice, reminder, "Extend 8h")
	}, func() {
		if got := h.onlyRequest(alice).ExpiresAt.Sub(r.ExpiresAt); got != 8*time.Hour {
			t.Errorf("when the click was acked the expiry had moved by %v, want 8h", got)
		}
		h.waitFor(general, "Extended by 8h by <@UALICE>")
	})
	if got := h.requestOf(alice).ExpiresAt.Sub(r.ExpiresAt); got != 8*time.Hour {
		t.Errorf("the expiry moved by %v, want 8h once", got)
	}
	if n := h.audited("extended"); n != 1 {
		t.Errorf("%d extensions audited, want 1", n)
	}
	if n := h.count(general, "Extended by 8h"); n != 1 {
		t.Errorf("%d \"Extended\" replies, want 1", n)
	}
}

func TestRedeliveredDeleteNowAfterRestartDeletesOnce(t *testing.T) {
	h := start(t)
	h.readyMachine("1h")
	h.clock.Advance(45 * time.Minute)
	reminder := h.waitFor(general, "Need it longer?")
	h.restartBeforeAck(func() (slacksim.Ack, error) {
		return h.slack.Click(h.ctx(), alice, reminder, "Delete now")
	}, func() {
		h.waitFor(general, "Deleted by <@UALICE>")
	})
	if c := h.fal.Counters(); c.Deletes != 1 {
		t.Errorf("%d deletes at fal, want 1", c.Deletes)
	}
	if n := h.count(general, "<@UALICE> Deleted by <@UALICE>; it ran for"); n != 1 {
		t.Errorf("%d last lines, want 1\n%s", n, h.dump())
	}
	h.noMessage("is already")
}

// The approvals that count, the withdrawal command and its button are each the one
// effect of their envelope too.

func TestRedeliveredPartialApprovalAfterRestartCountsOnce(t *testing.T) {
	h := start(t, withConfig(withTwoApprovals))
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	card := h.waitCard()
	lost := h.restartBeforeAck(func() (slacksim.Ack, error) {
		return h.slack.Click(h.ctx(), bob, card, "Approve")
	}, func() {
		h.waitFor(general, "Approved by <@UBOB> (1 of 2)")
	})
	if len(lost.Payload) != 0 {
		t.Errorf("the click was acked with %s, want an empty ack", lost.Payload)
	}
	if n := h.audited("approval"); n != 1 {
		t.Errorf("%d approvals audited, want 1", n)
	}
	h.noMessage("You already approved")
	if n := h.count(general, "Approved by <@UBOB> (1 of 2)"); n != 1 {
		t.Errorf("%d thread replies for bob's approval, want 1", n)
	}
}

func TestRedeliveredCancelAfterRestartWithdrawsOnce(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	h.waitCard()
	id := h.onlyRequest(alice).ID
	lost := h.restartBeforeAck(func() (slacksim.Ack, error) {
		return h.slack.SlashCommand(h.ctx(), alice, general, "/gpu", "cancel "+id)
	}, func() {
		h.waitFor(general, "Withdrawn by <@UALICE> before anyone decided")
	})
	if got := ackText(t, lost); !strings.Contains(got, "Withdrew request `"+id[:8]+"`") {
		t.Errorf("cancel answered %q", got)
	}
	if n := h.audited(string(domain.StateCancelled)); n != 1 {
		t.Errorf("%d withdrawals audited, want 1", n)
	}
	h.noMessage("already over")
}

func TestRedeliveredWithdrawButtonAfterRestartWithdrawsOnce(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 8x")
	h.waitCard()
	root := h.waitFor(general, "<@UALICE> asked for 8x H100")
	h.restartBeforeAck(func() (slacksim.Ack, error) {
		return h.slack.Click(h.ctx(), alice, root, "Withdraw request")
	}, func() {
		h.waitFor(general, "Withdrawn by <@UALICE> before anyone decided")
	})
	if n := h.audited(string(domain.StateCancelled)); n != 1 {
		t.Errorf("%d withdrawals audited, want 1", n)
	}
	h.noMessage("already over")
	if n := h.count(general, "Withdrawn by <@UALICE> before anyone decided"); n != 1 {
		t.Errorf("%d withdrawal replies, want 1", n)
	}
}
