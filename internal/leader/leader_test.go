package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/gpubot/gpubot/handlers"
	"github.com/gpubot/gpubot/internal/config"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/etcdtest"
	"github.com/gpubot/gpubot/internal/testkit"
)

var electionKey = ElectionKey(testPrefix)

// The handlers take the elector as their Leadership.
var _ handlers.Leadership = (*Elector)(nil)

const (
	testPrefix = "/test/"
	// testTTL is the LEADER_TTL of most tests: etcd's shortest lease.
	testTTL = 2 * time.Second
	// settle bounds what takes no configured time (etcd starting, a client
	// connecting, a watch firing) on a busy machine: a bound against hangs,
	// not an expectation.
	settle = 30 * time.Second
)

// term is one lead as its replica's lead function saw it.
type term struct {
	fence domain.Fence
	ctx   context.Context
	ended chan struct{} // closed when lead returned
	// held: when the lead began, etcd held the fence's key at its revision.
	held bool
}

// replica runs an Elector as one gpubot process would.
type replica struct {
	name    string
	stop    context.CancelFunc
	done    chan struct{} // closed when Run returned, with runErr
	terms   chan *term
	runErr  error
	leading atomic.Bool
	log     *testkit.Buffer

	mu      sync.Mutex
	changes []bool // every onChange
}

// startReplica runs an elector on cli; each lead is checked against etcd
// through observer, reported on terms, then handed to work (by default: wait
// until the lead's context ends).
func startReplica(t *testing.T, cli, observer *clientv3.Client, name string, ttl time.Duration, work func(*term)) *replica {
	t.Helper()
	if work == nil {
		work = func(tm *term) { <-tm.ctx.Done() }
	}
	r := &replica{name: name, done: make(chan struct{}), terms: make(chan *term, 64), log: &testkit.Buffer{}}
	log := slog.New(slog.NewJSONHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	elector := New(cli, electionKey, ttl, name, log, func(leading bool) {
		r.leading.Store(leading)
		r.mu.Lock()
		r.changes = append(r.changes, leading)
		r.mu.Unlock()
	})
	ctx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go func() {
		defer close(r.done)
		r.runErr = elector.Run(ctx, func(ctx context.Context) {
			tm := &term{ctx: ctx, ended: make(chan struct{})}
			defer close(tm.ended)
			fence, ok := domain.FenceFrom(ctx)
			if !ok {
				t.Errorf("%s leads with a context that carries no fence", name)
			}
			tm.fence = fence
			tm.held = keyHeld(observer, fence)
			r.terms <- tm
			work(tm)
		})
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-r.done:
		case <-time.After(settle):
			t.Errorf("%s: Run did not return within %s of its context ending", name, settle)
		}
	})
	return r
}

func (r *replica) changeLog() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.changes...)
}

func keyHeld(cli *clientv3.Client, fence domain.Fence) bool {
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	got, err := cli.Get(ctx, fence.Key)
	return err == nil && len(got.Kvs) == 1 && got.Kvs[0].CreateRevision == fence.Revision
}

// nextTerm waits for r's next lead.
func nextTerm(t *testing.T, r *replica, within time.Duration) *term {
	t.Helper()
	select {
	case tm := <-r.terms:
		return tm
	case <-time.After(within):
		t.Fatalf("%s did not lead within %s; its log:\n%s", r.name, within, r.log)
		return nil
	}
}

// firstToLead waits until one of replicas leads.
func firstToLead(t *testing.T, within time.Duration, replicas ...*replica) (*replica, *term) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, r := range replicas {
			select {
			case tm := <-r.terms:
				return r, tm
			default:
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("nobody led within %s", within)
	return nil, nil
}

// waitCandidates waits until n candidates are in the election.
func waitCandidates(t *testing.T, cli *clientv3.Client, n int64) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		got, err := cli.Get(ctx, electionKey+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err == nil && got.Count == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the election did not reach %d candidates within %s (last: %v, %v)", n, settle, got, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fencedPut writes key=value only while fence holds, as a store does with a
// leader's writes.
func fencedPut(t *testing.T, cli *clientv3.Client, fence domain.Fence, key, value string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(fence.Key), "=", fence.Revision)).
		Then(clientv3.OpPut(key, value)).
		Commit()
	if err != nil {
		t.Fatalf("fenced put: %v", err)
	}
	return resp.Succeeded
}

