package slacksim

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack"
)

func TestChatRoundTrips(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)

	metadata := slack.SlackMetadata{EventType: "gpu_request", EventPayload: map[string]any{"request_id": "r1"}}
	channelID, rootTS, err := api.PostMessageContext(ctx, gpuChannel,
		slack.MsgOptionText("request r1", false), slack.MsgOptionBlocks(buttonBlocks("Approve", "approve", "Deny", "deny")...), slack.MsgOptionMetadata(metadata))
	mustNoError(t, err, "post root")
	if channelID != gpuChannel || rootTS == "" {
		t.Fatalf("post answered %q %q", channelID, rootTS)
	}
	_, replyTS, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("creating…", false), slack.MsgOptionTS(rootTS), slack.MsgOptionBroadcast())
	mustNoError(t, err, "post reply")
	_, secondTS, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("ready", false), slack.MsgOptionTS(replyTS))
	mustNoError(t, err, "reply to a reply")
	if !(rootTS < replyTS && replyTS < secondTS) {
		t.Errorf("ts values not increasing: %s %s %s", rootTS, replyTS, secondTS)
	}

	_, _, _, err = api.UpdateMessageContext(ctx, gpuChannel, rootTS, slack.MsgOptionText("request r1: approved", false), slack.MsgOptionBlocks())
	mustNoError(t, err, "update root")
	_, err = api.PostEphemeralContext(ctx, gpuChannel, bob, slack.MsgOptionText("only bob", false))
	mustNoError(t, err, "post ephemeral")
	_, _, err = api.DeleteMessageContext(ctx, gpuChannel, secondTS)
	mustNoError(t, err, "delete")

	root, err := s.WaitMessage(ctx, func(m Message) bool { return m.TS == rootTS })
	mustNoError(t, err, "find root")
	if root.Text != "request r1: approved" || root.Updates != 1 || len(root.Blocks.BlockSet) != 0 || root.Source != "chat.postMessage" {
		t.Errorf("root after update = %+v", root)
	}
	if root.Metadata == nil || root.Metadata.EventType != "gpu_request" || root.Metadata.EventPayload["request_id"] != "r1" {
		t.Errorf("root metadata = %+v", root.Metadata)
	}
	thread := s.Thread(gpuChannel, rootTS)
	if len(thread) != 1 || thread[0].TS != replyTS || !thread[0].Broadcast || thread[0].ThreadTS != rootTS {
		t.Errorf("thread = %+v, want the broadcast reply only (the reply to a reply was deleted)", thread)
	}
	all := s.Messages()
	if len(all) != 4 || !all[2].Deleted || all[2].ThreadTS != rootTS {
		t.Errorf("messages = %+v", all)
	}
	ephemeral := all[3]
	if !ephemeral.Ephemeral || ephemeral.User != bob || ephemeral.TS != "" || ephemeral.Source != "chat.postEphemeral" {
		t.Errorf("ephemeral = %+v", ephemeral)
	}
	if ids := map[string]bool{all[0].ID: true, all[1].ID: true, all[2].ID: true, all[3].ID: true}; len(ids) != 4 {
		t.Errorf("message ids not unique: %v", ids)
	}
	if s.CallCount("chat.postMessage") != 3 || s.CallCount("chat.update") != 1 {
		t.Errorf("call counts: post %d update %d", s.CallCount("chat.postMessage"), s.CallCount("chat.update"))
	}
}

func TestUpdateKeepsBlocksThatWereNotSent(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	_, ts, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("card", false), slack.MsgOptionBlocks(buttonBlocks("Approve", "approve")...))
	mustNoError(t, err, "post")
	_, _, _, err = api.UpdateMessageContext(ctx, gpuChannel, ts, slack.MsgOptionText("card, edited", false))
	mustNoError(t, err, "update text only")
	m := s.Messages()[0]
	if got := m.Buttons(); len(got) != 1 || got[0] != "Approve" {
		t.Errorf("buttons after a text-only update = %v", got)
	}
	if !strings.Contains(m.AllText(), "card, edited") || !strings.Contains(m.AllText(), "gpu_8x_h100_sxm5") {
		t.Errorf("AllText = %q", m.AllText())
	}
}

