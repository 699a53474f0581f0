package slacksim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// createModal is a modal like the bot's `/gpu create` form.
func createModal() slack.ModalViewRequest {
	typeSelect := slack.NewOptionsSelectBlockElement(slack.OptTypeStatic, nil, "type",
		slack.NewOptionBlockObject("gpu_1x_h100_sxm5", slack.NewTextBlockObject("plain_text", "1x H100", false, false), nil),
		slack.NewOptionBlockObject("gpu_8x_h100_sxm5", slack.NewTextBlockObject("plain_text", "8x H100", false, false), nil))
	reason := slack.NewPlainTextInputBlockElement(nil, "reason")
	reason.MaxLength = 40
	lifetime := slack.NewPlainTextInputBlockElement(nil, "lifetime")
	lifetime.InitialValue = "8h"
	lifetimeBlock := slack.NewInputBlock("lifetime_block", slack.NewTextBlockObject("plain_text", "Lifetime", false, false), nil, lifetime)
	lifetimeBlock.Optional = true
	return slack.ModalViewRequest{
		Type:            slack.VTModal,
		Title:           slack.NewTextBlockObject("plain_text", "Create a GPU", false, false),
		Submit:          slack.NewTextBlockObject("plain_text", "Create", false, false),
		Close:           slack.NewTextBlockObject("plain_text", "Cancel", false, false),
		CallbackID:      "create_instance",
		PrivateMetadata: `{"channel":"CGPU"}`,
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			slack.NewInputBlock("type_block", slack.NewTextBlockObject("plain_text", "Type", false, false), nil, typeSelect),
			slack.NewInputBlock("reason_block", slack.NewTextBlockObject("plain_text", "Reason", false, false), nil, reason),
			lifetimeBlock,
		}},
	}
}

// modalBot opens createModal for every slash command and answers each submission
// with the next of answers (nil: a plain ack).
type modalBot struct {
	mu          sync.Mutex
	answers     []any
	submissions []slack.InteractionCallback
	openErrors  []error
}

func (b *modalBot) handle(client *socketmode.Client, evt socketmode.Event) {
	switch evt.Type {
	case socketmode.EventTypeSlashCommand:
		cmd := evt.Data.(slack.SlashCommand)
		_ = client.Ack(*evt.Request)
		_, err := client.OpenView(cmd.TriggerID, createModal())
		b.mu.Lock()
		b.openErrors = append(b.openErrors, err)
		b.mu.Unlock()
	case socketmode.EventTypeInteractive:
		cb := evt.Data.(slack.InteractionCallback)
		b.mu.Lock()
		b.submissions = append(b.submissions, cb)
		var answer any
		if len(b.answers) > 0 {
			answer, b.answers = b.answers[0], b.answers[1:]
		}
		b.mu.Unlock()
		if answer == nil {
			_ = client.Ack(*evt.Request)
			return
		}
		_ = client.Ack(*evt.Request, answer)
	}
}

func (b *modalBot) lastSubmission(t *testing.T) slack.InteractionCallback {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.submissions) == 0 {
		t.Fatal("no submission reached the bot")
	}
	return b.submissions[len(b.submissions)-1]
}

func openModal(t *testing.T, s *Server, user string) View {
	t.Helper()
	ctx := testCtx(t, 5*time.Second)
	_, err := s.SlashCommand(ctx, user, gpuChannel, "/gpu", "create")
	mustNoError(t, err, "slash command")
	var open View
	err = s.WaitUntil(ctx, func() bool {
		var ok bool
		open, ok = s.OpenView(user)
		return ok
	})
	mustNoError(t, err, "wait for the modal")
	return open
}

