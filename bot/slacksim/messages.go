package slacksim

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/slack-go/slack"
)

// store is what Slack shows: messages, views, and the short-lived trigger ids and
// response_urls it hands out.
type store struct {
	messages      []*message
	messageByID   map[string]*message
	messageByTS   map[string]*message // tsKey(channel, ts)
	views         map[string]*view
	viewByExtID   map[string]*view
	modalStacks   map[string][]*view // user → open modals, bottom first
	homeViews     map[string]*view
	triggers      map[string]*trigger
	triggerOrder  []string
	responseURLs  map[string]*responseURL
	responseOrder []string
}

func newStore() store {
	return store{
		messageByID:  map[string]*message{},
		messageByTS:  map[string]*message{},
		views:        map[string]*view{},
		viewByExtID:  map[string]*view{},
		modalStacks:  map[string][]*view{},
		homeViews:    map[string]*view{},
		triggers:     map[string]*trigger{},
		responseURLs: map[string]*responseURL{},
	}
}

type message struct {
	Message
	blocks      blockSet
	ephemeralTS string // the message_ts Slack gives an ephemeral message (not shown in Message.TS)
	editedTS    string
	changed     Mark // when it was last posted, edited or deleted
}

// Mark is a point in the workspace's history of messages: WaitMessageSince looks only
// at what was posted or changed after it.
type Mark uint64

func tsKey(channel, ts string) string { return channel + "/" + ts }

// messageContent is validated message text and blocks.
type messageContent struct {
	text      string
	hasText   bool
	blocks    blockSet
	hasBlocks bool
	metadata  *slack.SlackMetadata
}

func (c messageContent) empty() bool { return c.text == "" && len(c.blocks.shapes) == 0 }

// parseContent validates text and blocks against Slack's message limits.
func parseContent(text string, hasText bool, blocksJSON []byte, hasBlocks bool) (messageContent, *apiError) {
	if err := checkMessageText(text); err != nil {
		return messageContent{}, err
	}
	content := messageContent{text: text, hasText: hasText}
	if hasBlocks {
		blocks, err := parseBlocks(blocksJSON, messageSurface)
		if err != nil {
			return messageContent{}, err
		}
		content.blocks, content.hasBlocks = blocks, true
	}
	return content, nil
}

// contentFromParams reads text, blocks and metadata from a chat.* call.
func contentFromParams(req *apiRequest) (messageContent, *apiError) {
	content, err := parseContent(req.params["text"], req.has("text"), []byte(req.params["blocks"]), req.has("blocks"))
	if err != nil {
		return messageContent{}, err
	}
	if raw := req.params["metadata"]; raw != "" {
		var metadata slack.SlackMetadata
		if err := json.Unmarshal([]byte(raw), &metadata); err != nil {
			return messageContent{}, slackError("invalid_metadata_format")
		}
		if metadata.EventType != "" || metadata.EventPayload != nil {
			if metadata.EventType == "" {
				return messageContent{}, slackError("invalid_metadata_format", problem("event_type is required", "/metadata/event_type"))
			}
			content.metadata = &metadata
		}
	}
	return content, nil
}

func (s *Server) addMessageLocked(m *message) {
	m.ID = s.nextIDLocked("M")
	m.changed = s.nextMarkLocked()
	m.Blocks = m.blocks.parsed
	s.messages = append(s.messages, m)
	s.messageByID[m.ID] = m
	if m.TS != "" {
		s.messageByTS[tsKey(m.Channel, m.TS)] = m
	}
	kind := "post"
	if m.Ephemeral {
		kind = "ephemeral"
	}
	s.emitLocked(Event{Kind: kind, Message: m.Message})
	s.pruneMessagesLocked()
	s.notifyLocked()
}

func (s *Server) pruneMessagesLocked() {
	if len(s.messages) <= maxMessages {
		return
	}
	drop := len(s.messages) - maxMessages*9/10
	for _, old := range s.messages[:drop] {
		delete(s.messageByID, old.ID)
		if old.TS != "" {
			delete(s.messageByTS, tsKey(old.Channel, old.TS))
		}
	}
	s.messages = slices.Clone(s.messages[drop:])
}

