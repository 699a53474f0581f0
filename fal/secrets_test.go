package fal_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
)

// TestAPIKeyNeverLeaks drives every error path with a debug logger and
// checks that neither the logs nor the errors contain the admin key, even
// when a misbehaving server echoes it back.
func TestAPIKeyNeverLeaks(t *testing.T) {
	t.Parallel()
	create := func(c testClient) error {
		_, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "k")
		return err
	}
	get := func(c testClient) error { _, err := c.Get(context.Background(), "inst_1"); return err }
	list := func(c testClient) error { _, err := c.List(context.Background()); return err }
	short := func(cfg *fal.Config) { cfg.MaxElapsed = 200 * time.Millisecond; cfg.Timeout = 50 * time.Millisecond }
	echo := func(status int, contentType, format string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", contentType)
			w.WriteHeader(status)
			fmt.Fprintf(w, format, r.Header.Get("Authorization"))
		}
	}

	cases := []struct {
		name   string
		client func(t *testing.T) testClient
		run    func(testClient) error
	}{
		{"pre-send validation", simClient(falsim.Options{}), func(c testClient) error {
			_, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: "nope", SSHKey: sshKey}, "k")
			return err
		}},
		{"400", simClient(falsim.Options{}, func(s *falsim.Server) { s.FailNext(1, 400) }), create},
		{"401", simClient(falsim.Options{APIKey: "another-key"}), create},
		{"403", simClient(falsim.Options{APIKey: "another-key", ForbiddenKeys: []string{apiKey}}), list},
		{"404", simClient(falsim.Options{}), get},
		{"429 until the budget is spent", simClient(falsim.Options{}, func(s *falsim.Server) { s.RateLimitNext(1000, 0) }, short), create},
		{"500 until the budget is spent", simClient(falsim.Options{}, func(s *falsim.Server) { s.FailNext(1000, 500) }, short), list},
		{"dropped connections", simClient(falsim.Options{}, func(s *falsim.Server) { s.DropNext(1000) }, short), create},
		{"timeouts", simClient(falsim.Options{}, func(s *falsim.Server) { s.HangNext(1000, time.Minute) }, short), get},
		{"cancelled", simClient(falsim.Options{}), func(c testClient) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return c.Delete(ctx, "inst_1")
		}},
		{"HTML echoing the headers", func(t *testing.T) testClient {
			return newUncheckedStubServer(t, echo(502, "text/html", "<html><pre>Authorization: %s</pre></html>"), short)
		}, get},
		{"JSON error echoing the key", func(t *testing.T) testClient {
			return newUncheckedStubServer(t, echo(401, "application/json", `{"error":{"type":"authorization_error","message":"bad key %s","request_id":"req_1"}}`))
		}, list},
		{"echo after a long prefix", func(t *testing.T) testClient {
			return newUncheckedStubServer(t, echo(404, "text/plain", strings.Repeat("x", 190)+"%s"))
		}, get},
		{"malformed success body", func(t *testing.T) testClient {
			return newUncheckedStubServer(t, echo(200, "application/json", `{"id": %q`))
		}, get},
		{"repeated cursor", func(t *testing.T) testClient {
			return newUncheckedStubServer(t, func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, `{"instances":[],"next_cursor":%q,"has_more":true}`, r.Header.Get("Authorization"))
			})
		}, list},
		{"redirect", func(t *testing.T) testClient {
			return newUncheckedStubServer(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://127.0.0.1:1/?"+r.Header.Get("Authorization"), http.StatusFound)
			})
		}, get},
		{"connection refused", func(t *testing.T) testClient {
			server := httptest.NewServer(http.NotFoundHandler())
			server.Close()
			return newTestClient(t, server.URL+"/v1", short)
		}, create},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.client(t)
			err := tc.run(c)
			if err == nil {
				t.Fatal("the error path returned no error")
			}
			for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
				if strings.Contains(text, apiKey) {
					t.Errorf("the error shows the key: %s", text)
				}
			}
			if logs := c.logs.String(); strings.Contains(logs, apiKey) {
				t.Errorf("the logs show the key:\n%s", logs)
			}
		})
	}
}

func TestLogsSayWhatHappenedWithoutTheKey(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	sim.FailNext(1, http.StatusInternalServerError)
	c := newTestClient(t, sim.URL())
	if _, err := c.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs := c.logs.String()
	if !strings.Contains(logs, "retrying") || !strings.Contains(logs, "op=list") || !strings.Contains(logs, "500") {
		t.Errorf("logs do not tell of the retried 500:\n%s", logs)
	}
	if strings.Contains(logs, apiKey) || strings.Contains(logs, "Authorization") {
		t.Errorf("logs show the credentials:\n%s", logs)
	}
}

func TestConfigErrorsDoNotQuoteTheKey(t *testing.T) {
	for _, key := range []string{apiKey + " trailing", "\t" + apiKey, apiKey + "\r\n"} {
		_, err := fal.New(fal.Config{APIKey: key})
		if err == nil || strings.Contains(err.Error(), apiKey) {
			t.Errorf("New with a malformed key: err %v", err)
		}
	}
}

// simClient starts a falsim (with the contract check) and a fast client.
func simClient(opts falsim.Options, setup ...any) func(t *testing.T) testClient {
	return func(t *testing.T) testClient {
		sim := newSim(t, opts)
		var configure []func(*fal.Config)
		for _, step := range setup {
			switch step := step.(type) {
			case func(*falsim.Server):
				step(sim)
			case func(*fal.Config):
				configure = append(configure, step)
			}
		}
		return newTestClient(t, sim.URL(), configure...)
	}
}
