package config

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/slack-go/slack"
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
	if settings.EventSubscriptions != nil {
		t.Error("the manifest subscribes to events; gpubot handles none")
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