func value(t *testing.T, cli *clientv3.Client, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	got, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(got.Kvs) == 0 {
		return ""
	}
	return string(got.Kvs[0].Value)
}

// leaderName is the value of the candidacy etcd has first: the leader.
func leaderName(t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	got, err := cli.Get(ctx, electionKey+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		t.Fatalf("get the leader: %v", err)
	}
	if len(got.Kvs) == 0 {
		return ""
	}
	return string(got.Kvs[0].Value)
}

// newClient is a replica's client, configured as gpubot configures it.
func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	clientConfig, err := config.Etcd{Endpoints: endpoints}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	clientConfig.Logger = zap.NewNop() // the tests cut it off from etcd on purpose
	cli, err := clientv3.New(clientConfig)
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func TestOneOfTwoReplicasLeads(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t, 1)
	observer := etcd.Client(t)
	a := startReplica(t, newClient(t, etcd.Endpoints()...), observer, "a", testTTL, nil)
	b := startReplica(t, newClient(t, etcd.Endpoints()...), observer, "b", testTTL, nil)

	leader, tm := firstToLead(t, settle, a, b)
	waitCandidates(t, observer, 2) // the other waits in the election now
	other := map[*replica]*replica{a: b, b: a}[leader]
	select {
	case otherTerm := <-other.terms:
		t.Fatalf("both lead: %s with %v and %s with %v", leader.name, tm.fence, other.name, otherTerm.fence)
	default:
	}
	if !tm.held || leaderName(t, observer) != leader.name {
		t.Errorf("%s leads, but etcd's leader is %q (its key held: %v)", leader.name, leaderName(t, observer), tm.held)
	}
	if !leader.leading.Load() || other.leading.Load() {
		t.Errorf("onChange says %s leads: %v, %s leads: %v", leader.name, leader.leading.Load(), other.name, other.leading.Load())
	}
	if !strings.HasPrefix(tm.fence.Key, electionKey+"/") || tm.fence.Revision == 0 {
		t.Errorf("fence %+v is not a key of the election with its revision", tm.fence)
	}
}

func TestStoppingTheLeaderHandsOverAtOnce(t *testing.T) {
	t.Parallel()
	// A long TTL, so a handover that waited for the lease to end would show.
	const ttl = 6 * time.Second
	etcd := etcdtest.Start(t, 1)
	observer := etcd.Client(t)
	a := startReplica(t, newClient(t, etcd.Endpoints()...), observer, "a", ttl, nil)
	aTerm := nextTerm(t, a, settle)
	b := startReplica(t, newClient(t, etcd.Endpoints()...), observer, "b", ttl, nil)
	waitCandidates(t, observer, 2)

	stopped := time.Now()
	a.stop()
	bTerm := nextTerm(t, b, ttl/2)
	handover := time.Since(stopped)
	select {
	case <-aTerm.ended:
	default:
		t.Error("b leads while a's background work still runs")
	}
	select {
	case <-a.done:
		if a.runErr != nil {
			t.Errorf("a's Run = %v after a clean resignation", a.runErr)
		}
	case <-time.After(settle):
		t.Fatal("a's Run did not return")
	}
	if keyHeld(observer, aTerm.fence) {
		t.Error("a's election key outlived its resignation")
	}
	if fencedPut(t, observer, aTerm.fence, "/test/by", "a") || !fencedPut(t, observer, bTerm.fence, "/test/by", "b") {
		t.Error("a's fence still writes, or b's does not")
	}
	if got := a.changeLog(); fmt.Sprint(got) != "[true false]" {
		t.Errorf("a's onChange calls = %v, want [true false]", got)
	}
	for _, want := range []string{`"msg":"leading: this replica does the background work"`, `"msg":"resigning the lead: stopping"`} {
		if !strings.Contains(a.log.String(), want) {
			t.Errorf("a's log lacks %s:\n%s", want, a.log)
		}
	}
	t.Logf("handover after a resigned: %s (TTL %s)", handover, ttl)
}

