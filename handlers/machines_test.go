package handlers

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/internal/domain"
)

// A delete confirmed in the moment between the move to creating and the create call
// (while the thread root is being edited) must reach the machine fal then makes.
func TestDeleteWhileCreatingLeavesNoMachine(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.approvedRequest()
	deleted := false
	e.slack.setBeforeUpdate(func() {
		if deleted || e.get(r.ID).State != domain.StateCreating {
			return
		}
		deleted = true
		// The owner confirms the delete while gpubot edits the root to say "creating".
		got, err := e.h.recordDelete(ctx, testOwner, r.ID, noEnvelope)
		e.h.announceDelete(ctx, got, err, testOwner, "CGENERAL", "")
	})
	if err := e.h.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	e.idle()
	if !deleted {
		t.Fatal("the delete was never confirmed during the create")
	}
	if got := e.get(r.ID); got.State != domain.StateDeleted {
		t.Errorf("request is %s, want deleted", got.State)
	}
	if ids := e.listed(); len(ids) != 0 {
		t.Errorf("fal still runs %v after the owner was told it was deleted", ids)
	}
	if c := e.sim.Counters(); c.CreateCalls != 0 {
		t.Errorf("%d create calls for a request deleted before its create went out; want none", c.CreateCalls)
	}

	// After a restart nothing sends the create again for the ended request.
	calls := e.sim.Counters().CreateCalls
	e.restart()
	if err := e.h.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	e.idle()
	e.clock.Advance(stalledAfter)
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	if after := e.sim.Counters().CreateCalls; after != calls {
		t.Errorf("%d create calls after the restart for a request that ended", after-calls)
	}
	e.checkNoForgottenMachine()
}

// A delete confirmed while the create call is at fal waits for its answer and deletes
// the machine it made.
func TestDeleteDuringCreateCallDeletesItsMachine(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.sim.InjectNext("create", 1, falsim.Fault{Hang: 200 * time.Millisecond})
	r := e.approvedRequest()
	if err := e.h.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; e.sim.Counters().Calls["create"] == 0; i++ {
		if i == 10_000 {
			t.Fatal("the create call never reached fal")
		}
		time.Sleep(time.Millisecond)
	}
	got, err := e.h.recordDelete(ctx, testOwner, r.ID, noEnvelope)
	e.h.announceDelete(ctx, got, err, testOwner, "CGENERAL", "")
	e.idle()
	if got := e.get(r.ID); got.State != domain.StateDeleted {
		t.Errorf("request is %s, want deleted", got.State)
	}
	if c := e.sim.Counters(); c.Creates != 1 || len(e.listed()) != 0 {
		t.Errorf("fal made %d machines and runs %v; want one made and none left", c.Creates, e.listed())
	}
}

// loseCreateAnswer makes fal create the next machine but lose its answer, and refuse
// the retries with 429 until the fal client gives up.
func loseCreateAnswer(sim *falsim.Server) {
	sim.InjectNext("create", 1, falsim.Fault{LoseResponse: true})
	sim.InjectNext("create", 1000, falsim.Fault{Status: http.StatusTooManyRequests})
}

// A create whose answer was lost stays creating and is sent again with the same
// key, which fal answers with the machine it made: one machine, tracked.
func TestCreateWithLostAnswerIsAskedAgainWithSameKey(t *testing.T) {
	e := newEnv(t)
	loseCreateAnswer(e.sim)
	r := e.request()
	if r.State != domain.StateCreating {
		t.Fatalf("after a create whose outcome is unknown the request is %s (%s), want creating", r.State, r.Error)
	}
	if said := e.slack.said("CGENERAL", "no machine was created"); len(said) > 0 {
		t.Errorf("the requester was told no machine was created, while fal made one: %q", said)
	}
	made := e.listed()
	if len(made) != 1 {
		t.Fatalf("fal runs %v, want the one machine the lost create made", made)
	}

	e.sim.ClearFaults()
	e.clock.Advance(stalledAfter)
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	r = e.get(r.ID)
	if r.State != domain.StateProvisioning || r.InstanceID != made[0] {
		t.Fatalf("request is %s with instance %q, want provisioning with %s", r.State, r.InstanceID, made[0])
	}
	if c := e.sim.Counters(); c.Creates != 1 {
		t.Errorf("fal made %d machines, want 1", c.Creates)
	}
}

