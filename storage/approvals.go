package storage

import (
	"context"
	"errors"
	"fmt"

	"github.com/gpubot/gpubot/internal/domain"
	bolt "go.etcd.io/bbolt"
)

// AddApproval records approver's approval of request id and audits it as
// "approval" with the count ("1 of 2"), in one transaction. The request must
// be awaiting approval (else a *MoveError holding it as it is) and not yet
// approved by approver (else ErrAlreadyApproved, with the request as it is).
// The approval that brings the count to needed also moves the request to
// approved, in the same transaction, with approver as ApproverID: so of
// approvers clicking at once each counts exactly once, and exactly one
// completes the count. ForEnvelope makes a redelivered click count nothing.
func (s *Store) AddApproval(ctx context.Context, id, approver string, needed int, opts ...domain.WriteOption) (domain.Request, error) {
	if approver == "" || needed < 1 {
		return domain.Request{}, fmt.Errorf("approve request %s: approver %q, %d needed: both are required", id, approver, needed)
	}
	now := s.now()
	var result domain.Request
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if err := s.claimEnvelope(tx, opts, now); err != nil {
			return err
		}
		current, err := getRequest(tx, id)
		if err != nil {
			return err
		}
		if current.State != domain.StateAwaitingApproval {
			return &domain.MoveError{From: current.State, To: domain.StateApproved, Current: current}
		}
		if current.ApprovedBy(approver) {
			result = current
			return domain.ErrAlreadyApproved
		}
		next := current.Clone()
		next.Approvals = append(next.Approvals, domain.Approval{UserID: approver, At: now})
		count := fmt.Sprintf("%d of %d", len(next.Approvals), needed)
		if err := appendAudit(tx, domain.AuditEvent{At: now, Actor: approver, Action: "approval", RequestID: id, Detail: count}); err != nil {
			return err
		}
		if len(next.Approvals) >= needed {
			next.State, next.ApproverID = domain.StateApproved, approver
			fillMoveTimes(&next, current.State, now)
			if err := appendAudit(tx, domain.AuditEvent{At: now, Actor: approver, Action: string(domain.StateApproved), RequestID: id}); err != nil {
				return err
			}
		}
		next.UpdatedAt = now
		next.Version = current.Version + 1
		result = next
		return writeRequest(tx, &current, &next)
	})
	switch {
	case err == nil:
		return result, nil
	case errors.Is(err, domain.ErrAlreadyApproved):
		return result, fmt.Errorf("approve request %s: %w", id, err)
	}
	if _, illegal := errors.AsType[*domain.MoveError](err); illegal {
		return domain.Request{}, err
	}
	return domain.Request{}, fmt.Errorf("approve request %s: %w", id, err)
}
