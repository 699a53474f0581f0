package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	clientv3 "go.etcd.io/etcd/client/v3"

	durations "github.com/gpubot/gpubot/internal/duration"
)

const (
	// minLeaderTTL is etcd's shortest lease with its default timings: it
	// silently raises a shorter one to 1.5 election timeouts, rounded up.
	minLeaderTTL = 2 * time.Second

	// A dial gives up after etcdDialTimeout; a connection that stops
	// answering pings for etcdKeepAliveTime+etcdKeepAliveTimeout is dropped
	// for another member's, well before the TCP stack would notice. etcd
	// refuses pings more often than every 5s, and on a connection without
	// streams at all (a replica always has some: its lease's keepalives).
	etcdDialTimeout      = 5 * time.Second
	etcdKeepAliveTime    = 10 * time.Second
	etcdKeepAliveTimeout = 5 * time.Second
)

// Etcd is how gpubot reaches the etcd that its replicas share.
type Etcd struct {
	Endpoints []string // ETCD_ENDPOINTS: scheme://host:port, all http or all https; none means the bbolt file
	Prefix    string   // ETCD_PREFIX, ending in "/"
	Username  string   // ETCD_USERNAME, set exactly when Password is
	Password  string   // ETCD_PASSWORD, a secret: String, GoString and LogValue redact it
	CAFile    string   // ETCD_CA_FILE, PEM; empty trusts the system's CAs
	CertFile  string   // ETCD_CERT_FILE, PEM client certificate, set exactly when KeyFile is
	KeyFile   string   // ETCD_KEY_FILE, PEM private key of CertFile
}

// Enabled says whether state lives in etcd rather than in the bbolt file.
func (e Etcd) Enabled() bool { return len(e.Endpoints) > 0 }

// scheme is "http" or "https" (every endpoint has the same), or "".
func (e Etcd) scheme() string {
	if len(e.Endpoints) == 0 {
		return ""
	}
	scheme, _, _ := strings.Cut(e.Endpoints[0], "://")
	return scheme
}

func (e Etcd) settingsList() []setting {
	return []setting{
		{"ETCD_ENDPOINTS", strings.Join(e.Endpoints, ",")},
		{"ETCD_PREFIX", e.Prefix},
		{"ETCD_USERNAME", e.Username},
		{"ETCD_PASSWORD", redactSecret(e.Password, "")},
		{"ETCD_CA_FILE", e.CAFile},
		{"ETCD_CERT_FILE", e.CertFile},
		{"ETCD_KEY_FILE", e.KeyFile},
	}
}

// String shows the settings as VARIABLE=value, the password redacted.
func (e Etcd) String() string {
	pairs := make([]string, 0, 7)
	for _, s := range e.settingsList() {
		pairs = append(pairs, s.key+"="+s.value)
	}
	return strings.Join(pairs, " ")
}

// GoString keeps %#v, which test failures and debugging print, from showing
// the password.
func (e Etcd) GoString() string {
	type fields Etcd
	shown := fields(e)
	shown.Password = redactSecret(e.Password, "")
	return "config.Etcd" + strings.TrimPrefix(fmt.Sprintf("%#v", shown), "config.fields")
}

// LogValue logs the settings with the password redacted.
func (e Etcd) LogValue() slog.Value {
	list := e.settingsList()
	attrs := make([]slog.Attr, 0, len(list))
	for _, s := range list {
		attrs = append(attrs, slog.String(s.key, s.value))
	}
	return slog.GroupValue(attrs...)
}

// ClientConfig is the etcd client configuration these settings describe:
// the endpoints, the user, TLS from the PEM files (for https endpoints), and
// timeouts that keep a dead member from hanging calls. It reads the files,
// so an unreadable or malformed one fails here, at start, as an *Error
// naming its variable.
func (e Etcd) ClientConfig() (clientv3.Config, error) {
	tlsConfig, problems := e.tlsConfig()
	if len(problems) > 0 {
		return clientv3.Config{}, &Error{Problems: problems}
	}
	return clientv3.Config{
		Endpoints:            slices.Clone(e.Endpoints),
		Username:             e.Username,
		Password:             e.Password,
		TLS:                  tlsConfig,
		DialTimeout:          etcdDialTimeout,
		DialKeepAliveTime:    etcdKeepAliveTime,
		DialKeepAliveTimeout: etcdKeepAliveTimeout,
	}, nil
}

func (e Etcd) tlsConfig() (*tls.Config, []string) {
	if e.scheme() != "https" {
		return nil, nil
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	var problems []string
	if e.CAFile != "" {
		roots, err := readCAFile(e.CAFile)
		if err != nil {
			problems = append(problems, "ETCD_CA_FILE: "+err.Error())
		}
		config.RootCAs = roots
	}
	if e.CertFile != "" || e.KeyFile != "" {
		pair, pairProblems := readKeyPair(e.CertFile, e.KeyFile)
		problems = append(problems, pairProblems...)
		config.Certificates = pair
	}
	return config, problems
}

func readCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate; give the CA certificate that signed etcd's", path)
	}
	return roots, nil
}

