package fal_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
)

func newBenchClient(b *testing.B, sim *falsim.Server) *fal.Client {
	b.Helper()
	c, err := fal.New(fal.Config{BaseURL: sim.URL(), APIKey: apiKey, Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkCreate measures one create round trip over loopback: the
// client's encoding, resty, net/http and falsim's handling.
func BenchmarkCreate(b *testing.B) {
	sim := falsim.New(falsim.Options{APIKey: apiKey, Manual: true})
	defer sim.Close()
	c := newBenchClient(b, sim)
	req := fal.CreateRequest{InstanceType: fal.Type8xH100, SSHKey: sshKey, Sector: fal.Sector1}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := c.Create(ctx, req, "bench-"+strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateParallel is BenchmarkCreate from many goroutines sharing
// one client, as the bot's workers do.
func BenchmarkCreateParallel(b *testing.B) {
	sim := falsim.New(falsim.Options{APIKey: apiKey, Manual: true})
	defer sim.Close()
	c := newBenchClient(b, sim)
	req := fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := "bench-" + strconv.FormatInt(next.Add(1), 10)
			if _, err := c.Create(context.Background(), req, key); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkList measures listing 250 instances in pages of 100.
func BenchmarkList(b *testing.B) {
	sim := falsim.New(falsim.Options{APIKey: apiKey, Manual: true})
	defer sim.Close()
	for range 250 {
		sim.AddInstance(fal.Instance{})
	}
	c := newBenchClient(b, sim)
	b.ReportAllocs()
	for b.Loop() {
		if got, err := c.List(context.Background()); err != nil || len(got) != 250 {
			b.Fatalf("list: %d, %v", len(got), err)
		}
	}
}
