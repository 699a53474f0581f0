package slacksim

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"
)

// postJSON calls a Web API method with a JSON body as written, for what slack-go
// cannot send, and returns the answer.
func postJSON(t *testing.T, s *Server, method, body string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.APIURL()+method, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Authorization", "Bearer "+testBotToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	return string(answer)
}

func homeOf(n int, action string) slack.HomeTabViewRequest {
	blocks := make([]slack.Block, 0, n)
	for i := range n {
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", fmt.Sprintf("machine %d", i), false, false), nil, nil))
	}
	if action != "" {
		blocks = append(blocks, slack.NewActionBlock("home_actions",
			slack.NewButtonBlockElement(action, "req-1", slack.NewTextBlockObject("plain_text", "Delete", false, false))))
	}
	return slack.HomeTabViewRequest{Type: slack.VTHomeTab, Blocks: slack.Blocks{BlockSet: blocks}}
}

// Opening the Home tab reaches the bot as app_home_opened over Socket Mode, with the
// tab last published once there is one, and is retried like any event.
func TestOpeningHomeSendsAppHomeOpened(t *testing.T) {
	s := newSim(t, Options{RedeliverAfter: 50 * time.Millisecond})
	var seen capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type != socketmode.EventTypeEventsAPI {
			return
		}
		seen.add(evt)
		if evt.Request.RetryAttempt > 0 || len(seen.all()) > 2 {
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	_, err := s.OpenHome(ctx, alice)
	mustNoError(t, err, "open home")
	deliveries := seen.all()
	if len(deliveries) != 2 || deliveries[1].Request.RetryAttempt != 1 {
		t.Fatalf("%d deliveries; want the first and one retry of the unacked event", len(deliveries))
	}
	opened := homeOpenedEvent(t, deliveries[0])
	if opened.User != alice || opened.Tab != "home" || opened.Channel != "D"+alice || opened.View != nil {
		t.Errorf("first opening = %+v; want alice's home tab in her DM, without a view", opened)
	}

	resp, err := apiClient(s).PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: alice, View: homeOf(1, "")})
	mustNoError(t, err, "publish")
	_, err = s.OpenHome(ctx, alice)
	mustNoError(t, err, "open home again")
	again := homeOpenedEvent(t, seen.last(t))
	if again.View == nil || again.View.ID != resp.ID {
		t.Errorf("second opening carries view %+v, want the published %s", again.View, resp.ID)
	}
	if _, err := s.OpenHome(ctx, "UNOBODY"); err == nil {
		t.Error("an unknown user opened the Home tab")
	}
}

func homeOpenedEvent(t *testing.T, evt socketmode.Event) *slackevents.AppHomeOpenedEvent {
	t.Helper()
	outer, ok := evt.Data.(slackevents.EventsAPIEvent)
	if !ok {
		t.Fatalf("event data %T", evt.Data)
	}
	opened, ok := outer.InnerEvent.Data.(*slackevents.AppHomeOpenedEvent)
	if !ok {
		t.Fatalf("inner event %q decoded as %T", outer.InnerEvent.Type, outer.InnerEvent.Data)
	}
	return opened
}

// A global shortcut carries its callback id and a trigger that opens a modal; like a
// click it is not retried when the bot does not ack it.
func TestShortcutCarriesATriggerAndIsNotRetried(t *testing.T) {
	s := newSim(t, Options{RedeliverAfter: 50 * time.Millisecond, AckTimeout: 300 * time.Millisecond})
	var seen capture
	opened := make(chan error, 4)
	var ignore atomic.Bool
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type != socketmode.EventTypeInteractive {
			return
		}
		seen.add(evt)
		cb := evt.Data.(slack.InteractionCallback)
		if !ignore.Load() {
			_ = client.Ack(*evt.Request)
			_, err := client.OpenView(cb.TriggerID, createModal())
			opened <- err
		}
	})
	ctx := testCtx(t, 5*time.Second)
	_, err := s.Shortcut(ctx, alice, "gpubot_create")
	mustNoError(t, err, "shortcut")
	mustNoError(t, <-opened, "open the modal with the shortcut's trigger")
	cb := seen.last(t).Data.(slack.InteractionCallback)
	if cb.Type != slack.InteractionTypeShortcut || cb.CallbackID != "gpubot_create" || cb.User.ID != alice || cb.TriggerID == "" {
		t.Errorf("shortcut payload = type %q, callback %q, user %q, trigger %q", cb.Type, cb.CallbackID, cb.User.ID, cb.TriggerID)
	}
	if v, ok := s.OpenView(alice); !ok || v.CallbackID != "create_instance" {
		t.Errorf("alice sees %+v (%v), want the modal", v, ok)
	}

	ignore.Store(true)
	_, err = s.Shortcut(ctx, bob, "gpubot_create")
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("unacked shortcut: %v, want ErrFailed", err)
	}
	if n := len(seen.all()); n != 2 {
		t.Errorf("%d deliveries, want 2: an unacked shortcut is not retried", n)
	}
}

