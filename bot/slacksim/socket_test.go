package slacksim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"
)

func TestHelloThenSlashCommandAckShowsEphemeral(t *testing.T) {
	s := newSim(t, Options{})
	var hellos, commands capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		switch evt.Type {
		case socketmode.EventTypeHello:
			hellos.add(evt)
		case socketmode.EventTypeSlashCommand:
			commands.add(evt)
			cmd := evt.Data.(slack.SlashCommand)
			_ = client.Ack(*evt.Request, map[string]any{"text": "hello " + cmd.UserName + ", you typed " + cmd.Text})
		}
	})

	ack, err := s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", "list all")
	mustNoError(t, err, "slash command")

	hello := hellos.last(t)
	if hello.Request.NumConnections != 1 || hello.Request.ConnectionInfo.AppID != appID || hello.Request.DebugInfo.Host == "" {
		t.Errorf("hello = %+v, want num_connections 1, app id and debug_info", hello.Request)
	}
	evt := commands.last(t)
	cmd := evt.Data.(slack.SlashCommand)
	if cmd.Command != "/gpu" || cmd.Text != "list all" || cmd.UserID != alice || cmd.UserName != "alice" ||
		cmd.ChannelID != gpuChannel || cmd.ChannelName != "gpu" || cmd.TeamID != defaultTeamID ||
		cmd.TeamDomain == "" || cmd.APIAppID != appID || cmd.TriggerID == "" ||
		!strings.HasPrefix(cmd.ResponseURL, "http://127.0.0.1:") {
		t.Errorf("slash command decoded as %+v", cmd)
	}
	if !evt.Request.AcceptsResponsePayload || evt.Request.RetryAttempt != 0 || evt.Request.EnvelopeID != ack.EnvelopeID {
		t.Errorf("envelope = %+v, want accepts_response_payload, first attempt, id %s", evt.Request, ack.EnvelopeID)
	}
	if !strings.Contains(string(ack.Payload), "you typed list all") || ack.Latency <= 0 {
		t.Errorf("ack = %+v", ack)
	}

	messages := s.Messages()
	if len(messages) != 1 {
		t.Fatalf("messages = %+v, want the ack payload as one ephemeral", messages)
	}
	m := messages[0]
	if !m.Ephemeral || m.User != alice || m.Channel != gpuChannel || m.Text != "hello alice, you typed list all" || m.Source != "ack" || m.TS != "" {
		t.Errorf("ack message = %+v", m)
	}
	if late := s.LateAcks(); len(late) != 0 {
		t.Errorf("late acks = %v", late)
	}
	if problems := s.ProtocolErrors(); len(problems) != 0 {
		t.Errorf("protocol errors = %v", problems)
	}
}

func TestInChannelAckIsPostedForEveryone(t *testing.T) {
	s := newSim(t, Options{})
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			_ = client.Ack(*evt.Request, map[string]any{"response_type": "in_channel", "text": "everyone sees this"})
		}
	})
	_, err := s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", "")
	mustNoError(t, err, "slash command")
	m, err := s.WaitMessage(testCtx(t, 2*time.Second), func(m Message) bool { return m.Text == "everyone sees this" })
	mustNoError(t, err, "wait for the in_channel reply")
	if m.Ephemeral || m.TS == "" || m.Channel != gpuChannel {
		t.Errorf("in_channel ack = %+v", m)
	}
}

func TestMissingAckIsLateAndTheUserSeesAnError(t *testing.T) {
	s := newSim(t, Options{AckTimeout: 150 * time.Millisecond})
	startBot(t, s, nil)

	envelopeID, err := s.SendSlashCommand(alice, gpuChannel, "/gpu", "help")
	mustNoError(t, err, "send slash command")
	m, err := s.WaitMessage(testCtx(t, 3*time.Second), func(m Message) bool { return m.Source == "slack" })
	mustNoError(t, err, "wait for Slack's error")
	if !m.Ephemeral || m.User != alice || !strings.Contains(m.Text, "/gpu didn't respond") {
		t.Errorf("error shown = %+v", m)
	}
	if late := s.LateAcks(); len(late) != 1 || late[0] != envelopeID {
		t.Errorf("late acks = %v, want [%s]", late, envelopeID)
	}
}

