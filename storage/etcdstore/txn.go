package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxAttempts bounds how often a write is tried again after another write
// changed what it read; each retry means someone else's write went through.
const maxAttempts = 50

// txn is one optimistic read-modify-write: it reads keys at one revision,
// collects writes, and commits them in one etcd transaction that compares the
// revision of every key it read, so it commits only if nothing it read
// changed meanwhile (a key read as absent must still be absent).
type txn struct {
	s   *Store
	ctx context.Context
	rev int64 // the revision every read is made at; 0 before the first

	read   map[string]int64 // key -> mod revision read (0: absent)
	values map[string][]byte
	writes map[string]clientv3.Op
	order  []string
	events []domain.AuditEvent // to append to the audit trail, without Seq yet
	// local reads from the member the client talks to, without asking the
	// leader: a write's first try does, since its commit compares every
	// revision it read, so a stale read costs one more try (which reads
	// through the leader, so a member far behind cannot keep it losing).
	local bool
}

func (s *Store) newTxn(ctx context.Context) *txn {
	return &txn{s: s, ctx: ctx, read: map[string]int64{}, values: map[string][]byte{}, writes: map[string]clientv3.Op{}}
}

// prefetch reads keys in one round trip, for the gets that follow; an
// empty key is skipped.
func (t *txn) prefetch(keys ...string) error {
	var ops []clientv3.Op
	for _, k := range keys {
		if _, done := t.read[k]; !done && k != "" {
			ops = append(ops, clientv3.OpGet(k, t.atRev()...))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	resp, err := t.s.cli.Txn(t.ctx).Then(ops...).Commit()
	if err != nil {
		return t.s.rpcError(t.ctx, err)
	}
	if t.rev == 0 {
		t.rev = resp.Header.Revision
	}
	for i, op := range ops {
		key := string(op.KeyBytes())
		t.read[key] = 0
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) > 0 {
			t.read[key], t.values[key] = kvs[0].ModRevision, kvs[0].Value
		}
	}
	return nil
}

func (t *txn) atRev() []clientv3.OpOption {
	var opts []clientv3.OpOption
	if t.local {
		opts = append(opts, clientv3.WithSerializable())
	}
	if t.rev != 0 {
		opts = append(opts, clientv3.WithRev(t.rev))
	}
	return opts
}

// empty says whether the transaction has nothing to write.
func (t *txn) empty() bool { return len(t.writes) == 0 && len(t.events) == 0 }

// assumeAbsent takes keys as read and absent without reading them, for a
// write that finds them absent nearly always (a new request's id): its commit
// then needs no read first, and when one exists after all, the compare fails
// and the next try reads it.
func (t *txn) assumeAbsent(keys ...string) {
	for _, k := range keys {
		if _, done := t.read[k]; !done && k != "" {
			t.read[k] = 0
		}
	}
}

// get reads key (what this transaction wrote to it is not seen).
func (t *txn) get(key string) ([]byte, bool, error) {
	if err := t.prefetch(key); err != nil {
		return nil, false, err
	}
	return t.values[key], t.read[key] != 0, nil
}

func (t *txn) put(key string, value []byte, opts ...clientv3.OpOption) {
	t.set(key, clientv3.OpPut(key, string(value), opts...))
}

func (t *txn) del(key string) { t.set(key, clientv3.OpDelete(key)) }

// set makes op the one write of key: etcd allows one per key in a transaction.
func (t *txn) set(key string, op clientv3.Op) {
	if _, ok := t.writes[key]; !ok {
		t.order = append(t.order, key)
	}
	t.writes[key] = op
}

// audit appends e to the audit trail. Its sequence number is given when the
// write commits, in the group it commits with (see committer).
func (t *txn) audit(e domain.AuditEvent) {
	t.events = append(t.events, e)
}

// errLost says the transaction lost a compare: something it read changed.
var errLost = errors.New("lost to a concurrent write")

// commit writes what was collected if nothing read changed and the fence
// (if the context carries one) still holds.
func (t *txn) commit() error {
	if len(t.events) > 0 {
		return errors.New("an audited write must commit through the committer")
	}
	if len(t.writes) == 0 {
		return nil // what was read at one revision answers a write that writes nothing
	}
	var cmps []clientv3.Cmp
	for key, mod := range t.read {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", mod))
	}
	var orElse []clientv3.Op
	fence, fenced := domain.FenceFrom(t.ctx)
	if fenced {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(fence.Key), "=", fence.Revision))
		orElse = append(orElse, clientv3.OpGet(fence.Key, clientv3.WithKeysOnly()))
	}
	ops := make([]clientv3.Op, 0, len(t.order))
	for _, key := range t.order {
		ops = append(ops, t.writes[key])
	}
	resp, err := t.s.cli.Txn(t.ctx).If(cmps...).Then(ops...).Else(orElse...).Commit()
	if err != nil {
		return t.s.commitError(t.ctx, err)
	}
	if resp.Succeeded {
		return nil
	}
	if fenced {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || kvs[0].CreateRevision != fence.Revision {
			return fmt.Errorf("fence %s@%d: %w", fence.Key, fence.Revision, domain.ErrFenced)
		}
	}
	return errLost
}

// write runs fn in a transaction until it commits without losing a compare:
// fn reads afresh on every run, so it must set its results afresh too. An
// error from fn ends the write with nothing written. Audited writes commit
// through the store's committer, which gives their events sequence numbers.
func (s *Store) write(ctx context.Context, audited bool, fn func(*txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	for attempt := 1; ; attempt++ {
		t := s.newTxn(ctx)
		t.local = attempt == 1
		err := fn(t)
		unreached := errors.Is(err, domain.ErrUnavailable) || ctx.Err() != nil
		if t.local && !unreached && (err != nil || t.empty()) {
			// Only a commit checks what a local read saw: a refusal, or a
			// write found needless, is decided again on what the leader holds.
			continue
		}
		if err != nil {
			return err
		}
		if audited {
			err = s.committer.commit(ctx, t)
		} else {
			err = t.commit()
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			// A lease ran out under us: take new ones.
			s.leases.forget()
			s.dropSessionIfGone(ctx)
		case !errors.Is(err, errLost):
			return err
		}
		if attempt == maxAttempts {
			return fmt.Errorf("%d attempts: %w", attempt, err)
		}
		// Writers of other processes racing for the same keys spread out.
		select {
		case <-time.After(time.Duration(rand.IntN(attempt*500)) * time.Microsecond):
		case <-ctx.Done():
			return s.rpcError(ctx, ctx.Err())
		}
	}
}
