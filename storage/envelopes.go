package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

func envelopeKey(envelopeID string) string { return "envelope:" + envelopeID }

// claimEnvelope runs first in a write transaction made with opts: it records
// the envelope the write is for, or refuses a second effect of one.
func (s *Store) claimEnvelope(tx *bolt.Tx, opts []domain.WriteOption, now time.Time) error {
	o := domain.CollectOptions(opts)
	if o.EnvelopeID == "" {
		return nil
	}
	first, answer, err := s.rememberOnce(tx, envelopeKey(o.EnvelopeID), o.Answer, s.opts.EnvelopeTTL, now)
	if err != nil {
		return fmt.Errorf("record envelope %s: %w", o.EnvelopeID, err)
	}
	if !first {
		return &domain.AlreadyDoneError{EnvelopeID: o.EnvelopeID, Answer: answer}
	}
	return nil
}

// EnvelopeAnswer reports whether envelopeID already did its effect (within
// Options.EnvelopeTTL) and what it was answered with. It only reads: a
// redelivery can be answered at once, while the write made ForEnvelope stays
// what decides.
func (s *Store) EnvelopeAnswer(ctx context.Context, envelopeID string) (answer []byte, done bool, err error) {
	if envelopeID == "" {
		return nil, false, nil
	}
	now := s.now()
	err = s.view(ctx, func(tx *bolt.Tx) error {
		raw := bucket(tx, bucketSeen).Get([]byte(envelopeKey(envelopeID)))
		if len(raw) < timeKeyLen || !decodeTime(raw[:timeKeyLen]).After(now) {
			return nil
		}
		answer, done = append([]byte(nil), raw[timeKeyLen:]...), true
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("read envelope %s: %w", envelopeID, err)
	}
	return answer, done, nil
}