func TestModalSubmissionDecodesAndErrorsThenClear(t *testing.T) {
	s := newSim(t, Options{})
	bot := &modalBot{answers: []any{
		slack.NewErrorsViewSubmissionResponse(map[string]string{"reason_block": "Say why you need it"}),
		slack.NewClearViewSubmissionResponse(),
	}}
	startBot(t, s, bot.handle)

	open := openModal(t, s, alice)
	if open.CallbackID != "create_instance" || open.Title != "Create a GPU" || open.PrivateMetadata != `{"channel":"CGPU"}` || open.User != alice || !strings.HasPrefix(open.ID, "V") {
		t.Errorf("open view = %+v", open)
	}

	ctx := testCtx(t, 5*time.Second)
	_, err := s.SubmitView(ctx, alice, map[string]string{"type_block": "gpu_8x_h100_sxm5", "reason_block": " "})
	mustNoError(t, err, "first submit")
	cb := bot.lastSubmission(t)
	if cb.Type != slack.InteractionTypeViewSubmission || cb.User.ID != alice || cb.View.ID != open.ID || cb.View.CallbackID != "create_instance" ||
		cb.View.PrivateMetadata != `{"channel":"CGPU"}` || cb.View.Type != slack.VTModal || cb.View.Title == nil || cb.TriggerID == "" {
		t.Errorf("view_submission decoded as %+v", cb)
	}
	values := cb.View.State.Values
	if got := values["type_block"]["type"].SelectedOption.Value; got != "gpu_8x_h100_sxm5" {
		t.Errorf("selected type = %q", got)
	}
	if got := values["type_block"]["type"].SelectedOption.Text; got == nil || got.Text != "8x H100" {
		t.Errorf("selected option text = %+v", got)
	}
	if got := values["reason_block"]["reason"].Value; got != " " {
		t.Errorf("reason = %q", got)
	}
	if got := values["lifetime_block"]["lifetime"].Value; got != "8h" {
		t.Errorf("lifetime kept its initial value? got %q", got)
	}
	if errs := s.ViewErrors(alice); errs["reason_block"] != "Say why you need it" {
		t.Errorf("view errors = %v", errs)
	}

	_, err = s.SubmitView(ctx, alice, map[string]string{"type_block": "gpu_1x_h100_sxm5", "reason_block": "training"})
	mustNoError(t, err, "second submit")
	if _, ok := s.OpenView(alice); ok {
		t.Error("the modal is still open after response_action clear")
	}
	if problems := s.ProtocolErrors(); len(problems) != 0 {
		t.Errorf("protocol errors = %v", problems)
	}
}

