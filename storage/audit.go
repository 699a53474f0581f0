package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// Audit appends an event that is not a state change, such as "ready_notice".
// Seq is assigned; At defaults to now.
func (s *Store) Audit(ctx context.Context, e domain.AuditEvent) error {
	if e.Action == "" {
		return errors.New("audit: event has no action")
	}
	if e.At.IsZero() {
		e.At = s.now()
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		return appendAudit(tx, e)
	})
}

// appendAudit writes e, with the next sequence number, and its per-request
// index entry inside tx.
func appendAudit(tx *bolt.Tx, e domain.AuditEvent) error {
	log := bucket(tx, bucketAudit)
	seq, err := log.NextSequence()
	if err != nil {
		return fmt.Errorf("audit: next sequence: %w", err)
	}
	e.Seq = seq
	if err := putJSON(log, seqKey(seq), e); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if e.RequestID == "" {
		return nil
	}
	if err := bucket(tx, bucketAuditByRequest).Put(auditByRequestKey(e.RequestID, seq), nil); err != nil {
		return fmt.Errorf("audit: index: %w", err)
	}
	return nil
}

// AuditLog returns up to limit events with Seq > afterSeq, in order; limit
// <= 0 means no limit.
func (s *Store) AuditLog(ctx context.Context, afterSeq uint64, limit int) ([]domain.AuditEvent, error) {
	var events []domain.AuditEvent
	err := s.view(ctx, func(tx *bolt.Tx) error {
		c := bucket(tx, bucketAudit).Cursor()
		for k, v := c.Seek(seqKey(afterSeq + 1)); k != nil; k, v = c.Next() {
			if limit > 0 && len(events) >= limit {
				break
			}
			e, err := decodeAudit(v)
			if err != nil {
				return err
			}
			events = append(events, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return events, nil
}

// AuditFor returns every event about one request, in order.
func (s *Store) AuditFor(ctx context.Context, requestID string) ([]domain.AuditEvent, error) {
	var events []domain.AuditEvent
	err := s.view(ctx, func(tx *bolt.Tx) error {
		log := bucket(tx, bucketAudit)
		prefix := appendField(nil, requestID)
		c := bucket(tx, bucketAuditByRequest).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) != len(prefix)+8 {
				return fmt.Errorf("malformed audit index key %x", k)
			}
			seq := binary.BigEndian.Uint64(k[len(prefix):])
			v := log.Get(seqKey(seq))
			if v == nil {
				return fmt.Errorf("audit index points at missing event %d", seq)
			}
			e, err := decodeAudit(v)
			if err != nil {
				return err
			}
			events = append(events, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read audit of request %s: %w", requestID, err)
	}
	return events, nil
}

func decodeAudit(data []byte) (domain.AuditEvent, error) {
	var e domain.AuditEvent
	if err := json.Unmarshal(data, &e); err != nil {
		return domain.AuditEvent{}, fmt.Errorf("decode audit event: %w", err)
	}
	return e, nil
}
