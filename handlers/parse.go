package handlers

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/duration"
	"github.com/gpubot/gpubot/internal/spend"
)

// Verb names what a `/gpu` command asks for.
type Verb string

const (
	VerbHelp        Verb = "help"
	VerbKeyModal    Verb = "key"
	VerbKeySet      Verb = "key set"
	VerbKeyShow     Verb = "key show"
	VerbKeyRemove   Verb = "key remove"
	VerbCreateModal Verb = "create modal"
	VerbCreate      Verb = "create"
	VerbList        Verb = "list"
	VerbListAll     Verb = "list all"
	VerbStatus      Verb = "status"
	VerbDelete      Verb = "delete"
	VerbExtend      Verb = "extend"
	VerbCancel      Verb = "cancel"
	VerbBudget      Verb = "budget"
	VerbReport      Verb = "report"
	VerbReportCSV   Verb = "report csv"
)

// Command is the parsed text of a `/gpu` command. Only the fields its Verb uses are set.
type Command struct {
	Verb         Verb
	Key          string        // key set: the pasted text
	InstanceType string        // create
	Sector       string        // create, optional
	Lifetime     time.Duration // create (optional, 0 = default) and extend
	Reason       string        // create, optional
	ID           string        // status, delete, extend, cancel
	Month        spend.Month   // report, report csv; zero for this month
}

var sectorPattern = regexp.MustCompile(`^sector_?(\d+)$`)

// ParseCommand turns the text after `/gpu`, as Slack sends it, into a Command. It
// only reads the text: whether the person may do it is decided elsewhere. What the
// Command holds is what the person typed; messages escape it where they show it.
func ParseCommand(slackText string) (Command, error) {
	text := unescapeSlack(slackText)
	fields := strings.Fields(text)
	if len(fields) == 0 {
		return Command{Verb: VerbHelp}, nil
	}
	verb, args := strings.ToLower(fields[0]), fields[1:]
	switch verb {
	case "help", "-h", "--help", "?":
		return Command{Verb: VerbHelp}, nil
	case "key", "keys":
		return parseKey(text, args)
	case "create", "new":
		return parseCreate(args)
	case "list", "ls":
		return parseList(args)
	case "status", "show", "delete", "rm", "cancel", "withdraw":
		return parseWithID(verb, args)
	case "extend":
		return parseExtend(args)
	case "budget":
		if len(args) > 0 {
			return Command{}, refusef("`/gpu budget` shows your spend this month and your budget; nothing goes after it. For another month, `/gpu report 2026-03`.")
		}
		return Command{Verb: VerbBudget}, nil
	case "report":
		return parseReport(args)
	}
	return Command{}, refusef("I don't know `/gpu %s`. Try `/gpu create 1x`, `/gpu list` or `/gpu help` for everything I can do.", echo(fields[0]))
}

func parseKey(text string, args []string) (Command, error) {
	if len(args) == 0 {
		return Command{Verb: VerbKeyModal}, nil
	}
	switch strings.ToLower(args[0]) {
	case "set", "add":
		// Keep the key text exactly as pasted after "set": a key's comment may hold spaces.
		rest := afterWords(text, 2)
		if rest == "" {
			return Command{}, refusef("Paste your SSH *public* key after `/gpu key set`, e.g. `/gpu key set ssh-ed25519 AAAA… you@laptop` (print it with `cat ~/.ssh/id_ed25519.pub`), or type `/gpu key` to paste it in a form.")
		}
		return Command{Verb: VerbKeySet, Key: rest}, nil
	case "show":
		return Command{Verb: VerbKeyShow}, nil
	case "remove", "delete", "rm":
		return Command{Verb: VerbKeyRemove}, nil
	}
	return Command{}, refusef("`/gpu key` takes `set <public key>`, `show` or `remove` (or nothing, to paste the key in a form).")
}

// unescapeSlack undoes what Slack does to a slash command's text: it always sends
// &, < and > as entities. (With should_escape off, as in the manifest, nothing else
// is changed.) Text from a modal arrives as typed and needs no such step.
func unescapeSlack(text string) string {
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(text)
}

