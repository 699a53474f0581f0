package storage

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/testkit"
)

// envelopeWrite is one of the writes a command or a click makes, run with opts,
// with a way to tell how many times its effect happened.
type envelopeWrite struct {
	name    string
	write   func(ctx context.Context, s *Store, opts ...domain.WriteOption) error
	effects func(ctx context.Context, s *Store) int
}

// envelopeWrites sets up what each write needs in s and returns the writes.
func envelopeWrites(t *testing.T, s *Store) []envelopeWrite {
	t.Helper()
	line := testkit.KeyLine(t, "alice@laptop")
	key, err := domain.ParsePublicKey(line)
	if err != nil {
		t.Fatal(err)
	}
	waiting := mustCreate(t, s, newRequest(alice, domain.StateAwaitingApproval))
	ready := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	forceState(t, s, ready.ID, domain.StateReady)
	auditCount := func(action string) func(context.Context, *Store) int {
		return func(ctx context.Context, s *Store) int {
			log, err := s.AuditLog(ctx, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, e := range log {
				if e.Action == action {
					n++
				}
			}
			return n
		}
	}
	return []envelopeWrite{
		{"CreateRequest", func(ctx context.Context, s *Store, opts ...domain.WriteOption) error {
			return s.CreateRequest(ctx, newRequest(alice, domain.StateApproved), opts...)
		}, auditCount("requested")},
		{"Move", func(ctx context.Context, s *Store, opts ...domain.WriteOption) error {
			// The envelope is checked before the state table: a redelivered Approve
			// gets the first answer, not "too late".
			_, err := s.MoveFrom(ctx, waiting.ID, []domain.State{domain.StateAwaitingApproval, domain.StateApproved}, domain.StateApproved, "UBOB", "", nil, opts...)
			return err
		}, auditCount(string(domain.StateApproved))},
		{"Update", func(ctx context.Context, s *Store, opts ...domain.WriteOption) error {
			_, err := s.Update(ctx, ready.ID, func(r *domain.Request) error {
				r.ExpiresAt = r.ExpiresAt.Add(2 * time.Hour)
				return nil
			}, opts...)
			return err
		}, func(ctx context.Context, s *Store) int {
			r, err := s.Request(ctx, ready.ID)
			if err != nil {
				t.Fatal(err)
			}
			return int(r.ExpiresAt.Sub(ready.CreatedAt.Add(time.Hour)) / (2 * time.Hour))
		}},
		{"SetKey", func(ctx context.Context, s *Store, opts ...domain.WriteOption) error {
			return s.SetKey(ctx, alice, key, opts...)
		}, auditCount("key_set")},
		{"RemoveKey", func(ctx context.Context, s *Store, opts ...domain.WriteOption) error {
			if err := s.SetKey(ctx, alice, key); err != nil {
				return err
			}
			return s.RemoveKey(ctx, alice, opts...)
		}, auditCount("key_removed")},
	}
}

func TestForEnvelopeRefusesASecondEffectWithTheFirstAnswer(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	for _, w := range envelopeWrites(t, s) {
		envelope := "Ev-" + w.name
		first := []byte(`{"text":"first answer for ` + w.name + `"}`)
		before := w.effects(ctx, s)
		if err := w.write(ctx, s, domain.ForEnvelope(envelope, first)); err != nil {
			t.Fatalf("%s, first delivery: %v", w.name, err)
		}
		err := w.write(ctx, s, domain.ForEnvelope(envelope, []byte(`{"text":"second"}`)))
		var done *domain.AlreadyDoneError
		if !errors.As(err, &done) || !errors.Is(err, domain.ErrAlreadyDone) {
			t.Fatalf("%s, redelivery: got %v, want an *domain.AlreadyDoneError", w.name, err)
		}
		if string(done.Answer) != string(first) || done.EnvelopeID != envelope {
			t.Errorf("%s, redelivery answered %q for %q, want the first answer %q", w.name, done.Answer, done.EnvelopeID, first)
		}
		if n := w.effects(ctx, s) - before; n != 1 {
			t.Errorf("%s took effect %d times for one envelope, want 1", w.name, n)
		}
		answer, recorded, err := s.EnvelopeAnswer(ctx, envelope)
		if err != nil || !recorded || string(answer) != string(first) {
			t.Errorf("%s: EnvelopeAnswer = %q, %v, %v; want the first answer", w.name, answer, recorded, err)
		}
	}
}

func TestForEnvelopeRecordsNothingWhenTheWriteFails(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	r := mustCreate(t, s, newRequest(alice, domain.StateApproved))
	refused := errors.New("lifetime too long")

	if _, err := s.Update(ctx, r.ID, func(*domain.Request) error { return refused }, domain.ForEnvelope("Ev1", nil)); !errors.Is(err, refused) {
		t.Fatalf("update: %v, want the edit's error", err)
	}
	if _, err := s.Move(ctx, r.ID, domain.StateReady, "UBOB", "", nil, domain.ForEnvelope("Ev2", nil)); !errors.Is(err, domain.ErrIllegalMove) {
		t.Fatalf("illegal move: %v", err)
	}
	if err := s.RemoveKey(ctx, alice, domain.ForEnvelope("Ev3", []byte(`{"text":"removed"}`))); !errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("remove a key nobody set: %v", err)
	}
	for _, envelope := range []string{"Ev1", "Ev2", "Ev3"} {
		if _, recorded, err := s.EnvelopeAnswer(ctx, envelope); recorded || err != nil {
			t.Errorf("envelope %s recorded (%v) although its write failed", envelope, err)
		}
	}
	// Redelivered after the failure, the envelope may still take effect once.
	if _, err := s.Update(ctx, r.ID, func(u *domain.Request) error { u.Lifetime = time.Hour; return nil }, domain.ForEnvelope("Ev1", nil)); err != nil {
		t.Fatalf("update after a failed one: %v", err)
	}
}

