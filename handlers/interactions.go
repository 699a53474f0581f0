package handlers

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
)

// Interaction answers a click or a modal submission within the ack, with the ack
// payload as JSON: for a modal the view response (errors to show, or close); for a
// click nil, and the work runs in the background. A payload that is not one of
// gpubot's does nothing. The effect is committed with envelopeID and the answer, so a
// redelivered envelope gets the first answer and does nothing else.
func (h *Handlers) Interaction(ctx context.Context, envelopeID string, cb slack.InteractionCallback) json.RawMessage {
	answer, done, err := h.answeredBefore(ctx, envelopeID)
	if err != nil {
		return h.unreachable(cb)
	}
	if done {
		return answer
	}
	switch cb.Type {
	case slack.InteractionTypeBlockActions:
		h.click(ctx, envelopeID, cb)
		return nil
	case slack.InteractionTypeViewSubmission:
		return h.submitView(ctx, envelopeID, cb)
	case slack.InteractionTypeShortcut:
		h.shortcut(cb)
	}
	return nil
}

// viewJSON is a view submission's ack payload, recorded with the submission's effect.
// A response that cannot be encoded cannot be acked either.
func viewJSON(resp *slack.ViewSubmissionResponse) json.RawMessage {
	data, err := json.Marshal(resp)
	if err != nil {
		return nil
	}
	return data
}

// click handles a button. What must not be lost (a decision, a delete, an extension)
// is committed before the ack, as the one effect of the envelope (a click is acked
// empty); the rest follows in the background.
func (h *Handlers) click(ctx context.Context, envelopeID string, cb slack.InteractionCallback) {
	if len(cb.ActionCallback.BlockActions) != 1 || cb.User.ID == "" {
		return
	}
	action := cb.ActionCallback.BlockActions[0]
	user := domain.UserRef{TeamID: cmp.Or(cb.User.TeamID, cb.Team.ID), UserID: cb.User.ID}
	channel := cmp.Or(cb.Channel.ID, cb.Container.ChannelID)
	id := action.Value
	if id == "" {
		return
	}
	once := domain.ForEnvelope(envelopeID, nil)
	switch action.ActionID {
	case ActionApprove:
		r, err := h.recordDecision(ctx, user.UserID, id, true, "", once)
		if _, again := redelivered(err); again {
			return
		}
		h.spawn("approve", func(ctx context.Context) { h.announceDecision(ctx, r, err, user.UserID, channel) })
	case ActionDeny:
		trigger := cb.TriggerID
		h.spawnNow("ask deny reason", func(ctx context.Context) { h.askDenyReason(ctx, user.UserID, id, channel, trigger) })
	case ActionDeleteConfirm, ActionDeleteNow:
		responseURL := ""
		if action.ActionID == ActionDeleteConfirm {
			responseURL = cb.ResponseURL
		}
		r, err := h.recordDelete(ctx, user.UserID, id, once)
		if _, again := redelivered(err); again {
			return
		}
		h.spawn("delete", func(ctx context.Context) { h.announceDelete(ctx, r, err, user.UserID, channel, responseURL) })
	case ActionWithdraw:
		r, err := h.load(ctx, user.UserID, id, h.cfg.Policy.MayWithdraw)
		if err == nil {
			r, err = h.recordCancel(ctx, user.UserID, r, once)
		}
		if _, again := redelivered(err); again {
			return
		}
		h.spawn("withdraw", func(ctx context.Context) {
			if err != nil {
				h.tell(ctx, channel, user.UserID, textMessage(userMessage(err)))
				return
			}
			h.tell(ctx, channel, user.UserID, textMessage(fmt.Sprintf("Withdrew request `%s`.", shortID(r.ID))))
			h.announceCancel(ctx, r)
		})
	case ActionHomeCreate, ActionHomeKey:
		h.homeClick(action.ActionID, cb.TriggerID, user.UserID)
	case ActionDeleteCancel:
		responseURL := cb.ResponseURL
		h.spawn("keep", func(ctx context.Context) {
			h.respond(ctx, responseURL, channel, user.UserID, textMessage("OK, keeping it."))
		})
	case ActionExtendApprove, ActionExtendDeny:
		approve := action.ActionID == ActionExtendApprove
		r, err := h.decideExtension(ctx, user.UserID, id, approve, once)
		if _, again := redelivered(err); again {
			return
		}
		h.spawn("decide extension", func(ctx context.Context) { h.announceExtensionDecision(ctx, r, approve, err, user.UserID, channel) })
	case ActionExtend:
		err := h.extendByButton(ctx, user, id, once)
		if _, again := redelivered(err); again || err == nil {
			return
		}
		h.spawn("extend refused", func(ctx context.Context) { h.tell(ctx, channel, user.UserID, textMessage(userMessage(err))) })
	}
}

