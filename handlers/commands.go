package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/slack-go/slack"
)

// Reply is an ack payload for a slash command: Slack shows it to the caller only.
type Reply struct {
	ResponseType string        `json:"response_type"`
	Text         string        `json:"text"`
	Blocks       []slack.Block `json:"blocks,omitempty"`
	// Outcome is how the command went, for metrics: ok, refused (bad input or not
	// allowed), error (gpubot's fault) or redelivered. Slack never sees it.
	Outcome string `json:"-"`
	// recorded is the ack payload of the first delivery of a redelivered envelope,
	// acked again as it was.
	recorded json.RawMessage
}

// MarshalJSON is the ack payload: the recorded answer of a redelivered envelope,
// else the reply's fields.
func (r Reply) MarshalJSON() ([]byte, error) {
	if r.recorded != nil {
		return r.recorded, nil
	}
	type fields Reply // without this method
	return json.Marshal(fields(r))
}

// Outcomes of a command.
const (
	OutcomeOK          = "ok"
	OutcomeRefused     = "refused"
	OutcomeError       = "error"
	OutcomeRedelivered = "redelivered"
)

// replyJSON is a reply's ack payload, recorded with the command's effect; nil for
// no reply. A reply that cannot be encoded cannot be acked either.
func replyJSON(r *Reply) []byte {
	if r == nil {
		return nil
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil
	}
	return data
}

// recordedReply acks a redelivered command with its first answer (nil for none).
// Text and blocks are read back too, for when the answer must go by response_url.
func recordedReply(answer []byte) *Reply {
	if len(answer) == 0 {
		return nil
	}
	var fields struct {
		ResponseType string       `json:"response_type"`
		Text         string       `json:"text"`
		Blocks       slack.Blocks `json:"blocks"`
	}
	_ = json.Unmarshal(answer, &fields) // best effort: the ack itself is the recorded bytes
	return &Reply{ResponseType: fields.ResponseType, Text: fields.Text, Blocks: fields.Blocks.BlockSet,
		Outcome: OutcomeRedelivered, recorded: answer}
}

// redelivered reports whether a write was refused because its envelope already took
// effect, and with what that envelope was answered.
func redelivered(err error) (answer []byte, ok bool) {
	var done *domain.AlreadyDoneError
	if errors.As(err, &done) {
		return done.Answer, true
	}
	return nil, false
}

// answeredBefore returns the answer recorded for an envelope that already took
// effect: Slack delivers an envelope again when it missed the ack, also to a gpubot
// that restarted, and the redelivery gets the first answer and does nothing else.
// It only reads; when two deliveries race, the write made ForEnvelope decides. A
// store out of reach is the one error it returns: nothing else can be done then, and
// asking the store again would keep the user waiting past the ack.
func (h *Handlers) answeredBefore(ctx context.Context, envelopeID string) ([]byte, bool, error) {
	answer, done, err := h.store.EnvelopeAnswer(ctx, envelopeID)
	if err != nil {
		h.log.Error("read what an envelope did", "envelope", envelopeID, "err", err)
		if errors.Is(err, domain.ErrUnavailable) {
			return nil, false, err
		}
	}
	return answer, done, nil
}

func reply(m Message) *Reply {
	return &Reply{ResponseType: slack.ResponseTypeEphemeral, Text: m.Text, Blocks: m.Blocks, Outcome: OutcomeOK}
}

// textReply is a reply of plain mrkdwn text: Slack shows it as it would one section,
// and an ack without blocks is the cheapest to build and send on the busiest path.
func textReply(text string) *Reply {
	return &Reply{ResponseType: slack.ResponseTypeEphemeral, Text: text, Outcome: OutcomeOK}
}

