package falsim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// Contract checks HTTP traffic against fal's OpenAPI document: requests
// (parameters, body, the "Key" Authorization scheme) and responses
// (documented status, headers, body).
type Contract struct {
	doc    *openapi3.T
	router routers.Router
	// server is the document's server URL; requests are routed as if they
	// had been sent there, whatever address they really went to.
	server *url.URL
}

// Violation is one request or response that breaks the contract.
type Violation struct {
	Side   string // "request" or "response"
	Method string
	Path   string
	Status int // the response status, for response violations
	Err    error
}

func (v Violation) Error() string {
	if v.Side == "response" {
		return fmt.Sprintf("%s %s: response %d: %v", v.Method, v.Path, v.Status, v.Err)
	}
	return fmt.Sprintf("%s %s: request: %v", v.Method, v.Path, v.Err)
}

func (v Violation) Unwrap() error { return v.Err }

// LoadContract reads an OpenAPI 3.1 document (fal/testdata/openapi.yaml
// in this repository) and prepares it for checking.
func LoadContract(path string) (*Contract, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("load contract %s: %w", path, err)
	}
	return newContract(doc)
}

// ParseContract is LoadContract for a document already in memory.
func ParseContract(data []byte) (*Contract, error) {
	doc, err := openapi3.NewLoader().LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("parse contract: %w", err)
	}
	return newContract(doc)
}

func newContract(doc *openapi3.T) (*Contract, error) {
	// NewRouter validates the document too (3.1 rules for a 3.1 document).
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	if len(doc.Servers) == 0 {
		return nil, errors.New("contract: the document names no server")
	}
	server, err := url.Parse(doc.Servers[0].URL)
	if err != nil {
		return nil, fmt.Errorf("contract: server URL: %w", err)
	}
	return &Contract{doc: doc, router: router, server: server}, nil
}

// outsideContract reports statuses that come from the proxies and load
// balancers in front of fal rather than from fal's API: they are checked
// by nothing, so injecting them never reads as a contract breach.
func outsideContract(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

func (c *Contract) options() *openapi3filter.Options {
	return &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		AuthenticationFunc:    checkKeyScheme,
	}
}

// checkKeyScheme holds requests to fal's apiKey scheme: "Key <key>".
func checkKeyScheme(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	header := in.RequestValidationInput.Request.Header.Get(in.SecurityScheme.Name)
	key, ok := strings.CutPrefix(header, "Key ")
	if !ok || strings.TrimSpace(key) == "" {
		return fmt.Errorf(`%s must be "Key <admin key>"`, in.SecurityScheme.Name)
	}
	return nil
}

// CheckRequest validates a request whose body has been read into body.
// The returned input is needed by CheckResponse; it is nil when the
// request matches no operation at all.
func (c *Contract) CheckRequest(r *http.Request, body []byte) (*openapi3filter.RequestValidationInput, error) {
	routed := r.Clone(r.Context())
	routedURL := *r.URL
	routedURL.Scheme, routedURL.Host = c.server.Scheme, c.server.Host
	routed.URL = &routedURL
	routed.Body = io.NopCloser(bytes.NewReader(body))
	routed.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }

	route, pathParams, err := c.router.FindRoute(routed)
	if err != nil {
		return nil, fmt.Errorf("no operation for %s %s: %w", r.Method, r.URL.Path, err)
	}
	input := &openapi3filter.RequestValidationInput{
		Request:    routed,
		PathParams: pathParams,
		Route:      route,
		Options:    c.options(),
	}
	return input, openapi3filter.ValidateRequest(r.Context(), input)
}

// CheckResponse validates a response to a request checked by CheckRequest.
func (c *Contract) CheckResponse(ctx context.Context, req *openapi3filter.RequestValidationInput, status int, header http.Header, body []byte) error {
	if outsideContract(status) {
		return nil
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: req,
		Status:                 status,
		Header:                 header,
		Options:                c.options(),
	}
	input.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(ctx, input)
}

// Middleware checks every request to next and every response from it,
// reporting breaches to report; traffic passes through unchanged.
func (c *Contract) Middleware(next http.Handler, report func(Violation)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
		if err != nil {
			report(Violation{Side: "request", Method: r.Method, Path: r.URL.Path, Err: err})
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		input, err := c.CheckRequest(r, body)
		if err != nil {
			report(Violation{Side: "request", Method: r.Method, Path: r.URL.Path, Err: err})
		}
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if input == nil || rec.hijacked || !rec.wroteHeader {
			return // nothing was answered, or there is no operation to hold it to
		}
		if err := c.CheckResponse(r.Context(), input, rec.status, w.Header(), rec.body.Bytes()); err != nil {
			report(Violation{Side: "response", Method: r.Method, Path: r.URL.Path, Status: rec.status, Err: err})
		}
	})
}

// Transport checks every request sent through next and every response it
// returns, reporting breaches to report. It holds a client to the
// contract when the server is not falsim.
func (c *Contract) Transport(next http.RoundTripper, report func(Violation)) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &checkingTransport{contract: c, next: next, report: report}
}

type checkingTransport struct {
	contract *Contract
	next     http.RoundTripper
	report   func(Violation)
}

func (t *checkingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		var err error
		body, err = io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			return nil, err
		}
		// RoundTrip must not modify the caller's request: send a copy.
		r = r.Clone(r.Context())
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	input, err := t.contract.CheckRequest(r, body)
	if err != nil {
		t.report(Violation{Side: "request", Method: r.Method, Path: r.URL.Path, Err: err})
	}
	resp, err := t.next.RoundTrip(r)
	if err != nil || input == nil {
		return resp, err
	}
	respBody, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if err := t.contract.CheckResponse(r.Context(), input, resp.StatusCode, resp.Header, respBody); err != nil {
		t.report(Violation{Side: "response", Method: r.Method, Path: r.URL.Path, Status: resp.StatusCode, Err: err})
	}
	return resp, nil
}

// recorder passes a response through while keeping a copy to check.
type recorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	hijacked    bool
	body        bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = status, true
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(p []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	r.body.Write(p)
	return r.ResponseWriter.Write(p)
}

// Hijack lets a dropped connection through; its response is not checked.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil {
		r.hijacked = true
	}
	return conn, rw, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// TB is the part of testing.TB that NewWithContract uses.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// NewWithContract starts a Server for a test: every request and response
// is checked against the OpenAPI document at specPath and each breach
// fails the test; the server is closed when the test ends.
func NewWithContract(t TB, specPath string, opts Options) *Server {
	t.Helper()
	contract, err := LoadContract(specPath)
	if err != nil {
		t.Fatalf("falsim: %v", err)
	}
	opts.Contract = contract
	opts.OnViolation = func(v Violation) { t.Errorf("fal contract violated: %v", v) }
	s := New(opts)
	t.Cleanup(s.Close)
	return s
}
