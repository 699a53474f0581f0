package config

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// FuzzLoad checks what must hold for any environment: Load does not panic,
// a failure is one line per problem, each naming a variable, and no secret
// shows up in an error, in String or in a log line. The fuzzer shapes the
// text around each secret (prefixes like "xoxb-", quotes, whitespace) and a
// few echoed settings; the secret itself always contains a marker. The etcd
// password is shaped like the fal key. Seeds
// are in testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	f.Fuzz(func(t *testing.T, botPrefix, appPrefix, falPrefix, prices, approvers, httpAddr string) {
		for _, echoed := range []string{prices, approvers, httpAddr} {
			for _, marker := range secretMarkers {
				if strings.Contains(echoed, marker) {
					return // a secret placed in a non-secret setting is echoed by design
				}
			}
		}
		env := with(minimalEnv(), map[string]string{
			"SLACK_BOT_TOKEN":   botPrefix + "SECRETBOT",
			"SLACK_APP_TOKEN":   appPrefix + "SECRETAPP",
			"FAL_ADMIN_API_KEY": falPrefix + "SECRETFAL",
			"HOURLY_PRICES":     prices,
			"APPROVERS":         approvers,
			"HTTP_ADDR":         httpAddr,
			"DB_PATH":           "",
			"ETCD_ENDPOINTS":    "https://127.0.0.1:2379",
			"ETCD_USERNAME":     "gpubot",
			"ETCD_PASSWORD":     falPrefix + "SECRETPW",
		})
		cfg, err := Load(lookupIn(env))
		if err != nil {
			assertProblemsAreOneLineEach(t, err)
			assertNoSecret(t, err.Error())
			return
		}
		var logged bytes.Buffer
		slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", cfg)
		assertNoSecret(t, cfg.String())
		assertNoSecret(t, logged.String())
	})
}

func assertProblemsAreOneLineEach(t *testing.T, err error) {
	t.Helper()
	var configErr *Error
	if !errors.As(err, &configErr) || len(configErr.Problems) == 0 {
		t.Fatalf("Load error %v is not a *config.Error with problems", err)
	}
	for _, problem := range configErr.Problems {
		key, _, found := strings.Cut(problem, ": ")
		if !found || strings.ContainsAny(problem, "\n\r") || key != strings.ToUpper(key) || strings.Contains(key, " ") {
			t.Errorf("problem %q is not one line starting with a variable name", problem)
		}
	}
}
