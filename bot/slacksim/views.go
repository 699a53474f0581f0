package slacksim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

type view struct {
	id, user, kind string // kind: "modal" or "home"
	content        viewContent
	hash           string
	rootID         string
	previousID     string
	errors         map[string]string
	closed         bool
}

// viewContent is a validated view object as the bot sent it.
type viewContent struct {
	fields          map[string]json.RawMessage
	kind            string
	title           string
	callbackID      string
	privateMetadata string
	externalID      string
	notifyOnClose   bool
	clearOnClose    bool
	blocks          blockSet
}

func (v *view) snapshot() View {
	return View{
		ID:              v.id,
		User:            v.user,
		Type:            v.kind,
		CallbackID:      v.content.callbackID,
		PrivateMetadata: v.content.privateMetadata,
		ExternalID:      v.content.externalID,
		Title:           v.content.title,
		Blocks:          v.content.blocks.parsed,
		Errors:          maps.Clone(v.errors),
	}
}

// parseView validates a view object; Slack answers invalid_arguments for views that
// break its rules.
func parseView(raw json.RawMessage, wantKind string) (viewContent, *apiError) {
	var fields map[string]json.RawMessage
	if len(bytes.TrimSpace(raw)) == 0 || json.Unmarshal(raw, &fields) != nil || fields == nil {
		return viewContent{}, slackError("invalid_arguments", problem("view must be a JSON object", "/view"))
	}
	content := viewContent{fields: fields}
	var header struct {
		Type            string     `json:"type"`
		Title           *textShape `json:"title"`
		Submit          *textShape `json:"submit"`
		Close           *textShape `json:"close"`
		CallbackID      string     `json:"callback_id"`
		PrivateMetadata string     `json:"private_metadata"`
		ExternalID      string     `json:"external_id"`
		NotifyOnClose   bool       `json:"notify_on_close"`
		ClearOnClose    bool       `json:"clear_on_close"`
	}
	if err := json.Unmarshal(raw, &header); err != nil {
		return viewContent{}, slackError("invalid_arguments", problem("invalid view: "+err.Error(), "/view"))
	}
	content.kind, content.callbackID = header.Type, header.CallbackID
	content.privateMetadata, content.externalID = header.PrivateMetadata, header.ExternalID
	content.notifyOnClose, content.clearOnClose = header.NotifyOnClose, header.ClearOnClose
	if header.Type != wantKind {
		return viewContent{}, slackError("invalid_arguments", problem(fmt.Sprintf("type must be %q", wantKind), "/view/type"))
	}
	var problems []string
	if wantKind == "home" {
		problems = append(problems, checkHomeHeader(header.Title, header.Submit, header.Close)...)
	}
	if wantKind == "modal" {
		if header.Title == nil {
			problems = append(problems, problem("missing required field: title", "/view"))
		} else {
			content.title = header.Title.Text
			problems = append(problems, checkTextObject(header.Title, true, 1, maxModalTitleChars, "/view/title")...)
		}
		for name, text := range map[string]*textShape{"submit": header.Submit, "close": header.Close} {
			if text != nil {
				problems = append(problems, checkTextObject(text, true, 1, maxModalTitleChars, "/view/"+name)...)
			}
		}
	}
	if utf8.RuneCountInString(header.PrivateMetadata) > maxPrivateMetadata {
		problems = append(problems, problem(fmt.Sprintf("must be less than %d characters", maxPrivateMetadata+1), "/view/private_metadata"))
	}
	problems = append(problems, checkLength(header.CallbackID, 0, maxViewCallbackChars, "/view/callback_id")...)
	problems = append(problems, checkLength(header.ExternalID, 0, maxIDChars, "/view/external_id")...)
	where := modalSurface
	if wantKind == "home" {
		where = homeSurface
	}
	blocks, err := parseBlocks(fields["blocks"], where)
	if err != nil {
		problems = append(problems, err.messages...)
	}
	content.blocks = blocks
	if wantKind == "modal" && header.Submit == nil && hasInputBlock(blocks.shapes) {
		problems = append(problems, problem("must provide submit when input blocks are present", "/view/submit"))
	}
	if len(problems) > 0 {
		return viewContent{}, slackError("invalid_arguments", problems...)
	}
	return content, nil
}

func hasInputBlock(blocks []blockShape) bool {
	return slices.ContainsFunc(blocks, func(b blockShape) bool { return b.Type == "input" })
}

