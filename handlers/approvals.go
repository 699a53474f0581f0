package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
)

// Permalinker gives the permalink of a message (chat.getPermalink).
type Permalinker interface {
	Permalink(ctx context.Context, channel, ts string) (string, error)
}

// Notices of the approval flow, recorded on the request before they are posted.
const (
	// noticeApprovalReminder holds when the approvers were last reminded.
	noticeApprovalReminder = "approval_reminder"
	// noticeDecisionDM: the requester has been sent the decision directly.
	noticeDecisionDM = "decision_dm"
	// noticeApprovalPrefix + approver: the thread heard of that approver's approval.
	noticeApprovalPrefix = "approval:"
)

// approvalsNeeded is how many approvals r needs: fixed when it was made.
func approvalsNeeded(r domain.Request) int { return max(r.ApprovalsNeeded, 1) }

// recordApproval commits an approver's approval before the click is acked. Each
// approver counts once; the approval that completes the count approves the request in
// the same transaction, so approvers clicking at once all count, exactly. once makes
// it the one effect of its envelope.
func (h *Handlers) recordApproval(ctx context.Context, approver, id string, once domain.WriteOption) (domain.Request, error) {
	r, err := h.load(ctx, approver, id, h.cfg.Policy.MayDecide)
	if err != nil {
		return r, err
	}
	r, err = h.store.AddApproval(ctx, id, approver, approvalsNeeded(r), once)
	var me *domain.MoveError
	switch {
	case errors.As(err, &me):
		return me.Current, errors.Join(refusef("Too late: %s.", decisionLine(me.Current)), errDecidedAlready)
	case errors.Is(err, domain.ErrAlreadyApproved):
		left := approvalsNeeded(r) - len(r.Approvals)
		return r, refusef("You already approved request `%s`; it needs %s from other approvers.", shortID(r.ID), countText(left, "more approval", "more approvals"))
	case err != nil:
		return r, fmt.Errorf("record approval: %w", err)
	}
	h.reqLog(r).Info("request approved by one approver", "approver", approver, "approvals", len(r.Approvals), "needed", approvalsNeeded(r), "state", r.State)
	return r, nil
}

// showApprovals shows the approvals of a request that still needs more: the card keeps
// its buttons with the count so far, and the thread hears of each approval once.
func (h *Handlers) showApprovals(ctx context.Context, r domain.Request) {
	for _, a := range r.Approvals {
		h.noticeOnce(ctx, r, noticeApprovalPrefix+a.UserID, fmt.Sprintf("Approved by <@%s> (%d of %d); waiting for %s.",
			a.UserID, approvalIndex(r, a.UserID), approvalsNeeded(r), countText(approvalsNeeded(r)-len(r.Approvals), "more approver", "more approvers")))
	}
}

// approvalIndex is the place of user's approval among r's approvals, from 1.
func approvalIndex(r domain.Request, user string) int {
	for i, a := range r.Approvals {
		if a.UserID == user {
			return i + 1
		}
	}
	return 0
}

// tellDecisionByDM sends the requester the decision directly, once: who decided, the
// reason of a denial, and a link to the thread.
func (h *Handlers) tellDecisionByDM(ctx context.Context, r domain.Request) {
	h.noticeDone(ctx, r, noticeDecisionDM, func(ctx context.Context) {
		link := ""
		if h.links != nil && r.ThreadTS != "" {
			var err error
			if link, err = h.links.Permalink(ctx, r.ChannelID, r.ThreadTS); err != nil {
				h.reqLog(r).Warn("get the thread's permalink; the DM goes without it", "err", err)
			}
		}
		dm, err := h.slack.OpenDM(ctx, r.UserID)
		if err == nil {
			_, err = h.slack.PostMessage(ctx, dm, "", decisionDM(r, link))
		}
		if err != nil {
			h.reqLog(r).Error("send the decision by DM", "err", err)
		}
	})
}

// card is the request's approval card as it stands.
func (h *Handlers) card(r domain.Request) Message {
	return approvalCard(r, cardFacts{
		estimate:  h.cfg.Prices.Estimate(r.InstanceType, r.Lifetime),
		approvers: h.cfg.Policy.approverMentions(map[string]bool{r.UserID: true}),
		expires:   h.approvalDeadline(r),
	})
}

// askedText tells the requester's thread where the approvers were asked, and by when
// they must decide.
func (h *Handlers) askedText(r domain.Request) string {
	who := "an approver's OK"
	if n := approvalsNeeded(r); n > 1 {
		who = fmt.Sprintf("the OK of %d approvers", n)
	}
	needs := ShortType(r.InstanceType) + " machines need " + who
	if r.OverBudget != "" {
		needs = fmt.Sprintf("This request would go over budget (%s), so it needs %s", r.OverBudget, who)
	}
	return fmt.Sprintf("%s: I've asked in <#%s>. If nobody decides by %s, the request expires. Changed your mind? Withdraw it with the button above or `/gpu cancel %s`.",
		needs, h.cfg.ApprovalChannel, slackDate(h.approvalDeadline(r)), shortID(r.ID))
}

// approvalDeadline is when a request still waiting for approval expires: the timer is
// the request's own creation time, so it holds across restarts.
func (h *Handlers) approvalDeadline(r domain.Request) time.Time {
	return r.CreatedAt.Add(h.cfg.ApprovalTimeout)
}

// keepApprovals expires the requests that waited too long for a decision and
// reminds the approvers of the others, every ApprovalReminder. It runs on every
// background pass, so each holds to within one PollInterval.
func (h *Handlers) keepApprovals(ctx context.Context, reqs []domain.Request) {
	for _, r := range reqs {
		if r.State != domain.StateAwaitingApproval {
			continue
		}
		now := h.now()
		switch {
		case !now.Before(h.approvalDeadline(r)):
			h.expireApproval(ctx, r)
		case h.reminderDue(r, now):
			h.remindApprovers(ctx, r, now)
		}
	}
}

