package slacksim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

const (
	defaultTeamID       = "T0GPUBOT"
	defaultBotUserID    = "UBOT"
	defaultPingInterval = 5 * time.Second
	defaultAckTimeout   = 3 * time.Second
	appID               = "A0GPUBOT"
	botID               = "B0GPUBOT"
	teamDomain          = "gpubot-sim"
	teamName            = "gpubot sim"
	botName             = "gpubot"
	verificationToken   = "simverificationtoken"

	triggerLifetime     = 3 * time.Second
	responseURLLifetime = 30 * time.Minute
	responseURLMaxUses  = 5
	maxModalStack       = 3

	// Bounds on what the simulator keeps, so a long benchmark or console session
	// cannot grow it without limit.
	maxCalls           = 10000
	maxMessages        = 20000
	maxEnvelopes       = 20000
	maxProtocolErrors  = 1000
	maxObserverBacklog = 10000
	maxRequestBody     = 4 << 20
)

// ErrClosed is returned by waits that were cut short by Close.
var ErrClosed = errors.New("slacksim: server closed")

// Options configures a Server. BotToken and AppToken are required.
type Options struct {
	BotToken, AppToken string
	TeamID             string        // default "T0GPUBOT"
	BotUserID          string        // default "UBOT"
	PingInterval       time.Duration // websocket PING frames; default 5 s
	RedeliverAfter     time.Duration // resend unacked Events API envelopes after this (up to 3 times); 0 = off
	AckTimeout         time.Duration // after this an unacked envelope is late, as Slack's 3 s; default 3 s
	Now                func() time.Time
	Observer           func(Event) // called in order, from one goroutine, for every visible change; must not block
	// PublishesPerMinute is the workspace's views.publish limit; default 100 (Tier 4).
	PublishesPerMinute int
	Logger             *slog.Logger // default: discard
	// Seed makes the choice of a connection for each envelope repeatable;
	// 0 picks a random seed.
	Seed uint64
}

// Server is a Slack workspace with one bot installed, served on 127.0.0.1.
type Server struct {
	opts     Options
	logger   *slog.Logger
	listener net.Listener
	http     *http.Server
	baseURL  string
	wg       sync.WaitGroup
	events   chan Event

	mu      sync.Mutex
	closed  bool
	changed chan struct{}
	// changedClosedForGood is set by Close: changed then stays closed.
	changedClosedForGood bool
	counters             map[string]int
	lastTS               int64
	lastMark             Mark
	timers               map[*timerEntry]struct{}

	directory
	store
	socket
	homeTabs
	faults     map[string][]*fault
	calls      []Call
	callCounts map[string]int
}

type timerEntry struct{ timer *time.Timer }

// New starts a simulator listening on 127.0.0.1 at a free port. It panics if it
// cannot listen or if a token is missing, since no test can run without them.
func New(opts Options) *Server {
	if opts.BotToken == "" || opts.AppToken == "" {
		panic("slacksim: Options.BotToken and Options.AppToken are required")
	}
	applyDefaults(&opts)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("slacksim: listen on 127.0.0.1: %v", err))
	}
	s := &Server{
		opts:       opts,
		logger:     opts.Logger,
		listener:   listener,
		baseURL:    "http://" + listener.Addr().String(),
		changed:    make(chan struct{}),
		counters:   map[string]int{},
		timers:     map[*timerEntry]struct{}{},
		directory:  newDirectory(),
		store:      newStore(),
		socket:     newSocket(opts.Seed),
		homeTabs:   newHomeTabs(),
		faults:     map[string][]*fault{},
		callCounts: map[string]int{},
	}
	s.users[opts.BotUserID] = &user{id: opts.BotUserID, name: botName, realName: botName, isBot: true}
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	if opts.Observer != nil {
		s.events = make(chan Event, maxObserverBacklog)
		s.wg.Go(s.dispatchEvents)
	}
	s.wg.Go(func() {
		if err := s.http.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("slacksim: serve", "err", err)
		}
	})
	return s
}