// viewJSON is a view as views.* answers and view_submission payloads show it.
func (s *Server) viewJSON(v *view, stateValues map[string]map[string]any) map[string]any {
	out := map[string]any{}
	for name, value := range v.content.fields {
		out[name] = value
	}
	if stateValues == nil {
		stateValues = map[string]map[string]any{}
	}
	var previous any
	if v.previousID != "" {
		previous = v.previousID
	}
	out["id"] = v.id
	out["team_id"] = s.opts.TeamID
	out["type"] = v.kind
	out["blocks"] = v.content.blocks.raw
	out["private_metadata"] = v.content.privateMetadata
	out["callback_id"] = v.content.callbackID
	out["external_id"] = v.content.externalID
	out["state"] = map[string]any{"values": stateValues}
	out["hash"] = v.hash
	out["root_view_id"] = v.rootID
	out["previous_view_id"] = previous
	out["app_id"] = appID
	out["app_installed_team_id"] = s.opts.TeamID
	out["bot_id"] = botID
	return out
}

func (s *Server) newHashLocked() string {
	return fmt.Sprintf("%d.%s", s.now().Unix(), randomHex(4))
}

// newViewLocked stores a view; a new external_id must be unique in the workspace.
func (s *Server) newViewLocked(userID string, content viewContent, rootID, previousID string) (*view, *apiError) {
	if id := content.externalID; id != "" {
		if _, taken := s.viewByExtID[id]; taken {
			return nil, slackError("duplicate_external_id")
		}
	}
	v := &view{id: s.nextIDLocked("V"), user: userID, kind: content.kind, content: content, hash: s.newHashLocked(), previousID: previousID}
	v.rootID = rootID
	if v.rootID == "" {
		v.rootID = v.id
	}
	s.views[v.id] = v
	if id := content.externalID; id != "" {
		s.viewByExtID[id] = v
	}
	return v, nil
}

func (s *Server) replaceViewLocked(v *view, content viewContent) *apiError {
	if id := content.externalID; id != "" && id != v.content.externalID {
		if _, taken := s.viewByExtID[id]; taken {
			return slackError("duplicate_external_id")
		}
	}
	if v.content.externalID != "" {
		delete(s.viewByExtID, v.content.externalID)
	}
	if content.externalID != "" {
		s.viewByExtID[content.externalID] = v
	}
	v.content, v.hash, v.errors = content, s.newHashLocked(), nil
	s.emitLocked(Event{Kind: "view_update", View: v.snapshot()})
	s.notifyLocked()
	return nil
}

func (s *Server) forgetViewLocked(v *view) {
	v.closed = true
	delete(s.views, v.id)
	if v.content.externalID != "" && s.viewByExtID[v.content.externalID] == v {
		delete(s.viewByExtID, v.content.externalID)
	}
}

// closeModalsLocked closes the user's modals from index from up to the top of the stack.
func (s *Server) closeModalsLocked(userID string, from int) {
	stack := s.modalStacks[userID]
	if from < 0 || from >= len(stack) {
		return
	}
	for i := len(stack) - 1; i >= from; i-- {
		s.forgetViewLocked(stack[i])
		s.emitLocked(Event{Kind: "view_close", View: stack[i].snapshot()})
	}
	if from == 0 {
		delete(s.modalStacks, userID)
	} else {
		s.modalStacks[userID] = stack[:from]
	}
	s.notifyLocked()
}

func (s *Server) pushModalLocked(userID string, content viewContent) (*view, *apiError) {
	stack := s.modalStacks[userID]
	if len(stack) >= maxModalStack {
		return nil, slackError("push_limit_reached")
	}
	rootID, previousID := "", ""
	if len(stack) > 0 {
		rootID, previousID = stack[0].id, stack[len(stack)-1].id
	}
	v, err := s.newViewLocked(userID, content, rootID, previousID)
	if err != nil {
		return nil, err
	}
	s.modalStacks[userID] = append(stack, v)
	s.emitLocked(Event{Kind: "view_open", View: v.snapshot()})
	s.notifyLocked()
	return v, nil
}

func (s *Server) viewsOpenLocked(req *apiRequest) (map[string]any, *apiError) {
	t, err := s.useTriggerLocked(req.params["trigger_id"])
	if err != nil {
		return nil, err
	}
	content, err := parseView(req.rawField("view"), "modal")
	if err != nil {
		return nil, err
	}
	// A trigger from outside a modal starts a new stack.
	s.closeModalsLocked(t.user, 0)
	v, err := s.pushModalLocked(t.user, content)
	if err != nil {
		return nil, err
	}
	return map[string]any{"view": s.viewJSON(v, nil)}, nil
}

