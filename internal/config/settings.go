package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gpubot/gpubot/fal"
	durations "github.com/gpubot/gpubot/internal/duration"
	"github.com/gpubot/gpubot/internal/spend"
)

const (
	slackBotTokenPrefix = "xoxb-"
	slackAppTokenPrefix = "xapp-"
	noApproval          = "none"
	httpOff             = "off"
	minPollInterval     = 10 * time.Millisecond
	reminderOff         = "off"
	minUsergroupRefresh = time.Second
	maxApprovalsNeeded  = 10
	reportOff           = "off"
	minReportEvery      = time.Second
	// EnforceApprove and EnforceRefuse are BUDGET_ENFORCEMENT's values: a request over
	// budget needs approval, or is refused.
	EnforceApprove = "approve"
	EnforceRefuse  = "refuse"
)

// settings is the environment as envconfig sees it: one field per variable,
// described by envconfig's struct tags. Each field type checks its own value
// in Decode (envconfig's Decoder interface), so a value is parsed and
// validated in one place; crossCheck covers rules that span variables.
type settings struct {
	SlackBotToken    slackBotToken    `envconfig:"SLACK_BOT_TOKEN" required:"true" desc:"the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page"`
	SlackAppToken    slackAppToken    `envconfig:"SLACK_APP_TOKEN" required:"true" desc:"an app-level token (xapp-…) with the connections:write scope, from the app's Basic Information page"`
	SlackAPIURL      slackAPIURL      `envconfig:"SLACK_API_URL" default:"https://slack.com/api/" desc:"Slack Web API base URL, ending in /api/"`
	FalAdminAPIKey   falAPIKey        `envconfig:"FAL_ADMIN_API_KEY" required:"true" desc:"a fal admin API key with compute permission"`
	FalAPIURL        baseURL          `envconfig:"FAL_API_URL" default:"https://api.fal.ai/v1" desc:"fal Platform API base URL"`
	DBPath           dbPath           `envconfig:"DB_PATH" default:"gpubot.db" desc:"path of the bbolt database file; not with ETCD_ENDPOINTS"`
	EtcdEndpoints    etcdEndpoints    `envconfig:"ETCD_ENDPOINTS" desc:"comma-separated etcd client URLs (http:// or https://); set, state lives in etcd and several replicas may run; empty: the bbolt file at DB_PATH"`
	EtcdPrefix       etcdPrefix       `envconfig:"ETCD_PREFIX" default:"/gpubot/" desc:"key prefix in etcd, so several gpubots (or other programs) share one etcd"`
	EtcdUsername     etcdUsername     `envconfig:"ETCD_USERNAME" desc:"etcd user, with ETCD_PASSWORD; empty when etcd needs no authentication"`
	EtcdPassword     etcdPassword     `envconfig:"ETCD_PASSWORD" desc:"password of ETCD_USERNAME"`
	EtcdCAFile       pemFile          `envconfig:"ETCD_CA_FILE" desc:"PEM file of the CA that signed etcd's certificates; empty: the system's CAs"`
	EtcdCertFile     pemFile          `envconfig:"ETCD_CERT_FILE" desc:"PEM client certificate for etcd, with ETCD_KEY_FILE"`
	EtcdKeyFile      pemFile          `envconfig:"ETCD_KEY_FILE" desc:"PEM private key of ETCD_CERT_FILE"`
	LeaderTTL        leaderTTL        `envconfig:"LEADER_TTL" default:"10s" desc:"how long a replica that died holds the background work before another takes over (with ETCD_ENDPOINTS); whole seconds, at least 2s"`
	ApprovalChannel  channelID        `envconfig:"APPROVAL_CHANNEL" desc:"channel ID (C…) for approval cards; required unless APPROVAL_REQUIRED=none"`
	NotifyChannel    channelID        `envconfig:"NOTIFY_CHANNEL" desc:"channel ID (C…) for readiness notices; empty for none"`
	Approvers        peopleList       `envconfig:"APPROVERS" desc:"comma-separated user IDs (U…) and user group IDs (S…) who approve or deny requests"`
	Admins           peopleList       `envconfig:"ADMINS" desc:"comma-separated user IDs (U…) and user group IDs (S…) who see and delete every instance and get alerts"`
	ApprovalRequired instanceTypeList `envconfig:"APPROVAL_REQUIRED" default:"gpu_8x_h100_sxm5" desc:"comma-separated instance types that need approval, or none"`
	ApprovalsNeeded  approvalsNeeded  `envconfig:"APPROVALS_NEEDED" desc:"distinct approvals a type needs, e.g. gpu_8x_h100_sxm5=2; 1 for every type not named"`
	ApprovalTimeout  duration         `envconfig:"APPROVAL_TIMEOUT" default:"24h" desc:"how long a request may wait for approval before it expires"`
	ApprovalReminder reminderPeriod   `envconfig:"APPROVAL_REMINDER" default:"2h" desc:"how often the approvers are reminded of a waiting request, in its card's thread; off for never"`
	UsergroupRefresh duration         `envconfig:"USERGROUP_REFRESH" default:"5m" desc:"how often the members of user groups in APPROVERS, ADMINS and MONTHLY_BUDGETS are read again, at least 1s"`
	DefaultLifetime  duration         `envconfig:"DEFAULT_LIFETIME" default:"8h" desc:"lifetime of an instance when the request names none, counted from ready, e.g. 8h, 90m or 2d"`
	MaxLifetime      duration         `envconfig:"MAX_LIFETIME" default:"72h" desc:"longest lifetime a request or extension may reach, e.g. 72h or 3d (at most 365d)"`
	ReminderBefore   duration         `envconfig:"REMINDER_BEFORE" default:"30m" desc:"how long before expiry the owner is reminded"`
	ProvisionTimeout duration         `envconfig:"PROVISION_TIMEOUT" default:"1h" desc:"how long fal may take to make a machine ready; then gpubot deletes it and tells the owner and admins"`
	HourlyPrices     hourlyPrices     `envconfig:"HOURLY_PRICES" desc:"USD per hour, e.g. gpu_1x_h100_sxm5=2.5,gpu_8x_h100_sxm5=20; empty shows no costs"`
	MonthlyBudgets   monthlyBudgets   `envconfig:"MONTHLY_BUDGETS" desc:"USD per calendar month (UTC), e.g. default=500,U0ALICE=2000,S0MLTEAM=10000: default for each user without their own, a user ID, or a user group ID whose members' spend adds up; empty for no budgets"`
	Enforcement      enforcement      `envconfig:"BUDGET_ENFORCEMENT" default:"approve" desc:"what a request or extension over budget gets: approve (it needs an approver) or refuse"`
	MaxMachines      machineCap       `envconfig:"MAX_MACHINES_PER_USER" default:"0" desc:"machines one person may hold at once (waiting, being made or ready); 0 for no cap"`
	ReportChannel    channelID        `envconfig:"REPORT_CHANNEL" desc:"channel ID (C…) for the spend digest; empty for none"`
	ReportEvery      reportEvery      `envconfig:"REPORT_EVERY" default:"weekly" desc:"how often the spend digest is posted: daily (09:00 UTC), weekly (Mondays 09:00 UTC), off, or a duration such as 12h (periods counted from the Unix epoch)"`
	PollInterval     duration         `envconfig:"POLL_INTERVAL" default:"10s" desc:"how often instance status is checked, at least 10ms"`
	HTTPAddr         listenAddr       `envconfig:"HTTP_ADDR" default:":8080" desc:"host:port serving /healthz, /readyz and /metrics; off to disable"`
	LogLevel         logLevel         `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// crossCheck finds the problems that involve more than one variable, or a
// range a field type cannot know. Variables in failed were already reported
// as malformed and hold zero values, so rules about them are skipped rather
// than reported twice.
func (s settings) crossCheck(failed map[string]bool, set func(key string) bool) []string {
	var problems []string
	report := reporter(&problems, failed)
	defaultLifetime, maxLifetime := time.Duration(s.DefaultLifetime), time.Duration(s.MaxLifetime)
	if defaultLifetime <= 0 {
		report("DEFAULT_LIFETIME", "must be positive; use e.g. 8h")
	}
	if maxLifetime <= 0 {
		report("MAX_LIFETIME", "must be positive; use e.g. 72h")
	}
	if defaultLifetime > 0 && maxLifetime > 0 && defaultLifetime > maxLifetime {
		report("DEFAULT_LIFETIME", "%s is longer than MAX_LIFETIME (%s); lower DEFAULT_LIFETIME or raise MAX_LIFETIME",
			durations.Format(defaultLifetime), durations.Format(maxLifetime))
	}
	if s.ReminderBefore <= 0 {
		report("REMINDER_BEFORE", "must be positive; use e.g. 30m")
	}
	if s.ProvisionTimeout <= 0 {
		report("PROVISION_TIMEOUT", "must be positive; use e.g. 1h")
	}
	if pollInterval := time.Duration(s.PollInterval); pollInterval < minPollInterval {
		report("POLL_INTERVAL", "%s is too short; use at least %s (e.g. 10s)", durations.Format(pollInterval), minPollInterval)
	}
	s.crossCheckApprovals(report)
	if len(s.MonthlyBudgets) > 0 && s.Enforcement == EnforceApprove && len(s.ApprovalRequired) == 0 && s.ApprovalChannel == "" {
		report("APPROVAL_CHANNEL", "required because MONTHLY_BUDGETS sends requests over budget to the approvers (BUDGET_ENFORCEMENT=approve); set it to the approvers' channel ID (C…), or set BUDGET_ENFORCEMENT=refuse")
	}
	if len(s.ApprovalRequired) > 0 && s.ApprovalChannel == "" {
		report("APPROVAL_CHANNEL", "required because APPROVAL_REQUIRED lists %s; set it to the approvers' channel ID (C…), or set APPROVAL_REQUIRED=none",
			strings.Join(s.ApprovalRequired, ", "))
	}
	s.crossCheckStorage(report, failed, set, false)
	return problems
}

// reporter adds "KEY: problem" lines to problems, except for the variables
// in failed, which were reported as malformed already.
func reporter(problems *[]string, failed map[string]bool) func(key, format string, args ...any) {
	return func(key, format string, args ...any) {
		if !failed[key] {
			*problems = append(*problems, key+": "+fmt.Sprintf(format, args...))
		}
	}
}

// crossCheckApprovals checks the approval settings against each other: the timers,
// and that every count asked for can be reached.
func (s settings) crossCheckApprovals(report func(key, format string, args ...any)) {
	if s.ApprovalTimeout <= 0 {
		report("APPROVAL_TIMEOUT", "must be positive; use e.g. 24h")
	}
	if refresh := time.Duration(s.UsergroupRefresh); refresh < minUsergroupRefresh {
		report("USERGROUP_REFRESH", "%s is too short; use at least %s (e.g. 5m): Slack allows about 20 reads of a group a minute", durations.Format(refresh), durations.Format(minUsergroupRefresh))
	}
	people, groups := 0, 0
	for _, id := range s.Approvers {
		if isGroupID(id) {
			groups++
		} else {
			people++
		}
	}
	for _, instanceType := range slices.Sorted(maps.Keys(s.ApprovalsNeeded)) {
		needed := s.ApprovalsNeeded[instanceType]
		switch {
		case !slices.Contains(s.ApprovalRequired, instanceType):
			report("APPROVALS_NEEDED", "%s is not in APPROVAL_REQUIRED, so it needs no approval at all; add it to APPROVAL_REQUIRED or drop it here", instanceType)
		case groups == 0 && needed > people:
			report("APPROVALS_NEEDED", "%s needs %d approvals but APPROVERS lists only %d people, so no request could ever be approved; lower it, or add approvers (or a user group)", instanceType, needed, people)
		}
	}
}

func (s settings) config() Config {
	return Config{
		SlackBotToken:    string(s.SlackBotToken),
		SlackAppToken:    string(s.SlackAppToken),
		SlackAPIURL:      string(s.SlackAPIURL),
		FalAdminAPIKey:   string(s.FalAdminAPIKey),
		FalAPIURL:        string(s.FalAPIURL),
		DBPath:           s.dbPathInUse(),
		Etcd:             s.etcd(),
		LeaderTTL:        time.Duration(s.LeaderTTL),
		ApprovalChannel:  string(s.ApprovalChannel),
		NotifyChannel:    string(s.NotifyChannel),
		Approvers:        slices.Clone(s.Approvers),
		Admins:           slices.Clone(s.Admins),
		ApprovalRequired: slices.Clone(s.ApprovalRequired),
		ApprovalsNeeded:  maps.Clone(s.ApprovalsNeeded),
		ApprovalTimeout:  time.Duration(s.ApprovalTimeout),
		ApprovalReminder: time.Duration(s.ApprovalReminder),
		UsergroupRefresh: time.Duration(s.UsergroupRefresh),
		DefaultLifetime:  time.Duration(s.DefaultLifetime),
		MaxLifetime:      time.Duration(s.MaxLifetime),
		ReminderBefore:   time.Duration(s.ReminderBefore),
		ProvisionTimeout: time.Duration(s.ProvisionTimeout),
		HourlyPrices:     s.HourlyPrices,
		MonthlyBudgets:   maps.Clone(s.MonthlyBudgets),
		Enforcement:      string(s.Enforcement),
		MaxMachines:      int(s.MaxMachines),
		ReportChannel:    string(s.ReportChannel),
		ReportEvery:      spend.Schedule(s.ReportEvery),
		PollInterval:     time.Duration(s.PollInterval),
		HTTPAddr:         string(s.HTTPAddr),
		LogLevel:         string(s.LogLevel),
	}
}

// Secrets. Their Decode errors never quote the value: a malformed token is
// still mostly a real secret.

type slackBotToken string

func (t *slackBotToken) Decode(value string) error {
	if err := checkSlackToken(value, slackBotTokenPrefix, "the Bot User OAuth Token from OAuth & Permissions"); err != nil {
		return err
	}
	*t = slackBotToken(value)
	return nil
}

type slackAppToken string

func (t *slackAppToken) Decode(value string) error {
	if err := checkSlackToken(value, slackAppTokenPrefix, "an app-level token with connections:write, from Basic Information → App-Level Tokens"); err != nil {
		return err
	}
	*t = slackAppToken(value)
	return nil
}

// slackTokenKinds names the token kinds people paste into the wrong variable.
var slackTokenKinds = []struct{ prefix, kind string }{
	{"xoxb-", "a bot token (xoxb-…), which belongs in SLACK_BOT_TOKEN"},
	{"xapp-", "an app-level token (xapp-…), which belongs in SLACK_APP_TOKEN"},
	{"xoxp-", "a user token (xoxp-…), which gpubot does not use"},
}

func checkSlackToken(value, prefix, where string) error {
	if err := checkSecretShape(value); err != nil {
		return err
	}
	if value == prefix {
		return fmt.Errorf("is only the %q prefix; paste the whole token (%s)", prefix, where)
	}
	if strings.HasPrefix(value, prefix) {
		return nil
	}
	for _, other := range slackTokenKinds {
		if strings.HasPrefix(value, other.prefix) {
			return fmt.Errorf("must start with %q but this is %s; use %s", prefix, other.kind, where)
		}
	}
	return fmt.Errorf("must start with %q (%s)", prefix, where)
}

// checkSecretShape catches the copy-and-paste accidents that make a secret
// unusable in an HTTP header.
func checkSecretShape(value string) error {
	if strings.HasPrefix(value, `"`) || strings.HasPrefix(value, `'`) {
		return fmt.Errorf("starts with a quote; remove the quotes around the value (env files and docker --env-file keep them literally)")
	}
	if strings.ContainsFunc(value, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("contains whitespace or control characters; paste the value alone, on one line")
	}
	return nil
}

