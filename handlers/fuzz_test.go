package handlers

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/storage"
)

// The fuzz target feeds random and malformed interaction payloads to the handlers. No
// real Slack or fal can be driven fast enough for fuzzing, so these record what they
// are asked instead.

type recordingSlack struct {
	mu    sync.Mutex
	calls int
}

func (s *recordingSlack) note() { s.mu.Lock(); s.calls++; s.mu.Unlock() }
func (s *recordingSlack) PostMessage(context.Context, string, string, Message) (string, error) {
	s.note()
	return "1700000000.000100", nil
}
func (s *recordingSlack) UpdateMessage(context.Context, string, string, Message) error {
	s.note()
	return nil
}
func (s *recordingSlack) PostEphemeral(context.Context, string, string, Message) error {
	s.note()
	return nil
}
func (s *recordingSlack) OpenView(context.Context, string, slack.ModalViewRequest) error {
	s.note()
	return nil
}
func (s *recordingSlack) OpenDM(context.Context, string) (string, error) {
	s.note()
	return "DUSER", nil
}
func (s *recordingSlack) Respond(context.Context, string, Message, bool) error {
	s.note()
	return nil
}

type recordingFal struct {
	mu      sync.Mutex
	creates int
	deletes int
}

func (f *recordingFal) Create(context.Context, fal.CreateRequest, string) (fal.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	return fal.Instance{ID: "inst_fuzz", InstanceType: fal.Type8xH100, Region: "us-west", Status: fal.StatusPending}, nil
}
func (f *recordingFal) Get(context.Context, string) (fal.Instance, error) { return fal.Instance{}, nil }
func (f *recordingFal) List(context.Context) ([]fal.Instance, error)      { return nil, nil }
func (f *recordingFal) Delete(context.Context, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deletes++
	return nil
}

const (
	fuzzWaiting = "11111111-1111-4111-8111-111111111111" // alice's 8x, awaiting approval
	fuzzReady   = "22222222-2222-4222-8222-222222222222" // alice's 1x, ready
)

