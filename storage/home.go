package storage

import (
	"context"
	"fmt"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// MarkHomeOpened records that u has opened gpubot's Home tab, so that the tab is
// published again when something of u's changes; people who never opened it get no
// views.publish calls. Marking again changes nothing and writes nothing. The mark is
// kept for good (Slack keeps showing the last published tab).
func (s *Store) MarkHomeOpened(ctx context.Context, u domain.UserRef) error {
	if err := u.Validate(); err != nil {
		return fmt.Errorf("mark home opened: %w", err)
	}
	if opened, err := s.HomeOpened(ctx, u); err != nil || opened {
		return err
	}
	at := appendTime(nil, s.now())
	err := s.update(ctx, func(tx *bolt.Tx) error {
		homes := bucket(tx, bucketHomeOpened)
		if homes.Get(userPrefix(u)) != nil {
			return nil
		}
		return homes.Put(userPrefix(u), at)
	})
	if err != nil {
		return fmt.Errorf("mark home opened for %s: %w", u, err)
	}
	return nil
}

// HomeOpened reports whether u has ever opened gpubot's Home tab.
func (s *Store) HomeOpened(ctx context.Context, u domain.UserRef) (bool, error) {
	var opened bool
	err := s.view(ctx, func(tx *bolt.Tx) error {
		opened = bucket(tx, bucketHomeOpened).Get(userPrefix(u)) != nil
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("home opened by %s: %w", u, err)
	}
	return opened, nil
}

// createHomeBucket is schema 3: the users who opened the Home tab.
func createHomeBucket(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists([]byte(bucketHomeOpened)); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketHomeOpened, err)
	}
	return nil
}
