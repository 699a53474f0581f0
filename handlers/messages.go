package handlers

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/domain"
	"github.com/gpubot/gpubot/internal/spend"
)

// Action and view ids: the contract between the messages gpubot posts and the clicks it handles.
const (
	ActionApprove       = "gpubot_approve"
	ActionDeny          = "gpubot_deny"
	ActionDeleteConfirm = "gpubot_delete_confirm"
	ActionDeleteCancel  = "gpubot_delete_cancel"
	ActionExtend        = "gpubot_extend"
	ActionDeleteNow     = "gpubot_delete_now"
	ActionWithdraw      = "gpubot_withdraw"

	ViewKey    = "gpubot_key"
	ViewCreate = "gpubot_create"
	ViewDeny   = "gpubot_deny"

	// Block ids of the modals' inputs; a submission is read by them.
	BlockKey      = "key"
	BlockType     = "type"
	BlockSector   = "sector"
	BlockLifetime = "lifetime"
	BlockReason   = "reason"
)

// SSHUser is the account fal's compute images let the instance's key log in as.
const SSHUser = "ubuntu"

// Message is what gpubot posts: the text is the notification and fallback, the blocks what people see.
type Message struct {
	Text   string
	Blocks []slack.Block
}

func mrkdwn(text string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, text, false, false)
}

func plain(text string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, text, false, false)
}

func section(text string) *slack.SectionBlock { return slack.NewSectionBlock(mrkdwn(text), nil, nil) }

func contextLine(text string) *slack.ContextBlock {
	return slack.NewContextBlock("", mrkdwn(text))
}

func button(actionID, value, label string, style slack.Style) *slack.ButtonBlockElement {
	return slack.NewButtonBlockElement(actionID, value, plain(label)).WithStyle(style)
}

// textMessage is a message of one section; most replies are.
func textMessage(text string) Message {
	return Message{Text: text, Blocks: []slack.Block{section(text)}}
}

// escape keeps what people typed from turning into mentions or links (<!channel>, <@U…>).
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// How much of a typed text each place shows, counted after escaping (an & takes five
// characters), so every section stays within Slack's 3,000 and every field within 2,000.
const (
	maxShownReason      = 1500 // the request's reason: thread root, card field, status
	maxShownDenial      = 500  // the deny reason on the root and the card; the thread has more
	maxShownDenialReply = 2800 // the deny reason in the thread, after a short line of mentions
	maxShownDenialDM    = 2600 // the deny reason in the requester's DM, between the request and the link
	maxShownDetail      = 80   // an audit event's detail in a status's history of up to maxHistory lines
)

// shown is text a person typed, as a message shows it: escaped, and clipped so the
// escaped text holds at most max characters, never cutting an entity in half.
func shown(text string, max int) string {
	escaped := escape(text)
	if utf8.RuneCountInString(escaped) <= max {
		return escaped
	}
	var b strings.Builder
	n := 0
	for _, r := range text {
		piece := escape(string(r))
		if n+utf8.RuneCountInString(piece) > max-1 { // keep room for the ellipsis
			break
		}
		b.WriteString(piece)
		n += utf8.RuneCountInString(piece)
	}
	return b.String() + "…"
}

// Longest texts the forms take; Slack's client enforces them while people type, and
// the submission is checked again. Slack allows an input at most 3,000 characters.
const (
	maxKeyInput      = 3000 // an RSA key of 16,384 bits is about 2,800 characters
	maxLifetimeInput = 20
	maxDenyReason    = 3000
)

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// helpMessage is plain mrkdwn text, which Slack shows as it would one section: help
// is most of what a burst of commands asks for, and a text-only ack is the cheapest
// to encode and send.
func helpMessage() Message {
	return Message{Text: helpText}
}

const helpText = "*gpubot gives you fal GPU machines.* First register your SSH public key, then ask for a machine." + "\n" +
	"`/gpu key set ssh-ed25519 AAAA… you@laptop`  register your public key (or `/gpu key` for a form)" + "\n" +
	"`/gpu key show` · `/gpu key remove`  see or forget it" + "\n" +
	"`/gpu create 1x`  one H100, for the default lifetime" + "\n" +
	"`/gpu create 8x sector_1 for 4h fine-tuning run`  eight H100s in sector 1 for 4 hours, with a reason" + "\n" +
	"`/gpu create`  the same in a form" + "\n" +
	"`/gpu list` · `/gpu list all`  your machines · everyone's" + "\n" +
	"`/gpu status <id>` · `/gpu delete <id>` · `/gpu extend <id> 2h`" + "\n" +
	"`/gpu cancel <id>`  withdraw a request still waiting for approval" + "\n" +
	"`/gpu budget`  your spend this month, your budget and what is left" + "\n" +
	"`/gpu report` · `/gpu report 2026-03`  a month's spend (everyone's for approvers and admins) · `/gpu report csv` the rows, for admins"