func TestModalUpdatePushAndPlainAck(t *testing.T) {
	s := newSim(t, Options{})
	confirm := slack.ModalViewRequest{
		Type:   slack.VTModal,
		Title:  slack.NewTextBlockObject("plain_text", "Confirm", false, false),
		Blocks: slack.Blocks{BlockSet: []slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", "Sure?", false, false), nil, nil)}},
	}
	bot := &modalBot{answers: []any{slack.NewUpdateViewSubmissionResponse(func() *slack.ModalViewRequest { m := createModal(); m.CallbackID = "create_again"; return &m }()), slack.NewPushViewSubmissionResponse(&confirm)}}
	startBot(t, s, bot.handle)
	open := openModal(t, s, bob)
	ctx := testCtx(t, 5*time.Second)

	_, err := s.SubmitView(ctx, bob, map[string]string{"type_block": "gpu_1x_h100_sxm5", "reason_block": "r"})
	mustNoError(t, err, "submit → update")
	updated, ok := s.OpenView(bob)
	if !ok || updated.ID != open.ID || updated.CallbackID != "create_again" {
		t.Errorf("after update: %+v (open %v)", updated, ok)
	}
	_, err = s.SubmitView(ctx, bob, map[string]string{"type_block": "gpu_1x_h100_sxm5", "reason_block": "r"})
	mustNoError(t, err, "submit → push")
	pushed, _ := s.OpenView(bob)
	if pushed.Title != "Confirm" || pushed.ID == open.ID {
		t.Errorf("after push: %+v", pushed)
	}
	_, err = s.SubmitView(ctx, bob, nil)
	mustNoError(t, err, "submit the pushed view with a plain ack")
	back, ok := s.OpenView(bob)
	if !ok || back.ID != open.ID {
		t.Errorf("a plain ack closes only the top view; now open: %+v (%v)", back, ok)
	}
}

func TestSubmitViewChecksValuesLikeSlacksClient(t *testing.T) {
	s := newSim(t, Options{})
	startBot(t, s, (&modalBot{}).handle)
	openModal(t, s, alice)
	ctx := testCtx(t, 5*time.Second)
	for name, values := range map[string]map[string]string{
		"missing required":  {"type_block": "gpu_1x_h100_sxm5"},
		"unknown option":    {"type_block": "gpu_2x", "reason_block": "r"},
		"unknown block id":  {"type_block": "gpu_1x_h100_sxm5", "reason_block": "r", "nope": "x"},
		"required is empty": {"type_block": "gpu_1x_h100_sxm5", "reason_block": ""},
		"over max_length":   {"type_block": "gpu_1x_h100_sxm5", "reason_block": strings.Repeat("é", 41)},
	} {
		if _, err := s.SubmitView(ctx, alice, values); err == nil {
			t.Errorf("%s: submit accepted", name)
		}
	}
	if _, err := s.SubmitView(ctx, alice, map[string]string{"type_block": "gpu_1x_h100_sxm5", "reason_block": strings.Repeat("é", 40)}); err != nil {
		t.Errorf("a reason of exactly max_length: %v", err)
	}
}

func TestViewsOpenTriggerRules(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, Options{Now: clock.Now})
	api := apiClient(s)
	triggers := make(chan string, 3)
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			triggers <- evt.Data.(slack.SlashCommand).TriggerID
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	nextTrigger := func() string {
		_, err := s.SlashCommand(ctx, alice, gpuChannel, "/gpu", "create")
		mustNoError(t, err, "slash command")
		return <-triggers
	}

	trigger := nextTrigger()
	resp, err := api.OpenViewContext(ctx, trigger, createModal())
	mustNoError(t, err, "views.open")
	if !strings.HasPrefix(resp.ID, "V") || resp.Hash == "" || resp.CallbackID != "create_instance" || len(resp.Blocks.BlockSet) != 3 {
		t.Errorf("views.open answered %+v", resp.View)
	}
	_, err = api.OpenViewContext(ctx, trigger, createModal())
	wantSlackError(t, err, "exchanged_trigger_id")

	expired := nextTrigger()
	clock.Advance(triggerLifetime + time.Millisecond)
	_, err = api.OpenViewContext(ctx, expired, createModal())
	wantSlackError(t, err, "expired_trigger_id")
	_, err = api.OpenViewContext(ctx, "123.456.nope", createModal())
	wantSlackError(t, err, "invalid_trigger_id")

	updated, err := api.UpdateViewContext(ctx, createModal(), "", resp.Hash, resp.ID)
	mustNoError(t, err, "views.update with the current hash")
	_, err = api.UpdateViewContext(ctx, createModal(), "", resp.Hash, resp.ID)
	wantSlackError(t, err, "hash_conflict")
	if updated.Hash == resp.Hash {
		t.Error("views.update kept the hash")
	}
}

func TestViewLimits(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	triggers := make(chan string, 4)
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			triggers <- evt.Data.(slack.SlashCommand).TriggerID
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	open := func(modal slack.ModalViewRequest) error {
		_, err := s.SlashCommand(ctx, alice, gpuChannel, "/gpu", "create")
		mustNoError(t, err, "slash command")
		_, err = api.OpenViewContext(ctx, <-triggers, modal)
		return err
	}

	tooMany := createModal()
	for len(tooMany.Blocks.BlockSet) <= maxModalBlocks {
		tooMany.Blocks.BlockSet = append(tooMany.Blocks.BlockSet, slack.NewDividerBlock())
	}
	wantSlackError(t, open(tooMany), "invalid_arguments")

	longTitle := createModal()
	longTitle.Title = slack.NewTextBlockObject("plain_text", strings.Repeat("t", maxModalTitleChars+1), false, false)
	wantSlackError(t, open(longTitle), "invalid_arguments")

	noSubmit := createModal()
	noSubmit.Submit = nil
	wantSlackError(t, open(noSubmit), "invalid_arguments")

	for _, maxLength := range []int{-1, maxInputChars + 1} {
		badMax := createModal()
		badMax.Blocks.BlockSet[1].(*slack.InputBlock).Element.(*slack.PlainTextInputBlockElement).MaxLength = maxLength
		wantSlackError(t, open(badMax), "invalid_arguments")
	}

	mustNoError(t, open(createModal()), "a valid modal")
}