func (s *Server) viewsPushLocked(req *apiRequest) (map[string]any, *apiError) {
	t, err := s.useTriggerLocked(req.params["trigger_id"])
	if err != nil {
		return nil, err
	}
	content, err := parseView(req.rawField("view"), "modal")
	if err != nil {
		return nil, err
	}
	v, err := s.pushModalLocked(t.user, content)
	if err != nil {
		return nil, err
	}
	return map[string]any{"view": s.viewJSON(v, nil)}, nil
}

func (s *Server) viewsUpdateLocked(req *apiRequest) (map[string]any, *apiError) {
	v, ok := s.views[req.params["view_id"]]
	if !ok {
		v, ok = s.viewByExtID[req.params["external_id"]]
	}
	if !ok || v.closed {
		return nil, slackError("not_found")
	}
	if hash := req.params["hash"]; hash != "" && hash != v.hash {
		return nil, slackError("hash_conflict")
	}
	content, err := parseView(req.rawField("view"), v.kind)
	if err != nil {
		return nil, err
	}
	if err := s.replaceViewLocked(v, content); err != nil {
		return nil, err
	}
	return map[string]any{"view": s.viewJSON(v, nil)}, nil
}

func (s *Server) viewsPublishLocked(req *apiRequest) (map[string]any, *apiError) {
	userID := req.params["user_id"]
	if _, known := s.users[userID]; !known {
		return nil, slackError("user_not_found")
	}
	content, err := parseView(req.rawField("view"), "home")
	if err != nil {
		return nil, err
	}
	home, exists := s.homeViews[userID]
	if exists {
		if hash := req.params["hash"]; hash != "" && hash != home.hash {
			return nil, slackError("hash_conflict")
		}
		if err := s.replaceViewLocked(home, content); err != nil {
			return nil, err
		}
	} else {
		home, err = s.newViewLocked(userID, content, "", "")
		if err != nil {
			return nil, err
		}
		s.homeViews[userID] = home
		s.emitLocked(Event{Kind: "view_update", View: home.snapshot()})
		s.notifyLocked()
	}
	s.homeHistory[userID] = append(s.homeHistory[userID], home.snapshot())
	s.notifyLocked() // waiters on HomePublishes
	return map[string]any{"view": s.viewJSON(home, nil)}, nil
}

// OpenView returns the modal open for user: the last one opened, pushed or updated
// and not closed.
func (s *Server) OpenView(user string) (View, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stack := s.modalStacks[user]
	if len(stack) == 0 {
		return View{}, false
	}
	return stack[len(stack)-1].snapshot(), true
}

// ViewErrors is what the bot's last response_action "errors" put on user's open
// modal (block_id → message), or nil.
func (s *Server) ViewErrors(user string) map[string]string {
	v, ok := s.OpenView(user)
	if !ok {
		return nil
	}
	return v.Errors
}

// HomeView returns the home tab published for user.
func (s *Server) HomeView(user string) (View, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.homeViews[user]
	if !ok {
		return View{}, false
	}
	return v.snapshot(), true
}

// SubmitView submits user's open modal and waits for the ack. values are keyed by
// block_id: the text for a text input, the option's value for a static_select or
// radio_buttons, comma-separated values for multi-selects and checkboxes. Input
// blocks left out keep their initial value; a required one without a value is an
// error, as Slack's client would not let the user submit.
func (s *Server) SubmitView(ctx context.Context, user string, values map[string]string) (Ack, error) {
	envelopeID, err := s.sendViewSubmission(user, values)
	if err != nil {
		return Ack{}, err
	}
	return s.AwaitAck(ctx, envelopeID)
}

func (s *Server) sendViewSubmission(userID string, values map[string]string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	u, ok := s.users[userID]
	if !ok {
		return "", fmt.Errorf("slacksim: unknown user %q", userID)
	}
	stack := s.modalStacks[userID]
	if len(stack) == 0 {
		return "", fmt.Errorf("slacksim: %s has no open modal", userID)
	}
	v := stack[len(stack)-1]
	state, err := viewState(v.content.blocks.shapes, values)
	if err != nil {
		return "", fmt.Errorf("slacksim: submit %s's modal %s: %w", userID, v.id, err)
	}
	v.errors = nil
	payload := map[string]any{
		"type":                  "view_submission",
		"team":                  s.teamJSON(),
		"user":                  s.userRefJSON(u),
		"api_app_id":            appID,
		"token":                 verificationToken,
		"trigger_id":            s.newTriggerLocked(userID),
		"view":                  s.viewJSON(v, state),
		"response_urls":         []any{},
		"is_enterprise_install": false,
		"enterprise":            nil,
	}
	origin := envelopeOrigin{interaction: "view_submission", user: userID, viewID: v.id}
	env, err := s.sendEnvelopeLocked("interactive", payload, true, origin)
	if err != nil {
		return "", err
	}
	return env.id, nil
}

