package console

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runScript plays an example script through the console and returns the transcript.
func runScript(t *testing.T, name string) string {
	t.Helper()
	script, err := os.ReadFile(filepath.Join("..", "..", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := map[string]string{"DB_PATH": filepath.Join(t.TempDir(), "console.db")}
	err = Run(ctx, Options{Getenv: func(k string) string { return env[k] }, In: bytes.NewReader(script), Out: &out, Version: "test", ReadyAfter: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("console: %v\n%s", err, out.String())
	}
	return out.String()
}

// inOrder checks that each piece appears in the transcript after the one before.
func inOrder(t *testing.T, transcript string, pieces ...string) {
	t.Helper()
	rest := transcript
	for _, piece := range pieces {
		i := strings.Index(rest, piece)
		if i < 0 {
			t.Fatalf("transcript lacks %q after what came before:\n%s", piece, transcript)
		}
		rest = rest[i+len(piece):]
	}
}

func TestApprovalExample(t *testing.T) {
	transcript := runScript(t, "approval.txt")
	inOrder(t, transcript,
		"alice in #general> /gpu create 8x sector_1 for 4h fine-tuning run",
		"[#general, only alice sees] gpubot: Got it: request",
		"[#gpu-approvals] gpubot: *GPU request",
		"$80.00 ($20.00/h × 4h)",
		"[Approve] [Deny]",
		"bob in #gpu-approvals> click Approve",
		":white_check_mark: Approved by @bob",
		"[#general › thread] gpubot: @alice your 8x H100 is ready :tada:",
		"ssh ubuntu@203.0.113.",
		"alice in #general> /gpu list",
		"8x H100 · ready",
	)
	if !strings.Contains(transcript, "[#gpu-notices] gpubot: :large_green_circle: @alice's 8x H100") {
		t.Fatalf("no readiness notice in #gpu-notices:\n%s", transcript)
	}
	if strings.Contains(transcript, " ! ") {
		t.Fatalf("a command failed:\n%s", transcript)
	}
}

func TestDenyExample(t *testing.T) {
	transcript := runScript(t, "deny.txt")
	inOrder(t, transcript,
		"bob in #gpu-approvals> click Deny",
		`(form "Deny request" open for bob; fields: reason`,
		`submit reason="no 8x budget left this week; a 1x will do"`,
		"@alice denied by @bob: no 8x budget left this week; a 1x will do",
	)
}

func TestConsoleExplainsMistakes(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := "as mallory\nclick Approve\nsubmit reason=x\nfrobnicate\nin #random\n"
	err := Run(ctx, Options{Getenv: func(string) string { return "" }, In: strings.NewReader(script), Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`no one called "mallory" here`,
		`no button "Approve" that alice can see`,
		"you have no form open",
		`I don't know "frobnicate"; type help`,
		`no channel "#random"`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("transcript lacks %q:\n%s", want, out.String())
		}
	}
}

// The Home tab and the shortcut can be tried from the console: the tab is printed as
// its owner sees it, its buttons can be clicked, and the shortcut opens the create form.
func TestConsoleShowsTheHomeTabAndTheShortcut(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := "home\nclick Set key\nshortcut\n"
	err := Run(ctx, Options{Getenv: func(string) string { return "" }, In: strings.NewReader(script), Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	inOrder(t, out.String(),
		"alice in #general> home",
		"[Home of alice] Your GPU machines",
		"You have no SSH key yet",
		"[Request a GPU] [Set key]",
		"alice in #general> click Set key",
		`(form "Your SSH key" open for alice; fields: key`,
		"alice in #general> shortcut",
		`(form "New GPU machine" open for alice; fields: type, sector, lifetime, reason`,
	)
	if strings.Contains(out.String(), " ! ") {
		t.Fatalf("a command failed:\n%s", out.String())
	}
}
