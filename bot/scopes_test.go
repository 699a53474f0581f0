package bot_test

import (
	"slices"
	"testing"

	"github.com/gpubot/gpubot/internal/config"
)

// scopeOf is the bot scope each Web API method gpubot calls needs (none for auth.test
// and views.open, whose trigger comes with the command or click).
var scopeOf = map[string]string{
	"auth.test":             "",
	"apps.connections.open": "",
	"chat.postMessage":      "chat:write",
	"chat.update":           "chat:write",
	"chat.postEphemeral":    "chat:write",
	"conversations.open":    "im:write",
	"views.open":            "",
	"views.publish":         "",
	"response_url":          "",
	"usergroups.users.list": "usergroups:read",
	"chat.getPermalink":     "",
}

// The scopes the manifest asks for are exactly those the code uses: the end-to-end
// flows below call every method gpubot has, and each call's scope must be granted.
func TestManifestScopesAreWhatTheCodeUses(t *testing.T) {
	h := start(t, withConfig(func(c *config.Config) { c.Approvers = append(c.Approvers, approverGroup) }))
	h.registerKey(alice)
	h.command(alice, private, "create 8x") // DM fallback: conversations.open
	h.click(bob, h.waitFor(approvals, "needs approval"), "Deny")
	h.eventually("the deny modal", func() bool { _, ok := h.slack.OpenView(bob); return ok })
	h.command(alice, general, "create 1x")
	h.waitFor(general, "is ready :tada:")
	h.command(alice, general, "delete "+h.fal.Instances()[0].ID)
	h.click(alice, h.waitFor(general, "Delete <@UALICE>'s"), "Delete")
	h.waitFor(general, "Deleted by")
	h.click(mallory, h.waitFor(approvals, "needs approval"), "Approve") // an ephemeral refusal

	used := map[string]bool{"commands": true} // the /gpu command itself
	for _, call := range h.slack.Calls() {
		scope, known := scopeOf[call.Method]
		if !known {
			t.Errorf("gpubot called %s, which this test does not know the scope of", call.Method)
		}
		if scope != "" {
			used[scope] = true
		}
	}
	for _, scope := range config.BotScopes {
		if !used[scope] {
			t.Errorf("manifest asks for %s, which no call used", scope)
		}
		delete(used, scope)
	}
	for scope := range used {
		t.Errorf("code uses %s, which the manifest does not ask for", scope)
	}
	if !slices.Contains(config.BotScopes, "commands") {
		t.Error("the manifest must have the commands scope for /gpu")
	}
}
