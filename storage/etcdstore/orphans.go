package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
)

// orphanMemory is how long a reported instance is remembered after fal stopped
// listing it, so a listing that misses it once does not report it again.
const orphanMemory = 24 * time.Hour

// orphanReportTTL keeps the once-ever mark of a report far longer than any
// machine runs.
const orphanReportTTL = 365 * 24 * time.Hour

// SightOrphans records one listing of fal in which the instances ids were
// untracked, as the bbolt store does: each gets one more sighting in a row;
// an unreported instance the listing did not show loses its run; a reported
// one is forgotten orphanMemory after it was last listed. It returns every
// instance still remembered.
func (s *Store) SightOrphans(ctx context.Context, ids []string) (map[string]domain.OrphanSighting, error) {
	now := s.now()
	var out map[string]domain.OrphanSighting
	err := s.write(ctx, false, func(t *txn) error {
		current, err := s.readOrphans(t)
		if err != nil {
			return err
		}
		out = current
		if len(current) == 0 && len(ids) == 0 {
			return nil
		}
		listed := make(map[string]bool, len(ids))
		for _, id := range ids {
			listed[id] = true
			seen := current[id]
			if seen.Count == 0 {
				seen.First = now
			}
			seen.Count++
			seen.Last = now
			current[id] = seen
		}
		for id, seen := range current {
			if !listed[id] && (!seen.Reported || now.Sub(seen.Last) > orphanMemory) {
				delete(current, id)
			}
		}
		return s.writeOrphans(t, current)
	})
	if err != nil {
		return nil, fmt.Errorf("orphan sightings: %w", err)
	}
	return out, nil
}

// Orphans returns the instances remembered as untracked, as SightOrphans left
// them, without counting a listing.
func (s *Store) Orphans(ctx context.Context) (map[string]domain.OrphanSighting, error) {
	var out map[string]domain.OrphanSighting
	err := s.read(ctx, func(t *txn) (err error) {
		out, err = s.readOrphans(t)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("orphan sightings: %w", err)
	}
	return out, nil
}

// MarkOrphanReported records that the admins are being told of instance id and
// reports whether this call is the first ever to do so.
func (s *Store) MarkOrphanReported(ctx context.Context, id string) (first bool, err error) {
	now := s.now()
	err = s.write(ctx, false, func(t *txn) error {
		first, _, err = s.rememberOnce(t, "orphan:"+id, nil, orphanReportTTL, now)
		if err != nil {
			return err
		}
		current, err := s.readOrphans(t)
		if err != nil {
			return err
		}
		seen := current[id]
		if seen.First.IsZero() {
			seen.First = now
		}
		seen.Last, seen.Reported = now, true
		current[id] = seen
		return s.writeOrphans(t, current)
	})
	if err != nil {
		return false, fmt.Errorf("mark orphan %s reported: %w", id, err)
	}
	return first, nil
}

func (s *Store) readOrphans(t *txn) (map[string]domain.OrphanSighting, error) {
	out := map[string]domain.OrphanSighting{}
	raw, found, err := t.get(s.keys.orphans())
	if err != nil || !found {
		return out, err
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode orphan sightings: %w", err)
	}
	return out, nil
}

func (s *Store) writeOrphans(t *txn, sightings map[string]domain.OrphanSighting) error {
	if len(sightings) == 0 {
		t.del(s.keys.orphans())
		return nil
	}
	data, err := encode(sightings)
	if err != nil {
		return err
	}
	t.put(s.keys.orphans(), data)
	return nil
}
