// Package bot is gpubot's connection to Slack: it opens the Socket Mode link, acks
// every envelope quickly, hands commands and clicks to the handlers, makes the Web API
// calls they ask for, and serves health and metrics.
package bot

import (
	"context"
	"encoding/json"
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
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"

	"github.com/gpubot/gpubot/handlers"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/metrics"
)

// LinkConfig is how gpubot reaches Slack.
type LinkConfig struct {
	BotToken, AppToken string
	APIURL             string // Web API base, ending in /api/
}

// Link is gpubot's way to Slack: slack-go's client, retrying what Slack asks to be
// retried, and the Web API calls the handlers make, counted in m.
type Link struct {
	client *slack.Client
	webAPI *slackAPI
}

// NewLink builds the link; nothing is called yet.
func NewLink(cfg LinkConfig, m *metrics.Metrics) *Link {
	observe := func(method, outcome string) { m.SlackCalls.WithLabelValues(method, outcome).Inc() }
	client := slack.New(cfg.BotToken, slack.OptionAppLevelToken(cfg.AppToken), slack.OptionAPIURL(cfg.APIURL),
		slack.OptionRetryConfig(slackRetries(cfg.APIURL, observe)))
	return &Link{client: client, webAPI: newSlackAPI(client, observe)}
}

// WebAPI is what the handlers use to talk to Slack.
func (l *Link) WebAPI() handlers.Slack { return l.webAPI }

// Groups reads the members of Slack user groups, for APPROVERS and ADMINS.
func (l *Link) Groups() handlers.GroupReader { return l.webAPI }

// Permalinks gives links to messages, for the DM that tells a requester a decision.
func (l *Link) Permalinks() handlers.Permalinker { return l.webAPI }

// Homes publishes people's Home tabs.
func (l *Link) Homes() handlers.HomePublisher { return l.webAPI }

// Flows is what the bot hands envelopes to, and what runs beside it until it stops.
type Flows interface {
	Command(ctx context.Context, envelopeID string, c slack.SlashCommand) *handlers.Reply
	Interaction(ctx context.Context, envelopeID string, cb slack.InteractionCallback) json.RawMessage
	// HomeOpened answers someone opening the app's Home tab.
	HomeOpened(ctx context.Context, user domain.UserRef)
	// Foreground counts an envelope as waiting for its ack until acked is called.
	Foreground() (acked func())
	Run(ctx context.Context) error
	Shutdown(grace time.Duration)
}

// Options are the bot's settings.
type Options struct {
	HTTPAddr string // /healthz, /readyz and /metrics; "" for none
	Logger   *slog.Logger
	// ShutdownGrace bounds how long work in flight may take to finish at shutdown.
	ShutdownGrace time.Duration
	// Checks are what /readyz asks besides the Socket Mode link (the store, say).
	Checks []metrics.Check
}

// Bot serves Slack over Socket Mode.
type Bot struct {
	opts     Options
	log      *slog.Logger
	link     *Link
	socket   *socketmode.Client
	handlers Flows
	metrics  *metrics.Metrics

	connected atomic.Bool
	envelopes sync.WaitGroup // envelopes being handled; waited for at shutdown
	intake    intake         // admits envelopes until the link closes
}

// New builds the bot on link, handing envelopes to flows. It does not connect yet:
// Run does.
func New(link *Link, flows Flows, m *metrics.Metrics, opts Options) *Bot {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Bot{opts: opts, log: opts.Logger, link: link, socket: socketmode.New(link.client), handlers: flows, metrics: m}
}