func (h *Handlers) askDenyReason(ctx context.Context, approver, id, channel, trigger string) {
	r, err := h.load(ctx, approver, id, h.cfg.Policy.MayDecide)
	if err != nil {
		h.tell(ctx, channel, approver, textMessage(userMessage(err)))
		return
	}
	if r.State != domain.StateAwaitingApproval {
		h.tell(ctx, channel, approver, textMessage("Too late: "+decisionLine(r)+"."))
		h.showDecision(ctx, r)
		return
	}
	if err := h.slack.OpenView(ctx, trigger, denyModal(r)); err != nil {
		h.reqLog(r).Error("open deny modal", "err", err)
		h.tell(ctx, channel, approver, textMessage("I couldn't open the form for a reason; please click Deny again."))
	}
}

// extendByButton extends from a reminder: by the default lifetime, or as much as the
// maximum allows. It commits before the click is acked; the announcement follows.
func (h *Handlers) extendByButton(ctx context.Context, user domain.UserRef, id string, once domain.WriteOption) error {
	r, err := h.load(ctx, user.UserID, id, h.cfg.Policy.MayManage)
	if err != nil {
		return err
	}
	return h.extend(ctx, user, r, h.extendStep(r), once)
}

// extendStep is what one click on Extend adds: the default lifetime, within the maximum.
func (h *Handlers) extendStep(r domain.Request) time.Duration {
	step := h.cfg.Policy.DefaultLifetime
	// As extend counts it: a machine not ready yet has a lifetime and no expiry.
	room := h.cfg.Policy.MaxLifetime - r.Lifetime
	if r.State == domain.StateReady {
		room = h.cfg.Policy.MaxLifetime - r.ExpiresAt.Sub(h.now())
	}
	if room < step {
		step = room.Truncate(time.Minute)
	}
	return step
}

func (h *Handlers) submitView(ctx context.Context, envelopeID string, cb slack.InteractionCallback) json.RawMessage {
	user := domain.UserRef{TeamID: cmp.Or(cb.User.TeamID, cb.Team.ID), UserID: cb.User.ID}
	if user.UserID == "" {
		return nil
	}
	values := viewValues(cb.View.State)
	switch cb.View.CallbackID {
	case ViewKey:
		return h.submitKey(ctx, envelopeID, user, values[BlockKey])
	case ViewCreate:
		return h.submitCreate(ctx, envelopeID, user, cb.View.PrivateMetadata, values)
	case ViewDeny:
		return h.submitDeny(ctx, envelopeID, user, cb.View.PrivateMetadata, values[BlockReason])
	}
	return nil
}

func (h *Handlers) submitDeny(ctx context.Context, envelopeID string, user domain.UserRef, id, reason string) json.RawMessage {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockReason: "Say why, so the requester knows what to do instead."}))
	}
	if n := utf8.RuneCountInString(reason); n > maxDenyReason {
		return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockReason: fmt.Sprintf("Keep it under %d characters (it has %d).", maxDenyReason, n)}))
	}
	closed := viewJSON(slack.NewClearViewSubmissionResponse())
	r, err := h.recordDecision(ctx, user.UserID, id, false, reason, domain.ForEnvelope(envelopeID, closed))
	if answer, again := redelivered(err); again {
		return answer
	}
	h.spawn("deny", func(ctx context.Context) { h.announceDecision(ctx, r, err, user.UserID, "") })
	return closed
}

// viewValues flattens a submitted modal's state to block id -> value (text, or the chosen option).
func viewValues(state *slack.ViewState) map[string]string {
	values := map[string]string{}
	if state == nil {
		return values
	}
	for blockID, actions := range state.Values {
		for _, a := range actions {
			switch {
			case a.SelectedOption.Value != "":
				values[blockID] = a.SelectedOption.Value
			default:
				values[blockID] = a.Value
			}
		}
	}
	return values
}

