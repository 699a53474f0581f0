package slacksim

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/slack-go/slack"
)

// SlashCommand delivers a slash command typed by user in channel and waits
// (ctx-bounded) for its ack.
func (s *Server) SlashCommand(ctx context.Context, user, channel, command, text string) (Ack, error) {
	envelopeID, err := s.SendSlashCommand(user, channel, command, text)
	if err != nil {
		return Ack{}, err
	}
	return s.AwaitAck(ctx, envelopeID)
}

// SendSlashCommand delivers a slash command and returns its envelope id at once;
// AwaitAck waits for the ack. text is what the person typed; the app receives it
// escaped as Slack sends it.
func (s *Server) SendSlashCommand(user, channel, command, text string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ch, err := s.actorLocked(user, channel)
	if err != nil {
		return "", err
	}
	payload := map[string]any{
		"token":        verificationToken,
		"team_id":      s.opts.TeamID,
		"team_domain":  teamDomain,
		"channel_id":   ch.id,
		"channel_name": ch.name,
		"user_id":      u.id,
		"user_name":    u.name,
		"command":      command,
		"text":         escapeCommandText(text),
		"api_app_id":   appID,
		"response_url": s.newResponseURLLocked(u.id, ch.id, ""),
		"trigger_id":   s.newTriggerLocked(u.id),
	}
	origin := envelopeOrigin{interaction: "slash_command", user: u.id, channel: ch.id, command: command}
	env, err := s.sendEnvelopeLocked("slash_commands", payload, true, origin)
	if err != nil {
		return "", err
	}
	return env.id, nil
}

// escapeCommandText is what Slack does to a slash command's text before sending it:
// &, < and > become entities, whatever the command's should_escape (which, off as
// gpubot's manifest has it, leaves mentions, channels and links as typed).
func escapeCommandText(text string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(text)
}

// actorLocked checks that a user and a channel (or a user id, for the DM) exist.
func (s *Server) actorLocked(userID, channelID string) (*user, *channel, error) {
	if s.closed {
		return nil, nil, ErrClosed
	}
	u, ok := s.users[userID]
	if !ok {
		return nil, nil, fmt.Errorf("slacksim: unknown user %q (AddUser first)", userID)
	}
	ch, apiErr := s.channelLocked(channelID)
	if apiErr != nil {
		return nil, nil, fmt.Errorf("slacksim: unknown channel %q (AddChannel first)", channelID)
	}
	return u, ch, nil
}

// Click presses the button labelled label on message m as user and waits for the
// ack. It works on channel messages and on ephemeral ones the user can see.
func (s *Server) Click(ctx context.Context, user string, m Message, label string) (Ack, error) {
	envelopeID, err := s.sendBlockAction(user, m, func(buttons []buttonRef) (buttonRef, error) {
		for _, b := range buttons {
			if b.button.Text != nil && b.button.Text.Text == label {
				return b, nil
			}
		}
		return buttonRef{}, fmt.Errorf("slacksim: message %s has no button %q (it has %q)", m.ID, label, labels(buttons))
	})
	if err != nil {
		return Ack{}, err
	}
	return s.AwaitAck(ctx, envelopeID)
}

// ClickAction sends a block_actions for any action_id and value on message m, as a
// tampered or stale client could; the block_id and label come from the message when
// it has that action.
func (s *Server) ClickAction(ctx context.Context, user string, m Message, actionID, value string) (Ack, error) {
	envelopeID, err := s.sendBlockAction(user, m, func(buttons []buttonRef) (buttonRef, error) {
		chosen := buttonRef{button: &slack.ButtonBlockElement{Type: "button", ActionID: actionID, Text: slack.NewTextBlockObject("plain_text", actionID, false, false)}}
		for _, b := range buttons {
			if b.button.ActionID == actionID {
				chosen.blockID, chosen.button.Text, chosen.button.Style = b.blockID, b.button.Text, b.button.Style
			}
		}
		chosen.button.Value = value
		return chosen, nil
	})
	if err != nil {
		return Ack{}, err
	}
	return s.AwaitAck(ctx, envelopeID)
}

type buttonRef struct {
	blockID string
	button  *slack.ButtonBlockElement
}

func buttonRefs(blocks slack.Blocks) []buttonRef {
	var refs []buttonRef
	for _, block := range blocks.BlockSet {
		for _, button := range buttonsOf(slack.Blocks{BlockSet: []slack.Block{block}}) {
			refs = append(refs, buttonRef{blockID: block.ID(), button: button})
		}
	}
	return refs
}

