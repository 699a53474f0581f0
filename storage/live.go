package storage

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// liveCache holds the unfinished requests decoded by the last Unfinished
// call. Decoding JSON is most of the cost of listing them, and the bot lists
// them on every poll while few change in between. An entry is used only when
// its version equals the one in the unfinished index of the reader's own
// transaction, and every write bumps the version, so a reader never sees
// anything but its snapshot. The map is never changed once published.
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

// Unfinished returns every request not in a terminal state, oldest first.
// It reads only the unfinished index and, for requests that changed since
// the last call, their records: the cost follows the number of unfinished
// requests, not of all requests.
func (s *Store) Unfinished(ctx context.Context) ([]domain.Request, error) {
	return s.unfinished(ctx, func(*domain.Request) bool { return true })
}

// UnfinishedOf returns u's requests not in a terminal state, oldest first. Like
// Unfinished it reads the live requests, not u's history, and copies only u's.
func (s *Store) UnfinishedOf(ctx context.Context, u domain.UserRef) ([]domain.Request, error) {
	return s.unfinished(ctx, func(r *domain.Request) bool { return r.Owner() == u })
}

// unfinished lists the requests not in a terminal state that keep accepts.
func (s *Store) unfinished(ctx context.Context, keep func(*domain.Request) bool) ([]domain.Request, error) {
	previous := s.live.snapshot()
	current := make(map[string]*domain.Request, len(previous))
	var listed []*domain.Request
	err := s.view(ctx, func(tx *bolt.Tx) error {
		records := bucket(tx, bucketRequests)
		var stale []staleRecord
		c := bucket(tx, bucketUnfinished).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			version, id, ok := splitUnfinishedValue(v)
			if !ok {
				return fmt.Errorf("malformed unfinished index entry %x", k)
			}
			if r := previous[string(id)]; r != nil && r.Version == version {
				listed = append(listed, r)
				continue
			}
			raw := records.Get(id)
			if raw == nil {
				return fmt.Errorf("unfinished index names missing request %s", id)
			}
			stale = append(stale, staleRecord{at: len(listed), id: id, raw: raw, version: version})
			listed = append(listed, nil)
		}
		// raw points into the database's memory map: decode before the transaction ends.
		return decodeStale(stale, listed)
	})
	if err != nil {
		return nil, fmt.Errorf("unfinished requests: %w", err)
	}
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

// staleRecord is an unfinished request whose cached copy is missing or old.
type staleRecord struct {
	at      int // its place in the listing
	id, raw []byte
	version int64
}

// decodeStale decodes the records into their places in listed. Decoding is most of
// the cost of a listing after a restart, when nothing is cached, so a long list is
// decoded on every core.
func decodeStale(stale []staleRecord, listed []*domain.Request) error {
	workers := min(runtime.GOMAXPROCS(0), len(stale)/64+1)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(stale); i += workers {
				rec := stale[i]
				decoded, err := decodeRequest(rec.raw)
				if err == nil && decoded.Version != rec.version {
					err = fmt.Errorf("unfinished index has version %d of request %s, the record %d", rec.version, rec.id, decoded.Version)
				}
				if err != nil {
					errs[w] = err
					return
				}
				listed[rec.at] = &decoded
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
