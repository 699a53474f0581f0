// Package metrics holds gpubot's Prometheus metrics and serves them together
// with the liveness and readiness endpoints.
package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the instruments the rest of gpubot updates. Each instance has
// its own registry, so tests and several bots in one process never share
// counts.
type Metrics struct {
	Commands         *prometheus.CounterVec   // gpubot_commands_total{command,outcome}
	AckLatency       prometheus.Histogram     // gpubot_ack_latency_seconds
	FalCalls         *prometheus.CounterVec   // gpubot_fal_calls_total{operation,status}
	FalLatency       *prometheus.HistogramVec // gpubot_fal_call_duration_seconds{operation}
	SlackCalls       *prometheus.CounterVec   // gpubot_slack_calls_total{method,outcome}
	Requests         *prometheus.GaugeVec     // gpubot_requests{state}, set from the store
	ApprovalsWaiting prometheus.Gauge         // gpubot_approvals_waiting
	TrackingPasses   *prometheus.CounterVec   // gpubot_tracking_passes_total{outcome}
	Leader           prometheus.Gauge         // gpubot_leader: 1 while this replica does the background work
	Registry         *prometheus.Registry
}

// ackLatencyBuckets span from well under a millisecond to Slack's 3-second
// acknowledgement deadline, past which Slack shows the user an error.
var ackLatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3}

// falLatencyBuckets cover a fast API answer up to a slow create call.
var falLatencyBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// New creates the metrics on a fresh registry, together with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpubot_commands_total",
			Help: "Slash commands handled, by subcommand and outcome.",
		}, []string{"command", "outcome"}),
		AckLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gpubot_ack_latency_seconds",
			Help:    "Time from receiving a Slack envelope to acknowledging it.",
			Buckets: ackLatencyBuckets,
		}),
		FalCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpubot_fal_calls_total",
			Help: "Calls to the fal Platform API, by operation and HTTP status (or error).",
		}, []string{"operation", "status"}),
		FalLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gpubot_fal_call_duration_seconds",
			Help:    "Duration of calls to the fal Platform API, retries included.",
			Buckets: falLatencyBuckets,
		}, []string{"operation"}),
		SlackCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpubot_slack_calls_total",
			Help: "Calls to the Slack Web API, by method and outcome.",
		}, []string{"method", "outcome"}),
		Requests: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpubot_requests",
			Help: "Instance requests in the store, by state.",
		}, []string{"state"}),
		ApprovalsWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpubot_approvals_waiting",
			Help: "Requests waiting for an approver's decision.",
		}),
		TrackingPasses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpubot_tracking_passes_total",
			Help: "Background passes over the unfinished requests (tracking, reminders, expiries), by outcome (ok or error).",
		}, []string{"outcome"}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gpubot_leader",
			Help: "1 while this replica is the elected leader doing the background work (tracking, reminders, expiries), else 0.",
		}),
		Registry: prometheus.NewRegistry(),
	}
	m.Registry.MustRegister(
		m.Commands, m.AckLatency, m.FalCalls, m.FalLatency, m.SlackCalls, m.Requests, m.ApprovalsWaiting, m.TrackingPasses, m.Leader,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// SetLeading sets gpubot_leader; it is what a replica's elector calls when
// it gains or loses the lead.
func (m *Metrics) SetLeading(leading bool) {
	if leading {
		m.Leader.Set(1)
	} else {
		m.Leader.Set(0)
	}
}

// Check is one condition for readiness, such as "slack" meaning the Socket
// Mode connection is up. Ready is called on every /readyz request, so it
// must answer from state the bot already holds, without I/O.
type Check struct {
	Name  string
	Ready func() error
}

// Handler serves:
//   - /healthz: 200 "ok" while the process is up;
//   - /readyz: 200 "ok" when every check passes, otherwise 503 with one
//     "name: error" line per failing check;
//   - /metrics: the registry in Prometheus' exposition format.
func (m *Metrics) Handler(ready ...Check) http.Handler {
	for _, check := range ready {
		if check.Ready == nil {
			panic(fmt.Sprintf("metrics: readiness check %q has no Ready function", check.Name))
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if failures := failingChecks(ready); len(failures) > 0 {
			writeText(w, http.StatusServiceUnavailable, strings.Join(failures, "\n")+"\n")
			return
		}
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	return mux
}

func failingChecks(checks []Check) []string {
	var failures []string
	for _, check := range checks {
		if err := check.Ready(); err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", check.Name, err))
		}
	}
	return failures
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// Probe asks a running gpubot whether it is healthy: it GETs path (such as
// "/healthz") from the server listening on httpAddr, the HTTP_ADDR setting,
// and fails unless the answer is 200. A listen address without a host, like
// ":8080", is probed on the loopback interface. It is what a container
// health check runs.
func Probe(ctx context.Context, client *http.Client, httpAddr, path string) error {
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return fmt.Errorf("probe %s: %w", httpAddr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