func TestDeadLeaderIsReplacedWithinTheTTL(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t, 1)
	observer := etcd.Client(t)
	aClient := newClient(t, etcd.Endpoints()...)
	a := startReplica(t, aClient, observer, "a", testTTL, nil)
	aTerm := nextTerm(t, a, settle)
	b := startReplica(t, newClient(t, etcd.Endpoints()...), observer, "b", testTTL, nil)
	waitCandidates(t, observer, 2)

	// The process dies: its keepalives stop, and it resigns nothing.
	died := time.Now()
	_ = aClient.Close()
	// etcd lets a lease go within its TTL of the last keepalive and checks
	// for ended leases twice a second; the second TTL is slack for that and
	// for a busy machine.
	bTerm := nextTerm(t, b, 2*testTTL)
	t.Logf("b leads %s after a died (TTL %s)", time.Since(died), testTTL)
	if !bTerm.held {
		t.Error("b leads without holding its key")
	}
	if fencedPut(t, observer, aTerm.fence, "/test/by", "a") {
		t.Error("the dead leader's fence still writes")
	}
	select {
	case <-aTerm.ctx.Done():
	case <-time.After(settle):
		t.Error("the dead leader's lead context was never cancelled")
	}
}

// TestLeaderPausedPastItsLeaseWritesNothing: a leader stops (SIGSTOP, a long
// GC pause, a frozen network) while it leads; its lease ends, another
// leads; it wakes up still believing it leads and writes with its fence.
// Nothing is written.
func TestLeaderPausedPastItsLeaseWritesNothing(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t, 1)
	observer := etcd.Client(t)
	network := startProxy(t, etcd.Endpoints()[0])
	aClient := newClient(t, network.URL())
	wake := make(chan struct{})
	wrote := make(chan bool, 1)
	a := startReplica(t, aClient, observer, "a", testTTL, func(tm *term) {
		<-wake // paused: it sees neither the time pass nor its context end
		ctx, cancel := context.WithTimeout(context.Background(), settle)
		defer cancel()
		resp, err := aClient.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(tm.fence.Key), "=", tm.fence.Revision)).
			Then(clientv3.OpPut("/test/by", "a, after its pause")).
			Commit()
		if err != nil {
			t.Errorf("a's write after the pause: %v", err)
		}
		select {
		case wrote <- err == nil && resp.Succeeded:
		default: // a later lead, after the one this test is about
		}
	})
	aTerm := nextTerm(t, a, settle)
	if !fencedPut(t, observer, aTerm.fence, "/test/by", "a, leading") {
		t.Fatal("the leader's own fence does not write: the test would prove nothing")
	}

	network.Pause()
	b := startReplica(t, newClient(t, etcd.Endpoints()...), observer, "b", testTTL, nil)
	bTerm := nextTerm(t, b, 2*testTTL+settle)
	if !fencedPut(t, observer, bTerm.fence, "/test/by", "b") {
		t.Fatal("the new leader's fence does not write")
	}
	network.Resume()
	close(wake)
	select {
	case ok := <-wrote:
		if ok {
			t.Error("the deposed leader's fenced write succeeded")
		}
	case <-time.After(settle):
		t.Fatal("the deposed leader never tried to write")
	}
	if got := value(t, observer, "/test/by"); got != "b" {
		t.Errorf("/test/by = %q, want the new leader's %q", got, "b")
	}
	if !b.leading.Load() || leaderName(t, observer) != "b" {
		t.Errorf("after a woke up: b leading %v, etcd's leader %q", b.leading.Load(), leaderName(t, observer))
	}
}

