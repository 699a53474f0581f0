package bot_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Slack answering 429 (with Retry-After) or 5xx to chat.postMessage and chat.update:
// the message still arrives, once.
func TestSlackRateLimitsAndServerErrorsAreRetried(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	h.slack.RateLimitNext("chat.postMessage", 1, time.Second)
	h.slack.ServerErrorNext("chat.postMessage", 1, 503)
	h.slack.RateLimitNext("chat.update", 1, time.Second)
	h.slack.ServerErrorNext("chat.update", 1, 500)
	h.command(alice, general, "create 1x for 2h")
	h.waitFor(general, "is ready :tada:")
	h.waitFor(general, ":large_green_circle: Ready:") // the root, edited despite the refused updates
	for text, want := range map[string]int{
		"<@UALICE> asked for 1x H100": 1,
		"fal accepted it":             1,
		"is ready :tada:":             1,
	} {
		if n := h.count(general, text); n != want {
			t.Errorf("%d messages with %q, want %d\n%s", n, text, want, h.dump())
		}
	}
	if h.slack.CallCount("chat.postMessage") < 4 {
		t.Fatalf("postMessage was not retried")
	}
	for _, method := range []string{"chat.postMessage", "chat.update"} {
		if got := testutil.ToFloat64(h.app.Metrics().SlackCalls.WithLabelValues(method, "retried")); got != 2 {
			t.Errorf("gpubot_slack_calls_total{method=%q,outcome=\"retried\"} = %v, want 2", method, got)
		}
	}
}

// A dropped websocket is reopened by slack-go, and commands keep working.
func TestReconnectsAfterDroppedConnection(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	before := h.slack.TotalConnections()
	h.slack.DropConnections()
	h.eventually("a new connection", func() bool { return h.slack.TotalConnections() > before && h.slack.Connections() > 0 })
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
}

// Slack asks for a refresh: slack-go reconnects. A command typed in between, while the
// one connection takes no envelopes, is acked or fails for its user as on Slack (never
// lost without a word); commands after the reconnect work.
func TestRefreshRequestedReconnects(t *testing.T) {
	h := start(t)
	h.registerKey(alice)
	before := h.slack.TotalConnections()
	h.slack.Disconnect("refresh_requested")
	if _, err := h.slack.SlashCommand(h.ctx(), alice, general, "/gpu", "help"); err != nil && !errors.Is(err, slacksim.ErrFailed) {
		t.Fatalf("a command during the refresh was neither acked nor failed: %v", err)
	}
	h.eventually("a new connection", func() bool { return h.slack.TotalConnections() > before && h.slack.Connections() == 1 })
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
}