func readKeyPair(certFile, keyFile string) ([]tls.Certificate, []string) {
	var problems []string
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		problems = append(problems, "ETCD_CERT_FILE: "+err.Error())
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		problems = append(problems, "ETCD_KEY_FILE: "+err.Error())
	}
	if len(problems) > 0 {
		return nil, problems
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, []string{fmt.Sprintf("ETCD_CERT_FILE, ETCD_KEY_FILE: not a certificate and its private key (%v)", err)}
	}
	return []tls.Certificate{pair}, nil
}

// Migration is what `gpubot migrate` reads: the bbolt file to copy and the
// etcd to copy it into. It is the one command that takes DB_PATH and
// ETCD_ENDPOINTS together, and the only settings it needs are these.
type Migration struct {
	DBPath   string
	Etcd     Etcd
	LogLevel string
}

// migrationVariables are the variables LoadMigration reads; it ignores the
// others, so migrate runs without Slack or fal settings.
var migrationVariables = []string{
	"DB_PATH", "ETCD_ENDPOINTS", "ETCD_PREFIX", "ETCD_USERNAME", "ETCD_PASSWORD",
	"ETCD_CA_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE", "LOG_LEVEL",
}

// LoadMigration reads and checks the settings of `gpubot migrate` as Load
// does for the bot: ETCD_ENDPOINTS is required, DB_PATH may be set beside it
// (or left to its default). On failure the error is an *Error.
func LoadMigration(getenv func(string) string) (Migration, error) {
	var spec settings
	problems, failed := decodeVariables(&spec, getenv, func(key string) bool {
		return slices.Contains(migrationVariables, key)
	})
	spec.crossCheckStorage(reporter(&problems, failed), failed, isSet(getenv), true)
	if len(problems) > 0 {
		return Migration{}, &Error{Problems: problems}
	}
	return Migration{DBPath: string(spec.DBPath), Etcd: spec.etcd(), LogLevel: string(spec.LogLevel)}, nil
}

// etcdOnlyVariables mean nothing without ETCD_ENDPOINTS.
var etcdOnlyVariables = []string{"ETCD_USERNAME", "ETCD_PASSWORD", "ETCD_CA_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"}

// crossCheckStorage checks where state lives: the bbolt file or etcd, never
// both (except for migrate, which copies one into the other), and the etcd
// settings that come in pairs or need TLS.
func (s settings) crossCheckStorage(report func(key, format string, args ...any), failed map[string]bool, set func(string) bool, migrating bool) {
	if failed["ETCD_ENDPOINTS"] {
		return // every rule here depends on it; it is reported already
	}
	if len(s.EtcdEndpoints) == 0 {
		if migrating {
			report("ETCD_ENDPOINTS", "not set; gpubot migrate copies the bbolt file at DB_PATH into the etcd at ETCD_ENDPOINTS, so set it to the etcd client URLs")
			return
		}
		for _, key := range etcdOnlyVariables {
			if set(key) {
				report(key, "set, but ETCD_ENDPOINTS is empty, so state is in the bbolt file and this is unused; set ETCD_ENDPOINTS, or drop %s", key)
			}
		}
		return
	}
	if !migrating && set("DB_PATH") {
		report("DB_PATH", "set together with ETCD_ENDPOINTS, but state lives in one place; drop DB_PATH to keep state in etcd (copy the bbolt file there first with `gpubot migrate`, the one command that takes both), or drop ETCD_ENDPOINTS to stay on the bbolt file")
	}
	for _, pair := range [][2]string{
		{"ETCD_USERNAME", "ETCD_PASSWORD"}, {"ETCD_PASSWORD", "ETCD_USERNAME"},
	} {
		if set(pair[0]) && !set(pair[1]) {
			report(pair[0], "set without %s; set both, or neither when etcd needs no authentication", pair[1])
		}
	}
	for _, pair := range [][2]string{
		{"ETCD_CERT_FILE", "ETCD_KEY_FILE"}, {"ETCD_KEY_FILE", "ETCD_CERT_FILE"},
	} {
		if set(pair[0]) && !set(pair[1]) {
			report(pair[0], "set without %s; a client certificate needs its private key, so set both, or neither", pair[1])
		}
	}
	if s.etcd().scheme() == "http" {
		for _, key := range []string{"ETCD_CA_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"} {
			if set(key) {
				report(key, "set, but ETCD_ENDPOINTS are http:// URLs, which use no TLS; write them with https://, or drop %s", key)
			}
		}
	}
}

// dbPathInUse is the bbolt file, or "" when state lives in etcd, so nothing
// opens a file that is not the store.
func (s settings) dbPathInUse() string {
	if len(s.EtcdEndpoints) > 0 {
		return ""
	}
	return string(s.DBPath)
}

