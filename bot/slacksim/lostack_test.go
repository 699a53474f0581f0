package slacksim

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/slack-go/slack/socketmode"
)

func TestLoseNextAckDropsTheAckUntilARedelivery(t *testing.T) {
	s := newSim(t, Options{})
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			_ = client.Ack(*evt.Request, map[string]any{"text": fmt.Sprintf("attempt %d", evt.Request.RetryAttempt)})
		}
	})
	s.LoseNextAck()
	lost, err := s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", "key set x")
	if !errors.Is(err, ErrAckLost) || string(lost.Payload) != `{"text":"attempt 0"}` {
		t.Fatalf("first delivery: %+v, %v; want the lost ack with ErrAckLost", lost, err)
	}
	for _, m := range s.Messages() {
		if strings.Contains(m.AllText(), "attempt 0") {
			t.Fatal("a lost ack's payload was shown to the user")
		}
	}
	again, err := s.Redeliver(testCtx(t, 5*time.Second), lost.EnvelopeID)
	if err != nil || string(again.Payload) != `{"text":"attempt 1"}` {
		t.Fatalf("redelivery: %+v, %v; want its ack", again, err)
	}
	// Only the next envelope loses its ack.
	next, err := s.SlashCommand(testCtx(t, 5*time.Second), alice, gpuChannel, "/gpu", "help")
	if err != nil || string(next.Payload) != `{"text":"attempt 0"}` {
		t.Fatalf("the envelope after: %+v, %v", next, err)
	}
}
