// Package console runs the real gpubot against in-process stand-ins for Slack
// (slacksim) and fal (falsim), with a prompt where a person, or a script on standard
// input, types `/gpu` commands as any user, clicks buttons and fills modals.
package console

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/bot/slacksim"
	"github.com/gpubot/gpubot/fal/falsim"
	"github.com/gpubot/gpubot/handlers"
	"github.com/gpubot/gpubot/internal/app"
	"github.com/gpubot/gpubot/internal/config"
)

// Options are the console's inputs.
type Options struct {
	Getenv func(string) string
	In     io.Reader
	Out    io.Writer
	// Log receives the bot's logs as readable text (standard error), at LOG_LEVEL or
	// warn, so they do not drown the conversation; nil discards them.
	Log     io.Writer
	Version string
	// ReadyAfter is how long a simulated machine takes to become ready (default 3s).
	ReadyAfter time.Duration
}

// The simulated workspace: who is who, and the channels.
var (
	people = []person{
		{"alice", "UALICE", "an engineer"},
		{"bob", "UBOB", "an approver"},
		{"carol", "UCAROL", "an approver"},
		{"admin", "UADMIN", "an admin"},
	}
	channels = map[string]string{"general": "CGENERAL", "gpu-approvals": "CAPPROVALS", "gpu-notices": "CNOTIFY"}
)

type person struct{ name, id, role string }

const (
	botToken = "xoxb-console-bot-token"
	appToken = "xapp-console-app-token"
	falKey   = "console-fal-admin-key"
	waitMax  = 60 * time.Second
)

// Run runs the console until its input ends, `quit`, or ctx is done.
func Run(ctx context.Context, opts Options) error {
	if opts.ReadyAfter == 0 {
		opts.ReadyAfter = 3 * time.Second
	}
	c := &console{out: opts.Out, user: people[0], channel: "general"}
	sim := slacksim.New(slacksim.Options{BotToken: botToken, AppToken: appToken, Observer: c.show})
	defer sim.Close()
	for _, p := range people {
		sim.AddUser(p.id, p.name)
	}
	for name, id := range channels {
		sim.AddChannel(id, name, true)
	}
	fs := falsim.New(falsim.Options{APIKey: falKey, ProvisionAfter: opts.ReadyAfter / 3, ReadyAfter: opts.ReadyAfter})
	defer fs.Close()
	c.sim = sim

	dbPath := opts.Getenv("DB_PATH")
	if dbPath == "" {
		dir, err := os.MkdirTemp("", "gpubot-console-")
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
		defer os.RemoveAll(dir)
		dbPath = filepath.Join(dir, "gpubot.db")
	}
	b, err := app.New(consoleConfig(sim, fs, dbPath), app.Options{Version: opts.Version, Logger: consoleLogger(opts)})
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	connectCtx, cancelConnect := context.WithTimeout(ctx, 10*time.Second)
	defer cancelConnect()
	if err := sim.WaitConnected(connectCtx); err != nil {
		return fmt.Errorf("console: the bot did not connect: %w", err)
	}
	c.printf("%s", intro)
	loopErr := c.loop(ctx, opts.In)
	cancel()
	if err := <-done; err != nil && loopErr == nil {
		loopErr = err
	}
	return loopErr
}

const intro = `gpubot console: the real bot, with a simulated Slack and a simulated fal.
You are alice in #general. bob and carol approve; admin is an admin. Type "help" for commands.
`

const help = `  /gpu …                 a slash command, as the current user in the current channel
  as <name>              become alice, bob, carol or admin
  in #<channel>          type in #general, #gpu-approvals or #gpu-notices
  click <label>          press the newest button with that label that you can see (or on your Home tab)
  home                   open your Home tab: your machines and key; approvers' and admins' parts
  shortcut               the "Request a GPU" shortcut: opens the create form
  submit [k=v …]         submit your open form; values like reason="no budget" (see the form's fields)
  wait <text>            wait until gpubot posts a message containing text (for scripts)
  sleep <duration>       pause, e.g. sleep 2s
  quit
`

