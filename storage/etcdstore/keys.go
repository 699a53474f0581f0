package etcdstore

import (
	"fmt"
	"net/url"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
)

// keyspace names every key under the store's prefix. The names are part of
// the stored format: a change needs a new schema version.
//
//	schema                                   the schema version
//	req/<id>                                 a request, as JSON
//	idx/instance/<instance>                  -> request id
//	idx/user/<team>/<user>/<newest first>/<id> -> request id
//	idx/unfinished/<created>/<id>            -> "<version> <request JSON>"
//	idx/expiring/<expires>/<id>              -> request id
//	idx/ended/<ended>/<id>                   -> "<ready>/<team>/<user>" (machines that ran and ended)
//	claim/<id>                               held while a replica does the request's next step
//	audit/seq                                the last audit sequence number
//	audit/log/<seq>                          an audit event, as JSON
//	audit/req/<request id>/<seq>             (empty)
//	key/<team>/<user>                        an SSH key, as JSON
//	seen/<key>                               a seen key until its expiry, as JSON
//	orphans                                  the orphan sightings, as JSON
//	home/<team>/<user>                       when the user first opened the Home tab (RFC 3339)
//
// Times and sequence numbers are 16 hex digits that sort in order; names
// inside a composite key are path-escaped, so none can run into the next.
type keyspace struct{ prefix string }

func (k keyspace) schema() string                    { return k.prefix + "schema" }
func (k keyspace) requests() string                  { return k.prefix + "req/" }
func (k keyspace) request(id string) string          { return k.requests() + id }
func (k keyspace) byInstance(instance string) string { return k.prefix + "idx/instance/" + instance }
func (k keyspace) userIndex(u domain.UserRef) string {
	return k.prefix + "idx/user/" + ownerTag(u) + "/"
}
func (k keyspace) byUser(r *domain.Request) string {
	return k.userIndex(r.Owner()) + descendingTime(r.CreatedAt) + "/" + r.ID
}
func (k keyspace) unfinishedIndex() string { return k.prefix + "idx/unfinished/" }
func (k keyspace) unfinished(r *domain.Request) string {
	return k.unfinishedIndex() + ascendingTime(r.CreatedAt) + "/" + r.ID
}

// unfinishedID is the request id of an unfinished index key: what follows
// the fixed-width time and its "/".
func (k keyspace) unfinishedID(key []byte) string {
	return string(key[len(k.unfinishedIndex())+len(hex16(0))+1:])
}
func (k keyspace) expiringIndex() string { return k.prefix + "idx/expiring/" }
func (k keyspace) expiring(r *domain.Request) string {
	return k.expiringIndex() + ascendingTime(r.ExpiresAt) + "/" + r.ID
}

func (k keyspace) endedIndex() string { return k.prefix + "idx/ended/" }
func (k keyspace) ended(r *domain.Request) string {
	return k.endedIndex() + ascendingTime(r.EndedAt) + "/" + r.ID
}

// endedValue is when the machine became ready, then its owner: a reader skips
// the machines outside a window, or of other people, without reading them.
func endedValue(r *domain.Request) []byte {
	return []byte(ascendingTime(r.ReadyAt) + "/" + ownerTag(r.Owner()))
}

func ownerTag(u domain.UserRef) string { return escape(u.TeamID) + "/" + escape(u.UserID) }

func (k keyspace) claim(id string) string { return k.prefix + "claim/" + id }

// expiringThrough is the end of the range of expiring entries at or before t:
// "/" sorts before "0", so every entry at t is below it, and every later one above.
func (k keyspace) expiringThrough(t time.Time) string {
	return k.expiringIndex() + ascendingTime(t) + "0"
}

func (k keyspace) auditSeq() string             { return k.prefix + "audit/seq" }
func (k keyspace) auditLog() string             { return k.prefix + "audit/log/" }
func (k keyspace) auditEvent(seq uint64) string { return k.auditLog() + hex16(seq) }
func (k keyspace) auditIndex(requestID string) string {
	return k.prefix + "audit/req/" + escape(requestID) + "/"
}
func (k keyspace) auditOfRequest(requestID string, seq uint64) string {
	return k.auditIndex(requestID) + hex16(seq)
}
func (k keyspace) sshKeys() string { return k.prefix + "key/" }
func (k keyspace) sshKey(u domain.UserRef) string {
	return k.sshKeys() + escape(u.TeamID) + "/" + escape(u.UserID)
}
func (k keyspace) seenKeys() string                   { return k.prefix + "seen/" }
func (k keyspace) seen(key string) string             { return k.seenKeys() + escape(key) }
func (k keyspace) homeOpened(u domain.UserRef) string { return k.prefix + "home/" + ownerTag(u) }

// timeFormat writes times as values in full, in UTC.
const timeFormat = time.RFC3339Nano

func (k keyspace) orphans() string { return k.prefix + "orphans" }

func escape(s string) string { return url.PathEscape(s) }

func hex16(n uint64) string { return fmt.Sprintf("%016x", n) }

// ascendingTime sorts times in order, before 1970 too (the sign bit is
// flipped so negative nanoseconds sort first).
func ascendingTime(t time.Time) string { return hex16(uint64(t.UnixNano()) ^ (1 << 63)) }

// descendingTime sorts later times first.
func descendingTime(t time.Time) string { return hex16(^(uint64(t.UnixNano()) ^ (1 << 63))) }