// afterWords is text without its first n words, as typed, trimmed. Words are split
// on every kind of space, as strings.Fields splits them.
func afterWords(text string, n int) string {
	rest := strings.TrimLeftFunc(text, unicode.IsSpace)
	for range n {
		end := strings.IndexFunc(rest, unicode.IsSpace)
		if end < 0 {
			return ""
		}
		rest = strings.TrimLeftFunc(rest[end:], unicode.IsSpace)
	}
	return strings.TrimRightFunc(rest, unicode.IsSpace)
}

func parseList(args []string) (Command, error) {
	switch {
	case len(args) == 0:
		return Command{Verb: VerbList}, nil
	case len(args) == 1 && strings.EqualFold(args[0], "all"):
		return Command{Verb: VerbListAll}, nil
	}
	return Command{}, refusef("`/gpu list` shows your machines and `/gpu list all` everyone's; nothing else goes after `list`.")
}

func parseWithID(verb string, args []string) (Command, error) {
	v := VerbStatus
	switch verb {
	case "delete", "rm":
		v = VerbDelete
	case "cancel", "withdraw":
		v = VerbCancel
	}
	if len(args) != 1 && v == VerbCancel {
		return Command{}, refusef("Give one request id: `/gpu cancel <id>`. It is in the request's thread, and `/gpu list` shows it.")
	}
	if len(args) != 1 {
		return Command{}, refusef("Give one machine id: `/gpu %s <id>`. `/gpu list` shows the ids of your machines.", v)
	}
	return Command{Verb: v, ID: args[0]}, nil
}

// parseReport reads `report [csv] [YYYY-MM]`.
func parseReport(args []string) (Command, error) {
	cmd := Command{Verb: VerbReport}
	if len(args) > 0 && strings.EqualFold(args[0], "csv") {
		cmd.Verb, args = VerbReportCSV, args[1:]
	}
	usage := "`/gpu report` shows this month's spend, `/gpu report 2026-03` another month's, and `/gpu report csv 2026-03` the rows for a spreadsheet (admins)."
	switch len(args) {
	case 0:
		return cmd, nil
	case 1:
		m, err := spend.ParseMonth(args[0])
		if err != nil {
			return Command{}, refusef("`%s` is not a month I understand: write it YYYY-MM. %s", echo(args[0]), usage)
		}
		cmd.Month = m
		return cmd, nil
	}
	return Command{}, refusef("Too many words after `/gpu report`. %s", usage)
}

func parseExtend(args []string) (Command, error) {
	if len(args) != 2 {
		return Command{}, refusef("Say which machine and for how much longer: `/gpu extend <id> 2h`. `/gpu list` shows the ids of your machines.")
	}
	d, err := ParseLifetime(args[1])
	if err != nil {
		return Command{}, err
	}
	return Command{Verb: VerbExtend, ID: args[0], Lifetime: d}, nil
}

func parseCreate(args []string) (Command, error) {
	if len(args) == 0 {
		return Command{Verb: VerbCreateModal}, nil
	}
	typ, ok := InstanceTypeFromName(args[0])
	if !ok {
		return Command{}, refusef("I don't know the machine type `%s`. Use `1x` (one H100) or `8x` (eight H100s), e.g. `/gpu create 8x sector_1 for 4h training run`.", echo(args[0]))
	}
	cmd := Command{Verb: VerbCreate, InstanceType: typ}
	rest := args[1:]
	for len(rest) > 0 {
		word := strings.ToLower(rest[0])
		if m := sectorPattern.FindStringSubmatch(word); m != nil && cmd.Sector == "" {
			sector, err := parseSector(m[1])
			if err != nil {
				return Command{}, err
			}
			cmd.Sector, rest = sector, rest[1:]
			continue
		}
		if word == "for" && len(rest) > 1 && cmd.Lifetime == 0 && looksLikeDuration(rest[1]) {
			d, err := ParseLifetime(rest[1])
			if err != nil {
				return Command{}, err
			}
			cmd.Lifetime, rest = d, rest[2:]
			continue
		}
		break
	}
	cmd.Reason = strings.Join(rest, " ")
	if err := checkReason(cmd.Reason); err != nil {
		return Command{}, err
	}
	if cmd.Sector != "" && typ != fal.Type8xH100 {
		return Command{}, refusef("Sectors only apply to 8x machines (they place the 8 GPUs on one InfiniBand fabric). Drop `%s`: `/gpu create 1x`, or ask for `/gpu create 8x %s`.", cmd.Sector, cmd.Sector)
	}
	return cmd, nil
}

