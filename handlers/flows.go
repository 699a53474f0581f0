package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/storage"
)

// actorBot is the actor recorded in the audit trail for what gpubot does by itself.
const actorBot = "gpubot"

// advance takes a request one step further from wherever it stands. It is what a
// new request runs and what every unfinished request runs after a restart, so each
// step checks what was already done.
func (h *Handlers) advance(ctx context.Context, r storage.Request) {
	if !h.claim("advance:" + r.ID) {
		return // already being advanced
	}
	defer h.release("advance:" + r.ID)
	r, err := h.announce(ctx, r)
	if err != nil {
		h.reqLog(r).Error("announce request", "err", err)
		return
	}
	switch r.State {
	case storage.StateApproved:
		h.create(ctx, r)
	case storage.StateCreating:
		if h.now().Sub(r.UpdatedAt) > idempotencyWindow {
			h.abandonCreate(ctx, r)
			return
		}
		h.callCreate(ctx, r)
	case storage.StateDeleting:
		h.finishDelete(ctx, r)
	}
}

// moveByBot records a move gpubot makes on its own and reports whether it happened.
// Losing a race to another move (the owner deleted the request meanwhile, another pass
// got there first) is normal and silent; any other failure is logged.
func (h *Handlers) moveByBot(ctx context.Context, r storage.Request, to storage.State, detail string, edit func(*storage.Request) error) (storage.Request, bool) {
	moved, err := h.store.Move(ctx, r.ID, to, actorBot, detail, edit)
	if err != nil {
		if !errors.Is(err, storage.ErrIllegalMove) {
			h.reqLog(r).Error("record move", "to", to, "err", err)
		}
		return r, false
	}
	return moved, true
}

// idempotencyWindow is how long fal remembers an Idempotency-Key (10 minutes), less
// a margin for clocks: within it, sending a create again is safe.
const idempotencyWindow = 9 * time.Minute

// abandonCreate ends a create that was cut off (gpubot stopped mid-call) longer ago than
// fal remembers its idempotency key: sending it again could make a second machine. If
// the first call did make one, the admins hear of it as an instance gpubot does not know.
func (h *Handlers) abandonCreate(ctx context.Context, r storage.Request) {
	words := fmt.Sprintf("gpubot stopped while fal was creating this machine and came back %s later, too late to ask fal again safely; so as not to pay for two, it did not retry. Ask again with `/gpu create`.", FormatDuration(h.now().Sub(r.UpdatedAt)))
	r, ok := h.moveByBot(ctx, r, storage.StateFailed, "create abandoned after restart", func(u *storage.Request) error {
		u.Error = words
		return nil
	})
	if !ok {
		return
	}
	h.reqLog(r).Warn("create abandoned: idempotency key expired while gpubot was down")
	h.refreshRoot(ctx, r)
	h.say(ctx, r, textMessage(fmt.Sprintf("<@%s> %s", r.UserID, words)))
	h.alertAdmins(ctx, fmt.Sprintf("Request `%s` by <@%s> was being created at fal when gpubot stopped, more than 10 minutes ago. gpubot did not retry it; if fal made the machine anyway, I will report it as an instance gpubot does not know.", shortID(r.ID), r.UserID))
}

