package slacksim

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

func TestClickDecodesAsBlockActionsAndResponseURLReplaces(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	var clicks capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeInteractive {
			clicks.add(evt)
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	_, ts, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("approve r1?", false), slack.MsgOptionBlocks(buttonBlocks("Approve", "approve", "Deny", "deny")...))
	mustNoError(t, err, "post card")
	card := s.Messages()[0]
	if got := strings.Join(card.Buttons(), ","); got != "Approve,Deny" {
		t.Fatalf("buttons = %q", got)
	}

	_, err = s.Click(ctx, bob, card, "Approve")
	mustNoError(t, err, "click Approve")
	evt := clicks.last(t)
	cb := evt.Data.(slack.InteractionCallback)
	if cb.Type != slack.InteractionTypeBlockActions || cb.User.ID != bob || cb.User.Name != "bob" || cb.Team.ID != defaultTeamID ||
		cb.Channel.ID != gpuChannel || cb.Channel.Name != "gpu" || cb.Container.Type != "message" || cb.Container.MessageTs != ts ||
		cb.Container.ChannelID != gpuChannel || cb.Container.IsEphemeral || cb.TriggerID == "" || cb.ResponseURL == "" || cb.APIAppID != appID {
		t.Errorf("block_actions decoded as %+v", cb)
	}
	if len(cb.ActionCallback.BlockActions) != 1 {
		t.Fatalf("actions = %+v", cb.ActionCallback)
	}
	action := cb.ActionCallback.BlockActions[0]
	if action.ActionID != "act_approve" || action.Value != "approve" || action.BlockID != "decide" || action.Type != "button" || action.Text.Text != "Approve" || action.ActionTs == "" {
		t.Errorf("action = %+v", action)
	}
	if cb.Message.Timestamp != ts || cb.Message.Text != "approve r1?" || len(cb.Message.Blocks.BlockSet) != 2 {
		t.Errorf("message in payload = %+v", cb.Message.Msg)
	}
	if evt.Request.AcceptsResponsePayload {
		t.Error("block_actions must not accept a response payload")
	}

	// The bot replaces the card through the response_url, as a decision does.
	_, _, err = api.PostMessageContext(ctx, "", slack.MsgOptionReplaceOriginal(cb.ResponseURL), slack.MsgOptionText("approved by bob", false))
	mustNoError(t, err, "replace_original")
	card, err = s.WaitMessage(ctx, func(m Message) bool { return m.ID == card.ID && m.Updates == 1 })
	mustNoError(t, err, "wait for the replaced card")
	if card.Text != "approved by bob" || len(card.Buttons()) != 0 {
		t.Errorf("replaced card = %+v", card)
	}
	if _, err := s.Click(ctx, bob, card, "Approve"); err == nil || !strings.Contains(err.Error(), `no button "Approve"`) {
		t.Errorf("click on a vanished button = %v", err)
	}
}