func TestLargeAckIsRefused(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	large := map[string]any{"text": strings.Repeat("x", maxAckBytes)}

	t.Run("slack-go refuses to send it", func(t *testing.T) {
		ackErrors := make(chan error, 1)
		startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
			if evt.Type == socketmode.EventTypeSlashCommand {
				ackErrors <- client.Ack(*evt.Request, large)
			}
		})
		_, err := s.SendSlashCommand(alice, gpuChannel, "/gpu", "list")
		mustNoError(t, err, "send slash command")
		select {
		case err := <-ackErrors:
			if err == nil {
				t.Fatal("slack-go sent a 20 KB ack")
			}
		case <-testCtx(t, 5*time.Second).Done():
			t.Fatal("no slash command reached the bot")
		}
	})

	t.Run("the simulator refuses a client that sends it", func(t *testing.T) {
		_, url, err := api.StartSocketModeContext(testCtx(t, 5*time.Second))
		mustNoError(t, err, "apps.connections.open")
		conn, _, err := websocket.DefaultDialer.DialContext(testCtx(t, 5*time.Second), url, nil)
		mustNoError(t, err, "dial")
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var hello map[string]any
		mustNoError(t, conn.ReadJSON(&hello), "read hello")

		envelopeID, err := s.SendSlashCommand(bob, gpuChannel, "/gpu", "list")
		mustNoError(t, err, "send slash command")
		var envelope socketmode.Request
		for envelope.EnvelopeID != envelopeID {
			mustNoError(t, conn.ReadJSON(&envelope), "read envelope")
		}
		mustNoError(t, conn.WriteJSON(map[string]any{"envelope_id": envelopeID, "payload": large}), "write ack")

		_, err = s.AwaitAck(testCtx(t, 5*time.Second), envelopeID)
		if !errors.Is(err, ErrAckRefused) {
			t.Fatalf("AwaitAck = %v, want ErrAckRefused", err)
		}
		if late := s.LateAcks(); !containsString(late, envelopeID) {
			t.Errorf("late acks %v lack the refused %s", late, envelopeID)
		}
		problems := s.ProtocolErrors()
		if len(problems) == 0 || !strings.Contains(problems[len(problems)-1], "refused") {
			t.Errorf("protocol errors = %v", problems)
		}
		shown, err := s.WaitMessage(testCtx(t, 2*time.Second), func(m Message) bool { return m.Source == "slack" && m.User == bob })
		mustNoError(t, err, "wait for Slack's error")
		if !strings.Contains(shown.Text, "didn't respond") {
			t.Errorf("shown = %q", shown.Text)
		}
	})
}

func containsString(list []string, want string) bool {
	for _, item := range list {
		if item == want {
			return true
		}
	}
	return false
}

func TestRedeliveryAfterTimeout(t *testing.T) {
	s := newSim(t, Options{RedeliverAfter: 100 * time.Millisecond})
	var seen capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type != socketmode.EventTypeEventsAPI {
			return
		}
		seen.add(evt)
		// Play a bot that was too slow the first time.
		if evt.Request.RetryAttempt > 0 {
			_ = client.Ack(*evt.Request)
		}
	})

	ack, err := s.SendEvent(testCtx(t, 5*time.Second), json.RawMessage(`{"type":"app_mention","user":"UALICE","text":"<@UBOT> hi","ts":"1.000001","channel":"CGPU","event_ts":"1.000001"}`))
	mustNoError(t, err, "send event")
	deliveries := seen.all()
	if len(deliveries) < 2 {
		t.Fatalf("deliveries = %d, want the first and a retry", len(deliveries))
	}
	first, retry := deliveries[0].Request, deliveries[1].Request
	if first.RetryAttempt != 0 || retry.RetryAttempt != 1 || retry.RetryReason != "timeout" || retry.EnvelopeID != first.EnvelopeID || retry.EnvelopeID != ack.EnvelopeID {
		t.Errorf("first %+v, retry %+v", first, retry)
	}
	inner := deliveries[1].Data.(slackevents.EventsAPIEvent)
	if inner.Type != slackevents.CallbackEvent || inner.InnerEvent.Type != "app_mention" {
		t.Errorf("event decoded as %+v", inner)
	}
}

