package slacksim

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/slack-go/slack"
)

// Slack's Block Kit and message limits (docs.slack.dev, "Block Kit" reference pages).
const (
	maxMessageTextChars  = 40000
	maxMessageBlocks     = 50
	maxModalBlocks       = 100
	maxSectionTextChars  = 3000
	maxTextObjectChars   = 3000 // any text object, e.g. a context block's element
	maxInputChars        = 3000 // the most a plain_text_input's max_length may allow
	maxSectionFields     = 10
	maxFieldChars        = 2000
	maxHeaderChars       = 150
	maxMarkdownChars     = 12000
	maxActionsElements   = 25
	maxContextElements   = 10
	maxButtonTextChars   = 75
	maxButtonValueChars  = 2000
	maxURLChars          = 3000
	maxIDChars           = 255
	maxInputLabelChars   = 2000
	maxOptions           = 100
	maxOptionTextChars   = 75
	maxOptionValueChars  = 150
	maxModalTitleChars   = 24
	maxPrivateMetadata   = 3000
	maxViewCallbackChars = 255
)

// apiError is a Slack Web API error: the `error` code plus the explanations Slack puts
// in response_metadata.messages.
type apiError struct {
	code     string
	messages []string
}

func (e *apiError) Error() string {
	if len(e.messages) == 0 {
		return e.code
	}
	return e.code + ": " + strings.Join(e.messages, "; ")
}

func slackError(code string, messages ...string) *apiError {
	return &apiError{code: code, messages: messages}
}

type textShape struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type optionShape struct {
	Text  *textShape `json:"text"`
	Value string     `json:"value"`
}

type elementShape struct {
	Type         string        `json:"type"`
	ActionID     string        `json:"action_id"`
	Text         *textShape    `json:"text"`
	Value        string        `json:"value"`
	URL          string        `json:"url"`
	Options      []optionShape `json:"options"`
	OptionGroups []struct {
		Options []optionShape `json:"options"`
	} `json:"option_groups"`
	InitialOption  *optionShape  `json:"initial_option"`
	InitialOptions []optionShape `json:"initial_options"`
	InitialValue   string        `json:"initial_value"`
	MinLength      *int          `json:"min_length"`
	MaxLength      *int          `json:"max_length"`
}

// allOptions lists the options of a select or radio group, grouped or not.
func (e *elementShape) allOptions() []optionShape {
	options := append([]optionShape(nil), e.Options...)
	for _, group := range e.OptionGroups {
		options = append(options, group.Options...)
	}
	return options
}

type blockShape struct {
	Type      string            `json:"type"`
	BlockID   string            `json:"block_id"`
	Text      json.RawMessage   `json:"text"`
	Fields    []textShape       `json:"fields"`
	Accessory *elementShape     `json:"accessory"`
	Elements  []json.RawMessage `json:"elements"`
	Element   *elementShape     `json:"element"`
	Label     *textShape        `json:"label"`
	Optional  bool              `json:"optional"`
}

// blockSet is a validated, normalized list of blocks in the three forms the simulator
// needs: JSON to hand back to the bot, shapes to look things up, slack.Blocks for tests.
type blockSet struct {
	raw    json.RawMessage
	shapes []blockShape
	parsed slack.Blocks
}

// surface is where blocks are shown; limits and error codes differ between them.
type surface struct {
	maxBlocks int
	errorCode string
}

var (
	messageSurface = surface{maxBlocks: maxMessageBlocks, errorCode: "invalid_blocks"}
	modalSurface   = surface{maxBlocks: maxModalBlocks, errorCode: "invalid_arguments"}
	homeSurface    = surface{maxBlocks: maxModalBlocks, errorCode: "invalid_arguments"}
)

var knownBlockTypes = map[string]bool{
	"section": true, "divider": true, "image": true, "actions": true, "context": true,
	"header": true, "input": true, "file": true, "rich_text": true, "video": true,
	"markdown": true, "table": true,
}

// elementsWithoutActionID are element types that are never interactive.
var elementsWithoutActionID = map[string]bool{"image": true, "plain_text": true, "mrkdwn": true}

// parseBlocks normalizes and validates a blocks JSON array for a surface.
func parseBlocks(raw []byte, where surface) (blockSet, *apiError) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return blockSet{raw: json.RawMessage("[]")}, nil
	}
	normalized, err := normalizeBlocks(trimmed)
	if err != nil {
		return blockSet{}, slackError(where.errorCode, problem("failed to parse blocks: "+err.Error(), "/blocks"))
	}
	var shapes []blockShape
	if err := json.Unmarshal(normalized, &shapes); err != nil {
		return blockSet{}, slackError(where.errorCode, problem("invalid block: "+err.Error(), "/blocks"))
	}
	if problems := validateBlocks(shapes, where.maxBlocks); len(problems) > 0 {
		return blockSet{}, slackError(where.errorCode, problems...)
	}
	var parsed slack.Blocks
	if err := json.Unmarshal(normalized, &parsed); err != nil {
		return blockSet{}, slackError(where.errorCode, problem("invalid block: "+err.Error(), "/blocks"))
	}
	return blockSet{raw: normalized, shapes: shapes, parsed: parsed}, nil
}