func labels(buttons []buttonRef) []string {
	var out []string
	for _, b := range buttons {
		if b.button.Text != nil {
			out = append(out, b.button.Text.Text)
		}
	}
	return out
}

func (s *Server) sendBlockAction(userID string, m Message, choose func([]buttonRef) (buttonRef, error)) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	u, ok := s.users[userID]
	if !ok {
		return "", fmt.Errorf("slacksim: unknown user %q (AddUser first)", userID)
	}
	stored, ok := s.messageByID[m.ID]
	switch {
	case !ok:
		return "", fmt.Errorf("slacksim: no message %s", m.ID)
	case stored.Deleted:
		return "", fmt.Errorf("slacksim: message %s was deleted", m.ID)
	case stored.Ephemeral && stored.User != userID:
		return "", fmt.Errorf("slacksim: %s cannot see the ephemeral message %s of %s", userID, m.ID, stored.User)
	}
	chosen, err := choose(buttonRefs(stored.Blocks))
	if err != nil {
		return "", err
	}
	payload := s.blockActionsPayloadLocked(u, stored, chosen)
	origin := envelopeOrigin{interaction: "block_actions", user: userID, channel: stored.Channel}
	env, err := s.sendEnvelopeLocked("interactive", payload, false, origin)
	if err != nil {
		return "", err
	}
	return env.id, nil
}

func (s *Server) blockActionsPayloadLocked(u *user, m *message, chosen buttonRef) map[string]any {
	actionTS := s.nextTSLocked()
	action := map[string]any{
		"type":      "button",
		"action_id": chosen.button.ActionID,
		"block_id":  chosen.blockID,
		"text":      chosen.button.Text,
		"value":     chosen.button.Value,
		"action_ts": actionTS,
	}
	if chosen.button.Style != "" {
		action["style"] = chosen.button.Style
	}
	messageTS := m.TS
	if m.Ephemeral {
		messageTS = m.ephemeralTS
	}
	container := map[string]any{"type": "message", "message_ts": messageTS, "channel_id": m.Channel, "is_ephemeral": m.Ephemeral}
	if m.ThreadTS != "" {
		container["thread_ts"] = m.ThreadTS
	}
	channelName := ""
	if ch, ok := s.channels[m.Channel]; ok {
		channelName = ch.name
	}
	payload := map[string]any{
		"type":                  "block_actions",
		"user":                  s.userRefJSON(u),
		"api_app_id":            appID,
		"token":                 verificationToken,
		"container":             container,
		"trigger_id":            s.newTriggerLocked(u.id),
		"team":                  s.teamJSON(),
		"enterprise":            nil,
		"is_enterprise_install": false,
		"channel":               map[string]any{"id": m.Channel, "name": channelName},
		"state":                 map[string]any{"values": map[string]any{}},
		"response_url":          s.newResponseURLLocked(u.id, m.Channel, m.ID),
		"actions":               []any{action},
	}
	if !m.Ephemeral {
		payload["message"] = s.messageJSON(m)
	}
	return payload
}

func (s *Server) teamJSON() map[string]any {
	return map[string]any{"id": s.opts.TeamID, "domain": teamDomain}
}

func (s *Server) userRefJSON(u *user) map[string]any {
	return map[string]any{"id": u.id, "username": u.name, "name": u.name, "team_id": s.opts.TeamID}
}

// SendEvent delivers an events_api envelope and waits (ctx-bounded) for its ack.
// event is either the inner event (e.g. {"type":"app_mention",...}), which is
// wrapped in an event_callback, or a whole event_callback.
func (s *Server) SendEvent(ctx context.Context, event json.RawMessage) (Ack, error) {
	var probe struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(event, &probe); err != nil || probe.Type == "" {
		return Ack{}, fmt.Errorf("slacksim: an event needs a JSON object with a type")
	}
	s.mu.Lock()
	var payload any = event
	if probe.Type != "event_callback" {
		payload = map[string]any{
			"token":                 verificationToken,
			"team_id":               s.opts.TeamID,
			"api_app_id":            appID,
			"event":                 event,
			"type":                  "event_callback",
			"event_id":              s.nextIDLocked("Ev"),
			"event_time":            s.now().Unix(),
			"is_ext_shared_channel": false,
		}
	}
	env, err := s.sendEnvelopeLocked("events_api", payload, false, envelopeOrigin{interaction: "event"})
	s.mu.Unlock()
	if err != nil {
		return Ack{}, err
	}
	return s.AwaitAck(ctx, env.id)
}