func (s settings) etcd() Etcd {
	return Etcd{
		Endpoints: slices.Clone(s.EtcdEndpoints),
		Prefix:    string(s.EtcdPrefix),
		Username:  string(s.EtcdUsername),
		Password:  string(s.EtcdPassword),
		CAFile:    string(s.EtcdCAFile),
		CertFile:  string(s.EtcdCertFile),
		KeyFile:   string(s.EtcdKeyFile),
	}
}

type etcdEndpoints []string

// Decode keeps each endpoint as scheme://host:port, without duplicates. The
// etcd client takes the credentials of the first endpoint for all of them,
// so a list mixing http and https is refused.
func (l *etcdEndpoints) Decode(value string) error {
	var endpoints, problems []string
	for _, item := range splitList(value) {
		endpoint, err := parseEtcdEndpoint(item)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if !slices.Contains(endpoints, endpoint) {
			endpoints = append(endpoints, endpoint)
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	schemes := make(map[string]bool)
	for _, endpoint := range endpoints {
		scheme, _, _ := strings.Cut(endpoint, "://")
		schemes[scheme] = true
	}
	if len(schemes) > 1 {
		return errors.New("mixes http:// and https://; every member must be reached the same way")
	}
	*l = endpoints
	return nil
}

func parseEtcdEndpoint(item string) (string, error) {
	const credentials = "put them in ETCD_USERNAME and ETCD_PASSWORD"
	if !strings.Contains(item, "://") {
		if strings.Contains(item, "@") {
			return "", errors.New("an endpoint carries credentials; " + credentials)
		}
		return "", fmt.Errorf("%q has no scheme; write http://%s, or https://%s when etcd serves TLS", item, item, item)
	}
	u, err := url.Parse(item)
	switch {
	case err != nil && strings.Contains(item, "@"):
		return "", errors.New("an endpoint carries credentials and is not a URL; " + credentials)
	case err != nil:
		return "", fmt.Errorf("%q is not a URL; use e.g. https://etcd-0:2379", item)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%q must be an http:// or https:// URL", u.Redacted())
	case u.User != nil:
		return "", fmt.Errorf("%q carries credentials; %s", u.Redacted(), credentials)
	case u.Hostname() == "":
		return "", fmt.Errorf("%q has no host; use e.g. https://etcd-0:2379", u.Redacted())
	case u.Port() == "":
		return "", fmt.Errorf("%q has no port; etcd's client port is usually 2379, e.g. %s://%s", item, u.Scheme, net.JoinHostPort(u.Hostname(), "2379"))
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("%q has a path, query or fragment; give scheme://host:port only", item)
	}
	return u.Scheme + "://" + u.Host, nil
}

type etcdPrefix string

// Decode ends the prefix in "/", so /gpubot and /gpubot2 never share keys.
func (p *etcdPrefix) Decode(value string) error {
	if strings.ContainsFunc(value, isSpaceOrControl) {
		return fmt.Errorf("%q contains whitespace or control characters; use e.g. /gpubot/", value)
	}
	if !strings.HasSuffix(value, "/") {
		value += "/"
	}
	*p = etcdPrefix(value)
	return nil
}

type etcdUsername string

func (u *etcdUsername) Decode(value string) error {
	if err := checkSecretShape(value); err != nil {
		return err
	}
	*u = etcdUsername(value)
	return nil
}

// etcdPassword is a secret: its errors never quote it. Unlike a token it may
// hold spaces.
type etcdPassword string

func (p *etcdPassword) Decode(value string) error {
	if strings.HasPrefix(value, `"`) || strings.HasPrefix(value, `'`) {
		return checkSecretShape(value)
	}
	if strings.ContainsFunc(value, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return errors.New("contains control characters; paste the value alone, on one line")
	}
	*p = etcdPassword(value)
	return nil
}

type pemFile string

func (f *pemFile) Decode(value string) error {
	if strings.HasSuffix(value, "/") {
		return fmt.Errorf("%q is a directory; name the PEM file, e.g. %setcd.pem", value, value)
	}
	*f = pemFile(value)
	return nil
}

// leaderTTL is an etcd lease's TTL: whole seconds, at least etcd's shortest.
type leaderTTL time.Duration

func (d *leaderTTL) Decode(value string) error {
	parsed, err := durations.Parse(value)
	switch {
	case errors.Is(err, durations.ErrTooLong):
		return fmt.Errorf("%q is %w", value, err)
	case err != nil:
		return fmt.Errorf("%q is not a duration; use e.g. 10s or 1m", value)
	case parsed < minLeaderTTL:
		return fmt.Errorf("%s is shorter than etcd's shortest lease; use at least %s (e.g. 10s)", durations.Format(parsed), durations.Format(minLeaderTTL))
	case parsed%time.Second != 0:
		return fmt.Errorf("%q is not whole seconds (an etcd lease counts seconds); use e.g. 10s", value)
	}
	*d = leaderTTL(parsed)
	return nil
}

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }
