package domain

import (
	"context"
	"time"
)

// Store is everything gpubot keeps: users' SSH keys, requests with their
// life-cycle and indexes, the memory of Slack deliveries already handled, the
// orphan sightings and the append-only audit trail. Two implementations
// (storage, on one bbolt file, and storage/etcdstore, shared by replicas)
// keep every promise written here; storage/storetest checks them on both.
//
// Every write is atomic: a request, its indexes and its audit event change
// together or not at all. All methods are safe for concurrent use.
type Store interface {
	// CreateRequest stores a new request in state awaiting_approval or approved
	// and audits "requested". Empty ID and IdempotencyKey get UUIDs; CreatedAt
	// (when zero), UpdatedAt and Version are set on r. An id already used fails
	// with ErrDuplicate.
	CreateRequest(ctx context.Context, r *Request, opts ...WriteOption) error
	// Request reads one request; ErrNotFound when there is none.
	Request(ctx context.Context, id string) (Request, error)
	// RequestByInstance finds the request tracking a fal instance.
	RequestByInstance(ctx context.Context, instanceID string) (Request, error)
	// RequestsWithIDPrefix lists up to limit requests whose id starts with
	// prefix, in id order, at a cost that does not grow with the history.
	RequestsWithIDPrefix(ctx context.Context, prefix string, limit int) ([]Request, error)
	// RequestsByUser lists a user's requests, newest first.
	RequestsByUser(ctx context.Context, u UserRef) ([]Request, error)
	// ExpiringBefore lists the ready requests whose ExpiresAt is at or before
	// t, soonest first.
	ExpiringBefore(ctx context.Context, t time.Time) ([]Request, error)
	// Unfinished lists every request that has not ended, oldest first, at a
	// cost that follows the number of unfinished requests, not the history.
	Unfinished(ctx context.Context) ([]Request, error)
	// UnfinishedOf lists u's requests that have not ended, oldest first.
	UnfinishedOf(ctx context.Context, u UserRef) ([]Request, error)
	// RanDuring lists every request whose machine was ready at some moment in
	// [from, to): ReadyAt before to, and either not ended yet or EndedAt after
	// from; with owners given, only theirs. A request never ready is left out;
	// each is listed once (as it ended, if it ended while being read), in no set
	// order. Its cost follows what ran in the window, not the history: reports,
	// budgets and the digest read a month with it.
	RanDuring(ctx context.Context, from, to time.Time, owners ...UserRef) ([]Request, error)

	// Move changes a request's state along the state table (else a
	// *MoveError holding the request as it is), applies edit to it and audits
	// the move with actor and detail, in one compare-and-set.
	Move(ctx context.Context, id string, to State, actor, detail string, edit func(*Request) error, opts ...WriteOption) (Request, error)
	// MoveFrom is Move that also refuses unless the request is in one of from.
	MoveFrom(ctx context.Context, id string, from []State, to State, actor, detail string, edit func(*Request) error, opts ...WriteOption) (Request, error)
	// Update applies edit without a state change, rewriting the indexes and
	// bumping Version; edit may refuse by returning an error, and then nothing
	// is written.
	Update(ctx context.Context, id string, edit func(*Request) error, opts ...WriteOption) (Request, error)
	// MarkNotice records notice name on a request; first is false when it was
	// recorded already, so a notice is posted at most once.
	MarkNotice(ctx context.Context, id, name string) (first bool, err error)
	// ClaimWork takes request id's next step (a call to fal, a post) for the
	// caller: while the claim is held no one else, in this process or another
	// replica, gets it (ok is false). release gives it back. A process that
	// dies holding a claim loses it when its hold on the store ends (the
	// session's TTL on a shared store), so the work passes on.
	ClaimWork(ctx context.Context, id string) (release func(), ok bool, err error)
	// AddApproval records one approver's yes; the one that completes needed
	// moves the request to approved in the same write.
	AddApproval(ctx context.Context, id, approver string, needed int, opts ...WriteOption) (Request, error)

	// SetKey registers a user's SSH public key, replacing any earlier one.
	SetKey(ctx context.Context, u UserRef, k PublicKey, opts ...WriteOption) error
	// Key reads a user's key; ErrNotFound when there is none.
	Key(ctx context.Context, u UserRef) (StoredKey, error)
	// RemoveKey forgets a user's key; ErrNotFound when there was none.
	RemoveKey(ctx context.Context, u UserRef, opts ...WriteOption) error

	// Audit appends an event that is not a state change.
	Audit(ctx context.Context, e AuditEvent) error
	// AuditLog lists up to limit events with Seq above afterSeq, in order;
	// limit <= 0 means no limit.
	AuditLog(ctx context.Context, afterSeq uint64, limit int) ([]AuditEvent, error)
	// AuditFor lists a request's events in order.
	AuditFor(ctx context.Context, requestID string) ([]AuditEvent, error)

	// EnvelopeAnswer reports whether an envelope already did its effect, and
	// its answer, without writing.
	EnvelopeAnswer(ctx context.Context, envelopeID string) (answer []byte, done bool, err error)
	// MarkSeen remembers key for ttl (an alert being throttled, a digest's
	// period); first is false while it is remembered. The memory is bounded:
	// the entries nearest their expiry go first.
	MarkSeen(ctx context.Context, key string, ttl time.Duration) (first bool, err error)
	// SightOrphans records one listing of fal's untracked instances and
	// returns what is remembered of each.
	SightOrphans(ctx context.Context, ids []string) (map[string]OrphanSighting, error)
	// MarkOrphanReported records that the admins were told of an orphan;
	// first is false when they were told already.
	MarkOrphanReported(ctx context.Context, id string) (first bool, err error)
	// Orphans returns what is remembered of untracked instances, as
	// SightOrphans left it, without counting a listing (for the admins' Home tab).
	Orphans(ctx context.Context) (map[string]OrphanSighting, error)

	// MarkHomeOpened records, for good, that u opened gpubot's Home tab. It is
	// idempotent: marking again changes nothing (and need not write). A user
	// with no UserID is refused.
	MarkHomeOpened(ctx context.Context, u UserRef) error
	// HomeOpened reports whether u (team and user id) ever opened the Home tab,
	// as marked through any replica: a tab is published only to such people.
	HomeOpened(ctx context.Context, u UserRef) (bool, error)

	Close() error
}

