package domain

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Request is one ask for a GPU machine, from the slash command to the end of
// the machine. It is stored as JSON; field names in the file never change.
type Request struct {
	ID             string `json:"id"`
	TeamID         string `json:"team_id"`
	UserID         string `json:"user_id"`
	ChannelID      string `json:"channel_id,omitempty"` // where the thread lives (a channel, or the DM channel)
	ThreadTS       string `json:"thread_ts,omitempty"`  // ts of the thread root message ("" until posted)
	CommandChannel string `json:"command_channel,omitempty"`

	InstanceType string        `json:"instance_type"`
	Sector       string        `json:"sector,omitempty"`
	Reason       string        `json:"reason,omitempty"`
	SSHKey       string        `json:"ssh_key,omitempty"`  // authorized_keys line snapshot at request time
	Lifetime     time.Duration `json:"lifetime,omitempty"` // asked-for lifetime

	State State `json:"state"`

	ApproverID      string    `json:"approver_id,omitempty"`
	DecisionReason  string    `json:"decision_reason,omitempty"`
	DecidedAt       time.Time `json:"decided_at,omitzero"`
	ApprovalChannel string    `json:"approval_channel,omitempty"`
	ApprovalTS      string    `json:"approval_ts,omitempty"`
	// ApprovalsNeeded is how many distinct approvals the request needs, fixed
	// when it is made (0 in records from before it was kept: one).
	ApprovalsNeeded int `json:"approvals_needed,omitempty"`
	// Approvals are the approvers who said yes so far, in order; the last one
	// completes the count.
	Approvals []Approval `json:"approvals,omitempty"`
	// OverBudget says why a request needs approval that its type alone would not:
	// the budgets it would pass, with the figures when it was made ("" when none).
	OverBudget string `json:"over_budget,omitempty"`
	// ExtensionAsked is an extension over budget waiting for an approver (0 when
	// none), asked by ExtensionAskedBy at ExtensionAskedAt; the card asking is at ExtensionCardTS in
	// ApprovalChannel, and ExtensionNote holds the figures it shows.
	ExtensionAsked   time.Duration `json:"extension_asked,omitempty"`
	ExtensionAskedBy string        `json:"extension_asked_by,omitempty"`
	ExtensionAskedAt time.Time     `json:"extension_asked_at,omitzero"`
	ExtensionCardTS  string        `json:"extension_card_ts,omitempty"`
	ExtensionNote    string        `json:"extension_note,omitempty"`

	IdempotencyKey string `json:"idempotency_key"`
	InstanceID     string `json:"instance_id,omitempty"`
	IP             string `json:"ip,omitempty"`
	Region         string `json:"region,omitempty"`
	FalStatus      string `json:"fal_status,omitempty"`
	Error          string `json:"error,omitempty"`      // plain-words failure, for failed
	EndReason      string `json:"end_reason,omitempty"` // why it ended: "deleted by <user>", "expired", ...

	// CreatingSince is when the request moved to creating: fal remembers the
	// idempotency key for 10 minutes from a create call, none of which came earlier.
	CreatingSince time.Time `json:"creating_since,omitzero"`
	// CreateCalls counts the create calls sent for the request, each recorded before
	// it goes out: while above zero, fal may run a machine for the request even
	// without an answer. Reset when fal refuses the create.
	CreateCalls int `json:"create_calls,omitempty"`
	// DeleteFailures counts failed delete calls, so an alert that needs several
	// holds across restarts.
	DeleteFailures int `json:"delete_failures,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	ReadyAt   time.Time `json:"ready_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// UnknownSince is when fal began reporting the instance's status as unknown
	// (zero while it reports anything else).
	UnknownSince time.Time `json:"unknown_since,omitzero"`

	// Notices already sent, e.g. "ready", "reminder". Recorded before posting,
	// so a restart never posts the same notice twice.
	Notices map[string]time.Time `json:"notices,omitempty"`

	Version int64 `json:"version"` // bumped on every write
}

// Owner is the Slack user who asked for the request.
func (r Request) Owner() UserRef { return UserRef{TeamID: r.TeamID, UserID: r.UserID} }

// Live reports whether the request has not ended yet.
func (r Request) Live() bool { return !r.State.Terminal() }

// NoticeSent reports whether notice name was already recorded.
func (r Request) NoticeSent(name string) bool {
	_, ok := r.Notices[name]
	return ok
}

// Clone returns a copy that shares no map with r, so an edit callback can
// change the copy freely.
func (r Request) Clone() Request {
	r.Notices = maps.Clone(r.Notices)
	r.Approvals = slices.Clone(r.Approvals)
	return r
}

// Approval is one approver's yes on a request that needs several.
type Approval struct {
	UserID string    `json:"user_id"`
	At     time.Time `json:"at"`
}

// ApprovedBy reports whether user's approval is recorded on the request.
func (r Request) ApprovedBy(user string) bool {
	return slices.ContainsFunc(r.Approvals, func(a Approval) bool { return a.UserID == user })
}

// NewRecord is what a store keeps of a request it is asked to create: r must be
// awaiting_approval or approved and name its owner; empty ID and IdempotencyKey get
// UUIDs, CreatedAt (when zero) and UpdatedAt are now, Version is 1. Both stores
// create through it, so a request reads the same from either.
func NewRecord(r *Request, now time.Time) (Request, error) {
	if r == nil {
		return Request{}, errors.New("nil request")
	}
	if r.State != StateAwaitingApproval && r.State != StateApproved {
		return Request{}, fmt.Errorf("a new request must be %s or %s, not %q", StateAwaitingApproval, StateApproved, r.State)
	}
	if err := r.Owner().Validate(); err != nil {
		return Request{}, err
	}
	rec := r.Clone()
	if rec.ID == "" {
		rec.ID = uuid.NewString()
	}
	if rec.IdempotencyKey == "" {
		rec.IdempotencyKey = uuid.NewString()
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = now
	}
	rec.CreatedAt = rec.CreatedAt.UTC().Round(0)
	rec.UpdatedAt = now
	rec.Version = 1
	return rec, nil
}

// Summary is the detail of a request's "requested" audit event: type, sector and
// lifetime.
func (r Request) Summary() string {
	s := r.InstanceType
	if r.Sector != "" {
		s += " " + r.Sector
	}
	if r.Lifetime > 0 {
		s += " for " + r.Lifetime.String()
	}
	return s
}