// Run connects to Slack and serves until ctx ends, with the flows running beside it.
// Then it stops the flows' background work, keeps the link up until every envelope
// already taken is acked (Slack fails a command or click whose connection closes
// before its ack, and does not send it again), closes the link, and lets the work in
// flight finish within the shutdown grace.
func (b *Bot) Run(ctx context.Context) error {
	defer func() {
		b.envelopes.Wait() // each is bounded: it only reads, commits and acks
		b.handlers.Shutdown(b.opts.ShutdownGrace)
	}()
	if _, err := b.link.client.AuthTestContext(ctx); err != nil {
		return fmt.Errorf("check SLACK_BOT_TOKEN with auth.test: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	linkCtx, closeLink := context.WithCancel(context.WithoutCancel(ctx))
	defer closeLink()
	go func() {
		<-ctx.Done()
		b.drain()
		closeLink()
	}()
	linkDown := make(chan struct{})
	errc := make(chan error, 3)
	go func() { errc <- b.serveHTTP(ctx) }()
	go func() {
		defer close(linkDown)
		errc <- b.runSocket(linkCtx)
	}()
	go func() { errc <- b.handlers.Run(ctx) }()
	go b.readEvents(context.WithoutCancel(ctx), linkDown)
	var first error
	for range 3 {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		} else if first == nil {
			cancel() // one part ended on its own: stop the rest
		}
	}
	if first == nil {
		b.log.Info("gpubot stopping")
	}
	return first
}

// drain waits, within the shutdown grace, until the intake is quiet and closes it:
// envelopes that arrive meanwhile are taken and acked too.
func (b *Bot) drain() {
	deadline := time.Now().Add(b.opts.ShutdownGrace)
	for now := time.Now(); now.Before(deadline); now = time.Now() {
		if b.intake.closeIfQuiet(now, quietBeforeClose, len(b.socket.Events)) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	if waiting := b.intake.close(); waiting > 0 {
		b.log.Warn("closing the Slack link with envelopes not yet acked: the shutdown grace is over", "envelopes", waiting)
	}
}

// quietBeforeClose is how long the link stays up at shutdown after the last ack was
// queued: writing a queued ack takes microseconds.
const quietBeforeClose = 50 * time.Millisecond

// runSocket keeps the Socket Mode link up. slack-go reconnects by itself; RunContext
// only returns for a token Slack refuses, which no retry can fix.
func (b *Bot) runSocket(ctx context.Context) error {
	err := b.socket.RunContext(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("socket mode (check SLACK_APP_TOKEN: an app-level token with connections:write): %w", err)
}

// readEvents drains the client's event channel until the link is down, and never
// blocks on a handler: each envelope is handled and acked in its own goroutine, so a
// slow one cannot stall the websocket reader behind it. An envelope taken is finished
// even if shutdown begins meanwhile (ctx does not end).
func (b *Bot) readEvents(ctx context.Context, linkDown <-chan struct{}) {
	for {
		select {
		case <-linkDown:
			for {
				select {
				case evt := <-b.socket.Events:
					b.dispatch(ctx, evt) // read before the link closed: the intake refuses it
				default:
					return
				}
			}
		case evt := <-b.socket.Events:
			b.dispatch(ctx, evt)
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
			b.handle(evt, true, func() { b.onSlashCommand(ctx, *evt.Request, cmd) })
		}
	case socketmode.EventTypeInteractive:
		cb, ok := evt.Data.(slack.InteractionCallback)
		if ok && evt.Request != nil {
			b.handle(evt, true, func() { b.onInteraction(ctx, *evt.Request, cb) })
		}
	case socketmode.EventTypeEventsAPI:
		if evt.Request != nil {
			b.handle(evt, false, func() { b.onEvent(ctx, *evt.Request, evt.Data) })
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

// handle runs one envelope in its own goroutine, counted so shutdown can wait for it,
// unless the link is closing: then its ack could not reach Slack, so it is left
// undone. While an envelope whose ack someone waits for (foreground) is handled,
// background work holds back, so a burst of commands is acked before the slow work
// they started competes with it.
func (b *Bot) handle(evt socketmode.Event, foreground bool, fn func()) {
	id := evt.Request.EnvelopeID
	if !b.intake.take() {
		b.log.Warn("an envelope arrived as the Slack link closed: not handled, so Slack tells its sender it failed",
			"envelope", id, "type", evt.Type)
		return
	}
	b.log.Debug("envelope taken", "envelope", id, "type", evt.Type)
	acked := func() {}
	if foreground {
		acked = b.handlers.Foreground()
	}
	b.envelopes.Add(1)
	go func() {
		defer b.envelopes.Done()
		defer func() { b.intake.done(time.Now()) }()
		defer acked()
		fn()
	}()
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

// onEvent acks an Events API envelope at once (Slack retries what is not acked within
// 3 seconds), then answers the one event gpubot subscribes to: someone opening the
// Home tab. A retried opening publishes the tab again, which is harmless.
func (b *Bot) onEvent(ctx context.Context, req socketmode.Request, data any) {
	b.ack(req, time.Now(), nil)
	outer, ok := data.(slackevents.EventsAPIEvent)
	if !ok {
		return
	}
	opened, ok := outer.InnerEvent.Data.(*slackevents.AppHomeOpenedEvent)
	if !ok || opened.Tab != "home" || opened.User == "" {
		return
	}
	b.handlers.HomeOpened(ctx, domain.UserRef{TeamID: outer.TeamID, UserID: opened.User})
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
		if err := b.link.webAPI.Respond(ctx, responseURL, m, false); err != nil {
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

// Ready says whether the Socket Mode link is up; /readyz asks the other checks beside it.
func (b *Bot) Ready() error {
	if !b.connected.Load() {
		return errors.New("slack: not connected")
	}
	return nil
}

// serveHTTP serves /healthz, /readyz and /metrics on HTTP_ADDR until ctx ends.
func (b *Bot) serveHTTP(ctx context.Context) error {
	if b.opts.HTTPAddr == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", b.opts.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR %s: %w", b.opts.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           b.metrics.Handler(append([]metrics.Check{{Name: "slack", Ready: b.Ready}}, b.opts.Checks...)...),
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