func (h *Handlers) submitKey(ctx context.Context, envelopeID string, user domain.UserRef, text string) json.RawMessage {
	pk, err := domain.ParsePublicKey(text)
	if err != nil {
		return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockKey: clip(strings.TrimPrefix(keyErrorText(err), ":no_entry: "), 1900)}))
	}
	done := slack.ModalViewRequest{
		Type:   slack.VTModal,
		Title:  plain("Your SSH key"),
		Close:  plain("Done"),
		Blocks: slack.Blocks{BlockSet: keySavedMessage(pk).Blocks},
	}
	saved := viewJSON(slack.NewUpdateViewSubmissionResponse(&done))
	err = h.store.SetKey(ctx, user, pk, domain.ForEnvelope(envelopeID, saved))
	if answer, again := redelivered(err); again {
		return answer
	}
	if err != nil {
		h.log.Error("store key", "user", user.UserID, "err", err)
		return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockKey: keyNotSaved(err)}))
	}
	h.refreshHome(ctx, user)
	return saved
}

func (h *Handlers) submitCreate(ctx context.Context, envelopeID string, user domain.UserRef, channel string, values map[string]string) json.RawMessage {
	cmd := Command{Verb: VerbCreate, Reason: strings.TrimSpace(values[BlockReason])}
	if err := checkReason(cmd.Reason); err != nil {
		return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockReason: userMessage(err)}))
	}
	typ, ok := InstanceTypeFromName(values[BlockType])
	if !ok {
		return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockType: "Choose 1x or 8x."}))
	}
	cmd.InstanceType = typ
	if sector := values[BlockSector]; sector != "" {
		if typ != fal.Type8xH100 {
			return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockSector: "Sectors only apply to 8x machines: clear it, or choose 8x."}))
		}
		if _, err := parseSector(strings.TrimPrefix(sector, "sector_")); err != nil {
			return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockSector: userMessage(err)}))
		}
		cmd.Sector = sector
	}
	if text := strings.TrimSpace(values[BlockLifetime]); text != "" {
		d, err := ParseLifetime(text)
		if err != nil {
			return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockLifetime: userMessage(err)}))
		}
		cmd.Lifetime = d
	}
	if _, err := h.cfg.Policy.Lifetime(cmd.Lifetime); err != nil {
		return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockLifetime: clip(userMessage(err), 1900)}))
	}
	closed := viewJSON(slack.NewClearViewSubmissionResponse())
	r, err := h.newRequest(ctx, user, channel, cmd)
	if err == nil {
		err = h.store.CreateRequest(ctx, &r, domain.ForEnvelope(envelopeID, closed))
	}
	if answer, again := redelivered(err); again {
		return answer
	}
	if err != nil {
		return viewJSON(slack.NewErrorsViewSubmissionResponse(map[string]string{BlockType: clip(userMessage(err), 1900)}))
	}
	h.kick(ctx, r.ID)
	return closed
}

// keyNotSaved is the key form's answer when the store refused the key.
func keyNotSaved(err error) string {
	if errors.Is(err, domain.ErrOutcomeUnknown) {
		return "I lost touch with gpubot's storage while saving your key, so it may or may not be saved: `/gpu key` shows which."
	}
	if errors.Is(err, domain.ErrUnavailable) {
		return "I can't reach gpubot's storage right now, so your key was not saved; please try again in a minute."
	}
	return "I couldn't save it; please try again in a minute."
}

// unreachable answers a click or a form that found the store out of reach: the form
// says so in place of its fields, a click by a message only the clicker sees.
func (h *Handlers) unreachable(cb slack.InteractionCallback) json.RawMessage {
	if cb.Type == slack.InteractionTypeViewSubmission {
		notice := slack.ModalViewRequest{
			Type: slack.VTModal, Title: plain("gpubot"), Close: plain("Close"),
			Blocks: slack.Blocks{BlockSet: textMessage(storageUnreachable).Blocks},
		}
		return viewJSON(slack.NewUpdateViewSubmissionResponse(&notice))
	}
	if cb.User.ID != "" {
		channel, user := cmp.Or(cb.Channel.ID, cb.Container.ChannelID), cb.User.ID
		h.spawn("tell store unreachable", func(ctx context.Context) { h.tell(ctx, channel, user, textMessage(storageUnreachable)) })
	}
	return nil
}