// TestCandidateWhoseKeyVanishedDoesNotLead: the leader's key and a waiting
// candidate's key are deleted at once (by an operator, or a lease that ended
// while the candidate's client had not noticed). The candidate's wait ends,
// but it holds no key: it must enter again rather than lead. The old leader,
// whose key went, stops leading.
func TestCandidateWhoseKeyVanishedDoesNotLead(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t, 1)
	observer := etcd.Client(t)
	a := startReplica(t, newClient(t, etcd.Endpoints()...), observer, "a", testTTL, nil)
	aTerm := nextTerm(t, a, settle)
	b := startReplica(t, newClient(t, etcd.Endpoints()...), observer, "b", testTTL, nil)
	waitCandidates(t, observer, 2)

	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	candidates, err := observer.Get(ctx, electionKey+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var deletes []clientv3.Op
	var bKey string
	for _, kv := range candidates.Kvs {
		deletes = append(deletes, clientv3.OpDelete(string(kv.Key)))
		if string(kv.Value) == "b" {
			bKey = string(kv.Key)
		}
	}
	if _, err := observer.Txn(ctx).Then(deletes...).Commit(); err != nil {
		t.Fatal(err)
	}

	select {
	case <-aTerm.ctx.Done():
		if !errors.Is(context.Cause(aTerm.ctx), errKeyDeleted) {
			t.Errorf("a's lead ended because %v, want its key deleted", context.Cause(aTerm.ctx))
		}
	case <-time.After(settle):
		t.Fatal("a kept leading after its key was deleted")
	}
	// Someone leads again, with a key of a new lease.
	next, again := firstToLead(t, settle, a, b)
	for _, r := range []*replica{a, b} {
		for len(r.terms) > 0 {
			if tm := <-r.terms; !tm.held {
				t.Errorf("%s led with fence %+v, whose key etcd did not hold", r.name, tm.fence)
			}
		}
	}
	if !again.held || again.fence.Key == bKey || again.fence.Key == aTerm.fence.Key {
		t.Errorf("%s leads with %+v (held %v); the vanished keys were %s and %s", next.name, again.fence, again.held, aTerm.fence.Key, bKey)
	}
}

// TestOneLeaderAfterAnEtcdMemberRestarts stops etcd's own leader, the
// member whose loss disturbs leases most (a new raft leader extends them),
// and starts it again.
func TestOneLeaderAfterAnEtcdMemberRestarts(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t, 3)
	observer := etcd.Client(t)
	var replicas []*replica
	for _, name := range []string{"a", "b", "c"} {
		replicas = append(replicas, startReplica(t, newClient(t, etcd.Endpoints()...), observer, name, testTTL, nil))
	}
	firstToLead(t, settle, replicas...)
	waitCandidates(t, observer, 3)

	member := raftLeader(t, observer, etcd.Endpoints())
	began := time.Now()
	etcd.Stop(member)
	etcd.Restart(member)
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	if err := etcd.WaitHealthy(ctx, observer); err != nil {
		t.Fatal(err)
	}
	waitOneLeader(t, observer, replicas)
	t.Logf("etcd member %d (raft leader) stopped and started again; one gpubot leader after %s", member, time.Since(began))
}

// raftLeader is the index of the member etcd's raft elected.
func raftLeader(t *testing.T, cli *clientv3.Client, endpoints []string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	for i, endpoint := range endpoints {
		status, err := cli.Status(ctx, endpoint)
		if err != nil {
			t.Fatalf("status of %s: %v", endpoint, err)
		}
		if status.Header.MemberId == status.Leader {
			return i
		}
	}
	t.Fatal("no member is etcd's leader")
	return -1
}

