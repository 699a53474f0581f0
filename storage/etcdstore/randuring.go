package etcdstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RanDuring returns every request whose machine was ready at some moment in
// [from, to): ReadyAt before to, and either not finished yet or EndedAt after
// from; with owners given, only theirs. The live requests come from the
// listing Unfinished keeps; of the finished ones it reads the index entries
// of those that ended after from, and only the records it returns.
func (s *Store) RanDuring(ctx context.Context, from, to time.Time, owners ...domain.UserRef) ([]domain.Request, error) {
	wanted := map[string]bool{}
	for _, u := range owners {
		wanted[ownerTag(u)] = true
	}
	isWanted := func(tag string) bool { return len(wanted) == 0 || wanted[tag] }
	out, err := s.unfinished(ctx, func(r *domain.Request) bool {
		return !r.ReadyAt.IsZero() && r.ReadyAt.Before(to) && isWanted(ownerTag(r.Owner()))
	})
	if err != nil {
		return nil, fmt.Errorf("requests that ran from %s: %w", from.Format(time.RFC3339), err)
	}
	at := make(map[string]int, len(out))
	for i, r := range out {
		at[r.ID] = i
	}
	err = s.read(ctx, func(t *txn) error {
		index := s.keys.endedIndex()
		resp, err := s.cli.Get(t.ctx, index+ascendingTime(from.Add(1)), clientv3.WithRange(clientv3.GetPrefixRangeEnd(index)))
		if err != nil {
			return s.rpcError(t.ctx, err)
		}
		limit := ascendingTime(to)
		var keys []string
		for _, kv := range resp.Kvs {
			ready, owner, ok := strings.Cut(string(kv.Value), "/")
			if !ok || len(kv.Key) < len(index)+len(limit)+1 {
				return fmt.Errorf("malformed ended index entry %s", kv.Key)
			}
			if ready >= limit || !isWanted(owner) {
				continue
			}
			keys = append(keys, s.keys.request(string(kv.Key[len(index)+len(limit)+1:])))
		}
		values, err := s.getMany(t.ctx, keys, resp.Header.Revision)
		if err != nil {
			return err
		}
		for i, raw := range values {
			if raw == nil {
				return fmt.Errorf("ended index names missing request %s", keys[i])
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