func keySavedMessage(k domain.PublicKey) Message {
	return textMessage(fmt.Sprintf(":key: Saved your %s key `%s`. Machines you ask for from now on will accept it. Next: `/gpu create 1x`.", k.Type, k.Fingerprint))
}

func keyShowMessage(k domain.StoredKey) Message {
	return textMessage(fmt.Sprintf(":key: Your key: %s `%s`, set %s.", k.Type, k.Fingerprint, k.SetAt.UTC().Format("2006-01-02 15:04 MST")))
}

const noKeyText = "You have no SSH key registered yet, so a machine would not let you in. Register your *public* key first: `/gpu key set ssh-ed25519 AAAA… you@laptop` (print it with `cat ~/.ssh/id_ed25519.pub`), or type `/gpu key` to paste it in a form."

func keyModal() slack.ModalViewRequest {
	input := slack.NewPlainTextInputBlockElement(plain("ssh-ed25519 AAAA… you@laptop"), BlockKey)
	input.Multiline = true
	input.MaxLength = maxKeyInput
	return slack.ModalViewRequest{
		Type:       slack.VTModal,
		CallbackID: ViewKey,
		Title:      plain("Your SSH key"),
		Submit:     plain("Save"),
		Close:      plain("Cancel"),
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			slack.NewInputBlock(BlockKey, plain("Public key"), plain("The one line in ~/.ssh/id_ed25519.pub (never the private key)."), input),
		}},
	}
}

func createModal(p Policy) slack.ModalViewRequest {
	var types, sectors []*slack.OptionBlockObject
	for _, t := range fal.InstanceTypes() {
		types = append(types, slack.NewOptionBlockObject(t, plain(ShortType(t)), nil))
	}
	for _, s := range fal.Sectors() {
		sectors = append(sectors, slack.NewOptionBlockObject(s, plain(s), nil))
	}
	typeSelect := slack.NewOptionsSelectBlockElement(slack.OptTypeStatic, plain("Machine"), BlockType, types...)
	sectorSelect := slack.NewOptionsSelectBlockElement(slack.OptTypeStatic, plain("Any"), BlockSector, sectors...)
	sector := slack.NewInputBlock(BlockSector, plain("Sector (8x only)"), nil, sectorSelect)
	sector.Optional = true
	lifetimeInput := slack.NewPlainTextInputBlockElement(plain(FormatDuration(p.DefaultLifetime)), BlockLifetime)
	lifetimeInput.MaxLength = maxLifetimeInput
	lifetime := slack.NewInputBlock(BlockLifetime, plain("Lifetime"),
		plain(fmt.Sprintf("From the moment it is ready; default %s, at most %s.", FormatDuration(p.DefaultLifetime), FormatDuration(p.MaxLifetime))),
		lifetimeInput)
	lifetime.Optional = true
	reasonInput := slack.NewPlainTextInputBlockElement(plain("What is it for?"), BlockReason)
	reasonInput.MaxLength = maxReason
	reason := slack.NewInputBlock(BlockReason, plain("Reason"), nil, reasonInput)
	return slack.ModalViewRequest{
		Type:       slack.VTModal,
		CallbackID: ViewCreate,
		Title:      plain("New GPU machine"),
		Submit:     plain("Request"),
		Close:      plain("Cancel"),
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			slack.NewInputBlock(BlockType, plain("Machine"), nil, typeSelect), sector, lifetime, reason,
		}},
	}
}

func denyModal(r domain.Request) slack.ModalViewRequest {
	input := slack.NewPlainTextInputBlockElement(plain("e.g. no 8x budget left this week; a 1x will do"), BlockReason)
	input.Multiline = true
	input.MaxLength = maxDenyReason
	return slack.ModalViewRequest{
		Type:            slack.VTModal,
		CallbackID:      ViewDeny,
		PrivateMetadata: r.ID,
		Title:           plain("Deny request"),
		Submit:          plain("Deny"),
		Close:           plain("Cancel"),
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			section(fmt.Sprintf("Deny <@%s>'s request for %s? They will see your reason in their thread.", r.UserID, describeMachine(r))),
			slack.NewInputBlock(BlockReason, plain("Reason"), nil, input),
		}},
	}
}

