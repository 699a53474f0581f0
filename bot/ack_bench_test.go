package bot_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/etcdtest"
)

// burstMix is what arrives at once: `/gpu help` and `/gpu create 1x` by distinct users.
type burstMix struct {
	name           string
	helps, creates int
	// lone sends the commands one at a time, each after the previous one's ack and
	// once the slow work it started is under way.
	lone bool
}

// BenchmarkAckLatency measures, in the same run and on the same simulated Slack,
// gpubot's ack latency (envelope sent to ack received) against its floor: a bare
// slack-go Socket Mode bot that acks every command at once with a short text and,
// for each create, posts one thread root after the ack. Rounds alternate between the
// two. It reports both bots' p50 and p99 and gpubot's as a ratio to the floor's.
// fal takes 2 s per create, and each create is committed to the store before its ack.
//
//	go test -run '^$' -bench BenchmarkAckLatency -benchtime 5x ./bot
func BenchmarkAckLatency(b *testing.B) {
	for _, mix := range []burstMix{
		{name: "one-help", helps: 20, lone: true},
		{name: "one-create", creates: 20, lone: true},
		{name: "250", helps: 200, creates: 50},
		{name: "500", helps: 400, creates: 100},
	} {
		b.Run(mix.name, func(b *testing.B) { benchmarkAckLatency(b, mix) })
	}
}

func benchmarkAckLatency(b *testing.B, mix burstMix) {
	users := benchUsers(mix.helps + mix.creates)
	gpubot := startGpubotTarget(b, mix, users, nil)
	floor := startFloorBot(b, users)
	onFloor, onGpubot := alternateRounds(b, mix, users, floor, gpubot)
	reportAgainst(b, "", onGpubot, "floor-", onFloor)
}

// BenchmarkAckLatencyOnEtcd measures, in the same run and alternating round by
// round, gpubot's ack latency on its bbolt file and on one local etcd member
// (ETCD_ENDPOINTS), each on its own simulated Slack and fal. Both fsync every
// commit a create makes before its ack. It reports each store's p50 and p99 and
// etcd's as a ratio to bbolt's.
//
//	go test -run '^$' -bench BenchmarkAckLatencyOnEtcd -benchtime 5x ./bot
func BenchmarkAckLatencyOnEtcd(b *testing.B) {
	for _, mix := range []burstMix{
		{name: "one-create", creates: 20, lone: true},
		{name: "250", helps: 200, creates: 50},
	} {
		b.Run(mix.name, func(b *testing.B) {
			users := benchUsers(mix.helps + mix.creates)
			onBbolt := startGpubotTarget(b, mix, users, nil)
			etcd := etcdtest.StartWith(b, 1, etcdtest.Options{Fsync: true})
			onEtcd := startGpubotTarget(b, mix, users, func(c *config.Config) {
				c.Etcd = config.Etcd{Endpoints: etcd.Endpoints(), Prefix: "/gpubot/"}
				c.LeaderTTL = 10 * time.Second
			})
			bboltLatencies, etcdLatencies := alternateRounds(b, mix, users, onBbolt, onEtcd)
			reportAgainst(b, "etcd-", etcdLatencies, "bbolt-", bboltLatencies)
		})
	}
}

// startGpubotTarget starts gpubot for the ack benchmarks: fal takes 2 s per
// create, and nothing polls during a round. store, if not nil, changes where
// gpubot keeps its state.
func startGpubotTarget(b *testing.B, mix burstMix, users []string, store func(*config.Config)) *ackTarget {
	h := start(b,
		withFal(func(o *falsim.Options) { o.CreateDelay = 2 * time.Second; o.Manual = true }),
		withConfig(func(c *config.Config) {
			c.PollInterval = time.Hour
			c.LogLevel = "info"
			if store != nil {
				store(c)
			}
		}),
		withUsers(users...))
	for i, u := range users {
		if creator(mix, i) {
			h.registerKey(u)
		}
	}
	return &ackTarget{sim: h.slack,
		started: func(ctx context.Context, creates int) error {
			return h.slack.WaitUntil(ctx, func() bool { return h.fal.Counters().CreateCalls >= creates })
		},
		settled: func(ctx context.Context, creates int) error { return gpubotSettled(ctx, h, creates) },
	}
}

