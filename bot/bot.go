// Package bot is gpubot's connection to Slack: it opens the Socket Mode link, acks
// every envelope quickly, hands commands and clicks to the handlers, and serves
// health and metrics. New assembles the whole bot from its settings.
package bot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/handlers"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/metrics"
	"github.com/gpubot/gpubot/storage"
)

// Options are what the settings do not say: the clock, the logger, and knobs for tests.
type Options struct {
	Version string
	Logger  *slog.Logger
	Now     func() time.Time // default time.Now
	// ShutdownGrace bounds how long work in flight may take to finish at shutdown.
	ShutdownGrace time.Duration
}

// Bot is gpubot, assembled.
type Bot struct {
	cfg      config.Config
	opts     Options
	log      *slog.Logger
	store    *storage.Store
	client   *slack.Client // slack-go's: auth.test, and the Socket Mode link
	webAPI   *slackAPI     // the Web API calls the handlers make, counted
	socket   *socketmode.Client
	handlers *handlers.Handlers
	metrics  *metrics.Metrics

	connected atomic.Bool
	envelopes sync.WaitGroup // envelopes being handled; waited for at shutdown
}

// New opens the store and builds the fal and Slack clients and the handlers. It does
// not connect yet: Run does.
func New(cfg config.Config, opts Options) (*Bot, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ShutdownGrace == 0 {
		opts.ShutdownGrace = 20 * time.Second
	}
	m := metrics.New()
	falClient, err := fal.New(fal.Config{
		BaseURL: cfg.FalAPIURL,
		APIKey:  cfg.FalAdminAPIKey,
		Version: opts.Version,
		Logger:  opts.Logger,
		Observe: func(op string, status int, d time.Duration) {
			m.FalCalls.WithLabelValues(op, fmt.Sprint(status)).Inc()
			m.FalLatency.WithLabelValues(op).Observe(d.Seconds())
		},
	})
	if err != nil {
		return nil, fmt.Errorf("fal client: %w", err)
	}
	store, err := storage.Open(cfg.DBPath, storage.Options{Now: opts.Now})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	observeSlack := func(method, outcome string) { m.SlackCalls.WithLabelValues(method, outcome).Inc() }
	api := slack.New(cfg.SlackBotToken, slack.OptionAppLevelToken(cfg.SlackAppToken), slack.OptionAPIURL(cfg.SlackAPIURL),
		slack.OptionRetryConfig(slackRetries(cfg.SlackAPIURL, observeSlack)))
	slackCalls := newSlackAPI(api, observeSlack)
	h := handlers.New(handlers.Config{
		Policy: handlers.NewPolicy(cfg.Approvers, cfg.Admins, cfg.ApprovalRequired, cfg.DefaultLifetime, cfg.MaxLifetime).
			WithApprovalsNeeded(cfg.ApprovalsNeeded),
		ApprovalChannel:  cfg.ApprovalChannel,
		NotifyChannel:    cfg.NotifyChannel,
		Admins:           cfg.Admins,
		Prices:           handlers.Prices(cfg.HourlyPrices),
		ReminderBefore:   cfg.ReminderBefore,
		PollInterval:     cfg.PollInterval,
		ProvisionTimeout: cfg.ProvisionTimeout,
		ApprovalTimeout:  cfg.ApprovalTimeout,
		ApprovalReminder: cfg.ApprovalReminder,
		UsergroupRefresh: cfg.UsergroupRefresh,
		Groups:           slackCalls,
		Links:            slackCalls,
		PassDone: func(err error) {
			outcome := "ok"
			if err != nil {
				outcome = "error"
			}
			m.TrackingPasses.WithLabelValues(outcome).Inc()
		},
	}, store, falClient, slackCalls, opts.Logger, opts.Now)
	return &Bot{
		cfg: cfg, opts: opts, log: opts.Logger, store: store, client: api, webAPI: slackCalls,
		socket:   socketmode.New(api),
		handlers: h, metrics: m,
	}, nil
}

// Handlers gives tests and the console the flows the bot runs (e.g. to drive a tracking pass).
func (b *Bot) Handlers() *handlers.Handlers { return b.handlers }

// Metrics gives tests the bot's metrics.
func (b *Bot) Metrics() *metrics.Metrics { return b.metrics }

// Store gives tests and the console the bot's store.
func (b *Bot) Store() *storage.Store { return b.store }