// normalizeBlocks gives every block a block_id and every interactive element an
// action_id, as Slack does when it stores a message or view. The generated ids are
// derived from the block's content and position, so the same blocks always get the
// same ids (stable golden files).
func normalizeBlocks(raw []byte) (json.RawMessage, error) {
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var blocks []map[string]any
	if err := decoder.Decode(&blocks); err != nil {
		return nil, err
	}
	if decoder.More() {
		return nil, fmt.Errorf("trailing data after the blocks array")
	}
	for i, block := range blocks {
		if block == nil {
			return nil, fmt.Errorf("block %d is null", i)
		}
		if _, ok := block["type"].(string); !ok {
			return nil, fmt.Errorf("block %d has no type", i)
		}
		if id, ok := block["block_id"].(string); !ok || id == "" {
			block["block_id"] = generatedID(i, block)
		}
		giveActionID(block["element"], i, 0)
		giveActionID(block["accessory"], i, 0)
		if block["type"] == "actions" {
			elements, _ := block["elements"].([]any)
			for j, element := range elements {
				giveActionID(element, i, j)
			}
		}
	}
	return json.Marshal(blocks)
}

func giveActionID(value any, blockIndex, elementIndex int) {
	element, ok := value.(map[string]any)
	if !ok {
		return
	}
	kind, _ := element["type"].(string)
	if elementsWithoutActionID[kind] {
		return
	}
	if id, ok := element["action_id"].(string); !ok || id == "" {
		element["action_id"] = generatedID(blockIndex*100+elementIndex, element)
	}
}

func generatedID(position int, content any) string {
	encoded, _ := json.Marshal(content)
	sum := sha256.Sum256(fmt.Appendf(encoded, "#%d", position))
	return base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])[:5]
}

func validateBlocks(blocks []blockShape, maxBlocks int) []string {
	var problems []string
	if len(blocks) > maxBlocks {
		problems = append(problems, problem(fmt.Sprintf("no more than %d items allowed", maxBlocks), "/blocks"))
	}
	seenBlockIDs := map[string]bool{}
	for i := range blocks {
		block := &blocks[i]
		at := fmt.Sprintf("/blocks/%d", i)
		if seenBlockIDs[block.BlockID] {
			problems = append(problems, problem("duplicate block_id "+block.BlockID, at+"/block_id"))
		}
		seenBlockIDs[block.BlockID] = true
		problems = append(problems, checkLength(block.BlockID, 1, maxIDChars, at+"/block_id")...)
		problems = append(problems, validateBlock(block, at)...)
	}
	return problems
}

func validateBlock(block *blockShape, at string) []string {
	switch block.Type {
	case "section":
		return validateSection(block, at)
	case "header":
		return validateHeader(block, at)
	case "actions":
		return validateActions(block, at)
	case "context":
		return validateContext(block, at)
	case "input":
		return validateInput(block, at)
	case "markdown":
		var text string
		if err := json.Unmarshal(block.Text, &text); err != nil {
			return []string{problem("text must be a string", at+"/text")}
		}
		return checkLength(text, 1, maxMarkdownChars, at+"/text")
	default:
		if !knownBlockTypes[block.Type] {
			return []string{problem("unknown block type "+block.Type, at+"/type")}
		}
		return nil
	}
}

func validateSection(block *blockShape, at string) []string {
	var problems []string
	hasText := len(block.Text) > 0 && string(block.Text) != "null"
	if !hasText && len(block.Fields) == 0 {
		problems = append(problems, problem("must provide text or fields", at))
	}
	if hasText {
		var text textShape
		if err := json.Unmarshal(block.Text, &text); err != nil {
			return append(problems, problem("text must be a text object", at+"/text"))
		}
		problems = append(problems, checkTextObject(&text, false, 1, maxSectionTextChars, at+"/text")...)
	}
	if len(block.Fields) > maxSectionFields {
		problems = append(problems, problem(fmt.Sprintf("no more than %d items allowed", maxSectionFields), at+"/fields"))
	}
	for j := range block.Fields {
		problems = append(problems, checkTextObject(&block.Fields[j], false, 1, maxFieldChars, fmt.Sprintf("%s/fields/%d", at, j))...)
	}
	if block.Accessory != nil {
		problems = append(problems, validateElement(block.Accessory, at+"/accessory")...)
	}
	return problems
}

func validateContext(block *blockShape, at string) []string {
	if len(block.Elements) == 0 || len(block.Elements) > maxContextElements {
		return []string{problem(fmt.Sprintf("must have between 1 and %d elements", maxContextElements), at+"/elements")}
	}
	var problems []string
	for j, raw := range block.Elements {
		var text textShape
		if json.Unmarshal(raw, &text) != nil || text.Type != "mrkdwn" && text.Type != "plain_text" {
			continue // an image
		}
		problems = append(problems, checkTextObject(&text, false, 1, maxTextObjectChars, fmt.Sprintf("%s/elements/%d", at, j))...)
	}
	return problems
}

