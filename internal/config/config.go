// Package config reads gpubot's settings from the environment, checks every one
// of them before the bot starts, and prints them without leaking secrets.
package config

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/gpubot/gpubot/fal"
	durations "github.com/gpubot/gpubot/internal/duration"
	"github.com/gpubot/gpubot/internal/spend"
)

// Config is the validated configuration. Load is the only way to get one from
// the environment; tests of other packages may build one directly.
type Config struct {
	SlackBotToken    string             // SLACK_BOT_TOKEN, "xoxb-…"
	SlackAppToken    string             // SLACK_APP_TOKEN, "xapp-…"
	SlackAPIURL      string             // SLACK_API_URL, always ends in "/api/"
	FalAdminAPIKey   string             // FAL_ADMIN_API_KEY
	FalAPIURL        string             // FAL_API_URL, without a trailing "/"
	DBPath           string             // DB_PATH; empty when state lives in etcd
	Etcd             Etcd               // ETCD_*: the etcd replicas share; Etcd.Enabled() false means the bbolt file at DBPath
	LeaderTTL        time.Duration      // LEADER_TTL, whole seconds, at least etcd's shortest lease
	ApprovalChannel  string             // APPROVAL_CHANNEL, a channel ID; set whenever ApprovalRequired is non-empty
	NotifyChannel    string             // NOTIFY_CHANNEL, a channel ID or "" (no notices)
	Approvers        []string           // APPROVERS, user IDs and user group IDs (S…)
	Admins           []string           // ADMINS, user IDs and user group IDs (S…)
	ApprovalRequired []string           // APPROVAL_REQUIRED, instance types; empty when it is "none"
	ApprovalsNeeded  map[string]int     // APPROVALS_NEEDED, distinct approvals by type (1 when absent)
	ApprovalTimeout  time.Duration      // APPROVAL_TIMEOUT, > 0: a request waiting longer expires
	ApprovalReminder time.Duration      // APPROVAL_REMINDER, how often approvers are reminded; 0 when it is "off"
	UsergroupRefresh time.Duration      // USERGROUP_REFRESH, >= 1s: how often user groups' members are read again
	DefaultLifetime  time.Duration      // DEFAULT_LIFETIME, in (0, MaxLifetime]
	MaxLifetime      time.Duration      // MAX_LIFETIME, > 0
	ReminderBefore   time.Duration      // REMINDER_BEFORE, > 0: how long before expiry the owner is reminded
	ProvisionTimeout time.Duration      // PROVISION_TIMEOUT, > 0: how long fal may take to make a machine ready
	HourlyPrices     map[string]float64 // HOURLY_PRICES, USD per hour by instance type; empty means no costs are shown
	MonthlyBudgets   map[string]float64 // MONTHLY_BUDGETS, USD per month by "default", user ID or user group ID; empty for none
	Enforcement      string             // BUDGET_ENFORCEMENT: EnforceApprove or EnforceRefuse
	MaxMachines      int                // MAX_MACHINES_PER_USER, >= 0; 0 for no cap
	ReportChannel    string             // REPORT_CHANNEL, a channel ID or "" (no digest)
	ReportEvery      spend.Schedule     // REPORT_EVERY; Off() when it is "off"
	PollInterval     time.Duration      // POLL_INTERVAL, >= 10ms
	HTTPAddr         string             // HTTP_ADDR, host:port, or "" when it is "off"
	LogLevel         string             // LOG_LEVEL: debug, info, warn or error
}

// Error is every problem Load found, one line each, so an operator can fix
// them all in one go. main exits with status 2 on it.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	noun := "problems"
	if len(e.Problems) == 1 {
		noun = "problem"
	}
	return fmt.Sprintf("configuration has %d %s:\n  %s", len(e.Problems), noun, strings.Join(e.Problems, "\n  "))
}

// Load reads and checks every setting through getenv (os.Getenv in
// production). Because getenv cannot tell an unset variable from an empty one,
// an empty value means "use the default": APPROVAL_REQUIRED=none and
// HTTP_ADDR=off are the ways to switch those features off. Surrounding
// whitespace is ignored. On failure the error is an *Error naming every
// variable that is wrong.
func Load(getenv func(string) string) (Config, error) {
	var spec settings
	problems, failed := decodeEnvironment(&spec, getenv)
	problems = append(problems, spec.crossCheck(failed, isSet(getenv))...)
	if len(problems) > 0 {
		return Config{}, &Error{Problems: problems}
	}
	return spec.config(), nil
}