// describeMachine is "8x H100 · sector_1 · 4h".
func describeMachine(r domain.Request) string {
	parts := []string{ShortType(r.InstanceType)}
	if r.Sector != "" {
		parts = append(parts, r.Sector)
	}
	parts = append(parts, FormatDuration(r.Lifetime))
	return strings.Join(parts, " · ")
}

func reasonText(r domain.Request) string {
	if r.Reason == "" {
		return "_no reason given_"
	}
	return shown(r.Reason, maxShownReason)
}

// statusLine is the thread root's and the card's line on where a request stands.
func statusLine(r domain.Request, approvalChannel string) string {
	switch r.State {
	case domain.StateAwaitingApproval:
		if len(r.Approvals) > 0 {
			return fmt.Sprintf(":hourglass_flowing_sand: Waiting for approval in <#%s> (%s)", approvalChannel, progressText(r))
		}
		return fmt.Sprintf(":hourglass_flowing_sand: Waiting for an approver in <#%s>", approvalChannel)
	case domain.StateApproved:
		if r.ApproverID == "" {
			return ":white_check_mark: No approval needed; asking fal for the machine"
		}
		return fmt.Sprintf(":white_check_mark: Approved by %s; asking fal for the machine", approversText(r))
	case domain.StateCreating:
		return ":gear: Asking fal for the machine"
	case domain.StateProvisioning:
		return fmt.Sprintf(":gear: fal is preparing `%s` (%s)", r.InstanceID, falStatusText(r.FalStatus))
	case domain.StateReady:
		return fmt.Sprintf(":large_green_circle: Ready: `%s` · expires %s", sshCommand(r), slackDate(r.ExpiresAt))
	case domain.StateDeleting:
		return ":wastebasket: Deleting"
	case domain.StateDeleted, domain.StateExpired, domain.StateGone:
		return ":white_circle: " + howItEnded(r)
	case domain.StateDenied:
		return fmt.Sprintf(":no_entry: Denied by <@%s>: %s", r.ApproverID, shown(r.DecisionReason, maxShownDenial))
	case domain.StateCancelled:
		return ":heavy_multiplication_x: Cancelled"
	case domain.StateApprovalExpired:
		return ":hourglass: Expired: nobody decided in time, so nothing was created"
	case domain.StateFailed:
		return ":x: Failed: " + r.Error
	}
	return string(r.State)
}

// falStatusText is fal's status of an instance, "pending" until fal has said one.
func falStatusText(s string) string {
	if s == "" {
		return "pending"
	}
	return s
}

func sshCommand(r domain.Request) string { return fmt.Sprintf("ssh %s@%s", SSHUser, r.IP) }

// slackDate shows a time in each reader's own time zone, with a UTC fallback.
func slackDate(t time.Time) string {
	return fmt.Sprintf("<!date^%d^{date_short_pretty} {time}|%s>", t.Unix(), t.UTC().Format("2006-01-02 15:04 UTC"))
}

// rootMessage is the request's thread root, edited as the request moves.
func rootMessage(r domain.Request, approvalChannel string) Message {
	head := fmt.Sprintf("*<@%s> asked for %s*\n>%s", r.UserID, describeMachine(r), reasonText(r))
	state := statusLine(r, approvalChannel)
	ids := fmt.Sprintf("Request `%s`", shortID(r.ID))
	if r.InstanceID != "" {
		ids += fmt.Sprintf(" · instance `%s`", r.InstanceID)
	}
	blocks := []slack.Block{section(head), section(state), contextLine(ids)}
	if r.State == domain.StateAwaitingApproval {
		// Only the requester may click it; the edit that leaves this state removes it.
		blocks = append(blocks, slack.NewActionBlock("withdraw", button(ActionWithdraw, r.ID, "Withdraw request", slack.StyleDefault)))
	}
	return Message{
		Text:   fmt.Sprintf("GPU request from <@%s>: %s", r.UserID, describeMachine(r)),
		Blocks: blocks,
	}
}

