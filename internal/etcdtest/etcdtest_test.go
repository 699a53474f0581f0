package etcdtest

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestOneMemberServesReadsAndWrites(t *testing.T) {
	c := Start(t, 1)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	got, err := cli.Get(ctx, "k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v" {
		t.Fatalf("get: %v %v", got, err)
	}
}

func TestThreeMembersKeepWritingWithOneStopped(t *testing.T) {
	c := Start(t, 3)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.Stop(0)
	if _, err := cli.Put(ctx, "k", "with two"); err != nil {
		t.Fatalf("write with one member stopped: %v", err)
	}
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx, cli); err != nil {
		t.Fatal(err)
	}
	got, err := cli.Get(ctx, "k")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "with two" {
		t.Fatalf("read after restart: %v %v", got, err)
	}
}

// A member started with Fsync syncs its log to disk on a write; the tests'
// default member does not. etcd counts its log's fsyncs in a metric it serves
// on the client URL; the count is the process's, so the two run one after the other.
func TestFsyncMemberSyncsItsLogAndTheDefaultDoesNot(t *testing.T) {
	for _, tc := range []struct {
		opts      Options
		wantSyncs bool
	}{
		{Options{Fsync: true}, true},
		{Options{}, false},
	} {
		t.Run(fmt.Sprintf("fsync=%v", tc.opts.Fsync), func(t *testing.T) {
			c := StartWith(t, 1, tc.opts)
			cli := c.Client(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			before := walFsyncs(t, c.Endpoints()[0])
			for i := range 5 {
				if _, err := cli.Put(ctx, "k", strconv.Itoa(i)); err != nil {
					t.Fatal(err)
				}
			}
			synced := walFsyncs(t, c.Endpoints()[0]) > before
			if synced != tc.wantSyncs {
				t.Errorf("log fsynced on 5 writes: %v, want %v", synced, tc.wantSyncs)
			}
		})
	}
}

// walFsyncs reads how many times etcd has fsynced its write-ahead log.
func walFsyncs(t *testing.T, endpoint string) int {
	t.Helper()
	resp, err := http.Get(endpoint + "/metrics")
	if err != nil {
		t.Fatalf("etcd metrics: %v", err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		value, ok := strings.CutPrefix(lines.Text(), "etcd_disk_wal_fsync_duration_seconds_count ")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(value)
		if err != nil {
			t.Fatalf("etcd metrics: fsync count %q: %v", value, err)
		}
		return n
	}
	t.Fatalf("etcd metrics: no etcd_disk_wal_fsync_duration_seconds_count (read error: %v)", lines.Err())
	return 0
}