// reminderDue says whether the approvers should be reminded of r now: its card is
// posted, and ApprovalReminder has passed since the request began waiting or since
// the last reminder, whichever is later.
func (h *Handlers) reminderDue(r domain.Request, now time.Time) bool {
	period := h.cfg.ApprovalReminder
	if period <= 0 || r.ApprovalTS == "" {
		return false
	}
	last := r.CreatedAt
	if at, ok := r.Notices[noticeApprovalReminder]; ok && at.After(last) {
		last = at
	}
	return now.Sub(last) >= period
}

// errNoReminderDue refuses to record a reminder that another pass (or gpubot before a
// restart) already sent, or for a request that no longer waits.
var errNoReminderDue = errors.New("no reminder due")

// remindApprovers records a reminder, in a compare-and-set on when the last one was
// sent, then posts it in the card's thread: a restart or a second pass never repeats it.
func (h *Handlers) remindApprovers(ctx context.Context, r domain.Request, now time.Time) {
	r, err := h.store.Update(ctx, r.ID, func(u *domain.Request) error {
		if u.State != domain.StateAwaitingApproval || !h.reminderDue(*u, now) {
			return errNoReminderDue
		}
		if u.Notices == nil {
			u.Notices = map[string]time.Time{}
		}
		u.Notices[noticeApprovalReminder] = now
		return nil
	})
	if err != nil {
		if !errors.Is(err, errNoReminderDue) {
			h.reqLog(r).Error("record approval reminder", "err", err)
		}
		return
	}
	reminder := approvalReminder(r, h.cfg.Policy.approverMentions(skipReminded(r)), now.Sub(r.CreatedAt), h.approvalDeadline(r))
	if _, err := h.slack.PostMessage(ctx, r.ApprovalChannel, r.ApprovalTS, reminder); err != nil {
		h.reqLog(r).Error("post approval reminder", "err", err)
		return
	}
	h.reqLog(r).Info("approvers reminded", "waiting", now.Sub(r.CreatedAt))
	h.homesChanged(ctx, r)
}

// skipReminded is who a reminder need not mention: the requester, and the approvers
// who approved already.
func skipReminded(r domain.Request) map[string]bool {
	skip := map[string]bool{r.UserID: true}
	for _, a := range r.Approvals {
		skip[a.UserID] = true
	}
	return skip
}

// expireApproval ends a request nobody decided on in time; nothing was sent to fal.
// The move is a compare-and-set from awaiting approval, so a decision made at the
// same moment wins or loses cleanly, and only one pass tells of it.
func (h *Handlers) expireApproval(ctx context.Context, r domain.Request) {
	timeout := FormatDuration(h.cfg.ApprovalTimeout)
	r, err := h.store.MoveFrom(ctx, r.ID, []domain.State{domain.StateAwaitingApproval}, domain.StateApprovalExpired, actorBot,
		"nobody decided within "+timeout, func(u *domain.Request) error {
			u.EndReason = "nobody decided within " + timeout
			return nil
		})
	if err != nil {
		if !errors.Is(err, domain.ErrIllegalMove) {
			h.reqLog(r).Error("record approval expiry", "err", err)
		}
		return
	}
	h.reqLog(r).Info("request expired waiting for approval", "timeout", h.cfg.ApprovalTimeout)
	h.refreshCard(ctx, r)
	h.refreshRoot(ctx, r)
	h.say(ctx, r, textMessage(fmt.Sprintf("<@%s> nobody decided on this request within %s, so it expired; nothing was created. If you still need the machine, ask again with `/gpu create` (an approver may need a nudge).", r.UserID, timeout)))
}

// recordCancel withdraws a request still waiting for approval, on its requester's
// word, before the command or click is acked. once makes it the one effect of its
// envelope.
func (h *Handlers) recordCancel(ctx context.Context, user string, r domain.Request, once domain.WriteOption) (domain.Request, error) {
	if err := h.cfg.Policy.MayWithdraw(user, r.UserID); err != nil {
		return r, err
	}
	moved, err := h.store.MoveFrom(ctx, r.ID, []domain.State{domain.StateAwaitingApproval}, domain.StateCancelled, user, "withdrawn by the requester",
		func(u *domain.Request) error {
			u.EndReason = "withdrawn by <@" + user + ">"
			return nil
		}, once)
	var me *domain.MoveError
	switch {
	case errors.As(err, &me):
		return me.Current, notWaitingRefusal(me.Current)
	case err != nil:
		return r, fmt.Errorf("record withdrawal: %w", err)
	}
	h.reqLog(moved).Info("request withdrawn", "user", user)
	return moved, nil
}

// notWaitingRefusal explains why a request that no longer waits cannot be withdrawn.
func notWaitingRefusal(r domain.Request) error {
	if r.State.Terminal() {
		return refusef("Request `%s` is already over (%s); there is nothing to withdraw.", shortID(r.ID), stateName(r))
	}
	return refusef("Request `%s` is no longer waiting for approval (it is %s), so it can't be withdrawn. To end it, `/gpu delete %s`.", shortID(r.ID), stateName(r), shortID(r.ID))
}

// announceCancel shows a withdrawal on the card, the thread root and the thread.
func (h *Handlers) announceCancel(ctx context.Context, r domain.Request) {
	h.refreshCard(ctx, r)
	h.refreshRoot(ctx, r)
	h.say(ctx, r, textMessage(fmt.Sprintf("Withdrawn by <@%s> before anyone decided; nothing was created.", r.UserID)))
}
