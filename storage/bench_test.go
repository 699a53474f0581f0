package storage

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// benchStore builds a store holding `finished` terminal requests and
// `unfinished` live ones, written in large batches so setup stays quick.
// It returns the store and the instance ids of all requests.
func benchStore(b *testing.B, finished, unfinished int) (*Store, []string) {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "gpubot.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	total := finished + unfinished
	instances := make([]string, 0, total)
	const batch = 20_000
	for start := 0; start < total; start += batch {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i := start; i < min(start+batch, total); i++ {
				r := benchRequest(i, i < finished, base.Add(time.Duration(i)*time.Second))
				instances = append(instances, r.InstanceID)
				if err := writeRequest(tx, nil, &r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatalf("build store: %v", err)
		}
	}
	return s, instances
}

func benchRequest(i int, finished bool, created time.Time) domain.Request {
	r := *newRequest(domain.UserRef{TeamID: "T1", UserID: fmt.Sprintf("U%03d", i%300)}, domain.StateReady)
	r.ID = uuid.NewString()
	r.IdempotencyKey = uuid.NewString()
	r.InstanceID = fmt.Sprintf("inst-%06d", i)
	r.IP = "10.0.0.1"
	r.ThreadTS = "1700000000.000100"
	r.CreatedAt, r.UpdatedAt, r.ReadyAt = created, created, created.Add(3*time.Minute)
	r.ExpiresAt = r.ReadyAt.Add(r.Lifetime)
	r.Version = 5
	if finished {
		r.State = domain.StateDeleted
		r.EndedAt = r.ExpiresAt
		r.EndReason = "expired"
	}
	return r
}

// BenchmarkUnfinished shows that listing live requests costs the same with
// 10k or 100k finished ones around them (1,000 live in both). "warm" is a
// poll loop where nothing changed since the last call; "cold" decodes every
// record, as the first call after a start does.
func BenchmarkUnfinished(b *testing.B) {
	for _, finished := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("finished=%d", finished), func(b *testing.B) {
			s, _ := benchStore(b, finished, 1_000)
			ctx := context.Background()
			list := func(b *testing.B) {
				live, err := s.Unfinished(ctx)
				if err != nil || len(live) != 1_000 {
					b.Fatalf("unfinished: %d, %v", len(live), err)
				}
			}
			b.Run("warm", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					list(b)
				}
			})
			b.Run("cold", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					s.live.publish(nil)
					list(b)
				}
			})
		})
	}
}

func BenchmarkRequestByInstance(b *testing.B) {
	s, instances := benchStore(b, 99_000, 1_000)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.RequestByInstance(ctx, instances[i%len(instances)]); err != nil {
			b.Fatal(err)
		}
		i += 7919 // walk the ids out of order
	}
}

// BenchmarkMove approves requests in a store of 100k, each move a committed
// (fsynced) write transaction with its index and audit updates.
func BenchmarkMove(b *testing.B) {
	s, _ := benchStore(b, 99_000, 1_000)
	ctx := context.Background()
	var pending []string
	refill := func() {
		b.StopTimer()
		defer b.StartTimer()
		err := s.db.Update(func(tx *bolt.Tx) error {
			for range 1_000 {
				r := *newRequest(alice, domain.StateAwaitingApproval)
				r.ID, r.IdempotencyKey, r.Version = uuid.NewString(), uuid.NewString(), 1
				r.CreatedAt, r.UpdatedAt = s.now(), s.now()
				if err := writeRequest(tx, nil, &r); err != nil {
					return err
				}
				pending = append(pending, r.ID)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(pending) == 0 {
			refill()
		}
		id := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		if _, err := s.Move(ctx, id, domain.StateApproved, "UBOSS", "", func(r *domain.Request) error {
			r.ApproverID = "UBOSS"
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarkSeen(b *testing.B) {
	s, _ := benchStore(b, 0, 0)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := s.MarkSeen(ctx, fmt.Sprintf("Ev%08d", i), 30*time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRanDuring reads one month out of 100,000 finished machines spread over a
// year (about 8,600 in the month): everyone's, for a report, and one person's of 300,
// for `/gpu budget` on a command's ack path, which decodes only that person's records.
func BenchmarkRanDuring(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "gpubot.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const total, batch = 100_000, 20_000
	for start := 0; start < total; start += batch {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i := start; i < min(start+batch, total); i++ {
				r := benchRequest(i, true, base.Add(time.Duration(i)*5*time.Minute))
				if err := writeRequest(tx, nil, &r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatalf("build store: %v", err)
		}
	}
	from := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 1, 0)
	ctx := context.Background()
	b.Run("everyone", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if reqs, err := s.RanDuring(ctx, from, to); err != nil || len(reqs) < 8_000 {
				b.Fatalf("%d requests, %v", len(reqs), err)
			}
		}
	})
	b.Run("one person", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if reqs, err := s.RanDuring(ctx, from, to, domain.UserRef{TeamID: "T1", UserID: "U007"}); err != nil || len(reqs) < 20 {
				b.Fatalf("%d requests, %v", len(reqs), err)
			}
		}
	})
}
