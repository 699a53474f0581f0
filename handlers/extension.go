package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// extensionCardNotice is the notice recorded once the card asking for r's waiting
// extension is posted: one per extension asked, named by when it was asked.
func extensionCardNotice(r domain.Request) string {
	return fmt.Sprintf("extension_card:%d", r.ExtensionAskedAt.UnixNano())
}

// errExtensionDecided refuses a decision on an extension that is no longer waiting:
// another approver decided first, or it was never asked.
var errExtensionDecided = errors.New("extension already decided")

// askExtension records an extension over budget as waiting for an approver, then has
// the approvers asked on a card of its own. The machine keeps its expiry meanwhile.
// once makes it the one effect of its envelope.
func (h *Handlers) askExtension(ctx context.Context, user domain.UserRef, r domain.Request, d time.Duration, over []spend.Standing, once domain.WriteOption) error {
	note := overBudgetText(r.UserID, over)
	r, err := h.store.Update(ctx, r.ID, func(u *domain.Request) error {
		switch {
		case !extendable(*u):
			return refusef("Request `%s` is %s; there is nothing to extend.", shortID(u.ID), stateName(*u))
		case u.ExtensionAsked > 0:
			return refusef("An extension of %s for `%s` already waits for an approver; wait for their decision, or ask an approver in <#%s>.", FormatDuration(u.ExtensionAsked), shortID(u.ID), h.cfg.ApprovalChannel)
		}
		u.ExtensionAsked, u.ExtensionAskedBy, u.ExtensionNote, u.ExtensionCardTS = d, user.UserID, note, ""
		u.ExtensionAskedAt = h.now()
		return nil
	}, once)
	if err != nil {
		return err
	}
	if auditErr := h.store.Audit(ctx, domain.AuditEvent{Actor: user.UserID, Action: "extension_asked", RequestID: r.ID, Detail: FormatDuration(d) + ", over budget"}); auditErr != nil {
		h.reqLog(r).Error("audit extension asked", "err", auditErr)
	}
	h.spawn("ask extension", func(ctx context.Context) { h.postExtensionCard(ctx, r) })
	return nil
}

// postExtensionCards asks the approvers for the waiting extensions whose card was not
// posted yet: gpubot may have stopped between recording an extension and posting it.
func (h *Handlers) postExtensionCards(ctx context.Context, reqs []domain.Request) {
	for _, r := range reqs {
		if r.ExtensionAsked > 0 && !r.NoticeSent(extensionCardNotice(r)) && h.now().Sub(r.ExtensionAskedAt) >= stalledAfter {
			h.postExtensionCard(ctx, r)
		}
	}
}

// postExtensionCard asks the approvers for a waiting extension, once, and tells the thread.
func (h *Handlers) postExtensionCard(ctx context.Context, r domain.Request) {
	h.noticeDone(ctx, r, extensionCardNotice(r), func(ctx context.Context) {
		ts, err := h.slack.PostMessage(ctx, h.cfg.ApprovalChannel, "", extensionCard(r, h.cfg.Policy.approverMentions(map[string]bool{r.UserID: true})))
		if err != nil {
			h.reqLog(r).Error("post extension card", "err", err)
			return
		}
		if _, err := h.store.Update(ctx, r.ID, func(u *domain.Request) error {
			if u.ExtensionAsked > 0 {
				u.ExtensionCardTS = ts
			}
			return nil
		}); err != nil {
			h.reqLog(r).Error("record extension card", "err", err)
		}
		h.say(ctx, r, textMessage(fmt.Sprintf("<@%s> asked to extend this machine by %s. That would go over budget (%s), so an approver decides in <#%s>; until then it keeps its expiry.",
			r.ExtensionAskedBy, FormatDuration(r.ExtensionAsked), r.ExtensionNote, h.cfg.ApprovalChannel)))
	})
}