// Run connects to Slack and serves until ctx ends, then stops taking envelopes, lets
// the work in flight finish within the shutdown grace, and closes the store.
func (b *Bot) Run(ctx context.Context) (err error) {
	defer func() {
		b.envelopes.Wait() // each is bounded: it only reads, commits and acks
		b.handlers.Shutdown(b.opts.ShutdownGrace)
		if closeErr := b.store.Close(); closeErr != nil {
			err = errors.Join(err, fmt.Errorf("close store: %w", closeErr))
		}
	}()
	if _, err := b.client.AuthTestContext(ctx); err != nil {
		return fmt.Errorf("check SLACK_BOT_TOKEN with auth.test: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	go func() { errc <- b.serveHTTP(ctx) }()
	go func() { errc <- b.runSocket(ctx) }()
	go func() { errc <- b.handlers.Run(ctx) }()
	go b.readEvents(ctx)
	go b.gaugeRequests(ctx)
	b.log.Info("gpubot running", "config", b.cfg)
	for _, warning := range b.cfg.Warnings() {
		b.log.Warn("setting probably not what you want", "problem", warning)
	}
	var first error
	for range 3 {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		} else if first == nil {
			cancel() // one part ended on its own: stop the rest
		}
	}
	if ctx.Err() != nil && first == nil {
		b.log.Info("gpubot stopping")
	}
	return first
}

// runSocket keeps the Socket Mode link up. slack-go reconnects by itself; RunContext
// only returns for a token Slack refuses, which no retry can fix.
func (b *Bot) runSocket(ctx context.Context) error {
	err := b.socket.RunContext(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("socket mode (check SLACK_APP_TOKEN: an app-level token with connections:write): %w", err)
}

// readEvents drains the client's event channel and never blocks on a handler: each
// envelope is handled and acked in its own goroutine, so a slow one cannot stall the
// websocket reader behind it.
func (b *Bot) readEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case evt := <-b.socket.Events:
			// An envelope taken is finished even if shutdown begins meanwhile.
			b.dispatch(context.WithoutCancel(ctx), evt)
		}
	}
}

func (b *Bot) dispatch(ctx context.Context, evt socketmode.Event) {
	switch evt.Type {
	case socketmode.EventTypeConnected:
		b.connected.Store(true)
		b.log.Info("connected to Slack")
	case socketmode.EventTypeConnecting, socketmode.EventTypeConnectionError, socketmode.EventTypeDisconnect:
		b.connected.Store(false)
		b.log.Info("Socket Mode link down; slack-go reconnects", "event", evt.Type)
	case socketmode.EventTypeInvalidAuth:
		b.connected.Store(false)
		b.log.Error("Slack refused the app token", "event", evt.Type)
	case socketmode.EventTypeSlashCommand:
		cmd, ok := evt.Data.(slack.SlashCommand)
		if ok && evt.Request != nil {
			b.handleBeforeBackground(func() { b.onSlashCommand(ctx, *evt.Request, cmd) })
		}
	case socketmode.EventTypeInteractive:
		cb, ok := evt.Data.(slack.InteractionCallback)
		if ok && evt.Request != nil {
			b.handleBeforeBackground(func() { b.onInteraction(ctx, *evt.Request, cb) })
		}
	case socketmode.EventTypeEventsAPI:
		if evt.Request != nil {
			b.handle(func() { b.ack(*evt.Request, time.Now(), nil) })
		}
	case socketmode.EventTypeErrorWriteFailed, socketmode.EventTypeIncomingError, socketmode.EventTypeErrorBadMessage:
		b.log.Warn("Socket Mode error", "event", evt.Type, "err", socketError(evt.Data))
	}
}

// socketError is the cause of a Socket Mode error event, without the message or ack
// it came with: those can hold what people typed, pasted keys included.
func socketError(data any) string {
	switch d := data.(type) {
	case *socketmode.ErrorBadMessage:
		return d.Cause.Error()
	case *socketmode.ErrorWriteFailed:
		return d.Cause.Error()
	case error:
		return d.Error()
	}
	return fmt.Sprintf("%T", data)
}

// handle runs one envelope in its own goroutine, counted so shutdown can wait for it.
func (b *Bot) handle(fn func()) {
	b.envelopes.Add(1)
	go func() {
		defer b.envelopes.Done()
		fn()
	}()
}

