package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
)

// actorBot is the actor recorded in the audit trail for what gpubot does by itself.
const actorBot = "gpubot"

// advance takes request id one step further from wherever the store says it stands.
// It is what a new request runs, what every unfinished request runs after a restart,
// and what a pass runs for a stalled step, always in the request's one worker (kick),
// so each step reads the request afresh and checks what was already done.
func (h *Handlers) advance(ctx context.Context, id string) {
	r, err := h.store.Request(ctx, id)
	if err != nil {
		h.log.Error("read request to advance", "request_id", id, "err", err)
		return
	}
	if !r.Live() {
		return
	}
	r, err = h.announce(ctx, r)
	if err != nil {
		h.reqLog(r).Error("announce request", "err", err)
		return
	}
	switch r.State {
	case domain.StateApproved:
		h.create(ctx, r)
	case domain.StateCreating:
		h.callCreate(ctx, r)
	case domain.StateDeleting:
		h.finishDelete(ctx, r)
	}
}

// moveByBot records a move gpubot makes on its own and reports whether it happened.
// The move is decided from r as gpubot read it, so it happens only if the request is
// still in r's state: a pass that saw a machine ready must not call it gone once its
// owner has had it deleted. Losing such a race (the owner deleted the request
// meanwhile, another pass got there first) is normal and silent; any other failure is
// logged.
func (h *Handlers) moveByBot(ctx context.Context, r domain.Request, to domain.State, detail string, edit func(*domain.Request) error) (domain.Request, bool) {
	moved, err := h.store.MoveFrom(ctx, r.ID, []domain.State{r.State}, to, actorBot, detail, edit)
	if err != nil {
		if !errors.Is(err, domain.ErrIllegalMove) {
			h.reqLog(r).Error("record move", "to", to, "err", err)
		}
		return r, false
	}
	return moved, true
}

// idempotencyWindow is how long fal remembers an Idempotency-Key (10 minutes), less
// a margin for clocks: within it, sending a create again is safe.
const idempotencyWindow = 9 * time.Minute

// creatingSince is when the request moved to creating. Records written before that was
// kept have only their last update, which the move to creating was.
func creatingSince(r domain.Request) time.Time {
	if r.CreatingSince.IsZero() && r.State == domain.StateCreating {
		return r.UpdatedAt
	}
	return r.CreatingSince
}

// keyExpired says whether fal may have forgotten the request's idempotency key, so
// that sending the create again could make a second machine.
func (h *Handlers) keyExpired(r domain.Request) bool {
	return h.now().Sub(creatingSince(r)) > idempotencyWindow
}

// abandonCreate ends a create whose outcome gpubot never learned (fal did not answer,
// or gpubot stopped mid-call) once fal no longer remembers its idempotency key: sending
// it again could make a second machine. If the first call did make one, it is an
// instance no request tracks: the admins are told now, and the next listing looks for it.
func (h *Handlers) abandonCreate(ctx context.Context, r domain.Request) {
	words := abandonedCreateText(h.now().Sub(creatingSince(r)))
	r, ok := h.moveByBot(ctx, r, domain.StateFailed, "create abandoned: outcome unknown", func(u *domain.Request) error {
		u.Error = words
		return nil
	})
	if !ok {
		return
	}
	h.reqLog(r).Warn("create abandoned: fal never confirmed it and the idempotency key has expired", "calls", r.CreateCalls)
	h.refreshRoot(ctx, r)
	h.say(ctx, r, textMessage(fmt.Sprintf("<@%s> %s", r.UserID, words)))
	h.alertAdmins(ctx, abandonedCreateAlert(r))
	h.lookForOrphans()
}

