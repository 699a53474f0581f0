package bot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/handlers"
)

// slackAPI is the handlers' view of Slack's Web API, on slack-go's client, which
// retries what Slack asks to be retried (see slackRetries). It counts every call's
// outcome for metrics.
type slackAPI struct {
	api     *slack.Client
	observe func(method, outcome string)

	mu  sync.Mutex
	dms map[string]string // user -> DM channel, which never changes
}

func newSlackAPI(api *slack.Client, observe func(method, outcome string)) *slackAPI {
	return &slackAPI{api: api, observe: observe, dms: map[string]string{}}
}

const (
	slackAttempts      = 5
	slackMaxRetryAfter = 30 * time.Second
)

// slackRetries has slack-go retry a Web API call Slack asks to be retried, so a
// message still arrives when Slack is briefly busy: a 429 after its Retry-After (at
// most slackMaxRetryAfter), a 5xx after a growing backoff, slackAttempts tries in all.
// Each retry is counted under the method's "retried" outcome. (fal's client has a
// retry loop of its own, in fal/retry.go: a create must reuse its idempotency key and
// fit a total time budget, which resty's retries cannot promise.)
func slackRetries(apiURL string, observe func(method, outcome string)) slack.RetryConfig {
	cfg := slack.RetryConfig{
		MaxRetries:     slackAttempts - 1,
		BackoffInitial: 250 * time.Millisecond,
		BackoffMax:     4 * time.Second,
		BackoffJitter:  50 * time.Millisecond,
	}
	cfg.Handlers = []slack.RetryHandler{countedRetry{
		apiURL:  apiURL,
		observe: observe,
		reasons: []slack.RetryHandler{slack.NewRateLimitErrorRetryHandler(cfg), slack.NewServerErrorRetryHandler(cfg)},
	}}
	return cfg
}

// countedRetry asks slack-go's own handlers whether to retry, caps the wait, and
// counts the retry.
type countedRetry struct {
	apiURL  string
	observe func(method, outcome string)
	reasons []slack.RetryHandler
}

func (c countedRetry) ShouldRetry(state *slack.RetryState, req *http.Request, resp *http.Response, err error) (bool, time.Duration) {
	for _, reason := range c.reasons {
		if retry, wait := reason.ShouldRetry(state, req, resp, err); retry {
			c.observe(c.method(req), "retried")
			return true, min(wait, slackMaxRetryAfter)
		}
	}
	return false, 0
}

// method names a call for metrics: the Web API method, or response_url.
func (c countedRetry) method(req *http.Request) string {
	if url := req.URL.String(); strings.HasPrefix(url, c.apiURL) {
		return strings.TrimPrefix(url, c.apiURL)
	}
	return "response_url"
}

// call runs one Web API call (retried by slack-go) and reports its outcome.
func (s *slackAPI) call(method string, fn func() error) error {
	err := fn()
	s.observe(method, outcome(err))
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	return nil
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
	err := s.call("chat.postMessage", func() (err error) {
		_, ts, err = s.api.PostMessageContext(ctx, channel, opts...)
		return err
	})
	return ts, err
}

func (s *slackAPI) UpdateMessage(ctx context.Context, channel, ts string, m handlers.Message) error {
	return s.call("chat.update", func() error {
		_, _, _, err := s.api.UpdateMessageContext(ctx, channel, ts, msgOptions(m)...)
		return err
	})
}

func (s *slackAPI) PostEphemeral(ctx context.Context, channel, user string, m handlers.Message) error {
	return s.call("chat.postEphemeral", func() error {
		_, err := s.api.PostEphemeralContext(ctx, channel, user, msgOptions(m)...)
		return err
	})
}

func (s *slackAPI) OpenView(ctx context.Context, triggerID string, v slack.ModalViewRequest) error {
	return s.call("views.open", func() error {
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
	err := s.call("conversations.open", func() error {
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
	return s.call("response_url", func() error {
		_, _, err := s.api.PostMessageContext(ctx, "", opts...)
		return err
	})
}

// PublishHome publishes a person's Home tab (views.publish).
func (s *slackAPI) PublishHome(ctx context.Context, user string, view slack.HomeTabViewRequest) error {
	return s.call("views.publish", func() error {
		_, err := s.api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: user, View: view})
		return err
	})
}

// GroupMembers lists the members of a user group (usergroups.users.list).
func (s *slackAPI) GroupMembers(ctx context.Context, group string) ([]string, error) {
	var users []string
	err := s.call("usergroups.users.list", func() (err error) {
		users, err = s.api.GetUserGroupMembersContext(ctx, group)
		return err
	})
	return users, err
}

// Permalink is a link to a message that opens it in Slack (chat.getPermalink).
func (s *slackAPI) Permalink(ctx context.Context, channel, ts string) (string, error) {
	var link string
	err := s.call("chat.getPermalink", func() (err error) {
		link, err = s.api.GetPermalinkContext(ctx, &slack.PermalinkParameters{Channel: channel, Ts: ts})
		return err
	})
	return link, err
}