// announce posts the thread root (in the command's channel, else by DM) and the
// approval card, unless they were posted already.
func (h *Handlers) announce(ctx context.Context, r storage.Request) (storage.Request, error) {
	if r.ThreadTS == "" {
		channel, ts, err := h.postRoot(ctx, r)
		if err != nil {
			return r, err
		}
		r, err = h.store.Update(ctx, r.ID, func(u *storage.Request) error {
			u.ChannelID, u.ThreadTS = channel, ts
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("save thread: %w", err)
		}
	}
	if r.State == storage.StateAwaitingApproval && r.ApprovalTS == "" {
		card := approvalCard(r, h.cfg.ApprovalChannel, h.cfg.Prices.Estimate(r.InstanceType, r.Lifetime))
		ts, err := h.slack.PostMessage(ctx, h.cfg.ApprovalChannel, "", card)
		if err != nil {
			if cannotPost(err) {
				h.alertAdminsEvery(ctx, "approval-channel", time.Hour, fmt.Sprintf("I can't post approval cards in <#%s> (Slack said: %v). Invite me there or fix APPROVAL_CHANNEL; requests are waiting, and I keep trying.", h.cfg.ApprovalChannel, err))
			}
			return r, fmt.Errorf("post approval card: %w", err)
		}
		r, err = h.store.Update(ctx, r.ID, func(u *storage.Request) error {
			u.ApprovalChannel, u.ApprovalTS = h.cfg.ApprovalChannel, ts
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("save approval card: %w", err)
		}
		h.say(ctx, r, textMessage(fmt.Sprintf("%s machines need an approver's OK: I've asked in <#%s>.", ShortType(r.InstanceType), h.cfg.ApprovalChannel)))
	}
	return r, nil
}

func (h *Handlers) postRoot(ctx context.Context, r storage.Request) (channel, ts string, err error) {
	root := rootMessage(r, h.cfg.ApprovalChannel)
	ts, err = h.slack.PostMessage(ctx, r.CommandChannel, "", root)
	if err == nil {
		return r.CommandChannel, ts, nil
	}
	if !cannotPost(err) {
		return "", "", fmt.Errorf("post thread root: %w", err)
	}
	// The bot is not in that channel (or may not post there): the thread lives in a DM.
	dm, dmErr := h.slack.OpenDM(ctx, r.UserID)
	if dmErr != nil {
		return "", "", fmt.Errorf("open DM after %v: %w", err, dmErr)
	}
	ts, err = h.slack.PostMessage(ctx, dm, "", root)
	if err != nil {
		return "", "", fmt.Errorf("post thread root in DM: %w", err)
	}
	return dm, ts, nil
}

// recordDecision commits an approver's decision; of two approvers clicking at once
// exactly one wins, and the other is told who did. It runs before the click is acked,
// so a decision Slack saw acknowledged is never lost to a stop; once makes it the one
// effect of its envelope.
func (h *Handlers) recordDecision(ctx context.Context, approver, id string, approve bool, reason string, once storage.WriteOption) (storage.Request, error) {
	r, err := h.load(ctx, approver, id, h.cfg.Policy.MayDecide)
	if err != nil {
		return r, err
	}
	to, detail := storage.StateApproved, ""
	if !approve {
		to, detail = storage.StateDenied, reason
	}
	r, err = h.store.Move(ctx, id, to, approver, detail, func(u *storage.Request) error {
		u.ApproverID, u.DecidedAt, u.DecisionReason = approver, h.now(), reason
		return nil
	}, once)
	var me *storage.MoveError
	if errors.As(err, &me) {
		return me.Current, errors.Join(refusef("Too late: %s.", decisionLine(me.Current)), errDecidedAlready)
	}
	if err != nil {
		return r, fmt.Errorf("record decision: %w", err)
	}
	h.reqLog(r).Info("request decided", "approver", approver, "state", r.State)
	return r, nil
}

// errDecidedAlready marks a click on a card whose request was decided before it.
var errDecidedAlready = errors.New("decided already")

// noticeDecision names the notice that tells the requester's thread of the decision.
const noticeDecision = "decision"

// announceDecision tells the card, the thread and its root of a recorded decision (or
// the approver why theirs did not count), then asks fal for an approved machine.

func (h *Handlers) announceDecision(ctx context.Context, r storage.Request, err error, approver, channel string) {
	if err != nil {
		h.tell(ctx, channel, approver, textMessage(userMessage(err)))
		if errors.Is(err, errDecidedAlready) {
			h.showDecision(ctx, r)
		}
		return
	}
	h.showDecision(ctx, r)
	if r.State == storage.StateApproved {
		h.create(ctx, r)
	}
}

// showDecision edits the card and the thread root to show a decision and tells the
// thread once. Every part can be done again: a click on a card that still shows its
// buttons (the gpubot that recorded the decision stopped before it said so) mends them.
func (h *Handlers) showDecision(ctx context.Context, r storage.Request) {
	h.refreshCard(ctx, r)
	h.refreshRoot(ctx, r)
	switch {
	case r.State == storage.StateDenied:
		h.noticeOnce(ctx, r, noticeDecision, denialText(r))
	case r.ApproverID != "":
		h.noticeOnce(ctx, r, noticeDecision, fmt.Sprintf("<@%s> approved by <@%s>. Asking fal for the machine now.", r.UserID, r.ApproverID))
	}
}

// create commits the move to creating, with the idempotency key stored at request
// time, before fal is called.
func (h *Handlers) create(ctx context.Context, r storage.Request) {
	r, ok := h.moveByBot(ctx, r, storage.StateCreating, "", nil)
	if !ok {
		return
	}
	h.refreshRoot(ctx, r)
	h.callCreate(ctx, r)
}

// callCreate asks fal for the machine. After a restart it runs again for a request
// left in creating: the same idempotency key makes fal answer with the same instance.
func (h *Handlers) callCreate(ctx context.Context, r storage.Request) {
	if !h.claim(r.ID) {
		return
	}
	r, deleteNow := h.createAtFal(ctx, r)
	h.release(r.ID)
	if deleteNow {
		h.finishDelete(ctx, r)
	}
}

// createAtFal makes the create call and records its answer. It reports whether the
// request was deleted while fal was creating the machine, which must then go too.
func (h *Handlers) createAtFal(ctx context.Context, r storage.Request) (storage.Request, bool) {
	inst, err := h.fal.Create(ctx, fal.CreateRequest{InstanceType: r.InstanceType, SSHKey: r.SSHKey, Sector: r.Sector}, r.IdempotencyKey)
	if err != nil {
		if ctx.Err() == nil {
			h.createFailed(ctx, r, err)
		} // else shutting down: the request stays in creating and resumes at the next start
		return r, false
	}
	moved, err := h.store.Move(ctx, r.ID, storage.StateProvisioning, actorBot, inst.ID, func(u *storage.Request) error {
		u.InstanceID, u.Region, u.FalStatus = inst.ID, inst.Region, string(inst.Status)
		return nil
	})
	var me *storage.MoveError
	if errors.As(err, &me) && me.Current.State == storage.StateDeleting {
		// Deleted while fal was creating it: remember the instance so the delete reaches it.
		updated, err := h.store.Update(ctx, r.ID, func(u *storage.Request) error { u.InstanceID = inst.ID; return nil })
		return updated, err == nil
	}
	if err != nil {
		h.reqLog(r).Error("record created instance", "instance", inst.ID, "err", err)
		return r, false
	}
	h.reqLog(moved).Info("instance created", "instance", inst.ID)
	h.refreshRoot(ctx, moved)
	h.say(ctx, moved, textMessage(fmt.Sprintf("fal accepted it: instance `%s` is %s. I'll post here when it is ready.", inst.ID, orDash(string(inst.Status)))))
	return moved, false
}

// createFailed tells the requester, in plain words, why fal did not create the machine.
func (h *Handlers) createFailed(ctx context.Context, r storage.Request, err error) {
	words := falFailureWords(err)
	h.reqLog(r).Error("create instance failed", "err", err)
	r, ok := h.moveByBot(ctx, r, storage.StateFailed, words, func(u *storage.Request) error {
		u.Error = words
		return nil
	})
	if !ok {
		return
	}
	h.refreshRoot(ctx, r)
	h.say(ctx, r, textMessage(fmt.Sprintf("<@%s> %s", r.UserID, words)))
	if fal.IsAuthorization(err) {
		h.alertAdminsEvery(ctx, "fal-key", time.Hour, fmt.Sprintf("fal refused gpubot's admin API key (%s) while creating request `%s` for <@%s>. Check FAL_ADMIN_API_KEY: it must be an admin key with compute permission. (I say this at most once an hour.)", statusOf(err), shortID(r.ID), r.UserID))
	}
}

// falFailureWords explains a fal error to the person who asked for the machine.
func falFailureWords(err error) string {
	var fe *fal.Error
	detail := ""
	if errors.As(err, &fe) && fe.Message != "" {
		detail = " (fal said: " + clip(fe.Message, 200) + ")"
	}
	switch {
	case fal.IsAuthorization(err):
		return "fal refused gpubot's credentials, so no machine was created. The admins have been alerted; try again once they have fixed it."
	case fal.IsValidation(err):
		return "fal refused the request as invalid" + detail + ", so no machine was created. Check the type and sector and ask again."
	case fal.IsRateLimited(err):
		return "fal is rate-limiting us and kept saying so after several retries; no machine was created. Please ask again in a few minutes."
	case fal.IsServer(err):
		return "fal kept failing" + detail + " after several retries; no machine was created. Please ask again in a few minutes."
	}
	return "I couldn't reach fal after several retries; no machine was created. Please ask again in a few minutes."
}

func statusOf(err error) string {
	var fe *fal.Error
	if errors.As(err, &fe) {
		return fmt.Sprintf("HTTP %d %s", fe.Status, http.StatusText(fe.Status))
	}
	return "no answer"
}

// load reads the request a click names and checks that user may act on it with may.
// Both failures are refusals to show the person.
func (h *Handlers) load(ctx context.Context, user, id string, may func(user, owner string) error) (storage.Request, error) {
	r, err := h.store.Request(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return r, refusef("I can't find that request any more; `/gpu list` shows what you have.")
	}
	if err != nil {
		return r, fmt.Errorf("read request %s: %w", id, err)
	}
	return r, may(user, r.UserID)
}

// recordDelete commits, before the click is acked, the end of a request on behalf of
// user: a request not yet sent to fal is cancelled, a machine moves to deleting. once
// makes it the one effect of its envelope.
func (h *Handlers) recordDelete(ctx context.Context, user, id string, once storage.WriteOption) (storage.Request, error) {
	r, err := h.load(ctx, user, id, h.cfg.Policy.MayManage)
	if err != nil {
		return r, err
	}
	to, reason := storage.StateDeleting, "by <@"+user+">"
	if r.State == storage.StateAwaitingApproval || r.State == storage.StateApproved {
		to, reason = storage.StateCancelled, "cancelled by <@"+user+">"
	}
	r, err = h.store.Move(ctx, id, to, user, "", func(u *storage.Request) error {
		u.EndReason = reason
		return nil
	}, once)
	var me *storage.MoveError
	if errors.As(err, &me) {
		return me.Current, refusef("Request `%s` is already %s.", shortID(id), stateWord(me.Current))
	}
	if err != nil {
		return r, fmt.Errorf("record delete: %w", err)
	}
	return r, nil
}

// announceDelete answers the click, tells the thread, and deletes the machine at fal.
func (h *Handlers) announceDelete(ctx context.Context, r storage.Request, err error, user, channel, responseURL string) {
	switch {
	case err != nil:
		h.respond(ctx, responseURL, channel, user, textMessage(userMessage(err)))
	case r.State == storage.StateCancelled:
		h.respond(ctx, responseURL, channel, user, textMessage(fmt.Sprintf("Cancelled request `%s`.", shortID(r.ID))))
		h.refreshCard(ctx, r)
		h.refreshRoot(ctx, r)
		h.say(ctx, r, textMessage(fmt.Sprintf("Cancelled by <@%s> before a machine was created.", user)))
	default:
		h.respond(ctx, responseURL, channel, user, textMessage(fmt.Sprintf(":wastebasket: Deleting `%s`…", orPending(r.InstanceID))))
		h.refreshRoot(ctx, r)
		h.finishDelete(ctx, r)
	}
}

// finishDelete deletes the instance at fal and closes the request. A failure leaves it
// in deleting, where the tracker tries again; the admins hear if it keeps failing.
func (h *Handlers) finishDelete(ctx context.Context, r storage.Request) {
	if !h.claim(r.ID) {
		return // already being deleted
	}
	defer h.release(r.ID)
	if r.InstanceID != "" {
		err := h.fal.Delete(ctx, r.InstanceID)
		if err != nil && !fal.IsNotFound(err) {
			if ctx.Err() == nil {
				h.deleteFailed(ctx, r, err)
			}
			return
		}
	}
	final := storage.StateDeleted
	if r.EndReason == endExpired {
		final = storage.StateExpired
	}
	r, ok := h.moveByBot(ctx, r, final, r.EndReason, func(u *storage.Request) error {
		u.EndedAt = h.now()
		return nil
	})
	if !ok {
		return
	}
	h.mu.Lock()
	delete(h.deleteFailures, r.ID)
	h.mu.Unlock()
	h.reqLog(r).Info("instance deleted", "instance", r.InstanceID, "state", r.State)
	h.refreshRoot(ctx, r)
	h.say(ctx, r, textMessage(h.lastLine(r)))
}

// lastLine is the thread's last word on a machine: how it ended, how long it ran, what it cost.
func (h *Handlers) lastLine(r storage.Request) string {
	line := endText(r)
	if !r.ReadyAt.IsZero() {
		if cost := h.cfg.Prices.Cost(r.InstanceType, r.EndedAt.Sub(r.ReadyAt)); cost != "" {
			line += " Cost: about " + cost + "."
		}
	}
	return fmt.Sprintf("<@%s> %s", r.UserID, line)
}

const deleteAlertAfter = 3

func (h *Handlers) deleteFailed(ctx context.Context, r storage.Request, err error) {
	h.mu.Lock()
	h.deleteFailures[r.ID]++
	failures := h.deleteFailures[r.ID]
	h.mu.Unlock()
	h.reqLog(r).Error("delete instance failed", "instance", r.InstanceID, "attempt", failures, "err", err)
	if failures < deleteAlertAfter {
		return
	}
	first, markErr := h.store.MarkNotice(ctx, r.ID, "delete_failed")
	if markErr != nil || !first {
		return
	}
	h.alertAdmins(ctx, fmt.Sprintf("I can't delete fal instance `%s` (request `%s`, owner <@%s>): %d attempts failed, the last with %s. It may still be running and costing money; I keep trying every %s.",
		r.InstanceID, shortID(r.ID), r.UserID, failures, statusOf(err), h.cfg.PollInterval))
}

// extend pushes a machine's expiry out by d, never further than MaxLifetime from now.
// once makes it the one effect of its envelope.
func (h *Handlers) extend(ctx context.Context, user storage.UserRef, r storage.Request, d time.Duration, once storage.WriteOption) error {
	if err := h.cfg.Policy.MayManage(user.UserID, r.UserID); err != nil {
		return err
	}
	if r.State.Terminal() || r.State == storage.StateDeleting {
		return refusef("Request `%s` is already %s; there is nothing to extend.", shortID(r.ID), stateWord(r))
	}
	now, max := h.now(), h.cfg.Policy.MaxLifetime
	r, err := h.store.Update(ctx, r.ID, func(u *storage.Request) error {
		if u.State != storage.StateReady {
			if u.Lifetime+d > max {
				return refusef("A machine may live at most %s; it already has %s, so you can add up to %s.", FormatDuration(max), FormatDuration(u.Lifetime), FormatDuration(max-u.Lifetime))
			}
			u.Lifetime += d
			return nil
		}
		if u.ExpiresAt.Add(d).Sub(now) > max {
			return refusef("A machine may be kept at most %s ahead; `%s` has %s left, so you can add up to %s.", FormatDuration(max), shortID(u.ID), FormatDuration(u.ExpiresAt.Sub(now)), FormatDuration(max-u.ExpiresAt.Sub(now)))
		}
		u.ExpiresAt = u.ExpiresAt.Add(d)
		delete(u.Notices, noticeReminder) // a new expiry deserves a new reminder
		return nil
	}, once)
	if err != nil {
		return err
	}
	if auditErr := h.store.Audit(ctx, storage.AuditEvent{Actor: user.UserID, Action: "extended", RequestID: r.ID, Detail: FormatDuration(d)}); auditErr != nil {
		h.reqLog(r).Error("audit extension", "err", auditErr)
	}
	h.spawn("announce extension", func(ctx context.Context) {
		h.refreshRoot(ctx, r)
		h.say(ctx, r, textMessage(fmt.Sprintf("Extended by %s by <@%s>%s.", FormatDuration(d), user.UserID, newExpiryText(r))))
	})
	return nil
}

func newExpiryText(r storage.Request) string {
	if r.State != storage.StateReady {
		return fmt.Sprintf("; it will live %s once ready", FormatDuration(r.Lifetime))
	}
	return "; it now expires " + slackDate(r.ExpiresAt)
}

// respond answers a click on an ephemeral message by replacing it; without a
// response_url the person gets a new ephemeral message.
func (h *Handlers) respond(ctx context.Context, responseURL, channel, user string, m Message) {
	if responseURL != "" {
		if err := h.slack.Respond(ctx, responseURL, m, true); err == nil {
			return
		}
	}
	h.tell(ctx, channel, user, m)
}