// Command answers a `/gpu` command within the ack: it reads and checks what it can at
// once and leaves the slow work (fal, posting) to the background. A command's effect
// is committed with its envelopeID and answer, so a redelivered command, even to a
// gpubot that restarted since, is answered as the first time and does nothing else.
func (h *Handlers) Command(ctx context.Context, envelopeID string, c slack.SlashCommand) *Reply {
	answer, done, err := h.answeredBefore(ctx, envelopeID)
	if err != nil {
		return refusal(err)
	}
	if done {
		return recordedReply(answer)
	}
	cmd, err := ParseCommand(c.Text)
	if err != nil {
		return refusal(err)
	}
	user := domain.UserRef{TeamID: c.TeamID, UserID: c.UserID}
	switch cmd.Verb {
	case VerbHelp:
		return reply(helpMessage())
	case VerbKeyModal:
		h.openView(c.TriggerID, c.ChannelID, c.UserID, keyModal())
		return nil
	case VerbKeySet:
		return h.setKey(ctx, envelopeID, user, cmd.Key)
	case VerbKeyShow:
		return h.showKey(ctx, user)
	case VerbKeyRemove:
		return h.removeKey(ctx, envelopeID, user)
	case VerbCreateModal:
		view := createModal(h.cfg.Policy)
		view.PrivateMetadata = c.ChannelID
		h.openView(c.TriggerID, c.ChannelID, c.UserID, view)
		return nil
	case VerbCreate:
		return h.requestMachine(ctx, envelopeID, user, c.ChannelID, cmd)
	case VerbList, VerbListAll:
		return h.list(ctx, user, cmd.Verb == VerbListAll)
	case VerbStatus:
		return h.status(ctx, user, cmd.ID)
	case VerbDelete:
		return h.askDelete(ctx, user, cmd.ID)
	case VerbCancel:
		return h.withdraw(ctx, envelopeID, user, cmd.ID)
	case VerbBudget:
		return h.budget(ctx, user)
	case VerbReport, VerbReportCSV:
		return h.report(ctx, user, c.ChannelID, cmd)
	case VerbExtend:
		r, err := h.resolve(ctx, user, cmd.ID)
		if err != nil {
			return refusal(err)
		}
		err = h.extend(ctx, user, r, cmd.Lifetime, domain.ForEnvelope(envelopeID, nil))
		if answer, again := redelivered(err); again {
			return recordedReply(answer)
		}
		if err != nil {
			return refusal(err)
		}
		return nil
	}
	return reply(helpMessage())
}

// openView opens a modal after the ack; a trigger id is good for 3 seconds, so it goes first.
func (h *Handlers) openView(triggerID, channel, user string, v slack.ModalViewRequest) {
	h.spawnNow("open view", func(ctx context.Context) {
		if err := h.slack.OpenView(ctx, triggerID, v); err != nil {
			h.log.Error("open modal", "view", v.CallbackID, "err", err)
			h.tell(ctx, channel, user, textMessage("I couldn't open the form (Slack said: "+err.Error()+"). Please type the command again."))
		}
	})
}

func (h *Handlers) setKey(ctx context.Context, envelopeID string, user domain.UserRef, text string) *Reply {
	pk, err := domain.ParsePublicKey(text)
	if err != nil {
		return refusal(&UserError{Message: keyErrorText(err)})
	}
	saved := reply(keySavedMessage(pk))
	err = h.store.SetKey(ctx, user, pk, domain.ForEnvelope(envelopeID, replyJSON(saved)))
	if answer, again := redelivered(err); again {
		return recordedReply(answer)
	}
	if err != nil {
		h.log.Error("store key", "user", user.UserID, "err", err)
		return refusal(err)
	}
	h.refreshHome(ctx, user)
	return saved
}

func keyErrorText(err error) string {
	var ke *domain.KeyError
	if errors.As(err, &ke) {
		return ":no_entry: " + ke.Message
	}
	return ":no_entry: That is not an SSH public key I can use. Paste the one line of your .pub file, e.g. `cat ~/.ssh/id_ed25519.pub`."
}

func (h *Handlers) showKey(ctx context.Context, user domain.UserRef) *Reply {
	k, err := h.store.Key(ctx, user)
	if errors.Is(err, domain.ErrNotFound) {
		return reply(textMessage(noKeyText))
	}
	if err != nil {
		return refusal(err)
	}
	return reply(keyShowMessage(k))
}

func (h *Handlers) removeKey(ctx context.Context, envelopeID string, user domain.UserRef) *Reply {
	removed := reply(textMessage(":wastebasket: Forgot your SSH key. Machines you already have keep it; new requests need a key again (`/gpu key set …`)."))
	err := h.store.RemoveKey(ctx, user, domain.ForEnvelope(envelopeID, replyJSON(removed)))
	if answer, again := redelivered(err); again {
		return recordedReply(answer)
	}
	if errors.Is(err, domain.ErrNotFound) {
		return reply(textMessage("You have no key registered, so there was nothing to remove."))
	}
	if err != nil {
		return refusal(err)
	}
	h.refreshHome(ctx, user)
	return removed
}

