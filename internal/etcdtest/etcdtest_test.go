package etcdtest

import (
	"context"
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
