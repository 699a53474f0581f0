package handlers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/internal/domain"
)

// unreachableStore is the real store with its connection cut: every call fails as a
// store shared over the network fails while it is out of reach. Only the answer
// handlers give is tested here; the etcd store's own behaviour is tested against a
// stopped etcd.
type unreachableStore struct{ domain.Store }

func cut(op string) error { return fmt.Errorf("%s: %w", op, domain.ErrUnavailable) }

func (unreachableStore) CreateRequest(context.Context, *domain.Request, ...domain.WriteOption) error {
	return cut("create request")
}
func (unreachableStore) Key(context.Context, domain.UserRef) (domain.StoredKey, error) {
	return domain.StoredKey{}, cut("read key")
}
func (unreachableStore) EnvelopeAnswer(context.Context, string) ([]byte, bool, error) {
	return nil, false, cut("read envelope")
}
func (unreachableStore) RequestsWithIDPrefix(context.Context, string, int) ([]domain.Request, error) {
	return nil, cut("find request")
}
func (unreachableStore) UnfinishedOf(context.Context, domain.UserRef) ([]domain.Request, error) {
	return nil, cut("list requests")
}

func TestCommandsSayTheStoreIsOutOfReachAndDoNothing(t *testing.T) {
	e := newEnv(t)
	r := e.readyMachine()
	h := New(e.config, unreachableStore{e.store}, e.fal, e.slack, slog.New(slog.NewTextHandler(io.Discard, nil)), e.clock.Now)
	t.Cleanup(func() { h.Shutdown(0) })
	for _, text := range []string{"create 1x", "list", "extend " + r.ID[:8] + " 1h", "delete " + r.ID[:8]} {
		reply := h.Command(context.Background(), "E-"+text, slack.SlashCommand{TeamID: "T1", UserID: testOwner, ChannelID: "CGENERAL", Text: text})
		if reply == nil || reply.Text != storageUnreachable {
			t.Errorf("/gpu %s answered %+v, want %q", text, reply, storageUnreachable)
		}
	}
	h.work.Wait()
	if got := e.get(r.ID); got.Version != r.Version || got.State != domain.StateReady {
		t.Errorf("the machine's request changed while the store was out of reach: %+v", got)
	}
	if listed := e.listed(); len(listed) != 1 {
		t.Errorf("fal lists %v, want only the one machine from before", listed)
	}
}

// lostAnswerStore applies creates but loses their answers, as a store shared over the
// network does when the link drops after a write was sent.
type lostAnswerStore struct{ domain.Store }

func (s lostAnswerStore) CreateRequest(ctx context.Context, r *domain.Request, opts ...domain.WriteOption) error {
	if err := s.Store.CreateRequest(ctx, r, opts...); err != nil {
		return err
	}
	return fmt.Errorf("create request: %w", domain.ErrOutcomeUnknown)
}

// A command whose write was sent and whose answer was lost is not told that nothing
// was done: it may well have been, and `/gpu list` shows it.
func TestACommandWhoseWriteMayHaveBeenAppliedSaysSo(t *testing.T) {
	e := newEnv(t)
	h := New(e.config, lostAnswerStore{e.store}, e.fal, e.slack, slog.New(slog.NewTextHandler(io.Discard, nil)), e.clock.Now)
	t.Cleanup(func() { h.Shutdown(0) })
	e.registerKeys(testOwner)
	reply := h.Command(context.Background(), "E-create", slack.SlashCommand{TeamID: "T1", UserID: testOwner, ChannelID: "CGENERAL", Text: "create 1x"})
	if reply == nil || reply.Text != storageOutcomeUnknown {
		t.Fatalf("/gpu create answered %+v, want %q", reply, storageOutcomeUnknown)
	}
	list := h.Command(context.Background(), "E-list", slack.SlashCommand{TeamID: "T1", UserID: testOwner, ChannelID: "CGENERAL", Text: "list"})
	if list == nil || !strings.Contains(messageText(Message{Text: list.Text, Blocks: list.Blocks}), "1x H100") {
		t.Errorf("/gpu list after the lost answer shows %+v; want the request that was stored", list)
	}
}

// A replica that died holding a request's claim keeps it until its session ends; the
// leader's kick in the meantime finds it taken. The next pass takes the request up
// again, without waiting for it to count as stalled.
func TestPassTakesUpARequestWhoseClaimWasHeldElsewhere(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.approvedRequest()
	release, ok, err := e.store.ClaimWork(ctx, r.ID) // the dead replica's claim
	if err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if err := e.h.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	e.idle()
	if got := e.get(r.ID).State; got != domain.StateApproved {
		t.Fatalf("the request moved to %s while another held its claim", got)
	}
	release() // its session ended
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	if got := e.get(r.ID); got.State == domain.StateApproved || got.CreateCalls != 1 {
		t.Errorf("after the claim ended, a pass left the request %s with %d create calls; want it sent to fal once", got.State, got.CreateCalls)
	}
}
