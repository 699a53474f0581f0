package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// lastTxID is the id of the last committed write transaction.
func lastTxID(t *testing.T, s *Store) int {
	t.Helper()
	var id int
	if err := s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return id
}

// Writes that arrive while another is being committed share the next commit (one
// fsync), so a burst of commands does not queue behind one fsync each, and each
// caller still gets its own outcome: a failing write fails alone.
func TestConcurrentWritesShareCommits(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	live := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	before := lastTxID(t, s)

	const writers = 200
	errs := make([]error, writers)
	firsts := make([]bool, writers)
	var ready, done sync.WaitGroup
	release := make(chan struct{})
	for i := range writers {
		ready.Add(1)
		done.Go(func() {
			ready.Done()
			<-release
			switch i % 4 {
			case 0: // not a request: fails, and must not take the others down with it
				_, errs[i] = s.Move(ctx, fmt.Sprintf("missing-%d", i), domain.StateCreating, "gpubot", "", nil)
			case 1:
				errs[i] = s.Audit(ctx, domain.AuditEvent{Actor: "gpubot", Action: "noted", RequestID: live.ID, Detail: fmt.Sprint(i)})
			default:
				firsts[i], errs[i] = s.MarkSeen(ctx, fmt.Sprintf("Ev%04d", i), time.Hour)
			}
		})
	}
	ready.Wait()
	close(release)
	done.Wait()

	for i, err := range errs {
		if i%4 == 0 {
			if !errors.Is(err, domain.ErrNotFound) {
				t.Errorf("write %d: got %v, want domain.ErrNotFound", i, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
		if i%4 > 1 && !firsts[i] {
			t.Errorf("write %d: a new key was not seen first", i)
		}
	}
	history, err := s.AuditFor(ctx, live.ID)
	if err != nil {
		t.Fatal(err)
	}
	if noted := len(history) - 1; noted != writers/4 {
		t.Errorf("%d audit events recorded, want %d", noted, writers/4)
	}
	// 150 writes succeeded; alone, each would be one commit.
	if commits := lastTxID(t, s) - before; commits > writers/4 {
		t.Errorf("%d concurrent writes took %d commits, want them to share (at most %d)", writers, commits, writers/4)
	}
	if err := checkConsistent(s); err != nil {
		t.Fatal(err)
	}
}

// Closing twice is harmless, and a write after the close fails instead of hanging.
func TestWriteAfterClose(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "gpubot.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if _, err := s.MarkSeen(context.Background(), "Ev1", time.Hour); err == nil {
		t.Error("a write after Close succeeded")
	}
}