type falAPIKey string

func (k *falAPIKey) Decode(value string) error {
	if rest, ok := strings.CutPrefix(value, "Key "); ok && rest != "" {
		return fmt.Errorf(`starts with "Key "; set only the key itself (gpubot adds the "Key" scheme to the Authorization header)`)
	}
	if err := checkSecretShape(value); err != nil {
		return err
	}
	*k = falAPIKey(value)
	return nil
}

// URLs.

type slackAPIURL string

// Decode accepts the base with or without its final "/" and stores it with
// one, because Slack method names are appended to it directly.
func (u *slackAPIURL) Decode(value string) error {
	parsed, err := parseHTTPURL(value)
	if err != nil {
		return err
	}
	if strings.HasSuffix(parsed.Path, "/api") {
		parsed.Path += "/"
	}
	if !strings.HasSuffix(parsed.Path, "/api/") {
		return fmt.Errorf("must end in /api/ (the Web API base, e.g. https://slack.com/api/); the path is %q", parsed.Path)
	}
	*u = slackAPIURL(parsed.String())
	return nil
}

type baseURL string

// Decode stores the URL without a final "/", so paths can be appended with
// one.
func (u *baseURL) Decode(value string) error {
	parsed, err := parseHTTPURL(value)
	if err != nil {
		return err
	}
	parsed.Path = strings.TrimRight(parsed.Path, "/")
	*u = baseURL(parsed.String())
	return nil
}

