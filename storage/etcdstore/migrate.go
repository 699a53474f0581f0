package etcdstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/storage"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrTargetNotEmpty refuses a migration into a prefix that holds data.
var ErrTargetNotEmpty = errors.New("the etcd prefix already holds data")

// Migrate copies everything from a bbolt store into to, whose prefix must
// hold nothing but its schema version: the SSH keys, every request with its
// state, version and indexes, the audit trail in order with its sequence,
// the seen keys not yet expired (envelopes with their answers, alert
// throttles, report marks), the orphan sightings and who opened the Home tab. Then it reads the whole
// prefix back and checks it key by key against what the bbolt store holds,
// and says so on progress. Nobody may write to either store meanwhile
// (gpubot is stopped). After a failure the prefix may hold part of the copy:
// the error says how to clear it.
func Migrate(ctx context.Context, from *storage.Store, to *Store, progress io.Writer) error {
	if err := to.checkEmpty(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	m := &migration{to: to, ctx: ctx, want: map[string][sha256.Size]byte{}, progress: progress}
	if err := from.Export(ctx, m.copy); err != nil {
		return m.failed(err)
	}
	if err := m.flush(); err != nil {
		return m.failed(err)
	}
	fmt.Fprintf(progress, "copied %d requests, %d audit events, %d SSH keys, %d seen keys, %d orphan sightings, %d Home tab marks\n",
		m.counts.requests, m.counts.audit, m.counts.keys, m.counts.seen, m.counts.orphans, m.counts.homes)
	if err := m.verify(); err != nil {
		return m.failed(err)
	}
	fmt.Fprintf(progress, "checked all %d keys under %s against the bbolt store: the copy is complete\n", len(m.want), to.keys.prefix)
	return nil
}

// checkEmpty refuses a prefix holding anything but the schema version.
func (s *Store) checkEmpty(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.keys.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(2))
	if err != nil {
		return s.rpcError(ctx, fmt.Errorf("read %s: %w", s.keys.prefix, err))
	}
	for _, kv := range resp.Kvs {
		if string(kv.Key) != s.keys.schema() {
			return fmt.Errorf("%s holds %d keys (%s, ...): migrate only into an empty prefix: "+
				"set ETCD_PREFIX to a new one, or delete these keys if they are not needed: %w",
				s.keys.prefix, resp.Count, kv.Key, ErrTargetNotEmpty)
		}
	}
	return nil
}

// migration is one copy in progress: writes are batched into transactions,
// and what each key must hold is remembered (as a hash) for the check.
type migration struct {
	to       *Store
	ctx      context.Context
	progress io.Writer
	batch    []clientv3.Op
	want     map[string][sha256.Size]byte
	counts   struct{ requests, live, audit, keys, seen, orphans, homes int }
}

func (m *migration) failed(err error) error {
	return fmt.Errorf("migrate: %w (the copy under %s is incomplete: delete it, e.g. `etcdctl del --prefix %s`, and run migrate again)",
		err, m.to.keys.prefix, m.to.keys.prefix)
}

func (m *migration) copy(rec storage.Record) error {
	keys := m.to.keys
	switch {
	case rec.Key != nil:
		m.counts.keys++
		return m.putJSON(keys.sshKey(rec.Key.User), rec.Key.Key)
	case rec.Request != nil:
		m.counts.requests++
		if rec.Request.Live() {
			m.counts.live++
		}
		return m.copyRequest(rec.Request)
	case rec.Audit != nil:
		m.counts.audit++
		e := rec.Audit
		if e.RequestID != "" {
			if err := m.put(keys.auditOfRequest(e.RequestID, e.Seq), nil); err != nil {
				return err
			}
		}
		return m.putJSON(keys.auditEvent(e.Seq), e)
	case rec.AuditSeq != nil:
		if *rec.AuditSeq == 0 {
			return nil
		}
		return m.put(keys.auditSeq(), []byte(strconv.FormatUint(*rec.AuditSeq, 10)))
	case rec.Seen != nil:
		return m.copySeen(rec.Seen)
	case rec.Home != nil:
		m.counts.homes++
		return m.put(keys.homeOpened(rec.Home.User), []byte(rec.Home.At.UTC().Format(timeFormat)))
	case rec.Orphans != nil:
		m.counts.orphans = len(rec.Orphans)
		return m.putJSON(keys.orphans(), rec.Orphans)
	}
	return errors.New("an export record with nothing in it")
}

