package handlers

import (
	"context"
	"testing"

	"github.com/gpubot/gpubot/fal"
)

// TestStopDuringAPassLosesNoReadyNotice stops gpubot in the middle of the step that
// moves a machine to ready (as the thread root is edited): the ready notice that step
// records is posted all the same, and once, even after a restart and another pass.
func TestStopDuringAPassLosesNoReadyNotice(t *testing.T) {
	e := newEnv(t)
	e.config.NotifyChannel = "CNOTIFY"
	e.restart()
	r := e.request()
	if err := e.sim.SetStatus(r.InstanceID, fal.StatusReady); err != nil {
		t.Fatal(err)
	}
	pass, stop := context.WithCancel(context.Background())
	e.slack.setBeforeUpdate(stop)
	_ = e.h.Tick(pass)
	e.idle()
	e.slack.setBeforeUpdate(nil)
	if pass.Err() == nil {
		t.Fatal("the pass never edited the thread root, so the stop never came")
	}
	check := func(when string) {
		t.Helper()
		if n := len(e.slack.said("CNOTIFY", "is ready")); n != 1 {
			t.Errorf("%s: %d ready notices, want 1", when, n)
		}
		if n := len(e.slack.said(r.CommandChannel, "is ready :tada:")); n != 1 {
			t.Errorf("%s: %d ready replies in the thread, want 1", when, n)
		}
	}
	check("after the stopped pass")
	e.restart()
	if err := e.tick(); err != nil {
		t.Fatal(err)
	}
	check("after a restart and a pass")
}