// alternateRounds runs b.N rounds on each of base and measured, alternating which
// goes first, so neither always runs on a warmer machine, and returns each one's
// ack latencies.
func alternateRounds(b *testing.B, mix burstMix, users []string, base, measured *ackTarget) (onBase, onMeasured []time.Duration) {
	creates := 0
	b.ResetTimer()
	for round := range b.N {
		first, second := base, measured
		if round%2 == 1 {
			first, second = measured, base
		}
		creates += mix.creates
		for _, target := range []*ackTarget{first, second} {
			latencies := target.round(b, mix, users, creates)
			if target == measured {
				onMeasured = append(onMeasured, latencies...)
			} else {
				onBase = append(onBase, latencies...)
			}
		}
	}
	b.StopTimer()
	for _, target := range []*ackTarget{base, measured} {
		if late := target.sim.LateAcks(); len(late) > 0 {
			b.Fatalf("%d envelopes acked after 3 s", len(late))
		}
	}
	return onBase, onMeasured
}

// reportAgainst reports the p50 and p99 of measured and of base, each under its
// prefix, and measured's as a ratio to base's.
func reportAgainst(b *testing.B, measuredPrefix string, measured []time.Duration, basePrefix string, base []time.Duration) {
	p50, p99 := percentileMS(measured, 0.50), percentileMS(measured, 0.99)
	base50, base99 := percentileMS(base, 0.50), percentileMS(base, 0.99)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(p50, measuredPrefix+"p50-ms")
	b.ReportMetric(p99, measuredPrefix+"p99-ms")
	b.ReportMetric(base50, basePrefix+"p50-ms")
	b.ReportMetric(base99, basePrefix+"p99-ms")
	b.ReportMetric(p50/base50, "p50-ratio")
	b.ReportMetric(p99/base99, "p99-ratio")
}

// creator says whether the burst's person i asks for a machine: creates spread
// through the burst, as they would come in real life.
func creator(mix burstMix, i int) bool {
	if mix.creates == 0 {
		return false
	}
	every := (mix.helps + mix.creates) / mix.creates
	return i%every == 0 && i/every < mix.creates
}

// benchUsers are distinct people, so no burst queues behind one person's requests.
func benchUsers(n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("UBENCH%04d", i)
	}
	return users
}

// ackTarget is a bot under measurement: the simulated Slack it is connected to, and
// how to tell that the work a round started (posts, fal calls) is done.
type ackTarget struct {
	sim *slacksim.Server
	// started waits until the bot has begun the slow work of the first creates (its
	// fal call is under way); settled until that work is done.
	started, settled func(ctx context.Context, creates int) error
}

// round sends one burst (or, lone, one command at a time) and returns every ack's
// latency. It waits for the round's after-ack work to finish, so the next round
// starts on a quiet machine. creates counts every create sent so far, this round's too.
func (t *ackTarget) round(b *testing.B, mix burstMix, users []string, creates int) []time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if mix.lone {
		return t.loneRound(ctx, b, mix, users, creates)
	}
	var ids []string
	for i, u := range users {
		text := "help"
		if creator(mix, i) {
			text = "create 1x bench"
		}
		ids = append(ids, t.send(b, u, text))
	}
	latencies := t.acks(ctx, b, ids)
	if err := t.settled(ctx, creates); err != nil {
		b.Fatal(err)
	}
	return latencies
}

func (t *ackTarget) loneRound(ctx context.Context, b *testing.B, mix burstMix, users []string, creates int) []time.Duration {
	var latencies []time.Duration
	sent := creates - mix.creates
	for i, u := range users {
		text := "help"
		if creator(mix, i) {
			text = "create 1x bench"
			sent++
		}
		latencies = append(latencies, t.acks(ctx, b, []string{t.send(b, u, text)})...)
		if err := t.started(ctx, sent); err != nil {
			b.Fatal(err)
		}
	}
	if err := t.settled(ctx, creates); err != nil {
		b.Fatal(err)
	}
	return latencies
}

