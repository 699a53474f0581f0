// Package falsim is an in-process stand-in for fal's compute API, serving
// real HTTP on 127.0.0.1 like httptest. Instances move from pending to
// provisioning to ready as time passes (Options.ProvisionAfter and
// ReadyAfter) or, in manual mode, only by Step and SetStatus; create
// honours Idempotency-Key for 10 minutes; faults (5xx, 429, hangs, dropped
// connections, lost responses) can be injected on demand or at random.
// With Options.Contract every request and response is checked against
// fal's OpenAPI document. A Server is safe for concurrent use, and Close
// releases every request and goroutine.
package falsim

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gpubot/gpubot/fal"
)

// Defaults for Options fields left zero.
const (
	DefaultProvisionAfter = 50 * time.Millisecond
	DefaultReadyAfter     = 200 * time.Millisecond
	DefaultPageSize       = 100
	// IdempotencyWindow is how long fal replays a create for the same key.
	IdempotencyWindow = 10 * time.Minute
)

// maxRequestBody bounds what a handler reads from a request.
const maxRequestBody = 1 << 20

// Options configures a Server.
type Options struct {
	// APIKey is the key that works ("Authorization: Key <APIKey>"); other
	// keys get 401. Empty accepts any non-empty key.
	APIKey string
	// ForbiddenKeys are known keys without compute permission: 403.
	ForbiddenKeys  []string
	ProvisionAfter time.Duration // pending -> provisioning after this (default 50ms)
	ReadyAfter     time.Duration // provisioning -> ready after this (default 200ms)
	// Manual turns the timers off: statuses move only by Step and SetStatus.
	Manual bool
	// PageSize is the list page size when the request has no limit (default 100).
	PageSize int
	// CreateDelay is how long each create takes before answering.
	CreateDelay time.Duration
	// Now is the clock for idempotency expiry; default time.Now.
	Now func() time.Time

	// Contract, when set, checks every request and response against fal's
	// OpenAPI document and reports each breach to OnViolation.
	Contract    *Contract
	OnViolation func(Violation)
	// Logger receives the HTTP server's own errors; default: discarded.
	Logger *slog.Logger
}

// Server is a running simulated fal.
type Server struct {
	opts    Options
	http    *http.Server
	baseURL string

	closing   chan struct{} // closed by Close: releases hung requests
	closeOnce sync.Once
	handlers  sync.WaitGroup // requests being served
	served    chan struct{}  // closed when the accept loop has stopped

	mu    sync.Mutex
	state state
}

// New starts a Server on 127.0.0.1 with a random port. Like httptest, it
// panics if it cannot listen: there is nothing a test could do instead.
func New(opts Options) *Server {
	opts = withDefaults(opts)
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("falsim: listen on 127.0.0.1: %v", err))
	}
	s := &Server{
		opts:    opts,
		baseURL: "http://" + listener.Addr().String() + "/v1",
		closing: make(chan struct{}),
		served:  make(chan struct{}),
		state:   newState(),
	}
	s.http = &http.Server{
		Handler:           s.track(s.routes()),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.served)
		_ = s.http.Serve(listener) // returns http.ErrServerClosed on Close
	}()
	return s
}

func withDefaults(opts Options) Options {
	if opts.ProvisionAfter <= 0 {
		opts.ProvisionAfter = DefaultProvisionAfter
	}
	if opts.ReadyAfter <= 0 {
		opts.ReadyAfter = DefaultReadyAfter
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Contract != nil && opts.OnViolation == nil {
		logger := opts.Logger
		opts.OnViolation = func(v Violation) { logger.Error("falsim: contract violation", "violation", v.Error()) }
	}
	return opts
}

// URL is the base URL to give a fal client, e.g. "http://127.0.0.1:1234/v1".
func (s *Server) URL() string { return s.baseURL }

// Close stops the server: hung and delayed requests are released, open
// connections closed, and it returns once every handler has finished.
// Calling it again does nothing.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.state.closed = true
		s.mu.Unlock()
		close(s.closing)
		_ = s.http.Close()
		s.handlers.Wait()
		<-s.served
	})
}

// track counts in-flight requests so Close can wait for them; it refuses
// new ones once Close has begun.
func (s *Server) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.state.closed {
			s.mu.Unlock()
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusServiceUnavailable, "server_error", "the server is shutting down")
			return
		}
		s.handlers.Add(1)
		s.mu.Unlock()
		defer s.handlers.Done()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/compute/instances", s.operation(fal.OpCreate, s.handleCreate))
	mux.Handle("GET /v1/compute/instances", s.operation(fal.OpList, s.handleList))
	mux.Handle("GET /v1/compute/instances/{id}", s.operation(fal.OpGet, s.handleGet))
	mux.Handle("DELETE /v1/compute/instances/{id}", s.operation(fal.OpDelete, s.handleDelete))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	if s.opts.Contract == nil {
		return mux
	}
	return s.opts.Contract.Middleware(mux, s.opts.OnViolation)
}

// operation counts the call, then applies an injected fault or the
// authorization check before the operation's own handler.
func (s *Server) operation(op string, handle http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fault, injected := s.countCallAndTakeFault(op)
		if injected && s.applyFault(w, r, fault) {
			return
		}
		if injected && fault.LoseResponse {
			if s.authorized(&discardResponse{}, r) {
				handle(&discardResponse{}, r)
			}
			dropConnection(w)
			return
		}
		if !s.authorized(w, r) {
			return
		}
		handle(w, r)
	})
}

func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Key ")
	switch {
	case !ok || key == "":
		writeError(w, http.StatusUnauthorized, "authorization_error", `Authentication required: send "Authorization: Key <admin key>"`)
		return false
	case slices.Contains(s.opts.ForbiddenKeys, key):
		writeError(w, http.StatusForbidden, "authorization_error", "Access denied: the key lacks compute permission")
		return false
	case s.opts.APIKey != "" && key != s.opts.APIKey:
		writeError(w, http.StatusUnauthorized, "authorization_error", "Invalid API key")
		return false
	}
	return true
}

// pause waits for d unless the client goes away or the server closes
// first; it reports whether the full time passed.
func (s *Server) pause(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closing:
		return false
	}
}

// errorTypeFor maps a status to the error type fal would send with it.
func errorTypeFor(status int) string {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return fal.ErrorTypeAuthorization
	case status == http.StatusNotFound:
		return fal.ErrorTypeNotFound
	case status == http.StatusTooManyRequests:
		return fal.ErrorTypeRateLimited
	case status == http.StatusNotImplemented:
		return fal.ErrorTypeNotImplemented
	case status >= 500:
		return fal.ErrorTypeServer
	default:
		return fal.ErrorTypeValidation
	}
}

type errorDetail struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}

// writeError answers in fal's error shape, with a fresh request id.
func writeError(w http.ResponseWriter, status int, errType, message string) {
	writeJSON(w, status, struct {
		Error errorDetail `json:"error"`
	}{errorDetail{Type: errType, Message: message, RequestID: newID("req_")}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeBody(w, status, mustJSON(v))
}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// newID returns prefix plus 12 random lowercase base32 characters.
func newID(prefix string) string {
	return prefix + strings.ToLower(rand.Text()[:12])
}
