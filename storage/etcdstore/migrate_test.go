package etcdstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/etcdtest"
	"github.com/gpubot/gpubot/internal/testkit"
	"github.com/gpubot/gpubot/storage"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const migratedRequests = 10_000

// boltWithHistory is a bbolt store holding migratedRequests requests of 100
// users in every kind of state, with their audit trail, SSH keys, envelopes
// remembered with their answers, an alert throttle and orphan sightings.
func boltWithHistory(t *testing.T, clock *testkit.Clock) *storage.Store {
	t.Helper()
	// Without fsync: the test copies the file, it does not crash it.
	from, err := storage.Open(filepath.Join(t.TempDir(), "gpubot.db"), storage.Options{Now: clock.Now, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = from.Close() })
	ctx := context.Background()
	// Most of a history is requests that ended; some are live in every state.
	paths := [][]domain.State{
		{domain.StateApproved, domain.StateCreating, domain.StateProvisioning, domain.StateReady},
		{domain.StateApproved, domain.StateCreating, domain.StateProvisioning, domain.StateReady, domain.StateDeleting, domain.StateDeleted},
		{},
		{domain.StateApproved, domain.StateCreating},
	}
	for range 6 {
		paths = append(paths, []domain.State{domain.StateDenied}, []domain.State{domain.StateCancelled})
	}
	const writers = 50 // concurrent writes share the bbolt store's commits
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < migratedRequests; i += writers {
				user := domain.UserRef{TeamID: "T1", UserID: fmt.Sprintf("U%03d", i%100)}
				r := newRequest(user, domain.StateAwaitingApproval)
				var opts []domain.WriteOption
				if i%1000 == 0 {
					opts = append(opts, domain.ForEnvelope(fmt.Sprintf("Ev%05d", i), []byte(`{"text":"Got it"}`)))
				}
				if err := from.CreateRequest(ctx, r, opts...); err != nil {
					t.Errorf("create: %v", err)
					return
				}
				for _, to := range paths[i%len(paths)] {
					_, err := from.Move(ctx, r.ID, to, "UBOB", "", func(r *domain.Request) error {
						if to == domain.StateProvisioning {
							r.InstanceID = fmt.Sprintf("inst-%05d", i)
						}
						return nil
					})
					if err != nil {
						t.Errorf("move to %s: %v", to, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for _, u := range []domain.UserRef{{TeamID: "T1", UserID: "U000"}, {TeamID: "T2", UserID: "U/odd name"}} {
		key, err := domain.ParsePublicKey(testkit.KeyLine(t, u.UserID))
		if err != nil {
			t.Fatal(err)
		}
		if err := from.SetKey(ctx, u, key); err != nil {
			t.Fatal(err)
		}
	}
	if err := from.MarkHomeOpened(ctx, domain.UserRef{TeamID: "T2", UserID: "U/odd name"}); err != nil {
		t.Fatal(err)
	}
	if _, err := from.MarkSeen(ctx, "alert:fal key refused", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := from.MarkSeen(ctx, "alert:gone already", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := from.SightOrphans(ctx, []string{"inst-stray-1", "inst-stray-2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := from.MarkOrphanReported(ctx, "inst-stray-1"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute) // the one-minute throttle is over
	return from
}

// A bbolt file with 10,000 requests and their audit trail is copied into etcd
// and checked; the copy then answers every read as the file did, and a
// redelivered envelope, a throttle and a reported orphan are still known.
func TestMigrateCopiesEverythingAndChecksIt(t *testing.T) {
	clock := testkit.FixedClock(time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC))
	from := boltWithHistory(t, clock)
	cluster := etcdtest.Start(t, 1)
	to := openStore(t, cluster.Client(t), "/migrated/", Options{Now: clock.Now})
	ctx := context.Background()

	var progress bytes.Buffer
	if err := Migrate(ctx, from, to, &progress); err != nil {
		t.Fatalf("migrate: %v\n%s", err, progress.String())
	}

	if !strings.Contains(progress.String(), "copied 10000 requests") || !strings.Contains(progress.String(), "the copy is complete") {
		t.Errorf("progress says:\n%s", progress.String())
	}
	if err := checkConsistent(ctx, to); err != nil {
		t.Fatal(err)
	}

	same := func(what string, read func(domain.Store) (any, error)) {
		t.Helper()
		want, err := read(from)
		if err != nil {
			t.Fatalf("%s from bbolt: %v", what, err)
		}
		got, err := read(to)
		if err != nil {
			t.Fatalf("%s from etcd: %v", what, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s differs after the migration", what)
		}
	}
	same("the unfinished requests", func(s domain.Store) (any, error) { return s.Unfinished(ctx) })
	same("the audit trail", func(s domain.Store) (any, error) { return s.AuditLog(ctx, 0, 0) })
	same("what expires", func(s domain.Store) (any, error) { return s.ExpiringBefore(ctx, clock.Now().Add(365*24*time.Hour)) })
	same("the orphan sightings", func(s domain.Store) (any, error) { return s.SightOrphans(ctx, nil) })
	for i := range 100 {
		u := domain.UserRef{TeamID: "T1", UserID: fmt.Sprintf("U%03d", i)}
		same("requests of "+u.String(), func(s domain.Store) (any, error) { return s.RequestsByUser(ctx, u) })
	}
	all, _ := from.RequestsByUser(ctx, domain.UserRef{TeamID: "T1", UserID: "U007"})
	same("one request's history", func(s domain.Store) (any, error) { return s.AuditFor(ctx, all[0].ID) })
	same("a request by its instance", func(s domain.Store) (any, error) { return s.RequestByInstance(ctx, "inst-00016") })
	same("a request by a short id", func(s domain.Store) (any, error) { return s.RequestsWithIDPrefix(ctx, all[3].ID[:8], 10) })
	same("an odd user's key", func(s domain.Store) (any, error) {
		return s.Key(ctx, domain.UserRef{TeamID: "T2", UserID: "U/odd name"})
	})
	same("who opened the Home tab", func(s domain.Store) (any, error) {
		odd, err := s.HomeOpened(ctx, domain.UserRef{TeamID: "T2", UserID: "U/odd name"})
		if err != nil {
			return nil, err
		}
		other, err := s.HomeOpened(ctx, domain.UserRef{TeamID: "T1", UserID: "U001"})
		return [2]bool{odd, other}, err
	})
	same("an envelope's answer", func(s domain.Store) (any, error) {
		answer, done, err := s.EnvelopeAnswer(ctx, "Ev03000")
		return fmt.Sprint(string(answer), done), err
	})

	if first, err := to.MarkSeen(ctx, "alert:fal key refused", 24*time.Hour); err != nil || first {
		t.Errorf("a throttle copied: first %v, %v; want still throttled", first, err)
	}
	if first, err := to.MarkSeen(ctx, "alert:gone already", time.Minute); err != nil || !first {
		t.Errorf("an expired throttle: first %v, %v; want forgotten", first, err)
	}
	if first, err := to.MarkOrphanReported(ctx, "inst-stray-1"); err != nil || first {
		t.Errorf("a reported orphan: first %v, %v; want reported already", first, err)
	}
	log, _ := from.AuditLog(ctx, 0, 0)
	if err := to.Audit(ctx, domain.AuditEvent{Action: "after_migration"}); err != nil {
		t.Fatal(err)
	}
	if next, _ := to.AuditLog(ctx, log[len(log)-1].Seq, 0); len(next) != 1 || next[0].Seq != log[len(log)-1].Seq+1 {
		t.Errorf("the audit trail after the copy goes on with %+v, want seq %d", next, log[len(log)-1].Seq+1)
	}
}

// A prefix that holds anything is refused, and left as it was.
func TestMigrateRefusesATargetThatHoldsData(t *testing.T) {
	clock := testkit.FixedClock(time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC))
	from, err := storage.Open(filepath.Join(t.TempDir(), "gpubot.db"), storage.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	ctx := context.Background()
	if err := from.CreateRequest(ctx, newRequest(alice, domain.StateApproved)); err != nil {
		t.Fatal(err)
	}
	cluster := etcdtest.Start(t, 1)
	cli := cluster.Client(t)
	for _, existing := range []func(*Store) error{
		func(s *Store) error { return s.CreateRequest(ctx, newRequest(alice, domain.StateApproved)) },
		func(s *Store) error { _, err := s.MarkSeen(ctx, "alert:x", time.Hour); return err },
	} {
		to := openStore(t, cli, fmt.Sprintf("/busy-%p/", existing), Options{Now: clock.Now})
		if err := existing(to); err != nil {
			t.Fatal(err)
		}
		before, err := cli.Get(ctx, to.Prefix(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		var progress bytes.Buffer
		err = Migrate(ctx, from, to, &progress)
		if !errors.Is(err, ErrTargetNotEmpty) || !strings.Contains(err.Error(), "ETCD_PREFIX") {
			t.Errorf("migrate into a prefix holding data: %v, want ErrTargetNotEmpty saying what to do", err)
		}
		after, err := cli.Get(ctx, to.Prefix(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		if after.Header.Revision != before.Header.Revision || len(after.Kvs) != len(before.Kvs) {
			t.Errorf("a refused migration wrote: revision %d → %d, %d → %d keys",
				before.Header.Revision, after.Header.Revision, len(before.Kvs), len(after.Kvs))
		}
	}
}

// The check after the copy finds a key that differs from the bbolt store,
// and a key the bbolt store does not have.
func TestMigrateCheckFindsDifferences(t *testing.T) {
	clock := testkit.FixedClock(time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC))
	from, err := storage.Open(filepath.Join(t.TempDir(), "gpubot.db"), storage.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	ctx := context.Background()
	r := newRequest(alice, domain.StateApproved)
	if err := from.CreateRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	cluster := etcdtest.Start(t, 1)
	cli := cluster.Client(t)
	to := openStore(t, cli, "/checked/", Options{Now: clock.Now})
	m := &migration{to: to, ctx: ctx, want: map[string][sha256.Size]byte{}, progress: &bytes.Buffer{}}
	if err := from.Export(ctx, m.copy); err != nil {
		t.Fatal(err)
	}
	if err := m.flush(); err != nil {
		t.Fatal(err)
	}
	if err := m.verify(); err != nil {
		t.Fatalf("an untouched copy: %v", err)
	}
	if _, err := cli.Put(ctx, to.keys.request(r.ID), `{"id":"tampered"}`); err != nil {
		t.Fatal(err)
	}
	if err := m.verify(); err == nil || !strings.Contains(err.Error(), r.ID) {
		t.Errorf("a changed record: %v, want an error naming it", err)
	}
	if _, err := cli.Put(ctx, to.keys.request(r.ID), mustJSON(t, *r)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, to.keys.request("stray"), "{}"); err != nil {
		t.Fatal(err)
	}
	if err := m.verify(); err == nil || !strings.Contains(err.Error(), "stray") {
		t.Errorf("a key the file does not have: %v, want an error naming it", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
