package bot_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
)

// readyMachine asks for a 1x for lifetime as alice and waits until it is ready.
func (h *harness) readyMachine(lifetime string) domain.Request {
	h.t.Helper()
	h.registerKey(alice)
	h.command(alice, general, "create 1x for "+lifetime)
	h.waitFor(general, "<@UALICE> your 1x H100 is ready")
	return h.onlyRequest(alice)
}

func TestLifetimeStartsAtReadyThenRemindsThenExpires(t *testing.T) {
	h := start(t)
	r := h.readyMachine("1h")
	if got := r.ExpiresAt.Sub(r.ReadyAt); got != time.Hour {
		t.Fatalf("lifetime counted from ready = %v, want 1h", got)
	}
	if r.ReadyAt.Before(r.CreatedAt) {
		t.Fatal("ready before requested")
	}

	h.clock.Advance(31 * time.Minute)
	reminder := h.waitFor(general, "<@UALICE> your 1x H100", "Need it longer?")
	if got := strings.Join(reminder.Buttons(), ","); got != "Extend 8h,Delete now" {
		t.Fatalf("reminder buttons = %q", got)
	}
	h.clock.Advance(30 * time.Minute)
	h.waitFor(general, "<@UALICE> Expired and deleted; it ran for 1h1m. Cost: about $2.54.")
	h.eventually("the instance deleted at fal", func() bool { return len(h.fal.Instances()) == 0 })
	if got := h.onlyRequest(alice).State; got != domain.StateExpired {
		t.Fatalf("state = %s, want expired", got)
	}
	if n := h.count(general, "Need it longer?"); n != 1 {
		t.Fatalf("%d reminders, want 1", n)
	}
}

func TestReminderButtons(t *testing.T) {
	h := start(t)
	r := h.readyMachine("1h")
	h.clock.Advance(45 * time.Minute)
	reminder := h.waitFor(general, "Need it longer?")
	h.click(mallory, reminder, "Extend 8h")
	h.waitFor(general, "only they or an admin can change it")
	h.click(alice, reminder, "Extend 8h")
	h.waitFor(general, "Extended by 8h by <@UALICE>")
	if got := h.onlyRequest(alice).ExpiresAt.Sub(r.ExpiresAt); got != 8*time.Hour {
		t.Fatalf("Extend moved the expiry by %v, want 8h", got)
	}
	h.click(alice, reminder, "Delete now")
	h.waitFor(general, "Deleted by <@UALICE>")
	if c := h.fal.Counters(); c.Deletes != 1 {
		t.Fatalf("deletes = %d", c.Deletes)
	}
}

func TestFailedExpiryDeleteIsRetriedAndAdminsTold(t *testing.T) {
	h := start(t)
	h.readyMachine("1h")
	// fal refuses the delete on three passes in a row (each a call the client could not fix by retrying).
	h.fal.InjectNext("delete", 3, falsim.Fault{Status: 400})
	h.clock.Advance(61 * time.Minute)
	h.waitFor(h.slack.DMChannel(admin), "I can't delete fal instance", "costing money")
	h.waitFor(general, "Expired and deleted")
	if len(h.fal.Instances()) != 0 {
		t.Fatal("instance still at fal")
	}
}

func TestVanishedInstanceEndsTheThread(t *testing.T) {
	h := start(t)
	r := h.readyMachine("4h")
	h.fal.Remove(r.InstanceID)
	h.waitFor(general, "Gone: fal no longer lists it; it ran for", "deleted outside gpubot")
	if got := h.onlyRequest(alice).State; got != domain.StateGone {
		t.Fatalf("state = %s, want gone", got)
	}
}

func TestStoppedInstanceTellsTheOwnerOnce(t *testing.T) {
	h := start(t)
	r := h.readyMachine("4h")
	if err := h.fal.SetStatus(r.InstanceID, fal.StatusStopped); err != nil {
		t.Fatal(err)
	}
	h.waitFor(general, "fal reports `"+r.InstanceID+"` as *stopped*")
	h.passes(5)
	if n := h.count(general, "as *stopped*"); n != 1 {
		t.Fatalf("%d stopped notices, want 1", n)
	}
}

func TestOrphanInstanceReportedToAdminsOnce(t *testing.T) {
	h := start(t)
	h.fal.AddInstance(fal.Instance{ID: "inst_outside", InstanceType: "gpu_8x_h100_sxm5", Region: "us-east", Status: fal.StatusReady, IP: "198.51.100.7"})
	h.readyMachine("4h") // tracking lists fal on every pass
	h.waitFor(h.slack.DMChannel(admin), "fal lists instance `inst_outside` (8x H100, ready, 198.51.100.7) that gpubot did not create")
	h.passes(5)
	if n := h.count(h.slack.DMChannel(admin), "inst_outside"); n != 1 {
		t.Fatalf("%d orphan alerts, want 1", n)
	}
}