func parseHTTPURL(value string) (*url.URL, error) {
	parsed, err := url.Parse(value)
	if err != nil {
		return nil, fmt.Errorf("is not a URL; use e.g. https://host/path")
	}
	if parsed.Scheme != "http" && parsed.Scheme != "https" {
		return nil, fmt.Errorf("must be an http:// or https:// URL, not %q", parsed.Redacted())
	}
	if parsed.Host == "" {
		return nil, fmt.Errorf("has no host; use e.g. https://host/path")
	}
	if parsed.RawQuery != "" || parsed.Fragment != "" {
		return nil, fmt.Errorf("must not have a query or fragment; give the base URL only")
	}
	return parsed, nil
}

func redactURL(value string) string {
	parsed, err := url.Parse(value)
	if err != nil {
		return "(unparsable URL)"
	}
	return parsed.Redacted()
}

// Identifiers and lists.

type dbPath string

func (p *dbPath) Decode(value string) error {
	if strings.HasSuffix(value, "/") {
		return fmt.Errorf("%q is a directory; name the database file, e.g. %sgpubot.db", value, value)
	}
	*p = dbPath(value)
	return nil
}

// Slack IDs are upper-case letters and digits after a one-letter kind.
var (
	channelIDPattern = regexp.MustCompile(`^[CG][A-Z0-9]{2,}$`)
	personIDPattern  = regexp.MustCompile(`^[UWS][A-Z0-9]{2,}$`)
)

