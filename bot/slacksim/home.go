package slacksim

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/slack-go/slack"
)

// Slack's limits on the Home tab: views.publish is a Tier 4 method (100+ calls a
// minute per workspace); a Home view holds at most 100 blocks (homeSurface).
const (
	defaultPublishesPerMinute = 100
	publishWindow             = time.Minute
)

// OpenHome is user opening the app's Home tab: the bot gets an app_home_opened event
// (an Events API envelope, retried like any event), with the tab last published to
// user when there is one. It waits (ctx-bounded) for the ack.
func (s *Server) OpenHome(ctx context.Context, user string) (Ack, error) {
	envelopeID, err := s.sendHomeOpened(user)
	if err != nil {
		return Ack{}, err
	}
	return s.AwaitAck(ctx, envelopeID)
}

func (s *Server) sendHomeOpened(userID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	if _, ok := s.users[userID]; !ok {
		return "", fmt.Errorf("slacksim: unknown user %q (AddUser first)", userID)
	}
	event := map[string]any{
		"type":     "app_home_opened",
		"user":     userID,
		"channel":  s.dmChannelLocked(userID),
		"tab":      "home",
		"event_ts": s.nextTSLocked(),
	}
	if home, ok := s.homeViews[userID]; ok {
		event["view"] = s.viewJSON(home, nil)
	}
	payload := map[string]any{
		"token":                 verificationToken,
		"team_id":               s.opts.TeamID,
		"api_app_id":            appID,
		"event":                 event,
		"type":                  "event_callback",
		"event_id":              s.nextIDLocked("Ev"),
		"event_time":            s.now().Unix(),
		"is_ext_shared_channel": false,
	}
	env, err := s.sendEnvelopeLocked("events_api", payload, false, envelopeOrigin{interaction: "event", user: userID})
	if err != nil {
		return "", err
	}
	return env.id, nil
}

// Shortcut is user choosing the app's global shortcut callbackID from the ⚡ menu:
// an interactive envelope of type shortcut with a fresh trigger_id. Like a click it
// is not retried. It waits (ctx-bounded) for the ack.
func (s *Server) Shortcut(ctx context.Context, user, callbackID string) (Ack, error) {
	envelopeID, err := s.sendShortcut(user, callbackID)
	if err != nil {
		return Ack{}, err
	}
	return s.AwaitAck(ctx, envelopeID)
}

func (s *Server) sendShortcut(userID, callbackID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	u, ok := s.users[userID]
	if !ok {
		return "", fmt.Errorf("slacksim: unknown user %q (AddUser first)", userID)
	}
	payload := map[string]any{
		"type":                  "shortcut",
		"token":                 verificationToken,
		"action_ts":             s.nextTSLocked(),
		"team":                  s.teamJSON(),
		"user":                  s.userRefJSON(u),
		"callback_id":           callbackID,
		"trigger_id":            s.newTriggerLocked(userID),
		"is_enterprise_install": false,
		"enterprise":            nil,
	}
	env, err := s.sendEnvelopeLocked("interactive", payload, false, envelopeOrigin{interaction: "shortcut", user: userID})
	if err != nil {
		return "", err
	}
	return env.id, nil
}

// ClickHome presses the button with actionID and value on the Home tab published to
// user and waits for the ack. A button with a confirm dialog is pressed as if the user
// confirmed it.
func (s *Server) ClickHome(ctx context.Context, user, actionID, value string) (Ack, error) {
	return s.clickHome(ctx, user, actionID, value, true)
}

// ClickHomeAction sends a block_actions from user's Home tab with any action_id and
// value, as a tampered or stale client could.
func (s *Server) ClickHomeAction(ctx context.Context, user, actionID, value string) (Ack, error) {
	return s.clickHome(ctx, user, actionID, value, false)
}

func (s *Server) clickHome(ctx context.Context, user, actionID, value string, mustExist bool) (Ack, error) {
	envelopeID, err := s.sendHomeAction(user, actionID, value, mustExist)
	if err != nil {
		return Ack{}, err
	}
	return s.AwaitAck(ctx, envelopeID)
}

