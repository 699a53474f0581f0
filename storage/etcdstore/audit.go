package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gpubot/gpubot/internal/domain"
	clientv3 "go.etcd.io/etcd/client/v3"
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
	return s.write(ctx, true, func(t *txn) error {
		t.audit(e)
		return nil
	})
}

// AuditLog returns up to limit events with Seq > afterSeq, in order; limit
// <= 0 means no limit.
func (s *Store) AuditLog(ctx context.Context, afterSeq uint64, limit int) ([]domain.AuditEvent, error) {
	var events []domain.AuditEvent
	err := s.read(ctx, func(t *txn) error {
		opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.keys.auditLog()))}
		if limit > 0 {
			opts = append(opts, clientv3.WithLimit(int64(limit)))
		}
		resp, err := s.cli.Get(t.ctx, s.keys.auditEvent(afterSeq+1), opts...)
		if err != nil {
			return s.rpcError(t.ctx, err)
		}
		events = make([]domain.AuditEvent, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			e, err := decodeAudit(kv.Value)
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
	err := s.read(ctx, func(t *txn) error {
		index := s.keys.auditIndex(requestID)
		resp, err := s.cli.Get(t.ctx, index, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return s.rpcError(t.ctx, err)
		}
		keys := make([]string, len(resp.Kvs))
		for i, kv := range resp.Kvs {
			keys[i] = s.keys.auditLog() + string(kv.Key[len(index):])
		}
		values, err := s.getMany(t.ctx, keys, resp.Header.Revision)
		if err != nil {
			return err
		}
		events = make([]domain.AuditEvent, 0, len(values))
		for i, raw := range values {
			if raw == nil {
				return fmt.Errorf("audit index points at missing event %s", keys[i])
			}
			e, err := decodeAudit(raw)
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
