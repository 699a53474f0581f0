package handlers

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/internal/domain"
)

// backgroundWork counts the goroutines running or queued as gpubot's background work.
func backgroundWork(t *testing.T) int {
	t.Helper()
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "gpubot/handlers.(*Handlers).run.func") {
			n++
		}
	}
	return n
}

// deletingRequest stores a request whose machine (made at fal here) is being deleted.
func (e *env) deletingRequest(instanceID string) domain.Request {
	e.t.Helper()
	ctx := context.Background()
	e.sim.AddInstance(fal.Instance{ID: instanceID, InstanceType: fal.Type1xH100, Status: fal.StatusReady})
	r := domain.Request{
		TeamID: "T1", UserID: testOwner, ChannelID: "CGENERAL", ThreadTS: "1.1", InstanceType: fal.Type1xH100,
		SSHKey: testKey, Lifetime: time.Hour, State: domain.StateApproved,
	}
	if err := e.store.CreateRequest(ctx, &r); err != nil {
		e.t.Fatal(err)
	}
	for _, to := range []domain.State{domain.StateCreating, domain.StateProvisioning, domain.StateDeleting} {
		if _, err := e.store.Move(ctx, r.ID, to, "test", "", func(u *domain.Request) error { u.InstanceID = instanceID; return nil }); err != nil {
			e.t.Fatal(err)
		}
	}
	return e.get(r.ID)
}

// While fal hangs, passes add no work for a request that has some queued or running;
// once fal answers, each machine gets one DELETE.
func TestSlowFalBoundsWorkAndDeletesOnce(t *testing.T) {
	e := newEnv(t)
	const machines, passes = 40, 10
	for i := range machines {
		e.deletingRequest(fmt.Sprintf("inst_slow%02d", i))
	}
	e.sim.InjectNext("delete", machines, falsim.Fault{Hang: time.Second})
	for range passes {
		if err := e.h.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(e.config.PollInterval)
	}
	if n := backgroundWork(t); n > machines {
		t.Errorf("%d pieces of background work for %d requests after %d passes while fal hangs; want at most one each", n, machines, passes)
	}
	e.idle()
	if got := e.sim.Counters().Calls["delete"]; got != machines {
		t.Errorf("%d DELETE calls for %d machines, want one each", got, machines)
	}
	if ids := e.listed(); len(ids) != 0 {
		t.Errorf("fal still runs %v", ids)
	}
}

// With fal's list failing, a pass still reminds owners and posts what Slack did not
// take before, and says that the list failed.
func TestRemindersAndStalledPostsContinueWhileFalIsDown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ready := e.readyMachine()
	waiting := domain.Request{
		TeamID: "T1", UserID: testOwner, CommandChannel: "CGENERAL", InstanceType: fal.Type8xH100,
		SSHKey: testKey, Lifetime: time.Hour, State: domain.StateAwaitingApproval,
	}
	if err := e.store.CreateRequest(ctx, &waiting); err != nil { // as if Slack refused its posts
		t.Fatal(err)
	}
	e.sim.InjectNext("list", 1000, falsim.Fault{Status: http.StatusInternalServerError})
	e.clock.Advance(ready.ExpiresAt.Sub(e.clock.Now()) - e.config.ReminderBefore + time.Minute)
	for range 3 {
		if err := e.tick(); err == nil || !strings.Contains(err.Error(), "list instances") {
			t.Errorf("pass error: %v, want fal's list failure", err)
		}
		e.clock.Advance(e.config.PollInterval)
	}
	if len(e.slack.said("CGENERAL", "Need it longer?")) != 1 {
		t.Errorf("no reminder while fal's list fails: %v", e.slack.all())
	}
	if len(e.slack.said("CAPPROVALS", "8x")) != 1 {
		t.Errorf("the approval card was not posted while fal's list fails: %v", e.slack.all())
	}
}

// Failed deletes are counted with the request: the admins hear after the third, however
// often gpubot restarted in between.
func TestDeleteFailuresCountAcrossRestarts(t *testing.T) {
	e := newEnv(t)
	r := e.deletingRequest("inst_stuck")
	e.sim.InjectNext("delete", 1000, falsim.Fault{Status: http.StatusInternalServerError})
	for range deleteAlertAfter {
		e.restart()
		if err := e.tick(); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(e.config.PollInterval)
	}
	if len(e.slack.said("D"+testAdmin, "I can't delete fal instance `inst_stuck`")) != 1 {
		t.Errorf("no alert after %d failed deletes across restarts: %v", deleteAlertAfter, e.slack.all())
	}
	if got := e.get(r.ID); got.State != domain.StateDeleting {
		t.Errorf("request is %s, want deleting", got.State)
	}
}

// Sightings of an instance gpubot did not make are counted in the store: the admins
// hear of it after the passes it takes, however often gpubot restarted in between.
func TestOrphanSightingsCountAcrossRestarts(t *testing.T) {
	e := newEnv(t)
	e.sim.AddInstance(fal.Instance{ID: "inst_stranger", InstanceType: fal.Type8xH100, Status: fal.StatusReady})
	for range orphanPassesBeforeReport {
		e.restart()
		if err := e.tick(); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(e.config.PollInterval)
	}
	if len(e.slack.said("D"+testAdmin, "inst_stranger")) != 1 {
		t.Errorf("the admins were not told of the unknown instance after %d passes across restarts: %v", orphanPassesBeforeReport, e.slack.all())
	}
	for range 3 {
		e.restart()
		if err := e.tick(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.slack.said("D"+testAdmin, "inst_stranger")); n != 1 {
		t.Errorf("the admins were told %d times, want once", n)
	}
}
