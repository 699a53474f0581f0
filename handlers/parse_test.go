package handlers

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/internal/duration"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		text string
		want Command
	}{
		{"", Command{Verb: VerbHelp}},
		{"help", Command{Verb: VerbHelp}},
		{"key", Command{Verb: VerbKeyModal}},
		{"key set ssh-ed25519 AAAA me@laptop", Command{Verb: VerbKeySet, Key: "ssh-ed25519 AAAA me@laptop"}},
		{"KEY set  ssh-ed25519 AAAA my laptop key ", Command{Verb: VerbKeySet, Key: "ssh-ed25519 AAAA my laptop key"}},
		{"keys add ssh-rsa BBBB", Command{Verb: VerbKeySet, Key: "ssh-rsa BBBB"}},
		{"key show", Command{Verb: VerbKeyShow}},
		{"key remove", Command{Verb: VerbKeyRemove}},
		{"create", Command{Verb: VerbCreateModal}},
		{"create 1x", Command{Verb: VerbCreate, InstanceType: fal.Type1xH100}},
		{"create 8x sector_1", Command{Verb: VerbCreate, InstanceType: fal.Type8xH100, Sector: "sector_1"}},
		{"create gpu_8x_h100_sxm5 sector_3 for 4h fine-tuning run", Command{Verb: VerbCreate, InstanceType: fal.Type8xH100, Sector: "sector_3", Lifetime: 4 * time.Hour, Reason: "fine-tuning run"}},
		{"create 8x for 1h30m sector_2 eval", Command{Verb: VerbCreate, InstanceType: fal.Type8xH100, Sector: "sector_2", Lifetime: 90 * time.Minute, Reason: "eval"}},
		{"create 1x for 2d", Command{Verb: VerbCreate, InstanceType: fal.Type1xH100, Lifetime: 48 * time.Hour}},
		{"create 1x for 1.5d", Command{Verb: VerbCreate, InstanceType: fal.Type1xH100, Lifetime: 36 * time.Hour}},
		{"create 1x for 1D12H", Command{Verb: VerbCreate, InstanceType: fal.Type1xH100, Lifetime: 36 * time.Hour}},
		{"create 1x for the demo", Command{Verb: VerbCreate, InstanceType: fal.Type1xH100, Reason: "for the demo"}},
		{"create 1x for 0 downtime", Command{Verb: VerbCreate, InstanceType: fal.Type1xH100, Reason: "for 0 downtime"}},
		{"create 1x for 12 people", Command{Verb: VerbCreate, InstanceType: fal.Type1xH100, Reason: "for 12 people"}},
		{"list", Command{Verb: VerbList}},
		{"list all", Command{Verb: VerbListAll}},
		{"status abcd1234", Command{Verb: VerbStatus, ID: "abcd1234"}},
		{"delete inst_x", Command{Verb: VerbDelete, ID: "inst_x"}},
		{"cancel 3f2a9c1e", Command{Verb: VerbCancel, ID: "3f2a9c1e"}},
		{"withdraw 3f2a9c1e", Command{Verb: VerbCancel, ID: "3f2a9c1e"}},
		{"extend abcd1234 2h", Command{Verb: VerbExtend, ID: "abcd1234", Lifetime: 2 * time.Hour}},
	}
	for _, tt := range tests {
		got, err := ParseCommand(tt.text)
		if err != nil {
			t.Errorf("ParseCommand(%q): %v", tt.text, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseCommand(%q) = %+v, want %+v", tt.text, got, tt.want)
		}
	}
}

