package domain

import "time"

// AuditEvent is one line of the append-only audit trail.
type AuditEvent struct {
	Seq       uint64    `json:"seq"` // assigned by the store, increasing
	At        time.Time `json:"at"`
	Actor     string    `json:"actor,omitempty"` // Slack user id, or "gpubot" for the bot itself
	Action    string    `json:"action"`          // "requested", a state name, "key_set", ...
	RequestID string    `json:"request_id,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}
