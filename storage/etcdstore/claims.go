package etcdstore

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// session is the store's hold on etcd for the claims of this process: a
// lease kept alive while the process lives. Its claims go with it, so a
// replica that dies (or is paused past the TTL) gives their work to others.
type session struct {
	mu      sync.Mutex
	current *concurrency.Session
}

// sessionLease is the session's lease, starting a session when there is none or
// the last one ended.
func (s *Store) sessionLease(ctx context.Context) (clientv3.LeaseID, error) {
	s.session.mu.Lock()
	defer s.session.mu.Unlock()
	if cur := s.session.current; cur != nil {
		select {
		case <-cur.Done():
			s.session.current = nil
		default:
			return cur.Lease(), nil
		}
	}
	// The grant is bounded by ctx; the keep-alive then runs until Close.
	granted, err := s.cli.Grant(ctx, int64(s.opts.SessionTTL.Seconds()))
	if err != nil {
		return 0, s.rpcError(ctx, fmt.Errorf("start session: %w", err))
	}
	cur, err := concurrency.NewSession(s.cli, concurrency.WithLease(granted.ID))
	if err != nil {
		return 0, fmt.Errorf("start session: %w", err)
	}
	s.session.current = cur
	return cur.Lease(), nil
}

// endSession revokes the session's lease, releasing every claim it holds.
func (s *Store) endSession() error {
	s.session.mu.Lock()
	defer s.session.mu.Unlock()
	if s.session.current == nil {
		return nil
	}
	err := s.session.current.Close()
	s.session.current = nil
	return err
}

// dropSessionIfGone forgets the session when etcd no longer knows its lease
// (it ran out while the process was paused, say), before its keep-alive
// notices, so the next claim starts a new one.
func (s *Store) dropSessionIfGone(ctx context.Context) {
	s.session.mu.Lock()
	defer s.session.mu.Unlock()
	cur := s.session.current
	if cur == nil {
		return
	}
	ttl, err := s.cli.TimeToLive(ctx, cur.Lease())
	if err == nil && ttl.TTL <= 0 {
		cur.Orphan()
		s.session.current = nil
	}
}

// ClaimWork takes request id's next step for the caller: a key under the
// store's session, created only if absent. While it exists no caller of any
// replica gets the claim; release deletes it, and the session's end (Close,
// or the process dying) deletes it too.
func (s *Store) ClaimWork(ctx context.Context, id string) (release func(), ok bool, err error) {
	key := s.keys.claim(id)
	var lease clientv3.LeaseID
	err = s.write(ctx, false, func(t *txn) error {
		ok = false
		if _, held, err := t.get(key); err != nil || held {
			return err
		}
		if lease, err = s.sessionLease(t.ctx); err != nil {
			return err
		}
		t.put(key, []byte(strconv.FormatInt(int64(lease), 16)), clientv3.WithLease(lease))
		ok = true
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("claim work on request %s: %w", id, err)
	}
	if !ok {
		return nil, false, nil
	}
	var once sync.Once
	return func() { once.Do(func() { s.releaseClaim(key, lease) }) }, true, nil
}

// releaseClaim deletes a claim if it is still the one made under lease. A
// release that cannot reach etcd leaves the claim to end with the session.
func (s *Store) releaseClaim(key string, lease clientv3.LeaseID) {
	ctx, cancel := s.bound(context.Background())
	defer cancel()
	_, _ = s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", lease)).
		Then(clientv3.OpDelete(key)).
		Commit()
}