// cardFacts is what the approval card shows beside the request itself.
type cardFacts struct {
	estimate  string    // hourly price times lifetime; "" without prices
	approvers string    // mentions of who may decide
	expires   time.Time // when the request expires if nobody decides
}

// approvalCard asks the approvers, with the approvals so far; once decided it keeps
// the facts and loses the buttons.
func approvalCard(r domain.Request, facts cardFacts) Message {
	fields := []*slack.TextBlockObject{
		mrkdwn("*Requester*\n<@" + r.UserID + ">"),
		mrkdwn("*Machine*\n" + ShortType(r.InstanceType)),
		mrkdwn("*Sector*\n" + orAny(r.Sector)),
		mrkdwn("*Lifetime*\n" + FormatDuration(r.Lifetime)),
		mrkdwn("*Reason*\n" + reasonText(r)),
	}
	if facts.estimate != "" {
		fields = append(fields, mrkdwn("*Estimated cost*\n"+facts.estimate))
	}
	blocks := []slack.Block{
		section(fmt.Sprintf("*GPU request `%s` needs approval*", shortID(r.ID))),
		slack.NewSectionBlock(nil, fields, nil),
	}
	if r.OverBudget != "" {
		blocks = append(blocks, section(overBudgetLine(r.OverBudget)))
	}
	if r.State == domain.StateAwaitingApproval {
		blocks = append(blocks, contextLine(waitingLine(r, facts)))
		blocks = append(blocks, slack.NewActionBlock("decision",
			button(ActionApprove, r.ID, "Approve", slack.StylePrimary),
			button(ActionDeny, r.ID, "Deny", slack.StyleDanger)))
	} else {
		blocks = append(blocks, contextLine(decisionLine(r)))
	}
	return Message{Text: fmt.Sprintf("GPU request from <@%s> needs approval: %s", r.UserID, describeMachine(r)), Blocks: blocks}
}

func orAny(sector string) string {
	if sector == "" {
		return "any"
	}
	return sector
}

// waitingLine says on a card who may decide, how many must, the approvals so far, and
// when the request expires.
func waitingLine(r domain.Request, facts cardFacts) string {
	line := "Approvers: " + facts.approvers
	if n := approvalsNeeded(r); n > 1 {
		line += fmt.Sprintf(" · needs %d different approvers", n)
	}
	if len(r.Approvals) > 0 {
		line += " · " + progressText(r)
	}
	return line + " · expires " + slackDate(facts.expires) + " if nobody decides"
}

// progressText is "1 of 2: approved by <@UBOB>".
func progressText(r domain.Request) string {
	return fmt.Sprintf("%d of %d: approved by %s", len(r.Approvals), approvalsNeeded(r), approversText(r))
}

