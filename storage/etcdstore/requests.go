package etcdstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// CreateRequest stores a new request and audits "requested". r.State must be
// awaiting_approval or approved. Empty ID and IdempotencyKey are filled with
// UUIDs, CreatedAt (when zero) and UpdatedAt with now, Version with 1; r is
// updated in place on success.
func (s *Store) CreateRequest(ctx context.Context, r *domain.Request, opts ...domain.WriteOption) error {
	now := s.now()
	rec, err := domain.NewRecord(r, now)
	if err != nil {
		return fmt.Errorf("create request: %w", err)
	}
	err = s.write(ctx, true, func(t *txn) error {
		if t.local { // a first try: a new id and a new envelope are not there
			t.assumeAbsent(s.keys.request(rec.ID), s.envelopeKey(opts))
		}
		if err := t.prefetch(s.keys.request(rec.ID), s.envelopeKey(opts)); err != nil {
			return err
		}
		if err := s.claimEnvelope(t, opts, now); err != nil {
			return err
		}
		_, taken, err := t.get(s.keys.request(rec.ID))
		if err != nil {
			return err
		}
		if taken {
			return fmt.Errorf("id %s is taken: %w", rec.ID, domain.ErrDuplicate)
		}
		if err := s.writeRequest(t, nil, &rec); err != nil {
			return err
		}
		t.audit(domain.AuditEvent{
			At: now, Actor: rec.UserID, Action: "requested", RequestID: rec.ID, Detail: rec.Summary(),
		})
		return nil
	})
	if err != nil {
		return fmt.Errorf("create request: %w", err)
	}
	*r = rec
	return nil
}

// Request returns the request with the given id, or ErrNotFound.
func (s *Store) Request(ctx context.Context, id string) (domain.Request, error) {
	var r domain.Request
	err := s.read(ctx, func(t *txn) (err error) {
		r, err = s.getRequest(t, id)
		return err
	})
	return r, err
}

// RequestByInstance returns the request that owns a fal instance, or ErrNotFound.
func (s *Store) RequestByInstance(ctx context.Context, instanceID string) (domain.Request, error) {
	var r domain.Request
	err := s.read(ctx, func(t *txn) error {
		id, found, err := t.get(s.keys.byInstance(instanceID))
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("request for instance %s: %w", instanceID, domain.ErrNotFound)
		}
		r, err = s.getRequest(t, string(id))
		return err
	})
	return r, err
}