func (m *migration) copyRequest(r *domain.Request) error {
	data, err := encode(r)
	if err != nil {
		return err
	}
	if err := m.put(m.to.keys.request(r.ID), data); err != nil {
		return err
	}
	for _, e := range m.to.indexEntries(r, data) {
		if err := m.put(e.key, e.value); err != nil {
			return err
		}
	}
	return nil
}

// copySeen keeps a seen key until its expiry, on the store's clock as
// before, with a lease of its time bucket.
func (m *migration) copySeen(e *storage.SeenEntry) error {
	ttl := e.Expires.Sub(m.to.now())
	if ttl <= 0 {
		return nil
	}
	m.counts.seen++
	lease, err := m.to.leases.until(m.ctx, ttl)
	if err != nil {
		return m.to.rpcError(m.ctx, fmt.Errorf("grant lease: %w", err))
	}
	data, err := encode(seenEntry{Expires: e.Expires, Answer: e.Value})
	if err != nil {
		return err
	}
	return m.put(m.to.keys.seen(e.Key), data, clientv3.WithLease(lease))
}

func (m *migration) putJSON(key string, v any) error {
	data, err := encode(v)
	if err != nil {
		return err
	}
	return m.put(key, data)
}

func (m *migration) put(key string, value []byte, opts ...clientv3.OpOption) error {
	if _, twice := m.want[key]; twice {
		return fmt.Errorf("two records would be copied to %s", key)
	}
	m.want[key] = sha256.Sum256(value)
	m.batch = append(m.batch, clientv3.OpPut(key, string(value), opts...))
	if len(m.batch) < maxTxnOps {
		return nil
	}
	return m.flush()
}

// flush writes the batch in one transaction.
func (m *migration) flush() error {
	if len(m.batch) == 0 {
		return nil
	}
	ctx, cancel := m.to.bound(m.ctx)
	defer cancel()
	if _, err := m.to.cli.Txn(ctx).Then(m.batch...).Commit(); err != nil {
		return m.to.rpcError(ctx, fmt.Errorf("write %d keys: %w", len(m.batch), err))
	}
	m.batch = m.batch[:0]
	return nil
}

// verify reads the whole prefix back, page by page at one revision, and
// checks that it holds exactly the keys copied, each with its value.
func (m *migration) verify() error {
	prefix := m.to.keys.prefix
	end := clientv3.GetPrefixRangeEnd(prefix)
	found, rev := 0, int64(0)
	for from := prefix; ; {
		ctx, cancel := m.to.bound(m.ctx)
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := m.to.cli.Get(ctx, from, opts...)
		err = m.to.rpcError(ctx, err)
		cancel()
		if err != nil {
			return fmt.Errorf("read the copy back: %w", err)
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			key := string(kv.Key)
			if key == m.to.keys.schema() {
				continue
			}
			want, ok := m.want[key]
			if !ok {
				return fmt.Errorf("check: %s holds %s, which the bbolt store does not", prefix, key)
			}
			if sha256.Sum256(kv.Value) != want {
				return fmt.Errorf("check: %s differs from the bbolt store", key)
			}
			found++
		}
		if !resp.More {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if found != len(m.want) {
		return fmt.Errorf("check: %d keys copied, %d found under %s", len(m.want), found, prefix)
	}
	return m.compareListings()
}

// compareListings asks the copy through the store's own reads what the
// tracker and the audit trail will see.
func (m *migration) compareListings() error {
	live, err := m.to.Unfinished(m.ctx)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	log, err := m.to.AuditLog(m.ctx, 0, 0)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if len(live) != m.counts.live {
		return fmt.Errorf("check: %d unfinished requests copied, %d listed", m.counts.live, len(live))
	}
	if len(log) != m.counts.audit {
		return fmt.Errorf("check: %d audit events copied, %d listed", m.counts.audit, len(log))
	}
	for i := 1; i < len(log); i++ {
		if log[i].Seq <= log[i-1].Seq {
			return fmt.Errorf("check: audit event %d follows %d", log[i].Seq, log[i-1].Seq)
		}
	}
	fmt.Fprintf(m.progress, "%d unfinished requests will be followed\n", len(live))
	return nil
}