// handleBeforeBackground handles an envelope whose ack someone waits for: from the
// moment it is taken until it is acked, background work holds back, so a burst of
// commands is acked before the slow work they started competes with it.
func (b *Bot) handleBeforeBackground(fn func()) {
	acked := b.handlers.Foreground()
	b.handle(func() {
		defer acked()
		fn()
	})
}

// onSlashCommand answers a command. A redelivered envelope the handlers find already
// handled (in the store, so also across a restart) is acked with its first answer.
func (b *Bot) onSlashCommand(ctx context.Context, req socketmode.Request, cmd slack.SlashCommand) {
	start := time.Now()
	reply := b.handlers.Command(ctx, req.EnvelopeID, cmd)
	b.metrics.Commands.WithLabelValues(commandName(cmd.Text), outcomeOf(reply)).Inc()
	if reply == nil {
		b.ack(req, start, nil)
		return
	}
	if err := b.ack(req, start, reply); err != nil {
		// Too large for an ack (Slack drops those), or the link is down: ack plainly
		// and answer through response_url instead.
		b.ack(req, start, nil)
		b.respondLater(cmd.ResponseURL, handlers.Message{Text: reply.Text, Blocks: reply.Blocks})
	}
}

func (b *Bot) onInteraction(ctx context.Context, req socketmode.Request, cb slack.InteractionCallback) {
	start := time.Now()
	if resp := b.handlers.Interaction(ctx, req.EnvelopeID, cb); len(resp) > 0 {
		b.ack(req, start, resp)
		return
	}
	b.ack(req, start, nil)
}

// ackTimeout bounds queueing an ack: past Slack's 3 seconds nobody is waiting for it,
// and a link that is down must not hold an envelope's goroutine forever.
const ackTimeout = 3 * time.Second

// ack answers an envelope, with payload when it is not nil, and records how long the
// bot took.
func (b *Bot) ack(req socketmode.Request, start time.Time, payload any) error {
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	if err := b.socket.AckCtx(ctx, req.EnvelopeID, payload); err != nil {
		b.log.Error("ack envelope", "envelope", req.EnvelopeID, "err", err)
		return err
	}
	b.metrics.AckLatency.Observe(time.Since(start).Seconds())
	return nil
}

func (b *Bot) respondLater(responseURL string, m handlers.Message) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := b.webAPI.Respond(ctx, responseURL, m, false); err != nil {
			b.log.Error("answer through response_url", "err", err)
		}
	}()
}

// commandName is the first word of a command, for metrics: never free text.
func commandName(text string) string {
	fields := strings.Fields(strings.ToLower(text))
	if len(fields) == 0 {
		return "help"
	}
	switch fields[0] {
	case "help", "key", "create", "list", "status", "delete", "extend":
		return fields[0]
	}
	return "unknown"
}

func outcomeOf(reply *handlers.Reply) string {
	if reply == nil {
		return handlers.OutcomeOK
	}
	return reply.Outcome
}

// Ready says whether the Socket Mode link is up; /readyz checks the store beside it.
func (b *Bot) Ready() error {
	if !b.connected.Load() {
		return errors.New("slack: not connected")
	}
	return nil
}

// serveHTTP serves /healthz, /readyz and /metrics on HTTP_ADDR until ctx ends.
func (b *Bot) serveHTTP(ctx context.Context) error {
	if b.cfg.HTTPAddr == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", b.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR %s: %w", b.cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler: b.metrics.Handler(
			metrics.Check{Name: "slack", Ready: b.Ready},
			metrics.Check{Name: "store", Ready: b.storeReady},
		),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve HTTP: %w", err)
	}
	return nil
}

// gaugeRequests keeps the requests-by-state gauges current.
func (b *Bot) gaugeRequests(ctx context.Context) {
	ticker := time.NewTicker(15 * time.Second)
	defer ticker.Stop()
	for {
		reqs, err := b.store.Unfinished(ctx)
		if err == nil {
			counts := map[storage.State]int{}
			for _, r := range reqs {
				counts[r.State]++
			}
			b.metrics.Requests.Reset()
			for state, n := range counts {
				b.metrics.Requests.WithLabelValues(string(state)).Set(float64(n))
			}
			b.metrics.ApprovalsWaiting.Set(float64(counts[storage.StateAwaitingApproval]))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// storeReady says whether the store answers.
func (b *Bot) storeReady() error {
	_, err := b.store.AuditLog(context.Background(), 0, 1)
	return err
}