// isSet tells a variable the operator set from one left to its default.
func isSet(getenv func(string) string) func(key string) bool {
	return func(key string) bool { return strings.TrimSpace(getenv(key)) != "" }
}

// Usage writes a table of every variable with its default and meaning, for
// help output and for an operator facing a configuration error.
func Usage(w io.Writer) error {
	const format = "VARIABLE\tDEFAULT\tREQUIRED\tMEANING\n" +
		"{{range .}}{{usage_key .}}\t{{usage_default .}}\t{{usage_required .}}\t{{usage_description .}}\n{{end}}"
	table := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if err := envconfig.Usagef("", &settings{}, table, format); err != nil {
		return fmt.Errorf("write settings table: %w", err)
	}
	if err := table.Flush(); err != nil {
		return fmt.Errorf("write settings table: %w", err)
	}
	return nil
}

// SlogLevel is LogLevel as a slog level; anything unrecognised is info.
func (c Config) SlogLevel() slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return slog.LevelInfo
	}
	return level
}

// Warnings lists settings that are valid but probably not what the operator
// wants, for the start-up log.
func (c Config) Warnings() []string {
	var warnings []string
	if len(c.ApprovalRequired) > 0 && len(c.Approvers) == 0 {
		warnings = append(warnings, fmt.Sprintf(
			"APPROVERS is empty, so requests for %s expire unapproved after APPROVAL_TIMEOUT; list the approvers' user or user group IDs or set APPROVAL_REQUIRED=none",
			strings.Join(c.ApprovalRequired, ", ")))
	}
	if c.ReminderBefore >= c.DefaultLifetime {
		warnings = append(warnings, fmt.Sprintf(
			"REMINDER_BEFORE (%s) is not shorter than DEFAULT_LIFETIME (%s), so owners are reminded as soon as an instance is ready",
			durations.Format(c.ReminderBefore), durations.Format(c.DefaultLifetime)))
	}
	if c.ApprovalReminder > 0 && c.ApprovalReminder >= c.ApprovalTimeout && len(c.ApprovalRequired) > 0 {
		warnings = append(warnings, fmt.Sprintf(
			"APPROVAL_REMINDER (%s) is not shorter than APPROVAL_TIMEOUT (%s), so requests expire before the approvers are reminded; shorten it, or set it to off",
			durations.Format(c.ApprovalReminder), durations.Format(c.ApprovalTimeout)))
	}
	if c.Etcd.Password != "" && c.Etcd.scheme() == "http" {
		warnings = append(warnings,
			"ETCD_PASSWORD is sent in the clear: ETCD_ENDPOINTS are http:// URLs; serve etcd over TLS and use https:// endpoints")
	}
	return append(warnings, c.spendWarnings()...)
}

// spendWarnings are the budget and digest settings that cannot do what they say.
func (c Config) spendWarnings() []string {
	var warnings []string
	if len(c.MonthlyBudgets) > 0 {
		var unpriced []string
		for _, instanceType := range fal.InstanceTypes() {
			if _, ok := c.HourlyPrices[instanceType]; !ok {
				unpriced = append(unpriced, instanceType)
			}
		}
		if len(unpriced) > 0 {
			warnings = append(warnings, fmt.Sprintf(
				"MONTHLY_BUDGETS is set but HOURLY_PRICES has no price for %s, so requests for it have no cost and no budget can be enforced on them; set their prices in HOURLY_PRICES",
				strings.Join(unpriced, ", ")))
		}
	}
	if c.ReportChannel != "" && c.ReportEvery.Off() {
		warnings = append(warnings, "REPORT_CHANNEL is set but REPORT_EVERY is off, so no digest is posted; set REPORT_EVERY to daily, weekly or a duration")
	}
	return warnings
}

// String lists every setting as VARIABLE=value lines, secrets redacted, for the
// start-up log. Apart from the secrets, the output read
// back as an environment gives the same Config.
func (c Config) String() string {
	lines := make([]string, 0, 36)
	for _, s := range c.settingsList() {
		lines = append(lines, s.key+"="+s.value)
	}
	return strings.Join(lines, "\n")
}

// LogValue makes slog print the same redacted settings as String, so logging
// a Config never leaks a secret.
func (c Config) LogValue() slog.Value {
	list := c.settingsList()
	attrs := make([]slog.Attr, 0, len(list))
	for _, s := range list {
		attrs = append(attrs, slog.String(s.key, s.value))
	}
	return slog.GroupValue(attrs...)
}

type setting struct{ key, value string }

func (c Config) settingsList() []setting {
	list := []setting{
		{"SLACK_BOT_TOKEN", redactSecret(c.SlackBotToken, slackBotTokenPrefix)},
		{"SLACK_APP_TOKEN", redactSecret(c.SlackAppToken, slackAppTokenPrefix)},
		{"SLACK_API_URL", redactURL(c.SlackAPIURL)},
		{"FAL_ADMIN_API_KEY", redactSecret(c.FalAdminAPIKey, "")},
		{"FAL_API_URL", redactURL(c.FalAPIURL)},
		{"DB_PATH", c.DBPath},
	}
	list = append(list, c.Etcd.settingsList()...)
	return append(list, []setting{
		{"LEADER_TTL", durations.Format(c.LeaderTTL)},
		{"APPROVAL_CHANNEL", c.ApprovalChannel},
		{"NOTIFY_CHANNEL", c.NotifyChannel},
		{"APPROVERS", strings.Join(c.Approvers, ",")},
		{"ADMINS", strings.Join(c.Admins, ",")},
		{"APPROVAL_REQUIRED", formatApprovalRequired(c.ApprovalRequired)},
		{"APPROVALS_NEEDED", formatCounts(c.ApprovalsNeeded)},
		{"APPROVAL_TIMEOUT", durations.Format(c.ApprovalTimeout)},
		{"APPROVAL_REMINDER", formatReminder(c.ApprovalReminder)},
		{"USERGROUP_REFRESH", durations.Format(c.UsergroupRefresh)},
		{"DEFAULT_LIFETIME", durations.Format(c.DefaultLifetime)},
		{"MAX_LIFETIME", durations.Format(c.MaxLifetime)},
		{"REMINDER_BEFORE", durations.Format(c.ReminderBefore)},
		{"PROVISION_TIMEOUT", durations.Format(c.ProvisionTimeout)},
		{"HOURLY_PRICES", formatPrices(c.HourlyPrices)},
		{"MONTHLY_BUDGETS", formatPrices(c.MonthlyBudgets)},
		{"BUDGET_ENFORCEMENT", c.Enforcement},
		{"MAX_MACHINES_PER_USER", strconv.Itoa(c.MaxMachines)},
		{"REPORT_CHANNEL", c.ReportChannel},
		{"REPORT_EVERY", formatSchedule(c.ReportEvery)},
		{"POLL_INTERVAL", durations.Format(c.PollInterval)},
		{"HTTP_ADDR", formatListenAddr(c.HTTPAddr)},
		{"LOG_LEVEL", c.LogLevel},
	}...)
}

// redactSecret keeps only the well-known prefix, which tells the reader which
// kind of token is set without revealing any of it.
func redactSecret(secret, prefix string) string {
	switch {
	case secret == "":
		return ""
	case prefix != "" && strings.HasPrefix(secret, prefix):
		return prefix + "…(redacted)"
	default:
		return "(redacted)"
	}
}

func formatApprovalRequired(types []string) string {
	if len(types) == 0 {
		return noApproval
	}
	return strings.Join(types, ",")
}

func formatCounts(counts map[string]int) string {
	pairs := make([]string, 0, len(counts))
	for _, instanceType := range slices.Sorted(maps.Keys(counts)) {
		pairs = append(pairs, instanceType+"="+strconv.Itoa(counts[instanceType]))
	}
	return strings.Join(pairs, ",")
}

func formatReminder(period time.Duration) string {
	if period == 0 {
		return reminderOff
	}
	return durations.Format(period)
}

func formatSchedule(s spend.Schedule) string {
	switch {
	case s.Off():
		return reportOff
	case s == spend.Daily:
		return "daily"
	case s == spend.Weekly:
		return "weekly"
	}
	return durations.Format(s.Every)
}

func formatListenAddr(addr string) string {
	if addr == "" {
		return httpOff
	}
	return addr
}

func formatPrices(prices map[string]float64) string {
	types := make([]string, 0, len(prices))
	for instanceType := range prices {
		types = append(types, instanceType)
	}
	slices.Sort(types)
	pairs := make([]string, 0, len(types))
	for _, instanceType := range types {
		pairs = append(pairs, instanceType+"="+strconv.FormatFloat(prices[instanceType], 'f', -1, 64))
	}
	return strings.Join(pairs, ",")
}