// requestMachine checks a create request and commits it before answering, so the
// "Got it" a person sees always stands for a stored request; the slow work (posting,
// fal) follows in the background. A redelivered command finds its envelope already
// recorded, creates nothing and gets the first "Got it" again.
func (h *Handlers) requestMachine(ctx context.Context, envelopeID string, user domain.UserRef, channel string, cmd Command) *Reply {
	release, err := h.admit(ctx, user)
	if err != nil {
		return refusal(err)
	}
	defer release()
	r, err := h.newRequest(ctx, user, channel, cmd)
	if err != nil {
		return refusal(err)
	}
	gotIt := textReply(gotItText(r))
	err = h.store.CreateRequest(ctx, &r, domain.ForEnvelope(envelopeID, replyJSON(gotIt)))
	if answer, again := redelivered(err); again {
		return recordedReply(answer)
	}
	if err != nil {
		h.log.Error("store new request", "user", user.UserID, "err", err)
		return refusal(err)
	}
	h.reqLog(r).Info("request stored", "user", r.UserID, "type", r.InstanceType, "state", r.State)
	h.kick(ctx, r.ID)
	return gotIt
}

func gotItText(r domain.Request) string {
	if r.OverBudget != "" {
		return fmt.Sprintf("Got it: request `%s` for %s goes to the approvers, because it would go over budget (%s). Follow it in the thread I'm starting here (or in a DM, if I may not post in this channel).", shortID(r.ID), describeMachine(r), r.OverBudget)
	}
	if r.State == domain.StateAwaitingApproval {
		return fmt.Sprintf("Got it: request `%s` for %s goes to the approvers. Follow it in the thread I'm starting here (or in a DM, if I may not post in this channel).", shortID(r.ID), describeMachine(r))
	}
	return fmt.Sprintf("Got it: request `%s` for %s. Follow it in the thread I'm starting here (or in a DM, if I may not post in this channel).", shortID(r.ID), describeMachine(r))
}

// newRequest builds a request from a parsed create command, refusing what cannot succeed.
func (h *Handlers) newRequest(ctx context.Context, user domain.UserRef, channel string, cmd Command) (domain.Request, error) {
	lifetime, err := h.cfg.Policy.Lifetime(cmd.Lifetime)
	if err != nil {
		return domain.Request{}, err
	}
	key, err := h.store.Key(ctx, user)
	if errors.Is(err, domain.ErrNotFound) {
		return domain.Request{}, refusef(noKeyText)
	}
	if err != nil {
		return domain.Request{}, fmt.Errorf("read key: %w", err)
	}
	if err := h.checkCap(ctx, user); err != nil {
		return domain.Request{}, err
	}
	over, err := h.overBudget(ctx, user, cmd.InstanceType, lifetime)
	if err != nil {
		return domain.Request{}, err
	}
	if len(over) > 0 && h.cfg.Enforcement == EnforceRefuse {
		return domain.Request{}, overBudgetRefusal(user.UserID, "request", over)
	}
	state, needed, overNote := domain.StateApproved, 0, ""
	if h.cfg.Policy.NeedsApproval(cmd.InstanceType) || len(over) > 0 {
		state, needed = domain.StateAwaitingApproval, h.cfg.Policy.ApprovalsNeeded(cmd.InstanceType)
	}
	if len(over) > 0 {
		overNote = overBudgetText(user.UserID, over)
	}
	return domain.Request{
		ID:             uuid.NewString(),
		IdempotencyKey: uuid.NewString(),
		TeamID:         user.TeamID,
		UserID:         user.UserID,
		CommandChannel: channel,
		ChannelID:      channel,
		InstanceType:   cmd.InstanceType,
		Sector:         cmd.Sector,
		Reason:         strings.TrimSpace(cmd.Reason),
		SSHKey:         key.AuthorizedKey,
		Lifetime:       lifetime,
		State:          state,
		// The count is fixed now: the approvers decide on what the card asks.
		ApprovalsNeeded: needed,
		OverBudget:      overNote,
	}, nil
}