// Once fal has forgotten the key, the create is not sent again: the requester and the
// admins are told, and the machine the lost create made is reported.
func TestUnconfirmedCreateIsAbandonedWhenTheKeyExpires(t *testing.T) {
	e := newEnv(t)
	loseCreateAnswer(e.sim)
	r := e.request()
	e.clock.Advance(idempotencyWindow + time.Minute)
	for range orphanPassesBeforeReport {
		if err := e.tick(); err != nil {
			t.Fatal(err)
		}
	}
	if r = e.get(r.ID); r.State != domain.StateFailed {
		t.Fatalf("request is %s, want failed", r.State)
	}
	if c := e.sim.Counters(); c.Creates != 1 {
		t.Errorf("fal made %d machines, want 1", c.Creates)
	}
	if len(e.slack.said("D"+testAdmin, shortID(r.ID))) == 0 {
		t.Error("the admins were not told of the abandoned create")
	}
	e.checkNoForgottenMachine()
}

// A request deleted after a restart, whose create's answer was lost, learns the machine
// from fal with the same key and deletes it.
func TestDeleteAfterLostCreateAnswerReachesTheMachine(t *testing.T) {
	e := newEnv(t)
	loseCreateAnswer(e.sim)
	r := e.request()
	e.restart()
	e.sim.ClearFaults()
	got, err := e.h.recordDelete(context.Background(), testOwner, r.ID, noEnvelope)
	if err != nil {
		t.Fatalf("delete refused: %v", err)
	}
	e.h.announceDelete(context.Background(), got, err, testOwner, "CGENERAL", "")
	e.idle()
	if r = e.get(r.ID); r.State != domain.StateDeleted {
		t.Errorf("request is %s, want deleted", r.State)
	}
	if ids := e.listed(); len(ids) != 0 {
		t.Errorf("fal still runs %v", ids)
	}
	if c := e.sim.Counters(); c.Creates != 1 {
		t.Errorf("fal made %d machines, want 1", c.Creates)
	}
}

// A definite refusal is a failure, told in plain words.
func TestRefusedCreateFails(t *testing.T) {
	e := newEnv(t)
	e.sim.InjectNext("create", 1, falsim.Fault{Status: http.StatusForbidden})
	r := e.request()
	if r.State != domain.StateFailed {
		t.Fatalf("request is %s, want failed", r.State)
	}
	if len(e.slack.said("CGENERAL", "no machine was created")) != 1 {
		t.Errorf("the requester was not told: %v", e.slack.all())
	}
}

// A machine fal never makes ready is deleted at the provisioning deadline, and its
// owner and the admins are told.
func TestMachineThatNeverBecomesReadyIsDeleted(t *testing.T) {
	e := newEnv(t)
	r := e.request()
	if err := e.sim.SetStatus(r.InstanceID, fal.StatusUnknown); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		e.clock.Advance(DefaultProvisionTimeout / 3)
		if err := e.tick(); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(time.Minute)
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	if r = e.get(r.ID); r.State != domain.StateFailed {
		t.Errorf("request is %s after %s without becoming ready, want failed", r.State, DefaultProvisionTimeout)
	}
	if ids := e.listed(); len(ids) != 0 {
		t.Errorf("fal still runs %v", ids)
	}
	if len(e.slack.said("CGENERAL", "ready in "+FormatDuration(DefaultProvisionTimeout))) != 1 {
		t.Errorf("the owner was not told why, once: %v", e.slack.all())
	}
	if len(e.slack.said("CGENERAL", "Deleted: fal did not make it ready in time.")) != 1 {
		t.Errorf("the thread has no last line: %v", e.slack.all())
	}
	if len(e.slack.said("D"+testAdmin, r.InstanceID)) == 0 {
		t.Error("the admins were not told")
	}
}

