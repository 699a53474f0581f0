package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrAlreadyDone matches an *AlreadyDoneError with errors.Is.
var ErrAlreadyDone = errors.New("envelope already handled")

// AlreadyDoneError is returned by a write made ForEnvelope when that envelope
// already did its write: nothing was written, and Answer is what the first
// delivery was answered with, to answer the redelivery the same way.
type AlreadyDoneError struct {
	EnvelopeID string
	Answer     []byte
}

func (e *AlreadyDoneError) Error() string {
	return fmt.Sprintf("envelope %s was handled already", e.EnvelopeID)
}

func (e *AlreadyDoneError) Is(target error) bool { return target == ErrAlreadyDone }

// WriteOption qualifies a write: CreateRequest, Move, MoveFrom, Update, SetKey
// and RemoveKey take them.
type WriteOption func(*writeOptions)

type writeOptions struct {
	envelopeID string
	answer     []byte
}

// ForEnvelope makes a write the one effect of a Slack envelope (a command or a
// click). In the write's own transaction, before the write, the store checks
// whether envelopeID did its effect already (within Options.EnvelopeTTL): if
// so the write is refused with an *AlreadyDoneError carrying the first answer;
// if not, envelopeID is recorded with answer (the ack payload, which may be
// empty) together with the write. A failed write records nothing. Slack
// redelivers an envelope whose ack it did not get, also to a gpubot that
// restarted, so this memory lives in the store and not in a process.
// An empty envelopeID records nothing.
func ForEnvelope(envelopeID string, answer []byte) WriteOption {
	return func(o *writeOptions) {
		o.envelopeID = envelopeID
		o.answer = answer
	}
}

func envelopeKey(envelopeID string) string { return "envelope:" + envelopeID }

// claimEnvelope runs first in a write transaction made with opts: it records
// the envelope the write is for, or refuses a second effect of one.
func (s *Store) claimEnvelope(tx *bolt.Tx, opts []WriteOption, now time.Time) error {
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.envelopeID == "" {
		return nil
	}
	first, answer, err := s.rememberOnce(tx, envelopeKey(o.envelopeID), o.answer, s.opts.EnvelopeTTL, now)
	if err != nil {
		return fmt.Errorf("record envelope %s: %w", o.envelopeID, err)
	}
	if !first {
		return &AlreadyDoneError{EnvelopeID: o.envelopeID, Answer: answer}
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
