package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/etcdtest"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var alice = domain.UserRef{TeamID: "T1", UserID: "UALICE"}

func newRequest(u domain.UserRef, state domain.State) *domain.Request {
	return &domain.Request{
		TeamID: u.TeamID, UserID: u.UserID, ChannelID: "C1", CommandChannel: "C1",
		InstanceType: "gpu_8x_h100_sxm5", Sector: "sector_1", Reason: "training run",
		SSHKey: "ssh-ed25519 AAAA test", Lifetime: 8 * time.Hour, State: state,
	}
}

func openStore(t testing.TB, cli *clientv3.Client, prefix string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), cli, prefix, opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

func mustCreate(t testing.TB, s *Store, r *domain.Request) domain.Request {
	t.Helper()
	if err := s.CreateRequest(context.Background(), r); err != nil {
		t.Fatalf("create request: %v", err)
	}
	return *r
}

// A leader's write carries its fence: while the election key holds the
// revision the fence names, the write goes through; once the key is gone, or
// was made again by a new leader, the write is refused with ErrFenced and
// changes nothing.
func TestFencedWritesNeedTheLeadershipToHold(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	cli := cluster.Client(t)
	s := openStore(t, cli, "/fence/", Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateApproved))

	const electionKey = "/gpubot-election/leader/694d8a"
	put, err := cli.Put(ctx, electionKey, "replica-1")
	if err != nil {
		t.Fatal(err)
	}
	leading := domain.WithFence(ctx, domain.Fence{Key: electionKey, Revision: put.Header.Revision})
	if _, err := s.Move(leading, r.ID, domain.StateCreating, "gpubot", "", nil); err != nil {
		t.Fatalf("a write of the leader while it leads: %v", err)
	}
	if _, err := s.MarkNotice(leading, r.ID, "creating"); err != nil {
		t.Fatalf("a notice marked by the leader while it leads: %v", err)
	}

	if _, err := cli.Delete(ctx, electionKey); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Request(ctx, r.ID)
	auditBefore, _ := s.AuditLog(ctx, 0, 0)
	checkFenced := func(when string) {
		t.Helper()
		writes := map[string]error{}
		_, writes["Move"] = s.Move(leading, r.ID, domain.StateFailed, "gpubot", "", nil)
		_, writes["Update"] = s.Update(leading, r.ID, func(r *domain.Request) error { r.FalStatus = "stale"; return nil })
		_, writes["MarkNotice"] = s.MarkNotice(leading, r.ID, "stale")
		_, writes["MarkSeen"] = s.MarkSeen(leading, "alert:stale", time.Hour)
		writes["Audit"] = s.Audit(leading, domain.AuditEvent{Action: "stale"})
		writes["CreateRequest"] = s.CreateRequest(leading, newRequest(alice, domain.StateApproved))
		for name, err := range writes {
			if !errors.Is(err, domain.ErrFenced) {
				t.Errorf("%s: %s by a deposed leader: %v, want domain.ErrFenced", when, name, err)
			}
		}
		after, _ := s.Request(ctx, r.ID)
		auditAfter, _ := s.AuditLog(ctx, 0, 0)
		if after.Version != before.Version || len(auditAfter) != len(auditBefore) {
			t.Errorf("%s: a deposed leader changed the store: version %d → %d, %d → %d audit events",
				when, before.Version, after.Version, len(auditBefore), len(auditAfter))
		}
		if first, _ := s.MarkSeen(ctx, "alert:stale", time.Hour); !first {
			t.Errorf("%s: a deposed leader's MarkSeen was remembered", when)
		}
		if _, err := cli.Delete(ctx, s.keys.seen("alert:stale")); err != nil {
			t.Fatal(err)
		}
	}
	checkFenced("election key gone")
	if _, err := cli.Put(ctx, electionKey, "replica-2"); err != nil { // a new leader, same key
		t.Fatal(err)
	}
	checkFenced("election key made again")
	if _, err := s.Move(ctx, r.ID, domain.StateProvisioning, "gpubot", "", nil); err != nil {
		t.Errorf("a write with no fence: %v", err)
	}
	if err := checkConsistent(ctx, s); err != nil {
		t.Error(err)
	}
}

