// Package leader elects, among the gpubot replicas that share an etcd, the
// one that does the background work (resuming, tracking, reminders,
// expiries, orphan sweeps). Every replica answers Slack; only the leader
// runs that work, with a context that carries its fence (domain.WithFence),
// so a leader that was deposed while paused changes nothing in the store.
//
// The election is etcd's (the layout of go.etcd.io/etcd/client/v3/concurrency's
// Election, so etcdctl and Election.Observe can watch it): each candidate
// holds a key under the election prefix, bound to a lease its session keeps
// alive, and the candidate whose key was created first leads.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/gpubot/gpubot/internal/domain"
)

// firstRetry is the pause before campaigning again after a lead ended; a
// failure doubles it up to the TTL, so an unreachable etcd is asked about
// once per TTL or so.
const firstRetry = 100 * time.Millisecond

var (
	errLeaseLost    = errors.New("its etcd lease ended (etcd unreachable for longer than the TTL, or the lease was revoked)")
	errKeyDeleted   = errors.New("its election key was deleted")
	errLeadReturned = errors.New("the background work returned on its own")
	errNotHeld      = errors.New("its candidate key vanished while it waited")
)

// ElectionKey is where gpubot's replicas hold their election, under the
// store's ETCD_PREFIX: every replica must use the same one.
func ElectionKey(prefix string) string { return prefix + "leader" }

// Elector is one replica's part in the election.
type Elector struct {
	cli      *clientv3.Client
	prefix   string // the election key and "/": candidates' keys are prefix + lease ID in hex
	ttl      time.Duration
	name     string
	log      *slog.Logger
	onChange func(leading bool)
}

// New prepares a replica's candidacy in the election at key
// (ElectionKey(ETCD_PREFIX)). ttl (LEADER_TTL, whole seconds) is how long the
// lead outlives a replica that died without resigning; name (a host name)
// is the candidacy's value, which logs and etcdctl show. onChange, if not
// nil, hears every gain and loss of the lead, for the gpubot_leader gauge.
func New(cli *clientv3.Client, key string, ttl time.Duration, name string, log *slog.Logger, onChange func(leading bool)) *Elector {
	if onChange == nil {
		onChange = func(bool) {}
	}
	return &Elector{cli: cli, prefix: key + "/", ttl: ttl, name: name, log: log.With("candidate", name), onChange: onChange}
}

