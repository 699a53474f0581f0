package handlers

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/storage"
)

// A short id names one of the caller's requests (or, for an admin, one still running);
// one that could mean several is refused, never guessed: the next step may be a delete.
func TestShortIDs(t *testing.T) {
	store, err := storage.Open(filepath.Join(t.TempDir(), "gpubot.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	ctx := context.Background()
	for _, id := range []string{"abcdef01-aaaa", "abcdef02-bbbb"} {
		r := domain.Request{ID: id, TeamID: "T1", UserID: "UALICE", CommandChannel: "CGENERAL", ChannelID: "CGENERAL",
			InstanceType: fal.Type1xH100, Lifetime: time.Hour, State: domain.StateApproved}
		if err := store.CreateRequest(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	h := New(Config{Policy: NewPolicy(nil, []string{"UADMIN"}, nil, 8*time.Hour, 72*time.Hour)},
		store, nil, nil, slog.New(slog.DiscardHandler), time.Now)
	status := func(user, id string) *Reply {
		return h.Command(ctx, "", slack.SlashCommand{TeamID: "T1", UserID: user, ChannelID: "CGENERAL", Text: "status " + id})
	}
	for _, c := range []struct {
		user, id, outcome, says string
	}{
		{"UALICE", "abcdef01", OutcomeOK, "abcdef01"},
		{"UALICE", "abcdef0", OutcomeRefused, "more than one"},
		{"UADMIN", "abcdef02", OutcomeOK, "abcdef02"},
		{"UMALLORY", "abcdef01", OutcomeRefused, "can't find"},
		{"UALICE", "abcde", OutcomeRefused, "can't find"},
	} {
		r := status(c.user, c.id)
		if r == nil || r.Outcome != c.outcome || !strings.Contains(r.Text+blocksText(r.Blocks), c.says) {
			t.Errorf("%s: /gpu status %s answered %+v, want %s saying %q", c.user, c.id, r, c.outcome, c.says)
		}
	}
}

func blocksText(blocks []slack.Block) string {
	var b strings.Builder
	for _, block := range blocks {
		if s, ok := block.(*slack.SectionBlock); ok && s.Text != nil {
			b.WriteString(s.Text.Text)
		}
	}
	return b.String()
}
