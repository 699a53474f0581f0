package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// CreateRequest stores a new request and audits "requested". r.State must be
// awaiting_approval or approved. Empty ID and IdempotencyKey are filled with
// UUIDs, CreatedAt (when zero) and UpdatedAt with now, Version with 1; r is
// updated in place on success.
// ForEnvelope makes a redelivered command create nothing.
func (s *Store) CreateRequest(ctx context.Context, r *domain.Request, opts ...domain.WriteOption) error {
	now := s.now()
	rec, err := domain.NewRecord(r, now)
	if err != nil {
		return fmt.Errorf("create request: %w", err)
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		if err := s.claimEnvelope(tx, opts, now); err != nil {
			return err
		}
		if bucket(tx, bucketRequests).Get([]byte(rec.ID)) != nil {
			return fmt.Errorf("id %s is taken: %w", rec.ID, domain.ErrDuplicate)
		}
		if err := writeRequest(tx, nil, &rec); err != nil {
			return err
		}
		return appendAudit(tx, domain.AuditEvent{
			At: now, Actor: rec.UserID, Action: "requested", RequestID: rec.ID, Detail: rec.Summary(),
		})
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
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		r, err = getRequest(tx, id)
		return err
	})
	return r, err
}

// RequestByInstance returns the request that owns a fal instance, or
// ErrNotFound.
func (s *Store) RequestByInstance(ctx context.Context, instanceID string) (domain.Request, error) {
	var r domain.Request
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		id := bucket(tx, bucketByInstance).Get([]byte(instanceID))
		if id == nil {
			return fmt.Errorf("request for instance %s: %w", instanceID, domain.ErrNotFound)
		}
		r, err = getRequest(tx, string(id))
		return err
	})
	return r, err
}

// RequestsWithIDPrefix returns up to limit requests whose ids start with prefix, in
// id order. It seeks to them in the requests bucket, so its cost does not grow with
// the number of requests stored: a short id is found without reading a history.
func (s *Store) RequestsWithIDPrefix(ctx context.Context, prefix string, limit int) ([]domain.Request, error) {
	var out []domain.Request
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		p := []byte(prefix)
		c := bucket(tx, bucketRequests).Cursor()
		for k, raw := c.Seek(p); k != nil && bytes.HasPrefix(k, p) && len(out) < limit; k, raw = c.Next() {
			r, err := decodeRequest(raw)
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
	var out []domain.Request
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		out, err = scanIndex(tx, bucketByUser, userPrefix(u), func([]byte) bool { return true })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("requests of %s: %w", u, err)
	}
	return out, nil
}