// approversText names who approved a request: every approver, in order.
func approversText(r domain.Request) string {
	if len(r.Approvals) == 0 {
		return "<@" + r.ApproverID + ">"
	}
	names := make([]string, len(r.Approvals))
	for i, a := range r.Approvals {
		names[i] = "<@" + a.UserID + ">"
	}
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// countText is "1 more approval" or "2 more approvals".
func countText(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// decisionLine is the card's line on what the approvers decided, or where the
// request stands when nobody had to.
func decisionLine(r domain.Request) string {
	switch {
	case r.State == domain.StateDenied:
		return fmt.Sprintf(":no_entry: Denied by <@%s>: %s", r.ApproverID, shown(r.DecisionReason, maxShownDenial))
	case r.State == domain.StateCancelled && r.ApproverID == "":
		if r.EndReason != "" {
			return ":heavy_multiplication_x: " + upperFirst(r.EndReason)
		}
		return ":heavy_multiplication_x: Withdrawn by the requester"
	case r.State == domain.StateApprovalExpired:
		return ":hourglass: Expired: " + r.EndReason
	case r.ApproverID != "":
		return ":white_check_mark: Approved by " + approversText(r)
	}
	return statusLine(r, "")
}

// approvalReminder nudges the approvers in the card's thread.
func approvalReminder(r domain.Request, approvers string, waited time.Duration, expires time.Time) Message {
	// The requester is not mentioned: the card above names them, and they need no ping here.
	text := fmt.Sprintf("%s: request `%s` for %s has waited %s for a decision", approvers, shortID(r.ID), describeMachine(r), FormatDuration(waited))
	if len(r.Approvals) > 0 {
		text += " (" + progressText(r) + ")"
	}
	text += ". It expires " + slackDate(expires) + " if nobody decides."
	return Message{Text: fmt.Sprintf("Reminder: GPU request %s is waiting for a decision", shortID(r.ID)), Blocks: []slack.Block{section(text)}}
}

// decisionDM tells the requester the decision directly, with a link to the thread.
func decisionDM(r domain.Request, threadLink string) Message {
	thread := "its thread"
	if threadLink != "" {
		thread = "<" + threadLink + "|its thread>"
	}
	var text string
	decision := "approved"
	if r.State == domain.StateDenied {
		decision = "denied"
		text = fmt.Sprintf(":no_entry: Your request `%s` for %s was denied by <@%s>: %s\nMore in %s; ask again with `/gpu create` if something else will do.",
			shortID(r.ID), describeMachine(r), r.ApproverID, shown(r.DecisionReason, maxShownDenialDM), thread)
	} else {
		text = fmt.Sprintf(":white_check_mark: Your request `%s` for %s was approved by %s. I'm asking fal for the machine; follow it in %s.",
			shortID(r.ID), describeMachine(r), approversText(r), thread)
	}
	return Message{Text: fmt.Sprintf("Your GPU request %s was %s", shortID(r.ID), decision), Blocks: []slack.Block{section(text)}}
}

// upperFirst starts a sentence with a capital letter.
func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// denialText tells the requester in their thread who denied the request and why: as
// much of the why as a message holds.
func denialText(r domain.Request) string {
	return fmt.Sprintf("<@%s> denied by <@%s>: %s", r.UserID, r.ApproverID, shown(r.DecisionReason, maxShownDenialReply))
}

func readyReply(r domain.Request) Message {
	text := fmt.Sprintf("<@%s> your %s is ready :tada:\n```%s```\nIt will be deleted %s; extend it with `/gpu extend %s 2h`.",
		r.UserID, ShortType(r.InstanceType), sshCommand(r), slackDate(r.ExpiresAt), shortID(r.ID))
	return Message{Text: fmt.Sprintf("Your %s is ready: %s", ShortType(r.InstanceType), sshCommand(r)), Blocks: []slack.Block{section(text)}}
}

func readyNotice(r domain.Request) Message {
	return textMessage(fmt.Sprintf(":large_green_circle: <@%s>'s %s `%s` is ready (%s).", r.UserID, ShortType(r.InstanceType), r.InstanceID, r.IP))
}

func deleteConfirmMessage(r domain.Request) Message {
	text := fmt.Sprintf("Delete <@%s>'s %s `%s`? Everything on it is lost.", r.UserID, ShortType(r.InstanceType), instanceText(r.InstanceID))
	return Message{Text: text, Blocks: []slack.Block{
		section(text),
		slack.NewActionBlock("delete",
			button(ActionDeleteConfirm, r.ID, "Delete", slack.StyleDanger),
			button(ActionDeleteCancel, r.ID, "Keep it", slack.StyleDefault)),
	}}
}

// instanceText is fal's instance id, or that there is none yet.
func instanceText(instanceID string) string {
	if instanceID == "" {
		return "(not created yet)"
	}
	return instanceID
}

func reminderMessage(r domain.Request, extendBy time.Duration) Message {
	text := fmt.Sprintf("<@%s> your %s `%s` will be deleted %s. Need it longer?", r.UserID, ShortType(r.InstanceType), r.InstanceID, slackDate(r.ExpiresAt))
	return Message{Text: text, Blocks: []slack.Block{
		section(text),
		slack.NewActionBlock("reminder",
			button(ActionExtend, r.ID, "Extend "+FormatDuration(extendBy), slack.StylePrimary),
			button(ActionDeleteNow, r.ID, "Delete now", slack.StyleDanger)),
	}}
}

// howItEnded is the last word on a machine: how it ended, how long it ran, what it cost.
// createUnconfirmedText tells the requester that fal has not said whether it made the
// machine, and that asking again is safe.
func createUnconfirmedText(r domain.Request, lastAnswer string) string {
	return fmt.Sprintf("fal has not confirmed the machine yet (its last answer: %s). I keep asking with the same request key, which fal answers with the same machine, so you will not get or pay for two.", lastAnswer)
}

// abandonedCreateText ends a request whose create fal never confirmed before it forgot the key.
func abandonedCreateText(waited time.Duration) string {
	return fmt.Sprintf("fal never confirmed whether it created this machine, and %s on it is too late to ask fal again safely: fal forgets a request after 10 minutes, so asking again could make a second machine. I stopped here; if fal did make one, the admins have been told to delete it. Ask again with `/gpu create`.", FormatDuration(waited))
}

func abandonedCreateAlert(r domain.Request) string {
	return fmt.Sprintf("fal never confirmed the create of request `%s` by <@%s> (%s) before it forgot the idempotency key, so gpubot does not know whether a machine was made. If fal lists one that no request tracks, I'll report it; please delete it at fal.", shortID(r.ID), r.UserID, ShortType(r.InstanceType))
}

// neverReadyText tells the requester why their machine is being deleted before it was ready.
func neverReadyText(r domain.Request, timeout time.Duration) string {
	return fmt.Sprintf("fal has not made `%s` ready in %s (it says: %s), so I'm deleting it rather than let it cost money. Ask again with `/gpu create`; the admins have been told.", r.InstanceID, FormatDuration(timeout), falStatusText(r.FalStatus))
}

func neverReadyAlert(r domain.Request, timeout time.Duration) string {
	return fmt.Sprintf("fal did not make instance `%s` (request `%s`, owner <@%s>, %s) ready within PROVISION_TIMEOUT (%s); its status is %s. I'm deleting it.", r.InstanceID, shortID(r.ID), r.UserID, ShortType(r.InstanceType), FormatDuration(timeout), falStatusText(r.FalStatus))
}

// lingeringAlert tells the admins that fal still lists the instance of a request that has ended.
func lingeringAlert(r domain.Request, inst fal.Instance, now time.Time) string {
	return fmt.Sprintf("fal still lists instance `%s` (%s, %s%s) of request `%s` by <@%s>, which ended as %s %s ago. It may be running and costing money; I'm deleting it again.", inst.ID, ShortType(inst.InstanceType), inst.Status, ipText(inst.IP), shortID(r.ID), r.UserID, stateName(r), FormatDuration(now.Sub(r.EndedAt)))
}

// howItEnded says how a machine ended and how long it ran, for the thread root and the
// closing reply (which adds the cost).
func howItEnded(r domain.Request) string {
	how := map[domain.State]string{
		domain.StateDeleted: "Deleted",
		domain.StateExpired: "Expired and deleted",
		domain.StateGone:    "Gone: fal no longer lists it",
	}[r.State]
	if r.EndReason != "" && r.State == domain.StateDeleted {
		how = "Deleted " + r.EndReason
	}
	if r.ReadyAt.IsZero() {
		return how + "; it never became ready."
	}
	return how + fmt.Sprintf("; it ran for %s.", FormatDuration(r.EndedAt.Sub(r.ReadyAt)))
}

func listMessage(reqs []domain.Request, now time.Time, prices spend.Prices, everyone bool) Message {
	if len(reqs) == 0 {
		if everyone {
			return textMessage("Nobody has a machine right now.")
		}
		return textMessage("You have no machines. Ask for one with `/gpu create 1x`.")
	}
	lines := make([]string, 0, len(reqs))
	for _, r := range reqs {
		lines = append(lines, listLine(r, now, prices, everyone))
	}
	title := "*Your machines*"
	if everyone {
		title = "*Everyone's machines*"
	}
	return chunked(title, lines)
}

func listLine(r domain.Request, now time.Time, prices spend.Prices, everyone bool) string {
	line := fmt.Sprintf("`%s` %s · %s", shortID(r.ID), ShortType(r.InstanceType), stateName(r))
	if everyone {
		line += fmt.Sprintf(" · <@%s>", r.UserID)
	}
	if r.IP != "" {
		line += " · " + r.IP
	}
	line += " · requested " + FormatDuration(now.Sub(r.CreatedAt)) + " ago"
	if r.State == domain.StateReady {
		line += " · " + FormatDuration(r.ExpiresAt.Sub(now)) + " left"
		if cost := prices.MachineCost(r, now); cost != "" {
			line += " · " + cost + " so far"
		}
	}
	return line
}

// stateName is a request's state as a word in a sentence ("already deleted"), with
// fal's own status while it provisions.
func stateName(r domain.Request) string {
	if r.State == domain.StateProvisioning && r.FalStatus != "" && r.FalStatus != string(domain.StateProvisioning) {
		return "provisioning (fal: " + r.FalStatus + ")"
	}
	return strings.ReplaceAll(string(r.State), "_", " ")
}

func statusMessage(r domain.Request, history []domain.AuditEvent, now time.Time, prices spend.Prices, approvalChannel string) Message {
	fields := []*slack.TextBlockObject{
		mrkdwn("*Owner*\n<@" + r.UserID + ">"),
		mrkdwn("*Machine*\n" + describeMachine(r)),
		mrkdwn("*Instance*\n" + instanceText(r.InstanceID)),
		mrkdwn("*Requested*\n" + slackDate(r.CreatedAt)),
	}
	if r.IP != "" {
		fields = append(fields, mrkdwn("*SSH*\n`"+sshCommand(r)+"`"))
	}
	if r.State == domain.StateReady {
		fields = append(fields, mrkdwn("*Time left*\n"+FormatDuration(r.ExpiresAt.Sub(now))))
		if cost := prices.MachineCost(r, now); cost != "" {
			fields = append(fields, mrkdwn("*Cost so far*\n"+cost))
		}
	}
	blocks := []slack.Block{
		section(fmt.Sprintf("*Request `%s`*\n>%s", shortID(r.ID), reasonText(r))),
		section(statusLine(r, approvalChannel)),
		slack.NewSectionBlock(nil, fields, nil),
	}
	if len(history) > 0 {
		blocks = append(blocks, contextLine(historyText(history)))
	}
	return Message{Text: fmt.Sprintf("Request %s: %s", shortID(r.ID), r.State), Blocks: blocks}
}

// maxHistory is how many of a request's latest audit events its status shows.
const maxHistory = 12

// historyText is a request's audit trail as read: who did what, and when.
func historyText(events []domain.AuditEvent) string {
	if len(events) > maxHistory {
		events = events[len(events)-maxHistory:]
	}
	lines := make([]string, 0, len(events)+1)
	lines = append(lines, "*History*")
	for _, e := range events {
		who := "gpubot"
		if e.Actor != actorBot {
			who = "<@" + e.Actor + ">"
		}
		line := fmt.Sprintf("%s %s: %s", slackDate(e.At), who, strings.ReplaceAll(e.Action, "_", " "))
		if e.Detail != "" {
			line += " (" + shown(e.Detail, maxShownDetail) + ")"
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n")
}

// chunked keeps long lists within Slack's limits: 3,000 characters a section, 50 blocks a message.
func chunked(title string, lines []string) Message {
	const maxSection, maxBlocks = 2900, 48
	blocks := []slack.Block{section(title)}
	var b strings.Builder
	shown := 0
	for _, line := range lines {
		if b.Len()+len(line)+1 > maxSection {
			if len(blocks) == maxBlocks {
				break
			}
			blocks = append(blocks, section(b.String()))
			b.Reset()
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(line)
		shown++
	}
	if b.Len() > 0 {
		blocks = append(blocks, section(b.String()))
	}
	if shown < len(lines) {
		blocks = append(blocks, contextLine(fmt.Sprintf("…and %d more.", len(lines)-shown)))
	}
	return Message{Text: title, Blocks: blocks}
}

// ipText is ", <ip>" after an instance's status, when fal gave one.
func ipText(ip string) string {
	if ip == "" {
		return ""
	}
	return ", " + ip
}

// falFailureWords explains to the person who asked for the machine why fal refused it.
func falFailureWords(err error) string {
	var fe *fal.Error
	detail := ""
	if errors.As(err, &fe) && fe.Message != "" {
		detail = " (fal said: " + shown(fe.Message, 200) + ")"
	}
	switch {
	case fal.IsAuthorization(err):
		return "fal refused gpubot's credentials, so no machine was created. The admins have been alerted; try again once they have fixed it."
	case fal.IsValidation(err):
		return "fal refused the request as invalid" + detail + ", so no machine was created. Check the type and sector and ask again."
	}
	return "fal refused the request with " + statusOf(err) + detail + ", so no machine was created. Please ask again, or tell an admin if it keeps happening."
}

// statusOf is the HTTP status fal answered with, in words, or that it did not answer.
func statusOf(err error) string {
	var fe *fal.Error
	if errors.As(err, &fe) {
		return fmt.Sprintf("HTTP %d %s", fe.Status, http.StatusText(fe.Status))
	}
	return "no answer"
}
