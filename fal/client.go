// Package fal is a client for fal's Platform API compute instances: create,
// list, get and delete GPU instances with an admin API key.
//
// Calls are retried on 429 (honouring Retry-After), 5xx and network errors
// with capped exponential backoff, bounded by Config.MaxElapsed and the
// caller's context. Other 4xx answers are returned at once; use the Is*
// classifiers to tell them apart. The API key never appears in a log line or
// an error.
package fal

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-resty/resty/v2"
)

// Defaults for Config fields left zero.
const (
	DefaultBaseURL        = "https://api.fal.ai/v1"
	DefaultTimeout        = 15 * time.Second
	DefaultMaxElapsed     = time.Minute
	DefaultRetryBaseDelay = 200 * time.Millisecond
	DefaultRetryMaxDelay  = 5 * time.Second
)

// defaultMaxListPages stops List against a server whose cursors never end.
const defaultMaxListPages = 10_000

// maxResponseBytes bounds what is read from one response.
const maxResponseBytes = 8 << 20

// Operation names, as passed to Config.Observe.
const (
	OpCreate = "create"
	OpList   = "list"
	OpGet    = "get"
	OpDelete = "delete"
)

// Config configures a Client. Only APIKey is required.
type Config struct {
	BaseURL    string        // default DefaultBaseURL
	APIKey     string        // fal admin API key with compute permission
	Version    string        // sent as User-Agent "gpubot/<version>"
	Timeout    time.Duration // per attempt, default 15s
	MaxElapsed time.Duration // no retry starts after this, default 1m (a call ends within MaxElapsed+Timeout)
	Logger     *slog.Logger  // optional; never sees the API key
	// Observe, when set, is called after every attempt (status 0 when no
	// HTTP answer came back), e.g. to feed metrics.
	Observe func(op string, status int, d time.Duration)

	RetryBaseDelay time.Duration // first backoff step, default 200ms
	RetryMaxDelay  time.Duration // backoff cap, default 5s
	// ListPageSize is sent as limit on each list call; 0 lets fal choose.
	ListPageSize int
	// Transport, when set, carries the HTTP requests (e.g. a proxy or a
	// recording transport in tests).
	Transport http.RoundTripper
}

// Client calls fal's compute API. It is safe for concurrent use.
type Client struct {
	http         *resty.Client
	apiKey       string
	log          *slog.Logger
	observe      func(op string, status int, d time.Duration)
	timeout      time.Duration
	maxElapsed   time.Duration
	baseDelay    time.Duration
	maxDelay     time.Duration
	pageSize     int
	maxListPages int
}

// New checks cfg and returns a Client. It makes no network call.
func New(cfg Config) (*Client, error) {
	if err := checkAPIKey(cfg.APIKey); err != nil {
		return nil, err
	}
	baseURL, err := checkBaseURL(cmp.Or(cfg.BaseURL, DefaultBaseURL))
	if err != nil {
		return nil, err
	}
	if cfg.ListPageSize < 0 {
		return nil, errors.New("fal: ListPageSize must not be negative")
	}
	c := &Client{
		apiKey:       cfg.APIKey,
		log:          cfg.Logger,
		observe:      cfg.Observe,
		timeout:      positiveOr(cfg.Timeout, DefaultTimeout),
		maxElapsed:   positiveOr(cfg.MaxElapsed, DefaultMaxElapsed),
		baseDelay:    positiveOr(cfg.RetryBaseDelay, DefaultRetryBaseDelay),
		maxDelay:     positiveOr(cfg.RetryMaxDelay, DefaultRetryMaxDelay),
		pageSize:     cfg.ListPageSize,
		maxListPages: defaultMaxListPages,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.maxDelay = max(c.maxDelay, c.baseDelay)
	c.http = newRestyClient(baseURL, cfg)
	return c, nil
}

// newRestyClient sets up resty for single attempts: retries are done by
// Client.do (see retry.go), and resty's logging and request dumps stay off
// because they would print the Authorization header.
func newRestyClient(baseURL string, cfg Config) *resty.Client {
	hc := &http.Client{
		Transport: cfg.Transport,
		// Following a redirect could carry the key to another host; a 3xx
		// is returned to the caller as an error instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return resty.NewWithClient(hc).
		SetLogger(discardLogger{}).
		SetDisableWarn(true).
		SetDebug(false).
		SetRetryCount(0).
		SetBaseURL(baseURL).
		SetAuthScheme("Key").
		SetAuthToken(cfg.APIKey).
		SetHeader("User-Agent", "gpubot/"+cmp.Or(cfg.Version, "dev")).
		SetHeader("Accept", "application/json").
		SetResponseBodyLimit(maxResponseBytes)
}

func checkAPIKey(key string) error {
	if key == "" {
		return errors.New("fal: an API key is required")
	}
	for _, r := range key {
		if r <= ' ' || r == 0x7f {
			// The key itself is never quoted: it is a secret.
			return errors.New("fal: the API key contains whitespace or control characters")
		}
	}
	return nil
}

func checkBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's error quotes the URL, which might hold credentials.
		return "", errors.New("fal: the base URL is not a valid URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("fal: base URL %q must be an absolute http(s) URL", u.Redacted())
	}
	return strings.TrimRight(raw, "/"), nil
}

// Create asks fal for a new instance. idempotencyKey must be stored by the
// caller before calling, so that a retry (here or after a restart) reuses it
// and fal creates at most one instance per key.
func (c *Client) Create(ctx context.Context, req CreateRequest, idempotencyKey string) (Instance, error) {
	if err := req.Validate(); err != nil {
		return Instance{}, fmt.Errorf("create instance: %w", err)
	}
	if strings.TrimSpace(idempotencyKey) == "" {
		return Instance{}, fmt.Errorf("create instance: %w", invalidf("an idempotency key is required"))
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Instance{}, fmt.Errorf("create instance: encode request: %w", err)
	}
	resp, err := c.do(ctx, call{
		op:             OpCreate,
		method:         http.MethodPost,
		path:           "/compute/instances",
		body:           body,
		idempotencyKey: idempotencyKey,
	})
	if err != nil {
		return Instance{}, fmt.Errorf("create instance: %w", err)
	}
	inst, err := decodeInstance(resp)
	if err != nil {
		return Instance{}, fmt.Errorf("create instance: %w", err)
	}
	return inst, nil
}

// Get returns one instance; IsNotFound(err) when fal does not know it.
func (c *Client) Get(ctx context.Context, id string) (Instance, error) {
	if id == "" {
		return Instance{}, fmt.Errorf("get instance: %w", invalidf("an instance id is required"))
	}
	resp, err := c.do(ctx, call{op: OpGet, method: http.MethodGet, path: "/compute/instances/{id}", id: id})
	if err != nil {
		return Instance{}, fmt.Errorf("get instance %s: %w", id, err)
	}
	inst, err := decodeInstance(resp)
	if err != nil {
		return Instance{}, fmt.Errorf("get instance %s: %w", id, err)
	}
	return inst, nil
}

// Delete terminates an instance. A 404 on a retry, after an attempt whose
// outcome is unknown (timeout, dropped connection, 5xx), counts as success:
// that attempt most likely deleted it. A 404 on the first attempt is
// returned (IsNotFound).
func (c *Client) Delete(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("delete instance: %w", invalidf("an instance id is required"))
	}
	_, err := c.do(ctx, call{
		op:                 OpDelete,
		method:             http.MethodDelete,
		path:               "/compute/instances/{id}",
		id:                 id,
		goneAfterUncertain: true,
	})
	if err != nil {
		return fmt.Errorf("delete instance %s: %w", id, err)
	}
	return nil
}

