package storage

import (
	"context"
	"sync"
)

// claims are the requests whose next step a caller has taken. One process
// holds the file, so the claims of all its callers live here, and a crash
// gives them all back.
type claims struct {
	mu   sync.Mutex
	held map[string]bool
}

// ClaimWork takes request id's next step for the caller; see domain.Store.
func (s *Store) ClaimWork(ctx context.Context, id string) (release func(), ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	s.claims.mu.Lock()
	defer s.claims.mu.Unlock()
	if s.claims.held[id] {
		return nil, false, nil
	}
	if s.claims.held == nil {
		s.claims.held = map[string]bool{}
	}
	s.claims.held[id] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			s.claims.mu.Lock()
			delete(s.claims.held, id)
			s.claims.mu.Unlock()
		})
	}, true, nil
}