// views.publish keeps a Home view to Block Kit's rules: at most 100 blocks, and none
// of a modal's title or buttons; each published view is kept for the test to read.
func TestViewsPublishChecksHomeLimitsAndKeepsEachView(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	publish := func(v slack.HomeTabViewRequest) error {
		_, err := api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: alice, View: v})
		return err
	}
	wantSlackError(t, publish(homeOf(101, "")), "invalid_arguments")
	titled := `{"user_id":"UALICE","view":{"type":"home","title":{"type":"plain_text","text":"Home"},"blocks":[]}}`
	if answer := postJSON(t, s, "views.publish", titled); !strings.Contains(answer, `"error":"invalid_arguments"`) {
		t.Errorf("a home view with a title: %s, want invalid_arguments", answer)
	}
	tooLong := homeOf(1, "")
	tooLong.Blocks.BlockSet[0] = slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", strings.Repeat("x", maxSectionTextChars+1), false, false), nil, nil)
	wantSlackError(t, publish(tooLong), "invalid_arguments")

	mustNoError(t, publish(homeOf(100, "")), "100 blocks")
	mustNoError(t, publish(homeOf(2, "gpubot_delete")), "a second view")
	history := s.HomePublishes(alice)
	if len(history) != 2 || len(history[0].Blocks.BlockSet) != 100 || len(history[1].Blocks.BlockSet) != 3 || history[0].ID != history[1].ID {
		t.Fatalf("history = %d views; want the two accepted, in order, on one tab", len(history))
	}
	if current, _ := s.HomeView(alice); len(current.Blocks.BlockSet) != 3 {
		t.Errorf("the tab shows %d blocks, want the last view's 3", len(current.Blocks.BlockSet))
	}
	if got := s.HomePublishes(bob); len(got) != 0 {
		t.Errorf("bob's tab got %d views, want none", len(got))
	}
}

// views.publish is limited per workspace per minute: over it Slack answers 429 with
// how long to wait, and a minute later it takes calls again.
func TestViewsPublishIsRateLimited(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now, PublishesPerMinute: 3})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	publish := func() error {
		_, err := api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: alice, View: homeOf(1, "")})
		return err
	}
	for i := range 3 {
		mustNoError(t, publish(), fmt.Sprintf("publish %d", i+1))
		clock.Advance(10 * time.Second)
	}
	var limited *slack.RateLimitedError
	if err := publish(); !errors.As(err, &limited) || limited.RetryAfter != 30*time.Second {
		t.Fatalf("fourth publish in a minute: %v, want 429 with Retry-After 30s", err)
	}
	clock.Advance(30 * time.Second)
	mustNoError(t, publish(), "publish once the first call left the window")
	if n := len(s.HomePublishes(alice)); n != 4 {
		t.Errorf("%d views recorded, want the 4 accepted", n)
	}
}

// A click on the Home tab carries the view and a trigger, and no channel or
// response_url; only buttons the tab shows can be pressed, unless tampered.
func TestClickOnHomeTab(t *testing.T) {
	s := newSim(t, Options{})
	var seen capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeInteractive {
			seen.add(evt)
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	if _, err := s.ClickHome(ctx, alice, "gpubot_delete", "req-1"); err == nil {
		t.Error("clicked a tab that was never published")
	}
	resp, err := apiClient(s).PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: alice, View: homeOf(1, "gpubot_delete")})
	mustNoError(t, err, "publish")
	_, err = s.ClickHome(ctx, alice, "gpubot_delete", "req-1")
	mustNoError(t, err, "click")
	cb := seen.last(t).Data.(slack.InteractionCallback)
	action := cb.ActionCallback.BlockActions[0]
	if cb.Type != slack.InteractionTypeBlockActions || cb.View.ID != resp.ID || cb.Container.Type != "view" || cb.Container.ViewID != resp.ID ||
		cb.Channel.ID != "" || cb.ResponseURL != "" || cb.TriggerID == "" || action.ActionID != "gpubot_delete" || action.Value != "req-1" {
		t.Errorf("home click = %+v", cb)
	}
	if _, err := s.ClickHome(ctx, alice, "gpubot_delete", "req-2"); err == nil {
		t.Error("clicked a button the tab does not show")
	}
	_, err = s.ClickHomeAction(ctx, alice, "gpubot_delete", "req-2")
	mustNoError(t, err, "tampered click")
	if got := seen.last(t).Data.(slack.InteractionCallback).ActionCallback.BlockActions[0].Value; got != "req-2" {
		t.Errorf("tampered value %q, want req-2", got)
	}
}
