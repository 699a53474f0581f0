package bot_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/bot/config"
	"github.com/gpubot/gpubot/fal/falsim"
)

// BenchmarkAckLatency sends bursts of `/gpu create 1x` at once while fal takes 2 s
// per create, and reports the time from envelope sent to ack received (p50, p99), and
// the bot's own share from its ack histogram (bot-p99, a bucket bound): the slow work
// must happen after the ack. Each request is committed to the store before its ack.
func BenchmarkAckLatency(b *testing.B) {
	for _, burst := range []int{1, 50, 500} {
		b.Run(fmt.Sprintf("burst=%d", burst), func(b *testing.B) { benchmarkAckLatency(b, burst) })
	}
}

func benchmarkAckLatency(b *testing.B, burst int) {
	h := start(b, withFal(func(o *falsim.Options) { o.CreateDelay = 2 * time.Second; o.Manual = true }),
		withConfig(func(c *config.Config) { c.PollInterval = time.Hour }))
	h.registerKey(alice)
	var latencies []time.Duration
	b.ResetTimer()
	for range b.N {
		ids := make([]string, burst)
		for i := range ids {
			id, err := h.slack.SendSlashCommand(alice, general, "/gpu", "create 1x bench")
			if err != nil {
				b.Fatal(err)
			}
			ids[i] = id
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				ack, err := h.slack.AwaitAck(ctx, id)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				latencies = append(latencies, ack.Latency)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
	// The bot's own share, from envelope decoded to ack queued, as its histogram reports it.
	b.ReportMetric(histogramQuantile(b, h, 0.99)*1000, "bot-p99-ms")
	if late := h.slack.LateAcks(); len(late) > 0 {
		b.Fatalf("%d envelopes acked after 3 s", len(late))
	}
}

// histogramQuantile is the upper bound of the bucket holding quantile q of the bot's
// ack latency histogram, in seconds.
func histogramQuantile(tb testing.TB, h *harness, q float64) float64 {
	families, err := h.bot.Metrics().Registry.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "gpubot_ack_latency_seconds" {
			continue
		}
		hist := f.GetMetric()[0].GetHistogram()
		want := q * float64(hist.GetSampleCount())
		for _, bucket := range hist.GetBucket() {
			if float64(bucket.GetCumulativeCount()) >= want {
				return bucket.GetUpperBound()
			}
		}
	}
	return math.Inf(1)
}