// announce posts the thread root (in the command's channel, else by DM) and the
// approval card, unless they were posted already.
func (h *Handlers) announce(ctx context.Context, r domain.Request) (domain.Request, error) {
	if r.ThreadTS == "" {
		channel, ts, err := h.postRoot(ctx, r)
		if err != nil {
			return r, err
		}
		r, err = h.store.Update(ctx, r.ID, func(u *domain.Request) error {
			u.ChannelID, u.ThreadTS = channel, ts
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("save thread: %w", err)
		}
		h.homesChanged(ctx, r)
	}
	if r.State == domain.StateAwaitingApproval && r.ApprovalTS == "" {
		ts, err := h.slack.PostMessage(ctx, h.cfg.ApprovalChannel, "", h.card(r))
		if err != nil {
			if cannotPost(err) {
				h.alertAdminsEvery(ctx, "approval-channel", time.Hour, fmt.Sprintf("I can't post approval cards in <#%s> (Slack said: %v). Invite me there or fix APPROVAL_CHANNEL; requests are waiting, and I keep trying.", h.cfg.ApprovalChannel, err))
			}
			return r, fmt.Errorf("post approval card: %w", err)
		}
		r, err = h.store.Update(ctx, r.ID, func(u *domain.Request) error {
			u.ApprovalChannel, u.ApprovalTS = h.cfg.ApprovalChannel, ts
			return nil
		})
		if err != nil {
			return r, fmt.Errorf("save approval card: %w", err)
		}
		if r.State != domain.StateAwaitingApproval || len(r.Approvals) > 0 {
			// A click decided before the card was saved, so its edit could not find the
			// card: show it now. One of the two transactions sees the other.
			h.refreshCard(ctx, r)
		}
		h.say(ctx, r, textMessage(h.askedText(r)))
	}
	return r, nil
}

func (h *Handlers) postRoot(ctx context.Context, r domain.Request) (channel, ts string, err error) {
	root := rootMessage(r, h.cfg.ApprovalChannel)
	if r.CommandChannel != "" {
		ts, err = h.slack.PostMessage(ctx, r.CommandChannel, "", root)
		if err == nil {
			return r.CommandChannel, ts, nil
		}
		if !cannotPost(err) {
			return "", "", fmt.Errorf("post thread root: %w", err)
		}
	}
	// The bot is not in that channel (or may not post there), or the request came
	// from the Home tab or the shortcut, outside any channel: the thread lives in a DM.
	dm, dmErr := h.slack.OpenDM(ctx, r.UserID)
	if dmErr != nil {
		return "", "", fmt.Errorf("open DM for the thread root: %w", errors.Join(err, dmErr))
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
func (h *Handlers) recordDecision(ctx context.Context, approver, id string, approve bool, reason string, once domain.WriteOption) (domain.Request, error) {
	if approve {
		return h.recordApproval(ctx, approver, id, once)
	}
	r, err := h.load(ctx, approver, id, h.cfg.Policy.MayDecide)
	if err != nil {
		return r, err
	}
	to, detail := domain.StateDenied, reason
	r, err = h.store.Move(ctx, id, to, approver, detail, func(u *domain.Request) error {
		u.ApproverID, u.DecidedAt, u.DecisionReason = approver, h.now(), reason
		return nil
	}, once)
	var me *domain.MoveError
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
func (h *Handlers) announceDecision(ctx context.Context, r domain.Request, err error, approver, channel string) {
	if err != nil {
		h.tell(ctx, channel, approver, textMessage(userMessage(err)))
		if errors.Is(err, errDecidedAlready) {
			h.showDecision(ctx, r)
		}
		return
	}
	h.showDecision(ctx, r)
	if r.State == domain.StateApproved {
		h.kick(ctx, r.ID)
	}
}

// showDecision edits the card and the thread root to show a decision and tells the
// thread once. Every part can be done again: a click on a card that still shows its
// buttons (the gpubot that recorded the decision stopped before it said so) mends them.
func (h *Handlers) showDecision(ctx context.Context, r domain.Request) {
	h.refreshCard(ctx, r)
	h.refreshRoot(ctx, r)
	switch {
	case r.State == domain.StateAwaitingApproval:
		h.showApprovals(ctx, r)
		return
	case r.State == domain.StateDenied:
		h.noticeOnce(ctx, r, noticeDecision, denialText(r))
	case r.ApproverID != "":
		h.noticeOnce(ctx, r, noticeDecision, fmt.Sprintf("<@%s> approved by %s. Asking fal for the machine now.", r.UserID, approversText(r)))
	default:
		return
	}
	h.tellDecisionByDM(ctx, r)
}

// create commits the move to creating (the idempotency key was stored at request time)
// before fal is called. The call itself is the worker's next step, on a fresh read: a
// delete confirmed meanwhile comes first.
func (h *Handlers) create(ctx context.Context, r domain.Request) {
	r, err := h.store.MoveFrom(ctx, r.ID, []domain.State{domain.StateApproved}, domain.StateCreating, actorBot, "", func(u *domain.Request) error {
		u.CreatingSince = h.now()
		return nil
	})
	if err != nil {
		if !errors.Is(err, domain.ErrIllegalMove) {
			h.reqLog(r).Error("record move", "to", domain.StateCreating, "err", err)
		}
		return
	}
	h.refreshRoot(ctx, r)
	h.kick(ctx, r.ID)
}

// callCreate asks fal for the machine of a request in creating. It runs again after a
// restart, and on later passes while fal's answer is unknown: the same idempotency key
// makes fal answer with the same instance, until fal forgets the key.
func (h *Handlers) callCreate(ctx context.Context, r domain.Request) {
	if h.keyExpired(r) {
		h.abandonCreate(ctx, r)
		return
	}
	r, err := h.store.Update(ctx, r.ID, func(u *domain.Request) error {
		if u.State != domain.StateCreating {
			return errMovedOn
		}
		u.CreateCalls++
		return nil
	})
	if err != nil {
		if !errors.Is(err, errMovedOn) {
			h.reqLog(r).Error("record create call", "err", err)
		}
		return // a delete came first: the worker's next step closes the request
	}
	inst, err := h.fal.Create(ctx, fal.CreateRequest{InstanceType: r.InstanceType, SSHKey: r.SSHKey, Sector: r.Sector}, r.IdempotencyKey)
	switch {
	case err == nil:
		h.recordCreated(ctx, r, inst)
	case ctx.Err() != nil:
		// Shutting down: the request stays in creating and resumes at the next start.
	case refused(err):
		h.createFailed(ctx, r, err)
	default:
		h.createUnconfirmed(ctx, r, err)
	}
}

// errMovedOn refuses to record a create call for a request no longer in creating.
var errMovedOn = errors.New("request moved on")

// refused says whether fal definitely did not create a machine: it refused the request
// or the key. After no answer, a 429 or a 5xx, an earlier attempt may have made one.
func refused(err error) bool {
	var fe *fal.Error
	if errors.As(err, &fe) {
		return fe.Status >= 400 && fe.Status < 500 && fe.Status != http.StatusTooManyRequests
	}
	return errors.Is(err, fal.ErrInvalidRequest)
}

// recordCreated records the instance fal made. A request deleted while fal was making
// it keeps the instance id, so its delete (the worker's next step) reaches the machine.
func (h *Handlers) recordCreated(ctx context.Context, r domain.Request, inst fal.Instance) {
	moved, err := h.store.MoveFrom(ctx, r.ID, []domain.State{domain.StateCreating}, domain.StateProvisioning, actorBot, inst.ID, func(u *domain.Request) error {
		u.InstanceID, u.Region, u.FalStatus = inst.ID, inst.Region, string(inst.Status)
		return nil
	})
	if errors.Is(err, domain.ErrIllegalMove) {
		h.keepInstance(ctx, r, inst.ID)
		return
	}
	if err != nil {
		// The instance is not recorded: the next pass sends the create again, and fal
		// answers with this same instance.
		h.reqLog(r).Error("record created instance", "instance", inst.ID, "err", err)
		return
	}
	h.reqLog(moved).Info("instance created", "instance", inst.ID)
	h.refreshRoot(ctx, moved)
	h.say(ctx, moved, textMessage(fmt.Sprintf("fal accepted it: instance `%s` is %s. I'll post here when it is ready.", inst.ID, falStatusText(string(inst.Status)))))
}

// keepInstance records the instance fal made for a request that moved on meanwhile,
// and has the request's worker look again: a deleting request then deletes it.
func (h *Handlers) keepInstance(ctx context.Context, r domain.Request, instanceID string) {
	updated, err := h.store.Update(ctx, r.ID, func(u *domain.Request) error {
		if u.InstanceID == "" {
			u.InstanceID = instanceID
		}
		return nil
	})
	if err != nil {
		h.reqLog(r).Error("record instance of a request that moved on", "instance", instanceID, "err", err)
		return
	}
	h.reqLog(updated).Warn("instance created for a request that moved on", "instance", instanceID, "state", updated.State)
	h.kick(ctx, r.ID)
}

// createUnconfirmed keeps a create whose outcome is unknown in creating: a later pass
// sends it again with the same key. The requester hears of the wait once.
func (h *Handlers) createUnconfirmed(ctx context.Context, r domain.Request, err error) {
	h.reqLog(r).Warn("create instance: no definite answer from fal; will ask again with the same key", "calls", r.CreateCalls, "err", err)
	h.noticeOnce(ctx, r, noticeCreateUnconfirmed, createUnconfirmedText(r, statusOf(err)))
}

// createFailed tells the requester, in plain words, why fal did not create the machine.
// A request deleted meanwhile is closed by its delete, which then knows that no create
// reached fal.
func (h *Handlers) createFailed(ctx context.Context, r domain.Request, err error) {
	words := falFailureWords(err)
	h.reqLog(r).Error("create instance failed", "err", err)
	failed, moveErr := h.store.MoveFrom(ctx, r.ID, []domain.State{domain.StateCreating}, domain.StateFailed, actorBot, words, func(u *domain.Request) error {
		u.Error, u.CreateCalls = words, 0
		return nil
	})
	if me, ok := errors.AsType[*domain.MoveError](moveErr); ok && me.Current.State == domain.StateDeleting {
		if _, err := h.store.Update(ctx, r.ID, func(u *domain.Request) error { u.CreateCalls = 0; return nil }); err != nil {
			h.reqLog(r).Error("record refused create", "err", err)
		}
		h.kick(ctx, r.ID)
		return
	}
	if moveErr != nil {
		h.reqLog(r).Error("record failed create", "err", moveErr)
		return
	}
	r = failed
	h.refreshRoot(ctx, r)
	h.say(ctx, r, textMessage(fmt.Sprintf("<@%s> %s", r.UserID, words)))
	if fal.IsAuthorization(err) {
		h.alertAdminsEvery(ctx, "fal-key", time.Hour, fmt.Sprintf("fal refused gpubot's admin API key (%s) while creating request `%s` for <@%s>. Check FAL_ADMIN_API_KEY: it must be an admin key with compute permission. (I say this at most once an hour.)", statusOf(err), shortID(r.ID), r.UserID))
	}
}

// load reads the request a click names and checks that user may act on it with may.
// Both failures are refusals to show the person.
func (h *Handlers) load(ctx context.Context, user, id string, may func(user, owner string) error) (domain.Request, error) {
	r, err := h.store.Request(ctx, id)
	if errors.Is(err, domain.ErrNotFound) {
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
func (h *Handlers) recordDelete(ctx context.Context, user, id string, once domain.WriteOption) (domain.Request, error) {
	r, err := h.load(ctx, user, id, h.cfg.Policy.MayManage)
	if err != nil {
		return r, err
	}
	to, reason := domain.StateDeleting, "by <@"+user+">"
	if r.State == domain.StateAwaitingApproval || r.State == domain.StateApproved {
		to, reason = domain.StateCancelled, "cancelled by <@"+user+">"
	}
	r, err = h.store.Move(ctx, id, to, user, "", func(u *domain.Request) error {
		u.EndReason = reason
		return nil
	}, once)
	var me *domain.MoveError
	if errors.As(err, &me) {
		return me.Current, refusef("Request `%s` is already %s.", shortID(id), stateName(me.Current))
	}
	if err != nil {
		return r, fmt.Errorf("record delete: %w", err)
	}
	return r, nil
}

// announceDelete answers the click, tells the thread, and deletes the machine at fal.
func (h *Handlers) announceDelete(ctx context.Context, r domain.Request, err error, user, channel, responseURL string) {
	switch {
	case err != nil:
		h.respond(ctx, responseURL, channel, user, textMessage(userMessage(err)))
	case r.State == domain.StateCancelled:
		h.respond(ctx, responseURL, channel, user, textMessage(fmt.Sprintf("Cancelled request `%s`.", shortID(r.ID))))
		h.refreshCard(ctx, r)
		h.refreshRoot(ctx, r)
		h.say(ctx, r, textMessage(fmt.Sprintf("Cancelled by <@%s> before a machine was created.", user)))
	default:
		h.respond(ctx, responseURL, channel, user, textMessage(fmt.Sprintf(":wastebasket: Deleting `%s`…", instanceText(r.InstanceID))))
		h.refreshRoot(ctx, r)
		h.kick(ctx, r.ID)
	}
}

// finishDelete deletes the instance at fal and closes the request. A failure leaves it
// in deleting, where the tracker tries again; the admins hear if it keeps failing. It
// runs in the request's worker, so it never overlaps the request's create call.
func (h *Handlers) finishDelete(ctx context.Context, r domain.Request) {
	if r.InstanceID == "" && r.CreateCalls > 0 {
		learned, known := h.learnCreatedInstance(ctx, r)
		if !known {
			return // fal's answer is still unknown: the next pass asks again
		}
		r = learned
	}
	if r.InstanceID != "" {
		err := h.fal.Delete(ctx, r.InstanceID)
		if err != nil && !fal.IsNotFound(err) {
			if ctx.Err() == nil {
				h.deleteFailed(ctx, r, err)
			}
			return
		}
	}
	final := domain.StateDeleted
	switch r.EndReason {
	case endExpired:
		final = domain.StateExpired
	case endNeverReady:
		final = domain.StateFailed
	}
	r, ok := h.moveByBot(ctx, r, final, r.EndReason, func(u *domain.Request) error {
		u.EndedAt = h.now()
		return nil
	})
	if !ok {
		return
	}
	h.reqLog(r).Info("instance deleted", "instance", r.InstanceID, "state", r.State)
	h.refreshRoot(ctx, r)
	h.say(ctx, r, textMessage(h.closingReply(r)))
}

// learnCreatedInstance finds out whether the create of a request deleted before fal
// answered made a machine: it sends the create again with the same idempotency key,
// which fal answers with the instance it made (or, if the first call never reached
// it, makes one, deleted right after). Once fal has forgotten the key nothing can be
// learned: the request closes and the admins are told to look for the machine. It
// reports the request as known, or false while fal's answer is still unknown.
func (h *Handlers) learnCreatedInstance(ctx context.Context, r domain.Request) (domain.Request, bool) {
	if h.keyExpired(r) {
		h.noticeDone(ctx, r, noticeCreateUnknown, func(ctx context.Context) { h.alertAdmins(ctx, abandonedCreateAlert(r)) })
		h.lookForOrphans()
		return r, true
	}
	inst, err := h.fal.Create(ctx, fal.CreateRequest{InstanceType: r.InstanceType, SSHKey: r.SSHKey, Sector: r.Sector}, r.IdempotencyKey)
	if err != nil && !refused(err) {
		if ctx.Err() == nil {
			h.createUnconfirmed(ctx, r, err)
		}
		return r, false
	}
	updated, updateErr := h.store.Update(ctx, r.ID, func(u *domain.Request) error {
		if err != nil {
			u.CreateCalls = 0 // refused: no machine
		} else if u.InstanceID == "" {
			u.InstanceID = inst.ID
		}
		return nil
	})
	if updateErr != nil {
		h.reqLog(r).Error("record what the create made", "err", updateErr)
		return r, false
	}
	return updated, true
}

// closingReply is the thread's last word on a machine, to its owner: how it ended, how
// long it ran and, where prices are set, what it cost.
func (h *Handlers) closingReply(r domain.Request) string {
	line := howItEnded(r)
	if r.EndReason == endNeverReady {
		line = "Deleted: fal did not make it ready in time."
	}
	if cost := h.cfg.Prices.MachineCost(r, h.now()); cost != "" {
		line += " Cost: about " + cost + "."
	}
	return fmt.Sprintf("<@%s> %s", r.UserID, line)
}

const deleteAlertAfter = 3

// deleteFailed counts a failed delete with the request, so the count survives restarts,
// and alerts the admins once when deletes keep failing.
func (h *Handlers) deleteFailed(ctx context.Context, r domain.Request, err error) {
	r, updateErr := h.store.Update(ctx, r.ID, func(u *domain.Request) error {
		u.DeleteFailures++
		return nil
	})
	if updateErr != nil {
		h.reqLog(r).Error("record failed delete", "err", updateErr)
		return
	}
	h.reqLog(r).Error("delete instance failed", "instance", r.InstanceID, "attempt", r.DeleteFailures, "err", err)
	if r.DeleteFailures < deleteAlertAfter {
		return
	}
	h.noticeDone(ctx, r, noticeDeleteFailed, func(ctx context.Context) {
		h.alertAdmins(ctx, fmt.Sprintf("I can't delete fal instance `%s` (request `%s`, owner <@%s>): %d attempts failed, the last with %s. It may still be running and costing money; I keep trying every %s.",
			r.InstanceID, shortID(r.ID), r.UserID, r.DeleteFailures, statusOf(err), h.cfg.PollInterval))
	})
}

// extend pushes a machine's expiry out by d, never further than MaxLifetime from now.
// An extension that would take the owner over budget is refused (BUDGET_ENFORCEMENT=
// refuse) or goes to the approvers (approve). once makes it the one effect of its envelope.
func (h *Handlers) extend(ctx context.Context, user domain.UserRef, r domain.Request, d time.Duration, once domain.WriteOption) error {
	if err := h.cfg.Policy.MayManage(user.UserID, r.UserID); err != nil {
		return err
	}
	if d <= 0 {
		return refusef("Give a positive duration, e.g. `/gpu extend %s 2h`.", shortID(r.ID))
	}
	if extendable(r) {
		release, err := h.admit(ctx, r.Owner())
		if err != nil {
			return err
		}
		defer release()
		over, err := h.overBudget(ctx, r.Owner(), r.InstanceType, d)
		if err != nil {
			return err
		}
		if len(over) > 0 && h.cfg.Enforcement == EnforceRefuse {
			return overBudgetRefusal(r.UserID, "extension", over)
		}
		if len(over) > 0 {
			return h.askExtension(ctx, user, r, d, over, once)
		}
	}
	return h.applyExtension(ctx, user.UserID, r, d, once, nil, "")
}

// extendable says whether a request is in a state an extension can change.
func extendable(r domain.Request) bool {
	switch r.State {
	case domain.StateApproved, domain.StateCreating, domain.StateProvisioning, domain.StateReady:
		return true
	}
	return false
}

// applyExtension commits an extension of d asked by user. The state and the limit are
// checked in the transaction that changes the expiry, so an extension never lands on a
// machine being deleted, and the expiry pass (which checks the expiry in its own move)
// never deletes a machine whose extension was accepted. also, when set, changes the
// request in the same transaction (an approved extension is no longer waiting);
// approvedBy names who approved it, for the thread.
func (h *Handlers) applyExtension(ctx context.Context, user string, r domain.Request, d time.Duration, once domain.WriteOption,
	also func(*domain.Request) error, approvedBy string) error {
	now, max := h.now(), h.cfg.Policy.MaxLifetime
	r, err := h.store.Update(ctx, r.ID, func(u *domain.Request) error {
		if also != nil {
			if err := also(u); err != nil {
				return err
			}
		}
		switch {
		case u.State.Terminal() || u.State == domain.StateDeleting:
			return refusef("Request `%s` is already %s; there is nothing to extend.", shortID(u.ID), stateName(*u))
		case u.State == domain.StateAwaitingApproval:
			// The approvers are deciding on the lifetime (and cost) their card shows.
			return refusef("Request `%s` is waiting for approval of %s; its lifetime can change once it is approved. To ask for longer now, delete it with `/gpu delete %s` and ask again with `for <duration>`.", shortID(u.ID), FormatDuration(u.Lifetime), shortID(u.ID))
		case u.State != domain.StateReady:
			// Compared as room left, so a huge d cannot overflow past the check.
			if d > max-u.Lifetime {
				return refusef("A machine may live at most %s; it already has %s, so you can add up to %s.", FormatDuration(max), FormatDuration(u.Lifetime), FormatDuration(max-u.Lifetime))
			}
			u.Lifetime += d
			return nil
		}
		left := u.ExpiresAt.Sub(now)
		if d > max-left {
			return refusef("A machine may be kept at most %s ahead; `%s` has %s left, so you can add up to %s.", FormatDuration(max), shortID(u.ID), FormatDuration(left), FormatDuration(max-left))
		}
		u.ExpiresAt = u.ExpiresAt.Add(d)
		delete(u.Notices, noticeReminder) // a new expiry deserves a new reminder
		return nil
	}, once)
	if err != nil {
		return err
	}
	if auditErr := h.store.Audit(ctx, domain.AuditEvent{Actor: user, Action: "extended", RequestID: r.ID, Detail: FormatDuration(d)}); auditErr != nil {
		h.reqLog(r).Error("audit extension", "err", auditErr)
	}
	approval := ""
	if approvedBy != "" {
		approval = ", approved by <@" + approvedBy + ">"
	}
	h.spawn("announce extension", func(ctx context.Context) {
		h.refreshRoot(ctx, r)
		h.say(ctx, r, textMessage(fmt.Sprintf("Extended by %s by <@%s>%s%s.", FormatDuration(d), user, approval, newExpiryText(r))))
	})
	return nil
}

func newExpiryText(r domain.Request) string {
	if r.State != domain.StateReady {
		return fmt.Sprintf("; it will live %s once ready", FormatDuration(r.Lifetime))
	}
	return "; it now expires " + slackDate(r.ExpiresAt)
}
