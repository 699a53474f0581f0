package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxSeenKey matches the bbolt store's limit on seen keys.
const maxSeenKey = 1024

// seenEntry is a seen key's value: when it expires by the store's clock, and
// what an envelope was answered with.
type seenEntry struct {
	Expires time.Time `json:"expires"`
	Answer  []byte    `json:"answer,omitempty"`
}

func (s *Store) envelopeKey(opts []domain.WriteOption) string {
	o := domain.CollectOptions(opts)
	if o.EnvelopeID == "" {
		return ""
	}
	return s.keys.seen(envelopeSeenKey(o.EnvelopeID))
}

func envelopeSeenKey(envelopeID string) string { return "envelope:" + envelopeID }

// claimEnvelope runs first in a write made with opts: it records the envelope
// the write is for, or refuses a second effect of one.
func (s *Store) claimEnvelope(t *txn, opts []domain.WriteOption, now time.Time) error {
	o := domain.CollectOptions(opts)
	if o.EnvelopeID == "" {
		return nil
	}
	first, answer, err := s.rememberOnce(t, envelopeSeenKey(o.EnvelopeID), o.Answer, s.opts.EnvelopeTTL, now)
	if err != nil {
		return fmt.Errorf("record envelope %s: %w", o.EnvelopeID, err)
	}
	if !first {
		return &domain.AlreadyDoneError{EnvelopeID: o.EnvelopeID, Answer: answer}
	}
	return nil
}

// EnvelopeAnswer reports whether envelopeID already did its effect (within
// Options.EnvelopeTTL) and what it was answered with, without writing.
func (s *Store) EnvelopeAnswer(ctx context.Context, envelopeID string) (answer []byte, done bool, err error) {
	if envelopeID == "" {
		return nil, false, nil
	}
	now := s.now()
	err = s.read(ctx, func(t *txn) error {
		entry, found, err := s.readSeen(t, envelopeSeenKey(envelopeID))
		if err != nil || !found || !entry.Expires.After(now) {
			return err
		}
		answer, done = entry.Answer, true
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("read envelope %s: %w", envelopeID, err)
	}
	return answer, done, nil
}

// MarkSeen records key (an alert being throttled, say) and reports whether
// this is the first time it is seen within ttl. Each entry is kept by a lease
// that ends within two time buckets after it expires: the memory is bounded by
// time, so it holds what is remembered and no count needs keeping (a count
// every write advanced would make all of them contend).
func (s *Store) MarkSeen(ctx context.Context, key string, ttl time.Duration) (first bool, err error) {
	now := s.now()
	err = s.write(ctx, false, func(t *txn) error {
		first, _, err = s.rememberOnce(t, key, nil, ttl, now)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("mark %q seen: %w", key, err)
	}
	return first, nil
}

// rememberOnce records key with value until now+ttl, unless it is remembered
// and not expired: then it reports false with the value remembered first.
// An entry past its expiry by the store's clock is forgotten whether or not
// its lease has ended yet.
func (s *Store) rememberOnce(t *txn, key string, value []byte, ttl time.Duration, now time.Time) (first bool, earlier []byte, err error) {
	if key == "" || len(key) > maxSeenKey {
		return false, nil, errors.New("seen key must be 1 to 1024 bytes")
	}
	if ttl <= 0 {
		return false, nil, errors.New("seen ttl must be positive")
	}
	entry, found, err := s.readSeen(t, key)
	if err != nil {
		return false, nil, err
	}
	if found && entry.Expires.After(now) {
		return false, entry.Answer, nil
	}
	lease, err := s.leases.until(t.ctx, ttl)
	if err != nil {
		return false, nil, s.rpcError(t.ctx, fmt.Errorf("grant lease: %w", err))
	}
	data, err := encode(seenEntry{Expires: now.Add(ttl), Answer: value})
	if err != nil {
		return false, nil, err
	}
	t.put(s.keys.seen(key), data, clientv3.WithLease(lease))
	return true, nil, nil
}

func (s *Store) readSeen(t *txn, key string) (seenEntry, bool, error) {
	raw, found, err := t.get(s.keys.seen(key))
	if err != nil || !found {
		return seenEntry{}, false, err
	}
	var entry seenEntry
	if err := json.Unmarshal(raw, &entry); err != nil {
		return seenEntry{}, false, fmt.Errorf("decode seen key %q: %w", key, err)
	}
	return entry, true, nil
}

// leaseBuckets shares leases among seen keys that expire close together: one
// lease per time bucket, not one per key, since many leases weigh on etcd.
// A key is put with the lease of the bucket its expiry falls in, which ends
// at the bucket's end plus one bucket, so the key outlives its expiry and
// goes within a bucket or two after it.
type leaseBuckets struct {
	cli *clientv3.Client
	// width overrides bucketWidth (tests that watch a lease end).
	width time.Duration

	mu    sync.Mutex
	byEnd map[bucket]clientv3.LeaseID
	// granting holds the grant under way for a bucket: writes arriving
	// meanwhile wait for it, rather than each granting a lease of its own
	// (every grant is a commit in etcd, in front of the write that asked).
	granting map[bucket]*grant
}

// grant is a lease being granted; done closes when id or err is set.
type grant struct {
	done chan struct{}
	id   clientv3.LeaseID
	err  error
}

type bucket struct {
	end   int64 // unix seconds
	width time.Duration
}

// bucketWidth is short for envelopes and throttles (minutes to hours) and
// longer for marks kept for days, so neither makes many leases.
func bucketWidth(ttl time.Duration) time.Duration {
	if ttl <= 2*time.Hour {
		return time.Minute
	}
	return time.Hour
}

// until is a lease that lasts at least ttl from now, shared with the keys of
// its bucket. Leases count in real time, whatever the store's clock says.
func (l *leaseBuckets) until(ctx context.Context, ttl time.Duration) (clientv3.LeaseID, error) {
	now := time.Now()
	width := bucketWidth(ttl)
	if l.width > 0 {
		width = l.width
	}
	end := now.Add(ttl).Truncate(width).Add(width)
	b := bucket{end: end.Unix(), width: width}
	l.mu.Lock()
	if lease, ok := l.byEnd[b]; ok {
		l.mu.Unlock()
		return lease, nil
	}
	g, wait := l.granting[b]
	if !wait {
		g = &grant{done: make(chan struct{})}
		if l.granting == nil {
			l.granting = map[bucket]*grant{}
		}
		l.granting[b] = g
	}
	l.mu.Unlock()
	if wait {
		select {
		case <-g.done:
			if g.err != nil {
				// That grant failed on its writer's context or connection:
				// this write tries on its own.
				return l.until(ctx, ttl)
			}
			return g.id, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	seconds := int64(math.Ceil(end.Add(width).Sub(now).Seconds()))
	resp, err := l.cli.Grant(ctx, seconds)
	if err == nil {
		g.id = resp.ID
	}
	g.err = err
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.granting, b)
	close(g.done)
	if err != nil {
		return 0, err
	}
	if l.byEnd == nil {
		l.byEnd = map[bucket]clientv3.LeaseID{}
	}
	for old := range l.byEnd {
		if old.end < now.Unix() { // no new key falls in a bucket that ended
			delete(l.byEnd, old)
		}
	}
	l.byEnd[b] = resp.ID
	return resp.ID, nil
}

// forget drops every known lease, after etcd said one is gone.
func (l *leaseBuckets) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byEnd = nil
}
