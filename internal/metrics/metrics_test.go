package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// get fetches path from server and returns the status and body.
func get(t *testing.T, server *httptest.Server, path string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, server.URL+path, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	resp, err := server.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

func serve(t *testing.T, handler http.Handler) *httptest.Server {
	t.Helper()
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	return server
}

// switchableCheck is a readiness check the test turns on and off, as the
// Socket Mode client would when it connects and drops.
type switchableCheck struct{ connected atomic.Bool }

func (s *switchableCheck) ready() error {
	if !s.connected.Load() {
		return errors.New("not connected")
	}
	return nil
}

func TestHealthzIsOKWhileTheProcessIsUp(t *testing.T) {
	t.Parallel()
	failing := Check{Name: "slack", Ready: func() error { return errors.New("not connected") }}
	server := serve(t, New().Handler(failing))
	status, body := get(t, server, "/healthz")
	if status != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 \"ok\\n\" even when not ready", status, body)
	}
}

func TestReadyzFollowsItsChecks(t *testing.T) {
	t.Parallel()
	var slack, store switchableCheck
	store.connected.Store(true)
	server := serve(t, New().Handler(
		Check{Name: "slack", Ready: slack.ready},
		Check{Name: "store", Ready: store.ready},
	))

	status, body := get(t, server, "/readyz")
	if status != http.StatusServiceUnavailable || body != "slack: not connected\n" {
		t.Errorf("before connecting: /readyz = %d %q, want 503 naming slack", status, body)
	}

	slack.connected.Store(true)
	status, body = get(t, server, "/readyz")
	if status != http.StatusOK || body != "ok\n" {
		t.Errorf("connected: /readyz = %d %q, want 200 \"ok\\n\"", status, body)
	}

	slack.connected.Store(false)
	store.connected.Store(false)
	status, body = get(t, server, "/readyz")
	if status != http.StatusServiceUnavailable || body != "slack: not connected\nstore: not connected\n" {
		t.Errorf("both down: /readyz = %d %q, want 503 listing both", status, body)
	}
}

func TestReadyzWithoutChecksIsReady(t *testing.T) {
	t.Parallel()
	status, body := get(t, serve(t, New().Handler()), "/readyz")
	if status != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz = %d %q, want 200 \"ok\\n\"", status, body)
	}
}

func TestMetricsShowsEveryFamilyAfterUse(t *testing.T) {
	t.Parallel()
	m := New()
	m.Commands.WithLabelValues("create", "ok").Inc()
	m.AckLatency.Observe(0.002)
	m.FalCalls.WithLabelValues("create", "201").Inc()
	m.FalLatency.WithLabelValues("create").Observe(0.3)
	m.SlackCalls.WithLabelValues("chat.postMessage", "ok").Add(2)
	m.Requests.WithLabelValues("pending_approval").Set(3)
	m.ApprovalsWaiting.Set(3)

	status, body := get(t, serve(t, m.Handler()), "/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics = %d", status)
	}
	for _, line := range []string{
		`gpubot_commands_total{command="create",outcome="ok"} 1`,
		`gpubot_ack_latency_seconds_bucket{le="0.0025"} 1`,
		`gpubot_ack_latency_seconds_bucket{le="0.001"} 0`,
		`gpubot_ack_latency_seconds_bucket{le="3"} 1`,
		`gpubot_ack_latency_seconds_count 1`,
		`gpubot_fal_calls_total{operation="create",status="201"} 1`,
		`gpubot_fal_call_duration_seconds_count{operation="create"} 1`,
		`gpubot_slack_calls_total{method="chat.postMessage",outcome="ok"} 2`,
		`gpubot_requests{state="pending_approval"} 3`,
		`gpubot_approvals_waiting 3`,
	} {
		if !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	for _, family := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_open_fds"} {
		if !strings.Contains(body, "\n# TYPE "+family+" ") {
			t.Errorf("/metrics lacks the %s family from the runtime and process collectors", family)
		}
	}
}

func TestEachInstanceCountsOnItsOwn(t *testing.T) {
	t.Parallel()
	first, second := New(), New()
	first.Commands.WithLabelValues("list", "ok").Inc()
	_, body := get(t, serve(t, second.Handler()), "/metrics")
	if strings.Contains(body, "gpubot_commands_total{") {
		t.Errorf("a second instance shows the first one's commands:\n%s", body)
	}
}

func TestEndpointsAnswerOnlyGet(t *testing.T) {
	t.Parallel()
	server := serve(t, New().Handler())
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := server.Client().Post(server.URL+path, "text/plain", strings.NewReader(""))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST %s = %d, want 405", path, resp.StatusCode)
		}
	}
	if status, _ := get(t, server, "/"); status != http.StatusNotFound {
		t.Errorf("GET / = %d, want 404", status)
	}
}

func TestHandlerRefusesACheckWithoutFunction(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("Handler accepted a check with no Ready function")
		}
	}()
	New().Handler(Check{Name: "slack"})
}

func TestProbe(t *testing.T) {
	t.Parallel()
	var slack switchableCheck
	server := serve(t, New().Handler(Check{Name: "slack", Ready: slack.ready}))
	addr := server.Listener.Addr().String()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if err := Probe(ctx, server.Client(), addr, "/healthz"); err != nil {
		t.Errorf("probe /healthz: %v", err)
	}
	err := Probe(ctx, server.Client(), addr, "/readyz")
	if err == nil || !strings.Contains(err.Error(), "503 Service Unavailable: slack: not connected") {
		t.Errorf("probe /readyz while not ready = %v, want the 503 and its reason", err)
	}
	slack.connected.Store(true)
	if err := Probe(ctx, server.Client(), addr, "/readyz"); err != nil {
		t.Errorf("probe /readyz when ready: %v", err)
	}
}

// TestProbeOfAnAllInterfacesAddressUsesLoopback: HTTP_ADDR=":8080" listens
// everywhere; the probe inside the container asks 127.0.0.1.
func TestProbeOfAnAllInterfacesAddressUsesLoopback(t *testing.T) {
	t.Parallel()
	server := serve(t, New().Handler())
	_, port, err := net.SplitHostPort(server.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, addr := range []string{":" + port, "0.0.0.0:" + port} {
		if err := Probe(ctx, server.Client(), addr, "/healthz"); err != nil {
			t.Errorf("probe %s: %v", addr, err)
		}
	}
}

func TestProbeFailsWhenNothingListens(t *testing.T) {
	t.Parallel()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := listener.Addr().String()
	listener.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := Probe(ctx, http.DefaultClient, addr, "/healthz"); err == nil {
		t.Errorf("probe of closed %s succeeded", addr)
	}
	if err := Probe(ctx, http.DefaultClient, "no-port", "/healthz"); err == nil {
		t.Error("probe of an address without a port succeeded")
	}
}

func TestLeaderGaugeFollowsLeadership(t *testing.T) {
	t.Parallel()
	m := New()
	server := serve(t, m.Handler())
	expect := func(when, want string) {
		t.Helper()
		if _, body := get(t, server, "/metrics"); !strings.Contains(body, "\n"+want+"\n") {
			t.Errorf("%s, /metrics lacks %q:\n%s", when, want, body)
		}
	}
	expect("before any election", "gpubot_leader 0")
	m.SetLeading(true)
	expect("once leading", "gpubot_leader 1")
	m.SetLeading(false)
	expect("after losing the lead", "gpubot_leader 0")
}