// With etcd out of reach, every call returns within its deadline with
// domain.ErrUnavailable, a call without a deadline gets the store's own; one
// member of three down changes nothing; when etcd is back, everything carries
// on. A write that failed before it was sent wrote nothing. One sent to the
// member left, which has no quorum, says its outcome is unknown: that member
// may pass it on once quorum is back, and then it is applied whole.
func TestUnreachableEtcdFailsCallsAndWritesNothing(t *testing.T) {
	cluster := etcdtest.Start(t, 3)
	cli := cluster.Client(t)
	const timeout = 500 * time.Millisecond
	s := openStore(t, cli, "/down/", Options{Timeout: timeout})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))

	cluster.Stop(0)
	approved, err := s.Move(ctx, r.ID, domain.StateApproved, "UBOB", "", nil)
	if err != nil || approved.State != domain.StateApproved {
		t.Fatalf("with one member of three down: %v", err)
	}

	cluster.Stop(1) // no quorum left
	before, _ := cli.Get(ctx, "/down/", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithCountOnly())
	reads := map[string]bool{"Unfinished": true, "EnvelopeAnswer": true}
	maybeApplied := false
	withDeadline := func(d time.Duration) (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, d) }
	calls := map[string]func(context.Context) error{
		"Move": func(ctx context.Context) error {
			_, err := s.Move(ctx, r.ID, domain.StateCreating, "gpubot", "", nil)
			return err
		},
		"CreateRequest": func(ctx context.Context) error {
			return s.CreateRequest(ctx, newRequest(alice, domain.StateApproved), domain.ForEnvelope("Ev-down", []byte("ok")))
		},
		"Unfinished": func(ctx context.Context) error { _, err := s.Unfinished(ctx); return err },
		"MarkSeen":   func(ctx context.Context) error { _, err := s.MarkSeen(ctx, "alert:x", time.Hour); return err },
		"EnvelopeAnswer": func(ctx context.Context) error {
			_, _, err := s.EnvelopeAnswer(ctx, "Ev-down")
			return err
		},
	}
	for name, call := range calls {
		for _, deadline := range []time.Duration{300 * time.Millisecond, 0} {
			callCtx, cancel := ctx, context.CancelFunc(func() {})
			bound := timeout // the store's own
			if deadline > 0 {
				callCtx, cancel = withDeadline(deadline)
				bound = deadline
			}
			start := time.Now()
			err := call(callCtx)
			took := time.Since(start)
			cancel()
			if !errors.Is(err, domain.ErrUnavailable) {
				t.Errorf("%s with deadline %v while etcd has no quorum: %v, want domain.ErrUnavailable", name, deadline, err)
			}
			if errors.Is(err, domain.ErrOutcomeUnknown) {
				if reads[name] {
					t.Errorf("%s, a read, says a write may have been applied: %v", name, err)
				}
				maybeApplied = true
			}
			// The bound is what the call was given; the slack is for a busy machine.
			if took > bound+2*time.Second {
				t.Errorf("%s with deadline %v returned after %v", name, deadline, took)
			}
		}
	}

	t.Logf("a write sent without quorum said it may have been applied: %v", maybeApplied)
	cluster.Restart(0)
	cluster.Restart(1)
	healthy, cancel := withDeadline(30 * time.Second)
	defer cancel()
	if err := cluster.WaitHealthy(healthy, cli); err != nil {
		t.Fatal(err)
	}
	after, err := cli.Get(ctx, "/down/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if !maybeApplied && after.Count != before.Count {
		t.Errorf("%d keys before the calls that failed, %d after, and none said it may have been applied", before.Count, after.Count)
	}
	got, err := s.Request(ctx, r.ID)
	switch {
	case err != nil:
		t.Fatal(err)
	case got.Version == approved.Version && got.State == domain.StateApproved:
	case maybeApplied && got.State == domain.StateCreating:
	default:
		t.Errorf("after etcd came back: %s version %d; want approved version %d (or creating, the move having been passed on)", got.State, got.Version, approved.Version)
	}
	if _, err := s.Move(ctx, r.ID, domain.StateFailed, "gpubot", "", nil); err != nil {
		t.Errorf("a write once etcd is back: %v", err)
	}
	if err := checkConsistent(ctx, s); err != nil {
		t.Error(err)
	}
}