func consoleLogger(opts Options) *slog.Logger {
	if opts.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	level := slog.LevelWarn
	if name := opts.Getenv("LOG_LEVEL"); name != "" {
		_ = level.UnmarshalText([]byte(name))
	}
	return slog.New(slog.NewTextHandler(opts.Log, &slog.HandlerOptions{Level: level}))
}

func consoleConfig(sim *slacksim.Server, fs *falsim.Server, dbPath string) config.Config {
	return config.Config{
		SlackBotToken: botToken, SlackAppToken: appToken, SlackAPIURL: sim.APIURL(),
		FalAdminAPIKey: falKey, FalAPIURL: fs.URL(), DBPath: dbPath,
		ApprovalChannel: "CAPPROVALS", NotifyChannel: "CNOTIFY",
		Approvers: []string{"UBOB", "UCAROL"}, Admins: []string{"UADMIN"},
		ApprovalRequired: []string{"gpu_8x_h100_sxm5"},
		DefaultLifetime:  8 * time.Hour, MaxLifetime: 72 * time.Hour, ReminderBefore: 30 * time.Minute,
		HourlyPrices: map[string]float64{"gpu_1x_h100_sxm5": 2.5, "gpu_8x_h100_sxm5": 20},
		PollInterval: 500 * time.Millisecond,
	}
}

type console struct {
	sim     *slacksim.Server
	shown   atomic.Int64 // events printed so far
	mu      sync.Mutex
	out     io.Writer
	prompt  string // shown while a person at a terminal is typing; "" otherwise
	user    person
	channel string
}

// event prints what the bot did. At a terminal it clears the prompt line first and
// shows the prompt again after, so output never lands in the middle of typing.
func (c *console) event(text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prompt == "" {
		fmt.Fprintln(c.out, text)
		return
	}
	fmt.Fprintf(c.out, "\r\033[K%s\n%s", text, c.prompt)
}

func (c *console) setPrompt(prompt string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prompt = prompt
	fmt.Fprint(c.out, prompt)
}

func (c *console) clearPrompt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prompt = ""
}

func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, format, args...)
}

// loop reads commands. At a terminal it prompts; from a script it echoes each command
// after the prompt instead, so the transcript reads like a session.
func (c *console) loop(ctx context.Context, in io.Reader) error {
	interactive := isTerminal(in)
	scanner := bufio.NewScanner(in)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for {
		if interactive {
			c.setPrompt(fmt.Sprintf("%s in #%s> ", c.user.name, c.channel))
		}
		scanned := scanner.Scan()
		c.clearPrompt()
		if !scanned {
			return scanner.Err()
		}
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !interactive {
			c.printf("%s in #%s> %s\n", c.user.name, c.channel, line)
		}
		if line == "quit" || line == "exit" {
			return nil
		}
		if err := c.do(ctx, line); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.printf("  ! %v\n", err)
		}
		c.settle()
	}
}

func (c *console) do(ctx context.Context, line string) error {
	word, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	ctx, cancel := context.WithTimeout(ctx, waitMax)
	defer cancel()
	switch {
	case strings.HasPrefix(line, "/gpu"):
		_, err := c.sim.SlashCommand(ctx, c.user.id, channels[c.channel], "/gpu", strings.TrimSpace(strings.TrimPrefix(line, "/gpu")))
		return err
	case word == "as":
		for _, p := range people {
			if p.name == rest {
				c.user = p
				c.printf("  (you are now %s, %s)\n", p.name, p.role)
				return nil
			}
		}
		return fmt.Errorf("no one called %q here: alice, bob, carol or admin", rest)
	case word == "in":
		name := strings.TrimPrefix(rest, "#")
		if _, ok := channels[name]; !ok {
			return fmt.Errorf("no channel %q: #general, #gpu-approvals or #gpu-notices", rest)
		}
		c.channel = name
		return nil
	case word == "click":
		return c.click(ctx, rest)
	case word == "home":
		return c.openHome(ctx)
	case word == "shortcut":
		_, err := c.sim.Shortcut(ctx, c.user.id, handlers.ShortcutCreate)
		return err
	case word == "submit":
		return c.submit(ctx, rest)
	case word == "wait":
		return c.wait(ctx, rest)
	case word == "sleep":
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 || d > waitMax {
			return fmt.Errorf("sleep takes a duration up to %s, like 2s", waitMax)
		}
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		return nil
	case word == "help":
		c.printf("%s", help)
		return nil
	}
	return fmt.Errorf("I don't know %q; type help", word)
}

