package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"github.com/gpubot/gpubot/internal/domain"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// checkConsistent reads everything under the store's prefix at one revision
// and verifies that the indexes hold exactly the entries the records call
// for, that the audit index matches the log, and that the audit sequence is
// the last event's.
func checkConsistent(ctx context.Context, s *Store) error {
	resp, err := s.cli.Get(ctx, s.keys.prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	all := map[string]string{}
	for _, kv := range resp.Kvs {
		all[string(kv.Key)] = string(kv.Value)
	}
	want := map[string]string{}
	for key, value := range all {
		if !strings.HasPrefix(key, s.keys.requests()) {
			continue
		}
		var r domain.Request
		if err := json.Unmarshal([]byte(value), &r); err != nil {
			return fmt.Errorf("record %s is not whole: %w", key, err)
		}
		if s.keys.request(r.ID) != key || !r.State.Valid() || r.Version < 1 || r.CreatedAt.IsZero() {
			return fmt.Errorf("record %s is malformed: %+v", key, r)
		}
		for _, e := range s.indexEntries(&r, []byte(value)) {
			want[e.key] = string(e.value)
		}
	}
	var lastSeq uint64
	for key, value := range all {
		if !strings.HasPrefix(key, s.keys.auditLog()) {
			continue
		}
		e, err := decodeAudit([]byte(value))
		if err != nil {
			return err
		}
		if key != s.keys.auditEvent(e.Seq) {
			return fmt.Errorf("audit event under %s has seq %d", key, e.Seq)
		}
		lastSeq = max(lastSeq, e.Seq)
		if e.RequestID != "" {
			want[s.keys.auditOfRequest(e.RequestID, e.Seq)] = ""
		}
	}
	if lastSeq > 0 && all[s.keys.auditSeq()] != fmt.Sprint(lastSeq) {
		return fmt.Errorf("audit sequence %q, last event %d", all[s.keys.auditSeq()], lastSeq)
	}
	got := map[string]string{}
	for key, value := range all {
		if strings.HasPrefix(key, s.keys.prefix+"idx/") || strings.HasPrefix(key, s.keys.prefix+"audit/req/") {
			got[key] = value
		}
	}
	if !maps.Equal(got, want) {
		for key, value := range got {
			if want[key] != value {
				return fmt.Errorf("index entry %s = %.60q, records call for %.60q", key, value, want[key])
			}
		}
		return fmt.Errorf("indexes have %d entries, records call for %d", len(got), len(want))
	}
	return nil
}