// The instance of a request that ended (here a delete fal answered 404 for while the
// machine lived) is deleted again after a grace, and the admins are told.
func TestEndedRequestsLingeringInstanceIsDeletedAgain(t *testing.T) {
	e := newEnv(t)
	r := e.readyMachine()
	e.sim.InjectNext("delete", 1, falsim.Fault{Status: http.StatusNotFound})
	got, err := e.h.recordDelete(context.Background(), testOwner, r.ID, noEnvelope)
	e.h.announceDelete(context.Background(), got, err, testOwner, "CGENERAL", "")
	e.idle()
	if got := e.get(r.ID); got.State != domain.StateDeleted {
		t.Fatalf("request is %s, want deleted", got.State)
	}
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	if ids := e.listed(); len(ids) != 1 {
		t.Fatalf("fal runs %v; want the machine the 404 left", ids)
	}
	e.clock.Advance(endedGrace + orphanSweepEvery)
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	if ids := e.listed(); len(ids) != 0 {
		t.Errorf("fal still runs %v long after its request ended", ids)
	}
	if len(e.slack.said("D"+testAdmin, r.InstanceID)) != 1 {
		t.Errorf("the admins were not told once: %v", e.slack.all())
	}
}

// An extension accepted after an expiry pass read its due list wins over that pass.
func TestExtendAcceptedBeforeExpiryWins(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.readyMachine()
	e.clock.Advance(r.ExpiresAt.Sub(e.clock.Now()))
	due := e.get(r.ID) // as the expiry pass read it
	if err := e.h.extend(ctx, domain.UserRef{TeamID: "T1", UserID: testOwner}, due, time.Hour, noEnvelope); err != nil {
		t.Fatal(err)
	}
	e.h.expire(ctx, due)
	e.idle()
	if got := e.get(r.ID); got.State != domain.StateReady {
		t.Errorf("an extended machine is %s, want ready", got.State)
	}
	if len(e.listed()) != 1 {
		t.Error("an extended machine was deleted")
	}
}

// An extension of a machine that began to be deleted after the command read it is
// refused, not reported as done.
func TestExtendOfMachineBeingDeletedIsRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.readyMachine()
	e.clock.Advance(r.ExpiresAt.Sub(e.clock.Now()))
	stale := e.get(r.ID) // as the extend command read it
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	err := e.h.extend(ctx, domain.UserRef{TeamID: "T1", UserID: testOwner}, stale, time.Hour, noEnvelope)
	if err == nil || !strings.Contains(userMessage(err), "already") {
		t.Errorf("extending a machine being deleted: %v, want a refusal", err)
	}
	if got := e.get(r.ID); got.Live() {
		t.Errorf("the expired machine is %s, want it ended", got.State)
	}
}

// Extending a request that waits for approval would change what the approvers see:
// it is refused with what to do.
func TestExtendWhileAwaitingApprovalIsRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := domain.Request{
		TeamID: "T1", UserID: testOwner, CommandChannel: "CGENERAL", InstanceType: fal.Type8xH100,
		SSHKey: testKey, Lifetime: time.Hour, State: domain.StateAwaitingApproval,
	}
	if err := e.store.CreateRequest(ctx, &r); err != nil {
		t.Fatal(err)
	}
	err := e.h.extend(ctx, domain.UserRef{TeamID: "T1", UserID: testOwner}, r, 71*time.Hour, noEnvelope)
	if err == nil || !strings.Contains(userMessage(err), "approv") {
		t.Fatalf("extend while awaiting approval: %v, want a refusal that says why", err)
	}
	if got := e.get(r.ID); got.Lifetime != time.Hour {
		t.Errorf("lifetime is %s, want it unchanged", got.Lifetime)
	}
}