func (t *ackTarget) send(b *testing.B, user, text string) string {
	id, err := t.sim.SendSlashCommand(user, general, "/gpu", text)
	if err != nil {
		b.Fatal(err)
	}
	return id
}

// acks waits for each envelope's ack in turn: one waiter, not one per envelope, so
// the measurement itself adds little work to the burst it measures.
func (t *ackTarget) acks(ctx context.Context, b *testing.B, ids []string) []time.Duration {
	latencies := make([]time.Duration, 0, len(ids))
	for _, id := range ids {
		ack, err := t.sim.AwaitAck(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		latencies = append(latencies, ack.Latency)
	}
	return latencies
}

// gpubotSettled waits until fal has answered every create so far and gpubot has
// told each thread so: after that it only waits for the next command.
func gpubotSettled(ctx context.Context, h *harness, creates int) error {
	err := h.slack.WaitUntil(ctx, func() bool {
		return h.fal.Counters().Creates >= creates && h.count(general, "fal accepted it") >= creates
	})
	if err != nil {
		return fmt.Errorf("gpubot did not finish %d creates: %w", creates, err)
	}
	return nil
}

func percentileMS(latencies []time.Duration, p float64) float64 {
	if len(latencies) == 0 {
		return 0
	}
	sorted := slices.Clone(latencies)
	slices.Sort(sorted)
	return float64(sorted[int(p*float64(len(sorted)-1))]) / float64(time.Millisecond)
}

// floorBot is the least a Socket Mode bot can do for these commands, built on the
// same slack-go client gpubot uses: ack at once with a short text, and post a
// create's thread root after the ack.
type floorBot struct {
	ackTarget
	posted sync.WaitGroup
}

func startFloorBot(b *testing.B, users []string) *ackTarget {
	sim := slacksim.New(slacksim.Options{BotToken: botToken, AppToken: appToken})
	b.Cleanup(sim.Close)
	for _, u := range users {
		sim.AddUser(u, strings.ToLower(u))
	}
	sim.AddChannel(general, "general", true)

	api := slack.New(botToken, slack.OptionAppLevelToken(appToken), slack.OptionAPIURL(sim.APIURL()))
	client := socketmode.New(api)
	ctx, cancel := context.WithCancel(context.Background())
	f := &floorBot{ackTarget: ackTarget{sim: sim}}
	f.settled = func(ctx context.Context, creates int) error {
		return sim.WaitUntil(ctx, func() bool { return sim.CallCount("chat.postMessage") >= creates })
	}
	f.started = f.settled
	var running sync.WaitGroup
	running.Go(func() { _ = client.RunContext(ctx) })
	running.Go(func() { f.serve(ctx, api, client) })
	b.Cleanup(func() {
		cancel()
		running.Wait()
		f.posted.Wait()
	})
	waitCtx, cancelWait := context.WithTimeout(context.Background(), wait)
	defer cancelWait()
	if err := sim.WaitConnected(waitCtx); err != nil {
		b.Fatalf("floor bot did not connect: %v", err)
	}
	return &f.ackTarget
}

func (f *floorBot) serve(ctx context.Context, api *slack.Client, client *socketmode.Client) {
	for {
		select {
		case <-ctx.Done():
			return
		case evt := <-client.Events:
			cmd, ok := evt.Data.(slack.SlashCommand)
			if evt.Type != socketmode.EventTypeSlashCommand || !ok || evt.Request == nil {
				continue
			}
			_ = client.Ack(*evt.Request, map[string]string{"response_type": "ephemeral", "text": "Got it."})
			if strings.HasPrefix(cmd.Text, "create") {
				f.posted.Go(func() {
					_, _, _ = api.PostMessageContext(ctx, cmd.ChannelID, slack.MsgOptionText("Request by <@"+cmd.UserID+">: "+cmd.Text, false))
				})
			}
		}
	}
}