func TestRedeliveryStopsAfterThreeRetries(t *testing.T) {
	const redeliverAfter = 30 * time.Millisecond
	s := newSim(t, Options{RedeliverAfter: redeliverAfter})
	var seen capture
	startBot(t, s, func(_ *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeEventsAPI {
			seen.add(evt)
		}
	})
	ctx, cancel := context.WithCancel(testCtx(t, 5*time.Second))
	sent := make(chan error, 1)
	go func() {
		_, err := s.SendEvent(ctx, json.RawMessage(`{"type":"app_mention","text":"hi","channel":"CGPU"}`))
		sent <- err
	}()
	mustNoError(t, seen.waitFor(ctx, 4), "wait for four deliveries")
	cancel()
	if err := <-sent; err == nil {
		t.Fatal("an event nobody acked got an ack")
	}
	// Nothing comes after the third retry: give a fifth delivery ample time to show.
	time.Sleep(5 * redeliverAfter)
	attempts := []int{}
	for _, evt := range seen.all() {
		attempts = append(attempts, evt.Request.RetryAttempt)
	}
	if len(attempts) != 4 || attempts[0] != 0 || attempts[3] != 3 {
		t.Errorf("retry attempts = %v, want [0 1 2 3]", attempts)
	}
}

func TestExplicitRedeliverSendsTheSameEnvelopeAgain(t *testing.T) {
	s := newSim(t, Options{})
	var seen capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			seen.add(evt)
			_ = client.Ack(*evt.Request)
		}
	})
	first, err := s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", "create 8x")
	mustNoError(t, err, "slash command")
	again, err := s.Redeliver(testCtx(t, 5*time.Second), first.EnvelopeID)
	mustNoError(t, err, "redeliver")
	if again.EnvelopeID != first.EnvelopeID {
		t.Errorf("redelivered ack for %s, want %s", again.EnvelopeID, first.EnvelopeID)
	}
	deliveries := seen.all()
	if len(deliveries) != 2 {
		t.Fatalf("deliveries = %d, want 2", len(deliveries))
	}
	if deliveries[1].Request.RetryAttempt != 1 || deliveries[1].Request.RetryReason != "timeout" {
		t.Errorf("redelivery = %+v", deliveries[1].Request)
	}
	if deliveries[0].Data.(slack.SlashCommand).TriggerID != deliveries[1].Data.(slack.SlashCommand).TriggerID {
		t.Error("a redelivery must carry the same payload")
	}
}

func TestStopPingsMakesSlackGoReconnect(t *testing.T) {
	s := newSim(t, Options{PingInterval: 50 * time.Millisecond})
	startBot(t, s, ackAll, socketmode.OptionPingInterval(300*time.Millisecond))

	s.StopPings()
	err := s.WaitUntil(testCtx(t, 5*time.Second), func() bool { return s.TotalConnections() >= 2 && s.Connections() == 1 })
	mustNoError(t, err, "wait for the reconnect")
	_, err = s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", "list")
	mustNoError(t, err, "slash command on the new connection")
}

func TestDisconnectAndDroppedConnections(t *testing.T) {
	s := newSim(t, Options{})
	startBot(t, s, ackAll)

	s.Disconnect("refresh_requested")
	err := s.WaitUntil(testCtx(t, 5*time.Second), func() bool { return s.TotalConnections() >= 2 && s.Connections() == 1 })
	mustNoError(t, err, "reconnect after disconnect")
	before := s.TotalConnections()

	// A slash command typed while no connection is open fails for its user, as on
	// Slack: it is not kept for the next connection.
	s.DropConnections()
	envelopeID, err := s.SendSlashCommand(alice, gpuChannel, "/gpu", "list")
	mustNoError(t, err, "send slash command")
	_, err = s.AwaitAck(testCtx(t, 5*time.Second), envelopeID)
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), FailedNoConnection) {
		t.Fatalf("await ack = %v, want it failed with %s", err, FailedNoConnection)
	}
	if got := s.Failures(); len(got) != 1 || got[0] != (Failure{EnvelopeID: envelopeID, Interaction: "slash_command", Reason: FailedNoConnection}) {
		t.Errorf("failures = %+v", got)
	}
	if _, err := s.WaitMessage(testCtx(t, 5*time.Second), func(m Message) bool {
		return m.Source == "slack" && m.User == alice && strings.Contains(m.Text, `/gpu didn't respond: failed with the error "dispatch_failed"`)
	}); err != nil {
		t.Errorf("the user was not shown the failure: %v", err)
	}
	err = s.WaitUntil(testCtx(t, 5*time.Second), func() bool { return s.TotalConnections() > before && s.Connections() == 1 })
	mustNoError(t, err, "reconnect after the drop")
	_, err = s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", "list")
	mustNoError(t, err, "slash command on the new connection")
}