// CloseView closes user's open modal as its Close button does: back to the view
// below it, or out of every view when it has clear_on_close. When the view asked for
// notify_on_close, the bot gets a view_closed and CloseView waits (ctx-bounded) for
// its ack.
func (s *Server) CloseView(ctx context.Context, user string) error {
	envelopeID, err := s.closeView(user)
	if err != nil || envelopeID == "" {
		return err
	}
	_, err = s.AwaitAck(ctx, envelopeID)
	return err
}

func (s *Server) closeView(userID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	stack := s.modalStacks[userID]
	if len(stack) == 0 {
		return "", fmt.Errorf("slacksim: %s has no open modal", userID)
	}
	top := stack[len(stack)-1]
	from := len(stack) - 1
	if top.content.clearOnClose {
		from = 0
	}
	if !top.content.notifyOnClose {
		s.closeModalsLocked(userID, from)
		return "", nil
	}
	payload := map[string]any{
		"type":                  "view_closed",
		"team":                  s.teamJSON(),
		"user":                  s.userRefJSON(s.users[userID]),
		"api_app_id":            appID,
		"token":                 verificationToken,
		"view":                  s.viewJSON(top, nil),
		"is_cleared":            from == 0 && len(stack) > 1,
		"is_enterprise_install": false,
	}
	s.closeModalsLocked(userID, from)
	env, err := s.sendEnvelopeLocked("interactive", payload, false, envelopeOrigin{interaction: "view_closed", user: userID})
	if err != nil {
		return "", err
	}
	return env.id, nil
}

// viewState builds state.values the way Slack fills it for a submission.
func viewState(blocks []blockShape, values map[string]string) (map[string]map[string]any, error) {
	state := map[string]map[string]any{}
	used := map[string]bool{}
	for _, block := range blocks {
		if block.Type != "input" || block.Element == nil {
			continue
		}
		given, ok := values[block.BlockID]
		used[block.BlockID] = ok
		entry, filled, err := inputValue(block.Element, given, ok)
		if err != nil {
			return nil, fmt.Errorf("block %q: %w", block.BlockID, err)
		}
		if !filled && !block.Optional {
			return nil, fmt.Errorf("block %q is required and has no value", block.BlockID)
		}
		state[block.BlockID] = map[string]any{block.Element.ActionID: entry}
	}
	for blockID := range values {
		if !used[blockID] {
			return nil, fmt.Errorf("the modal has no input block %q", blockID)
		}
	}
	return state, nil
}

// inputValue is one element's entry in state.values; filled reports whether it has a value.
func inputValue(element *elementShape, given string, isGiven bool) (map[string]any, bool, error) {
	entry := map[string]any{"type": element.Type}
	switch element.Type {
	case "static_select", "radio_buttons":
		return selectedOption(entry, element, given, isGiven)
	case "multi_static_select", "checkboxes":
		return selectedOptions(entry, element, given, isGiven)
	}
	field := map[string]string{
		"datepicker": "selected_date", "timepicker": "selected_time",
		"users_select": "selected_user", "conversations_select": "selected_conversation",
		"channels_select": "selected_channel",
	}[element.Type]
	if field == "" {
		field = "value"
	}
	value := element.InitialValue
	if isGiven {
		value = given
	}
	if err := checkTypedLength(element, value); err != nil {
		return nil, false, err
	}
	if value == "" {
		entry[field] = nil
		return entry, false, nil
	}
	entry[field] = value
	return entry, true, nil
}

// checkTypedLength refuses a text Slack's client would not let the user submit: longer
// than the input's max_length, or shorter than its min_length.
func checkTypedLength(element *elementShape, value string) error {
	n := utf8.RuneCountInString(value)
	if element.MaxLength != nil && n > *element.MaxLength {
		return fmt.Errorf("%d characters, over the input's max_length of %d", n, *element.MaxLength)
	}
	if element.MinLength != nil && n > 0 && n < *element.MinLength {
		return fmt.Errorf("%d characters, under the input's min_length of %d", n, *element.MinLength)
	}
	return nil
}