// One List call per pass serves every tracked instance, however many; nothing is
// called while nothing is tracked.
func TestTrackingCostsOneListPerPass(t *testing.T) {
	const n = 1000
	h := start(t, withConfig(func(c *config.Config) { c.PollInterval = time.Hour; c.Admins = nil }),
		withFal(func(o *falsim.Options) { o.Manual = true; o.PageSize = 1000 }))
	ctx := untilDeadline(t) // a thousand requests written under the race detector on a busy machine take a while
	for range 3 {
		if err := h.app.Handlers().Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if c := h.fal.Counters(); len(c.Calls) != 0 && c.Calls["list"]+c.Calls["get"] != 0 {
		t.Fatalf("calls with nothing tracked: %+v", c.Calls)
	}
	store := h.app.Store()
	for i := range n {
		id := fmt.Sprintf("inst_%04d", i)
		h.fal.AddInstance(fal.Instance{ID: id, InstanceType: "gpu_1x_h100_sxm5", Region: "us-west", Status: fal.StatusProvisioning})
		r := domain.Request{TeamID: "T0GPUBOT", UserID: alice, InstanceType: "gpu_1x_h100_sxm5", Lifetime: time.Hour, State: domain.StateApproved}
		if err := store.CreateRequest(ctx, &r); err != nil {
			t.Fatal(err)
		}
		for _, to := range []domain.State{domain.StateCreating, domain.StateProvisioning} {
			if _, err := store.Move(ctx, r.ID, to, "test", "", func(u *domain.Request) error { u.InstanceID = id; return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := h.fal.Counters().Calls
	if err := h.app.Handlers().Tick(ctx); err != nil {
		t.Fatal(err)
	}
	after := h.fal.Counters().Calls
	if got := after["list"] - before["list"]; got != 1 {
		t.Fatalf("%d list calls in one pass over %d instances, want 1", got, n)
	}
	if got := after["get"] - before["get"]; got != 0 {
		t.Fatalf("%d get calls, want 0", got)
	}
	for i := range n {
		if err := h.fal.SetStatus(fmt.Sprintf("inst_%04d", i), fal.StatusReady); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.app.Handlers().Tick(ctx); err != nil {
		t.Fatal(err)
	}
	unfinished, err := store.Unfinished(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range unfinished {
		if r.State != domain.StateReady || r.ExpiresAt.IsZero() {
			t.Fatalf("request %s is %s after fal said ready", r.ID, r.State)
		}
	}
	if got := h.fal.Counters().Calls["list"] - after["list"]; got != 1 {
		t.Fatalf("%d list calls in the second pass, want 1", got)
	}
}

// With nothing to track, gpubot lists fal only to look for machines it did not make:
// a few passes to be sure of one, then once per sweep interval, not every pass.
func TestOrphanSweepWithNothingTracked(t *testing.T) {
	h := start(t, notStarted())
	// There before gpubot starts, so its first sweep sees it: a sweep that ran just
	// before it appeared would put the next one ten (simulated) minutes away.
	h.fal.AddInstance(fal.Instance{ID: "inst_stray", InstanceType: "gpu_1x_h100_sxm5", Region: "us-west", Status: fal.StatusReady})
	h.startBot()
	h.waitFor(h.slack.DMChannel(admin), "fal lists instance `inst_stray`", "gpubot first saw it")
	lists := h.fal.Counters().Calls["list"]
	h.passes(10)
	if got := h.fal.Counters().Calls["list"]; got != lists {
		t.Fatalf("%d list calls while nothing is tracked and the stray was reported, want 0", got-lists)
	}
	h.clock.Advance(11 * time.Minute)
	h.eventually("the next sweep", func() bool { return h.fal.Counters().Calls["list"] > lists })
	h.passes(5)
	if n := h.count(h.slack.DMChannel(admin), "inst_stray"); n != 1 {
		t.Fatalf("%d reports of the stray, want 1", n)
	}
}

// fal reporting "unknown" for a moment is normal; for longer than the grace period the
// owner is told, once.
func TestUnknownForLongTellsTheOwner(t *testing.T) {
	h := start(t)
	r := h.readyMachine("4h")
	if err := h.fal.SetStatus(r.InstanceID, fal.StatusUnknown); err != nil {
		t.Fatal(err)
	}
	h.waitFor(general, "Status: unknown.")
	h.passes(3) // within the grace period
	if n := h.count(general, "as *unknown* for"); n != 0 {
		t.Fatal("told before the grace period ended")
	}
	h.clock.Advance(11 * time.Minute)
	h.waitFor(general, "fal has reported `"+r.InstanceID+"` as *unknown* for")
	h.passes(3)
	if n := h.count(general, "as *unknown* for"); n != 1 {
		t.Fatalf("%d notices, want 1", n)
	}
}
