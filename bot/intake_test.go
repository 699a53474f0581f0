package bot

import (
	"testing"
	"time"
)

func TestIntakeClosesOnlyWhenQuiet(t *testing.T) {
	var in intake
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	const quiet = 50 * time.Millisecond

	if !in.take() {
		t.Fatal("an open intake refused an envelope")
	}
	if in.closeIfQuiet(t0, quiet, 0) {
		t.Fatal("closed while an envelope waited for its ack")
	}
	in.done(t0)
	if in.closeIfQuiet(t0.Add(quiet-time.Millisecond), quiet, 0) {
		t.Fatal("closed before the last ack had time to be written")
	}
	if in.closeIfQuiet(t0.Add(quiet), quiet, 1) {
		t.Fatal("closed while an envelope read from the link waited to be taken")
	}
	if !in.closeIfQuiet(t0.Add(quiet), quiet, 0) {
		t.Fatal("did not close once quiet")
	}
	if in.take() {
		t.Fatal("a closed intake took an envelope: its ack could not reach Slack")
	}
}

func TestIntakeClosedAtTheGraceSaysWhatWaits(t *testing.T) {
	var in intake
	in.take()
	in.take()
	in.done(time.Now())
	if waiting := in.close(); waiting != 1 {
		t.Fatalf("close says %d envelopes wait, want 1", waiting)
	}
	if in.take() {
		t.Fatal("a closed intake took an envelope")
	}
}