// click presses the newest button labelled label on a message the current user can see.
func (c *console) click(ctx context.Context, label string) error {
	msgs := c.sim.Messages()
	for _, m := range slices.Backward(msgs) {
		if m.Deleted || (m.Ephemeral && m.User != c.user.id) || !slices.Contains(m.Buttons(), label) {
			continue
		}
		_, err := c.sim.Click(ctx, c.user.id, m, label)
		return err
	}
	if home, ok := c.sim.HomeView(c.user.id); ok {
		if button, found := buttonLabelled(home.Blocks, label); found {
			_, err := c.sim.ClickHome(ctx, c.user.id, button.ActionID, button.Value)
			return err
		}
	}
	return fmt.Errorf("no button %q that %s can see", label, c.user.name)
}

// openHome opens the current person's Home tab and waits until gpubot has published
// it, so a script's next line can press its buttons.
func (c *console) openHome(ctx context.Context) error {
	before := len(c.sim.HomePublishes(c.user.id))
	if _, err := c.sim.OpenHome(ctx, c.user.id); err != nil {
		return err
	}
	if err := c.sim.WaitUntil(ctx, func() bool { return len(c.sim.HomePublishes(c.user.id)) > before }); err != nil {
		return fmt.Errorf("gpubot did not publish your Home tab within %s", waitMax)
	}
	return nil
}

// buttonLabelled is the first button labelled label among blocks: on a Home tab, the
// one of the newest machine.
func buttonLabelled(blocks slack.Blocks, label string) (*slack.ButtonBlockElement, bool) {
	for _, block := range blocks.BlockSet {
		var elements []slack.BlockElement
		switch b := block.(type) {
		case *slack.ActionBlock:
			elements = b.Elements.ElementSet
		case *slack.SectionBlock:
			if b.Accessory != nil && b.Accessory.ButtonElement != nil {
				elements = []slack.BlockElement{b.Accessory.ButtonElement}
			}
		}
		for _, e := range elements {
			if button, ok := e.(*slack.ButtonBlockElement); ok && button.Text != nil && button.Text.Text == label {
				return button, true
			}
		}
	}
	return nil, false
}

var fieldPattern = regexp.MustCompile(`(\w+)=("([^"]*)"|\S+)`)

func (c *console) submit(ctx context.Context, args string) error {
	if _, ok := c.sim.OpenView(c.user.id); !ok {
		return errors.New("you have no form open")
	}
	values := map[string]string{}
	for _, m := range fieldPattern.FindAllStringSubmatch(args, -1) {
		value := m[2]
		if strings.HasPrefix(value, `"`) {
			value = m[3]
		}
		values[m[1]] = value
	}
	if _, err := c.sim.SubmitView(ctx, c.user.id, values); err != nil {
		return err
	}
	for field, problem := range c.sim.ViewErrors(c.user.id) {
		c.printf("  ! the form says, at %s: %s\n", field, plainText(problem))
	}
	return nil
}

func (c *console) wait(ctx context.Context, text string) error {
	_, err := c.sim.WaitMessage(ctx, func(m slacksim.Message) bool { return strings.Contains(plainText(m.AllText()), text) })
	if err != nil {
		return fmt.Errorf("gpubot said nothing with %q within %s", text, waitMax)
	}
	return nil
}

// settle waits, briefly, until the bot has gone quiet, so what a command caused is
// printed before the next prompt.
func (c *console) settle() {
	const quiet, most = 60 * time.Millisecond, time.Second
	deadline := time.Now().Add(most)
	for time.Now().Before(deadline) {
		before := c.shown.Load()
		time.Sleep(quiet)
		if c.shown.Load() == before {
			return
		}
	}
}

