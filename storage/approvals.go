package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Approval is one approver's yes on a request that needs several.
type Approval struct {
	UserID string    `json:"user_id"`
	At     time.Time `json:"at"`
}

// ErrAlreadyApproved refuses a second approval by the same approver: each counts once.
var ErrAlreadyApproved = errors.New("already approved by this approver")

// ApprovedBy reports whether user's approval is recorded on the request.
func (r Request) ApprovedBy(user string) bool {
	return slices.ContainsFunc(r.Approvals, func(a Approval) bool { return a.UserID == user })
}

// AddApproval records approver's approval of request id and audits it as
// "approval" with the count ("1 of 2"), in one transaction. The request must
// be awaiting approval (else a *MoveError holding it as it is) and not yet
// approved by approver (else ErrAlreadyApproved, with the request as it is).
// The approval that brings the count to needed also moves the request to
// approved, in the same transaction, with approver as ApproverID: so of
// approvers clicking at once each counts exactly once, and exactly one
// completes the count. ForEnvelope makes a redelivered click count nothing.
func (s *Store) AddApproval(ctx context.Context, id, approver string, needed int, opts ...WriteOption) (Request, error) {
	if approver == "" || needed < 1 {
		return Request{}, fmt.Errorf("approve request %s: approver %q, %d needed: both are required", id, approver, needed)
	}
	now := s.now()
	var result Request
	err := s.update(ctx, func(tx *bolt.Tx) error {
		if err := s.claimEnvelope(tx, opts, now); err != nil {
			return err
		}
		current, err := getRequest(tx, id)
		if err != nil {
			return err
		}
		if current.State != StateAwaitingApproval {
			return &MoveError{From: current.State, To: StateApproved, Current: current}
		}
		if current.ApprovedBy(approver) {
			result = current
			return ErrAlreadyApproved
		}
		next := current.clone()
		next.Approvals = append(next.Approvals, Approval{UserID: approver, At: now})
		count := fmt.Sprintf("%d of %d", len(next.Approvals), needed)
		if err := appendAudit(tx, AuditEvent{At: now, Actor: approver, Action: "approval", RequestID: id, Detail: count}); err != nil {
			return err
		}
		if len(next.Approvals) >= needed {
			next.State, next.ApproverID = StateApproved, approver
			fillMoveTimes(&next, current.State, now)
			if err := appendAudit(tx, AuditEvent{At: now, Actor: approver, Action: string(StateApproved), RequestID: id}); err != nil {
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
	case errors.Is(err, ErrAlreadyApproved):
		return result, fmt.Errorf("approve request %s: %w", id, err)
	}
	if _, illegal := errors.AsType[*MoveError](err); illegal {
		return Request{}, err
	}
	return Request{}, fmt.Errorf("approve request %s: %w", id, err)
}
