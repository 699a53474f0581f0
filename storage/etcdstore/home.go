package etcdstore

import (
	"context"
	"fmt"

	"github.com/gpubot/gpubot/internal/domain"
)

// MarkHomeOpened records for good that u opened gpubot's Home tab; marking
// again writes nothing.
func (s *Store) MarkHomeOpened(ctx context.Context, u domain.UserRef) error {
	if err := u.Validate(); err != nil {
		return fmt.Errorf("mark home opened: %w", err)
	}
	now := s.now()
	err := s.write(ctx, false, func(t *txn) error {
		if _, opened, err := t.get(s.keys.homeOpened(u)); err != nil || opened {
			return err
		}
		t.put(s.keys.homeOpened(u), []byte(now.Format(timeFormat)))
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark home opened for %s: %w", u, err)
	}
	return nil
}

// HomeOpened reports whether u ever opened gpubot's Home tab, through any replica.
func (s *Store) HomeOpened(ctx context.Context, u domain.UserRef) (bool, error) {
	var opened bool
	err := s.read(ctx, func(t *txn) (err error) {
		_, opened, err = t.get(s.keys.homeOpened(u))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("home opened by %s: %w", u, err)
	}
	return opened, nil
}