// show prints what a Slack user would see, as it happens.
func (c *console) show(e slacksim.Event) {
	defer c.shown.Add(1)
	switch e.Kind {
	case "post", "ephemeral", "update":
		c.event(c.render(e.Kind, e.Message))
	case "view_open", "view_update":
		if e.View.Type == "home" {
			c.event(renderHome(e.View))
			return
		}
		c.event(renderView(e.View))
	case "view_close":
		c.event(fmt.Sprintf("  (%s's form closed)", nameOf(e.View.User)))
	}
}

func (c *console) render(kind string, m slacksim.Message) string {
	where := "#" + channelName(m.Channel)
	if strings.HasPrefix(m.Channel, "D") {
		where = "DM"
	}
	if m.ThreadTS != "" {
		where += " › thread"
	}
	if m.Ephemeral {
		where += ", only " + nameOf(m.User) + " sees"
	}
	verb := "gpubot"
	if kind == "update" {
		verb = "gpubot (edited)"
	}
	body := strings.ReplaceAll(plainText(blocksText(m)), "\n", "\n      ")
	out := fmt.Sprintf("  [%s] %s: %s", where, verb, body)
	if buttons := m.Buttons(); len(buttons) > 0 {
		out += "\n      [" + strings.Join(buttons, "] [") + "]"
	}
	return out
}

// blocksText is the message as read: its blocks' text (buttons are shown apart), or the
// plain text when it has no blocks.
func blocksText(m slacksim.Message) string {
	var shown slack.Blocks
	for _, block := range m.Blocks.BlockSet {
		if block.BlockType() != slack.MBTAction {
			shown.BlockSet = append(shown.BlockSet, block)
		}
	}
	if all := (slacksim.Message{Blocks: shown}).AllText(); all != "" {
		return all
	}
	return m.Text
}

// renderHome shows a Home tab as its owner reads it, with its buttons apart.
func renderHome(v slacksim.View) string {
	m := slacksim.Message{Blocks: v.Blocks}
	body := strings.ReplaceAll(plainText(blocksText(m)), "\n", "\n      ")
	out := fmt.Sprintf("  [Home of %s] %s", nameOf(v.User), body)
	if buttons := m.Buttons(); len(buttons) > 0 {
		out += "\n      [" + strings.Join(buttons, "] [") + "]"
	}
	return out
}

func renderView(v slacksim.View) string {
	var fields []string
	for _, block := range v.Blocks.BlockSet {
		if id := block.ID(); id != "" && block.BlockType() == "input" {
			fields = append(fields, id)
		}
	}
	return fmt.Sprintf("  (form %q open for %s; fields: %s; type: submit %s)", v.Title, nameOf(v.User), strings.Join(fields, ", "), exampleSubmit(fields))
}

func exampleSubmit(fields []string) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = f + `="…"`
	}
	return strings.Join(parts, " ")
}

var (
	userMention    = regexp.MustCompile(`<@(U[A-Z0-9]+)>`)
	channelMention = regexp.MustCompile(`<#(C[A-Z0-9]+)(\|[^>]*)?>`)
	dateToken      = regexp.MustCompile(`<!date\^\d+\^[^|>]*\|([^>]*)>`)
)

// plainText turns Slack's markup into what a person reads.
func plainText(s string) string {
	s = userMention.ReplaceAllStringFunc(s, func(m string) string { return "@" + nameOf(userMention.FindStringSubmatch(m)[1]) })
	s = channelMention.ReplaceAllStringFunc(s, func(m string) string { return "#" + channelName(channelMention.FindStringSubmatch(m)[1]) })
	s = dateToken.ReplaceAllString(s, "$1")
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(s)
}

func nameOf(id string) string {
	for _, p := range people {
		if p.id == id {
			return p.name
		}
	}
	return id
}

func channelName(id string) string {
	for name, cid := range channels {
		if cid == id {
			return name
		}
	}
	return id
}

// isTerminal says whether in is a terminal a person types at.
func isTerminal(in io.Reader) bool {
	f, ok := in.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