func TestDirectMessages(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)

	channel, _, alreadyOpen, err := api.OpenConversationContext(ctx, &slack.OpenConversationParameters{Users: []string{alice}})
	mustNoError(t, err, "conversations.open")
	if channel.ID != s.DMChannel(alice) || !strings.HasPrefix(channel.ID, "D") || alreadyOpen {
		t.Errorf("DM = %s (already open %v), want %s", channel.ID, alreadyOpen, s.DMChannel(alice))
	}
	again, _, alreadyOpen, err := api.OpenConversationContext(ctx, &slack.OpenConversationParameters{Users: []string{alice}})
	mustNoError(t, err, "conversations.open again")
	if again.ID != channel.ID || !alreadyOpen {
		t.Errorf("second open = %s (already open %v)", again.ID, alreadyOpen)
	}

	posted, _, err := api.PostMessageContext(ctx, alice, slack.MsgOptionText("to alice by user id", false))
	mustNoError(t, err, "post to a user id")
	if posted != channel.ID {
		t.Errorf("posting to %s went to %s, want the DM %s", alice, posted, channel.ID)
	}
	_, _, err = api.PostMessageContext(ctx, channel.ID, slack.MsgOptionText("to alice by DM id", false))
	mustNoError(t, err, "post to the DM id")
	for _, m := range s.Messages() {
		if m.Channel != channel.ID {
			t.Errorf("message %q in %s, want the DM", m.Text, m.Channel)
		}
	}
	_, _, _, err = api.OpenConversationContext(ctx, &slack.OpenConversationParameters{Users: []string{"UNOBODY"}})
	wantSlackError(t, err, "user_not_found")
}

func TestDirectoryMethods(t *testing.T) {
	s := newSim(t, Options{})
	s.AddUsergroup("S0APPROVERS", alice, bob)
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)

	auth, err := api.AuthTestContext(ctx)
	mustNoError(t, err, "auth.test")
	if auth.UserID != defaultBotUserID || auth.TeamID != defaultTeamID || auth.BotID == "" || auth.User == "" || auth.Team == "" {
		t.Errorf("auth.test = %+v", auth)
	}
	u, err := api.GetUserInfoContext(ctx, alice)
	mustNoError(t, err, "users.info")
	if u.ID != alice || u.Name != "alice" || u.RealName != "alice" || u.Profile.DisplayName != "alice" || u.TZ == "" || u.IsBot {
		t.Errorf("users.info = %+v", u)
	}
	botUser, err := api.GetUserInfoContext(ctx, defaultBotUserID)
	mustNoError(t, err, "users.info for the bot")
	if !botUser.IsBot {
		t.Error("the bot user is not a bot")
	}
	_, err = api.GetUserInfoContext(ctx, "UNOBODY")
	wantSlackError(t, err, "user_not_found")
	members, err := api.GetUserGroupMembersContext(ctx, "S0APPROVERS")
	mustNoError(t, err, "usergroups.users.list")
	if len(members) != 2 || members[0] != alice || members[1] != bob {
		t.Errorf("members = %v", members)
	}
	_, err = api.GetUserGroupMembersContext(ctx, "S0NONE")
	wantSlackError(t, err, "no_such_subteam")
}

func TestChannelErrors(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)

	_, _, err := api.PostMessageContext(ctx, outside, slack.MsgOptionText("hi", false))
	wantSlackError(t, err, "not_in_channel")
	_, _, err = api.PostMessageContext(ctx, "CNOWHERE", slack.MsgOptionText("hi", false))
	wantSlackError(t, err, "channel_not_found")
	_, err = api.PostEphemeralContext(ctx, outside, alice, slack.MsgOptionText("hi", false))
	wantSlackError(t, err, "not_in_channel")
	_, _, _, err = api.UpdateMessageContext(ctx, gpuChannel, "1.000000", slack.MsgOptionText("hi", false))
	wantSlackError(t, err, "message_not_found")
	_, _, err = api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("hi", false), slack.MsgOptionTS("1.000000"))
	wantSlackError(t, err, "thread_not_found")
	_, _, err = api.PostMessageContext(ctx, gpuChannel)
	wantSlackError(t, err, "no_text")

	s.AddChannel(outside, "outside", true)
	_, _, err = api.PostMessageContext(ctx, outside, slack.MsgOptionText("invited now", false))
	mustNoError(t, err, "post after the bot was invited")
}

func TestTokensAreChecked(t *testing.T) {
	s := newSim(t, Options{})
	ctx := testCtx(t, 5*time.Second)
	wrong := slack.New("xoxb-wrong", slack.OptionAPIURL(s.APIURL()))
	_, _, err := wrong.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("hi", false))
	wantSlackError(t, err, "invalid_auth")
	appTokenAsBot := slack.New(testAppToken, slack.OptionAPIURL(s.APIURL()))
	_, err = appTokenAsBot.AuthTestContext(ctx)
	wantSlackError(t, err, "invalid_auth")
	empty := slack.New("", slack.OptionAPIURL(s.APIURL()))
	_, err = empty.AuthTestContext(ctx)
	wantSlackError(t, err, "not_authed")
	if calls := s.Calls(); len(calls) != 3 || calls[0].Error != "invalid_auth" || calls[0].Params["text"] != "hi" || calls[0].Params["token"] != "" {
		t.Errorf("calls = %+v", calls)
	}
}

