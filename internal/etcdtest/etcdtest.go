// Package etcdtest starts etcd inside a test process: one member or a cluster
// of several, on 127.0.0.1 with free ports and a temporary folder, with members
// a test can stop and start again. Only tests import it, so the gpubot binary
// never links etcd's server (TestBinaryDoesNotLinkTheEtcdServer checks).
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// readyWithin bounds a member's start. One member is ready in well under a
// second on a busy 2-core machine, a cluster in a few; the bound only stops a
// broken start from hanging a test.
const readyWithin = 60 * time.Second

// Cluster is an etcd running in the test process.
type Cluster struct {
	t       testing.TB
	opts    Options
	mu      sync.Mutex
	members []*member
}

// Options change how the members run.
type Options struct {
	// Fsync makes members fsync their log on every commit, as a production
	// member does, so a benchmark compares etcd's commits with bbolt's (which
	// fsyncs every commit). Tests leave it off: a busy machine's disk would
	// only make them slow.
	Fsync bool
}

type member struct {
	name      string
	dir       string
	clientURL url.URL
	peerURL   url.URL
	etcd      *embed.Etcd // nil while stopped
}

// Start starts a cluster of n members and stops it when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, Options{})
}

// StartWith is Start with members run as opts say.
func StartWith(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, opts: opts}
	for i := range n {
		c.members = append(c.members, &member{
			name:      fmt.Sprintf("m%d", i),
			dir:       t.TempDir(),
			clientURL: freeURL(t),
			peerURL:   freeURL(t),
		})
	}
	t.Cleanup(c.stopAll)
	// Members of a new cluster wait for each other, so they start together.
	errs := make(chan error, n)
	for _, m := range c.members {
		go func() { errs <- c.start(m) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("start etcd: %v", err)
		}
	}
	return c
}

// Endpoints are the members' client URLs, for ETCD_ENDPOINTS or a client.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.clientURL.String())
	}
	return out
}

// Client is a client of the cluster, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Stop stops member i (its data stays, for Restart).
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.etcd != nil {
		m.etcd.Close()
		m.etcd = nil
	}
}

// Restart starts member i again on its ports and data. It returns an error
// rather than failing the test, so a goroutine other than the test's may call it.
func (c *Cluster) Restart(i int) error {
	if err := c.start(c.members[i]); err != nil {
		return fmt.Errorf("restart etcd member %d: %w", i, err)
	}
	return nil
}

// Members is how many members the cluster has.
func (c *Cluster) Members() int { return len(c.members) }

func (c *Cluster) stopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}

func (c *Cluster) start(m *member) error {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenClientUrls = []url.URL{m.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.clientURL}
	cfg.ListenPeerUrls = []url.URL{m.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.peerURL}
	cfg.InitialCluster = c.initialCluster()
	cfg.InitialClusterToken = "gpubot-test"
	// etcd logs its own shutdown as errors; a test reads what gpubot logs.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Short ticks make elections (and a member's restart) take a fraction of
	// a second; no fsync keeps a busy test machine's disk out of the way.
	cfg.TickMs = 10
	cfg.ElectionMs = 100
	cfg.UnsafeNoFsync = !c.opts.Fsync
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("member %s: %w", m.name, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("member %s: %w", m.name, err)
	case <-time.After(readyWithin):
		e.Close()
		return fmt.Errorf("member %s not ready within %s", m.name, readyWithin)
	}
	c.mu.Lock()
	m.etcd = e
	c.mu.Unlock()
	return nil
}

func (c *Cluster) initialCluster() string {
	var parts []string
	for _, m := range c.members {
		parts = append(parts, m.name+"="+m.peerURL.String())
	}
	return strings.Join(parts, ",")
}

// freeURL is an http URL on a port of 127.0.0.1 that was free a moment ago.
func freeURL(t testing.TB) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

// WaitHealthy waits until the cluster answers a read, bounded by ctx.
func (c *Cluster) WaitHealthy(ctx context.Context, cli *clientv3.Client) error {
	for {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(attempt, "health")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd not healthy: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
