package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/gpubot/gpubot/internal/spend"
)

// Secrets in these tests carry a marker that no message or hint contains, so
// finding the marker in output means a secret leaked.
const (
	testBotToken = "xoxb-111-222-SECRETBOT"
	testAppToken = "xapp-1-A111-SECRETAPP"
	testFalKey   = "keyid:SECRETFAL"
)

var secretMarkers = []string{"SECRETBOT", "SECRETAPP", "SECRETFAL", "SECRETPW"}

// minimalEnv is the least an operator must set with the default
// APPROVAL_REQUIRED.
func minimalEnv() map[string]string {
	return map[string]string{
		"SLACK_BOT_TOKEN":   testBotToken,
		"SLACK_APP_TOKEN":   testAppToken,
		"FAL_ADMIN_API_KEY": testFalKey,
		"APPROVAL_CHANNEL":  "C0APPROVE",
	}
}

// fullEnv sets every variable to something other than its default.
func fullEnv() map[string]string {
	return map[string]string{
		"SLACK_BOT_TOKEN":       testBotToken,
		"SLACK_APP_TOKEN":       testAppToken,
		"SLACK_API_URL":         "http://127.0.0.1:9999/api/",
		"FAL_ADMIN_API_KEY":     testFalKey,
		"FAL_API_URL":           "http://127.0.0.1:9998/v1",
		"DB_PATH":               "/data/gpubot.db",
		"APPROVAL_CHANNEL":      "C0APPROVE",
		"NOTIFY_CHANNEL":        "G0NOTIFY",
		"APPROVERS":             "U0ALICE,W0BOB,S0GPUAPPROVE",
		"ADMINS":                "U0ADMIN,S0GPUADMIN",
		"APPROVAL_REQUIRED":     "gpu_1x_h100_sxm5,gpu_8x_h100_sxm5",
		"APPROVALS_NEEDED":      "gpu_8x_h100_sxm5=2",
		"APPROVAL_TIMEOUT":      "12h",
		"APPROVAL_REMINDER":     "90m",
		"USERGROUP_REFRESH":     "1m",
		"DEFAULT_LIFETIME":      "4h",
		"MAX_LIFETIME":          "24h",
		"REMINDER_BEFORE":       "15m",
		"PROVISION_TIMEOUT":     "45m",
		"HOURLY_PRICES":         "gpu_1x_h100_sxm5=2.5,gpu_8x_h100_sxm5=20",
		"MONTHLY_BUDGETS":       "default=500,U0ALICE=2000,S0MLTEAM=10000.5",
		"BUDGET_ENFORCEMENT":    "refuse",
		"MAX_MACHINES_PER_USER": "3",
		"REPORT_CHANNEL":        "C0SPEND",
		"REPORT_EVERY":          "daily",
		"POLL_INTERVAL":         "100ms",
		"HTTP_ADDR":             "127.0.0.1:0",
		"LOG_LEVEL":             "debug",
		"LEADER_TTL":            "5s",
	}
}

func with(env map[string]string, overrides map[string]string) map[string]string {
	merged := maps.Clone(env)
	maps.Copy(merged, overrides)
	return merged
}

func lookupIn(env map[string]string) func(string) string {
	return func(key string) string { return env[key] }
}

func mustLoad(t *testing.T, env map[string]string) Config {
	t.Helper()
	cfg, err := Load(lookupIn(env))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

func loadProblems(t *testing.T, env map[string]string) []string {
	t.Helper()
	_, err := Load(lookupIn(env))
	var configErr *Error
	if !errors.As(err, &configErr) {
		t.Fatalf("Load error = %v, want a *config.Error", err)
	}
	return configErr.Problems
}

func TestLoadAppliesDocumentedDefaults(t *testing.T) {
	t.Parallel()
	got := mustLoad(t, minimalEnv())
	want := Config{
		SlackBotToken:    testBotToken,
		SlackAppToken:    testAppToken,
		SlackAPIURL:      "https://slack.com/api/",
		FalAdminAPIKey:   testFalKey,
		FalAPIURL:        "https://api.fal.ai/v1",
		DBPath:           "gpubot.db",
		ApprovalChannel:  "C0APPROVE",
		ApprovalRequired: []string{"gpu_8x_h100_sxm5"},
		ApprovalTimeout:  24 * time.Hour,
		ApprovalReminder: 2 * time.Hour,
		UsergroupRefresh: 5 * time.Minute,
		DefaultLifetime:  8 * time.Hour,
		MaxLifetime:      72 * time.Hour,
		ReminderBefore:   30 * time.Minute,
		ProvisionTimeout: time.Hour,
		Enforcement:      EnforceApprove,
		ReportEvery:      spend.Weekly,
		PollInterval:     10 * time.Second,
		HTTPAddr:         ":8080",
		LogLevel:         "info",
		Etcd:             Etcd{Prefix: "/gpubot/"},
		LeaderTTL:        10 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load with only the required settings:\n got %#v\nwant %#v", got, want)
	}
}

func TestLoadReadsEverySetting(t *testing.T) {
	t.Parallel()
	got := mustLoad(t, fullEnv())
	want := Config{
		SlackBotToken:    testBotToken,
		SlackAppToken:    testAppToken,
		SlackAPIURL:      "http://127.0.0.1:9999/api/",
		FalAdminAPIKey:   testFalKey,
		FalAPIURL:        "http://127.0.0.1:9998/v1",
		DBPath:           "/data/gpubot.db",
		ApprovalChannel:  "C0APPROVE",
		NotifyChannel:    "G0NOTIFY",
		Approvers:        []string{"U0ALICE", "W0BOB", "S0GPUAPPROVE"},
		Admins:           []string{"U0ADMIN", "S0GPUADMIN"},
		ApprovalRequired: []string{"gpu_1x_h100_sxm5", "gpu_8x_h100_sxm5"},
		ApprovalsNeeded:  map[string]int{"gpu_8x_h100_sxm5": 2},
		ApprovalTimeout:  12 * time.Hour,
		ApprovalReminder: 90 * time.Minute,
		UsergroupRefresh: time.Minute,
		DefaultLifetime:  4 * time.Hour,
		MaxLifetime:      24 * time.Hour,
		ReminderBefore:   15 * time.Minute,
		ProvisionTimeout: 45 * time.Minute,
		HourlyPrices:     map[string]float64{"gpu_1x_h100_sxm5": 2.5, "gpu_8x_h100_sxm5": 20},
		MonthlyBudgets:   map[string]float64{"default": 500, "U0ALICE": 2000, "S0MLTEAM": 10000.5},
		Enforcement:      EnforceRefuse,
		MaxMachines:      3,
		ReportChannel:    "C0SPEND",
		ReportEvery:      spend.Daily,
		PollInterval:     100 * time.Millisecond,
		HTTPAddr:         "127.0.0.1:0",
		LogLevel:         "debug",
		Etcd:             Etcd{Prefix: "/gpubot/"},
		LeaderTTL:        5 * time.Second,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load with every setting:\n got %#v\nwant %#v", got, want)
	}
}

// TestLoadNormalisesForgivableInput: harmless variations are accepted and
// stored in the one form the rest of gpubot expects.
func TestLoadNormalisesForgivableInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		check func(Config) any
		want  any
	}{
		{"slack api url without final slash", map[string]string{"SLACK_API_URL": "http://127.0.0.1:1/api"},
			func(c Config) any { return c.SlackAPIURL }, "http://127.0.0.1:1/api/"},
		{"fal url with final slash", map[string]string{"FAL_API_URL": "https://api.fal.ai/v1/"},
			func(c Config) any { return c.FalAPIURL }, "https://api.fal.ai/v1"},
		{"whitespace around a token", map[string]string{"SLACK_BOT_TOKEN": "  " + testBotToken + "\n"},
			func(c Config) any { return c.SlackBotToken }, testBotToken},
		{"approval none", map[string]string{"APPROVAL_REQUIRED": "none", "APPROVAL_CHANNEL": ""},
			func(c Config) any { return c.ApprovalRequired }, []string(nil)},
		{"approval list with spaces, blanks and duplicates", map[string]string{"APPROVAL_REQUIRED": " gpu_8x_h100_sxm5, ,gpu_8x_h100_sxm5,"},
			func(c Config) any { return c.ApprovalRequired }, []string{"gpu_8x_h100_sxm5"}},
		{"user ids with spaces and duplicates", map[string]string{"ADMINS": "U0A, U0B ,U0A"},
			func(c Config) any { return c.Admins }, []string{"U0A", "U0B"}},
		{"http off", map[string]string{"HTTP_ADDR": "off"},
			func(c Config) any { return c.HTTPAddr }, ""},
		{"http OFF", map[string]string{"HTTP_ADDR": "OFF"},
			func(c Config) any { return c.HTTPAddr }, ""},
		{"log level in capitals", map[string]string{"LOG_LEVEL": "WARN"},
			func(c Config) any { return c.LogLevel }, "warn"},
		{"empty value means default", map[string]string{"POLL_INTERVAL": ""},
			func(c Config) any { return c.PollInterval }, 10 * time.Second},
		{"blank value means default", map[string]string{"LOG_LEVEL": "   "},
			func(c Config) any { return c.LogLevel }, "info"},
		{"price of zero", map[string]string{"HOURLY_PRICES": "gpu_1x_h100_sxm5=0"},
			func(c Config) any { return c.HourlyPrices }, map[string]float64{"gpu_1x_h100_sxm5": 0}},
		{"poll interval at its minimum", map[string]string{"POLL_INTERVAL": "10ms"},
			func(c Config) any { return c.PollInterval }, 10 * time.Millisecond},
		{"default lifetime equal to max", map[string]string{"DEFAULT_LIFETIME": "72h"},
			func(c Config) any { return c.DefaultLifetime }, 72 * time.Hour},
		{"default lifetime in days, as /gpu create takes it", map[string]string{"DEFAULT_LIFETIME": "2d"},
			func(c Config) any { return c.DefaultLifetime }, 48 * time.Hour},
		{"max lifetime in days and hours", map[string]string{"MAX_LIFETIME": "3d12h"},
			func(c Config) any { return c.MaxLifetime }, 84 * time.Hour},
		{"max lifetime at the longest accepted", map[string]string{"MAX_LIFETIME": "365d"},
			func(c Config) any { return c.MaxLifetime }, 365 * 24 * time.Hour},
		{"reminder in capitals", map[string]string{"REMINDER_BEFORE": "45M"},
			func(c Config) any { return c.ReminderBefore }, 45 * time.Minute},
		{"approval reminder off", map[string]string{"APPROVAL_REMINDER": "OFF"},
			func(c Config) any { return c.ApprovalReminder }, time.Duration(0)},
		{"approval timeout in seconds, as tests use it", map[string]string{"APPROVAL_TIMEOUT": "5s", "APPROVAL_REMINDER": "1s", "USERGROUP_REFRESH": "1s"},
			func(c Config) any { return []time.Duration{c.ApprovalTimeout, c.ApprovalReminder, c.UsergroupRefresh} }, []time.Duration{5 * time.Second, time.Second, time.Second}},
		{"approvals needed with spaces", map[string]string{"APPROVALS_NEEDED": " gpu_8x_h100_sxm5 = 2 ,", "APPROVERS": "U0A,U0B"},
			func(c Config) any { return c.ApprovalsNeeded }, map[string]int{"gpu_8x_h100_sxm5": 2}},
		{"a user group among the approvers", map[string]string{"APPROVERS": "S0GPU, U0A"},
			func(c Config) any { return c.Approvers }, []string{"S0GPU", "U0A"}},
		{"ipv6 listen address", map[string]string{"HTTP_ADDR": "[::1]:8080"},
			func(c Config) any { return c.HTTPAddr }, "[::1]:8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := mustLoad(t, with(minimalEnv(), tt.env))
			if got := tt.check(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestLoadRejectsEachBadSetting: every rule, one at a time. Each bad setting
// gives exactly one line that names the variable and says how to fix it.
func TestLoadRejectsEachBadSetting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string // the whole problem line
	}{
		{"bot token missing", map[string]string{"SLACK_BOT_TOKEN": ""},
			"SLACK_BOT_TOKEN: not set; set it to the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page"},
		{"bot token of the wrong kind", map[string]string{"SLACK_BOT_TOKEN": "abc-SECRETBOT"},
			`SLACK_BOT_TOKEN: must start with "xoxb-" (the Bot User OAuth Token from OAuth & Permissions)`},
		{"app token in the bot token's place", map[string]string{"SLACK_BOT_TOKEN": "xapp-1-SECRETBOT"},
			`SLACK_BOT_TOKEN: must start with "xoxb-" but this is an app-level token (xapp-…), which belongs in SLACK_APP_TOKEN; use the Bot User OAuth Token from OAuth & Permissions`},
		{"user token as bot token", map[string]string{"SLACK_BOT_TOKEN": "xoxp-SECRETBOT"},
			`SLACK_BOT_TOKEN: must start with "xoxb-" but this is a user token (xoxp-…), which gpubot does not use; use the Bot User OAuth Token from OAuth & Permissions`},
		{"bot token prefix only", map[string]string{"SLACK_BOT_TOKEN": "xoxb-"},
			`SLACK_BOT_TOKEN: is only the "xoxb-" prefix; paste the whole token (the Bot User OAuth Token from OAuth & Permissions)`},
		{"bot token in quotes", map[string]string{"SLACK_BOT_TOKEN": `"xoxb-SECRETBOT"`},
			"SLACK_BOT_TOKEN: starts with a quote; remove the quotes around the value (env files and docker --env-file keep them literally)"},
		{"bot token with a space inside", map[string]string{"SLACK_BOT_TOKEN": "xoxb-SECRET BOT"},
			"SLACK_BOT_TOKEN: contains whitespace or control characters; paste the value alone, on one line"},
		{"app token missing", map[string]string{"SLACK_APP_TOKEN": ""},
			"SLACK_APP_TOKEN: not set; set it to an app-level token (xapp-…) with the connections:write scope, from the app's Basic Information page"},
		{"bot token in the app token's place", map[string]string{"SLACK_APP_TOKEN": "xoxb-SECRETAPP"},
			`SLACK_APP_TOKEN: must start with "xapp-" but this is a bot token (xoxb-…), which belongs in SLACK_BOT_TOKEN; use an app-level token with connections:write, from Basic Information → App-Level Tokens`},
		{"fal key missing", map[string]string{"FAL_ADMIN_API_KEY": ""},
			"FAL_ADMIN_API_KEY: not set; set it to a fal admin API key with compute permission"},
		{"fal key with its header scheme", map[string]string{"FAL_ADMIN_API_KEY": "Key SECRETFAL"},
			`FAL_ADMIN_API_KEY: starts with "Key "; set only the key itself (gpubot adds the "Key" scheme to the Authorization header)`},
		{"fal key over two lines", map[string]string{"FAL_ADMIN_API_KEY": "SECRET\nFAL"},
			"FAL_ADMIN_API_KEY: contains whitespace or control characters; paste the value alone, on one line"},
		{"slack api url not ending in api", map[string]string{"SLACK_API_URL": "https://slack.com/"},
			`SLACK_API_URL: must end in /api/ (the Web API base, e.g. https://slack.com/api/); the path is "/"`},
		{"slack api url with another scheme", map[string]string{"SLACK_API_URL": "wss://slack.com/api/"},
			`SLACK_API_URL: must be an http:// or https:// URL, not "wss://slack.com/api/"`},
		{"fal url without scheme", map[string]string{"FAL_API_URL": "api.fal.ai/v1"},
			`FAL_API_URL: must be an http:// or https:// URL, not "api.fal.ai/v1"`},
		{"fal url without host", map[string]string{"FAL_API_URL": "https:///v1"},
			"FAL_API_URL: has no host; use e.g. https://host/path"},
		{"fal url with a query", map[string]string{"FAL_API_URL": "https://api.fal.ai/v1?x=1"},
			"FAL_API_URL: must not have a query or fragment; give the base URL only"},
		{"fal url that does not parse", map[string]string{"FAL_API_URL": "http://[::1"},
			"FAL_API_URL: is not a URL; use e.g. https://host/path"},
		{"url password is not echoed", map[string]string{"FAL_API_URL": "ftp://user:SECRETPW@host/v1"},
			`FAL_API_URL: must be an http:// or https:// URL, not "ftp://user:xxxxx@host/v1"`},
		{"db path is a directory", map[string]string{"DB_PATH": "/data/"},
			`DB_PATH: "/data/" is a directory; name the database file, e.g. /data/gpubot.db`},
		{"approval channel missing", map[string]string{"APPROVAL_CHANNEL": ""},
			"APPROVAL_CHANNEL: required because APPROVAL_REQUIRED lists gpu_8x_h100_sxm5; set it to the approvers' channel ID (C…), or set APPROVAL_REQUIRED=none"},
		{"approval channel given by name", map[string]string{"APPROVAL_CHANNEL": "#gpu-approvals"},
			`APPROVAL_CHANNEL: "#gpu-approvals" is not a channel ID; use the ID (like C0123ABCD) from the bottom of the channel's About tab, not its name`},
		{"notify channel that is a user", map[string]string{"NOTIFY_CHANNEL": "U0ALICE"},
			`NOTIFY_CHANNEL: "U0ALICE" is not a channel ID; use the ID (like C0123ABCD) from the bottom of the channel's About tab, not its name`},
		{"approver given by name", map[string]string{"APPROVERS": "U0ALICE,@bob"},
			`APPROVERS: "@bob" is not a user or user group ID; use member IDs like U0123ABCD (profile → ⋮ → Copy member ID) or user group IDs like S0123ABCD, comma-separated`},
		{"approver group given by handle", map[string]string{"APPROVERS": "@gpu-approvers"},
			`APPROVERS: "@gpu-approvers" is not a user or user group ID; use member IDs like U0123ABCD (profile → ⋮ → Copy member ID) or user group IDs like S0123ABCD, comma-separated`},
		{"several admins given by name", map[string]string{"ADMINS": "alice,u0lower"},
			`ADMINS: "alice", "u0lower" are not user or user group IDs; use member IDs like U0123ABCD (profile → ⋮ → Copy member ID) or user group IDs like S0123ABCD, comma-separated`},
		{"approvals needed for an unknown type", map[string]string{"APPROVALS_NEEDED": "8x=2"},
			`APPROVALS_NEEDED: "8x" is not an instance type; the format is gpu_8x_h100_sxm5=2 (distinct approvals a type needs, 1 to 10)`},
		{"approvals needed not a number", map[string]string{"APPROVALS_NEEDED": "gpu_8x_h100_sxm5=two"},
			`APPROVALS_NEEDED: "two" is not a whole number from 1 to 10; the format is gpu_8x_h100_sxm5=2 (distinct approvals a type needs, 1 to 10)`},
		{"approvals needed zero", map[string]string{"APPROVALS_NEEDED": "gpu_8x_h100_sxm5=0"},
			`APPROVALS_NEEDED: "0" is not a whole number from 1 to 10; the format is gpu_8x_h100_sxm5=2 (distinct approvals a type needs, 1 to 10)`},
		{"approvals needed twice", map[string]string{"APPROVALS_NEEDED": "gpu_8x_h100_sxm5=2,gpu_8x_h100_sxm5=3"},
			`APPROVALS_NEEDED: gpu_8x_h100_sxm5 is given twice; the format is gpu_8x_h100_sxm5=2 (distinct approvals a type needs, 1 to 10)`},
		{"approvals needed for a type that needs none", map[string]string{"APPROVALS_NEEDED": "gpu_1x_h100_sxm5=2", "APPROVERS": "U0A,U0B"},
			"APPROVALS_NEEDED: gpu_1x_h100_sxm5 is not in APPROVAL_REQUIRED, so it needs no approval at all; add it to APPROVAL_REQUIRED or drop it here"},
		{"more approvals needed than approvers", map[string]string{"APPROVALS_NEEDED": "gpu_8x_h100_sxm5=3", "APPROVERS": "U0A,U0B"},
			"APPROVALS_NEEDED: gpu_8x_h100_sxm5 needs 3 approvals but APPROVERS lists only 2 people, so no request could ever be approved; lower it, or add approvers (or a user group)"},
		{"approval timeout zero", map[string]string{"APPROVAL_TIMEOUT": "0s"},
			"APPROVAL_TIMEOUT: must be positive; use e.g. 24h"},
		{"approval timeout off", map[string]string{"APPROVAL_TIMEOUT": "off"},
			`APPROVAL_TIMEOUT: "off" is not a duration; use e.g. 8h, 90m, 1h30m or 2d`},
		{"approval reminder not a duration", map[string]string{"APPROVAL_REMINDER": "hourly"},
			`APPROVAL_REMINDER: "hourly" is not a duration; use e.g. 2h or 30m, or off for no reminders`},
		{"approval reminder zero", map[string]string{"APPROVAL_REMINDER": "0s"},
			"APPROVAL_REMINDER: must be positive; use e.g. 2h, or off for no reminders"},
		{"usergroup refresh too short", map[string]string{"USERGROUP_REFRESH": "100ms"},
			"USERGROUP_REFRESH: 100ms is too short; use at least 1s (e.g. 5m): Slack allows about 20 reads of a group a minute"},
		{"approval for a short type name", map[string]string{"APPROVAL_REQUIRED": "8x"},
			`APPROVAL_REQUIRED: "8x" is not an instance type; use a comma-separated list of gpu_1x_h100_sxm5, gpu_8x_h100_sxm5, or none`},
		{"approval none mixed with a type", map[string]string{"APPROVAL_REQUIRED": "none,gpu_8x_h100_sxm5"},
			`APPROVAL_REQUIRED: "none" cannot be combined with instance types; use either none or a list of types`},
		{"default lifetime not a duration", map[string]string{"DEFAULT_LIFETIME": "8"},
			`DEFAULT_LIFETIME: "8" is not a duration; use e.g. 8h, 90m, 1h30m or 2d`},
		{"max lifetime past what any duration may be", map[string]string{"MAX_LIFETIME": "2562047h"},
			`MAX_LIFETIME: "2562047h" is too long: the longest accepted is 365d`},
		{"default lifetime zero", map[string]string{"DEFAULT_LIFETIME": "0s"},
			"DEFAULT_LIFETIME: must be positive; use e.g. 8h"},
		{"max lifetime negative", map[string]string{"MAX_LIFETIME": "-1h", "DEFAULT_LIFETIME": "1h"},
			"MAX_LIFETIME: must be positive; use e.g. 72h"},
		{"default lifetime above max", map[string]string{"DEFAULT_LIFETIME": "96h"},
			"DEFAULT_LIFETIME: 4d is longer than MAX_LIFETIME (3d); lower DEFAULT_LIFETIME or raise MAX_LIFETIME"},
		{"reminder zero", map[string]string{"REMINDER_BEFORE": "0"},
			"REMINDER_BEFORE: must be positive; use e.g. 30m"},
		{"provision timeout zero", map[string]string{"PROVISION_TIMEOUT": "0s"},
			"PROVISION_TIMEOUT: must be positive; use e.g. 1h"},
		{"poll interval too short", map[string]string{"POLL_INTERVAL": "1ms"},
			"POLL_INTERVAL: 1ms is too short; use at least 10ms (e.g. 10s)"},
		{"price for an unknown type", map[string]string{"HOURLY_PRICES": "gpu_8x=20"},
			`HOURLY_PRICES: "gpu_8x" is not an instance type; the format is gpu_1x_h100_sxm5=2.5,gpu_8x_h100_sxm5=20 (USD per hour)`},
		{"price problems together", map[string]string{"HOURLY_PRICES": "gpu_1x_h100_sxm5:2.5,gpu_8x_h100_sxm5=cheap,gpu_8x_h100_sxm5=-1"},
			`HOURLY_PRICES: "gpu_1x_h100_sxm5:2.5" has no =price; "cheap" is not a number; gpu_8x_h100_sxm5 costs -1, a negative price; the format is gpu_1x_h100_sxm5=2.5,gpu_8x_h100_sxm5=20 (USD per hour)`},
		{"price twice", map[string]string{"HOURLY_PRICES": "gpu_1x_h100_sxm5=2,gpu_1x_h100_sxm5=3"},
			"HOURLY_PRICES: gpu_1x_h100_sxm5 is priced twice; the format is gpu_1x_h100_sxm5=2.5,gpu_8x_h100_sxm5=20 (USD per hour)"},
		{"price not finite", map[string]string{"HOURLY_PRICES": "gpu_1x_h100_sxm5=Inf"},
			`HOURLY_PRICES: "Inf" is not a number; the format is gpu_1x_h100_sxm5=2.5,gpu_8x_h100_sxm5=20 (USD per hour)`},
		{"budget problems together", map[string]string{"MONTHLY_BUDGETS": "default=500,alice=100,U0BOB:20,S0ML=lots,U0CAROL=-5,U0DAN=1,U0DAN=2"},
			`MONTHLY_BUDGETS: "alice" is neither default nor a user or user group ID; "U0BOB:20" has no =USD; "lots" is not a number; U0CAROL has -5, a negative budget; U0DAN is given twice; the format is default=500,U0ALICE=2000,S0MLTEAM=10000 (USD per calendar month; user IDs like U0123ABCD, user group IDs like S0123ABCD)`},
		{"budget not finite", map[string]string{"MONTHLY_BUDGETS": "default=NaN"},
			`MONTHLY_BUDGETS: "NaN" is not a number; the format is default=500,U0ALICE=2000,S0MLTEAM=10000 (USD per calendar month; user IDs like U0123ABCD, user group IDs like S0123ABCD)`},
		{"unknown enforcement", map[string]string{"BUDGET_ENFORCEMENT": "warn"},
			`BUDGET_ENFORCEMENT: "warn" is not a mode; use approve (a request over budget needs an approver) or refuse`},
		{"budgets to approve without a channel", map[string]string{"MONTHLY_BUDGETS": "default=500", "APPROVAL_REQUIRED": "none", "APPROVAL_CHANNEL": ""},
			"APPROVAL_CHANNEL: required because MONTHLY_BUDGETS sends requests over budget to the approvers (BUDGET_ENFORCEMENT=approve); set it to the approvers' channel ID (C…), or set BUDGET_ENFORCEMENT=refuse"},
		{"negative machine cap", map[string]string{"MAX_MACHINES_PER_USER": "-1"},
			`MAX_MACHINES_PER_USER: "-1" is not a whole number of machines; use e.g. 3, or 0 for no cap`},
		{"machine cap not a number", map[string]string{"MAX_MACHINES_PER_USER": "two"},
			`MAX_MACHINES_PER_USER: "two" is not a whole number of machines; use e.g. 3, or 0 for no cap`},
		{"report channel given by name", map[string]string{"REPORT_CHANNEL": "#gpu-spend"},
			`REPORT_CHANNEL: "#gpu-spend" is not a channel ID; use the ID (like C0123ABCD) from the bottom of the channel's About tab, not its name`},
		{"report schedule unknown", map[string]string{"REPORT_EVERY": "monthly"},
			`REPORT_EVERY: "monthly" is not a schedule; use daily, weekly, off, or a duration such as 12h`},
		{"report period too short", map[string]string{"REPORT_EVERY": "100ms"},
			"REPORT_EVERY: 100ms is too short; use at least 1s, or daily, weekly or off"},
		{"report period past what any duration may be", map[string]string{"REPORT_EVERY": "2562047h"},
			`REPORT_EVERY: "2562047h" is too long: the longest accepted is 365d`},
		{"http address without colon", map[string]string{"HTTP_ADDR": "8080"},
			`HTTP_ADDR: "8080" lacks the colon before the port; use :8080`},
		{"http address without port", map[string]string{"HTTP_ADDR": "localhost"},
			`HTTP_ADDR: "localhost" is not host:port; use host:port such as :8080 or 127.0.0.1:8080, or off to disable`},
		{"http port out of range", map[string]string{"HTTP_ADDR": ":70000"},
			`HTTP_ADDR: ":70000" has no valid port number (0-65535); use host:port such as :8080 or 127.0.0.1:8080, or off to disable`},
		{"unknown log level", map[string]string{"LOG_LEVEL": "verbose"},
			`LOG_LEVEL: "verbose" is not a level; use debug, info, warn or error`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			problems := loadProblems(t, with(minimalEnv(), tt.env))
			if len(problems) != 1 || problems[0] != tt.want {
				t.Errorf("problems:\n  %s\nwant exactly:\n  %s", strings.Join(problems, "\n  "), tt.want)
			}
			assertNoSecret(t, strings.Join(problems, "\n"))
		})
	}
}

// TestLoadReportsEveryProblemAtOnce is what an operator sees on a first start
// with a half-written environment: one error, one line per variable.
func TestLoadReportsEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"SLACK_APP_TOKEN":  "xoxb-SECRETAPP",
		"DEFAULT_LIFETIME": "forever",
		"HTTP_ADDR":        "8080",
	}
	_, err := Load(lookupIn(env))
	want := `configuration has 6 problems:
  SLACK_BOT_TOKEN: not set; set it to the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page
  SLACK_APP_TOKEN: must start with "xapp-" but this is a bot token (xoxb-…), which belongs in SLACK_BOT_TOKEN; use an app-level token with connections:write, from Basic Information → App-Level Tokens
  FAL_ADMIN_API_KEY: not set; set it to a fal admin API key with compute permission
  DEFAULT_LIFETIME: "forever" is not a duration; use e.g. 8h, 90m, 1h30m or 2d
  HTTP_ADDR: "8080" lacks the colon before the port; use :8080
  APPROVAL_CHANNEL: required because APPROVAL_REQUIRED lists gpu_8x_h100_sxm5; set it to the approvers' channel ID (C…), or set APPROVAL_REQUIRED=none`
	if err == nil || err.Error() != want {
		t.Errorf("Load error:\n%v\nwant:\n%s", err, want)
	}
	var configErr *Error
	if !errors.As(err, &configErr) || len(configErr.Problems) != 6 {
		t.Errorf("Load error %T does not carry the 6 problems", err)
	}
}

func TestErrorWithOneProblemSaysProblem(t *testing.T) {
	t.Parallel()
	err := &Error{Problems: []string{"LOG_LEVEL: bad"}}
	if got, want := err.Error(), "configuration has 1 problem:\n  LOG_LEVEL: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestStringListsEverySettingWithSecretsRedacted(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, with(fullEnv(), map[string]string{"FAL_API_URL": "https://user:SECRETPW@api.fal.ai/v1"}))
	want := strings.Join([]string{
		"SLACK_BOT_TOKEN=xoxb-…(redacted)",
		"SLACK_APP_TOKEN=xapp-…(redacted)",
		"SLACK_API_URL=http://127.0.0.1:9999/api/",
		"FAL_ADMIN_API_KEY=(redacted)",
		"FAL_API_URL=https://user:xxxxx@api.fal.ai/v1",
		"DB_PATH=/data/gpubot.db",
		"ETCD_ENDPOINTS=",
		"ETCD_PREFIX=/gpubot/",
		"ETCD_USERNAME=",
		"ETCD_PASSWORD=",
		"ETCD_CA_FILE=",
		"ETCD_CERT_FILE=",
		"ETCD_KEY_FILE=",
		"LEADER_TTL=5s",
		"APPROVAL_CHANNEL=C0APPROVE",
		"NOTIFY_CHANNEL=G0NOTIFY",
		"APPROVERS=U0ALICE,W0BOB,S0GPUAPPROVE",
		"ADMINS=U0ADMIN,S0GPUADMIN",
		"APPROVAL_REQUIRED=gpu_1x_h100_sxm5,gpu_8x_h100_sxm5",
		"APPROVALS_NEEDED=gpu_8x_h100_sxm5=2",
		"APPROVAL_TIMEOUT=12h",
		"APPROVAL_REMINDER=1h30m",
		"USERGROUP_REFRESH=1m",
		"DEFAULT_LIFETIME=4h",
		"MAX_LIFETIME=1d",
		"REMINDER_BEFORE=15m",
		"PROVISION_TIMEOUT=45m",
		"HOURLY_PRICES=gpu_1x_h100_sxm5=2.5,gpu_8x_h100_sxm5=20",
		"MONTHLY_BUDGETS=S0MLTEAM=10000.5,U0ALICE=2000,default=500",
		"BUDGET_ENFORCEMENT=refuse",
		"MAX_MACHINES_PER_USER=3",
		"REPORT_CHANNEL=C0SPEND",
		"REPORT_EVERY=daily",
		"POLL_INTERVAL=100ms",
		"HTTP_ADDR=127.0.0.1:0",
		"LOG_LEVEL=debug",
	}, "\n")
	if got := cfg.String(); got != want {
		t.Errorf("String():\n%s\nwant:\n%s", got, want)
	}
}