// WriteOption qualifies a write: CreateRequest, Move, MoveFrom, Update, SetKey
// and RemoveKey take them.
type WriteOption func(*WriteOptions)

// WriteOptions are the qualifiers of one write, as a store reads them.
type WriteOptions struct {
	// EnvelopeID is the Slack envelope whose one effect the write is ("": none).
	EnvelopeID string
	// Answer is what the envelope was acked with, kept to answer a redelivery.
	Answer []byte
}

// CollectOptions applies opts, for a store implementing a write.
func CollectOptions(opts []WriteOption) WriteOptions {
	var o WriteOptions
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// ForEnvelope makes a write the one effect of a Slack envelope (a command or a
// click). In the write's own transaction, before the write, the store checks
// whether envelopeID did its effect already (within the store's envelope memory, an hour by default): if
// so the write is refused with an *AlreadyDoneError carrying the first answer;
// if not, envelopeID is recorded with answer (the ack payload, which may be
// empty) together with the write. A failed write records nothing. Slack
// redelivers an envelope whose ack it did not get, also to a gpubot that
// restarted, so this memory lives in the store and not in a process.
// An empty envelopeID records nothing.
func ForEnvelope(envelopeID string, answer []byte) WriteOption {
	return func(o *WriteOptions) {
		o.EnvelopeID = envelopeID
		o.Answer = answer
	}
}

// OrphanSighting is what the store remembers of an instance fal lists that no
// request tracks: how many listings in a row showed it, when the first did,
// and whether the admins have been told.
type OrphanSighting struct {
	Count    int       `json:"count"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	Reported bool      `json:"reported,omitempty"`
}