type listPage struct {
	Instances  []Instance `json:"instances"`
	NextCursor *string    `json:"next_cursor"`
	HasMore    bool       `json:"has_more"`
}

// List returns every instance in the workspace, following next_cursor over
// all pages. An instance that shifts between pages while listing is
// returned once.
func (c *Client) List(ctx context.Context) ([]Instance, error) {
	var all []Instance
	seenIDs := make(map[string]bool)
	seenCursors := make(map[string]bool)
	cursor := ""
	for page := 1; ; page++ {
		if page > c.maxListPages {
			return nil, fmt.Errorf("list instances: gave up after %d pages: fal keeps returning a next_cursor", c.maxListPages)
		}
		p, err := c.listPage(ctx, cursor)
		if err != nil {
			return nil, fmt.Errorf("list instances: page %d: %w", page, err)
		}
		for _, inst := range p.Instances {
			if !seenIDs[inst.ID] {
				seenIDs[inst.ID] = true
				all = append(all, inst)
			}
		}
		if p.NextCursor == nil || *p.NextCursor == "" {
			return all, nil
		}
		cursor = *p.NextCursor
		if seenCursors[cursor] {
			return nil, fmt.Errorf("list instances: page %d: fal returned an earlier cursor again (%.40q)", page, c.redact(cursor))
		}
		seenCursors[cursor] = true
	}
}

func (c *Client) listPage(ctx context.Context, cursor string) (listPage, error) {
	query := url.Values{}
	if c.pageSize > 0 {
		query.Set("limit", strconv.Itoa(c.pageSize))
	}
	if cursor != "" {
		query.Set("cursor", cursor)
	}
	resp, err := c.do(ctx, call{op: OpList, method: http.MethodGet, path: "/compute/instances", query: query})
	if err != nil {
		return listPage{}, err
	}
	var p listPage
	if err := json.Unmarshal(resp.body, &p); err != nil {
		return listPage{}, fmt.Errorf("decode response: %w", err)
	}
	return p, nil
}

func decodeInstance(resp response) (Instance, error) {
	var inst Instance
	if err := json.Unmarshal(resp.body, &inst); err != nil {
		return Instance{}, fmt.Errorf("decode response: %w", err)
	}
	if inst.ID == "" {
		return Instance{}, errors.New("decode response: the instance has no id")
	}
	return inst, nil
}

// redact hides the API key in text that came from the server.
func (c *Client) redact(s string) string {
	return strings.ReplaceAll(s, c.apiKey, "[REDACTED]")
}

// discardLogger silences resty's own logger.
type discardLogger struct{}

func (discardLogger) Errorf(string, ...any) {}
func (discardLogger) Warnf(string, ...any)  {}
func (discardLogger) Debugf(string, ...any) {}

func positiveOr(d, fallback time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return fallback
}
