// Package testkit holds the few helpers gpubot's tests share: a clock a test moves by
// hand, a buffer that several goroutines may write to (a logger's destination), and
// fresh SSH key lines.
// Only tests import it.
package testkit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Clock is a clock a test moves forward, so lifetimes of hours pass in an instant.
// Its Now method is what gpubot's parts take as their clock. It is safe for
// concurrent use.
type Clock struct {
	mu     sync.Mutex
	base   func() time.Time
	offset time.Duration
}

// FixedClock stands still at start until the test advances it.
func FixedClock(start time.Time) *Clock {
	return &Clock{base: func() time.Time { return start }}
}

// RunningClock is the wall clock plus whatever the test added with Advance: for a
// whole bot, whose network timeouts need time to pass while its lifetimes jump.
func RunningClock() *Clock {
	return &Clock{base: time.Now}
}

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base().Add(c.offset)
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// Buffer collects what is written to it, safely from several goroutines.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// KeyLine is a fresh ed25519 public key in authorized_keys form, with comment,
// as a user pastes it from their .pub file.
func KeyLine(t testing.TB, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("ed25519 key: %v", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("ssh public key: %v", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " " + comment
}
