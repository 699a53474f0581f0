package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// orphanMemory is how long a reported instance is remembered after fal stopped
// listing it, so a listing that misses it once does not report it again.
const orphanMemory = 24 * time.Hour

// orphanReportTTL keeps the once-ever mark of a report (a seen key, as files
// written before sightings were stored have it) far longer than any machine runs.
const orphanReportTTL = 365 * 24 * time.Hour

// SightOrphans records one listing of fal in which the instances ids were
// untracked. Each gets one more sighting in a row; an unreported instance the
// listing did not show loses its run (it was a create whose answer was on its
// way, or it is gone); a reported one is forgotten orphanMemory after it was
// last listed. It returns every instance still remembered. Kept in the store,
// the counts survive restarts.
func (s *Store) SightOrphans(ctx context.Context, ids []string) (map[string]domain.OrphanSighting, error) {
	now := s.now()
	var out map[string]domain.OrphanSighting
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		out, err = readOrphans(tx)
		return err
	})
	if err != nil || (len(out) == 0 && len(ids) == 0) {
		return out, wrapOrphans(err)
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		current, err := readOrphans(tx)
		if err != nil {
			return err
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
		out = current
		return writeOrphans(tx, current)
	})
	return out, wrapOrphans(err)
}

// Orphans returns the instances remembered as untracked, as SightOrphans left them,
// without counting a listing.
func (s *Store) Orphans(ctx context.Context) (map[string]domain.OrphanSighting, error) {
	var out map[string]domain.OrphanSighting
	err := s.view(ctx, func(tx *bolt.Tx) (err error) {
		out, err = readOrphans(tx)
		return err
	})
	return out, wrapOrphans(err)
}

// MarkOrphanReported records that the admins are being told of instance id and
// reports whether this call is the first ever to do so.
func (s *Store) MarkOrphanReported(ctx context.Context, id string) (first bool, err error) {
	now := s.now()
	err = s.update(ctx, func(tx *bolt.Tx) error {
		first, err = s.markSeen(tx, "orphan:"+id, orphanReportTTL, now)
		if err != nil {
			return err
		}
		current, err := readOrphans(tx)
		if err != nil {
			return err
		}
		seen := current[id]
		if seen.First.IsZero() {
			seen.First = now
		}
		seen.Last, seen.Reported = now, true
		current[id] = seen
		return writeOrphans(tx, current)
	})
	if err != nil {
		return false, fmt.Errorf("mark orphan %s reported: %w", id, err)
	}
	return first, nil
}

func readOrphans(tx *bolt.Tx) (map[string]domain.OrphanSighting, error) {
	out := map[string]domain.OrphanSighting{}
	raw := bucket(tx, bucketMeta).Get([]byte(metaOrphansKey))
	if raw == nil {
		return out, nil
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode orphan sightings: %w", err)
	}
	return out, nil
}

func writeOrphans(tx *bolt.Tx, sightings map[string]domain.OrphanSighting) error {
	if len(sightings) == 0 {
		return bucket(tx, bucketMeta).Delete([]byte(metaOrphansKey))
	}
	return putJSON(bucket(tx, bucketMeta), []byte(metaOrphansKey), sightings)
}

func wrapOrphans(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("orphan sightings: %w", err)
}
