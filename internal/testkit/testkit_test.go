package testkit

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestFixedClockMovesOnlyWhenAdvanced(t *testing.T) {
	start := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	c := FixedClock(start)
	if !c.Now().Equal(start) {
		t.Fatalf("Now = %v, want %v", c.Now(), start)
	}
	c.Advance(90 * time.Minute)
	if want := start.Add(90 * time.Minute); !c.Now().Equal(want) {
		t.Fatalf("after Advance, Now = %v, want %v", c.Now(), want)
	}
}

func TestRunningClockKeepsWhatWasAdded(t *testing.T) {
	c := RunningClock()
	before := time.Now()
	c.Advance(48 * time.Hour)
	if got := c.Now().Sub(before); got < 48*time.Hour {
		t.Fatalf("Now is %v after the real time, want at least 48h", got)
	}
}

func TestBufferTakesConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { fmt.Fprintf(&b, "line %02d\n", i) })
	}
	wg.Wait()
	if got := len(b.String()); got != 50*len("line 00\n") {
		t.Fatalf("%d bytes written, want %d", got, 50*len("line 00\n"))
	}
}