func TestStringShowsSwitchedOffFeatures(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, with(minimalEnv(), map[string]string{"APPROVAL_REQUIRED": "none", "HTTP_ADDR": "off"}))
	for _, line := range []string{"APPROVAL_REQUIRED=none", "HTTP_ADDR=off", "DEFAULT_LIFETIME=8h", "POLL_INTERVAL=10s"} {
		if !strings.Contains(cfg.String()+"\n", line+"\n") {
			t.Errorf("String() lacks line %q:\n%s", line, cfg)
		}
	}
}

// TestStringReadsBackAsTheSameConfig: the output of `gpubot config`, with
// the secrets put back, is an environment that reproduces the configuration.
func TestStringReadsBackAsTheSameConfig(t *testing.T) {
	t.Parallel()
	for name, env := range map[string]map[string]string{
		"full":               fullEnv(),
		"minimal":            minimalEnv(),
		"switched off":       with(minimalEnv(), map[string]string{"APPROVAL_REQUIRED": "none", "HTTP_ADDR": "off", "DEFAULT_LIFETIME": "1h30m", "APPROVAL_REMINDER": "off", "REPORT_EVERY": "off"}),
		"digest by the hour": with(minimalEnv(), map[string]string{"REPORT_EVERY": "12h", "MONTHLY_BUDGETS": "U0ALICE=0"}),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			original := mustLoad(t, env)
			printed := make(map[string]string)
			for line := range strings.Lines(original.String()) {
				key, value, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "=")
				printed[key] = value
			}
			maps.Copy(printed, map[string]string{
				"SLACK_BOT_TOKEN": testBotToken, "SLACK_APP_TOKEN": testAppToken, "FAL_ADMIN_API_KEY": testFalKey,
			})
			if again := mustLoad(t, printed); !reflect.DeepEqual(again, original) {
				t.Errorf("read back:\n got %#v\nwant %#v", again, original)
			}
		})
	}
}

