// Package handlers holds gpubot's flows and policy: it turns a `/gpu` command or a click
// into a request's life (approval, creation at fal, tracking, expiry) and says who may
// do what. It talks to Slack and fal only through the small interfaces below.
package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// Slack is what the flows need from Slack.
type Slack interface {
	PostMessage(ctx context.Context, channel, threadTS string, m Message) (ts string, err error)
	UpdateMessage(ctx context.Context, channel, ts string, m Message) error
	PostEphemeral(ctx context.Context, channel, user string, m Message) error
	OpenView(ctx context.Context, triggerID string, v slack.ModalViewRequest) error
	OpenDM(ctx context.Context, user string) (channel string, err error)
	Respond(ctx context.Context, responseURL string, m Message, replaceOriginal bool) error
}

// Fal is what the flows need from fal's compute API.
type Fal interface {
	Create(ctx context.Context, req fal.CreateRequest, idempotencyKey string) (fal.Instance, error)
	Get(ctx context.Context, id string) (fal.Instance, error)
	List(ctx context.Context) ([]fal.Instance, error)
	Delete(ctx context.Context, id string) error
}

// Config is the part of gpubot's settings that the flows use.
type Config struct {
	Policy          Policy
	ApprovalChannel string
	NotifyChannel   string
	Prices          spend.Prices
	ReminderBefore  time.Duration
	PollInterval    time.Duration
	// UnknownGrace is how long fal may report "unknown" before the owner is told.
	UnknownGrace time.Duration
	// ProvisionTimeout is how long fal may take to make a machine ready, counted
	// from the create call; then the owner and admins are told and it is deleted.
	ProvisionTimeout time.Duration
	// Leadership, when set, picks the one replica that does the background work;
	// nil when this process is the only one.
	Leadership Leadership
	// PassDone, when set, hears of every background pass Run makes, with its error.
	PassDone func(err error)

	// ApprovalTimeout is how long a request may wait for approval before it expires.
	ApprovalTimeout time.Duration
	// ApprovalReminder is how often the approvers are reminded of a waiting request;
	// zero for never.
	ApprovalReminder time.Duration
	// UsergroupRefresh is how often the members of user groups are read again.
	UsergroupRefresh time.Duration
	// Groups reads user groups' members; nil when no group is used.
	Groups GroupReader
	// Links gives a message's permalink, for the DM that tells a requester the decision.
	Links Permalinker
	// Home publishes people's Home tabs; nil for none.
	Home HomePublisher
	// HomeEvery is how often at most one person's Home tab is published.
	HomeEvery time.Duration

	// Budgets are the monthly budgets; Enforcement what a request over one gets
	// (EnforceApprove, the default, or EnforceRefuse).
	Budgets     spend.Budgets
	Enforcement string
	// MaxMachines is how many machines one person may hold at once; 0 for no cap.
	MaxMachines int
	// ReportChannel gets the spend digest every ReportEvery; "" for none.
	ReportChannel string
	ReportEvery   spend.Schedule
}

// Leadership elects one replica among those sharing a store for the background work
// (resume, tracking passes, reminders, expiries, orphan sweeps).
type Leadership interface {
	// Run calls lead each time this replica becomes the leader, with a context that
	// ends when it stops leading and that fences its writes, until ctx ends.
	Run(ctx context.Context, lead func(ctx context.Context)) error
}

// Defaults of the approval settings, as documented.
const (
	DefaultApprovalTimeout  = 24 * time.Hour
	DefaultUsergroupRefresh = 5 * time.Minute
)

// Handlers runs gpubot's flows. Work that is slow (fal, posting to Slack) runs in the
// background after the envelope is acked; Shutdown waits for it.
type Handlers struct {
	cfg   Config
	store domain.Store
	fal   Fal
	slack Slack
	log   *slog.Logger
	now   func() time.Time

	groups      *groupCache
	groupReader GroupReader
	links       Permalinker

	workCtx    context.Context
	cancelWork context.CancelFunc
	stopping   chan struct{} // closed when Shutdown begins
	stopOnce   sync.Once
	work       sync.WaitGroup
	slots      chan struct{} // one per background flow running
	foreground foregroundGate

	mu sync.Mutex
	// workers holds the requests that have a piece of work queued or running;
	// true when it must look at the request again once done.
	workers map[string]bool
	// claimedElsewhere holds the requests whose last kick found their claim held by
	// another replica (or one that died, whose claim ends with its session): the
	// next pass takes them up again rather than waiting for them to stall.
	claimedElsewhere map[string]bool
	watchingOrphans  bool // an untracked instance is being watched: list fal every pass
	lastOrphanSweep  time.Time

	homes homeThrottle
}

