package slacksim

import (
	"testing"
	"time"
)

// BenchmarkSlashCommandAck measures a slash command's round trip through the
// simulator and a real socketmode client that acks at once: the floor under the
// bot's own ack latency.
func BenchmarkSlashCommandAck(b *testing.B) {
	s := newSim(b, Options{})
	startBot(b, s, ackAll)
	ctx := testCtx(b, time.Minute)
	var total time.Duration
	count := 0
	for b.Loop() {
		ack, err := s.SlashCommand(ctx, alice, gpuChannel, "/gpu", "list")
		if err != nil {
			b.Fatal(err)
		}
		total += ack.Latency
		count++
	}
	b.ReportMetric(float64(total.Microseconds())/float64(count), "ack-µs/op")
}

// BenchmarkSlashCommandBurst sends 100 slash commands at once and waits for every
// ack, as many users typing together would.
func BenchmarkSlashCommandBurst(b *testing.B) {
	const burst = 100
	s := newSim(b, Options{})
	startBot(b, s, ackAll)
	ctx := testCtx(b, time.Minute)
	var total time.Duration
	acks := 0
	for b.Loop() {
		ids := make([]string, 0, burst)
		for range burst {
			id, err := s.SendSlashCommand(alice, gpuChannel, "/gpu", "list")
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, id)
		}
		for _, id := range ids {
			ack, err := s.AwaitAck(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			total += ack.Latency
			acks++
		}
	}
	b.ReportMetric(float64(total.Microseconds())/float64(acks), "ack-µs/command")
}

// FuzzParseBlocks feeds arbitrary blocks JSON to the validator: it must answer, not
// panic, and what it accepts must come back as JSON it accepts again.
func FuzzParseBlocks(f *testing.F) {
	for _, seed := range []string{
		`[]`,
		`[{"type":"divider"}]`,
		`[{"type":"section","text":{"type":"mrkdwn","text":"hi"},"accessory":{"type":"button","text":{"type":"plain_text","text":"Go"},"value":"v"}}]`,
		`[{"type":"actions","elements":[{"type":"button","text":{"type":"plain_text","text":"A"}},{"type":"static_select","options":[{"text":{"type":"plain_text","text":"x"},"value":"x"}]}]}]`,
		`[{"type":"input","label":{"type":"plain_text","text":"L"},"element":{"type":"plain_text_input"}}]`,
		`[{"type":"markdown","text":"**bold**"}]`,
		`[{"type":"header","text":{"type":"mrkdwn","text":"bad"}}]`,
		`[{"type":"section"}]`,
		`[null]`,
		`{"type":"section"}`,
		`[{"type":"context","elements":[]}]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		set, err := parseBlocks(raw, messageSurface)
		if err != nil {
			if err.code != "invalid_blocks" {
				t.Fatalf("error code %q", err.code)
			}
			return
		}
		if _, again := parseBlocks(set.raw, messageSurface); again != nil {
			t.Fatalf("normalized blocks %s refused: %v", set.raw, again)
		}
	})
}
