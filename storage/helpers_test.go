package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/testkit"

	bolt "go.etcd.io/bbolt"
)

// newTestClock is the clock storage tests start from.
func newTestClock() *testkit.Clock {
	return testkit.FixedClock(time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC))
}

func openTestStore(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "gpubot.db"), opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := checkConsistent(s); err != nil {
			t.Errorf("store left inconsistent: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

var alice = domain.UserRef{TeamID: "T1", UserID: "UALICE"}

func newRequest(u domain.UserRef, state domain.State) *domain.Request {
	return &domain.Request{
		TeamID: u.TeamID, UserID: u.UserID, ChannelID: "C1", CommandChannel: "C1",
		InstanceType: "gpu_8x_h100_sxm5", Sector: "sector_1", Reason: "training run",
		SSHKey: "ssh-ed25519 AAAA test", Lifetime: 8 * time.Hour, State: state,
	}
}

func mustCreate(t testing.TB, s *Store, r *domain.Request) domain.Request {
	t.Helper()
	if err := s.CreateRequest(context.Background(), r); err != nil {
		t.Fatalf("create request: %v", err)
	}
	return *r
}

func mustMove(t testing.TB, s *Store, id string, to domain.State, edit func(*domain.Request) error) domain.Request {
	t.Helper()
	r, err := s.Move(context.Background(), id, to, "UADMIN", "", edit)
	if err != nil {
		t.Fatalf("move %s to %s: %v", id, to, err)
	}
	return r
}

// forceState writes a request in the given state directly, bypassing the
// state table, so tests can start from any state.
func forceState(t testing.TB, s *Store, id string, state domain.State) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		current, err := getRequest(tx, id)
		if err != nil {
			return err
		}
		next := current.Clone()
		next.State = state
		next.Version++
		if state == domain.StateReady && next.ExpiresAt.IsZero() {
			next.ExpiresAt = next.CreatedAt.Add(time.Hour)
		}
		return writeRequest(tx, &current, &next)
	})
	if err != nil {
		t.Fatalf("force %s into %s: %v", id, state, err)
	}
}

// checkConsistent verifies that every index holds exactly the entries the
// stored records call for, that the audit index matches the audit log, and
// that the seen memory agrees with its expiry index and count.
func checkConsistent(s *Store) error {
	return s.db.View(func(tx *bolt.Tx) error {
		if err := checkRequestIndexes(tx); err != nil {
			return err
		}
		if err := checkAuditIndex(tx); err != nil {
			return err
		}
		return checkSeen(tx)
	})
}

func checkRequestIndexes(tx *bolt.Tx) error {
	want := map[string]map[string]string{} // bucket -> key -> value
	for _, name := range []string{bucketByInstance, bucketByUser, bucketUnfinished, bucketExpiring, bucketByEnd} {
		want[name] = map[string]string{}
	}
	err := bucket(tx, bucketRequests).ForEach(func(k, v []byte) error {
		var r domain.Request
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("record %s is not whole: %w", k, err)
		}
		if r.ID != string(k) || !r.State.Valid() || r.Version < 1 || r.CreatedAt.IsZero() {
			return fmt.Errorf("record %s is malformed: %+v", k, r)
		}
		for _, e := range indexEntries(&r) {
			want[e.bucket][string(e.key)] = string(e.value)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for name, entries := range want {
		got := 0
		err := bucket(tx, name).ForEach(func(k, v []byte) error {
			got++
			if value, ok := entries[string(k)]; !ok || value != string(v) {
				return fmt.Errorf("index %s has stray entry %x -> %x", name, k, v)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if got != len(entries) {
			return fmt.Errorf("index %s has %d entries, records call for %d", name, got, len(entries))
		}
	}
	return nil
}

func checkAuditIndex(tx *bolt.Tx) error {
	log := bucket(tx, bucketAudit)
	indexed := 0
	err := log.ForEach(func(k, v []byte) error {
		e, err := decodeAudit(v)
		if err != nil {
			return err
		}
		if !bytes.Equal(k, seqKey(e.Seq)) {
			return fmt.Errorf("audit event under key %x has seq %d", k, e.Seq)
		}
		if e.RequestID == "" {
			return nil
		}
		indexed++
		if bucket(tx, bucketAuditByRequest).Get(auditByRequestKey(e.RequestID, e.Seq)) == nil {
			return fmt.Errorf("audit event %d is missing from the request index", e.Seq)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n := bucket(tx, bucketAuditByRequest).Stats().KeyN; n != indexed {
		return fmt.Errorf("audit request index has %d entries, log has %d request events", n, indexed)
	}
	return nil
}

func checkSeen(tx *bolt.Tx) error {
	seen, byExpiry := bucket(tx, bucketSeen), bucket(tx, bucketSeenByExpiry)
	n := 0
	err := seen.ForEach(func(k, v []byte) error {
		n++
		if len(v) < timeKeyLen || byExpiry.Get(append(bytes.Clone(v[:timeKeyLen]), k...)) == nil {
			return fmt.Errorf("seen key %q is missing from the expiry index", k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	count := seenMemory{tx: tx}.count()
	if byExpiry.Stats().KeyN != n || count != n {
		return fmt.Errorf("seen has %d keys, expiry index %d, count %d", n, byExpiry.Stats().KeyN, count)
	}
	return nil
}