// waitOneLeader waits until exactly one replica believes it leads, and etcd
// agrees.
func waitOneLeader(t *testing.T, observer *clientv3.Client, replicas []*replica) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		var leading []string
		for _, r := range replicas {
			if r.leading.Load() {
				leading = append(leading, r.name)
			}
		}
		etcdLeader := leaderName(t, observer)
		if len(leading) == 1 && leading[0] == etcdLeader {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas leading: %q; etcd's leader: %q", leading, etcdLeader)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUnreachableEtcdIsRetriedUntilItAnswers(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t, 1)
	observer := etcd.Client(t)
	network := startProxy(t, etcd.Endpoints()[0])
	network.Pause()
	a := startReplica(t, newClient(t, network.URL()), observer, "a", testTTL, nil)

	// Each attempt gives up after a TTL and waits at most another.
	const attempts = 2
	waitLog(t, a, `"msg":"leader election: trying again"`, attempts, attempts*2*testTTL+settle)
	select {
	case <-a.done:
		t.Fatalf("Run gave up while etcd was unreachable: %v", a.runErr)
	default:
	}
	network.Resume()
	if tm := nextTerm(t, a, 2*testTTL+settle); !tm.held {
		t.Errorf("a leads without its key once etcd answers")
	}
}

func TestStoppingWhileEtcdIsUnreachableDoesNotHang(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t, 1)
	observer := etcd.Client(t)
	network := startProxy(t, etcd.Endpoints()[0])
	a := startReplica(t, newClient(t, network.URL()), observer, "a", testTTL, nil)
	aTerm := nextTerm(t, a, settle)
	b := startReplica(t, newClient(t, network.URL()), observer, "b", testTTL, nil)
	waitCandidates(t, observer, 2)

	network.Pause()
	stopped := time.Now()
	a.stop()
	b.stop()
	// Each gives up its resignation after a TTL; the lease then ends alone.
	for _, r := range []*replica{a, b} {
		select {
		case <-r.done:
			t.Logf("%s stopped after %s: %v", r.name, time.Since(stopped), r.runErr)
		case <-time.After(testTTL + settle):
			t.Fatalf("%s's Run hung with etcd unreachable", r.name)
		}
	}
	select {
	case <-aTerm.ended:
	default:
		t.Error("a's Run returned before its background work did")
	}
	if a.leading.Load() {
		t.Error("a still counts itself the leader after it stopped")
	}
}

// waitLog waits until r has logged want n times.
func waitLog(t *testing.T, r *replica, want string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for strings.Count(r.log.String(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s logged %s %d times within %s, want %d:\n%s", r.name, want, strings.Count(r.log.String(), want), within, n, r.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLeadThatReturnsGivesUpTheLead: background work that returns while its
// replica still leads gives the lead up (another replica may do better) and
// the replica campaigns again.
func TestLeadThatReturnsGivesUpTheLead(t *testing.T) {
	t.Parallel()
	etcd := etcdtest.Start(t, 1)
	observer := etcd.Client(t)
	var leads atomic.Int32
	a := startReplica(t, newClient(t, etcd.Endpoints()...), observer, "a", testTTL, func(tm *term) {
		if leads.Add(1) == 1 {
			return // gives up at once
		}
		<-tm.ctx.Done()
	})
	first := nextTerm(t, a, settle)
	second := nextTerm(t, a, settle)
	if first.fence == second.fence || keyHeld(observer, first.fence) || !second.held {
		t.Errorf("first lead %+v (still held: %v), second %+v (held: %v): want a new key, the old one gone",
			first.fence, keyHeld(observer, first.fence), second.fence, second.held)
	}
	waitLog(t, a, `"reason":"the background work returned on its own"`, 1, settle)
	if got := a.changeLog(); fmt.Sprint(got) != "[true false true]" {
		t.Errorf("onChange calls = %v, want [true false true]", got)
	}
}
