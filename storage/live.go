package storage

import (
	"context"
	"fmt"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// liveCache holds the unfinished requests decoded by the last Unfinished
// call. Decoding JSON is most of the cost of listing them, and the bot lists
// them on every poll while few change in between. An entry is used only when
// its version equals the one in the unfinished index of the reader's own
// transaction, and every write bumps the version, so a reader never sees
// anything but its snapshot. The map is never changed once published.
type liveCache struct {
	byID atomic.Pointer[map[string]*Request]
}

func (c *liveCache) snapshot() map[string]*Request {
	if m := c.byID.Load(); m != nil {
		return *m
	}
	return nil
}

func (c *liveCache) publish(m map[string]*Request) { c.byID.Store(&m) }

// Unfinished returns every request not in a terminal state, oldest first.
// It reads only the unfinished index and, for requests that changed since
// the last call, their records: the cost follows the number of unfinished
// requests, not of all requests.
func (s *Store) Unfinished(ctx context.Context) ([]Request, error) {
	previous := s.live.snapshot()
	current := make(map[string]*Request, len(previous))
	out := make([]Request, 0, len(previous))
	err := s.view(ctx, func(tx *bolt.Tx) error {
		records := bucket(tx, bucketRequests)
		c := bucket(tx, bucketUnfinished).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			version, id, ok := splitUnfinishedValue(v)
			if !ok {
				return fmt.Errorf("malformed unfinished index entry %x", k)
			}
			r := previous[string(id)]
			if r == nil || r.Version != version {
				raw := records.Get(id)
				if raw == nil {
					return fmt.Errorf("unfinished index names missing request %s", id)
				}
				decoded, err := decodeRequest(raw)
				if err != nil {
					return err
				}
				if decoded.Version != version {
					return fmt.Errorf("unfinished index has version %d of request %s, the record %d", version, id, decoded.Version)
				}
				r = &decoded
			}
			current[r.ID] = r
			out = append(out, r.clone())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unfinished requests: %w", err)
	}
	s.live.publish(current)
	return out, nil
}