// fuzzStore is a store holding the two requests the payloads aim at.
func fuzzStore(t *testing.T) *storage.Store {
	store, err := storage.Open(filepath.Join(t.TempDir(), "fuzz.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ctx := context.Background()
	for _, r := range []domain.Request{
		{ID: fuzzWaiting, TeamID: "T1", UserID: "UALICE", InstanceType: fal.Type8xH100, Lifetime: time.Hour, State: domain.StateAwaitingApproval, ThreadTS: "1.1", ChannelID: "C1"},
		{ID: fuzzReady, TeamID: "T1", UserID: "UALICE", InstanceType: fal.Type1xH100, Lifetime: time.Hour, State: domain.StateApproved, ThreadTS: "1.2", ChannelID: "C1"},
	} {
		if err := store.CreateRequest(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	for _, to := range []domain.State{domain.StateCreating, domain.StateProvisioning, domain.StateReady} {
		if _, err := store.Move(ctx, fuzzReady, to, "test", "", func(u *domain.Request) error { u.InstanceID = "inst_ready"; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	return store
}

func FuzzInteraction(f *testing.F) {
	click := func(user, action, value string) string {
		return `{"type":"block_actions","user":{"id":"` + user + `","team_id":"T1"},"team":{"id":"T1"},"channel":{"id":"C1"},"trigger_id":"t1","response_url":"http://127.0.0.1:1/r","actions":[{"action_id":"` + action + `","block_id":"b","value":"` + value + `","type":"button"}]}`
	}
	// A click on the Home tab has no channel or response_url, only the view.
	homeClick := func(user, action, value string) string {
		return `{"type":"block_actions","user":{"id":"` + user + `","team_id":"T1"},"team":{"id":"T1"},"container":{"type":"view","view_id":"V1"},"view":{"id":"V1","type":"home"},"trigger_id":"t1","actions":[{"action_id":"` + action + `","block_id":"b","value":"` + value + `","type":"button"}]}`
	}
	submit := func(user, callback, meta, block, value string) string {
		return `{"type":"view_submission","user":{"id":"` + user + `","team_id":"T1"},"view":{"callback_id":"` + callback + `","private_metadata":"` + meta + `","state":{"values":{"` + block + `":{"` + block + `":{"type":"plain_text_input","value":"` + value + `"}}}}}}`
	}
	for _, seed := range []string{
		click("UBOB", ActionApprove, fuzzWaiting),
		click("UALICE", ActionApprove, fuzzWaiting),
		click("UBOB", ActionDeny, fuzzWaiting),
		click("UALICE", ActionDeleteConfirm, fuzzReady),
		click("UMALLORY", ActionDeleteNow, fuzzReady),
		click("UADMIN", ActionExtend, fuzzReady),
		click("UBOB", ActionApprove, ""),
		click("", ActionApprove, fuzzWaiting),
		click("UBOB", "gpubot_unknown", fuzzWaiting),
		click("UALICE", ActionWithdraw, fuzzWaiting),
		click("UBOB", ActionWithdraw, fuzzWaiting),
		submit("UBOB", ViewDeny, fuzzWaiting, BlockReason, "no budget"),
		submit("UALICE", ViewDeny, fuzzWaiting, BlockReason, "me"),
		submit("UBOB", ViewDeny, fuzzWaiting, BlockReason, ""),
		submit("UBOB", ViewDeny, fuzzWaiting, BlockReason, strings.Repeat("&", maxDenyReason+1)),
		submit("UBOB", ViewDeny, fuzzWaiting, BlockReason, strings.Repeat("é", maxDenyReason)),
		submit("UALICE", ViewKey, "", BlockKey, "not a key"),
		submit("UALICE", ViewCreate, "C1", BlockType, "gpu_8x_h100_sxm5"),
		`{"type":"block_actions","actions":[]}`,
		`{"type":"block_actions","user":{"id":"UBOB"},"actions":[{"action_id":"gpubot_approve"},{"action_id":"gpubot_deny"}]}`,
		`{"type":"view_submission","view":{"state":null}}`,
		homeClick("UBOB", ActionApprove, fuzzWaiting),
		homeClick("UMALLORY", ActionDeleteConfirm, fuzzReady),
		homeClick("UALICE", ActionExtend, fuzzReady),
		homeClick("UALICE", ActionHomeCreate, "create"),
		homeClick("UALICE", ActionHomeKey, "set"),
		`{"type":"shortcut","callback_id":"gpubot_create","trigger_id":"t1","user":{"id":"UALICE","team_id":"T1"}}`,
		`{"type":"shortcut","callback_id":"gpubot_other","trigger_id":"t1","user":{"id":"UALICE"}}`,
		`{"type":"shortcut"}`, `{}`, `null`, `[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var cb slack.InteractionCallback
		if err := json.Unmarshal(payload, &cb); err != nil {
			return // slack-go would not decode it either, so the handlers never see it
		}
		store := fuzzStore(t)
		ctx := context.Background()
		before := versions(t, store)
		s, f := &recordingSlack{}, &recordingFal{}
		h := New(Config{
			Policy:          NewPolicy([]string{"UBOB", "UCAROL"}, []string{"UADMIN"}, []string{fal.Type8xH100}, time.Hour, 72*time.Hour),
			ApprovalChannel: "CAPPROVALS", PollInterval: time.Second, ReminderBefore: time.Minute,
		}, store, f, s, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
		h.Interaction(ctx, "", cb)
		h.Shutdown(10 * time.Second)

		allowed := allowedChange(cb)
		after := versions(t, store)
		for id, v := range after {
			if v != before[id] && !allowed[id] {
				t.Fatalf("request %s changed (version %d -> %d) on a payload that may not change it: %s", id, before[id], v, payload)
			}
		}
		if f.creates > 0 && !allowed[fuzzWaiting] {
			t.Fatalf("fal create on a payload that may not approve: %s", payload)
		}
		if f.deletes > 0 && !allowed[fuzzReady] {
			t.Fatalf("fal delete on a payload that may not delete: %s", payload)
		}
	})
}

// allowedChange says which requests a payload may legitimately change: an approver's
// approve or deny of alice's waiting request, or alice's (or an admin's) delete or
// extend of her ready machine.
func allowedChange(cb slack.InteractionCallback) map[string]bool {
	allowed := map[string]bool{}
	user := cb.User.ID
	approver := user == "UBOB" || user == "UCAROL"
	switch cb.Type {
	case slack.InteractionTypeBlockActions:
		if len(cb.ActionCallback.BlockActions) != 1 {
			return allowed
		}
		a := cb.ActionCallback.BlockActions[0]
		switch {
		case a.ActionID == ActionApprove && a.Value == fuzzWaiting && approver:
			allowed[fuzzWaiting] = true
		case a.ActionID == ActionWithdraw && a.Value == fuzzWaiting && user == "UALICE":
			allowed[fuzzWaiting] = true
		case (a.ActionID == ActionDeleteConfirm || a.ActionID == ActionDeleteNow || a.ActionID == ActionExtend) &&
			a.Value == fuzzReady && (user == "UALICE" || user == "UADMIN"):
			allowed[fuzzReady] = true
		}
	case slack.InteractionTypeViewSubmission:
		reason := strings.TrimSpace(viewValues(cb.View.State)[BlockReason])
		bounded := reason != "" && utf8.RuneCountInString(reason) <= maxDenyReason
		if cb.View.CallbackID == ViewDeny && cb.View.PrivateMetadata == fuzzWaiting && approver && bounded {
			allowed[fuzzWaiting] = true
		}
	}
	return allowed
}

func versions(t *testing.T, store domain.Store) map[string]int64 {
	out := map[string]int64{}
	for _, id := range []string{fuzzWaiting, fuzzReady} {
		r, err := store.Request(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = r.Version
	}
	return out
}
