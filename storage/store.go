// Package storage keeps all of gpubot's state in one bbolt file: users' SSH
// keys, requests with their life-cycle, the memory of Slack deliveries already
// handled, and the audit trail. Every change is one transaction that also
// maintains the indexes, so after a crash the file is whole and consistent.
package storage

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
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Options tune a Store; the zero value is usable.
type Options struct {
	// OpenTimeout bounds the wait for the file lock, so a second gpubot on the
	// same file fails quickly with ErrInUse instead of hanging. Default 1s.
	OpenTimeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// MaxSeen bounds the memory of seen keys (alert throttles, and the
	// envelopes recorded with their effects); the entries nearest their expiry
	// go first. Default 100,000.
	MaxSeen int
	// EnvelopeTTL is how long a write made ForEnvelope is remembered, to
	// answer a redelivery of its envelope. Slack's retries end within
	// minutes. Default 1h.
	EnvelopeTTL time.Duration
	// NoSync commits without fsync: a crash may lose recent writes or the
	// whole file. Only for tests that build a large store quickly.
	NoSync bool
}

const (
	defaultOpenTimeout = time.Second
	defaultMaxSeen     = 100_000
	defaultEnvelopeTTL = time.Hour
)

func (o Options) withDefaults() Options {
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = defaultOpenTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxSeen <= 0 {
		o.MaxSeen = defaultMaxSeen
	}
	if o.EnvelopeTTL <= 0 {
		o.EnvelopeTTL = defaultEnvelopeTTL
	}
	return o
}

var _ domain.Store = (*Store)(nil)

// Store is gpubot's database on one bbolt file. It is safe for concurrent use.
type Store struct {
	db     *bolt.DB
	writer *committer
	path   string
	opts   Options
	live   liveCache
	claims claims
}

// Open opens (creating if needed) the bbolt file at path and brings its
// schema up to date. It fails with ErrInUse when another process holds the
// file, and with ErrNewerSchema when a newer gpubot wrote it.
func Open(path string, opts Options) (*Store, error) {
	return openWith(path, opts, migrations())
}

func openWith(path string, opts Options, steps []migration) (*Store, error) {
	opts = opts.withDefaults()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.OpenTimeout,
		// Not writing the free-page list on every commit makes each commit
		// cheaper; the list is rebuilt when the file is opened (tens of ms
		// for 100k requests), as etcd does.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		NoSync:         opts.NoSync,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, &sentinelError{
			message: fmt.Sprintf("%s is in use by another gpubot (it holds the file lock); "+
				"stop it or set DB_PATH to another file", path),
			sentinel: ErrInUse,
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return migrate(tx, steps) }); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return &Store{db: db, writer: newCommitter(db), path: path, opts: opts}, nil
}

// Close releases the file and its lock.
func (s *Store) Close() error {
	s.writer.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close database %s: %w", s.path, err)
	}
	return nil
}

// now is the store's clock in UTC without a monotonic reading, so a time
// read back from the file equals the one written.
func (s *Store) now() time.Time { return s.opts.Now().UTC().Round(0) }

func (s *Store) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}

// update commits a write through the store's one writer, which lets concurrent writes
// share a transaction and an fsync (see committer). fn may run more than once, so it
// must only touch tx and set its results afresh on every run.
func (s *Store) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.writer.write(fn)
}

// migration brings a file from schema version `from` to from+1.
type migration struct {
	from  int
	apply func(*bolt.Tx) error
}

// migrations lists every schema step in order; the schema version this
// gpubot writes is len(migrations()).
func migrations() []migration {
	return []migration{
		{from: 0, apply: createBucketsV1},
		{from: 1, apply: indexByEndV2},
		{from: 2, apply: createHomeBucket},
	}
}

// SchemaVersion is the newest file layout this gpubot understands.
func SchemaVersion() int { return len(migrations()) }

func createBucketsV1(tx *bolt.Tx) error {
	for _, name := range []string{
		bucketMeta, bucketKeys, bucketRequests, bucketByInstance, bucketByUser, bucketUnfinished,
		bucketExpiring, bucketSeen, bucketSeenByExpiry, bucketAudit, bucketAuditByRequest,
	} {
		if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

// indexByEndV2 adds the index of finished machines by when they ended, for the
// requests already stored.
func indexByEndV2(tx *bolt.Tx) error {
	index, err := tx.CreateBucketIfNotExists([]byte(bucketByEnd))
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketByEnd, err)
	}
	type entry struct{ key, value []byte }
	var entries []entry
	err = bucket(tx, bucketRequests).ForEach(func(_, raw []byte) error {
		// Only the fields the index needs: decoding whole records made this step
		// take seconds on a large file.
		var r domain.Request
		var fields struct {
			ID      string       `json:"id"`
			TeamID  string       `json:"team_id"`
			UserID  string       `json:"user_id"`
			State   domain.State `json:"state"`
			ReadyAt time.Time    `json:"ready_at"`
			EndedAt time.Time    `json:"ended_at"`
		}
		if err := json.Unmarshal(raw, &fields); err != nil {
			return fmt.Errorf("decode request: %w", err)
		}
		r.ID, r.TeamID, r.UserID, r.State, r.ReadyAt, r.EndedAt = fields.ID, fields.TeamID, fields.UserID, fields.State, fields.ReadyAt, fields.EndedAt
		if ranAndEnded(&r) {
			entries = append(entries, entry{byEndKey(&r), byEndValue(&r)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	// In key order, which bbolt writes fastest, and into full pages: the index grows
	// at its end from now on.
	slices.SortFunc(entries, func(a, b entry) int { return bytes.Compare(a.key, b.key) })
	index.FillPercent = 1
	for _, e := range entries {
		if err := index.Put(e.key, e.value); err != nil {
			return err
		}
	}
	return nil
}

// migrate runs, inside the one transaction tx, every step the file has not
// had yet, so a failed step leaves the file as it was.
func migrate(tx *bolt.Tx, steps []migration) error {
	current, err := schemaOf(tx)
	if err != nil {
		return err
	}
	known := len(steps)
	if current > known {
		return &sentinelError{
			message: fmt.Sprintf("the database was written by a newer gpubot (schema %d); "+
				"this one understands up to %d: upgrade gpubot", current, known),
			sentinel: domain.ErrNewerSchema,
		}
	}
	for _, step := range steps[current:] {
		if err := step.apply(tx); err != nil {
			return fmt.Errorf("migrate schema %d to %d: %w", step.from, step.from+1, err)
		}
	}
	if current == known {
		return nil
	}
	meta, err := tx.CreateBucketIfNotExists([]byte(bucketMeta))
	if err != nil {
		return fmt.Errorf("create meta bucket: %w", err)
	}
	return meta.Put([]byte(metaSchemaKey), []byte(strconv.Itoa(known)))
}

// schemaOf reads the file's schema version; a new, empty file is version 0.
func schemaOf(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket([]byte(bucketMeta))
	if meta == nil {
		return 0, nil
	}
	raw := meta.Get([]byte(metaSchemaKey))
	if raw == nil {
		return 0, nil
	}
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < 0 {
		return 0, fmt.Errorf("read schema version: %q is not a version", raw)
	}
	return v, nil
}

// bucket returns a bucket the schema guarantees to exist.
func bucket(tx *bolt.Tx, name string) *bolt.Bucket {
	return tx.Bucket([]byte(name))
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	return b.Put(key, data)
}