// A huge extension is refused, not wrapped around to a past expiry.
func TestHugeExtendIsRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	owner := domain.UserRef{TeamID: "T1", UserID: testOwner}
	huge := 2562047 * time.Hour
	r := e.request() // provisioning: the lifetime grows
	if err := e.h.extend(ctx, owner, r, huge, noEnvelope); err == nil {
		t.Errorf("a %s extension of a provisioning machine was accepted; lifetime now %s", huge, e.get(r.ID).Lifetime)
	}
	ready := e.readyMachine()
	if err := e.h.extend(ctx, owner, ready, huge, noEnvelope); err == nil {
		t.Errorf("a %s extension of a ready machine was accepted; expiry now %s", huge, e.get(ready.ID).ExpiresAt)
	}
	if got := e.get(ready.ID); !got.ExpiresAt.Equal(ready.ExpiresAt) {
		t.Errorf("expiry moved from %s to %s", ready.ExpiresAt, got.ExpiresAt)
	}
}

// The machine of a create fal has not confirmed yet is not reported to the admins as
// unknown while gpubot still asks fal about it; the next ask adopts it.
func TestUnconfirmedCreateIsNotReportedAsUnknown(t *testing.T) {
	e := newEnv(t)
	loseCreateAnswer(e.sim)
	r := e.request()
	made := e.listed()
	if len(made) != 1 {
		t.Fatalf("fal runs %v, want the one machine the lost create made", made)
	}
	e.sim.ClearFaults()
	for range orphanPassesBeforeReport + 1 {
		if err := e.tick(); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(e.config.PollInterval)
	}
	e.clock.Advance(stalledAfter)
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	if got := e.get(r.ID); got.InstanceID != made[0] {
		t.Fatalf("request is %s with instance %q, want it to track %s", got.State, got.InstanceID, made[0])
	}
	if said := e.slack.said("D"+testAdmin, made[0]); len(said) > 0 {
		t.Errorf("the admins were told of the machine as unknown while its create was being confirmed: %q", said)
	}
}

// A pass whose list of unfinished requests was read before a create was recorded sees
// that request's instance as untracked: it belongs to a live request, and is kept.
func TestInstanceRecordedDuringPassIsKept(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.readyMachine()
	e.clock.Advance(endedGrace + orphanSweepEvery)
	instances, err := e.fal.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.h.reconcile(ctx, instances, nil); err != nil { // read before r was recorded
		t.Fatal(err)
	}
	e.idle()
	if ids := e.listed(); len(ids) != 1 || ids[0] != r.InstanceID {
		t.Errorf("fal runs %v, want the live request's %s", ids, r.InstanceID)
	}
	if said := e.slack.said("D"+testAdmin, r.InstanceID); len(said) > 0 {
		t.Errorf("the admins were told of a tracked machine: %q", said)
	}
}

// A pass that read a machine as ready, then finds fal no longer lists it, must not
// call it gone when its owner had it deleted meanwhile: the delete finishes as a
// delete, and the thread says so, not "deleted outside gpubot".
func TestPassThatSawAMachineReadyLeavesItsDeleteAlone(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.readyMachine()
	seenByPass := e.get(r.ID)
	if _, err := e.h.recordDelete(ctx, testOwner, r.ID, noEnvelope); err != nil {
		t.Fatal(err)
	}
	e.sim.Remove(r.InstanceID) // the owner's delete reached fal; gpubot has not recorded it yet
	e.h.follow(ctx, seenByPass, fal.Instance{}, false)
	if got := e.get(r.ID); got.State != domain.StateDeleting {
		t.Fatalf("request is %s after a pass that saw it ready, want still deleting", got.State)
	}
	e.h.kick(ctx, r.ID)
	e.idle()
	if got := e.get(r.ID); got.State != domain.StateDeleted {
		t.Errorf("request is %s, want deleted", got.State)
	}
	if said := e.slack.said("CGENERAL", "deleted outside gpubot"); len(said) != 0 {
		t.Errorf("the thread was told %q", said)
	}
}