// maxReason keeps a reason readable on a card and within Slack's block limits.
const maxReason = 300

func checkReason(reason string) error {
	if n := utf8.RuneCountInString(reason); n > maxReason {
		return refusef("Keep the reason under %d characters (it has %d): a line the approvers can read at a glance.", maxReason, n)
	}
	return nil
}

// parseSector turns the number in `sector_1` (or `sector1`) into fal's sector name.
func parseSector(n string) (string, error) {
	i, err := strconv.Atoi(n)
	sector := "sector_" + strconv.Itoa(i)
	if err != nil || !fal.ValidSector(sector) {
		return "", refusef("There are %d sectors: %s.", len(fal.Sectors()), codeList(fal.Sectors()))
	}
	return sector, nil
}

// InstanceTypeFromName accepts fal's full type names and the short names people type:
// `1x` or `1`, `8x` or `8`, and `1xh100` and the like.
func InstanceTypeFromName(name string) (string, bool) {
	name = strings.ToLower(name)
	for _, t := range fal.InstanceTypes() {
		count := gpuCount(t)
		short := strings.ToLower(strings.ReplaceAll(ShortType(t), " ", ""))
		if name == t || name == short || name == count || name == strings.TrimSuffix(count, "x") {
			return t, true
		}
	}
	return "", false
}

// ShortType is how a type is shown to people: gpu_8x_h100_sxm5 is "8x H100".
func ShortType(instanceType string) string {
	parts := strings.Split(instanceType, "_")
	if len(parts) < 3 || parts[0] != "gpu" {
		return instanceType
	}
	return parts[1] + " " + strings.ToUpper(parts[2])
}

// gpuCount is the "8x" in gpu_8x_h100_sxm5.
func gpuCount(instanceType string) string {
	count, _, _ := strings.Cut(ShortType(instanceType), " ")
	return count
}

// codeList shows names as `a`, `b` and `c`.
func codeList(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = "`" + n + "`"
	}
	if len(quoted) < 2 {
		return strings.Join(quoted, "")
	}
	return strings.Join(quoted[:len(quoted)-1], ", ") + " and " + quoted[len(quoted)-1]
}

// looksLikeDuration tells `for 4h` (a lifetime, even one too long) from `for the demo`
// or `for 0 downtime` (a reason): a lifetime ends in its unit.
func looksLikeDuration(s string) bool {
	if last, _ := utf8.DecodeLastRuneInString(s); !unicode.IsLetter(last) {
		return false
	}
	_, err := duration.Parse(s)
	return err == nil || errors.Is(err, duration.ErrTooLong)
}

// ParseLifetime reads a lifetime such as 30m, 4h, 1h30m or 2d, rounded to the minute.
func ParseLifetime(s string) (time.Duration, error) {
	d, err := duration.Parse(s)
	if errors.Is(err, duration.ErrTooLong) {
		return 0, refusef("`%s` is too long: the longest I accept is %s.", echo(s), duration.Format(duration.Max))
	}
	if err != nil || d < time.Minute {
		return 0, refusef("`%s` is not a lifetime I understand: use minutes, hours or days, e.g. `90m`, `4h`, `1h30m` or `2d`.", echo(s))
	}
	return d.Round(time.Minute), nil
}

// FormatDuration shows a duration to people, to the minute: 4h, 1h30m, 2d3h, 45m.
func FormatDuration(d time.Duration) string {
	if d < time.Minute {
		return "under a minute"
	}
	return duration.Format(d.Round(time.Minute))
}

// echo is a word the person typed as a refusal repeats it: short, and escaped so it
// can neither mention anyone nor break the message.
func echo(word string) string { return escape(clip(word, 40)) }

// clip keeps echoed user input short, so a reply never grows past Slack's limits.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
