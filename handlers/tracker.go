package handlers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
)

// Notices recorded on a request before they are posted, so none is posted twice.
const (
	noticeReady    = "ready"
	noticeReminder = "reminder"
	noticeStopped  = "stopped"
	noticeUnknown  = "unknown"
	// noticeCreateUnconfirmed: fal gave no definite answer to the create; asking again.
	noticeCreateUnconfirmed = "create_unconfirmed"
	// noticeCreateUnknown: a deleted request's create outcome can no longer be learned.
	noticeCreateUnknown = "create_unknown"
	// noticeLingering: fal still lists the instance of a request that has ended.
	noticeLingering = "lingering"
	// noticeDeleteFailed: deletes keep failing; the admins were told.
	noticeDeleteFailed = "delete_failed"

	// endExpired marks a deletion that the lifetime decided.
	endExpired = "expired"
	// endNeverReady marks a deletion because fal did not make the machine ready in time.
	endNeverReady = "never ready"
)

// Run does the background work until ctx ends: it resumes every unfinished request,
// then follows instances every PollInterval. With a Leadership, only the leading
// replica does that work, while every replica keeps its user groups current for the
// clicks it answers.
func (h *Handlers) Run(ctx context.Context) error {
	if h.cfg.Leadership == nil {
		h.refreshGroups(ctx) // before the first click on a card, as far as it can be
		if err := h.Resume(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while starting: nothing failed
			}
			return err
		}
		h.trackUntilDone(ctx)
		return nil
	}
	var groups sync.WaitGroup
	groups.Go(func() { h.keepGroups(ctx) })
	defer groups.Wait()
	return h.cfg.Leadership.Run(ctx, h.lead)
}

