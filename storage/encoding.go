package storage

import (
	"encoding/binary"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
)

// Bucket and meta key names. They are part of the file format.
const (
	bucketMeta       = "meta"
	bucketKeys       = "keys"
	bucketRequests   = "requests"
	bucketByInstance = "requests_by_instance"
	bucketByUser     = "requests_by_user"
	bucketUnfinished = "requests_unfinished"
	bucketExpiring   = "requests_expiring"
	// bucketByEnd indexes the finished requests whose machine ran, by when they ended.
	bucketByEnd          = "requests_by_end"
	bucketSeen           = "seen"
	bucketSeenByExpiry   = "seen_by_expiry"
	bucketAudit          = "audit"
	bucketAuditByRequest = "audit_by_request"
	bucketHomeOpened     = "home_opened" // team and user id -> when they first opened the Home tab

	metaSchemaKey    = "schema"
	metaSeenCountKey = "seen_count"
	// metaOrphansKey holds the instances fal lists that no request tracks, as
	// JSON: few or none, so one value in the meta bucket needs no new bucket.
	metaOrphansKey = "orphan_sightings"
)

const timeKeyLen = 8

// appendTime appends t as 8 bytes that sort in time order, before 1970 too
// (the sign bit is flipped so negative nanoseconds sort first).
func appendTime(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(t.UnixNano())^(1<<63))
}

// appendTimeDescending appends t so that later times sort first.
func appendTimeDescending(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, ^(uint64(t.UnixNano()) ^ (1 << 63)))
}

func decodeTime(b []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(b)^(1<<63))).UTC()
}

// appendField appends s with its length in front, so that a sequence of
// fields is unambiguous and no field's encoding is a prefix of another's.
func appendField(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

func userPrefix(u domain.UserRef) []byte {
	return appendField(appendField(nil, u.TeamID), u.UserID)
}

// byUserKey sorts a user's requests newest first.
func byUserKey(r *domain.Request) []byte {
	return append(appendTimeDescending(userPrefix(r.Owner()), r.CreatedAt), r.ID...)
}

// unfinishedKey sorts unfinished requests oldest first.
func unfinishedKey(r *domain.Request) []byte {
	return append(appendTime(nil, r.CreatedAt), r.ID...)
}

// unfinishedValue is the request's version, then its id, so a reader can
// tell whether a decoded copy it kept is still current without decoding.
func unfinishedValue(r *domain.Request) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(r.Version)), r.ID...)
}

func splitUnfinishedValue(v []byte) (version int64, id []byte, ok bool) {
	if len(v) <= 8 {
		return 0, nil, false
	}
	return int64(binary.BigEndian.Uint64(v)), v[8:], true
}

func expiringKey(r *domain.Request) []byte {
	return append(appendTime(nil, r.ExpiresAt), r.ID...)
}

// byEndKey sorts finished machines by when they ended.
func byEndKey(r *domain.Request) []byte {
	return append(appendTime(nil, r.EndedAt), r.ID...)
}

// byEndValue is when the machine became ready, then its owner: a reader skips the
// machines outside a window, or of other people, without decoding their records.
func byEndValue(r *domain.Request) []byte {
	return append(appendTime(nil, r.ReadyAt), userPrefix(r.Owner())...)
}

func auditByRequestKey(requestID string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendField(nil, requestID), seq)
}
