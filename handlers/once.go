package handlers

import (
	"context"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
)

// onceTimeout bounds a thing that must happen once, from its record in the store to
// the post that follows: room for Slack's retries, within a deploy's grace.
const onceTimeout = 15 * time.Second

// doOnce records in the store that something is done (mark says whether this call
// was the first to record it) and, when it was, does it. Neither step runs under
// ctx's cancellation, only its values (the leader's fence): a graceful stop that cut
// the post after its record would lose it for good, since nothing is ever said twice.
// Only a crash between the two can lose it.
func doOnce(ctx context.Context, mark func(context.Context) (bool, error), do func(context.Context)) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), onceTimeout)
	defer cancel()
	first, err := mark(ctx)
	if err != nil {
		return err
	}
	if first {
		do(ctx)
	}
	return nil
}

// noticeDone does post once per request and notice name.
func (h *Handlers) noticeDone(ctx context.Context, r domain.Request, name string, post func(context.Context)) {
	mark := func(ctx context.Context) (bool, error) { return h.store.MarkNotice(ctx, r.ID, name) }
	if err := doOnce(ctx, mark, post); err != nil {
		h.reqLog(r).Error("record notice", "notice", name, "err", err)
	}
}

// noticeOnce posts a thread reply under a notice name, never twice.
func (h *Handlers) noticeOnce(ctx context.Context, r domain.Request, name, text string) {
	h.noticeDone(ctx, r, name, func(ctx context.Context) { h.say(ctx, r, textMessage(text)) })
}
