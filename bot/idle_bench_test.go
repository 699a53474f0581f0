package bot_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/storage"
)

// BenchmarkIdle runs gpubot with 1,000 ready machines to follow and nothing else to
// do, at the default POLL_INTERVAL (10 s), and reports, as shares of one core, the CPU
// used between two tracking passes and over a whole interval with its pass; the Go
// heap after a collection; and the resident memory. CPU and memory are those of the
// whole test process (gpubot, the simulated Slack and fal serving it, the test itself):
// upper bounds for gpubot's own.
//
//	go test -run '^$' -bench BenchmarkIdle -benchtime 1x ./bot
func BenchmarkIdle(b *testing.B) {
	const poll = 10 * time.Second
	h := start(b, notStarted(), withConfig(func(c *config.Config) { c.PollInterval = poll; c.LogLevel = "info" }))
	fillStore(b, h.cfg.DBPath, 0, 1_000, func(id string) string {
		inst := fal.Instance{ID: "inst_" + id[:8], InstanceType: fal.Type1xH100, IP: "10.0.0.1", Status: fal.StatusReady}
		h.fal.AddInstance(inst)
		return inst.ID
	})
	h.startBot()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(2*b.N+3)*poll)
	defer cancel()
	// The first pass after the start decodes every live request; wait for it and for
	// the next, then measure one whole interval from that pass on.
	if err := waitFalLists(ctx, h, 2); err != nil {
		b.Fatal(err)
	}
	var quiet, quietWall, whole, wholeWall time.Duration
	b.ResetTimer()
	for range b.N {
		// One whole interval, from the end of a pass to the end of the next...
		cpuBefore, wallBefore := processCPU(b), time.Now()
		lists := h.fal.Counters().Calls["list"]
		if err := waitFalLists(ctx, h, lists+1); err != nil {
			b.Fatal(err)
		}
		whole += processCPU(b) - cpuBefore
		wholeWall += time.Since(wallBefore)
		// ...and the quiet between two passes: from a second after one (the pass and
		// the gauges done) to a second before the next.
		time.Sleep(time.Second)
		cpuBefore, wallBefore = processCPU(b), time.Now()
		time.Sleep(poll - 2*time.Second)
		quiet += processCPU(b) - cpuBefore
		quietWall += time.Since(wallBefore)
	}
	b.StopTimer()
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(100*float64(quiet)/float64(quietWall), "cpu-%-between-polls")
	b.ReportMetric(100*float64(whole)/float64(wholeWall), "cpu-%-with-poll")
	b.ReportMetric(float64(mem.HeapInuse)/(1<<20), "heap-MB")
	b.ReportMetric(residentMB(b), "process-rss-MB")
	if live, err := h.app.Store().Unfinished(context.Background()); err != nil || len(live) != 1_000 {
		b.Fatalf("%d live requests (%v), want the 1,000 still followed", len(live), err)
	}
}

// BenchmarkStartToConnected is the time from starting gpubot on a store holding
// 100,000 requests (99,000 over, 1,000 awaiting approval) to its Socket Mode link
// being up.
//
//	go test -run '^$' -bench BenchmarkStartToConnected -benchtime 5x ./bot
func BenchmarkStartToConnected(b *testing.B) {
	h := start(b, notStarted(), withConfig(func(c *config.Config) { c.PollInterval = time.Hour; c.LogLevel = "info" }))
	fillStore(b, h.cfg.DBPath, 99_000, 1_000, nil)
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		connections := h.slack.TotalConnections()
		began := time.Now()
		h.startBot()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := h.slack.WaitUntil(ctx, func() bool { return h.slack.TotalConnections() > connections })
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(began)
		b.StopTimer()
		h.stopBot()
		b.StartTimer()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(total)/float64(b.N)/float64(time.Millisecond), "ms-to-connected")
}

// fillStore writes requests into the store file before gpubot opens it: finished ones
// (cancelled), and live ones, which are ready machines when instance gives each its fal
// instance id, else requests awaiting approval. Many writers at once let the store
// commit them together.
func fillStore(b *testing.B, path string, finished, live int, instance func(requestID string) string) {
	b.Helper()
	store, err := storage.Open(path, storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			b.Fatal(err)
		}
	}()
	const writers = 500
	ctx := context.Background()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var first error
	for w := range writers {
		wg.Go(func() {
			for i := w; i < finished+live; i += writers {
				if err := fillOne(ctx, store, i, i >= finished, instance); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		b.Fatalf("fill store: %v", first)
	}
}

func fillOne(ctx context.Context, store domain.Store, i int, live bool, instance func(string) string) error {
	r := domain.Request{TeamID: "T0GPUBOT", UserID: fmt.Sprintf("UFILL%03d", i%300), CommandChannel: general, ChannelID: general,
		InstanceType: fal.Type1xH100, Lifetime: 72 * time.Hour, State: domain.StateApproved, SSHKey: "ssh-ed25519 AAAA fill",
		ThreadTS: "1700000000.000100"}
	if live && instance == nil {
		r.State = domain.StateAwaitingApproval
		r.ApprovalChannel, r.ApprovalTS = approvals, "1700000000.000200"
	}
	if err := store.CreateRequest(ctx, &r); err != nil {
		return err
	}
	if !live {
		_, err := store.Move(ctx, r.ID, domain.StateCancelled, r.UserID, "", nil)
		return err
	}
	if instance == nil {
		return nil
	}
	instanceID := instance(r.ID)
	for _, step := range []struct {
		to   domain.State
		edit func(*domain.Request) error
	}{
		{domain.StateCreating, nil},
		{domain.StateProvisioning, func(u *domain.Request) error {
			u.InstanceID, u.FalStatus, u.IP = instanceID, string(fal.StatusReady), "10.0.0.1"
			return nil
		}},
		{domain.StateReady, nil},
	} {
		if _, err := store.Move(ctx, r.ID, step.to, "gpubot", "", step.edit); err != nil {
			return err
		}
	}
	_, err := store.MarkNotice(ctx, r.ID, "ready")
	return err
}

// waitFalLists waits until fal has answered n list calls: tracking passes.
func waitFalLists(ctx context.Context, h *harness, n int) error {
	for h.fal.Counters().Calls["list"] < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for tracking pass %d: %w", n, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// residentMB is this process's resident set, from /proc.
func residentMB(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "VmRSS:" {
			kb, err := strconv.Atoi(fields[1])
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