// New builds the handlers. now is the clock (time.Now outside tests).
func New(cfg Config, store domain.Store, f Fal, s Slack, log *slog.Logger, now func() time.Time) *Handlers {
	if now == nil {
		now = time.Now
	}
	if cfg.UnknownGrace == 0 {
		cfg.UnknownGrace = 10 * time.Minute
	}
	if cfg.ProvisionTimeout == 0 {
		cfg.ProvisionTimeout = DefaultProvisionTimeout
	}
	if cfg.ApprovalTimeout == 0 {
		cfg.ApprovalTimeout = DefaultApprovalTimeout
	}
	if cfg.UsergroupRefresh == 0 {
		cfg.UsergroupRefresh = DefaultUsergroupRefresh
	}
	if cfg.HomeEvery == 0 {
		cfg.HomeEvery = DefaultHomeEvery
	}
	groups := newGroupCache()
	cfg.Policy.groups = groups
	ctx, cancel := context.WithCancel(context.Background())
	return &Handlers{
		cfg: cfg, store: store, fal: f, slack: s, log: log, now: now,
		groups: groups, groupReader: cfg.Groups, links: cfg.Links,
		workCtx: ctx, cancelWork: cancel, stopping: make(chan struct{}), slots: make(chan struct{}, maxBackgroundWork),
		workers: map[string]bool{}, claimedElsewhere: map[string]bool{},
	}
}

// DefaultProvisionTimeout is PROVISION_TIMEOUT's default: fal makes an H100 machine
// ready in minutes; one that takes an hour is stuck, and costs money meanwhile.
const DefaultProvisionTimeout = time.Hour

// maxBackgroundWork bounds the flows running at once. A burst of commands then
// queues instead of flooding Slack (which allows about one post per second per
// channel) and fal, and the ack path keeps its share of the CPU.
const maxBackgroundWork = 32

// spawn runs slow work in the background, outside the ack path, at most
// maxBackgroundWork at a time.
func (h *Handlers) spawn(name string, fn func(ctx context.Context)) {
	h.startWork(name, true, fn)
}

// spawnNow runs background work that cannot queue: opening a modal, whose
// trigger id is good for only 3 seconds.
func (h *Handlers) spawnNow(name string, fn func(ctx context.Context)) {
	h.startWork(name, false, fn)
}

// startWork runs fn in its own goroutine, counted for Shutdown; queued work first
// takes a slot and lets waiting acks go first.
func (h *Handlers) startWork(name string, queue bool, fn func(ctx context.Context)) {
	h.work.Add(1)
	go func() {
		defer h.work.Done()
		if queue {
			select {
			case h.slots <- struct{}{}:
				defer func() { <-h.slots }()
			case <-h.workCtx.Done():
				return
			}
			h.foreground.wait(h.workCtx, maxHoldBack)
		}
		defer func() {
			if p := recover(); p != nil {
				h.log.Error("background work panicked", "work", name, "panic", fmt.Sprint(p))
			}
		}()
		fn(h.workCtx)
	}()
}

// Foreground counts an envelope as waiting for its ack until the returned func is
// called: queued background work holds back meanwhile (for at most maxHoldBack).
func (h *Handlers) Foreground() (acked func()) { return h.foreground.enter() }

// Shutdown lets background work finish for up to grace, then cancels what is left and
// waits for it to stop. A request cut short stays committed and resumes at the next start.
func (h *Handlers) Shutdown(grace time.Duration) {
	h.stopOnce.Do(func() { close(h.stopping) })
	done := make(chan struct{})
	go func() { h.work.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		h.log.Warn("background work still running at shutdown; cancelling it", "grace", grace)
	}
	h.cancelWork()
	<-done
}

// reqLog is the logger for lines about one request: every one carries its id.
func (h *Handlers) reqLog(r domain.Request) *slog.Logger {
	return h.log.With("request_id", r.ID)
}

// say posts a reply in the request's thread.
func (h *Handlers) say(ctx context.Context, r domain.Request, m Message) {
	if r.ThreadTS == "" {
		return
	}
	if _, err := h.slack.PostMessage(ctx, r.ChannelID, r.ThreadTS, m); err != nil {
		h.reqLog(r).Error("post thread reply", "err", err)
	}
}

// refreshRoot edits the thread root to show the request's current state. The Home
// tabs that show the request follow it too.
func (h *Handlers) refreshRoot(ctx context.Context, r domain.Request) {
	h.homesChanged(ctx, r)
	if r.ThreadTS == "" {
		return
	}
	if err := h.slack.UpdateMessage(ctx, r.ChannelID, r.ThreadTS, rootMessage(r, h.cfg.ApprovalChannel)); err != nil {
		h.reqLog(r).Error("update thread root", "err", err)
	}
}

// refreshCard edits the approval card, which drops its buttons once decided.
func (h *Handlers) refreshCard(ctx context.Context, r domain.Request) {
	if r.ApprovalTS == "" {
		return
	}
	if err := h.slack.UpdateMessage(ctx, r.ApprovalChannel, r.ApprovalTS, h.card(r)); err != nil {
		h.reqLog(r).Error("update approval card", "err", err)
	}
}

