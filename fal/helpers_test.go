package fal_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/testkit"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
)

// specPath is a verbatim copy of the project's fal contract
// (shared/fal-compute-openapi.yaml), whose header says where fal
// publishes each part.
const specPath = "testdata/openapi.yaml"

// apiKey is the admin key the tests use; it must never show up in a log
// line or an error.
const apiKey = "fal-admin-TOPSECRET-7f3a9c"

const sshKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0k test@laptop"

// newSim starts a falsim that fails the test on any contract breach.
func newSim(t *testing.T, opts falsim.Options) *falsim.Server {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = apiKey
	}
	return falsim.NewWithContract(t, specPath, opts)
}

// sentRequest is what the client put on the wire.
type sentRequest struct {
	method string
	path   string
	query  string
	header http.Header
}

// recordingTransport notes every request before passing it on.
type recordingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	sent []sentRequest
}

func (r *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.sent = append(r.sent, sentRequest{method: req.Method, path: req.URL.Path, query: req.URL.RawQuery, header: req.Header.Clone()})
	r.mu.Unlock()
	return r.next.RoundTrip(req)
}

func (r *recordingTransport) requests() []sentRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sentRequest(nil), r.sent...)
}

// testClient is a client with fast retries, its wire log and its logs.
type testClient struct {
	*fal.Client
	wire *recordingTransport
	logs *testkit.Buffer
}

func newTestClient(t *testing.T, baseURL string, configure ...func(*fal.Config)) testClient {
	t.Helper()
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	wire := &recordingTransport{next: transport}
	logs := &testkit.Buffer{}
	cfg := fal.Config{
		BaseURL:        baseURL,
		APIKey:         apiKey,
		Version:        "1.2.3",
		Timeout:        2 * time.Second,
		MaxElapsed:     5 * time.Second,
		RetryBaseDelay: time.Millisecond,
		RetryMaxDelay:  20 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Transport:      wire,
	}
	for _, change := range configure {
		change(&cfg)
	}
	client, err := fal.New(cfg)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return testClient{Client: client, wire: wire, logs: logs}
}

// newStubServer serves handler on 127.0.0.1 and returns a client for it
// whose requests and (fal-shaped) responses are held to the contract.
func newStubServer(t *testing.T, handler http.HandlerFunc, configure ...func(*fal.Config)) testClient {
	t.Helper()
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	contract, err := falsim.LoadContract(specPath)
	if err != nil {
		t.Fatal(err)
	}
	check := func(cfg *fal.Config) {
		cfg.Transport = contract.Transport(cfg.Transport, func(v falsim.Violation) {
			t.Errorf("fal contract violated: %v", v)
		})
	}
	return newTestClient(t, server.URL+"/v1", append([]func(*fal.Config){check}, configure...)...)
}

// newUncheckedStubServer is newStubServer without the contract check, for
// answers that break the contract on purpose.
func newUncheckedStubServer(t *testing.T, handler http.HandlerFunc, configure ...func(*fal.Config)) testClient {
	t.Helper()
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	return newTestClient(t, server.URL+"/v1", configure...)
}

func writeInstance(w http.ResponseWriter, status int, inst fal.Instance) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(mustJSON(inst))
}
