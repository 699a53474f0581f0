package slacksim

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/slack-go/slack"
)

// Message is what Slack shows for one message, as of the moment it was read.
type Message struct {
	ID        string // the simulator's own id, unique per message (also for ephemeral ones)
	Channel   string // channel id (the D… id for DMs)
	TS        string // "" for ephemeral messages
	ThreadTS  string // set for replies
	User      string // for ephemeral messages: the only user who sees it
	Ephemeral bool
	Text      string
	Blocks    slack.Blocks
	Metadata  *slack.SlackMetadata // when posted with metadata
	Broadcast bool                 // a thread reply also shown in the channel (reply_broadcast)
	Updates   int                  // how many times chat.update or replace_original changed it
	Deleted   bool
	Source    string // "chat.postMessage", "chat.postEphemeral", "ack", "response_url", "slack"
	// Notified is who Slack notified when the message was posted: each person it
	// mentions, and each member of each user group it mentions (<!subteam^S…>).
	Notified []string
}

// Buttons lists the labels of every button on the message, in order.
func (m Message) Buttons() []string {
	var labels []string
	for _, button := range buttonsOf(m.Blocks) {
		if button.Text != nil {
			labels = append(labels, button.Text.Text)
		}
	}
	return labels
}

// AllText is the message text plus every text in its blocks, one per line, for
// assertions on what a user reads.
func (m Message) AllText() string {
	texts := []string{}
	if m.Text != "" {
		texts = append(texts, m.Text)
	}
	for _, block := range m.Blocks.BlockSet {
		texts = append(texts, textsOfBlock(block)...)
	}
	return strings.Join(texts, "\n")
}

func buttonsOf(blocks slack.Blocks) []*slack.ButtonBlockElement {
	var buttons []*slack.ButtonBlockElement
	for _, block := range blocks.BlockSet {
		switch b := block.(type) {
		case *slack.ActionBlock:
			if b.Elements == nil {
				continue
			}
			for _, element := range b.Elements.ElementSet {
				if button, ok := element.(*slack.ButtonBlockElement); ok {
					buttons = append(buttons, button)
				}
			}
		case *slack.SectionBlock:
			if b.Accessory != nil && b.Accessory.ButtonElement != nil {
				buttons = append(buttons, b.Accessory.ButtonElement)
			}
		}
	}
	return buttons
}

func textsOfBlock(block slack.Block) []string {
	var texts []string
	addText := func(text *slack.TextBlockObject) {
		if text != nil && text.Text != "" {
			texts = append(texts, text.Text)
		}
	}
	switch b := block.(type) {
	case *slack.SectionBlock:
		addText(b.Text)
		for _, field := range b.Fields {
			addText(field)
		}
		if b.Accessory != nil && b.Accessory.ButtonElement != nil {
			addText(b.Accessory.ButtonElement.Text)
		}
	case *slack.HeaderBlock:
		addText(b.Text)
	case *slack.ContextBlock:
		for _, element := range b.ContextElements.Elements {
			if text, ok := element.(*slack.TextBlockObject); ok {
				addText(text)
			}
		}
	case *slack.MarkdownBlock:
		if b.Text != "" {
			texts = append(texts, b.Text)
		}
	case *slack.ActionBlock:
		if b.Elements != nil {
			for _, element := range b.Elements.ElementSet {
				if button, ok := element.(*slack.ButtonBlockElement); ok {
					addText(button.Text)
				}
			}
		}
	case *slack.InputBlock:
		addText(b.Label)
	}
	return texts
}

// View is a modal (or a published home tab) as the user sees it.
type View struct {
	ID, User, CallbackID, PrivateMetadata, Title string
	Type                                         string // "modal" or "home"
	ExternalID                                   string
	Blocks                                       slack.Blocks
	Errors                                       map[string]string // block_id → message, from response_action "errors"
}

// Ack is the bot's acknowledgement of one envelope.
type Ack struct {
	EnvelopeID string
	Payload    json.RawMessage // nil when the ack had no payload
	Latency    time.Duration   // from sending the envelope to receiving the ack
}

// Call is one Web API request the simulator answered (also "response_url" posts).
type Call struct {
	Method string
	Params map[string]string // form fields, or a JSON body's top-level fields (strings unquoted, others as JSON); never the token
	At     time.Time         // by Options.Now
	Error  string            // the Slack error answered, "ratelimited" or "http_<status>"; "" on success
}

// Event is one change a user could see, passed to Options.Observer.
type Event struct {
	Kind    string // "post", "update", "delete", "ephemeral", "view_open", "view_update", "view_close"
	Message Message
	View    View
}
