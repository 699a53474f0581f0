package handlers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/testkit"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/storage"
)

// The tests in this package that follow a machine's life run the real flows against
// falsim over HTTP, a real bbolt file, a fake clock, and a Slack fake that records
// every message; background work is waited for with idle, never with a sleep.

const (
	testOwner = "UALICE"
	testAdmin = "UADMIN"
	testKey   = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example"
)

// noEnvelope is the write option of an effect the test calls directly, with no
// Slack envelope to record it against.
var noEnvelope = domain.ForEnvelope("", nil)

// post is one message gpubot sent to Slack.
type post struct {
	channel, thread, text string
}

// threadSlack records what gpubot says. beforeUpdate, when set, runs inside every
// UpdateMessage, to act in the moment a flow waits on Slack.
type threadSlack struct {
	mu           sync.Mutex
	posts        []post
	seq          int
	beforeUpdate func()
}

func (s *threadSlack) PostMessage(ctx context.Context, channel, thread string, m Message) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err // as an HTTP call made with it fails
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.posts = append(s.posts, post{channel: channel, thread: thread, text: messageText(m)})
	return fmt.Sprintf("1700000000.%06d", s.seq), nil
}

func (s *threadSlack) UpdateMessage(context.Context, string, string, Message) error {
	s.mu.Lock()
	hook := s.beforeUpdate
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return nil
}

func (s *threadSlack) PostEphemeral(_ context.Context, channel, user string, m Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.posts = append(s.posts, post{channel: channel, thread: "ephemeral:" + user, text: messageText(m)})
	return nil
}

func (s *threadSlack) OpenView(context.Context, string, slack.ModalViewRequest) error { return nil }

func (s *threadSlack) OpenDM(_ context.Context, user string) (string, error) { return "D" + user, nil }

func (s *threadSlack) Respond(_ context.Context, _ string, m Message, _ bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.posts = append(s.posts, post{channel: "response_url", text: messageText(m)})
	return nil
}

func (s *threadSlack) setBeforeUpdate(hook func()) {
	s.mu.Lock()
	s.beforeUpdate = hook
	s.mu.Unlock()
}

// said returns the messages posted to channel (any thread) that contain text.
func (s *threadSlack) said(channel, text string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.posts {
		if p.channel == channel && strings.Contains(p.text, text) {
			out = append(out, p.text)
		}
	}
	return out
}

func (s *threadSlack) all() []post {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.posts)
}

// messageText is a message's text and the text of its sections.
func messageText(m Message) string {
	parts := []string{m.Text}
	for _, b := range m.Blocks {
		if sb, ok := b.(*slack.SectionBlock); ok && sb.Text != nil {
			parts = append(parts, sb.Text.Text)
		}
	}
	return strings.Join(parts, "\n")
}

type env struct {
	t      *testing.T
	clock  *testkit.Clock
	sim    *falsim.Server
	fal    *fal.Client
	slack  *threadSlack
	path   string
	store  *storage.Store
	h      *Handlers
	config Config
}

// newEnv starts falsim in manual mode (statuses move only when a test says), opens a
// store in a temporary directory and builds the handlers. The fal client gives up
// quickly, so a failing call costs a pass tens of milliseconds.
func newEnv(t *testing.T) *env {
	t.Helper()
	c := testkit.FixedClock(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	sim := falsim.New(falsim.Options{Manual: true, Now: c.Now})
	t.Cleanup(sim.Close)
	client, err := fal.New(fal.Config{
		BaseURL: sim.URL(), APIKey: "test-key", Timeout: 5 * time.Second,
		MaxElapsed: 100 * time.Millisecond, RetryBaseDelay: 5 * time.Millisecond, RetryMaxDelay: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t: t, clock: c, sim: sim, fal: client, slack: &threadSlack{},
		path: filepath.Join(t.TempDir(), "gpubot.db"),
		config: Config{
			Policy:          NewPolicy([]string{"UBOB"}, []string{testAdmin}, []string{fal.Type8xH100}, 8*time.Hour, 72*time.Hour),
			ApprovalChannel: "CAPPROVALS",
			PollInterval:    10 * time.Second, ReminderBefore: 30 * time.Minute,
		},
	}
	e.open()
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	e.t.Helper()
	store, err := storage.Open(e.path, storage.Options{Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	e.store = store
	e.h = New(e.config, store, e.fal, e.slack, slog.New(slog.NewTextHandler(io.Discard, nil)), e.clock.Now)
}

// shutdownGrace is what close gives work in flight to finish.
const shutdownGrace = time.Minute

func (e *env) close() {
	if e.h == nil {
		return
	}
	e.h.Shutdown(shutdownGrace)
	if err := e.store.Close(); err != nil {
		e.t.Error(err)
	}
	e.h = nil
}

// restart stops gpubot (letting its work finish) and starts a new one on the same file.
func (e *env) restart() {
	e.close()
	e.open()
}

// idle waits until every piece of background work has finished. Only the test
// starts work here (there is no Run loop), so nothing new begins meanwhile.
func (e *env) idle() { e.h.work.Wait() }

// tick runs one tracking pass and waits for the work it started.
func (e *env) tick() error {
	e.t.Helper()
	err := e.h.Tick(context.Background())
	e.idle()
	return err
}

// approvedRequest stores a new 1x request for alice, approved (1x needs no
// approval), that gpubot has not taken up yet.
func (e *env) approvedRequest() domain.Request {
	e.t.Helper()
	r := domain.Request{
		TeamID: "T1", UserID: testOwner, CommandChannel: "CGENERAL", InstanceType: fal.Type1xH100,
		SSHKey: testKey, Lifetime: 2 * time.Hour, State: domain.StateApproved,
	}
	if err := e.store.CreateRequest(context.Background(), &r); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// request stores a new approved 1x request for alice and has gpubot take it up as it
// does after a start.
func (e *env) request() domain.Request {
	e.t.Helper()
	r := e.approvedRequest()
	if err := e.h.Resume(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.idle()
	return e.get(r.ID)
}

// readyMachine is a request whose machine fal has made ready, as gpubot tracks it.
func (e *env) readyMachine() domain.Request {
	e.t.Helper()
	r := e.request()
	if r.State != domain.StateProvisioning {
		e.t.Fatalf("request is %s, want provisioning", r.State)
	}
	if err := e.sim.SetStatus(r.InstanceID, fal.StatusReady); err != nil {
		e.t.Fatal(err)
	}
	if err := e.tick(); err != nil {
		e.t.Fatal(err)
	}
	r = e.get(r.ID)
	if r.State != domain.StateReady {
		e.t.Fatalf("request is %s after fal said ready, want ready", r.State)
	}
	return r
}

func (e *env) get(id string) domain.Request {
	e.t.Helper()
	r, err := e.store.Request(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// listed returns the ids of the instances fal runs.
func (e *env) listed() []string {
	var ids []string
	for _, inst := range e.sim.Instances() {
		ids = append(ids, inst.ID)
	}
	return ids
}

// checkNoForgottenMachine asserts what gpubot promises: every instance fal lists is
// tracked by a live request (being deleted counts), or the admins were told of it.
func (e *env) checkNoForgottenMachine() {
	e.t.Helper()
	for _, id := range e.listed() {
		r, err := e.store.RequestByInstance(context.Background(), id)
		if err == nil && r.Live() {
			continue
		}
		if len(e.slack.said("D"+testAdmin, id)) > 0 {
			continue
		}
		state := "no request"
		if err == nil {
			state = "request " + string(r.State)
		}
		e.t.Errorf("fal runs %s (%s), and neither a live request nor the admins know of it", id, state)
	}
}