// Run campaigns until ctx ends. Each time this replica wins it calls lead
// with a context that carries the fence of that leadership and is cancelled
// the moment it is lost: the lease ends, the key is deleted, or ctx ends;
// lead must then return promptly. Whatever fails (etcd unreachable, a lost
// lease) it logs, waits a while (at most the TTL) and campaigns again with a
// new lease; it never gives up. When ctx ends it withdraws at once: a leader
// resigns after lead returned, so another replica takes over without
// waiting for the TTL. It returns nil then, or why the resignation failed
// (etcd unreachable: the lease ends by itself within the TTL). An Elector
// runs once at a time.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	retry := backoff{first: firstRetry, max: max(e.ttl, firstRetry), next: firstRetry}
	for {
		err := e.term(ctx, lead)
		if ctx.Err() != nil {
			return err
		}
		if err == nil {
			retry.reset()
		}
		delay := retry.delay()
		if err != nil {
			e.log.Warn("leader election: trying again", "error", err, "retry_in", delay.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}
}

// term is one candidacy: a new lease, a campaign and, if it is won, the
// lead. It always ends by revoking the lease, which deletes the candidate
// key: a failed or abandoned campaign leaves nothing behind (etcd#21128),
// and a resigning leader hands over at once.
// Ending because ctx ended is no failure: then only a failed release is.
func (e *Elector) term(ctx context.Context, lead func(context.Context)) error {
	session, err := e.newSession(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	fence, err := e.campaign(ctx, session)
	if err == nil {
		err = e.lead(ctx, session, fence, lead)
	}
	if ctx.Err() != nil {
		err = nil
	}
	return errors.Join(err, e.release(ctx, session))
}

// newSession grants a lease and keeps it alive. The grant is bounded by the
// TTL, so an unreachable etcd fails it instead of hanging. The keepalives
// outlive ctx: release stops them after lead has returned.
func (e *Elector) newSession(ctx context.Context) (*concurrency.Session, error) {
	grantCtx, cancel := context.WithTimeout(ctx, e.ttl)
	defer cancel()
	grant, err := e.cli.Grant(grantCtx, e.ttlSeconds())
	if err != nil {
		return nil, fmt.Errorf("grant a lease: %w", err)
	}
	if grant.TTL > e.ttlSeconds() {
		e.log.Warn("leader election: etcd raised the lease's TTL to its minimum; a replica that dies holds the background work that long",
			"asked", e.ttl.String(), "granted", (time.Duration(grant.TTL) * time.Second).String())
	}
	session, err := concurrency.NewSession(e.cli,
		concurrency.WithLease(grant.ID),
		concurrency.WithTTL(int(grant.TTL)),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		_ = e.revoke(ctx, grant.ID) // best effort: unrevoked, it ends within the TTL
		return nil, fmt.Errorf("keep the lease alive: %w", err)
	}
	return session, nil
}

// campaign enters the election and waits until this candidacy leads. It
// gives up when the session's lease ends (it would otherwise wait on as a
// leader that holds no key). It enters and waits as
// concurrency.Election.Campaign does, but its own way: that one, when
// cancelled, resigns with the client's context, which with etcd unreachable
// blocks until etcd is back, so a replica asked to stop would hang.
func (e *Elector) campaign(ctx context.Context, session *concurrency.Session) (domain.Fence, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(session.Ctx(), func() { cancel(errLeaseLost) })
	defer stop()

	key := fmt.Sprintf("%s%x", e.prefix, session.Lease())
	entered, err := e.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, e.name, clientv3.WithLease(session.Lease()))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return domain.Fence{}, campaignError("enter the election", ctx, err)
	}
	fence := domain.Fence{Key: key, Revision: entered.Header.Revision}
	if !entered.Succeeded { // a retried put that had landed
		fence.Revision = entered.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	e.logLeader(ctx)
	if err := e.waitForPredecessors(ctx, fence.Revision); err != nil {
		return domain.Fence{}, campaignError("wait for the leader", ctx, err)
	}
	if err := e.confirm(ctx, session, fence); err != nil {
		return domain.Fence{}, campaignError("confirm the lead", ctx, err)
	}
	return fence, nil
}

func campaignError(step string, ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return fmt.Errorf("%s: %w", step, err)
}

// waitForPredecessors returns once no candidate that entered before rev is
// left.
func (e *Elector) waitForPredecessors(ctx context.Context, rev int64) error {
	for {
		newest, err := e.cli.Get(ctx, e.prefix, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1))...)
		if err != nil {
			return err
		}
		if len(newest.Kvs) == 0 {
			return nil
		}
		if err := e.waitForDelete(ctx, string(newest.Kvs[0].Key), newest.Header.Revision); err != nil {
			return err
		}
	}
}

