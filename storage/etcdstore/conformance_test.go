package etcdstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/etcdtest"
	"github.com/gpubot/gpubot/storage/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdBackend opens stores under fresh prefixes of one etcd, and checks every
// index against the records when a test ends.
type etcdBackend struct {
	cli      *clientv3.Client
	prefixes atomic.Int64
}

func (b *etcdBackend) Place(t *testing.T) string {
	return fmt.Sprintf("/gpubot-test/%d/", b.prefixes.Add(1))
}

func (b *etcdBackend) Open(t *testing.T, place string, now func() time.Time) domain.Store {
	t.Helper()
	s, err := Open(context.Background(), b.cli, place, Options{Now: now})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := checkConsistent(context.Background(), s); err != nil {
			t.Errorf("store left inconsistent: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	cluster := etcdtest.Start(t, 1)
	storetest.Run(t, &etcdBackend{cli: cluster.Client(t)})
}