func TestSlashCommandBeforeAnyConnectionFails(t *testing.T) {
	s := newSim(t, Options{})
	envelopeID, err := s.SendSlashCommand(alice, gpuChannel, "/gpu", "help")
	mustNoError(t, err, "send before any connection")
	startBot(t, s, ackAll)
	if _, err := s.AwaitAck(testCtx(t, 5*time.Second), envelopeID); !errors.Is(err, ErrFailed) {
		t.Fatalf("await ack = %v, want ErrFailed", err)
	}
}

func TestEventWaitsForTheFirstConnection(t *testing.T) {
	s := newSim(t, Options{})
	acked := make(chan error, 1)
	go func() {
		_, err := s.SendEvent(testCtx(t, 5*time.Second), json.RawMessage(`{"type":"app_mention","text":"hi","channel":"CGPU"}`))
		acked <- err
	}()
	mustNoError(t, s.WaitUntil(testCtx(t, 5*time.Second), func() bool { return s.waitingCount.Load() == 1 }), "event waiting")
	startBot(t, s, ackAll)
	mustNoError(t, <-acked, "event acked once a connection came")
}

// A slash command whose connection dies before the ack fails for its user and is not
// sent again on the next connection: Slack does not retry slash commands.
func TestConnectionLostBeforeAckFailsTheCommand(t *testing.T) {
	s := newSim(t, Options{AckTimeout: time.Minute})
	var commands capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type != socketmode.EventTypeSlashCommand {
			return
		}
		commands.add(evt)
		if evt.Data.(slack.SlashCommand).Text != "unanswered" {
			_ = client.Ack(*evt.Request)
		}
	})
	first, err := s.SendSlashCommand(alice, gpuChannel, "/gpu", "unanswered")
	mustNoError(t, err, "send")
	mustNoError(t, commands.waitFor(testCtx(t, 5*time.Second), 1), "first delivery")
	s.DropConnections()
	if _, err := s.AwaitAck(testCtx(t, 5*time.Second), first); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), FailedConnectionLost) {
		t.Fatalf("await ack = %v, want it failed with %s", err, FailedConnectionLost)
	}
	mustNoError(t, s.WaitConnected(testCtx(t, 5*time.Second)), "reconnect")
	_, err = s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", "list")
	mustNoError(t, err, "next command")
	got := commands.all()
	if len(got) != 2 || got[1].Data.(slack.SlashCommand).Text != "list" {
		t.Fatalf("deliveries = %d, want the lost command once and then the next one", len(got))
	}
	if f := s.Failures(); len(f) != 1 || f[0].EnvelopeID != first || f[0].Reason != FailedConnectionLost {
		t.Errorf("failures = %+v", f)
	}
}

func TestConnectionLimit(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	for i := range maxConnections {
		_, url, err := api.StartSocketModeContext(testCtx(t, 5*time.Second))
		mustNoError(t, err, "apps.connections.open")
		conn, _, err := websocket.DefaultDialer.DialContext(testCtx(t, 5*time.Second), url, nil)
		mustNoError(t, err, "dial")
		t.Cleanup(func() { _ = conn.Close() })
		// The hello comes once the simulator counts the connection.
		var hello map[string]any
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		mustNoError(t, conn.ReadJSON(&hello), "read hello")
		if hello["num_connections"] != float64(i+1) || s.Connections() != i+1 {
			t.Fatalf("connections = %d (hello says %v), want %d", s.Connections(), hello["num_connections"], i+1)
		}
	}
	_, _, err := api.StartSocketModeContext(testCtx(t, 5*time.Second))
	wantSlackError(t, err, "too_many_websockets")
}

func TestSocketModeNeedsTheAppToken(t *testing.T) {
	s := newSim(t, Options{})
	wrong := slack.New(testBotToken, slack.OptionAPIURL(s.APIURL()), slack.OptionAppLevelToken("xapp-wrong"))
	_, _, err := wrong.StartSocketModeContext(testCtx(t, 5*time.Second))
	wantSlackError(t, err, "invalid_auth")
	missing := slack.New(testBotToken, slack.OptionAPIURL(s.APIURL()))
	_, _, err = missing.StartSocketModeContext(testCtx(t, 5*time.Second))
	wantSlackError(t, err, "not_authed")
}

func TestCloseEndsWaits(t *testing.T) {
	s := New(Options{BotToken: testBotToken, AppToken: testAppToken})
	s.AddUser(alice, "alice")
	startBot(t, s, nil)
	done := make(chan error, 1)
	ctx := testCtx(t, 5*time.Second)
	go func() {
		_, err := s.WaitMessage(ctx, func(Message) bool { return false })
		done <- err
	}()
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("wait ended with %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end a wait")
	}
	if s.Connections() != 0 {
		t.Errorf("connections after Close = %d", s.Connections())
	}
}

