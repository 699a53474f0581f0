package etcdstore

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/etcdtest"
	"github.com/gpubot/gpubot/storage"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// benchEtcd is one local etcd member that fsyncs its log as a production
// member does, so a commit costs on etcd what it costs on bbolt.
func benchEtcd(b *testing.B) *clientv3.Client {
	b.Helper()
	return etcdtest.StartWith(b, 1, etcdtest.Options{Fsync: true}).Client(b)
}

// BenchmarkCreate commits requests as /gpu create does before its ack, on a
// bbolt file and on a local etcd member, both with fsync, in one run, so the
// two compare: "one" at a time, and a "burst" of 50 at once, where each store
// lets concurrent writes share a commit.
func BenchmarkCreate(b *testing.B) {
	ctx := context.Background()
	one := func(b *testing.B, s domain.Store) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.CreateRequest(ctx, newRequest(alice, domain.StateApproved), domain.ForEnvelope(fmt.Sprint(time.Now().UnixNano()), []byte("ok"))); err != nil {
				b.Fatal(err)
			}
		}
	}
	burst := func(b *testing.B, s domain.Store) {
		b.ReportAllocs()
		b.SetParallelism(25) // 50 writers on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.CreateRequest(ctx, newRequest(alice, domain.StateApproved)); err != nil {
					b.Error(err)
				}
			}
		})
	}
	bolt := func(b *testing.B) domain.Store {
		s, err := storage.Open(filepath.Join(b.TempDir(), "gpubot.db"), storage.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	}
	b.Run("store=bbolt/one", func(b *testing.B) { one(b, bolt(b)) })
	b.Run("store=etcd/one", func(b *testing.B) { one(b, openStore(b, benchEtcd(b), "/bench/", Options{})) })
	b.Run("store=bbolt/burst", func(b *testing.B) { burst(b, bolt(b)) })
	b.Run("store=etcd/burst", func(b *testing.B) { burst(b, openStore(b, benchEtcd(b), "/bench/", Options{})) })
}

// BenchmarkUnfinished lists 1,000 live requests among 10,000 finished ones,
// as every tracking pass does: "warm" when nothing changed since the last
// listing, "cold" as the first listing after a start. bbolt's figures come
// from the same run.
func BenchmarkUnfinished(b *testing.B) {
	ctx := context.Background()
	from := boltWithLive(b, 10_000, 1_000)
	to := openStore(b, benchEtcd(b), "/bench/", Options{})
	if err := Migrate(ctx, from, to, &bytes.Buffer{}); err != nil {
		b.Fatal(err)
	}
	list := func(b *testing.B, s domain.Store, forget func()) {
		b.ReportAllocs()
		for b.Loop() {
			forget()
			live, err := s.Unfinished(ctx)
			if err != nil || len(live) != 1_000 {
				b.Fatalf("unfinished: %d, %v", len(live), err)
			}
		}
	}
	b.Run("store=bbolt/warm", func(b *testing.B) { list(b, from, func() {}) })
	b.Run("store=etcd/warm", func(b *testing.B) { list(b, to, func() {}) })
	b.Run("store=etcd/cold", func(b *testing.B) { list(b, to, func() { to.live.publish(nil) }) })
}

// boltWithLive is a bbolt store with finished and live requests, built with
// concurrent writes that share commits.
func boltWithLive(b *testing.B, finished, live int) *storage.Store {
	b.Helper()
	s, err := storage.Open(filepath.Join(b.TempDir(), "gpubot.db"), storage.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	const writers = 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < finished+live; i += writers {
				r := newRequest(domain.UserRef{TeamID: "T1", UserID: fmt.Sprintf("U%03d", i%300)}, domain.StateApproved)
				if err := s.CreateRequest(ctx, r); err != nil {
					b.Error(err)
					return
				}
				to := domain.StateCreating
				if i < finished {
					to = domain.StateCancelled
				}
				if _, err := s.Move(ctx, r.ID, to, "gpubot", "", nil); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return s
}