func (s *Server) sendHomeAction(userID, actionID, value string, mustExist bool) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	u, ok := s.users[userID]
	if !ok {
		return "", fmt.Errorf("slacksim: unknown user %q (AddUser first)", userID)
	}
	home, ok := s.homeViews[userID]
	if !ok {
		return "", fmt.Errorf("slacksim: nothing was published to %s's Home tab", userID)
	}
	chosen, found := findButton(home.content.blocks.parsed, actionID, value)
	if !found && mustExist {
		return "", fmt.Errorf("slacksim: %s's Home tab has no button %s with value %q", userID, actionID, value)
	}
	if !found {
		chosen = buttonRef{button: &slack.ButtonBlockElement{Type: "button", ActionID: actionID, Value: value,
			Text: slack.NewTextBlockObject("plain_text", actionID, false, false)}}
	}
	action := map[string]any{
		"type":      "button",
		"action_id": chosen.button.ActionID,
		"block_id":  chosen.blockID,
		"text":      chosen.button.Text,
		"value":     value,
		"action_ts": s.nextTSLocked(),
	}
	// A click on a Home tab has no channel, message or response_url: only the view.
	payload := map[string]any{
		"type":                  "block_actions",
		"user":                  s.userRefJSON(u),
		"api_app_id":            appID,
		"token":                 verificationToken,
		"container":             map[string]any{"type": "view", "view_id": home.id},
		"trigger_id":            s.newTriggerLocked(u.id),
		"team":                  s.teamJSON(),
		"enterprise":            nil,
		"is_enterprise_install": false,
		"view":                  s.viewJSON(home, nil),
		"actions":               []any{action},
	}
	env, err := s.sendEnvelopeLocked("interactive", payload, false, envelopeOrigin{interaction: "block_actions", user: userID})
	if err != nil {
		return "", err
	}
	return env.id, nil
}

// findButton finds the button with actionID and value among blocks.
func findButton(blocks slack.Blocks, actionID, value string) (buttonRef, bool) {
	for _, b := range buttonRefs(blocks) {
		if b.button.ActionID == actionID && b.button.Value == value {
			return b, true
		}
	}
	return buttonRef{}, false
}

// HomePublishes lists every view published to user's Home tab, oldest first: what
// the tab showed, one after another.
func (s *Server) HomePublishes(user string) []View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]View(nil), s.homeHistory[user]...)
}

// homeTabs is what the workspace remembers of Home tabs beyond the views themselves.
type homeTabs struct {
	homeHistory  map[string][]View // user -> every view published to their tab
	publishTimes []time.Time       // views.publish calls within the last publishWindow
}

func newHomeTabs() homeTabs { return homeTabs{homeHistory: map[string][]View{}} }

// publishRateLocked answers a views.publish over the workspace's limit with 429 and
// the Retry-After until the oldest call in the window leaves it; nil within it. Every
// call within the limit counts, valid or not, as Slack counts calls.
func (s *Server) publishRateLocked(method string) *fault {
	if method != "views.publish" {
		return nil
	}
	now := s.now()
	kept := s.publishTimes[:0]
	for _, at := range s.publishTimes {
		if now.Sub(at) < publishWindow {
			kept = append(kept, at)
		}
	}
	s.publishTimes = kept
	limit := s.opts.PublishesPerMinute
	if limit <= 0 {
		limit = defaultPublishesPerMinute
	}
	if len(kept) < limit {
		s.publishTimes = append(s.publishTimes, now)
		return nil
	}
	return &fault{status: http.StatusTooManyRequests, retryAfter: publishWindow - now.Sub(kept[0])}
}

// checkHomeHeader refuses what only a modal has: a Home tab has no title, submit or
// close button.
func checkHomeHeader(title, submit, close *textShape) []string {
	var problems []string
	for i, text := range []*textShape{title, submit, close} {
		if name := []string{"title", "submit", "close"}[i]; text != nil {
			problems = append(problems, problem(name+" is not allowed in a home view", "/view/"+name))
		}
	}
	return problems
}
