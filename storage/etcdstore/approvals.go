package etcdstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/gpubot/gpubot/internal/domain"
)

// AddApproval records approver's approval of request id and audits it as
// "approval" with the count ("1 of 2"), in one transaction; the approval
// that brings the count to needed also moves the request to approved, with
// approver as ApproverID. A request no longer awaiting approval gives a
// *MoveError holding it as it is; a second approval by the same approver
// gives ErrAlreadyApproved with the request as it is.
func (s *Store) AddApproval(ctx context.Context, id, approver string, needed int, opts ...domain.WriteOption) (domain.Request, error) {
	if approver == "" || needed < 1 {
		return domain.Request{}, fmt.Errorf("approve request %s: approver %q, %d needed: both are required", id, approver, needed)
	}
	now := s.now()
	var result domain.Request
	err := s.write(ctx, true, func(t *txn) error {
		if err := t.prefetch(s.keys.request(id), s.envelopeKey(opts)); err != nil {
			return err
		}
		if err := s.claimEnvelope(t, opts, now); err != nil {
			return err
		}
		current, err := s.getRequest(t, id)
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
		t.audit(domain.AuditEvent{At: now, Actor: approver, Action: "approval", RequestID: id, Detail: count})
		if len(next.Approvals) >= needed {
			next.State, next.ApproverID = domain.StateApproved, approver
			fillMoveTimes(&next, current.State, now)
			t.audit(domain.AuditEvent{At: now, Actor: approver, Action: string(domain.StateApproved), RequestID: id})
		}
		next.UpdatedAt = now
		next.Version = current.Version + 1
		result = next
		return s.writeRequest(t, &current, &next)
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
