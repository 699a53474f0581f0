package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// pruneBatch bounds the clean-up work one MarkSeen does, so a write never
// stalls on a large backlog of expired entries.
const pruneBatch = 64

// maxSeenKey keeps seen keys far below bbolt's key size limit.
const maxSeenKey = 1024

// MarkSeen records key (an alert being throttled, say) and reports
// whether this is the first time it is seen within ttl. Expired entries are
// pruned a few at a time on every call, and the memory is bounded by
// Options.MaxSeen.
func (s *Store) MarkSeen(ctx context.Context, key string, ttl time.Duration) (first bool, err error) {
	now := s.now()
	err = s.update(ctx, func(tx *bolt.Tx) error {
		first, err = s.markSeen(tx, key, ttl, now)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("mark %q seen: %w", key, err)
	}
	return first, nil
}

func (s *Store) markSeen(tx *bolt.Tx, key string, ttl time.Duration, now time.Time) (bool, error) {
	first, _, err := s.rememberOnce(tx, key, nil, ttl, now)
	return first, err
}

// rememberOnce records key with value until now+ttl, unless it is remembered
// and not expired: then it reports false with the value remembered first.
func (s *Store) rememberOnce(tx *bolt.Tx, key string, value []byte, ttl time.Duration, now time.Time) (first bool, earlier []byte, err error) {
	if key == "" || len(key) > maxSeenKey {
		return false, nil, errors.New("seen key must be 1 to 1024 bytes")
	}
	if ttl <= 0 {
		return false, nil, errors.New("seen ttl must be positive")
	}
	mem := seenMemory{tx: tx, seen: bucket(tx, bucketSeen), byExpiry: bucket(tx, bucketSeenByExpiry)}
	count := mem.count()
	k := []byte(key)
	if old := mem.seen.Get(k); old != nil {
		if decodeTime(old[:timeKeyLen]).After(now) {
			return false, bytes.Clone(old[timeKeyLen:]), nil
		}
		if err := mem.forget(k, old[:timeKeyLen]); err != nil {
			return false, nil, err
		}
		count--
	}
	count, err = mem.prune(now, count, s.opts.MaxSeen)
	if err != nil {
		return false, nil, err
	}
	if err := mem.remember(k, now.Add(ttl), value); err != nil {
		return false, nil, err
	}
	return true, nil, mem.setCount(count + 1)
}

// seenMemory is the seen bucket with its expiry index and entry count, all
// changed together inside one transaction.
type seenMemory struct {
	tx             *bolt.Tx
	seen, byExpiry *bolt.Bucket
}

func (m seenMemory) count() int {
	raw := bucket(m.tx, bucketMeta).Get([]byte(metaSeenCountKey))
	if len(raw) != 8 {
		return 0
	}
	return int(binary.BigEndian.Uint64(raw))
}

func (m seenMemory) setCount(n int) error {
	return bucket(m.tx, bucketMeta).Put([]byte(metaSeenCountKey), binary.BigEndian.AppendUint64(nil, uint64(max(n, 0))))
}

// remember stores an entry as its expiry time followed by value, the expiry
// first so that entries written before values existed read the same.
func (m seenMemory) remember(key []byte, expires time.Time, value []byte) error {
	at := appendTime(nil, expires)
	if err := m.seen.Put(key, append(bytes.Clone(at), value...)); err != nil {
		return err
	}
	return m.byExpiry.Put(append(at, key...), nil)
}

func (m seenMemory) forget(key, expiry []byte) error {
	indexKey := append(bytes.Clone(expiry), key...)
	if err := m.seen.Delete(key); err != nil {
		return err
	}
	return m.byExpiry.Delete(indexKey)
}

// prune drops up to pruneBatch expired entries, then, while the memory is
// full, the entries nearest their expiry (with one ttl, the oldest). It
// returns the new count.
func (m seenMemory) prune(now time.Time, count, limit int) (int, error) {
	c := m.byExpiry.Cursor()
	dropped := 0
	for k, _ := c.First(); k != nil && dropped < pruneBatch; k, _ = c.First() {
		full := count >= limit
		expired := !decodeTime(k[:timeKeyLen]).After(now)
		if !full && !expired {
			break
		}
		if err := m.seen.Delete(bytes.Clone(k[timeKeyLen:])); err != nil {
			return count, err
		}
		if err := c.Delete(); err != nil {
			return count, err
		}
		count--
		dropped++
	}
	return count, nil
}
