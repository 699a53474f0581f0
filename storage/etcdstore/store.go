// Package etcdstore keeps gpubot's state in etcd, so that several gpubot
// replicas share it. It keeps every promise of domain.Store that the bbolt
// store keeps: each write is one etcd transaction that compares the revisions
// of everything it read, and writes a request, its indexes, its audit event
// and the record of its Slack envelope together, or nothing.
package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultPrefix is where gpubot's keys live when no prefix is given.
const DefaultPrefix = "/gpubot/"

// SchemaVersion is the newest key layout this gpubot understands.
const SchemaVersion = 1

// Options tune a Store; the zero value is usable.
type Options struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// EnvelopeTTL is how long a write made ForEnvelope is remembered, to
	// answer a redelivery of its envelope. Default 1h.
	EnvelopeTTL time.Duration
	// SessionTTL is how long the claims of a replica that died hold its
	// requests' work before another replica may take it. Default 10s.
	SessionTTL time.Duration
	// Timeout bounds each call when its context has no deadline, so that an
	// etcd out of reach fails a call instead of hanging it. Default 5s.
	Timeout time.Duration
}

const (
	defaultEnvelopeTTL = time.Hour
	defaultTimeout     = 5 * time.Second
	defaultSessionTTL  = 10 * time.Second
)

func (o Options) withDefaults() Options {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.EnvelopeTTL <= 0 {
		o.EnvelopeTTL = defaultEnvelopeTTL
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = defaultSessionTTL
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	return o
}

var _ domain.Store = (*Store)(nil)

// Store is gpubot's state under one key prefix of an etcd. It is safe for
// concurrent use, by several processes too.
type Store struct {
	cli     *clientv3.Client
	keys    keyspace
	opts    Options
	live    liveCache
	leases  leaseBuckets
	session session
	// committer commits the audited writes, which all advance the one audit
	// sequence, in groups: one transaction for what is queued.
	committer committer
}

// Open opens the store under prefix ("" means DefaultPrefix) on cli, which
// the caller made (with its TLS and credentials) and closes. A new prefix
// gets the current schema version; one written by a newer gpubot is refused
// with domain.ErrNewerSchema.
func Open(ctx context.Context, cli *clientv3.Client, prefix string, opts Options) (*Store, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	s := &Store{cli: cli, keys: keyspace{prefix: prefix}, opts: opts.withDefaults()}
	s.leases.cli = cli
	s.committer.s = s
	if err := s.checkSchema(ctx); err != nil {
		return nil, fmt.Errorf("open etcd store at %s: %w", prefix, err)
	}
	return s, nil
}

// Prefix is the key prefix the store lives under.
func (s *Store) Prefix() string { return s.keys.prefix }

// Close ends the store's session, releasing the claims it holds; the client
// stays open, as its owner's.
func (s *Store) Close() error {
	if err := s.endSession(); err != nil {
		return fmt.Errorf("close etcd store at %s: %w", s.keys.prefix, err)
	}
	return nil
}

// checkSchema writes the schema version on a new prefix and refuses a newer one.
func (s *Store) checkSchema(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	key := s.keys.schema()
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.Itoa(SchemaVersion))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return s.rpcError(ctx, fmt.Errorf("read schema version: %w", err))
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return errors.New("read schema version: the key vanished while it was read")
	}
	version, err := strconv.Atoi(string(kvs[0].Value))
	if err != nil || version < 1 {
		return fmt.Errorf("read schema version: %q is not a version", kvs[0].Value)
	}
	if version > SchemaVersion {
		return fmt.Errorf("the store was written by a newer gpubot (schema %d); this one understands up to %d: upgrade gpubot: %w",
			version, SchemaVersion, domain.ErrNewerSchema)
	}
	return nil
}

// now is the store's clock in UTC without a monotonic reading, so a time
// read back equals the one written.
func (s *Store) now() time.Time { return s.opts.Now().UTC().Round(0) }

// bound gives ctx the store's timeout when it has no deadline of its own.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.opts.Timeout)
}

// rpcError marks an error of a call to etcd that did not reach it, or got no
// answer in time, as domain.ErrUnavailable. A caller that cancelled gets its
// own error.
func (s *Store) rpcError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return err
	}
	if unreachable(err) {
		return fmt.Errorf("%w: %w", domain.ErrUnavailable, err)
	}
	return err
}

// commitError is rpcError for a transaction that was sent: when etcd could not
// be reached or did not answer, it may have applied the transaction all the same.
func (s *Store) commitError(ctx context.Context, err error) error {
	err = s.rpcError(ctx, err)
	if errors.Is(err, domain.ErrUnavailable) {
		return fmt.Errorf("%w: %w", domain.ErrOutcomeUnknown, err)
	}
	return err
}

func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var coded interface{ Code() codes.Code }
	code := status.Code(err)
	if errors.As(err, &coded) {
		code = coded.Code()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Canceled:
		return true
	}
	return errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout)
}