// isGroupID says whether an ID in APPROVERS or ADMINS names a user group (S…).
func isGroupID(id string) bool { return strings.HasPrefix(id, "S") }

type channelID string

func (c *channelID) Decode(value string) error {
	if !channelIDPattern.MatchString(value) {
		return fmt.Errorf("%q is not a channel ID; use the ID (like C0123ABCD) from the bottom of the channel's About tab, not its name", value)
	}
	*c = channelID(value)
	return nil
}

// peopleList is user IDs and user group IDs: a group stands for its members,
// read from Slack as they change.
type peopleList []string

func (l *peopleList) Decode(value string) error {
	var ids, malformed []string
	for _, id := range splitList(value) {
		if !personIDPattern.MatchString(id) {
			malformed = append(malformed, strconv.Quote(id))
			continue
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(malformed) > 0 {
		return fmt.Errorf("%s; use member IDs like U0123ABCD (profile → ⋮ → Copy member ID) or user group IDs like S0123ABCD, comma-separated",
			notA(malformed, "a user or user group ID", "user or user group IDs"))
	}
	*l = ids
	return nil
}

type instanceTypeList []string

func (l *instanceTypeList) Decode(value string) error {
	items := splitList(value)
	if slices.Contains(items, noApproval) {
		if len(items) > 1 {
			return fmt.Errorf("%q cannot be combined with instance types; use either none or a list of types", noApproval)
		}
		*l = nil
		return nil
	}
	var types, unknown []string
	for _, item := range items {
		if !fal.ValidInstanceType(item) {
			unknown = append(unknown, strconv.Quote(item))
			continue
		}
		if !slices.Contains(types, item) {
			types = append(types, item)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%s; use a comma-separated list of %s, or none",
			notA(unknown, "an instance type", "instance types"), strings.Join(fal.InstanceTypes(), ", "))
	}
	*l = types
	return nil
}

type hourlyPrices map[string]float64

func (p *hourlyPrices) Decode(value string) error {
	prices := make(map[string]float64)
	var problems []string
	for _, pair := range splitList(value) {
		instanceType, price, err := parsePrice(pair)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if _, seen := prices[instanceType]; seen {
			problems = append(problems, fmt.Sprintf("%s is priced twice", instanceType))
			continue
		}
		prices[instanceType] = price
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s; the format is gpu_1x_h100_sxm5=2.5,gpu_8x_h100_sxm5=20 (USD per hour)", strings.Join(problems, "; "))
	}
	*p = prices
	return nil
}

func parsePrice(pair string) (instanceType string, price float64, err error) {
	instanceType, number, found := strings.Cut(pair, "=")
	instanceType, number = strings.TrimSpace(instanceType), strings.TrimSpace(number)
	if !found {
		return "", 0, fmt.Errorf("%q has no =price", pair)
	}
	if !fal.ValidInstanceType(instanceType) {
		return "", 0, fmt.Errorf("%q is not an instance type", instanceType)
	}
	price, err = strconv.ParseFloat(number, 64)
	if err != nil || math.IsInf(price, 0) || math.IsNaN(price) {
		return "", 0, fmt.Errorf("%q is not a number", number)
	}
	if price < 0 {
		return "", 0, fmt.Errorf("%s costs %s, a negative price", instanceType, number)
	}
	return instanceType, price, nil
}

// monthlyBudgets are USD per calendar month by "default", user ID or user group ID.
type monthlyBudgets map[string]float64

func (b *monthlyBudgets) Decode(value string) error {
	budgets := make(map[string]float64)
	var problems []string
	for _, pair := range splitList(value) {
		key, number, found := strings.Cut(pair, "=")
		key, number = strings.TrimSpace(key), strings.TrimSpace(number)
		usd, err := strconv.ParseFloat(number, 64)
		_, twice := budgets[key]
		switch {
		case !found:
			problems = append(problems, fmt.Sprintf("%q has no =USD", pair))
		case key != spend.DefaultBudget && !personIDPattern.MatchString(key):
			problems = append(problems, fmt.Sprintf("%q is neither default nor a user or user group ID", key))
		case err != nil || math.IsInf(usd, 0) || math.IsNaN(usd):
			problems = append(problems, fmt.Sprintf("%q is not a number", number))
		case usd < 0:
			problems = append(problems, fmt.Sprintf("%s has %s, a negative budget", key, number))
		case twice:
			problems = append(problems, fmt.Sprintf("%s is given twice", key))
		default:
			budgets[key] = usd
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s; the format is default=500,U0ALICE=2000,S0MLTEAM=10000 (USD per calendar month; user IDs like U0123ABCD, user group IDs like S0123ABCD)", strings.Join(problems, "; "))
	}
	*b = budgets
	return nil
}

// enforcement is what a request over budget gets.
type enforcement string

func (e *enforcement) Decode(value string) error {
	mode := strings.ToLower(value)
	if mode != EnforceApprove && mode != EnforceRefuse {
		return fmt.Errorf("%q is not a mode; use approve (a request over budget needs an approver) or refuse", value)
	}
	*e = enforcement(mode)
	return nil
}

// machineCap is how many machines one person may hold at once; 0 for no cap.
type machineCap int

func (c *machineCap) Decode(value string) error {
	n, err := strconv.Atoi(value)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a whole number of machines; use e.g. 3, or 0 for no cap", value)
	}
	*c = machineCap(n)
	return nil
}

// reportEvery is the digest's schedule: daily, weekly, off, or a period length.
type reportEvery spend.Schedule

func (r *reportEvery) Decode(value string) error {
	switch strings.ToLower(value) {
	case "daily":
		*r = reportEvery(spend.Daily)
		return nil
	case "weekly":
		*r = reportEvery(spend.Weekly)
		return nil
	case reportOff:
		*r = reportEvery{}
		return nil
	}
	parsed, err := durations.Parse(value)
	switch {
	case errors.Is(err, durations.ErrTooLong):
		return fmt.Errorf("%q is %w", value, err)
	case err != nil:
		return fmt.Errorf("%q is not a schedule; use daily, weekly, off, or a duration such as 12h", value)
	case parsed < minReportEvery:
		return fmt.Errorf("%s is too short; use at least %s, or daily, weekly or off", durations.Format(parsed), durations.Format(minReportEvery))
	}
	*r = reportEvery(spend.Every(parsed))
	return nil
}

// Scalars.

type duration time.Duration

// Decode reads the same durations as `/gpu create … for`: 8h, 90m, 1h30m, 2d, 100ms.
func (d *duration) Decode(value string) error {
	parsed, err := durations.Parse(value)
	switch {
	case errors.Is(err, durations.ErrTooLong):
		return fmt.Errorf("%q is %w", value, err)
	case err != nil:
		return fmt.Errorf("%q is not a duration; use e.g. 8h, 90m, 1h30m or 2d", value)
	}
	*d = duration(parsed)
	return nil
}

// approvalsNeeded is how many distinct approvals each type needs.
type approvalsNeeded map[string]int

func (a *approvalsNeeded) Decode(value string) error {
	needed := make(map[string]int)
	var problems []string
	for _, pair := range splitList(value) {
		instanceType, number, found := strings.Cut(pair, "=")
		instanceType, number = strings.TrimSpace(instanceType), strings.TrimSpace(number)
		n, err := strconv.Atoi(number)
		_, twice := needed[instanceType]
		switch {
		case !found:
			problems = append(problems, fmt.Sprintf("%q has no =count", pair))
		case !fal.ValidInstanceType(instanceType):
			problems = append(problems, fmt.Sprintf("%q is not an instance type", instanceType))
		case err != nil || n < 1 || n > maxApprovalsNeeded:
			problems = append(problems, fmt.Sprintf("%q is not a whole number from 1 to %d", number, maxApprovalsNeeded))
		case twice:
			problems = append(problems, fmt.Sprintf("%s is given twice", instanceType))
		default:
			needed[instanceType] = n
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s; the format is gpu_8x_h100_sxm5=2 (distinct approvals a type needs, 1 to %d)", strings.Join(problems, "; "), maxApprovalsNeeded)
	}
	*a = needed
	return nil
}

// reminderPeriod is a duration, or off (zero) for no reminders.
type reminderPeriod time.Duration

func (p *reminderPeriod) Decode(value string) error {
	if strings.EqualFold(value, reminderOff) {
		*p = 0
		return nil
	}
	parsed, err := durations.Parse(value)
	switch {
	case errors.Is(err, durations.ErrTooLong):
		return fmt.Errorf("%q is %w", value, err)
	case err != nil:
		return fmt.Errorf("%q is not a duration; use e.g. 2h or 30m, or off for no reminders", value)
	case parsed <= 0:
		return errors.New("must be positive; use e.g. 2h, or off for no reminders")
	}
	*p = reminderPeriod(parsed)
	return nil
}

type listenAddr string

// Decode keeps "off" as the empty address, which means no HTTP server.
func (a *listenAddr) Decode(value string) error {
	if strings.EqualFold(value, httpOff) {
		*a = ""
		return nil
	}
	const usage = "use host:port such as :8080 or 127.0.0.1:8080, or off to disable"
	_, port, err := net.SplitHostPort(value)
	if err != nil {
		if _, numeric := strconv.ParseUint(value, 10, 16); numeric == nil {
			return fmt.Errorf("%q lacks the colon before the port; use :%s", value, value)
		}
		return fmt.Errorf("%q is not host:port; %s", value, usage)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q has no valid port number (0-65535); %s", value, usage)
	}
	*a = listenAddr(value)
	return nil
}

type logLevel string

func (l *logLevel) Decode(value string) error {
	level := strings.ToLower(value)
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, level) {
		return fmt.Errorf("%q is not a level; use debug, info, warn or error", value)
	}
	*l = logLevel(level)
	return nil
}

// splitList splits a comma-separated value, ignoring blanks around and
// between items, so "a, b," means a and b.
func splitList(value string) []string {
	var items []string
	for item := range strings.SplitSeq(value, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

// notA says that the quoted values are not what they should be, in one
// grammatical sentence whether there is one value or several.
func notA(quoted []string, singular, plural string) string {
	if len(quoted) == 1 {
		return quoted[0] + " is not " + singular
	}
	return strings.Join(quoted, ", ") + " are not " + plural
}