func TestBurstOfCommandsIsDelivered(t *testing.T) {
	s := newSim(t, Options{AckTimeout: time.Minute})
	startBot(t, s, ackAll)
	ids := make([]string, 0, 1000)
	for range cap(ids) {
		id, err := s.SendSlashCommand(alice, gpuChannel, "/gpu", "list")
		mustNoError(t, err, "send")
		ids = append(ids, id)
	}
	ctx := testCtx(t, 10*time.Second)
	for _, id := range ids {
		_, err := s.AwaitAck(ctx, id)
		mustNoError(t, err, "await ack")
	}
	if f := s.Failures(); len(f) != 0 {
		t.Errorf("failures = %+v", f)
	}
}

func TestEventsWaitingForAConnectionAreBounded(t *testing.T) {
	s := newSim(t, Options{})
	ctx, cancel := context.WithCancel(testCtx(t, 10*time.Second))
	defer cancel()
	for range maxWaitingFrames {
		go func() {
			_, _ = s.SendEvent(ctx, json.RawMessage(`{"type":"app_mention","text":"hi","channel":"CGPU"}`))
		}()
	}
	mustNoError(t, s.WaitUntil(ctx, func() bool { return s.waitingCount.Load() == maxWaitingFrames }), "events waiting")
	if _, err := s.SendEvent(ctx, json.RawMessage(`{"type":"app_mention","text":"one more","channel":"CGPU"}`)); err == nil {
		t.Fatal("the waiting room has no bound")
	}
}

// twoBots connects two slack-go clients, as two gpubot replicas would, each
// recording what reaches it; handle acks (or not) for both.
func twoBots(t *testing.T, s *Server, handle func(*socketmode.Client, socketmode.Event)) [2]*capture {
	t.Helper()
	var seen [2]*capture
	for i := range seen {
		seen[i] = &capture{}
		startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
			if evt.Request != nil && evt.Request.EnvelopeID != "" {
				seen[i].add(evt)
			}
			handle(client, evt)
		})
	}
	ctx := testCtx(t, 10*time.Second)
	for s.Connections() < 2 {
		if ctx.Err() != nil {
			t.Fatalf("connections = %d, want 2", s.Connections())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return seen
}

func TestEachEnvelopeGoesToOneConnectionAtRandom(t *testing.T) {
	s := newSim(t, Options{Seed: 7})
	seen := twoBots(t, s, ackAll)
	const commands = 30
	for i := range commands {
		_, err := s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", fmt.Sprintf("list %d", i))
		mustNoError(t, err, "slash command")
	}
	first, second := len(seen[0].all()), len(seen[1].all())
	if first+second != commands || first == 0 || second == 0 {
		t.Errorf("connections got %d and %d envelopes, want %d in all, each to one of them, spread over both", first, second, commands)
	}
}

func TestARetriedEventMayLandOnAnotherConnection(t *testing.T) {
	s := newSim(t, Options{Seed: 7, RedeliverAfter: 20 * time.Millisecond})
	// Both replicas miss every first try, as a replica that dies before its ack.
	seen := twoBots(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeEventsAPI && evt.Request.RetryAttempt > 0 {
			_ = client.Ack(*evt.Request)
		}
	})
	const events = 20
	for i := range events {
		event := fmt.Sprintf(`{"type":"app_mention","user":"UALICE","text":"<@UBOT> %d","ts":"1.%06d","channel":"CGPU","event_ts":"1.%06d"}`, i, i, i)
		_, err := s.SendEvent(testCtx(t, 5*time.Second), json.RawMessage(event))
		mustNoError(t, err, "send event")
	}
	firstTryOn := map[string]int{}
	moved := 0
	for conn, c := range seen {
		for _, evt := range c.all() {
			if evt.Request.RetryAttempt == 0 {
				firstTryOn[evt.Request.EnvelopeID] = conn
			}
		}
	}
	for conn, c := range seen {
		for _, evt := range c.all() {
			if evt.Request.RetryAttempt > 0 {
				if evt.Request.RetryReason != "timeout" {
					t.Errorf("retry reason %q, want timeout", evt.Request.RetryReason)
				}
				if firstTryOn[evt.Request.EnvelopeID] != conn {
					moved++
				}
			}
		}
	}
	if len(firstTryOn) != events || moved == 0 {
		t.Errorf("%d events tried first, %d retries on another connection; want %d and some", len(firstTryOn), moved, events)
	}
}