// ExpiringBefore returns the ready requests whose ExpiresAt is at or before
// t, soonest first.
func (s *Store) ExpiringBefore(ctx context.Context, t time.Time) ([]domain.Request, error) {
	limit := appendTime(nil, t)
	var out []domain.Request
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		out, err = scanIndex(tx, bucketExpiring, nil, func(k []byte) bool {
			return bytes.Compare(k[:timeKeyLen], limit) <= 0
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("requests expiring before %s: %w", t.Format(time.RFC3339), err)
	}
	return out, nil
}

// ranAndEnded says whether r is finished and its machine ran: what the by-end index holds.
func ranAndEnded(r *domain.Request) bool {
	return r.State.Terminal() && !r.ReadyAt.IsZero()
}

// RanDuring returns every request whose machine was ready at some moment in
// [from, to): ReadyAt before to, and either not finished yet or EndedAt after from.
// With owners given, only theirs. Requests never ready are left out; each request is
// listed once, in no set order. The live requests come from the same cache as
// Unfinished; of the finished ones it reads only the index entries of those that
// ended after from, and decodes only the records it returns, so a month's figures
// cost what that month holds, not the whole history.
func (s *Store) RanDuring(ctx context.Context, from, to time.Time, owners ...domain.UserRef) ([]domain.Request, error) {
	wanted := map[string]bool{}
	for _, u := range owners {
		wanted[string(userPrefix(u))] = true
	}
	isWanted := func(owner []byte) bool { return len(wanted) == 0 || wanted[string(owner)] }
	out, err := s.unfinished(ctx, func(r *domain.Request) bool {
		return !r.ReadyAt.IsZero() && r.ReadyAt.Before(to) && isWanted(userPrefix(r.Owner()))
	})
	if err != nil {
		return nil, fmt.Errorf("requests that ran from %s: %w", from.Format(time.RFC3339), err)
	}
	at := make(map[string]int, len(out))
	for i, r := range out {
		at[r.ID] = i
	}
	err = s.view(ctx, func(tx *bolt.Tx) error {
		records := bucket(tx, bucketRequests)
		limit := appendTime(nil, to)
		c := bucket(tx, bucketByEnd).Cursor()
		for k, v := c.Seek(appendTime(nil, from.Add(1))); k != nil; k, v = c.Next() {
			if len(v) < timeKeyLen || len(k) < timeKeyLen {
				return fmt.Errorf("malformed by-end index entry %x", k)
			}
			if bytes.Compare(v[:timeKeyLen], limit) >= 0 || !isWanted(v[timeKeyLen:]) {
				continue
			}
			raw := records.Get(k[timeKeyLen:])
			if raw == nil {
				return fmt.Errorf("by-end index names missing request %s", k[timeKeyLen:])
			}
			r, err := decodeRequest(raw)
			if err != nil {
				return err
			}
			// A request that ended since the live ones were listed is listed as it ended.
			if i, listed := at[r.ID]; listed {
				out[i] = r
				continue
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("requests that ran from %s to %s: %w", from.Format(time.RFC3339), to.Format(time.RFC3339), err)
	}
	return out, nil
}

// scanIndex loads the requests named by the entries of an index bucket whose
// keys start with prefix, in key order, while more(key).
func scanIndex(tx *bolt.Tx, index string, prefix []byte, more func(key []byte) bool) ([]domain.Request, error) {
	records := bucket(tx, bucketRequests)
	var out []domain.Request
	c := bucket(tx, index).Cursor()
	for k, id := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && more(k); k, id = c.Next() {
		raw := records.Get(id)
		if raw == nil {
			return nil, fmt.Errorf("index %s names missing request %s", index, id)
		}
		r, err := decodeRequest(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Move is MoveFrom with no restriction on the current state beyond the
// state table.
func (s *Store) Move(ctx context.Context, id string, to domain.State, actor, detail string, edit func(*domain.Request) error, opts ...domain.WriteOption) (domain.Request, error) {
	return s.MoveFrom(ctx, id, nil, to, actor, detail, edit, opts...)
}

// MoveFrom is the atomic compare-and-set of a request's state. In one write
// transaction it reads the request, checks CanMove(current, to) and, when
// from is not empty, that the current state is one of from; applies edit
// (which may be nil, sees the request as it was before the move, and must
// not change ID); sets State, UpdatedAt and Version; rewrites the indexes;
// and audits {actor, to, id, detail}. An error from edit aborts the move and
// is returned wrapped.
//
// Times the move implies are filled in when still zero: DecidedAt on
// approval or denial, ReadyAt on ready (and ExpiresAt = ReadyAt + Lifetime),
// EndedAt on a terminal state.
//
// An illegal move returns a *MoveError (errors.Is ErrIllegalMove) holding the
// request as it is, so of two approvers clicking at once exactly one wins and
// the other learns who did. ForEnvelope makes a redelivered click move nothing.
func (s *Store) MoveFrom(ctx context.Context, id string, from []domain.State, to domain.State, actor, detail string,
	edit func(*domain.Request) error, opts ...domain.WriteOption) (domain.Request, error) {
	if !to.Valid() {
		return domain.Request{}, fmt.Errorf("move request %s: unknown state %q", id, to)
	}
	now := s.now()
	var moved domain.Request
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if err := s.claimEnvelope(tx, opts, now); err != nil {
			return err
		}
		current, err := getRequest(tx, id)
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
		if err := writeRequest(tx, &current, &next); err != nil {
			return err
		}
		moved = next
		return appendAudit(tx, domain.AuditEvent{At: now, Actor: actor, Action: string(to), RequestID: id, Detail: detail})
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

// Update changes a request's fields without changing its state (IP,
// FalStatus, ThreadTS, Notices, ExpiresAt, ...), in one transaction that also
// rewrites the indexes and bumps Version. ForEnvelope makes a redelivered
// command change nothing.
func (s *Store) Update(ctx context.Context, id string, edit func(*domain.Request) error, opts ...domain.WriteOption) (domain.Request, error) {
	if edit == nil {
		return domain.Request{}, fmt.Errorf("update request %s: no edit", id)
	}
	now := s.now()
	var updated domain.Request
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if err := s.claimEnvelope(tx, opts, now); err != nil {
			return err
		}
		current, err := getRequest(tx, id)
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
		if err := writeRequest(tx, &current, &next); err != nil {
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
// call was the first ever to do so. The bot marks before posting, so a
// restart never posts a notice twice.
func (s *Store) MarkNotice(ctx context.Context, id, name string) (first bool, err error) {
	if name == "" {
		return false, fmt.Errorf("mark notice on request %s: empty notice name", id)
	}
	now := s.now()
	err = s.update(ctx, func(tx *bolt.Tx) error {
		first = false
		current, err := getRequest(tx, id)
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
		return writeRequest(tx, &current, &next)
	})
	if err != nil {
		return false, fmt.Errorf("mark notice %q on request %s: %w", name, id, err)
	}
	return first, nil
}

func getRequest(tx *bolt.Tx, id string) (domain.Request, error) {
	raw := bucket(tx, bucketRequests).Get([]byte(id))
	if raw == nil {
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

// writeRequest stores r and moves its index entries from what old had (nil
// for a new request) to what r has, inside tx.
func writeRequest(tx *bolt.Tx, old, r *domain.Request) error {
	// Readers trust a version to name one content (see liveCache).
	if old != nil && r.Version <= old.Version {
		return fmt.Errorf("request %s: version %d does not follow %d", r.ID, r.Version, old.Version)
	}
	if old != nil {
		if err := deleteIndexes(tx, old); err != nil {
			return fmt.Errorf("unindex request %s: %w", old.ID, err)
		}
	}
	if err := putJSON(bucket(tx, bucketRequests), []byte(r.ID), r); err != nil {
		return err
	}
	if err := putIndexes(tx, r); err != nil {
		return fmt.Errorf("index request %s: %w", r.ID, err)
	}
	return nil
}

// indexEntry is one entry in one index bucket. The value is the request id,
// except in the unfinished index, where the request's version comes first.
type indexEntry struct {
	bucket     string
	key, value []byte
}

// indexEntries lists the index entries a request must have, and no others.
func indexEntries(r *domain.Request) []indexEntry {
	id := []byte(r.ID)
	entries := []indexEntry{{bucket: bucketByUser, key: byUserKey(r), value: id}}
	if r.InstanceID != "" {
		entries = append(entries, indexEntry{bucket: bucketByInstance, key: []byte(r.InstanceID), value: id})
	}
	if !r.State.Terminal() {
		entries = append(entries, indexEntry{bucket: bucketUnfinished, key: unfinishedKey(r), value: unfinishedValue(r)})
	}
	if r.State == domain.StateReady && !r.ExpiresAt.IsZero() {
		entries = append(entries, indexEntry{bucket: bucketExpiring, key: expiringKey(r), value: id})
	}
	if ranAndEnded(r) {
		entries = append(entries, indexEntry{bucket: bucketByEnd, key: byEndKey(r), value: byEndValue(r)})
	}
	return entries
}

func deleteIndexes(tx *bolt.Tx, r *domain.Request) error {
	for _, e := range indexEntries(r) {
		if err := bucket(tx, e.bucket).Delete(e.key); err != nil {
			return err
		}
	}
	return nil
}

func putIndexes(tx *bolt.Tx, r *domain.Request) error {
	for _, e := range indexEntries(r) {
		b := bucket(tx, e.bucket)
		if e.bucket == bucketByInstance {
			if owner := b.Get(e.key); owner != nil && string(owner) != r.ID {
				return fmt.Errorf("instance %s already belongs to request %s", r.InstanceID, owner)
			}
		}
		if err := b.Put(e.key, e.value); err != nil {
			return err
		}
	}
	return nil
}