// updateMessageLocked applies an edit; text and blocks that were not given are kept,
// as chat.update does.
func (s *Server) updateMessageLocked(m *message, content messageContent) {
	if content.hasText {
		m.Text = content.text
	}
	if content.hasBlocks {
		m.blocks = content.blocks
		m.Blocks = content.blocks.parsed
	}
	if content.metadata != nil {
		m.Metadata = content.metadata
	}
	m.Updates++
	m.editedTS = s.nextTSLocked()
	m.changed = s.nextMarkLocked()
	s.emitLocked(Event{Kind: "update", Message: m.Message})
	s.notifyLocked()
}

func (s *Server) deleteMessageLocked(m *message) {
	m.Deleted = true
	m.changed = s.nextMarkLocked()
	s.emitLocked(Event{Kind: "delete", Message: m.Message})
	s.notifyLocked()
}

// threadRootLocked finds the message a thread_ts names in channel; a reply's ts
// means its root, as in Slack.
func (s *Server) threadRootLocked(channelID, threadTS string) (string, *apiError) {
	root, ok := s.messageByTS[tsKey(channelID, threadTS)]
	if !ok {
		return "", slackError("thread_not_found")
	}
	if root.ThreadTS != "" {
		return root.ThreadTS, nil
	}
	return root.TS, nil
}

// messageJSON is a message as the Web API and interaction payloads show it.
func (s *Server) messageJSON(m *message) map[string]any {
	out := map[string]any{
		"type":   "message",
		"user":   s.opts.BotUserID,
		"bot_id": botID,
		"app_id": appID,
		"team":   s.opts.TeamID,
		"text":   m.Text,
		"ts":     m.TS,
	}
	if len(m.blocks.shapes) > 0 {
		out["blocks"] = m.blocks.raw
	}
	if m.ThreadTS != "" {
		out["thread_ts"] = m.ThreadTS
	}
	if m.Metadata != nil {
		out["metadata"] = m.Metadata
	}
	if m.Updates > 0 {
		out["edited"] = map[string]any{"user": s.opts.BotUserID, "ts": m.editedTS}
	}
	return out
}

func (s *Server) chatPostMessageLocked(req *apiRequest) (map[string]any, *apiError) {
	ch, err := s.postableChannelLocked(req.params["channel"])
	if err != nil {
		return nil, err
	}
	content, err := contentFromParams(req)
	if err != nil {
		return nil, err
	}
	if content.empty() && req.params["attachments"] == "" {
		return nil, slackError("no_text")
	}
	threadTS := ""
	if ts := req.params["thread_ts"]; ts != "" {
		if threadTS, err = s.threadRootLocked(ch.id, ts); err != nil {
			return nil, err
		}
	}
	broadcast, _ := strconv.ParseBool(req.params["reply_broadcast"])
	m := &message{
		Message: Message{
			Channel:   ch.id,
			TS:        s.nextTSLocked(),
			ThreadTS:  threadTS,
			Text:      content.text,
			Metadata:  content.metadata,
			Broadcast: broadcast && threadTS != "",
			Source:    "chat.postMessage",
		},
		blocks: content.blocks,
	}
	s.addMessageLocked(m)
	return map[string]any{"channel": ch.id, "ts": m.TS, "message": s.messageJSON(m)}, nil
}

func (s *Server) chatUpdateLocked(req *apiRequest) (map[string]any, *apiError) {
	m, err := s.postedMessageLocked(req.params["channel"], req.params["ts"])
	if err != nil {
		return nil, err
	}
	content, err := contentFromParams(req)
	if err != nil {
		return nil, err
	}
	if !content.hasText && !content.hasBlocks && req.params["attachments"] == "" {
		return nil, slackError("no_text")
	}
	s.updateMessageLocked(m, content)
	return map[string]any{"channel": m.Channel, "ts": m.TS, "text": m.Text, "message": s.messageJSON(m)}, nil
}

func (s *Server) chatDeleteLocked(req *apiRequest) (map[string]any, *apiError) {
	m, err := s.postedMessageLocked(req.params["channel"], req.params["ts"])
	if err != nil {
		return nil, err
	}
	s.deleteMessageLocked(m)
	return map[string]any{"channel": m.Channel, "ts": m.TS}, nil
}