func (e *Elector) waitForDelete(ctx context.Context, key string, rev int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for response := range e.cli.Watch(ctx, key, clientv3.WithRev(rev+1)) {
		if err := response.Err(); err != nil {
			return fmt.Errorf("watch %s: %w", key, err)
		}
		for _, event := range response.Events {
			if event.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("watch %s: ended", key)
}

// confirm checks that the key this candidacy waited with is still there,
// with its revision and lease: the predecessors' keys can go after this
// one's lease ended or its key was deleted, and then nobody who believes it
// leads may do so.
func (e *Elector) confirm(ctx context.Context, session *concurrency.Session, fence domain.Fence) error {
	got, err := e.cli.Get(ctx, fence.Key)
	if err != nil {
		return err
	}
	if len(got.Kvs) != 1 || got.Kvs[0].CreateRevision != fence.Revision || clientv3.LeaseID(got.Kvs[0].Lease) != session.Lease() {
		return errNotHeld
	}
	return nil
}

// lead runs the caller's lead while this candidacy leads. The lead ends when
// the lease ends, when the key is deleted (an operator, or a store repair)
// or when ctx ends; lead's context is cancelled then, and this returns once
// lead has.
func (e *Elector) lead(ctx context.Context, session *concurrency.Session, fence domain.Fence, lead func(context.Context)) error {
	leadCtx, lose := context.WithCancelCause(domain.WithFence(ctx, fence))
	defer lose(nil)
	stopOnLeaseEnd := context.AfterFunc(session.Ctx(), func() { lose(errLeaseLost) })
	defer stopOnLeaseEnd()
	go e.watchKey(leadCtx, fence, lose)

	e.log.Info("leading: this replica does the background work", "key", fence.Key, "revision", fence.Revision)
	e.onChange(true)
	lost := make(chan struct{})
	stopOnLoss := context.AfterFunc(leadCtx, func() {
		defer close(lost)
		e.onChange(false)
		if ctx.Err() != nil {
			e.log.Info("resigning the lead: stopping", "key", fence.Key)
			return
		}
		e.log.Warn("no longer leading", "key", fence.Key, "reason", context.Cause(leadCtx).Error())
	})
	defer stopOnLoss()

	lead(leadCtx)
	lose(errLeadReturned)
	<-lost
	if errors.Is(context.Cause(leadCtx), errLeadReturned) {
		return errLeadReturned
	}
	return nil
}

// watchKey ends the lead when the election key is deleted or can no longer
// be watched.
func (e *Elector) watchKey(ctx context.Context, fence domain.Fence, lose context.CancelCauseFunc) {
	for response := range e.cli.Watch(ctx, fence.Key, clientv3.WithRev(fence.Revision+1)) {
		if err := response.Err(); err != nil {
			lose(fmt.Errorf("watch of its election key failed: %w", err))
			return
		}
		for _, event := range response.Events {
			if event.Type == clientv3.EventTypeDelete {
				lose(errKeyDeleted)
				return
			}
		}
	}
	lose(errors.New("watch of its election key ended"))
}

// release stops the keepalives and revokes the lease, which deletes the
// candidate key. It is bounded by the TTL: past it the lease has ended
// anyway.
func (e *Elector) release(ctx context.Context, session *concurrency.Session) error {
	session.Orphan()
	return e.revoke(ctx, session.Lease())
}

func (e *Elector) revoke(ctx context.Context, lease clientv3.LeaseID) error {
	revokeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.ttl)
	defer cancel()
	_, err := e.cli.Revoke(revokeCtx, lease)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("revoke lease %x (it ends by itself within %s): %w", int64(lease), e.ttl, err)
	}
	return nil
}

// logLeader says who leads while this candidacy waits, for whoever reads
// the logs of a replica that is not leading.
func (e *Elector) logLeader(ctx context.Context) {
	first, err := e.cli.Get(ctx, e.prefix, clientv3.WithFirstCreate()...)
	if err != nil || len(first.Kvs) == 0 {
		return
	}
	e.log.Info("campaigning", "leader", string(first.Kvs[0].Value))
}

func (e *Elector) ttlSeconds() int64 {
	return max(1, int64(math.Ceil(e.ttl.Seconds())))
}

// backoff spaces out attempts: each delay doubles up to max, with jitter so
// that replicas do not ask etcd in step.
type backoff struct{ first, max, next time.Duration }

func (b *backoff) reset() { b.next = b.first }

func (b *backoff) delay() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.max)
	return d/2 + rand.N(d/2+1)
}
