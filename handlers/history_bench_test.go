package handlers

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/storage"
)

// BenchmarkLongHistory is the work before the ack of `/gpu list` and of `/gpu status`
// with a short id, for a person with 10,000 past requests and 3 live ones.
func BenchmarkLongHistory(b *testing.B) {
	h, user, live := longHistory(b, 10_000)
	ctx := context.Background()
	for _, c := range []struct{ name, text string }{
		{"list", "list"},
		{"status-short-id", "status " + live[:8]},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r := h.Command(ctx, "", slack.SlashCommand{TeamID: user.TeamID, UserID: user.UserID, ChannelID: "CGENERAL", Text: c.text})
				if r == nil || r.Outcome != OutcomeOK {
					b.Fatalf("/gpu %s: %+v", c.text, r)
				}
			}
		})
	}
}

// longHistory is handlers on a store where user made `past` requests, all over now,
// and 3 that are live; it returns the id of a live one.
func longHistory(b *testing.B, past int) (*Handlers, domain.UserRef, string) {
	b.Helper()
	store, err := storage.Open(filepath.Join(b.TempDir(), "gpubot.db"), storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = store.Close() })
	user := domain.UserRef{TeamID: "T1", UserID: "UALICE"}
	ctx := context.Background()
	newRequest := func() (string, error) {
		r := domain.Request{TeamID: user.TeamID, UserID: user.UserID, CommandChannel: "CGENERAL", ChannelID: "CGENERAL",
			InstanceType: fal.Type1xH100, Lifetime: time.Hour, State: domain.StateApproved, SSHKey: "ssh-ed25519 AAAA"}
		err := store.CreateRequest(ctx, &r)
		return r.ID, err
	}
	const writers = 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < past; i += writers {
				id, err := newRequest()
				if err == nil {
					_, err = store.Move(ctx, id, domain.StateCancelled, user.UserID, "", nil)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	var live string
	for range 3 {
		if live, err = newRequest(); err != nil {
			b.Fatal(err)
		}
	}
	cfg := Config{Policy: NewPolicy(nil, nil, nil, 8*time.Hour, 72*time.Hour)}
	return New(cfg, store, nil, nil, slog.New(slog.DiscardHandler), time.Now), user, live
}