func TestForEnvelopeIsForgottenAfterItsTTL(t *testing.T) {
	clock := newTestClock()
	s := openTestStore(t, Options{Now: clock.Now, EnvelopeTTL: time.Hour})
	ctx := context.Background()
	create := func() error {
		return s.CreateRequest(ctx, newRequest(alice, domain.StateApproved), domain.ForEnvelope("Ev1", []byte(`{"text":"Got it"}`)))
	}
	if err := create(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * time.Minute)
	if err := create(); !errors.Is(err, domain.ErrAlreadyDone) {
		t.Fatalf("within the hour: %v, want domain.ErrAlreadyDone", err)
	}
	clock.Advance(time.Minute)
	if _, recorded, _ := s.EnvelopeAnswer(ctx, "Ev1"); recorded {
		t.Error("EnvelopeAnswer still knows the envelope after its hour")
	}
	if err := create(); err != nil {
		t.Fatalf("after the hour the envelope is forgotten, but: %v", err)
	}
}

func TestForEnvelopeHoldsAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpubot.db")
	ctx := context.Background()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := newRequest(alice, domain.StateApproved)
	if err := s.CreateRequest(ctx, r, domain.ForEnvelope("Ev1", []byte(`{"text":"Got it"}`))); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStoreAt(t, path)
	err = s.CreateRequest(ctx, newRequest(alice, domain.StateApproved), domain.ForEnvelope("Ev1", []byte(`{"text":"other"}`)))
	var done *domain.AlreadyDoneError
	if !errors.As(err, &done) || string(done.Answer) != `{"text":"Got it"}` {
		t.Fatalf("after reopening: %v, want the first answer", err)
	}
	if mine, _ := s.RequestsByUser(ctx, alice); len(mine) != 1 {
		t.Errorf("%d requests after a redelivery across a restart, want 1", len(mine))
	}
}

func TestForEnvelopeOneEffectUnderConcurrentDeliveries(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	const deliveries = 8
	var wg sync.WaitGroup
	errs := make(chan error, deliveries)
	for range deliveries {
		wg.Go(func() {
			errs <- s.CreateRequest(ctx, newRequest(alice, domain.StateApproved), domain.ForEnvelope("Ev1", []byte(`{"text":"Got it"}`)))
		})
	}
	wg.Wait()
	close(errs)
	created := 0
	for err := range errs {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, domain.ErrAlreadyDone):
			t.Errorf("delivery failed: %v", err)
		}
	}
	mine, _ := s.RequestsByUser(ctx, alice)
	if created != 1 || len(mine) != 1 {
		t.Errorf("%d deliveries succeeded and %d requests stored, want 1 and 1", created, len(mine))
	}
}

func TestWithoutEnvelopeNothingIsRecorded(t *testing.T) {
	s := openTestStore(t, Options{})
	ctx := context.Background()
	for range 2 {
		if err := s.CreateRequest(ctx, newRequest(alice, domain.StateApproved), domain.ForEnvelope("", []byte("x"))); err != nil {
			t.Fatal(err)
		}
	}
	if n := seenCount(t, s); n != 0 {
		t.Errorf("%d entries remembered for writes with no envelope, want 0", n)
	}
}

func openTestStoreAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
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
