package config

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/slack-go/slack"

	"github.com/gpubot/gpubot/handlers"
	"go.yaml.in/yaml/v4"
)

// loadManifest parses the repository's manifest.yml into slack-go's manifest
// type, rejecting any key that type does not know, so a typo in the file
// cannot pass unnoticed.
func loadManifest(t *testing.T) slack.Manifest {
	t.Helper()
	data, err := os.ReadFile("../../manifest.yml")
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	var manifest slack.Manifest
	if err := yaml.Load(data, &manifest, yaml.WithKnownFields()); err != nil {
		t.Fatalf("manifest.yml does not parse strictly as a Slack manifest: %v", err)
	}
	return manifest
}

func TestManifestUsesSocketModeAndInteractivity(t *testing.T) {
	t.Parallel()
	manifest := loadManifest(t)
	if manifest.Display.Name != "gpubot" || manifest.Features.BotUser.DisplayName != "gpubot" {
		t.Errorf("app name %q, bot name %q; want gpubot for both", manifest.Display.Name, manifest.Features.BotUser.DisplayName)
	}
	settings := manifest.Settings
	if !settings.SocketModeEnabled {
		t.Error("settings.socket_mode_enabled is not true: gpubot has no public HTTP endpoint")
	}
	if settings.Interactivity == nil || !settings.Interactivity.IsEnabled {
		t.Error("settings.interactivity.is_enabled is not true: buttons and modals would not reach gpubot")
	}
	if settings.Interactivity != nil && (settings.Interactivity.RequestUrl != "" || settings.Interactivity.MessageMenuOptionsUrl != "") {
		t.Error("interactivity has a request URL; Socket Mode needs none")
	}
	if settings.EventSubscriptions == nil || !slices.Equal(settings.EventSubscriptions.BotEvents, []string{"app_home_opened"}) {
		t.Errorf("event subscriptions %+v; want exactly the bot event app_home_opened, which gpubot answers", settings.EventSubscriptions)
	}
	if subs := settings.EventSubscriptions; subs != nil && (subs.RequestUrl != "" || len(subs.UserEvents) > 0) {
		t.Error("the event subscriptions have a request URL or user events; Socket Mode needs no URL and gpubot reads no user events")
	}
	if settings.OrgDeployEnabled || settings.TokenRotationEnabled {
		t.Error("org deploy or token rotation is on; gpubot uses one workspace's long-lived bot token")
	}
}

func TestManifestDeclaresOnlyTheGpuCommand(t *testing.T) {
	t.Parallel()
	commands := loadManifest(t).Features.SlashCommands
	if len(commands) != 1 {
		t.Fatalf("manifest declares %d slash commands, want exactly /gpu", len(commands))
	}
	gpu := commands[0]
	if gpu.Command != "/gpu" {
		t.Errorf("slash command is %q, want /gpu", gpu.Command)
	}
	if gpu.Url != "" {
		t.Errorf("/gpu has request URL %q; Socket Mode needs none", gpu.Url)
	}
	if gpu.ShouldEscape {
		t.Error("/gpu escapes mentions; command text must arrive as typed")
	}
	if gpu.Description == "" {
		t.Error("/gpu has no description")
	}
	for _, hint := range []string{"create", "list", "key set", "help"} {
		if !strings.Contains(gpu.UsageHint, hint) {
			t.Errorf("/gpu usage hint %q does not mention %q", gpu.UsageHint, hint)
		}
	}
}

func TestManifestRequestsExactlyTheBotScopes(t *testing.T) {
	t.Parallel()
	scopes := loadManifest(t).OAuthConfig.Scopes
	if !slices.Equal(scopes.Bot, BotScopes) {
		t.Errorf("manifest bot scopes %q, want exactly config.BotScopes %q", scopes.Bot, BotScopes)
	}
	if len(scopes.User) > 0 || len(scopes.BotOptional) > 0 || len(scopes.UserOptional) > 0 {
		t.Errorf("manifest asks for user or optional scopes %+v; gpubot needs none", scopes)
	}
}

// The Home tab is on, the messages tab stays as it was, and the one global shortcut
// is "Request a GPU" with the callback id the handlers answer.
func TestManifestHasTheHomeTabAndTheShortcut(t *testing.T) {
	t.Parallel()
	features := loadManifest(t).Features
	if !features.AppHome.HomeTabEnabled {
		t.Error("features.app_home.home_tab_enabled is not true: nobody would see gpubot's Home tab")
	}
	if !features.AppHome.MessagesTabEnabled || !features.AppHome.MessagesTabReadOnlyEnabled {
		t.Error("the messages tab must stay on and read-only: DMs from gpubot arrive there")
	}
	if len(features.Shortcuts) != 1 {
		t.Fatalf("manifest declares %d shortcuts, want exactly \"Request a GPU\"", len(features.Shortcuts))
	}
	shortcut := features.Shortcuts[0]
	if shortcut.Type != slack.GlobalShortcut || shortcut.CallbackID != handlers.ShortcutCreate || shortcut.Name != "Request a GPU" {
		t.Errorf("shortcut %+v; want the global shortcut \"Request a GPU\" with callback %s", shortcut, handlers.ShortcutCreate)
	}
	if n := len(shortcut.Name); n > 24 {
		t.Errorf("shortcut name has %d characters; Slack takes at most 24", n)
	}
	if n := len(shortcut.Description); n == 0 || n > 150 {
		t.Errorf("shortcut description has %d characters; Slack wants 1 to 150", n)
	}
}