func TestFaults(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	post := func() error {
		_, _, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("hi", false))
		return err
	}

	s.FailNext("chat.postMessage", "internal_error", 2)
	wantSlackError(t, post(), "internal_error")
	wantSlackError(t, post(), "internal_error")
	mustNoError(t, post(), "post after the planned failures")

	s.RateLimitNext("chat.postMessage", 1, 1500*time.Millisecond)
	var rateLimited *slack.RateLimitedError
	if err := post(); !errors.As(err, &rateLimited) || rateLimited.RetryAfter != 2*time.Second {
		t.Errorf("rate limited post = %v, want *slack.RateLimitedError with RetryAfter 2s", err)
	}

	s.ServerErrorNext("*", 1, http.StatusServiceUnavailable)
	var statusErr slack.StatusCodeError
	if _, err := api.AuthTestContext(ctx); !errors.As(err, &statusErr) || statusErr.Code != http.StatusServiceUnavailable {
		t.Errorf("server error = %v, want a 503 StatusCodeError", err)
	}
	mustNoError(t, post(), "post after the faults")
	calls := s.Calls()
	var errorsSeen []string
	for _, c := range calls {
		errorsSeen = append(errorsSeen, c.Error)
	}
	want := "internal_error,internal_error,,ratelimited,http_503,"
	if got := strings.Join(errorsSeen, ","); got != want {
		t.Errorf("call errors = %q, want %q", got, want)
	}
}

func TestMessageLimits(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	post := func(options ...slack.MsgOption) error {
		_, _, err := api.PostMessageContext(ctx, gpuChannel, options...)
		return err
	}

	wantSlackError(t, post(slack.MsgOptionText(strings.Repeat("a", maxMessageTextChars+1), false)), "msg_too_long")
	mustNoError(t, post(slack.MsgOptionText(strings.Repeat("a", maxMessageTextChars), false)), "post 40,000 characters")

	var blocks []slack.Block
	for range maxMessageBlocks + 1 {
		blocks = append(blocks, slack.NewDividerBlock())
	}
	wantSlackError(t, post(slack.MsgOptionBlocks(blocks...)), "invalid_blocks")
	mustNoError(t, post(slack.MsgOptionBlocks(blocks[:maxMessageBlocks]...)), "post 50 blocks")

	long := slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", strings.Repeat("b", maxSectionTextChars+1), false, false), nil, nil)
	err := post(slack.MsgOptionBlocks(long))
	wantSlackError(t, err, "invalid_blocks")
	var slackErr slack.SlackErrorResponse
	if !errors.As(err, &slackErr) || len(slackErr.ResponseMetadata.Messages) == 0 || !strings.Contains(slackErr.ResponseMetadata.Messages[0], "/blocks/0/text/text") {
		t.Errorf("explanation = %+v", slackErr.ResponseMetadata)
	}

	// A context element is a text object: 3,000 characters at most, like a section's text.
	longContext := slack.NewContextBlock("", slack.NewTextBlockObject("mrkdwn", strings.Repeat("c", maxTextObjectChars+1), false, false))
	wantSlackError(t, post(slack.MsgOptionBlocks(longContext)), "invalid_blocks")
	fullContext := slack.NewContextBlock("", slack.NewTextBlockObject("mrkdwn", strings.Repeat("c", maxTextObjectChars), false, false))
	mustNoError(t, post(slack.MsgOptionBlocks(fullContext)), "post a context of 3,000 characters")

	broken := slack.UnsafeMsgOptionEndpoint(s.APIURL()+"chat.postMessage", func(values url.Values) { values.Set("blocks", `[{"type":"section",`) })
	wantSlackError(t, post(slack.MsgOptionText("x", false), broken), "invalid_blocks")
	if n := len(s.Messages()); n != 3 {
		t.Errorf("messages = %d, want only the three valid posts", n)
	}
}

// WaitMessageSince sees only what was posted or edited after the mark: an older,
// similar message cannot answer for a newer one.
func TestWaitMessageSinceAMark(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	_, first, err := api.PostMessageContext(ctx, gpuChannel, slack.MsgOptionText("Status: provisioning.", false))
	mustNoError(t, err, "first post")
	mark := s.Mark()
	// Checked once: the predicate runs before the (already ended) context is looked at.
	checkOnce, cancel := context.WithCancel(ctx)
	cancel()
	if m, err := s.WaitMessageSince(checkOnce, mark, func(m Message) bool { return strings.HasPrefix(m.Text, "Status:") }); err == nil {
		t.Fatalf("a message from before the mark answered: %+v", m)
	}
	if _, _, _, err := api.UpdateMessageContext(ctx, gpuChannel, first, slack.MsgOptionText("Status: ready.", false)); err != nil {
		t.Fatalf("update: %v", err)
	}
	m, err := s.WaitMessageSince(ctx, mark, func(m Message) bool { return strings.HasPrefix(m.Text, "Status:") })
	mustNoError(t, err, "wait since the mark")
	if m.Text != "Status: ready." {
		t.Errorf("got %q, want the edit made after the mark", m.Text)
	}
}