// postedMessageLocked finds a live channel message for chat.update and chat.delete.
func (s *Server) postedMessageLocked(channelArg, ts string) (*message, *apiError) {
	ch, err := s.channelLocked(channelArg)
	if err != nil {
		return nil, err
	}
	m, ok := s.messageByTS[tsKey(ch.id, ts)]
	if !ok || m.Deleted {
		return nil, slackError("message_not_found")
	}
	return m, nil
}

func (s *Server) chatPostEphemeralLocked(req *apiRequest) (map[string]any, *apiError) {
	ch, err := s.postableChannelLocked(req.params["channel"])
	if err != nil {
		return nil, err
	}
	userID := req.params["user"]
	if _, known := s.users[userID]; !known {
		return nil, slackError("user_not_found")
	}
	if ch.dmUser != "" && ch.dmUser != userID {
		return nil, slackError("user_not_in_channel")
	}
	content, err := contentFromParams(req)
	if err != nil {
		return nil, err
	}
	if content.empty() && req.params["attachments"] == "" {
		return nil, slackError("no_text")
	}
	m := s.postEphemeralLocked(ch.id, userID, req.params["thread_ts"], content, "chat.postEphemeral")
	return map[string]any{"message_ts": m.ephemeralTS}, nil
}

func (s *Server) postEphemeralLocked(channelID, userID, threadTS string, content messageContent, source string) *message {
	m := &message{
		Message: Message{
			Channel:   channelID,
			ThreadTS:  threadTS,
			User:      userID,
			Ephemeral: true,
			Text:      content.text,
			Source:    source,
		},
		blocks:      content.blocks,
		ephemeralTS: s.nextTSLocked(),
	}
	s.addMessageLocked(m)
	return m
}

func (s *Server) postInChannelLocked(channelID, threadTS string, content messageContent, source string) *message {
	m := &message{
		Message: Message{
			Channel:  channelID,
			TS:       s.nextTSLocked(),
			ThreadTS: threadTS,
			Text:     content.text,
			Metadata: content.metadata,
			Source:   source,
		},
		blocks: content.blocks,
	}
	s.addMessageLocked(m)
	return m
}

// Messages lists every message so far with its current content, in posting order
// (the most recent 18,000 to 20,000 are kept).
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		out[i] = m.Message
	}
	return out
}

// WaitMessage waits (ctx-bounded) until a message matching f exists, or one is
// updated into matching, and returns the first such message in posting order. It looks
// at the whole history: to wait for what an action causes, take a Mark before it and
// use WaitMessageSince, so that an older, similar message cannot answer.
func (s *Server) WaitMessage(ctx context.Context, f func(Message) bool) (Message, error) {
	return s.WaitMessageSince(ctx, 0, f)
}

// Mark is the point in the history of messages reached now.
func (s *Server) Mark() Mark {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastMark
}

func (s *Server) nextMarkLocked() Mark {
	s.lastMark++
	return s.lastMark
}

// WaitMessageSince waits (ctx-bounded) until a message posted or changed after mark
// matches f, and returns the first such message in posting order.
func (s *Server) WaitMessageSince(ctx context.Context, mark Mark, f func(Message) bool) (Message, error) {
	var found Message
	err := s.WaitUntil(ctx, func() bool {
		s.mu.Lock()
		recent := make([]Message, 0, 16)
		for _, m := range s.messages {
			if m.changed > mark {
				recent = append(recent, m.Message)
			}
		}
		s.mu.Unlock()
		for _, m := range recent {
			if f(m) {
				found = m
				return true
			}
		}
		return false
	})
	if err != nil {
		return Message{}, fmt.Errorf("wait for message: %w", err)
	}
	return found, nil
}

// Thread lists the replies to the message channel/ts in order, leaving out deleted ones.
func (s *Server) Thread(channel, ts string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var replies []Message
	for _, m := range s.messages {
		if m.Channel == channel && m.ThreadTS == ts && m.TS != ts && !m.Deleted {
			replies = append(replies, m.Message)
		}
	}
	return replies
}

// Message returns the current content of the message with the simulator id id.
func (s *Server) Message(id string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.messageByID[id]
	if !ok {
		return Message{}, false
	}
	return m.Message, true
}
