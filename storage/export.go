package storage

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// Record is one item of what a store holds, as Export gives it: exactly one
// of its fields is set.
type Record struct {
	Key      *UserKey
	Request  *domain.Request
	Audit    *domain.AuditEvent
	Seen     *SeenEntry
	Orphans  map[string]domain.OrphanSighting
	AuditSeq *uint64 // the last audit sequence number handed out
	Home     *HomeMark
}

// HomeMark is one user's first opening of the Home tab.
type HomeMark struct {
	User domain.UserRef
	At   time.Time
}

// UserKey is one user's registered SSH key.
type UserKey struct {
	User domain.UserRef
	Key  domain.StoredKey
}

// SeenEntry is one remembered seen key: an envelope with its answer, an
// alert throttle, a report mark.
type SeenEntry struct {
	Key     string
	Expires time.Time
	Value   []byte
}

// Export hands every item the store holds to visit, from one consistent
// snapshot: the SSH keys, the requests (in id order), the audit trail (in
// order), the audit sequence, the seen keys not yet expired, the orphan
// sightings, and who opened the Home tab. It is what copying the store elsewhere reads; visit may stop it
// by returning an error.
func (s *Store) Export(ctx context.Context, visit func(Record) error) error {
	now := s.now()
	return s.view(ctx, func(tx *bolt.Tx) error {
		for _, step := range []func(*bolt.Tx, time.Time, func(Record) error) error{
			exportKeys, exportRequests, exportAudit, exportSeen, exportOrphans, exportHomes,
		} {
			if err := step(tx, now, visit); err != nil {
				return fmt.Errorf("export: %w", err)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	})
}

func exportKeys(tx *bolt.Tx, _ time.Time, visit func(Record) error) error {
	return bucket(tx, bucketKeys).ForEach(func(k, v []byte) error {
		u, err := decodeUserPrefix(k)
		if err != nil {
			return err
		}
		var key domain.StoredKey
		if err := json.Unmarshal(v, &key); err != nil {
			return fmt.Errorf("decode key of %s: %w", u, err)
		}
		return visit(Record{Key: &UserKey{User: u, Key: key}})
	})
}

func exportRequests(tx *bolt.Tx, _ time.Time, visit func(Record) error) error {
	return bucket(tx, bucketRequests).ForEach(func(_, v []byte) error {
		r, err := decodeRequest(v)
		if err != nil {
			return err
		}
		return visit(Record{Request: &r})
	})
}

func exportAudit(tx *bolt.Tx, _ time.Time, visit func(Record) error) error {
	log := bucket(tx, bucketAudit)
	err := log.ForEach(func(_, v []byte) error {
		e, err := decodeAudit(v)
		if err != nil {
			return err
		}
		return visit(Record{Audit: &e})
	})
	if err != nil {
		return err
	}
	seq := log.Sequence()
	return visit(Record{AuditSeq: &seq})
}

func exportSeen(tx *bolt.Tx, now time.Time, visit func(Record) error) error {
	return bucket(tx, bucketSeen).ForEach(func(k, v []byte) error {
		if len(v) < timeKeyLen {
			return fmt.Errorf("seen key %q has no expiry", k)
		}
		expires := decodeTime(v[:timeKeyLen])
		if !expires.After(now) {
			return nil // forgotten already, only not pruned yet
		}
		return visit(Record{Seen: &SeenEntry{Key: string(k), Expires: expires, Value: append([]byte(nil), v[timeKeyLen:]...)}})
	})
}

func exportOrphans(tx *bolt.Tx, _ time.Time, visit func(Record) error) error {
	sightings, err := readOrphans(tx)
	if err != nil || len(sightings) == 0 {
		return err
	}
	return visit(Record{Orphans: sightings})
}

func exportHomes(tx *bolt.Tx, _ time.Time, visit func(Record) error) error {
	return bucket(tx, bucketHomeOpened).ForEach(func(k, v []byte) error {
		u, err := decodeUserPrefix(k)
		if err != nil {
			return err
		}
		if len(v) < timeKeyLen {
			return fmt.Errorf("home mark of %s has no time", u)
		}
		return visit(Record{Home: &HomeMark{User: u, At: decodeTime(v[:timeKeyLen])}})
	})
}

// decodeUserPrefix reads back what userPrefix wrote.
func decodeUserPrefix(b []byte) (domain.UserRef, error) {
	team, rest, ok := cutField(b)
	if !ok {
		return domain.UserRef{}, fmt.Errorf("malformed user key %x", b)
	}
	user, rest, ok := cutField(rest)
	if !ok || len(rest) != 0 {
		return domain.UserRef{}, fmt.Errorf("malformed user key %x", b)
	}
	return domain.UserRef{TeamID: team, UserID: user}, nil
}

// cutField reads one field appendField wrote.
func cutField(b []byte) (field string, rest []byte, ok bool) {
	n, size := binary.Uvarint(b)
	if size <= 0 || uint64(len(b)-size) < n {
		return "", nil, false
	}
	return string(b[size : size+int(n)]), b[size+int(n):], true
}
