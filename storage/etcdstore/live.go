package etcdstore

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/gpubot/gpubot/internal/domain"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// liveCache holds the unfinished requests decoded by the last listing.
// Decoding is most of the cost of a listing, and the tracker lists them on
// every poll while few change in between. The unfinished index carries each
// request's version, read from etcd at one revision with the listing, and
// every write (by any replica) bumps it, so a cached copy is used only while
// it is exactly what etcd holds. The map is never changed once published.
type liveCache struct {
	byID atomic.Pointer[map[string]*domain.Request]
}

func (c *liveCache) snapshot() map[string]*domain.Request {
	if m := c.byID.Load(); m != nil {
		return *m
	}
	return nil
}

func (c *liveCache) publish(m map[string]*domain.Request) { c.byID.Store(&m) }

// Unfinished returns every request not in a terminal state, oldest first,
// with one read of the unfinished index: its cost follows the number of
// unfinished requests, not of all requests.
func (s *Store) Unfinished(ctx context.Context) ([]domain.Request, error) {
	return s.unfinished(ctx, func(*domain.Request) bool { return true })
}

// UnfinishedOf returns u's requests not in a terminal state, oldest first.
func (s *Store) UnfinishedOf(ctx context.Context, u domain.UserRef) ([]domain.Request, error) {
	return s.unfinished(ctx, func(r *domain.Request) bool { return r.Owner() == u })
}

func (s *Store) unfinished(ctx context.Context, keep func(*domain.Request) bool) ([]domain.Request, error) {
	previous := s.live.snapshot()
	var listed []*domain.Request
	err := s.read(ctx, func(t *txn) error {
		resp, err := s.cli.Get(t.ctx, s.keys.unfinishedIndex(), clientv3.WithPrefix())
		if err != nil {
			return s.rpcError(t.ctx, err)
		}
		listed = make([]*domain.Request, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			version, data, ok := splitUnfinishedValue(kv.Value)
			if !ok {
				return fmt.Errorf("malformed unfinished index entry %s", kv.Key)
			}
			id := s.keys.unfinishedID(kv.Key)
			if r := previous[id]; r != nil && r.Version == version {
				listed = append(listed, r)
				continue
			}
			decoded, err := decodeRequest(data)
			if err != nil {
				return err
			}
			listed = append(listed, &decoded)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unfinished requests: %w", err)
	}
	current := make(map[string]*domain.Request, len(listed))
	var out []domain.Request
	for _, r := range listed {
		current[r.ID] = r
		if keep(r) {
			out = append(out, r.Clone())
		}
	}
	s.live.publish(current)
	return out, nil
}