func TestLogValueRedactsSecretsInJSONLogs(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, with(fullEnv(), map[string]string{"SLACK_API_URL": "https://u:SECRETPW@slack.example/api/"}))
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("starting", "config", cfg)
	assertNoSecret(t, out.String())

	var record struct {
		Config map[string]string `json:"config"`
	}
	if err := json.Unmarshal(out.Bytes(), &record); err != nil {
		t.Fatalf("log line is not JSON: %v\n%s", err, out.String())
	}
	want := map[string]string{
		"SLACK_BOT_TOKEN":   "xoxb-…(redacted)",
		"SLACK_APP_TOKEN":   "xapp-…(redacted)",
		"FAL_ADMIN_API_KEY": "(redacted)",
		"SLACK_API_URL":     "https://u:xxxxx@slack.example/api/",
		"DEFAULT_LIFETIME":  "4h",
		"APPROVERS":         "U0ALICE,W0BOB,S0GPUAPPROVE",
	}
	for key, value := range want {
		if record.Config[key] != value {
			t.Errorf("logged %s = %q, want %q", key, record.Config[key], value)
		}
	}
	if len(record.Config) != 36 {
		t.Errorf("logged %d settings, want all 36: %v", len(record.Config), record.Config)
	}
}

func TestLogValueRedactsSecretsInTextLogs(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, fullEnv())
	var out bytes.Buffer
	slog.New(slog.NewTextHandler(&out, nil)).Info("starting", "config", cfg)
	assertNoSecret(t, out.String())
	if !strings.Contains(out.String(), "config.SLACK_BOT_TOKEN=xoxb-…(redacted)") {
		t.Errorf("text log lacks the redacted bot token:\n%s", out.String())
	}
}