func TestClickOnEphemeralAndTamperedAction(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	var clicks capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeInteractive {
			clicks.add(evt)
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	_, err := api.PostEphemeralContext(ctx, gpuChannel, alice, slack.MsgOptionText("delete i-1?", false), slack.MsgOptionBlocks(buttonBlocks("Delete", "i-1")...))
	mustNoError(t, err, "post ephemeral")
	confirm := s.Messages()[0]

	if _, err := s.Click(ctx, bob, confirm, "Delete"); err == nil {
		t.Error("bob clicked alice's ephemeral message")
	}
	_, err = s.Click(ctx, alice, confirm, "Delete")
	mustNoError(t, err, "click on the ephemeral message")
	cb := clicks.last(t).Data.(slack.InteractionCallback)
	if !cb.Container.IsEphemeral || cb.Container.MessageTs == "" || cb.Message.Timestamp != "" {
		t.Errorf("ephemeral click: container %+v, message ts %q", cb.Container, cb.Message.Timestamp)
	}

	_, err = s.ClickAction(ctx, alice, confirm, "act_i-1", "i-999")
	mustNoError(t, err, "tampered click")
	action := clicks.last(t).Data.(slack.InteractionCallback).ActionCallback.BlockActions[0]
	if action.ActionID != "act_i-1" || action.Value != "i-999" || action.BlockID != "decide" || action.Text.Text != "Delete" {
		t.Errorf("tampered action = %+v", action)
	}

	// Deleting the ephemeral through the response_url, as "Delete now" does.
	_, _, err = api.PostMessageContext(ctx, "", slack.MsgOptionDeleteOriginal(cb.ResponseURL))
	mustNoError(t, err, "delete_original")
	if m, _ := s.Message(confirm.ID); !m.Deleted {
		t.Errorf("ephemeral after delete_original = %+v", m)
	}
}

func TestResponseURLFiveUsesAndExpiry(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	api := apiClient(s)
	responseURLs := make(chan string, 4)
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			responseURLs <- evt.Data.(slack.SlashCommand).ResponseURL
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	_, err := s.SlashCommand(ctx, alice, gpuChannel, "/gpu", "list")
	mustNoError(t, err, "slash command")
	responseURL := <-responseURLs

	respond := func(url string, options ...slack.MsgOption) error {
		_, _, err := api.PostMessageContext(ctx, "", append([]slack.MsgOption{slack.MsgOptionResponseURL(url, slack.ResponseTypeEphemeral)}, options...)...)
		return err
	}
	for i := range responseURLMaxUses {
		mustNoError(t, respond(responseURL, slack.MsgOptionText("update "+string(rune('1'+i)), false)), "use the response_url")
	}
	var statusErr slack.StatusCodeError
	if err := respond(responseURL, slack.MsgOptionText("sixth", false)); !errors.As(err, &statusErr) || statusErr.Code != 404 {
		t.Errorf("sixth use = %v, want 404", err)
	}
	calls := s.Calls()
	if last := calls[len(calls)-1]; last.Method != "response_url" || last.Error != "used_url" {
		t.Errorf("last call = %+v", last)
	}
	ephemerals := 0
	for _, m := range s.Messages() {
		if m.Source == "response_url" && m.Ephemeral && m.User == alice {
			ephemerals++
		}
	}
	if ephemerals != responseURLMaxUses {
		t.Errorf("response_url messages = %d, want %d", ephemerals, responseURLMaxUses)
	}

	_, err = s.SlashCommand(ctx, alice, gpuChannel, "/gpu", "list")
	mustNoError(t, err, "second slash command")
	fresh := <-responseURLs
	clock.Advance(responseURLLifetime + time.Second)
	if err := respond(fresh, slack.MsgOptionText("too late", false)); !errors.As(err, &statusErr) || statusErr.Code != 404 {
		t.Errorf("expired use = %v, want 404", err)
	}
	calls = s.Calls()
	if last := calls[len(calls)-1]; last.Error != "expired_url" {
		t.Errorf("last call = %+v", last)
	}
}

func TestInChannelResponseURLPostsInThread(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	responseURLs := make(chan string, 1)
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			responseURLs <- evt.Data.(slack.SlashCommand).ResponseURL
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	_, rootTS, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("root", false))
	mustNoError(t, err, "post root")
	_, err = s.SlashCommand(ctx, alice, gpuChannel, "/gpu", "status")
	mustNoError(t, err, "slash command")
	_, _, err = api.PostMessageContext(ctx, "", slack.MsgOptionResponseURL(<-responseURLs, slack.ResponseTypeInChannel), slack.MsgOptionText("status in thread", false), slack.MsgOptionTS(rootTS))
	mustNoError(t, err, "in_channel response")
	thread := s.Thread(gpuChannel, rootTS)
	if len(thread) != 1 || thread[0].Text != "status in thread" || thread[0].Ephemeral || thread[0].Source != "response_url" {
		t.Errorf("thread = %+v", thread)
	}
}

func TestEventObserverSeesChangesInOrder(t *testing.T) {
	events := make(chan Event, 10)
	s := newSim(t, Options{Observer: func(e Event) { events <- e }})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	_, ts, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("one", false))
	mustNoError(t, err, "post")
	_, _, _, err = api.UpdateMessageContext(ctx, gpuChannel, ts, slack.MsgOptionText("two", false))
	mustNoError(t, err, "update")
	_, _, err = api.DeleteMessageContext(ctx, gpuChannel, ts)
	mustNoError(t, err, "delete")
	_, err = api.PostEphemeralContext(ctx, gpuChannel, alice, slack.MsgOptionText("psst", false))
	mustNoError(t, err, "ephemeral")

	var kinds []string
	for range 4 {
		select {
		case e := <-events:
			kinds = append(kinds, e.Kind+":"+e.Message.Text)
		case <-ctx.Done():
			t.Fatalf("observer saw only %v", kinds)
		}
	}
	if got := strings.Join(kinds, " "); got != "post:one update:two delete:two ephemeral:psst" {
		t.Errorf("observer saw %q", got)
	}
}

// Slack sends a slash command's text with &, < and > as HTML entities (and nothing
// else changed, with should_escape off), so the app must decode them once.
func TestSlashCommandTextIsEscapedAsSlackSendsIt(t *testing.T) {
	s := newSim(t, Options{})
	texts := make(chan string, 1)
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			texts <- evt.Data.(slack.SlashCommand).Text
			_ = client.Ack(*evt.Request)
		}
	})
	_, err := s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", `create 1x R&D <tuning> "run" &amp; 'more'`)
	mustNoError(t, err, "slash command")
	if got, want := <-texts, `create 1x R&amp;D &lt;tuning&gt; "run" &amp;amp; 'more'`; got != want {
		t.Errorf("text = %q, want %q", got, want)
	}
}