func selectedOption(entry map[string]any, element *elementShape, given string, isGiven bool) (map[string]any, bool, error) {
	var chosen *optionShape
	switch {
	case isGiven && given != "":
		found, err := findOption(element, given)
		if err != nil {
			return nil, false, err
		}
		chosen = found
	case !isGiven && element.InitialOption != nil:
		chosen = element.InitialOption
	}
	if chosen == nil {
		entry["selected_option"] = nil
		return entry, false, nil
	}
	entry["selected_option"] = optionJSON(chosen)
	return entry, true, nil
}

func selectedOptions(entry map[string]any, element *elementShape, given string, isGiven bool) (map[string]any, bool, error) {
	chosen := []any{}
	if isGiven {
		for _, value := range splitList(given) {
			option, err := findOption(element, value)
			if err != nil {
				return nil, false, err
			}
			chosen = append(chosen, optionJSON(option))
		}
	} else {
		for i := range element.InitialOptions {
			chosen = append(chosen, optionJSON(&element.InitialOptions[i]))
		}
	}
	entry["selected_options"] = chosen
	return entry, len(chosen) > 0, nil
}

func findOption(element *elementShape, value string) (*optionShape, error) {
	options := element.allOptions()
	for i := range options {
		if options[i].Value == value {
			return &options[i], nil
		}
	}
	var offered []string
	for _, option := range options {
		offered = append(offered, option.Value)
	}
	return nil, fmt.Errorf("no option with value %q (offered: %s)", value, strings.Join(offered, ", "))
}

func optionJSON(option *optionShape) map[string]any {
	text := map[string]any{"type": "plain_text", "text": "", "emoji": true}
	if option.Text != nil {
		text["type"], text["text"] = option.Text.Type, option.Text.Text
	}
	return map[string]any{"text": text, "value": option.Value}
}

// applyViewSubmissionAckLocked does what Slack does with the ack of a view_submission.
func (s *Server) applyViewSubmissionAckLocked(env *envelope, payload json.RawMessage) {
	v, ok := s.views[env.origin.viewID]
	if !ok || v.closed {
		return
	}
	stack := s.modalStacks[v.user]
	position := slices.Index(stack, v)
	if isEmptyPayload(payload) {
		s.closeModalsLocked(v.user, position)
		return
	}
	var response struct {
		ResponseAction string            `json:"response_action"`
		Errors         map[string]string `json:"errors"`
		View           json.RawMessage   `json:"view"`
	}
	if err := json.Unmarshal(payload, &response); err != nil {
		s.protocolErrorLocked("envelope %s: view_submission ack payload is not a response: %v", env.id, err)
		return
	}
	switch response.ResponseAction {
	case "errors":
		s.showViewErrorsLocked(env, v, response.Errors)
	case "clear":
		s.closeModalsLocked(v.user, 0)
	case "update":
		content, err := parseView(response.View, "modal")
		if err == nil {
			err = s.replaceViewLocked(v, content)
		}
		if err != nil {
			s.protocolErrorLocked("envelope %s: response_action update refused: %v", env.id, err)
		}
	case "push":
		content, err := parseView(response.View, "modal")
		if err == nil {
			_, err = s.pushModalLocked(v.user, content)
		}
		if err != nil {
			s.protocolErrorLocked("envelope %s: response_action push refused: %v", env.id, err)
		}
	default:
		s.protocolErrorLocked("envelope %s: unknown response_action %q", env.id, response.ResponseAction)
	}
}

func (s *Server) showViewErrorsLocked(env *envelope, v *view, errors map[string]string) {
	if len(errors) == 0 {
		s.protocolErrorLocked("envelope %s: response_action errors without errors", env.id)
		return
	}
	for blockID := range errors {
		if !slices.ContainsFunc(v.content.blocks.shapes, func(b blockShape) bool { return b.Type == "input" && b.BlockID == blockID }) {
			s.protocolErrorLocked("envelope %s: error for %q, which is not an input block of view %s", env.id, blockID, v.id)
		}
	}
	v.errors = maps.Clone(errors)
	s.emitLocked(Event{Kind: "view_update", View: v.snapshot()})
	s.notifyLocked()
}

func isEmptyPayload(payload json.RawMessage) bool {
	trimmed := bytes.TrimSpace(payload)
	return len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) || bytes.Equal(trimmed, []byte("{}"))
}