// alertAdmins sends a direct message to every admin (named, or in an admin group):
// for problems only they can fix.
func (h *Handlers) alertAdmins(ctx context.Context, text string) {
	admins := h.cfg.Policy.AdminUsers()
	if len(admins) == 0 {
		h.log.Error("no admin to alert", "alert", text)
	}
	for _, admin := range admins {
		dm, err := h.slack.OpenDM(ctx, admin)
		if err == nil {
			_, err = h.slack.PostMessage(ctx, dm, "", textMessage(":rotating_light: "+text))
		}
		if err != nil {
			h.log.Error("alert admin", "admin", admin, "err", err)
		}
	}
}

// alertAdminsEvery alerts the admins about a standing problem (a refused key, a channel
// gpubot cannot post in) at most once per period, however many requests run into it.
func (h *Handlers) alertAdminsEvery(ctx context.Context, problem string, period time.Duration, text string) {
	mark := func(ctx context.Context) (bool, error) { return h.store.MarkSeen(ctx, "alert:"+problem, period) }
	if err := doOnce(ctx, mark, func(ctx context.Context) { h.alertAdmins(ctx, text) }); err != nil {
		// Better twice than never: the admins must hear of it.
		h.log.Error("record alert", "problem", problem, "err", err)
		h.alertAdmins(ctx, text)
	}
}

// tell sends one person a message only they see, in the channel they clicked in,
// or by direct message when there is no such channel.
func (h *Handlers) tell(ctx context.Context, channel, user string, m Message) {
	var err error
	if channel != "" {
		err = h.slack.PostEphemeral(ctx, channel, user, m)
	}
	if channel == "" || err != nil {
		dm, dmErr := h.slack.OpenDM(ctx, user)
		if dmErr == nil {
			_, err = h.slack.PostMessage(ctx, dm, "", m)
		} else {
			err = errors.Join(err, dmErr)
		}
	}
	if err != nil {
		h.log.Error("tell user", "user", user, "err", err)
	}
}

// respond answers a click on an ephemeral message by replacing it; without a
// response_url the person gets a new ephemeral message.
func (h *Handlers) respond(ctx context.Context, responseURL, channel, user string, m Message) {
	if responseURL != "" {
		if err := h.slack.Respond(ctx, responseURL, m, true); err == nil {
			return
		}
	}
	h.tell(ctx, channel, user, m)
}

// cannotPost says whether Slack refused a post because the bot may not post in that channel.
func cannotPost(err error) bool {
	var se slack.SlackErrorResponse
	if errors.As(err, &se) {
		switch se.Err {
		case "not_in_channel", "channel_not_found", "is_archived", "restricted_action":
			return true
		}
	}
	return false
}

// kick makes sure request id is taken one step further: it queues a worker for it, or,
// when one is queued or running already, has that worker look at the request again
// once done. So a request has at most one piece of work at a time however often it is
// kicked (a pass while fal hangs adds nothing), and a kick during the work (a delete
// confirmed while fal creates the machine) is never lost. A kick from the leader's
// pass carries the leader's fence into the worker's writes.
func (h *Handlers) kick(ctx context.Context, id string) {
	h.mu.Lock()
	_, busy := h.workers[id]
	h.workers[id] = busy
	h.mu.Unlock()
	if busy {
		return
	}
	fence, fenced := domain.FenceFrom(ctx)
	h.spawn("advance request", func(ctx context.Context) {
		if fenced {
			ctx = domain.WithFence(ctx, fence)
		}
		h.runWorker(ctx, id)
	})
}

// runWorker advances request id until nobody kicked it during the last step. The
// store's claim keeps other replicas off the request meanwhile; when another holds
// it, that one takes the step, and a pass looks again if it stalls.
func (h *Handlers) runWorker(ctx context.Context, id string) {
	release, ok, err := h.store.ClaimWork(ctx, id)
	h.mu.Lock()
	if ok {
		delete(h.claimedElsewhere, id)
	} else {
		delete(h.workers, id)
		h.claimedElsewhere[id] = true
	}
	h.mu.Unlock()
	if !ok {
		if err != nil {
			h.log.Warn("claim request to advance", "request_id", id, "err", err)
		}
		return
	}
	defer release()
	for {
		h.advance(ctx, id)
		h.mu.Lock()
		again := h.workers[id] && ctx.Err() == nil
		if again {
			h.workers[id] = false
		} else {
			delete(h.workers, id)
		}
		h.mu.Unlock()
		if !again {
			return
		}
	}
}

// claim takes request id for a piece of work outside the request's life (deleting
// the machine of a request that has ended); false if it has work already. release
// must follow a successful claim.
func (h *Handlers) claim(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, busy := h.workers[id]; busy {
		return false
	}
	h.workers[id] = false
	return true
}

func (h *Handlers) release(id string) {
	h.mu.Lock()
	delete(h.workers, id)
	h.mu.Unlock()
}
