package storage

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/storage/storetest"
)

// boltBackend opens stores on bbolt files for the conformance suite, and
// checks every index against the records when a test ends.
type boltBackend struct{}

func (boltBackend) Place(t *testing.T) string { return filepath.Join(t.TempDir(), "gpubot.db") }

func (boltBackend) Open(t *testing.T, place string, now func() time.Time) domain.Store {
	t.Helper()
	s, err := Open(place, Options{Now: now})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	tracked := &closeTracked{Store: s}
	t.Cleanup(func() {
		if tracked.closed {
			return // the test closed it, to open the file again
		}
		if err := checkConsistent(s); err != nil {
			t.Errorf("store left inconsistent: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return tracked
}

// closeTracked is a store that knows whether the test closed it.
type closeTracked struct {
	*Store
	closed bool
}

func (c *closeTracked) Close() error {
	c.closed = true
	if err := checkConsistent(c.Store); err != nil {
		return err
	}
	return c.Store.Close()
}

func TestConformance(t *testing.T) {
	storetest.Run(t, boltBackend{})
}
