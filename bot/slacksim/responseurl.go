package slacksim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"
)

const maxTriggers, maxResponseURLs = 10000, 10000

type trigger struct {
	id, user string
	issued   time.Time
	used     bool
}

// responseURL is where the bot can answer one slash command or interaction.
type responseURL struct {
	id, user, channel string
	originalID        string // the message an interaction came from; "" for a slash command
	issued            time.Time
	uses              int
}

func (s *Server) newTriggerLocked(userID string) string {
	id := fmt.Sprintf("%d.%d.%s", s.now().Unix(), len(s.triggerOrder)+1, randomHex(16))
	s.triggers[id] = &trigger{id: id, user: userID, issued: s.now()}
	s.triggerOrder = append(s.triggerOrder, id)
	if len(s.triggerOrder) > maxTriggers {
		drop := len(s.triggerOrder) - maxTriggers/2
		for _, old := range s.triggerOrder[:drop] {
			delete(s.triggers, old)
		}
		s.triggerOrder = slices.Clone(s.triggerOrder[drop:])
	}
	return id
}

// useTriggerLocked exchanges a trigger_id: valid for 3 s by the simulator's clock, once.
func (s *Server) useTriggerLocked(id string) (*trigger, *apiError) {
	t, ok := s.triggers[id]
	switch {
	case !ok:
		return nil, slackError("invalid_trigger_id")
	case s.now().Sub(t.issued) > triggerLifetime:
		return nil, slackError("expired_trigger_id")
	case t.used:
		return nil, slackError("exchanged_trigger_id")
	}
	t.used = true
	return t, nil
}

func (s *Server) newResponseURLLocked(userID, channelID, originalID string) string {
	id := randomHex(16)
	s.responseURLs[id] = &responseURL{id: id, user: userID, channel: channelID, originalID: originalID, issued: s.now()}
	s.responseOrder = append(s.responseOrder, id)
	if len(s.responseOrder) > maxResponseURLs {
		drop := len(s.responseOrder) - maxResponseURLs/2
		for _, old := range s.responseOrder[:drop] {
			delete(s.responseURLs, old)
		}
		s.responseOrder = slices.Clone(s.responseOrder[drop:])
	}
	return s.baseURL + "/response/" + id
}

// responseMessage is the JSON body a bot posts to a response_url.
type responseMessage struct {
	Text            string          `json:"text"`
	Blocks          json.RawMessage `json:"blocks"`
	ResponseType    string          `json:"response_type"`
	ReplaceOriginal bool            `json:"replace_original"`
	DeleteOriginal  bool            `json:"delete_original"`
	ThreadTS        string          `json:"thread_ts"`
}

func (s *Server) serveResponseURL(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	fields, readErr := readJSONObject(r.Body)
	params := map[string]string{}
	for name, value := range fields {
		params[name] = rawParam(value)
	}

	s.mu.Lock()
	call := Call{Method: "response_url", Params: params, At: s.now()}
	if f := s.takeFaultLocked("response_url"); f != nil {
		call.Error = f.callError()
		s.recordCallLocked(call)
		s.mu.Unlock()
		f.write(w)
		return
	}
	status, apiErr := s.answerResponseURLLocked(r.PathValue("id"), fields, readErr)
	if apiErr != nil {
		call.Error = apiErr.code
	}
	s.recordCallLocked(call)
	s.mu.Unlock()

	if apiErr != nil {
		writeAPIError(w, status, apiErr)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

func (s *Server) answerResponseURLLocked(id string, fields map[string]json.RawMessage, readErr error) (int, *apiError) {
	ru, ok := s.responseURLs[id]
	switch {
	case !ok:
		return http.StatusNotFound, slackError("invalid_url")
	case s.now().Sub(ru.issued) > responseURLLifetime:
		return http.StatusNotFound, slackError("expired_url")
	case ru.uses >= responseURLMaxUses:
		return http.StatusNotFound, slackError("used_url")
	case readErr != nil:
		return http.StatusBadRequest, slackError("invalid_payload", readErr.Error())
	}
	encoded, _ := json.Marshal(fields)
	var body responseMessage
	if err := json.Unmarshal(encoded, &body); err != nil {
		return http.StatusBadRequest, slackError("invalid_payload", err.Error())
	}
	if err := s.applyResponseLocked(ru, body, fields); err != nil {
		return http.StatusBadRequest, err
	}
	ru.uses++
	return http.StatusOK, nil
}

// applyResponseLocked does what Slack does with a response_url post: delete or
// replace the message the interaction came from, or post a new ephemeral (default)
// or in_channel message.
func (s *Server) applyResponseLocked(ru *responseURL, body responseMessage, fields map[string]json.RawMessage) *apiError {
	var original *message
	if body.DeleteOriginal || body.ReplaceOriginal {
		original = s.messageByID[ru.originalID]
		if original == nil || original.Deleted {
			return slackError("message_not_found")
		}
	}
	if body.DeleteOriginal {
		s.deleteMessageLocked(original)
		return nil
	}
	_, hasText := fields["text"]
	_, hasBlocks := fields["blocks"]
	content, err := parseContent(body.Text, hasText, body.Blocks, hasBlocks && !isEmptyPayload(body.Blocks))
	if err != nil {
		return err
	}
	if content.empty() {
		return slackError("no_text")
	}
	if body.ReplaceOriginal {
		// A replacement without blocks has none, unlike chat.update.
		content.hasText, content.hasBlocks = true, true
		s.updateMessageLocked(original, content)
		return nil
	}
	if body.ResponseType == "in_channel" {
		threadTS := ""
		if body.ThreadTS != "" {
			root, err := s.threadRootLocked(ru.channel, body.ThreadTS)
			if err != nil {
				return err
			}
			threadTS = root
		}
		s.postInChannelLocked(ru.channel, threadTS, content, "response_url")
		return nil
	}
	s.postEphemeralLocked(ru.channel, ru.user, body.ThreadTS, content, "response_url")
	return nil
}