func TestRedactionOfUnusualSecrets(t *testing.T) {
	t.Parallel()
	cfg := Config{SlackBotToken: "not-a-bot-SECRETBOT", SlackAppToken: ""}
	text := cfg.String()
	assertNoSecret(t, text)
	if !strings.Contains(text, "SLACK_BOT_TOKEN=(redacted)\n") || !strings.Contains(text, "SLACK_APP_TOKEN=\n") {
		t.Errorf("String() of a hand-built Config:\n%s", text)
	}
}

// Who may do what is the handlers' policy; the settings only hand it the lists, read
// as written (user groups included) and with "none" meaning no type needs approval.
func TestPermissionLists(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, fullEnv())
	tests := []struct {
		name      string
		got, want []string
	}{
		{"approvers", cfg.Approvers, []string{"U0ALICE", "W0BOB", "S0GPUAPPROVE"}},
		{"admins", cfg.Admins, []string{"U0ADMIN", "S0GPUADMIN"}},
		{"approval required", cfg.ApprovalRequired, []string{"gpu_1x_h100_sxm5", "gpu_8x_h100_sxm5"}},
		{"approval required by default", mustLoad(t, minimalEnv()).ApprovalRequired, []string{"gpu_8x_h100_sxm5"}},
		{"approval required: none", mustLoad(t, with(minimalEnv(), map[string]string{"APPROVAL_REQUIRED": "none"})).ApprovalRequired, nil},
	}
	for _, tt := range tests {
		if !slices.Equal(tt.got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestSlogLevel(t *testing.T) {
	t.Parallel()
	for level, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError, "": slog.LevelInfo,
	} {
		if got := (Config{LogLevel: level}).SlogLevel(); got != want {
			t.Errorf("SlogLevel(%q) = %v, want %v", level, got, want)
		}
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	if got := mustLoad(t, fullEnv()).Warnings(); len(got) != 0 {
		t.Errorf("full configuration warns: %q", got)
	}
	got := mustLoad(t, with(minimalEnv(), map[string]string{"DEFAULT_LIFETIME": "20m", "APPROVAL_TIMEOUT": "2h"})).Warnings()
	want := []string{
		"APPROVERS is empty, so requests for gpu_8x_h100_sxm5 expire unapproved after APPROVAL_TIMEOUT; list the approvers' user or user group IDs or set APPROVAL_REQUIRED=none",
		"REMINDER_BEFORE (30m) is not shorter than DEFAULT_LIFETIME (20m), so owners are reminded as soon as an instance is ready",
		"APPROVAL_REMINDER (2h) is not shorter than APPROVAL_TIMEOUT (2h), so requests expire before the approvers are reminded; shorten it, or set it to off",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Warnings():\n got %q\nwant %q", got, want)
	}
}

// Budgets without prices cannot be enforced: the operator hears so at start.
func TestWarningsOfBudgetsWithoutPrices(t *testing.T) {
	t.Parallel()
	got := mustLoad(t, with(minimalEnv(), map[string]string{
		"APPROVERS": "U0BOB", "MONTHLY_BUDGETS": "default=500", "HOURLY_PRICES": "gpu_8x_h100_sxm5=20",
		"REPORT_CHANNEL": "C0SPEND", "REPORT_EVERY": "off",
	})).Warnings()
	want := []string{
		"MONTHLY_BUDGETS is set but HOURLY_PRICES has no price for gpu_1x_h100_sxm5, so requests for it have no cost and no budget can be enforced on them; set their prices in HOURLY_PRICES",
		"REPORT_CHANNEL is set but REPORT_EVERY is off, so no digest is posted; set REPORT_EVERY to daily, weekly or a duration",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Warnings():\n got %q\nwant %q", got, want)
	}
	none := mustLoad(t, with(minimalEnv(), map[string]string{"APPROVERS": "U0BOB", "MONTHLY_BUDGETS": "default=500"})).Warnings()
	if len(none) != 1 || !strings.Contains(none[0], "no price for gpu_1x_h100_sxm5, gpu_8x_h100_sxm5") {
		t.Errorf("budgets with no prices at all: %q", none)
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := Usage(&out); err != nil {
		t.Fatalf("Usage: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 37 || !strings.HasPrefix(lines[0], "VARIABLE") {
		t.Fatalf("Usage wrote %d lines, want a header and 36 variables:\n%s", len(lines), out.String())
	}
	for _, key := range []string{
		"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_API_URL", "FAL_ADMIN_API_KEY", "FAL_API_URL", "DB_PATH",
		"APPROVAL_CHANNEL", "NOTIFY_CHANNEL", "APPROVERS", "ADMINS", "APPROVAL_REQUIRED", "DEFAULT_LIFETIME",
		"MAX_LIFETIME", "REMINDER_BEFORE", "PROVISION_TIMEOUT", "HOURLY_PRICES", "POLL_INTERVAL", "HTTP_ADDR", "LOG_LEVEL",
		"APPROVALS_NEEDED", "APPROVAL_TIMEOUT", "APPROVAL_REMINDER", "USERGROUP_REFRESH",
		"ETCD_ENDPOINTS", "ETCD_PREFIX", "ETCD_USERNAME", "ETCD_PASSWORD", "ETCD_CA_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "LEADER_TTL",
		"MONTHLY_BUDGETS", "BUDGET_ENFORCEMENT", "MAX_MACHINES_PER_USER", "REPORT_CHANNEL", "REPORT_EVERY",
	} {
		if !strings.Contains(out.String(), "\n"+key+" ") {
			t.Errorf("Usage lacks %s:\n%s", key, out.String())
		}
	}
	for _, row := range []string{
		`SLACK_BOT_TOKEN +true +the Bot User OAuth Token`,
		`DEFAULT_LIFETIME +8h +lifetime of an instance`,
		`APPROVAL_REQUIRED +gpu_8x_h100_sxm5 +comma-separated instance types`,
		`APPROVAL_REMINDER +2h +how often`,
		`USERGROUP_REFRESH +5m +how often`,
		`BUDGET_ENFORCEMENT +approve +what a request`,
		`MAX_MACHINES_PER_USER +0 +machines one person`,
		`REPORT_EVERY +weekly +how often the spend digest`,
	} {
		if !matchesLine(out.String(), row) {
			t.Errorf("Usage lacks a row like %q:\n%s", row, out.String())
		}
	}
}

// TestEverySettingDecodesItself guards decodeEnvironment's one assumption:
// envconfig would otherwise parse a field its own way.
func TestEverySettingDecodesItself(t *testing.T) {
	t.Parallel()
	spec := reflect.TypeFor[settings]()
	decoder := reflect.TypeFor[envconfig.Decoder]()
	for i := range spec.NumField() {
		field := spec.Field(i)
		if !reflect.PointerTo(field.Type).Implements(decoder) {
			t.Errorf("settings.%s (%s) has no Decode method", field.Name, field.Type)
		}
		if field.Tag.Get("envconfig") == "" || field.Tag.Get("desc") == "" {
			t.Errorf("settings.%s lacks an envconfig or desc tag", field.Name)
		}
	}
}

// TestDecodeEnvironmentAgreesWithEnvconfig: for environments both can read,
// gpubot's reader and envconfig.Process fill the settings identically, so the
// tags mean what envconfig's documentation says. It sets the process
// environment, so it cannot run in parallel.
func TestDecodeEnvironmentAgreesWithEnvconfig(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"every variable set": fullEnv(),
		"defaults":           minimalEnv(),
		"switched off":       with(minimalEnv(), map[string]string{"APPROVAL_REQUIRED": "none", "HTTP_ADDR": "off"}),
		"on etcd":            etcdEnv(),
	} {
		t.Run(name, func(t *testing.T) {
			for key := range with(fullEnv(), etcdEnv()) {
				t.Setenv(key, "")
				os.Unsetenv(key)
			}
			for key, value := range env {
				t.Setenv(key, value)
			}
			var fromEnvconfig, fromGetenv settings
			if err := envconfig.Process("", &fromEnvconfig); err != nil {
				t.Fatalf("envconfig.Process: %v", err)
			}
			if problems, _ := decodeEnvironment(&fromGetenv, os.Getenv); len(problems) > 0 {
				t.Fatalf("decodeEnvironment: %q", problems)
			}
			if !reflect.DeepEqual(fromGetenv, fromEnvconfig) {
				t.Errorf("decodeEnvironment:\n %#v\nenvconfig.Process:\n %#v", fromGetenv, fromEnvconfig)
			}
		})
	}
}

func assertNoSecret(t *testing.T, text string) {
	t.Helper()
	for _, marker := range secretMarkers {
		if strings.Contains(text, marker) {
			t.Errorf("output leaks a secret (%s):\n%s", marker, text)
		}
	}
}

// matchesLine reports whether some line of text has the words of pattern in
// order, separated by runs of spaces (" +" in pattern).
func matchesLine(text, pattern string) bool {
	words := strings.Split(pattern, " +")
	for line := range strings.Lines(text) {
		fields := strings.Join(strings.Fields(line), " ")
		if strings.Contains(fields, strings.Join(words, " ")) {
			return true
		}
	}
	return false
}

// TestReadmeListsEverySetting keeps README.md's settings table whole: every variable
// gpubot reads has its row there, as `gpubot help` has its line.
func TestReadmeListsEverySetting(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	spec := reflect.TypeFor[settings]()
	for i := range spec.NumField() {
		key := spec.Field(i).Tag.Get("envconfig")
		if !strings.Contains(string(readme), "\n| `"+key+"` |") {
			t.Errorf("README.md's settings table has no row for %s", key)
		}
	}
}
