package handlers

import (
	"encoding/json"
	"testing"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// A fresh reply is acked as it always was, and a redelivery is acked with the
// recorded answer byte for byte, with its text still readable for response_url.
func TestReplyAckBytesFreshAndRecorded(t *testing.T) {
	fresh := reply(textMessage("Got it: <@UALICE> & `inst_1` > 2h"))
	fresh.Outcome = OutcomeRefused
	asBefore := struct {
		ResponseType string        `json:"response_type"`
		Text         string        `json:"text"`
		Blocks       []slack.Block `json:"blocks,omitempty"`
	}{fresh.ResponseType, fresh.Text, fresh.Blocks}

	ack := func(payload any) string {
		t.Helper()
		data, err := json.Marshal(socketmode.Response{EnvelopeID: "Ev1", Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	want := ack(asBefore)
	if got := ack(fresh); got != want {
		t.Errorf("fresh reply acked as\n%s\nwant\n%s", got, want)
	}
	replayed := recordedReply(replyJSON(fresh))
	if got := ack(replayed); got != want {
		t.Errorf("recorded reply acked as\n%s\nwant\n%s", got, want)
	}
	if replayed.Text != fresh.Text || len(replayed.Blocks) != len(fresh.Blocks) || replayed.Outcome != OutcomeRedelivered {
		t.Errorf("recorded reply reads back as %+v", replayed)
	}
	if recordedReply(replyJSON(nil)) != nil {
		t.Error("an empty ack recorded is replayed as a reply")
	}
}