// RequestsWithIDPrefix returns up to limit requests whose ids start with
// prefix, in id order, reading only those.
func (s *Store) RequestsWithIDPrefix(ctx context.Context, prefix string, limit int) ([]domain.Request, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []domain.Request
	err := s.read(ctx, func(t *txn) error {
		resp, err := s.cli.Get(t.ctx, s.keys.request(prefix), clientv3.WithPrefix(), clientv3.WithLimit(int64(limit)))
		if err != nil {
			return s.rpcError(t.ctx, err)
		}
		out = nil
		for _, kv := range resp.Kvs {
			r, err := decodeRequest(kv.Value)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("requests with id prefix %q: %w", prefix, err)
	}
	return out, nil
}

// RequestsByUser returns every request u made, newest first.
func (s *Store) RequestsByUser(ctx context.Context, u domain.UserRef) ([]domain.Request, error) {
	key := s.keys.userIndex(u)
	out, err := s.scanIndex(ctx, key, clientv3.GetPrefixRangeEnd(key))
	if err != nil {
		return nil, fmt.Errorf("requests of %s: %w", u, err)
	}
	return out, nil
}

// ExpiringBefore returns the ready requests whose ExpiresAt is at or before
// t, soonest first.
func (s *Store) ExpiringBefore(ctx context.Context, t time.Time) ([]domain.Request, error) {
	out, err := s.scanIndex(ctx, s.keys.expiringIndex(), s.keys.expiringThrough(t))
	if err != nil {
		return nil, fmt.Errorf("requests expiring before %s: %w", t.Format(time.RFC3339), err)
	}
	return out, nil
}

// scanIndex loads the requests named by the index entries in [from, to), in
// key order, all at the revision of the index read.
func (s *Store) scanIndex(ctx context.Context, from, to string) ([]domain.Request, error) {
	var out []domain.Request
	err := s.read(ctx, func(t *txn) error {
		resp, err := s.cli.Get(t.ctx, from, clientv3.WithRange(to))
		if err != nil {
			return s.rpcError(t.ctx, err)
		}
		keys := make([]string, len(resp.Kvs))
		for i, kv := range resp.Kvs {
			keys[i] = s.keys.request(string(kv.Value))
		}
		values, err := s.getMany(t.ctx, keys, resp.Header.Revision)
		if err != nil {
			return err
		}
		out = make([]domain.Request, 0, len(values))
		for i, raw := range values {
			if raw == nil {
				return fmt.Errorf("index entry %s names a missing request", resp.Kvs[i].Key)
			}
			r, err := decodeRequest(raw)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// maxTxnOps stays within etcd's default limit of operations per transaction.
const maxTxnOps = 128

// getMany reads keys at revision rev, in batches of one transaction each;
// an absent key reads as nil.
func (s *Store) getMany(ctx context.Context, keys []string, rev int64) ([][]byte, error) {
	out := make([][]byte, 0, len(keys))
	for start := 0; start < len(keys); start += maxTxnOps {
		var ops []clientv3.Op
		for _, key := range keys[start:min(start+maxTxnOps, len(keys))] {
			ops = append(ops, clientv3.OpGet(key, clientv3.WithRev(rev)))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, s.rpcError(ctx, err)
		}
		for _, r := range resp.Responses {
			var value []byte
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				value = kvs[0].Value
			}
			out = append(out, value)
		}
	}
	return out, nil
}

// read runs fn with the store's timeout, for a read.
func (s *Store) read(ctx context.Context, fn func(*txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return fn(s.newTxn(ctx))
}

// Move is MoveFrom with no restriction on the current state beyond the
// state table.
func (s *Store) Move(ctx context.Context, id string, to domain.State, actor, detail string, edit func(*domain.Request) error, opts ...domain.WriteOption) (domain.Request, error) {
	return s.MoveFrom(ctx, id, nil, to, actor, detail, edit, opts...)
}

// MoveFrom is the compare-and-set of a request's state, as domain.Store
// describes it: the state table (and from, when not empty) decides on the
// request as it is at commit, edit is applied to it, the move's times are
// filled in, and the move is audited, in one transaction.
func (s *Store) MoveFrom(ctx context.Context, id string, from []domain.State, to domain.State, actor, detail string,
	edit func(*domain.Request) error, opts ...domain.WriteOption) (domain.Request, error) {
	if !to.Valid() {
		return domain.Request{}, fmt.Errorf("move request %s: unknown state %q", id, to)
	}
	now := s.now()
	var moved domain.Request
	err := s.write(ctx, true, func(t *txn) error {
		if err := t.prefetch(s.keys.request(id), s.envelopeKey(opts)); err != nil {
			return err
		}
		if err := s.claimEnvelope(t, opts, now); err != nil {
			return err
		}
		current, err := s.getRequest(t, id)
		if err != nil {
			return err
		}
		if !domain.CanMove(current.State, to) || (len(from) > 0 && !slices.Contains(from, current.State)) {
			return &domain.MoveError{From: current.State, To: to, Current: current}
		}
		next, err := edited(current, edit)
		if err != nil {
			return err
		}
		next.State = to
		fillMoveTimes(&next, current.State, now)
		next.UpdatedAt = now
		next.Version = current.Version + 1
		if err := s.writeRequest(t, &current, &next); err != nil {
			return err
		}
		moved = next
		t.audit(domain.AuditEvent{At: now, Actor: actor, Action: string(to), RequestID: id, Detail: detail})
		return nil
	})
	if err != nil {
		if _, illegal := errors.AsType[*domain.MoveError](err); illegal {
			return domain.Request{}, err
		}
		return domain.Request{}, fmt.Errorf("move request %s to %s: %w", id, to, err)
	}
	return moved, nil
}

func fillMoveTimes(r *domain.Request, from domain.State, now time.Time) {
	decided := from == domain.StateAwaitingApproval && (r.State == domain.StateApproved || r.State == domain.StateDenied)
	if decided && r.DecidedAt.IsZero() {
		r.DecidedAt = now
	}
	if r.State == domain.StateReady && r.ReadyAt.IsZero() {
		r.ReadyAt = now
	}
	if r.State == domain.StateReady && r.ExpiresAt.IsZero() && r.Lifetime > 0 {
		r.ExpiresAt = r.ReadyAt.Add(r.Lifetime)
	}
	if r.State.Terminal() && r.EndedAt.IsZero() {
		r.EndedAt = now
	}
}

// Update changes a request's fields without changing its state, rewriting
// its indexes and bumping Version. A write that changed the request in the
// meantime (a notice marked, say) makes it apply edit again to the new copy.
func (s *Store) Update(ctx context.Context, id string, edit func(*domain.Request) error, opts ...domain.WriteOption) (domain.Request, error) {
	if edit == nil {
		return domain.Request{}, fmt.Errorf("update request %s: no edit", id)
	}
	now := s.now()
	var updated domain.Request
	err := s.write(ctx, false, func(t *txn) error {
		if err := t.prefetch(s.keys.request(id), s.envelopeKey(opts)); err != nil {
			return err
		}
		if err := s.claimEnvelope(t, opts, now); err != nil {
			return err
		}
		current, err := s.getRequest(t, id)
		if err != nil {
			return err
		}
		next, err := edited(current, edit)
		if err != nil {
			return err
		}
		if next.State != current.State {
			return fmt.Errorf("a state change (%s to %s) must go through Move", current.State, next.State)
		}
		next.UpdatedAt = now
		next.Version = current.Version + 1
		if err := s.writeRequest(t, &current, &next); err != nil {
			return err
		}
		updated = next
		return nil
	})
	if err != nil {
		return domain.Request{}, fmt.Errorf("update request %s: %w", id, err)
	}
	return updated, nil
}

// edited applies edit to a copy of current and checks it kept the identity.
func edited(current domain.Request, edit func(*domain.Request) error) (domain.Request, error) {
	next := current.Clone()
	if edit == nil {
		return next, nil
	}
	if err := edit(&next); err != nil {
		return domain.Request{}, err
	}
	if next.ID != current.ID {
		return domain.Request{}, errors.New("an edit may not change the request id")
	}
	return next, nil
}

// MarkNotice records notice name for request id and reports whether this
// call was the first ever to do so.
func (s *Store) MarkNotice(ctx context.Context, id, name string) (first bool, err error) {
	if name == "" {
		return false, fmt.Errorf("mark notice on request %s: empty notice name", id)
	}
	now := s.now()
	err = s.write(ctx, false, func(t *txn) error {
		first = false
		current, err := s.getRequest(t, id)
		if err != nil {
			return err
		}
		if current.NoticeSent(name) {
			return nil
		}
		next := current.Clone()
		if next.Notices == nil {
			next.Notices = map[string]time.Time{}
		}
		next.Notices[name] = now
		next.UpdatedAt = now
		next.Version = current.Version + 1
		first = true
		return s.writeRequest(t, &current, &next)
	})
	if err != nil {
		return false, fmt.Errorf("mark notice %q on request %s: %w", name, id, err)
	}
	return first, nil
}

func (s *Store) getRequest(t *txn, id string) (domain.Request, error) {
	raw, found, err := t.get(s.keys.request(id))
	if err != nil {
		return domain.Request{}, err
	}
	if !found {
		return domain.Request{}, fmt.Errorf("request %s: %w", id, domain.ErrNotFound)
	}
	return decodeRequest(raw)
}

func decodeRequest(raw []byte) (domain.Request, error) {
	var r domain.Request
	if err := json.Unmarshal(raw, &r); err != nil {
		return domain.Request{}, fmt.Errorf("decode request: %w", err)
	}
	return r, nil
}

func encode(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return data, nil
}

// writeRequest stores r and moves its index entries from what old had (nil
// for a new request) to what r has.
func (s *Store) writeRequest(t *txn, old, r *domain.Request) error {
	// Readers trust a version to name one content (see liveCache).
	if old != nil && r.Version <= old.Version {
		return fmt.Errorf("request %s: version %d does not follow %d", r.ID, r.Version, old.Version)
	}
	data, err := encode(r)
	if err != nil {
		return err
	}
	entries := s.indexEntries(r, data)
	if r.InstanceID != "" && (old == nil || old.InstanceID != r.InstanceID) {
		owner, taken, err := t.get(s.keys.byInstance(r.InstanceID))
		if err != nil {
			return err
		}
		if taken && string(owner) != r.ID {
			return fmt.Errorf("index request %s: instance %s already belongs to request %s", r.ID, r.InstanceID, owner)
		}
	}
	if old != nil {
		for _, e := range s.indexEntries(old, nil) {
			t.del(e.key)
		}
	}
	t.put(s.keys.request(r.ID), data)
	for _, e := range entries {
		t.put(e.key, e.value) // a put replaces a delete of the same key
	}
	return nil
}

// indexEntry is one index key of a request and its value.
type indexEntry struct {
	key   string
	value []byte
}

// indexEntries lists the index entries a request must have, and no others.
// The unfinished index holds the request itself after its version, so the
// live requests are listed with one read.
func (s *Store) indexEntries(r *domain.Request, data []byte) []indexEntry {
	id := []byte(r.ID)
	entries := []indexEntry{{key: s.keys.byUser(r), value: id}}
	if r.InstanceID != "" {
		entries = append(entries, indexEntry{key: s.keys.byInstance(r.InstanceID), value: id})
	}
	if !r.State.Terminal() {
		entries = append(entries, indexEntry{key: s.keys.unfinished(r), value: unfinishedValue(r.Version, data)})
	}
	if r.State == domain.StateReady && !r.ExpiresAt.IsZero() {
		entries = append(entries, indexEntry{key: s.keys.expiring(r), value: id})
	}
	if r.State.Terminal() && !r.ReadyAt.IsZero() {
		entries = append(entries, indexEntry{key: s.keys.ended(r), value: endedValue(r)})
	}
	return entries
}

// unfinishedValue is "<version> <request JSON>": a reader tells whether a
// decoded copy it kept is current without decoding.
func unfinishedValue(version int64, data []byte) []byte {
	return append(strconv.AppendInt(nil, version, 10), append([]byte{' '}, data...)...)
}

func splitUnfinishedValue(v []byte) (version int64, data []byte, ok bool) {
	head, data, found := bytes.Cut(v, []byte{' '})
	if !found {
		return 0, nil, false
	}
	version, err := strconv.ParseInt(string(head), 10, 64)
	return version, data, err == nil
}
