package bot_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gpubot/gpubot/internal/domain"
)

// ed25519Fields is a fresh public key as an authorized_keys line, in its fields.
func ed25519Fields(t *testing.T, comment string) []string {
	t.Helper()
	fields := strings.Fields(newKeyLine(t, alice))
	return append(fields[:2], comment)
}

// A key pasted after `/gpu key set` with no-break or other Unicode spaces, as some
// editors and chat clients paste them, is the same key.
func TestKeySetWithUnicodeSpaces(t *testing.T) {
	h := start(t)
	for _, space := range []string{"\u00a0", "\u202f", "\u3000", "\u2009"} {
		fields := ed25519Fields(t, "me@laptop")
		got := h.command(alice, general, "key"+space+"set"+space+strings.Join(fields, space))
		if !strings.Contains(got, "Saved your ssh-ed25519 key") {
			t.Fatalf("key set with U+%04X between the words answered %q", []rune(space)[0], got)
		}
	}
}

// Slack sends `/gpu create 1x R&D <tuning> run` as "R&amp;D &lt;tuning&gt; run";
// the thread root and the card must show what was typed, escaped once.
func TestReasonTypedInTheCommandIsEscapedOnce(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 8x R&D <tuning> run <!channel>")
	const once = "R&amp;D &lt;tuning&gt; run &lt;!channel&gt;"
	root := h.waitFor(general, "<@UALICE> asked for 8x H100")
	card := h.waitFor(approvals, "needs approval")
	for name, m := range map[string]string{"thread root": root.AllText(), "approval card": card.AllText()} {
		if !strings.Contains(m, once) || strings.Contains(m, "&amp;amp;") || strings.Contains(m, "<!channel>") {
			t.Errorf("%s shows the reason as %q, want it escaped once: %q", name, m, once)
		}
	}
}

// What a person typed is echoed in a refusal escaped, so it can neither ping a channel
// nor show entities.
func TestRefusalsEchoWhatWasTypedEscapedOnce(t *testing.T) {
	h := start(t)
	for text, want := range map[string]string{
		"<!channel>":            "I don't know `/gpu &lt;!channel&gt;`",
		"create R&D":            "I don't know the machine type `R&amp;D`",
		"extend abcdef12 <1h>":  "`&lt;1h&gt;` is not a lifetime",
		"status <@UADMIN>&more": "I can't find a machine `&lt;@UADMIN&gt;&amp;more`",
	} {
		got := h.command(alice, general, text)
		if !strings.Contains(got, want) || strings.Contains(got, "&amp;lt;") || strings.Contains(got, "&amp;amp;") {
			t.Errorf("/gpu %s answered %q, want %q", text, got, want)
		}
	}
}

// A deny reason of nearly 3,000 characters full of & grows past Slack's 3,000 per
// section once escaped. Every message about the denial must still arrive: the card
// loses its buttons, and the thread and its root show the reason, clipped.
func TestLongDenyReasonStillReachesEveryMessage(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.command(alice, general, "create 8x for 2h eval")
	root := h.waitFor(general, "<@UALICE> asked for 8x H100")
	card := h.waitFor(approvals, "needs approval")
	h.waitFor(general, "I've asked in <#CAPPROVALS>") // the card is recorded with its request
	h.click(bob, card, "Deny")
	h.eventually("the deny modal", func() bool { _, ok := h.slack.OpenView(bob); return ok })
	reason := strings.Repeat("R&D ", 749) + "!"
	if n := utf8.RuneCountInString(reason); n != 2997 {
		t.Fatalf("reason has %d characters, want 2,997", n)
	}
	if _, err := h.slack.SubmitView(h.ctx(), bob, map[string]string{"reason": reason}); err != nil {
		t.Fatal(err)
	}
	const shown = "R&amp;D R&amp;D R&amp;D"
	reply := h.waitFor(general, "<@UALICE> denied by <@UBOB>: "+shown)
	if reply.ThreadTS != root.TS || !strings.HasSuffix(reply.AllText(), "…") {
		t.Errorf("denial reply %q, want it in the thread, clipped", reply.AllText())
	}
	h.eventually("the card to lose its buttons", func() bool {
		m, _ := h.slack.Message(card.ID)
		return len(m.Buttons()) == 0 && strings.Contains(m.AllText(), "Denied by <@UBOB>: "+shown)
	})
	h.eventually("the root to show the denial", func() bool {
		m, _ := h.slack.Message(root.ID)
		return strings.Contains(m.AllText(), ":no_entry: Denied by <@UBOB>: "+shown)
	})
	for _, c := range h.slack.Calls() {
		if c.Error != "" {
			t.Errorf("%s failed with %s", c.Method, c.Error)
		}
	}
	if r := h.onlyRequest(alice); r.DecisionReason != reason {
		t.Errorf("stored reason has %d characters, want the whole %d", len(r.DecisionReason), len(reason))
	}
}

// A key's comment with &, < and > reaches the machines as typed, not as Slack's
// entities and not decoded twice.
func TestKeyCommentIsStoredAsTyped(t *testing.T) {
	h := start(t)
	fields := ed25519Fields(t, "me <work> & co &amp; more")
	if got := h.command(alice, general, "key set "+strings.Join(fields, " ")); !strings.Contains(got, "Saved your ssh-ed25519 key") {
		t.Fatalf("key set answered %q", got)
	}
	k, err := h.app.Store().Key(h.ctx(), domain.UserRef{TeamID: "T0GPUBOT", UserID: alice})
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(fields, " "); k.AuthorizedKey != want {
		t.Errorf("stored %q, want %q", k.AuthorizedKey, want)
	}
}