func TestParseCommandRefusesWithAHint(t *testing.T) {
	tests := []struct{ text, hint string }{
		{"launch 8x", "I don't know `/gpu launch`"},
		{"create 3x", "I don't know the machine type `3x`"},
		{"create 1x sector_1", "Sectors only apply to 8x machines"},
		{"create 8x sector_4", "There are 3 sectors: `sector_1`, `sector_2` and `sector_3`"},
		{"create 8x for 0m", "not a lifetime I understand"},
		{"key set", "Paste your SSH *public* key"},
		{"key frobnicate", "`/gpu key` takes"},
		{"list everything", "`/gpu list all`"},
		{"status", "Give one machine id"},
		{"delete a b", "Give one machine id"},
		{"cancel", "Give one request id: `/gpu cancel <id>`"},
		{"extend abc", "`/gpu extend <id> 2h`"},
		{"extend abc forever", "not a lifetime I understand"},
		// A lifetime so long that adding it would overflow is refused where it is read.
		{"extend abcd1234 2562047h", "`2562047h` is too long: the longest I accept is 365d"},
		{"extend abcd1234 99999999999999999999h", "is too long: the longest I accept is 365d"},
		{"create 8x for 366d", "`366d` is too long: the longest I accept is 365d"},
		{"extend abcd1234 -5m", "not a lifetime I understand"},
	}
	for _, tt := range tests {
		_, err := ParseCommand(tt.text)
		var ue *UserError
		if !errors.As(err, &ue) {
			t.Errorf("ParseCommand(%q) error = %v, want a UserError", tt.text, err)
			continue
		}
		if !strings.Contains(ue.Message, tt.hint) {
			t.Errorf("ParseCommand(%q) = %q, want it to contain %q", tt.text, ue.Message, tt.hint)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		4 * time.Hour:                 "4h",
		90 * time.Minute:              "1h30m",
		51 * time.Hour:                "2d3h",
		45 * time.Minute:              "45m",
		30 * time.Second:              "under a minute",
		72*time.Hour + 29*time.Second: "3d",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// FuzzParseCommand: any text gives a command or a refusal with a message, never a
// panic, and a refusal never echoes more than a short piece of the input.
func FuzzParseCommand(f *testing.F) {
	for _, seed := range []string{"", "help", "create 8x sector_1 for 4h train", "key set ssh-ed25519 AAAA x", "extend abc 1d2h", "create 1x for", "list all", "create 8x sector_99999999999999999999", "create 1x for 9999999999h", "delete \x00", "create 8x for 1.5h", "extend abc 2562047h", "create 1x for 106751d", "extend abc 1.5d", "key set\u00a0ssh-ed25519 AAAA x", "key\u3000set\u2009ssh-rsa BBBB", "create\u202f8x\u00a0for\u00a04h\u00a0run"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		cmd, err := ParseCommand(text)
		if err != nil {
			var ue *UserError
			if !errors.As(err, &ue) || ue.Message == "" {
				t.Fatalf("ParseCommand(%q) = %v, want a UserError with a message", text, err)
			}
			if utf8.ValidString(text) && len(ue.Message) > 600 {
				t.Fatalf("refusal too long (%d bytes) for %q", len(ue.Message), text)
			}
			return
		}
		if cmd.Verb == VerbCreate && cmd.Sector != "" && cmd.InstanceType != fal.Type8xH100 {
			t.Fatalf("ParseCommand(%q) gave a sector with %s", text, cmd.InstanceType)
		}
		if cmd.Lifetime < 0 || cmd.Lifetime > duration.Max {
			t.Fatalf("ParseCommand(%q) gave the lifetime %v, outside [0, %v]", text, cmd.Lifetime, duration.Max)
		}
	})
}

func TestLongReasonRefused(t *testing.T) {
	_, err := ParseCommand("create 1x " + strings.Repeat("é", 301))
	var ue *UserError
	if !errors.As(err, &ue) || !strings.Contains(ue.Message, "under 300 characters (it has 301)") {
		t.Fatalf("err = %v", err)
	}
	if _, err := ParseCommand("create 1x " + strings.Repeat("é", 300)); err != nil {
		t.Fatalf("a 300-character reason: %v", err)
	}
}

// Every kind of space separates words alike: a no-break space pasted from an editor,
// a thin or ideographic space, a tab.
func TestParseCommandTreatsEveryKindOfSpaceAlike(t *testing.T) {
	for _, space := range []string{"\u00a0", "\u2009", "\u202f", "\u3000", "\u2003", "\t", "\u1680", "\u205f"} {
		for text, want := range map[string]Command{
			"key" + space + "set" + space + "ssh-ed25519 AAAA me@laptop":                {Verb: VerbKeySet, Key: "ssh-ed25519 AAAA me@laptop"},
			space + "key set" + space + "ssh-ed25519" + space + "AAAA" + space:          {Verb: VerbKeySet, Key: "ssh-ed25519" + space + "AAAA"},
			"create" + space + "8x" + space + "for" + space + "4h" + space + "eval run": {Verb: VerbCreate, InstanceType: fal.Type8xH100, Lifetime: 4 * time.Hour, Reason: "eval run"},
			"extend" + space + "abcd1234" + space + "2h":                                {Verb: VerbExtend, ID: "abcd1234", Lifetime: 2 * time.Hour},
		} {
			got, err := ParseCommand(text)
			if err != nil || got != want {
				t.Errorf("ParseCommand(%q) = %+v, %v; want %+v", text, got, err, want)
			}
		}
	}
}
