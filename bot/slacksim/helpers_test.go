package slacksim

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/testkit"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

const (
	testBotToken = "xoxb-test-bot-token"
	testAppToken = "xapp-test-app-token"
	alice        = "UALICE"
	bob          = "UBOB"
	gpuChannel   = "CGPU"
	outside      = "COUTSIDE"
)

// newSim starts a simulator with two people and two channels, closed at the end of the test.
func newSim(t testing.TB, opts Options) *Server {
	t.Helper()
	opts.BotToken, opts.AppToken = testBotToken, testAppToken
	s := New(opts)
	t.Cleanup(s.Close)
	s.AddUser(alice, "alice")
	s.AddUser(bob, "bob")
	s.AddChannel(gpuChannel, "gpu", true)
	s.AddChannel(outside, "outside", false)
	return s
}

func apiClient(s *Server) *slack.Client {
	return slack.New(testBotToken, slack.OptionAPIURL(s.APIURL()), slack.OptionAppLevelToken(testAppToken))
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startBot runs a real socketmode client against s until the test ends; handle sees
// every event the client emits, on one goroutine.
func startBot(t testing.TB, s *Server, handle func(*socketmode.Client, socketmode.Event), opts ...socketmode.Option) *socketmode.Client {
	t.Helper()
	client := socketmode.New(apiClient(s), opts...)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = client.RunContext(ctx) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case evt := <-client.Events:
				if handle != nil {
					handle(client, evt)
				}
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	if err := s.WaitConnected(testCtx(t, 5*time.Second)); err != nil {
		t.Fatalf("bot did not connect: %v", err)
	}
	return client
}

// ackAll acknowledges every request without a payload.
func ackAll(client *socketmode.Client, evt socketmode.Event) {
	if evt.Request != nil && evt.Request.EnvelopeID != "" {
		_ = client.Ack(*evt.Request)
	}
}

// capture collects the events of one type, for assertions in the test goroutine.
type capture struct {
	mu      sync.Mutex
	events  []socketmode.Event
	changed chan struct{} // closed and replaced on every add
}

func (c *capture) add(evt socketmode.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, evt)
	if c.changed != nil {
		close(c.changed)
	}
	c.changed = make(chan struct{})
}

// waitFor waits (ctx-bounded) until n events were captured.
func (c *capture) waitFor(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		if c.changed == nil {
			c.changed = make(chan struct{})
		}
		count, changed := len(c.events), c.changed
		c.mu.Unlock()
		if count >= n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *capture) all() []socketmode.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]socketmode.Event(nil), c.events...)
}

func (c *capture) last(t testing.TB) socketmode.Event {
	t.Helper()
	events := c.all()
	if len(events) == 0 {
		t.Fatal("no event captured")
	}
	return events[len(events)-1]
}

func mustNoError(t testing.TB, err error, doing string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", doing, err)
	}
}

func wantSlackError(t testing.TB, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want Slack error %q, got success", code)
	}
	if err.Error() != code {
		t.Fatalf("want Slack error %q, got %v", code, err)
	}
}

func buttonBlocks(labelsAndValues ...string) []slack.Block {
	var elements []slack.BlockElement
	for i := 0; i+1 < len(labelsAndValues); i += 2 {
		label, value := labelsAndValues[i], labelsAndValues[i+1]
		elements = append(elements, slack.NewButtonBlockElement("act_"+value, value, slack.NewTextBlockObject("plain_text", label, false, false)))
	}
	return []slack.Block{
		slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", "*Request* gpu_8x_h100_sxm5", false, false), nil, nil),
		slack.NewActionBlock("decide", elements...),
	}
}

// newFakeClock is the clock these tests start from.
func newFakeClock() *testkit.Clock {
	return testkit.FixedClock(time.Date(2025, 11, 29, 17, 0, 0, 0, time.UTC))
}