func (h *Handlers) list(ctx context.Context, user domain.UserRef, everyone bool) *Reply {
	// The live requests, not the caller's history: what is listed costs the same
	// however many requests someone made before.
	var reqs []domain.Request
	var err error
	if everyone {
		if err := h.cfg.Policy.MaySeeAll(user.UserID); err != nil {
			return refusal(err)
		}
		reqs, err = h.store.Unfinished(ctx)
	} else {
		reqs, err = h.store.UnfinishedOf(ctx, user)
	}
	if err != nil {
		return refusal(err)
	}
	return reply(listMessage(reqs, h.now(), h.cfg.Prices, everyone))
}

func (h *Handlers) status(ctx context.Context, user domain.UserRef, id string) *Reply {
	r, err := h.resolve(ctx, user, id)
	if err != nil {
		return refusal(err)
	}
	if err := h.cfg.Policy.MaySee(user.UserID, r.UserID); err != nil {
		return refusal(err)
	}
	history, err := h.store.AuditFor(ctx, r.ID)
	if err != nil {
		return refusal(err)
	}
	return reply(statusMessage(r, history, h.now(), h.cfg.Prices, h.cfg.ApprovalChannel))
}

// withdraw is `/gpu cancel <id>`: the requester withdraws a request still waiting for
// approval. The withdrawal is committed with the envelope before the ack; the card, the
// root and the thread are told after it.
func (h *Handlers) withdraw(ctx context.Context, envelopeID string, user domain.UserRef, id string) *Reply {
	r, err := h.resolve(ctx, user, id)
	if err != nil {
		return refusal(err)
	}
	done := textReply(fmt.Sprintf("Withdrew request `%s`; the approvers' card and your thread now say so.", shortID(r.ID)))
	r, err = h.recordCancel(ctx, user.UserID, r, domain.ForEnvelope(envelopeID, replyJSON(done)))
	if answer, again := redelivered(err); again {
		return recordedReply(answer)
	}
	if err != nil {
		return refusal(err)
	}
	h.spawn("announce withdrawal", func(ctx context.Context) { h.announceCancel(ctx, r) })
	return done
}

func (h *Handlers) askDelete(ctx context.Context, user domain.UserRef, id string) *Reply {
	r, err := h.resolve(ctx, user, id)
	if err != nil {
		return refusal(err)
	}
	if err := h.cfg.Policy.MayManage(user.UserID, r.UserID); err != nil {
		return refusal(err)
	}
	if r.State.Terminal() {
		return reply(textMessage(fmt.Sprintf("Request `%s` is already over (%s); there is nothing to delete.", shortID(r.ID), stateName(r))))
	}
	return reply(deleteConfirmMessage(r))
}

// resolve finds the request a person means by an id: a request id or its first 8
// characters (at least 6), or a fal instance id. Short ids name the caller's own
// requests or, for admins and approvers, anything still running; one that names
// several is refused rather than guessed.
func (h *Handlers) resolve(ctx context.Context, user domain.UserRef, id string) (domain.Request, error) {
	id = strings.Trim(strings.TrimSpace(id), "`")
	notFound := refusef("I can't find a machine `%s`. `/gpu list` shows the ids of yours.", echo(id))
	if id == "" {
		return domain.Request{}, notFound
	}
	if r, err := h.store.Request(ctx, id); err == nil {
		return r, nil
	}
	if r, err := h.store.RequestByInstance(ctx, id); err == nil {
		return r, nil
	}
	if len(id) < 6 {
		return domain.Request{}, notFound
	}
	matches, err := h.store.RequestsWithIDPrefix(ctx, id, maxShortIDMatches)
	if err != nil {
		return domain.Request{}, fmt.Errorf("resolve %q: %w", id, err)
	}
	var visible []domain.Request
	for _, r := range matches {
		if r.Owner() == user || (!r.State.Terminal() && h.cfg.Policy.MaySeeAll(user.UserID) == nil) {
			visible = append(visible, r)
		}
	}
	switch len(visible) {
	case 0:
		return domain.Request{}, notFound
	case 1:
		return visible[0], nil
	}
	return domain.Request{}, refusef("`%s` is the start of more than one request id; type more of it.", clip(id, 40))
}

// maxShortIDMatches bounds what one short id reads: ids are random, so more than a
// couple of matches only come from a very short prefix.
const maxShortIDMatches = 20
