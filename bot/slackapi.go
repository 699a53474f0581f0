package bot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/handlers"
)

// slackAPI is the handlers' view of Slack's Web API, on slack-go's client. It retries
// what Slack asks to be retried (429 with Retry-After, 5xx), within bounds, so a
// message still arrives when Slack is briefly busy. slack-go itself does not retry.
type slackAPI struct {
	api     *slack.Client
	observe func(method, outcome string)

	mu  sync.Mutex
	dms map[string]string // user -> DM channel, which never changes
}

func newSlackAPI(api *slack.Client, observe func(method, outcome string)) *slackAPI {
	if observe == nil {
		observe = func(string, string) {}
	}
	return &slackAPI{api: api, observe: observe, dms: map[string]string{}}
}

const (
	slackAttempts      = 5
	slackMaxRetryAfter = 30 * time.Second
)

// call runs one Web API call with retries and reports its outcome.
func (s *slackAPI) call(ctx context.Context, method string, fn func() error) error {
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		wait, retry := retryAfter(err, backoff)
		if err == nil || !retry || attempt == slackAttempts {
			s.observe(method, outcome(err))
			if err != nil {
				return fmt.Errorf("%s: %w", method, err)
			}
			return nil
		}
		s.observe(method, "retried")
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (after %v)", method, ctx.Err(), err)
		case <-time.After(wait):
		}
		backoff *= 2
	}
}

// retryAfter says whether err is worth another try, and after how long.
func retryAfter(err error, backoff time.Duration) (time.Duration, bool) {
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		return min(max(rl.RetryAfter, 100*time.Millisecond), slackMaxRetryAfter), true
	}
	var sc slack.StatusCodeError
	if errors.As(err, &sc) && sc.Code >= 500 {
		return backoff, true
	}
	return 0, false
}

func outcome(err error) string {
	var se slack.SlackErrorResponse
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &se):
		return se.Err
	}
	return "error"
}

func msgOptions(m handlers.Message) []slack.MsgOption {
	return []slack.MsgOption{slack.MsgOptionText(m.Text, false), slack.MsgOptionBlocks(m.Blocks...)}
}

func (s *slackAPI) PostMessage(ctx context.Context, channel, threadTS string, m handlers.Message) (string, error) {
	opts := msgOptions(m)
	if threadTS != "" {
		opts = append(opts, slack.MsgOptionTS(threadTS))
	}
	var ts string
	err := s.call(ctx, "chat.postMessage", func() (err error) {
		_, ts, err = s.api.PostMessageContext(ctx, channel, opts...)
		return err
	})
	return ts, err
}

func (s *slackAPI) UpdateMessage(ctx context.Context, channel, ts string, m handlers.Message) error {
	return s.call(ctx, "chat.update", func() error {
		_, _, _, err := s.api.UpdateMessageContext(ctx, channel, ts, msgOptions(m)...)
		return err
	})
}

func (s *slackAPI) PostEphemeral(ctx context.Context, channel, user string, m handlers.Message) error {
	return s.call(ctx, "chat.postEphemeral", func() error {
		_, err := s.api.PostEphemeralContext(ctx, channel, user, msgOptions(m)...)
		return err
	})
}

func (s *slackAPI) OpenView(ctx context.Context, triggerID string, v slack.ModalViewRequest) error {
	return s.call(ctx, "views.open", func() error {
		_, err := s.api.OpenViewContext(ctx, triggerID, v)
		return err
	})
}

func (s *slackAPI) OpenDM(ctx context.Context, user string) (string, error) {
	s.mu.Lock()
	dm, ok := s.dms[user]
	s.mu.Unlock()
	if ok {
		return dm, nil
	}
	err := s.call(ctx, "conversations.open", func() error {
		ch, _, _, err := s.api.OpenConversationContext(ctx, &slack.OpenConversationParameters{Users: []string{user}})
		if err == nil {
			dm = ch.ID
		}
		return err
	})
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.dms[user] = dm
	s.mu.Unlock()
	return dm, nil
}

func (s *slackAPI) Respond(ctx context.Context, responseURL string, m handlers.Message, replaceOriginal bool) error {
	opts := append(msgOptions(m), slack.MsgOptionResponseURL(responseURL, slack.ResponseTypeEphemeral))
	if replaceOriginal {
		opts = append(opts, slack.MsgOptionReplaceOriginal(responseURL))
	}
	return s.call(ctx, "response_url", func() error {
		_, _, err := s.api.PostMessageContext(ctx, "", opts...)
		return err
	})
}

// GroupMembers lists the members of a user group (usergroups.users.list).
func (s *slackAPI) GroupMembers(ctx context.Context, group string) ([]string, error) {
	var users []string
	err := s.call(ctx, "usergroups.users.list", func() (err error) {
		users, err = s.api.GetUserGroupMembersContext(ctx, group)
		return err
	})
	return users, err
}

// Permalink is a link to a message that opens it in Slack (chat.getPermalink).
func (s *slackAPI) Permalink(ctx context.Context, channel, ts string) (string, error) {
	var link string
	err := s.call(ctx, "chat.getPermalink", func() (err error) {
		link, err = s.api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: channel, Ts: ts})
		return err
	})
	return link, err
}