// A new prefix gets the schema version; one written by a newer gpubot is refused.
func TestSchemaVersionIsWrittenAndChecked(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	cli := cluster.Client(t)
	ctx := context.Background()
	openStore(t, cli, "/schema-new/", Options{})
	got, err := cli.Get(ctx, "/schema-new/schema")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != fmt.Sprint(SchemaVersion) {
		t.Fatalf("schema of a new prefix: %v, %v; want %d", got.Kvs, err, SchemaVersion)
	}
	if _, err := cli.Put(ctx, "/schema-newer/schema", fmt.Sprint(SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, cli, "/schema-newer/", Options{}); !errors.Is(err, domain.ErrNewerSchema) {
		t.Errorf("a prefix written by a newer gpubot: %v, want domain.ErrNewerSchema", err)
	}
}

// Seen keys share leases by time bucket, not one each, and go when their
// bucket's lease ends.
func TestSeenKeysShareLeasesAndGoWhenTheyEnd(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	cli := cluster.Client(t)
	ctx := context.Background()
	s := openStore(t, cli, "/seen/", Options{})
	for i := range 100 {
		if _, err := s.MarkSeen(ctx, fmt.Sprintf("alert:%d", i), 30*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	checkOneOrTwoLeases(t, cli, "100 keys expiring within a minute of each other")
	keys, err := cli.Get(ctx, s.keys.seenKeys(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range keys.Kvs {
		ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil || time.Duration(ttl.TTL)*time.Second < 30*time.Minute {
			t.Fatalf("%s is kept by lease %x for %ds (%v); want at least its 30 minutes", kv.Key, kv.Lease, ttl.TTL, err)
		}
	}

	short := openStore(t, cli, "/seen-short/", Options{})
	short.leases.width = time.Second
	if _, err := short.MarkSeen(ctx, "alert:short", time.Second); err != nil {
		t.Fatal(err)
	}
	watch := cli.Watch(ctx, short.keys.seen("alert:short"))
	if got, _ := cli.Get(ctx, short.keys.seen("alert:short")); len(got.Kvs) != 1 {
		t.Fatal("the seen key is not stored")
	}
	select {
	case resp := <-watch:
		if len(resp.Events) != 1 || resp.Events[0].Type != clientv3.EventTypeDelete {
			t.Errorf("watch: %+v, want the key's deletion", resp.Events)
		}
	case <-time.After(30 * time.Second): // its lease is 3 s at most; this only stops a hang
		t.Fatal("the seen key outlived its lease")
	}
}

// Writes that arrive at once, as a burst of commands does, wait for one
// lease of their bucket rather than each granting its own: every grant is a
// commit in etcd, in front of the write that asked for it.
func TestSeenKeysWrittenAtOnceGrantOneLease(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	cli := cluster.Client(t)
	ctx := context.Background()
	s := openStore(t, cli, "/seen-burst/", Options{})
	var writers sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		writers.Go(func() {
			_, err := s.MarkSeen(ctx, fmt.Sprintf("envelope:%d", i), 30*time.Minute)
			errs <- err
		})
	}
	writers.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	checkOneOrTwoLeases(t, cli, "50 keys written at once")
}

// checkOneOrTwoLeases holds the seen keys written so far to one lease, or two when
// the writes crossed a time bucket's end.
func checkOneOrTwoLeases(t *testing.T, cli *clientv3.Client, what string) {
	t.Helper()
	leases, err := cli.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(leases.Leases); n < 1 || n > 2 {
		t.Errorf("%d leases for %s, want 1 or 2", n, what)
	}
}

// Two replicas share one prefix: twenty approvers clicking at once on either
// get one winner, and each replica's cached listing shows the other's writes.
func TestTwoStoresOnOnePrefixAgree(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	ctx := context.Background()
	a := openStore(t, cluster.Client(t), "/replicas/", Options{})
	b := openStore(t, cluster.Client(t), "/replicas/", Options{})
	r := mustCreate(t, a, newRequest(alice, domain.StateAwaitingApproval))
	if live, err := b.Unfinished(ctx); err != nil || len(live) != 1 || live[0].State != domain.StateAwaitingApproval {
		t.Fatalf("b lists %+v, %v", live, err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 20)
	start := make(chan struct{})
	for i := range errs {
		store := []*Store{a, b}[i%2]
		wg.Go(func() {
			<-start
			approver := fmt.Sprintf("UAPPROVER%02d", i)
			_, errs[i] = store.Move(ctx, r.ID, domain.StateApproved, approver, "", func(r *domain.Request) error {
				r.ApproverID = approver
				return nil
			})
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		if err == nil {
			wins++
		} else if moveErr, ok := errors.AsType[*domain.MoveError](err); !ok || moveErr.Current.ApproverID == "" {
			t.Errorf("approver %d: %v, want a *domain.MoveError naming the winner", i, err)
		}
	}
	if wins != 1 {
		t.Errorf("%d approvals won across two replicas, want 1", wins)
	}
	live, err := b.Unfinished(ctx)
	if err != nil || len(live) != 1 || live[0].State != domain.StateApproved {
		t.Errorf("b's listing after the approvals: %+v, %v", live, err)
	}
	if _, err := a.Move(ctx, r.ID, domain.StateCancelled, "UALICE", "", nil); err != nil {
		t.Fatal(err)
	}
	if live, _ := b.Unfinished(ctx); len(live) != 0 {
		t.Errorf("b still lists a request a cancelled: %+v", live)
	}
	if err := checkConsistent(ctx, a); err != nil {
		t.Error(err)
	}
}

// A claim holds across replicas; when the replica holding it dies (its
// session's lease ends) or closes its store, the work passes to another.
func TestClaimsHoldAcrossReplicasAndPassOnWhenOneDies(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	ctx := context.Background()
	cli := cluster.Client(t)
	a := openStore(t, cli, "/claims/", Options{})
	b := openStore(t, cluster.Client(t), "/claims/", Options{})

	release, ok, err := a.ClaimWork(ctx, "r1")
	if err != nil || !ok {
		t.Fatalf("a claims r1: %v, %v", ok, err)
	}
	if _, ok, err := b.ClaimWork(ctx, "r1"); ok || err != nil {
		t.Fatalf("b claims r1 while a holds it: %v, %v; want refused", ok, err)
	}
	release()
	releaseB, ok, err := b.ClaimWork(ctx, "r1")
	if err != nil || !ok {
		t.Fatalf("b claims r1 after a released it: %v, %v", ok, err)
	}
	release() // a's second release does not take b's claim
	if _, ok, _ := a.ClaimWork(ctx, "r1"); ok {
		t.Fatal("a second release by a freed b's claim")
	}
	releaseB()

	if _, ok, err := a.ClaimWork(ctx, "r2"); err != nil || !ok {
		t.Fatalf("a claims r2: %v, %v", ok, err)
	}
	a.session.mu.Lock()
	lease := a.session.current.Lease()
	a.session.mu.Unlock()
	if _, err := cli.Revoke(ctx, lease); err != nil { // a dies: its lease ends
		t.Fatal(err)
	}
	if _, ok, err := b.ClaimWork(ctx, "r2"); err != nil || !ok {
		t.Fatalf("b claims r2 after a died: %v, %v", ok, err)
	}
	if _, ok, err := a.ClaimWork(ctx, "r3"); err != nil || !ok {
		t.Fatalf("a, back, claims r3 with a new session: %v, %v", ok, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.ClaimWork(ctx, "r3"); err != nil || !ok {
		t.Fatalf("b claims r3 after a closed its store: %v, %v", ok, err)
	}
}

// Audited writes arriving together share transactions (the audit sequence
// they all advance would otherwise queue them one round trip each), and the
// trail still numbers every event once, in order.
func TestConcurrentWritesShareTransactions(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	cli := cluster.Client(t)
	s := openStore(t, cli, "/burst/", Options{})
	ctx := context.Background()
	before, err := cli.Get(ctx, "/burst/schema")
	if err != nil {
		t.Fatal(err)
	}
	const writers = 100
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			<-start
			errs[i] = s.CreateRequest(ctx, newRequest(alice, domain.StateApproved))
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	after, err := cli.Get(ctx, "/burst/schema")
	if err != nil {
		t.Fatal(err)
	}
	if commits := after.Header.Revision - before.Header.Revision; commits >= writers/2 {
		t.Errorf("%d creates took %d transactions; want them to share", writers, commits)
	}
	log, err := s.AuditLog(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range log {
		if e.Seq != uint64(i+1) || e.Action != "requested" {
			t.Fatalf("event %d: %+v, want seq %d", i, e, i+1)
		}
	}
	if len(log) != writers {
		t.Errorf("%d events, want %d", len(log), writers)
	}
	if err := checkConsistent(ctx, s); err != nil {
		t.Error(err)
	}
}

// A write that loses its compare to another runs again on what is there now:
// an Update racing a notice keeps both, as on bbolt, where they would have
// queued; a move racing a move that won is refused by the state table.
func TestALostCompareIsDecidedAgainOnWhatIsThere(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	s := openStore(t, cluster.Client(t), "/race/", Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateApproved))

	runs := 0
	updated, err := s.Update(ctx, r.ID, func(u *domain.Request) error {
		runs++
		if runs == 1 { // another replica marks a notice between this read and its commit
			if _, err := s.MarkNotice(ctx, r.ID, "thread_root"); err != nil {
				return err
			}
		}
		u.FalStatus = "pending"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if runs < 2 || !updated.NoticeSent("thread_root") || updated.FalStatus != "pending" || updated.Version != r.Version+2 {
		t.Errorf("update after a racing notice: %d runs, %+v; want the notice and the edit, version %d", runs, updated, r.Version+2)
	}

	runs = 0
	_, err = s.Move(ctx, r.ID, domain.StateCreating, "gpubot", "", func(*domain.Request) error {
		runs++
		if runs == 1 { // the requester cancels between this read and its commit
			if _, err := s.Move(ctx, r.ID, domain.StateCancelled, "UALICE", "", nil); err != nil {
				return err
			}
		}
		return nil
	})
	moveErr, ok := errors.AsType[*domain.MoveError](err)
	if !ok || moveErr.Current.State != domain.StateCancelled {
		t.Fatalf("a move that lost to a cancel: %v, want a *domain.MoveError with the request cancelled", err)
	}
	events, _ := s.AuditFor(ctx, r.ID)
	if last := events[len(events)-1]; len(events) != 2 || last.Action != string(domain.StateCancelled) {
		t.Errorf("audit after the race: %+v, want requested and cancelled only", events)
	}
	if err := checkConsistent(ctx, s); err != nil {
		t.Error(err)
	}
}

// A write whose answer is lost on its way back was applied all the same: the
// caller is told its outcome is unknown (still ErrUnavailable), never that
// nothing was done. Both paths are covered: the committer's shared
// transactions (Move, audited) and a write of its own (MarkNotice).
func TestAWriteWhoseAnswerIsLostSaysItMayHaveBeenApplied(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	var loseAnswers atomic.Bool
	loseTxnAnswers := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if txn, ok := req.(*etcdserverpb.TxnRequest); ok && writes(txn) && loseAnswers.Load() {
			return status.Error(codes.Unavailable, "the connection dropped before the answer came")
		}
		return err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cluster.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithChainUnaryInterceptor(loseTxnAnswers)},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s := openStore(t, cli, "/lost/", Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))

	loseAnswers.Store(true)
	_, moveErr := s.Move(ctx, r.ID, domain.StateApproved, "UBOB", "", nil)
	_, markErr := s.MarkNotice(ctx, r.ID, "ready")
	loseAnswers.Store(false)

	for name, err := range map[string]error{"Move": moveErr, "MarkNotice": markErr} {
		if !errors.Is(err, domain.ErrOutcomeUnknown) || !errors.Is(err, domain.ErrUnavailable) {
			t.Errorf("%s whose answer was lost: %v; want domain.ErrOutcomeUnknown", name, err)
		}
	}
	got, err := s.Request(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != domain.StateApproved || !got.NoticeSent("ready") {
		t.Errorf("after the lost answers the request is %s (notice recorded: %v): the writes were applied, as the error allows", got.State, got.NoticeSent("ready"))
	}
	if err := checkConsistent(ctx, s); err != nil {
		t.Error(err)
	}
}

// writes says whether a transaction puts or deletes anything, unlike the
// transactions that only read several keys at one revision.
func writes(txn *etcdserverpb.TxnRequest) bool {
	for _, op := range slices.Concat(txn.Success, txn.Failure) {
		if op.GetRequestPut() != nil || op.GetRequestDeleteRange() != nil {
			return true
		}
	}
	return false
}