// lead is the leader's share: resume, then track, until leadership or gpubot ends.
// The store may be out of reach when leadership begins, so resuming is tried again
// every interval.
func (h *Handlers) lead(ctx context.Context) {
	ticker := time.NewTicker(h.cfg.PollInterval)
	defer ticker.Stop()
	for {
		err := h.Resume(ctx)
		if err == nil {
			break
		}
		if ctx.Err() == nil {
			h.log.Warn("resuming unfinished requests failed; trying again next interval", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
	h.trackUntilDone(ctx)
}

// trackUntilDone makes a tracking pass every PollInterval until ctx ends.
func (h *Handlers) trackUntilDone(ctx context.Context) {
	ticker := time.NewTicker(h.cfg.PollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			err := h.Tick(ctx)
			if err != nil && ctx.Err() == nil {
				h.log.Warn("tracking pass failed; trying again next interval", "err", err)
			}
			if h.cfg.PassDone != nil {
				h.cfg.PassDone(err)
			}
		}
	}
}

// keepGroups reads user groups again when due, on a replica that may not lead.
func (h *Handlers) keepGroups(ctx context.Context) {
	ticker := time.NewTicker(h.cfg.PollInterval)
	defer ticker.Stop()
	for {
		h.refreshGroups(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// Resume picks up every unfinished request where it stood when gpubot stopped: posts
// what was not posted, sends creates again with their idempotency key, finishes deletes.
// Approval cards need nothing: their state is in the store.
func (h *Handlers) Resume(ctx context.Context) error {
	reqs, err := h.store.Unfinished(ctx)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	h.advanceStalled(ctx, reqs, 0)
	return nil
}

// stalledAfter is how long a request may sit in a step the tracker can finish (an
// unposted thread or card, an approved request not yet sent to fal, a create fal gave
// no definite answer to) before a pass takes it up again, e.g. after Slack or fal
// failed for longer than the retries.
const stalledAfter = time.Minute

// advanceStalled kicks every request left unfinished in a step for at least minAge,
// and every delete that has not gone through yet (a failed delete is tried again on
// every pass). A request whose work is still queued or running is not given more.
func (h *Handlers) advanceStalled(ctx context.Context, reqs []domain.Request, minAge time.Duration) {
	now := h.now()
	h.forgetClaimsOfEnded(reqs)
	for _, r := range reqs {
		stalled := r.ThreadTS == "" || r.State == domain.StateApproved || r.State == domain.StateCreating ||
			(r.State == domain.StateAwaitingApproval && r.ApprovalTS == "")
		due := r.State == domain.StateDeleting || (stalled && (now.Sub(r.UpdatedAt) >= minAge || h.wasClaimedElsewhere(r.ID)))
		if !due {
			continue
		}
		h.reqLog(r).Debug("taking up unfinished request", "state", r.State)
		h.kick(ctx, r.ID)
	}
}

// wasClaimedElsewhere says whether the last kick of request id found another holding
// its claim.
func (h *Handlers) wasClaimedElsewhere(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.claimedElsewhere[id]
}

// forgetClaimsOfEnded drops what claimedElsewhere holds of requests no longer live.
func (h *Handlers) forgetClaimsOfEnded(live []domain.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.claimedElsewhere) == 0 {
		return
	}
	ids := make(map[string]bool, len(live))
	for _, r := range live {
		ids[r.ID] = true
	}
	for id := range h.claimedElsewhere {
		if !ids[id] {
			delete(h.claimedElsewhere, id)
		}
	}
}

// Tick is one tracking pass: user groups read again when due, retried steps,
// provisioning deadlines, approval reminders and timeouts, the spend digest when a period has ended, reminders and expiries, then one List call for every tracked instance (a Get only for one the list
// no longer shows). Each step runs whatever the others did, so a fal outage stops
// neither reminders nor the retries of what Slack refused; the errors are joined.
// With nothing to track it calls fal for nothing.
func (h *Handlers) Tick(ctx context.Context) error {
	h.refreshGroups(ctx)
	reqs, err := h.store.Unfinished(ctx)
	if err != nil {
		return fmt.Errorf("read unfinished requests: %w", err)
	}
	h.advanceStalled(ctx, reqs, stalledAfter)
	h.enforceProvisionDeadline(ctx, reqs)
	h.keepApprovals(ctx, reqs)
	h.postExtensionCards(ctx, reqs)
	h.postDigest(ctx)
	return errors.Join(h.keepLifetimes(ctx), h.track(ctx, reqs))
}

// track brings every tracked request up to date with fal's list, and looks in it for
// instances no request tracks.
func (h *Handlers) track(ctx context.Context, reqs []domain.Request) error {
	var tracked []domain.Request
	for _, r := range reqs {
		if r.InstanceID != "" && (r.State == domain.StateProvisioning || r.State == domain.StateReady) {
			tracked = append(tracked, r)
		}
	}
	if len(tracked) == 0 && !h.watchesOrphans() {
		return nil
	}
	instances, err := h.fal.List(ctx)
	if err != nil {
		return fmt.Errorf("list instances: %w", err)
	}
	byID := make(map[string]fal.Instance, len(instances))
	for _, inst := range instances {
		byID[inst.ID] = inst
	}
	for _, r := range tracked {
		inst, listed := byID[r.InstanceID]
		h.follow(ctx, r, inst, listed)
	}
	return h.reconcile(ctx, instances, reqs)
}

// watchesOrphans says whether this pass should list fal even with nothing to track: when
// admins would hear of machines made outside gpubot, once per orphanSweepEvery, or at every
// pass while a suspect is being watched.
func (h *Handlers) watchesOrphans() bool {
	if len(h.cfg.Policy.AdminUsers()) == 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watchingOrphans || h.lastOrphanSweep.IsZero() || h.now().Sub(h.lastOrphanSweep) >= orphanSweepEvery
}

// lookForOrphans has the next pass list fal, when a machine may exist that no request tracks.
func (h *Handlers) lookForOrphans() {
	h.mu.Lock()
	h.watchingOrphans = true
	h.mu.Unlock()
}

// follow brings one request up to date with what fal says of its instance.
func (h *Handlers) follow(ctx context.Context, r domain.Request, inst fal.Instance, listed bool) {
	if !listed {
		got, err := h.fal.Get(ctx, r.InstanceID)
		if fal.IsNotFound(err) {
			h.vanished(ctx, r)
			return
		}
		if err != nil {
			h.reqLog(r).Warn("get instance", "instance", r.InstanceID, "err", err)
			return
		}
		inst = got
	}
	if string(inst.Status) != r.FalStatus {
		r = h.statusChanged(ctx, r, inst)
	}
	switch inst.Status {
	case fal.StatusReady:
		switch {
		case r.State == domain.StateProvisioning:
			h.becameReady(ctx, r, inst)
		case !r.NoticeSent(noticeReady):
			// Recorded ready, but gpubot stopped before it told anyone.
			h.refreshRoot(ctx, r)
			h.announceReady(ctx, r)
		}
	case fal.StatusStopped:
		h.noticeOnce(ctx, r, noticeStopped, fmt.Sprintf("<@%s> fal reports `%s` as *stopped*: it is not running. Delete it with `/gpu delete %s` and ask for a new one, or tell an admin if you need what is on it.", r.UserID, r.InstanceID, shortID(r.ID)))
	case fal.StatusUnknown:
		since := r.UnknownSince
		if !since.IsZero() && h.now().Sub(since) >= h.cfg.UnknownGrace {
			h.noticeOnce(ctx, r, noticeUnknown, fmt.Sprintf("<@%s> fal has reported `%s` as *unknown* for %s. It may not be reachable; try `ssh` and, if it fails, delete it with `/gpu delete %s` and ask for a new one.", r.UserID, r.InstanceID, FormatDuration(h.now().Sub(since)), shortID(r.ID)))
		}
	}
}

// statusChanged records fal's new status and tells the thread.
func (h *Handlers) statusChanged(ctx context.Context, r domain.Request, inst fal.Instance) domain.Request {
	now := h.now()
	updated, err := h.store.Update(ctx, r.ID, func(u *domain.Request) error {
		u.FalStatus = string(inst.Status)
		if inst.IP != "" {
			u.IP = inst.IP
		}
		switch {
		case inst.Status != fal.StatusUnknown:
			u.UnknownSince = time.Time{}
		case u.UnknownSince.IsZero():
			u.UnknownSince = now
		}
		return nil
	})
	if err != nil {
		h.reqLog(r).Error("record status", "status", inst.Status, "err", err)
		return r
	}
	if inst.Status != fal.StatusReady {
		h.say(ctx, updated, textMessage(fmt.Sprintf("Status: %s.", inst.Status)))
		h.refreshRoot(ctx, updated)
	}
	return updated
}

// becameReady starts the lifetime and tells the requester, exactly once.
func (h *Handlers) becameReady(ctx context.Context, r domain.Request, inst fal.Instance) {
	now := h.now()
	r, ok := h.moveByBot(ctx, r, domain.StateReady, inst.IP, func(u *domain.Request) error {
		u.IP, u.FalStatus, u.ReadyAt, u.ExpiresAt = inst.IP, string(inst.Status), now, now.Add(u.Lifetime)
		return nil
	})
	if !ok {
		return
	}
	h.reqLog(r).Info("instance ready", "instance", r.InstanceID, "ip", r.IP)
	h.refreshRoot(ctx, r)
	h.announceReady(ctx, r)
}

func (h *Handlers) announceReady(ctx context.Context, r domain.Request) {
	h.noticeDone(ctx, r, noticeReady, func(ctx context.Context) {
		h.say(ctx, r, readyReply(r))
		if h.cfg.NotifyChannel == "" {
			return
		}
		if _, err := h.slack.PostMessage(ctx, h.cfg.NotifyChannel, "", readyNotice(r)); err != nil {
			h.reqLog(r).Error("post ready notice", "channel", h.cfg.NotifyChannel, "err", err)
			if cannotPost(err) {
				h.alertAdminsEvery(ctx, "notify-channel", time.Hour, fmt.Sprintf("I can't post readiness notices in <#%s> (Slack said: %v). Invite me there or fix NOTIFY_CHANNEL.", h.cfg.NotifyChannel, err))
			}
		}
	})
}

// vanished closes a request whose instance fal no longer knows.
func (h *Handlers) vanished(ctx context.Context, r domain.Request) {
	r, ok := h.moveByBot(ctx, r, domain.StateGone, "not listed by fal", func(u *domain.Request) error {
		u.EndedAt, u.EndReason = h.now(), "vanished"
		return nil
	})
	if !ok {
		return
	}
	h.reqLog(r).Warn("instance vanished at fal", "instance", r.InstanceID)
	h.refreshRoot(ctx, r)
	h.say(ctx, r, textMessage(h.closingReply(r)+" It was deleted outside gpubot."))
}

// keepLifetimes reminds owners before expiry and deletes machines whose lifetime is over.
func (h *Handlers) keepLifetimes(ctx context.Context) error {
	now := h.now()
	due, err := h.store.ExpiringBefore(ctx, now.Add(h.cfg.ReminderBefore))
	if err != nil {
		return fmt.Errorf("read expiring requests: %w", err)
	}
	for _, r := range due {
		if r.State != domain.StateReady {
			continue
		}
		if !now.Before(r.ExpiresAt) {
			h.expire(ctx, r)
			continue
		}
		h.noticeDone(ctx, r, noticeReminder, func(ctx context.Context) {
			h.say(ctx, r, reminderMessage(r, h.extendStep(r)))
			h.homesChanged(ctx, r)
		})
	}
	return nil
}

// errNotDue refuses an expiry whose request was extended (or moved on) since it was read.
var errNotDue = errors.New("not due any more")

// expire moves a machine whose lifetime is over to deleting, checking the expiry in the
// same transaction: an extension accepted since the due list was read wins.
func (h *Handlers) expire(ctx context.Context, r domain.Request) {
	now := h.now()
	r, err := h.store.MoveFrom(ctx, r.ID, []domain.State{domain.StateReady}, domain.StateDeleting, actorBot, endExpired, func(u *domain.Request) error {
		if now.Before(u.ExpiresAt) {
			return errNotDue
		}
		u.EndReason = endExpired
		return nil
	})
	if err != nil {
		if !errors.Is(err, errNotDue) && !errors.Is(err, domain.ErrIllegalMove) {
			h.reqLog(r).Error("record expiry", "err", err)
		}
		return
	}
	h.reqLog(r).Info("lifetime over; deleting", "instance", r.InstanceID)
	h.refreshRoot(ctx, r)
	h.kick(ctx, r.ID)
}

// enforceProvisionDeadline gives up on machines fal has not made ready within
// ProvisionTimeout of the create call (stuck pending, stopped or unknown): their
// lifetime would never start, so nothing else would ever end them.
func (h *Handlers) enforceProvisionDeadline(ctx context.Context, reqs []domain.Request) {
	now := h.now()
	for _, r := range reqs {
		if r.State != domain.StateProvisioning || now.Sub(provisionStart(r)) < h.cfg.ProvisionTimeout {
			continue
		}
		words := neverReadyText(r, h.cfg.ProvisionTimeout)
		r, err := h.store.MoveFrom(ctx, r.ID, []domain.State{domain.StateProvisioning}, domain.StateDeleting, actorBot, endNeverReady, func(u *domain.Request) error {
			u.EndReason, u.Error = endNeverReady, words
			return nil
		})
		if err != nil {
			if !errors.Is(err, domain.ErrIllegalMove) {
				h.reqLog(r).Error("record provisioning deadline", "err", err)
			}
			continue
		}
		h.reqLog(r).Warn("not ready in time; deleting", "instance", r.InstanceID, "fal_status", r.FalStatus, "timeout", h.cfg.ProvisionTimeout)
		h.refreshRoot(ctx, r)
		h.say(ctx, r, textMessage(fmt.Sprintf("<@%s> %s", r.UserID, words)))
		h.alertAdmins(ctx, neverReadyAlert(r, h.cfg.ProvisionTimeout))
		h.kick(ctx, r.ID)
	}
}

// provisionStart is when fal was first asked for the machine; records from before
// that was kept fall back to the decision, or the request.
func provisionStart(r domain.Request) time.Time {
	switch {
	case !r.CreatingSince.IsZero():
		return r.CreatingSince
	case !r.DecidedAt.IsZero():
		return r.DecidedAt
	}
	return r.CreatedAt
}

// orphanPassesBeforeReport is how many passes in a row must list an instance gpubot does not know
// before the admins hear of it: a create whose answer is still on its way is not an orphan.
const orphanPassesBeforeReport = 3

// orphanSweepEvery is how often gpubot lists fal only to look for machines made
// outside it, when it tracks nothing (tracking passes look at every list they make).
const orphanSweepEvery = 10 * time.Minute

// endedGrace is how long fal may go on listing the instance of a request that ended (a
// delete takes a moment at fal) before gpubot deletes it again and tells the admins.
const endedGrace = 10 * time.Minute

// reconcile deals with instances at fal that no live request tracks: one whose request
// ended is deleted again once endedGrace has passed; one gpubot did not make is reported
// to the admins once, after orphanPassesBeforeReport listings in a row (kept in the store)
// and once no create of its type waits for fal's answer.
func (h *Handlers) reconcile(ctx context.Context, instances []fal.Instance, unfinished []domain.Request) error {
	known := make(map[string]bool, len(unfinished))
	for _, r := range unfinished {
		known[r.InstanceID] = true
	}
	now := h.now()
	var untracked []fal.Instance
	for _, inst := range instances {
		if known[inst.ID] {
			continue
		}
		owner, err := h.store.RequestByInstance(ctx, inst.ID)
		switch {
		case err == nil:
			// A live owner was recorded after this pass read the unfinished requests.
			if !owner.Live() && now.Sub(owner.EndedAt) >= endedGrace {
				h.deleteLingering(ctx, owner, inst)
			}
		case errors.Is(err, domain.ErrNotFound):
			untracked = append(untracked, inst)
		default:
			return fmt.Errorf("look up instance %s: %w", inst.ID, err)
		}
	}
	ids := make([]string, len(untracked))
	for i, inst := range untracked {
		ids[i] = inst.ID
	}
	sightings, err := h.store.SightOrphans(ctx, ids)
	if err != nil {
		return err
	}
	confirming := typesBeingConfirmed(unfinished)
	watching := false
	for _, inst := range untracked {
		seen := sightings[inst.ID]
		switch {
		case seen.Reported:
		case seen.Count >= orphanPassesBeforeReport && !confirming[inst.InstanceType]:
			h.reportOrphan(ctx, inst, seen.First)
		default:
			watching = true
		}
	}
	h.mu.Lock()
	h.watchingOrphans, h.lastOrphanSweep = watching, now
	h.mu.Unlock()
	return nil
}

// typesBeingConfirmed lists the instance types of creates fal has not answered yet: an
// untracked instance of such a type may be theirs, and is not reported until gpubot has
// asked again or given up (within fal's key window).
func typesBeingConfirmed(unfinished []domain.Request) map[string]bool {
	types := map[string]bool{}
	for _, r := range unfinished {
		unanswered := r.State == domain.StateCreating || (r.State == domain.StateDeleting && r.InstanceID == "" && r.CreateCalls > 0)
		if unanswered {
			types[r.InstanceType] = true
		}
	}
	return types
}

// deleteLingering deletes, again, the instance of a request that ended while fal still
// lists it (a delete fal answered 404 for, a listing that missed it once), and tells the
// admins the first time. It runs in the background, at most once at a time per request.
func (h *Handlers) deleteLingering(ctx context.Context, r domain.Request, inst fal.Instance) {
	if !h.claim(r.ID) {
		return
	}
	h.noticeDone(ctx, r, noticeLingering, func(ctx context.Context) {
		h.reqLog(r).Warn("fal still lists the instance of an ended request; deleting it again", "instance", inst.ID, "state", r.State)
		h.alertAdmins(ctx, lingeringAlert(r, inst, h.now()))
	})
	h.spawn("delete lingering instance", func(ctx context.Context) {
		defer h.release(r.ID)
		if err := h.fal.Delete(ctx, inst.ID); err != nil && !fal.IsNotFound(err) {
			h.reqLog(r).Error("delete lingering instance", "instance", inst.ID, "err", err)
		}
	})
}

// reportOrphan tells the admins of an instance gpubot did not make, once ever: the
// store remembers it across restarts.
func (h *Handlers) reportOrphan(ctx context.Context, inst fal.Instance, firstSeen time.Time) {
	mark := func(ctx context.Context) (bool, error) { return h.store.MarkOrphanReported(ctx, inst.ID) }
	err := doOnce(ctx, mark, func(ctx context.Context) {
		h.log.Warn("instance at fal that gpubot did not create", "instance", inst.ID, "type", inst.InstanceType)
		if err := h.store.Audit(ctx, domain.AuditEvent{Actor: actorBot, Action: "orphan_reported", Detail: inst.ID}); err != nil {
			h.log.Error("audit orphan", "err", err)
		}
		h.alertAdmins(ctx, fmt.Sprintf("fal lists instance `%s` (%s, %s%s) that gpubot did not create and does not track. fal does not say how old it is; gpubot first saw it %s ago. If nobody owns it, delete it at fal: it costs money.",
			inst.ID, ShortType(inst.InstanceType), inst.Status, ipText(inst.IP), FormatDuration(h.now().Sub(firstSeen))))
	})
	if err != nil {
		h.log.Error("record orphan", "instance", inst.ID, "err", err)
	}
}