func validateHeader(block *blockShape, at string) []string {
	var text textShape
	if len(block.Text) == 0 || json.Unmarshal(block.Text, &text) != nil {
		return []string{problem("header needs a plain_text text object", at+"/text")}
	}
	return checkTextObject(&text, true, 1, maxHeaderChars, at+"/text")
}

func validateActions(block *blockShape, at string) []string {
	if len(block.Elements) == 0 || len(block.Elements) > maxActionsElements {
		return []string{problem(fmt.Sprintf("must have between 1 and %d elements", maxActionsElements), at+"/elements")}
	}
	var problems []string
	seenActionIDs := map[string]bool{}
	for j, raw := range block.Elements {
		where := fmt.Sprintf("%s/elements/%d", at, j)
		var element elementShape
		if err := json.Unmarshal(raw, &element); err != nil {
			problems = append(problems, problem("invalid element: "+err.Error(), where))
			continue
		}
		if seenActionIDs[element.ActionID] {
			problems = append(problems, problem("duplicate action_id "+element.ActionID, where+"/action_id"))
		}
		seenActionIDs[element.ActionID] = true
		problems = append(problems, validateElement(&element, where)...)
	}
	return problems
}

func validateInput(block *blockShape, at string) []string {
	var problems []string
	if block.Label == nil {
		problems = append(problems, problem("missing required field: label", at))
	} else {
		problems = append(problems, checkTextObject(block.Label, true, 1, maxInputLabelChars, at+"/label")...)
	}
	if block.Element == nil {
		return append(problems, problem("missing required field: element", at))
	}
	return append(problems, validateElement(block.Element, at+"/element")...)
}

func validateElement(element *elementShape, at string) []string {
	problems := checkLength(element.ActionID, 0, maxIDChars, at+"/action_id")
	switch element.Type {
	case "button":
		if element.Text == nil {
			return append(problems, problem("missing required field: text", at))
		}
		problems = append(problems, checkTextObject(element.Text, true, 1, maxButtonTextChars, at+"/text")...)
		problems = append(problems, checkLength(element.Value, 0, maxButtonValueChars, at+"/value")...)
		problems = append(problems, checkLength(element.URL, 0, maxURLChars, at+"/url")...)
	case "plain_text_input":
		problems = append(problems, validateInputLengths(element, at)...)
	case "static_select", "multi_static_select", "radio_buttons", "checkboxes", "overflow":
		options := element.allOptions()
		if len(options) > maxOptions {
			problems = append(problems, problem(fmt.Sprintf("no more than %d items allowed", maxOptions), at+"/options"))
		}
		for k := range options {
			where := fmt.Sprintf("%s/options/%d", at, k)
			if options[k].Text == nil {
				problems = append(problems, problem("missing required field: text", where))
				continue
			}
			problems = append(problems, checkLength(options[k].Text.Text, 1, maxOptionTextChars, where+"/text/text")...)
			problems = append(problems, checkLength(options[k].Value, 1, maxOptionValueChars, where+"/value")...)
		}
	}
	return problems
}

// validateInputLengths checks a text input's min_length and max_length, which
// Slack's client enforces while the user types.
func validateInputLengths(element *elementShape, at string) []string {
	var problems []string
	if element.MaxLength != nil && (*element.MaxLength < 1 || *element.MaxLength > maxInputChars) {
		problems = append(problems, problem(fmt.Sprintf("max_length must be between 1 and %d", maxInputChars), at+"/max_length"))
	}
	if element.MinLength != nil && (*element.MinLength < 0 || *element.MinLength > maxInputChars) {
		problems = append(problems, problem(fmt.Sprintf("min_length must be between 0 and %d", maxInputChars), at+"/min_length"))
	}
	if element.MinLength != nil && element.MaxLength != nil && *element.MinLength > *element.MaxLength {
		problems = append(problems, problem("min_length must not exceed max_length", at+"/min_length"))
	}
	return problems
}

func checkTextObject(text *textShape, plainOnly bool, minChars, maxChars int, at string) []string {
	switch {
	case text.Type == "plain_text":
	case text.Type == "mrkdwn" && !plainOnly:
	case plainOnly:
		return []string{problem("must be plain_text", at+"/type")}
	default:
		return []string{problem("must be plain_text or mrkdwn", at+"/type")}
	}
	return checkLength(text.Text, minChars, maxChars, at+"/text")
}

func checkLength(value string, minChars, maxChars int, at string) []string {
	n := utf8.RuneCountInString(value)
	if n < minChars {
		return []string{problem(fmt.Sprintf("must be more than %d characters", minChars-1), at)}
	}
	if n > maxChars {
		return []string{problem(fmt.Sprintf("must be less than %d characters", maxChars+1), at)}
	}
	return nil
}

// problem formats one explanation the way Slack writes them in response_metadata.
func problem(message, at string) string {
	return "[ERROR] " + message + " [json-pointer:" + at + "]"
}

// checkMessageText applies the message text limit.
func checkMessageText(text string) *apiError {
	if utf8.RuneCountInString(text) > maxMessageTextChars {
		return slackError("msg_too_long")
	}
	return nil
}