func applyDefaults(opts *Options) {
	if opts.TeamID == "" {
		opts.TeamID = defaultTeamID
	}
	if opts.BotUserID == "" {
		opts.BotUserID = defaultBotUserID
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = defaultPingInterval
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = defaultAckTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/{method}", s.serveAPI)
	mux.HandleFunc("/link/", s.serveSocket)
	mux.HandleFunc("/response/{id}", s.serveResponseURL)
	return mux
}

// APIURL is the Web API base for slack.OptionAPIURL; it ends in "/".
func (s *Server) APIURL() string { return s.baseURL + "/api/" }

// Close disconnects every websocket, stops the HTTP server and waits for every
// goroutine the simulator started. Waits in progress return ErrClosed.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for entry := range s.timers {
		entry.timer.Stop()
	}
	clear(s.timers)
	conns := s.liveConnsLocked()
	if s.events != nil {
		close(s.events)
	}
	s.notifyLocked()
	s.mu.Unlock()

	for _, c := range conns {
		c.shutdown()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		_ = s.http.Close()
	}
	s.wg.Wait()
}

func (s *Server) dispatchEvents() {
	for event := range s.events {
		s.opts.Observer(event)
	}
}

// emitLocked queues an event for the observer. A full backlog drops the event
// rather than stall Slack for everyone.
func (s *Server) emitLocked(event Event) {
	if s.events == nil || s.closed {
		return
	}
	select {
	case s.events <- event:
	default:
		s.logger.Warn("slacksim: observer backlog full, event dropped", "kind", event.Kind)
	}
}

// notifyLocked wakes every waiter: something changed.
func (s *Server) notifyLocked() {
	if s.changedClosedForGood {
		return
	}
	close(s.changed)
	if s.closed {
		// Leave it closed so that every later waiter wakes at once.
		s.changedClosedForGood = true
		return
	}
	s.changed = make(chan struct{})
}

// WaitUntil waits (ctx-bounded) until ready returns true, re-checking it on every
// change in the simulator. ready runs without the simulator's lock, so it may call
// any method of s.
func (s *Server) WaitUntil(ctx context.Context, ready func() bool) error {
	for {
		s.mu.Lock()
		closed, changed := s.closed, s.changed
		s.mu.Unlock()
		if ready() {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("slacksim: wait: %w", ctx.Err())
		}
	}
}

// afterFuncLocked runs f with s.mu held after d (wall clock), unless Close came first.
func (s *Server) afterFuncLocked(d time.Duration, f func()) {
	if s.closed {
		return
	}
	entry := &timerEntry{}
	s.timers[entry] = struct{}{}
	entry.timer = time.AfterFunc(d, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, pending := s.timers[entry]; !pending || s.closed {
			return
		}
		delete(s.timers, entry)
		f()
	})
}

func (s *Server) now() time.Time { return s.opts.Now() }

// nextIDLocked returns prefix followed by a per-prefix counter.
func (s *Server) nextIDLocked(prefix string) string {
	s.counters[prefix]++
	return fmt.Sprintf("%s%06d", prefix, s.counters[prefix])
}

// nextTSLocked makes a message timestamp from the clock, unique and increasing even
// when the clock stands still.
func (s *Server) nextTSLocked() string {
	micros := s.now().UnixMicro()
	if micros <= s.lastTS {
		micros = s.lastTS + 1
	}
	s.lastTS = micros
	return fmt.Sprintf("%d.%06d", micros/1_000_000, micros%1_000_000)
}

func randomHex(bytes int) string {
	buf := make([]byte, bytes)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

func (s *Server) protocolErrorLocked(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	s.logger.Warn("slacksim: protocol error", "error", text)
	s.protocolErrors = append(s.protocolErrors, text)
	if len(s.protocolErrors) > maxProtocolErrors {
		s.protocolErrors = s.protocolErrors[len(s.protocolErrors)-maxProtocolErrors:]
	}
	s.notifyLocked()
}

// ProtocolErrors lists what the bot did that Slack would have refused or ignored on
// the websocket: refused or malformed acks, acks for unknown envelopes, invalid ack
// payloads. Tests can assert that it is empty.
func (s *Server) ProtocolErrors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.protocolErrors...)
}