// decideExtension records an approver's decision on a waiting extension before the
// click is acked: an approval applies the extension and ends the wait in one
// transaction, a denial ends the wait. Of two approvers clicking at once, one decides.
func (h *Handlers) decideExtension(ctx context.Context, approver, id string, approve bool, once domain.WriteOption) (domain.Request, error) {
	r, err := h.load(ctx, approver, id, h.cfg.Policy.MayDecide)
	if err != nil {
		return r, err
	}
	asked, askedBy := r.ExtensionAsked, r.ExtensionAskedBy
	if asked == 0 {
		return r, refusef("Too late: that extension of `%s` was already decided.", shortID(r.ID))
	}
	endWait := func(u *domain.Request) error {
		if u.ExtensionAsked != asked || u.ExtensionAskedBy != askedBy {
			return errExtensionDecided
		}
		u.ExtensionAsked, u.ExtensionAskedBy = 0, ""
		return nil
	}
	if !extendable(r) {
		// The machine ended while the extension waited: nothing is left to decide.
		if _, err := h.store.Update(ctx, r.ID, endWait, once); err != nil && !errors.Is(err, errExtensionDecided) {
			return r, err
		}
		return r, refusef("Request `%s` is already %s, so there is nothing left to extend; its card now says so.", shortID(r.ID), stateName(r))
	}
	if approve {
		err = h.applyExtension(ctx, askedBy, r, asked, once, endWait, approver)
	} else {
		_, err = h.store.Update(ctx, r.ID, endWait, once)
		if err == nil {
			if auditErr := h.store.Audit(ctx, domain.AuditEvent{Actor: approver, Action: "extension_denied", RequestID: r.ID, Detail: FormatDuration(asked)}); auditErr != nil {
				h.reqLog(r).Error("audit extension denied", "err", auditErr)
			}
		}
	}
	if errors.Is(err, errExtensionDecided) {
		return r, refusef("Too late: another approver already decided on that extension of `%s`.", shortID(r.ID))
	}
	return r, err // r as the card showed it
}

// announceExtensionDecision edits the extension card and tells the thread of a denial
// (an approval is told by the extension itself), or tells the approver why nothing changed.
func (h *Handlers) announceExtensionDecision(ctx context.Context, r domain.Request, approved bool, err error, approver, channel string) {
	if err != nil {
		h.tell(ctx, channel, approver, textMessage(userMessage(err)))
		if !extendable(r) && r.ExtensionCardTS != "" {
			h.editExtensionCard(ctx, r, fmt.Sprintf(":white_circle: Nothing to decide: the machine is %s.", stateName(r)))
		}
		return
	}
	outcome := fmt.Sprintf(":white_check_mark: Approved by <@%s>", approver)
	if !approved {
		outcome = fmt.Sprintf(":no_entry: Denied by <@%s>", approver)
	}
	h.editExtensionCard(ctx, r, outcome)
	if !approved {
		current, readErr := h.store.Request(ctx, r.ID)
		if readErr == nil {
			r = current
		}
		h.say(ctx, r, textMessage(fmt.Sprintf("<@%s> the extension was denied by <@%s>, so the machine keeps its expiry%s.", r.UserID, approver, keptExpiryText(r))))
	}
}

// editExtensionCard shows on the extension card how it ended, without buttons.
func (h *Handlers) editExtensionCard(ctx context.Context, r domain.Request, outcome string) {
	if r.ExtensionCardTS == "" {
		return
	}
	if err := h.slack.UpdateMessage(ctx, h.cfg.ApprovalChannel, r.ExtensionCardTS, extensionDecidedCard(r, outcome)); err != nil {
		h.reqLog(r).Error("update extension card", "err", err)
	}
}

// keptExpiryText is when a machine whose extension was denied still ends.
func keptExpiryText(r domain.Request) string {
	if r.State != domain.StateReady {
		return ""
	}
	return " (" + slackDate(r.ExpiresAt) + ")"
}