func TestViewsPublishHomeTab(t *testing.T) {
	s := newSim(t, Options{})
	api := apiClient(s)
	ctx := testCtx(t, 5*time.Second)
	home := slack.HomeTabViewRequest{Type: slack.VTHomeTab, Blocks: slack.Blocks{BlockSet: []slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject("mrkdwn", "Your machines", false, false), nil, nil)}}}
	resp, err := api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: alice, View: home})
	mustNoError(t, err, "views.publish")
	got, ok := s.HomeView(alice)
	if !ok || got.ID != resp.ID || got.Type != "home" || len(got.Blocks.BlockSet) != 1 {
		t.Errorf("home view = %+v (%v)", got, ok)
	}
	_, err = api.PublishViewContext(ctx, slack.PublishViewContextRequest{UserID: "UNOBODY", View: home})
	wantSlackError(t, err, "user_not_found")
}

func TestViewSubmissionPayloadMatchesSlackGoTypes(t *testing.T) {
	s := newSim(t, Options{})
	var raw capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			_ = client.Ack(*evt.Request)
			_, _ = client.OpenView(evt.Data.(slack.SlashCommand).TriggerID, createModal())
		}
		if evt.Type == socketmode.EventTypeInteractive {
			raw.add(evt)
			_ = client.Ack(*evt.Request)
		}
	})
	openModal(t, s, alice)
	_, err := s.SubmitView(testCtx(t, 5*time.Second), alice, map[string]string{"type_block": "gpu_1x_h100_sxm5", "reason_block": "r"})
	mustNoError(t, err, "submit")
	var payload map[string]json.RawMessage
	mustNoError(t, json.Unmarshal(raw.last(t).Request.Payload, &payload), "decode payload")
	for _, field := range []string{"type", "team", "user", "api_app_id", "trigger_id", "view"} {
		if _, ok := payload[field]; !ok {
			t.Errorf("view_submission payload lacks %q", field)
		}
	}
}

func TestCloseViewNotifiesWhenAsked(t *testing.T) {
	s := newSim(t, Options{})
	var closed capture
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		switch evt.Type {
		case socketmode.EventTypeSlashCommand:
			_ = client.Ack(*evt.Request)
			modal := createModal()
			modal.NotifyOnClose = evt.Data.(slack.SlashCommand).Text == "notify"
			_, _ = client.OpenView(evt.Data.(slack.SlashCommand).TriggerID, modal)
		case socketmode.EventTypeInteractive:
			closed.add(evt)
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	for _, text := range []string{"quiet", "notify"} {
		_, err := s.SlashCommand(ctx, alice, gpuChannel, "/gpu", text)
		mustNoError(t, err, "slash command")
		mustNoError(t, s.WaitUntil(ctx, func() bool { _, ok := s.OpenView(alice); return ok }), "wait for the modal")
		mustNoError(t, s.CloseView(ctx, alice), "close the modal")
		if _, ok := s.OpenView(alice); ok {
			t.Errorf("%s: modal still open", text)
		}
	}
	events := closed.all()
	if len(events) != 1 || events[0].Data.(slack.InteractionCallback).Type != slack.InteractionTypeViewClosed {
		t.Errorf("view_closed events = %d, want one for the notify_on_close modal", len(events))
	}
}

func TestViewsOpenAcceptsAFormEncodedView(t *testing.T) {
	s := newSim(t, Options{})
	triggers := make(chan string, 1)
	startBot(t, s, func(client *socketmode.Client, evt socketmode.Event) {
		if evt.Type == socketmode.EventTypeSlashCommand {
			triggers <- evt.Data.(slack.SlashCommand).TriggerID
			_ = client.Ack(*evt.Request)
		}
	})
	ctx := testCtx(t, 5*time.Second)
	_, err := s.SlashCommand(ctx, alice, gpuChannel, "/gpu", "create")
	mustNoError(t, err, "slash command")
	modal, err := json.Marshal(createModal())
	mustNoError(t, err, "encode modal")
	form := url.Values{"token": {testBotToken}, "trigger_id": {<-triggers}, "view": {string(modal)}}
	resp, err := http.PostForm(s.APIURL()+"views.open", form)
	mustNoError(t, err, "post form")
	defer resp.Body.Close()
	var answer slack.ViewResponse
	mustNoError(t, json.NewDecoder(resp.Body).Decode(&answer), "decode answer")
	if !answer.Ok || answer.CallbackID != "create_instance" {
		t.Errorf("views.open by form = %+v", answer)
	}
}
