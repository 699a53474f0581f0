package fal_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/testkit"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
)

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return data
}

func TestCreateGetListDelete(t *testing.T) {
	sim := newSim(t, falsim.Options{Manual: true})
	c := newTestClient(t, sim.URL())
	ctx := context.Background()

	small, err := c.Create(ctx, fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "key-small")
	if err != nil {
		t.Fatalf("create 1x: %v", err)
	}
	if small.Status != fal.StatusPending || small.InstanceType != fal.Type1xH100 || small.Region == "" || small.IP != "" {
		t.Errorf("created %+v, want a pending 1x with a region and no IP yet", small)
	}
	big, err := c.Create(ctx, fal.CreateRequest{InstanceType: fal.Type8xH100, SSHKey: sshKey, Sector: fal.Sector2}, "key-big")
	if err != nil {
		t.Fatalf("create 8x: %v", err)
	}
	if big.Sector != fal.Sector2 {
		t.Errorf("8x sector %q, want sector_2", big.Sector)
	}

	for range 2 {
		if err := sim.Step(small.ID); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Get(ctx, small.ID)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.Status != fal.StatusReady || got.IP == "" {
		t.Errorf("get %+v, want ready with an IP", got)
	}

	all, err := c.List(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if ids := instanceIDs(all); !slices.Equal(ids, []string{small.ID, big.ID}) {
		t.Errorf("list %v, want [%s %s]", ids, small.ID, big.ID)
	}

	if err := c.Delete(ctx, small.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := c.Get(ctx, small.ID); !fal.IsNotFound(err) {
		t.Errorf("get after delete: %v, want not found", err)
	}
	if err := c.Delete(ctx, small.ID); !fal.IsNotFound(err) {
		t.Errorf("second delete: %v, want not found", err)
	}
}

func TestRequestsCarryKeyAgentAndIdempotencyKey(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	c := newTestClient(t, sim.URL())
	inst, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "idem-123")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(context.Background(), inst.ID); err != nil {
		t.Fatal(err)
	}
	sent := c.wire.requests()
	if len(sent) != 2 {
		t.Fatalf("%d requests, want 2", len(sent))
	}
	for _, req := range sent {
		if got := req.header.Get("Authorization"); got != "Key "+apiKey {
			t.Errorf("%s %s: Authorization is not \"Key <key>\"", req.method, req.path)
		}
		if got := req.header.Get("User-Agent"); got != "gpubot/1.2.3" {
			t.Errorf("%s %s: User-Agent %q, want gpubot/1.2.3", req.method, req.path, got)
		}
	}
	if got := sent[0].header.Get("Idempotency-Key"); got != "idem-123" {
		t.Errorf("create Idempotency-Key %q, want idem-123", got)
	}
	if got := sent[0].header.Get("Content-Type"); got != "application/json" {
		t.Errorf("create Content-Type %q, want application/json", got)
	}
	if got := sent[1].header.Get("Idempotency-Key"); got != "" {
		t.Errorf("get sent Idempotency-Key %q", got)
	}
}

func TestRetriesRateLimitHonouringRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	sim := newSim(t, falsim.Options{})
	sim.RateLimitNext(1, time.Second)
	c := newTestClient(t, sim.URL())

	start := time.Now()
	inst, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "k")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("retried after %s, before the 1s Retry-After", took)
	}
	if cnt := sim.Counters(); cnt.CreateCalls != 2 || cnt.Creates != 1 || sim.Instances()[0].ID != inst.ID {
		t.Errorf("counters %+v, want 2 calls making 1 instance", cnt)
	}
}

func TestRetriesRateLimitHonouringRetryAfterDate(t *testing.T) {
	t.Parallel()
	arrivals := make(chan time.Time, 2)
	c := newStubServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrivals <- time.Now()
		if len(arrivals) == 1 {
			// HTTP-dates have whole seconds: this asks for a wait of 1 to 2s.
			w.Header().Set("Retry-After", time.Now().Add(2*time.Second).UTC().Format(http.TimeFormat))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"type":"rate_limited","message":"Rate limit exceeded"}}`))
			return
		}
		writeInstance(w, http.StatusCreated, fal.Instance{ID: "inst_1", InstanceType: fal.Type1xH100, Region: "us-east", Status: fal.StatusPending})
	})
	inst, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "k")
	if err != nil || inst.ID != "inst_1" {
		t.Fatalf("create: %+v, %v", inst, err)
	}
	if len(arrivals) != 2 {
		t.Fatalf("%d calls, want 2", len(arrivals))
	}
	first, second := <-arrivals, <-arrivals
	if gap := second.Sub(first); gap < 900*time.Millisecond {
		t.Errorf("retried %s after the 429, before the Retry-After date", gap)
	}
}

func TestRetriesServerErrorsWithTheSameIdempotencyKey(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	sim.FailNext(2, http.StatusInternalServerError)
	c := newTestClient(t, sim.URL())

	inst, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: fal.Type8xH100, SSHKey: sshKey, Sector: fal.Sector1}, "stored-key-42")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	sent := c.wire.requests()
	if len(sent) != 3 {
		t.Fatalf("%d attempts, want 3", len(sent))
	}
	for i, req := range sent {
		if got := req.header.Get("Idempotency-Key"); got != "stored-key-42" {
			t.Errorf("attempt %d: Idempotency-Key %q, want stored-key-42", i+1, got)
		}
	}
	if cnt := sim.Counters(); cnt.Creates != 1 || cnt.Instances != 1 {
		t.Errorf("counters %+v, want exactly one instance", cnt)
	}
	if live := sim.Instances(); len(live) != 1 || live[0].ID != inst.ID {
		t.Errorf("live %v, want just %s", live, inst.ID)
	}
}

func TestLostCreateResponseIsRetriedIntoTheSameInstance(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	sim.InjectNext(fal.OpCreate, 1, falsim.Fault{LoseResponse: true})
	c := newTestClient(t, sim.URL())

	inst, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "k")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if live := sim.Instances(); len(live) != 1 || live[0].ID != inst.ID {
		t.Errorf("live %v, want only %s: the retry must replay, not create again", live, inst.ID)
	}
}

func TestTimeoutThenSuccess(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	sim.HangNext(1, time.Minute)
	c := newTestClient(t, sim.URL(), func(cfg *fal.Config) { cfg.Timeout = 300 * time.Millisecond })

	start := time.Now()
	if _, err := c.List(context.Background()); err != nil {
		t.Fatalf("list: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s", took)
	}
	// The first call hangs and times out; on a loaded machine a later one
	// may too, but only the first is held for a minute.
	if got := sim.Counters().Calls[fal.OpList]; got < 2 {
		t.Errorf("%d list calls, want the timed-out one and a retry", got)
	}
}

func TestDroppedConnectionThenSuccess(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	sim.DropNext(1)
	var observed []int
	var mu sync.Mutex
	c := newTestClient(t, sim.URL(), func(cfg *fal.Config) {
		cfg.Observe = func(op string, status int, _ time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			observed = append(observed, status)
		}
	})
	inst, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "k")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if live := sim.Instances(); len(live) != 1 || live[0].ID != inst.ID {
		t.Errorf("live %v, want only %s", live, inst.ID)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(observed, []int{0, http.StatusCreated}) {
		t.Errorf("observed statuses %v, want [0 201]: the drop, then the success", observed)
	}
}

func TestCancelledContextStopsAtOnce(t *testing.T) {
	t.Run("during a hung request", func(t *testing.T) {
		sim := newSim(t, falsim.Options{})
		sim.HangNext(1, time.Minute)
		c := newTestClient(t, sim.URL(), func(cfg *fal.Config) { cfg.Timeout = time.Minute; cfg.MaxElapsed = time.Minute })
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Get(ctx, "inst_1")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v, want the context's deadline", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("returned after %s, want right after the 100ms deadline", took)
		}
		if got := sim.Counters().Calls[fal.OpGet]; got != 1 {
			t.Errorf("%d get calls, want 1: no retry after the caller gave up", got)
		}
	})
	t.Run("while waiting to retry", func(t *testing.T) {
		sim := newSim(t, falsim.Options{})
		sim.RateLimitNext(1, 30*time.Second)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c := newTestClient(t, sim.URL(), func(cfg *fal.Config) {
			cfg.MaxElapsed = time.Minute
			cfg.Observe = func(string, int, time.Duration) { cancel() } // cancel once the 429 is in
		})
		start := time.Now()
		_, err := c.List(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err %v, want context.Canceled", err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("returned after %s, want at once instead of waiting 30s", took)
		}
	})
	t.Run("before the call", func(t *testing.T) {
		sim := newSim(t, falsim.Options{})
		c := newTestClient(t, sim.URL())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := c.Delete(ctx, "inst_1"); !errors.Is(err, context.Canceled) {
			t.Errorf("err %v, want context.Canceled", err)
		}
		if got := sim.Counters().Calls; len(got) != 0 {
			t.Errorf("calls %v, want none", got)
		}
	})
}

func TestNonJSONErrorBodyKeepsStatusAndStartOfBody(t *testing.T) {
	t.Parallel()
	page := "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>" + strings.Repeat("<!-- padding -->", 30) + "</body></html>"
	var calls atomic.Int32
	c := newStubServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte(page))
	}, func(cfg *fal.Config) { cfg.MaxElapsed = time.Second })

	_, err := c.Get(context.Background(), "inst_1")
	var apiErr *fal.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err %v, want a *fal.Error", err)
	}
	if apiErr.Status != http.StatusBadGateway || !strings.HasPrefix(apiErr.Body, "<html><head><title>502 Bad Gateway") {
		t.Errorf("error %+v, want status 502 and the start of the page", apiErr)
	}
	if len(apiErr.Body) > 210 {
		t.Errorf("kept %d bytes of the body, want about 200", len(apiErr.Body))
	}
	if !fal.IsServer(err) || !strings.Contains(err.Error(), "502") || !strings.Contains(err.Error(), "Bad Gateway") {
		t.Errorf("err %q: want a server error naming 502 and the page", err)
	}
	if calls.Load() < 2 {
		t.Errorf("%d calls: a 502 should be retried", calls.Load())
	}
}

func TestClientErrorsAreNeverRetried(t *testing.T) {
	cases := []struct {
		name   string
		opts   falsim.Options
		setup  func(*falsim.Server)
		run    func(testClient) error
		op     string
		is     func(error) bool
		status int
	}{
		{
			name:  "400 on create",
			setup: func(s *falsim.Server) { s.FailNext(1, http.StatusBadRequest) },
			run: func(c testClient) error {
				_, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "k")
				return err
			},
			op: fal.OpCreate, is: fal.IsValidation, status: 400,
		},
		{
			name: "401 wrong key",
			opts: falsim.Options{APIKey: "some-other-key"},
			run:  func(c testClient) error { _, err := c.List(context.Background()); return err },
			op:   fal.OpList, is: fal.IsAuthorization, status: 401,
		},
		{
			name: "403 no compute permission",
			opts: falsim.Options{APIKey: "some-other-key", ForbiddenKeys: []string{apiKey}},
			run:  func(c testClient) error { return c.Delete(context.Background(), "inst_1") },
			op:   fal.OpDelete, is: fal.IsAuthorization, status: 403,
		},
		{
			name: "404 unknown instance",
			run:  func(c testClient) error { _, err := c.Get(context.Background(), "inst_missing"); return err },
			op:   fal.OpGet, is: fal.IsNotFound, status: 404,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sim := newSim(t, tc.opts)
			if tc.setup != nil {
				tc.setup(sim)
			}
			c := newTestClient(t, sim.URL())
			err := tc.run(c)
			if !tc.is(err) {
				t.Errorf("err %v: wrong class", err)
			}
			var apiErr *fal.Error
			if !errors.As(err, &apiErr) || apiErr.Status != tc.status || apiErr.RequestID == "" || apiErr.Type == "" {
				t.Errorf("err %#v, want a *fal.Error with status %d, a type and a request id", apiErr, tc.status)
			}
			if got := sim.Counters().Calls[tc.op]; got != 1 {
				t.Errorf("%d %s calls, want exactly 1", got, tc.op)
			}
		})
	}
}

func TestClassifiersTellErrorsApart(t *testing.T) {
	classifiers := map[string]func(error) bool{
		"authorization": fal.IsAuthorization, "validation": fal.IsValidation, "not found": fal.IsNotFound,
		"rate limited": fal.IsRateLimited, "server": fal.IsServer,
	}
	cases := []struct {
		err  error
		want string
	}{
		{&fal.Error{Status: 401}, "authorization"},
		{&fal.Error{Status: 403}, "authorization"},
		{&fal.Error{Status: 400}, "validation"},
		{&fal.Error{Status: 422, Type: fal.ErrorTypeValidation}, "validation"},
		{fmt.Errorf("create instance: %w", fal.ErrInvalidRequest), "validation"},
		{&fal.Error{Status: 404}, "not found"},
		{&fal.Error{Status: 429}, "rate limited"},
		{&fal.Error{Status: 500}, "server"},
		{&fal.Error{Status: 503}, "server"},
		{fmt.Errorf("wrapped twice: %w", fmt.Errorf("once: %w", &fal.Error{Status: 500})), "server"},
		{errors.New("connection refused"), ""},
		{nil, ""},
	}
	for _, tc := range cases {
		for name, is := range classifiers {
			if got := is(tc.err); got != (name == tc.want) {
				t.Errorf("%v: %s = %v", tc.err, name, got)
			}
		}
	}
}

func TestPreSendValidationMakesNoCall(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	c := newTestClient(t, sim.URL())
	ctx := context.Background()
	cases := map[string]func() error{
		"unknown type": func() error {
			_, err := c.Create(ctx, fal.CreateRequest{InstanceType: "gpu_2x_a100", SSHKey: sshKey}, "k")
			return err
		},
		"sector with 1x": func() error {
			_, err := c.Create(ctx, fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey, Sector: fal.Sector1}, "k")
			return err
		},
		"unknown sector": func() error {
			_, err := c.Create(ctx, fal.CreateRequest{InstanceType: fal.Type8xH100, SSHKey: sshKey, Sector: "sector_4"}, "k")
			return err
		},
		"empty ssh key": func() error {
			_, err := c.Create(ctx, fal.CreateRequest{InstanceType: fal.Type8xH100, SSHKey: "  "}, "k")
			return err
		},
		"empty idempotency key": func() error {
			_, err := c.Create(ctx, fal.CreateRequest{InstanceType: fal.Type8xH100, SSHKey: sshKey}, "")
			return err
		},
		"empty id on get":    func() error { _, err := c.Get(ctx, ""); return err },
		"empty id on delete": func() error { return c.Delete(ctx, "") },
	}
	for name, run := range cases {
		err := run()
		if !fal.IsValidation(err) || !errors.Is(err, fal.ErrInvalidRequest) {
			t.Errorf("%s: err %v, want a validation error", name, err)
		}
	}
	cnt := sim.Counters()
	if len(cnt.Calls) != 0 || cnt.CreateCalls != 0 || cnt.Creates != 0 {
		t.Errorf("counters %+v, want no call at all", cnt)
	}
	if n := len(c.wire.requests()); n != 0 {
		t.Errorf("%d requests sent, want 0", n)
	}
}

func TestValidateMessagesSayHowToFixIt(t *testing.T) {
	cases := []struct {
		req  fal.CreateRequest
		want string
	}{
		{fal.CreateRequest{InstanceType: "h100", SSHKey: sshKey}, "gpu_1x_h100_sxm5 or gpu_8x_h100_sxm5"},
		{fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey, Sector: fal.Sector1}, "only be chosen for gpu_8x_h100_sxm5"},
		{fal.CreateRequest{InstanceType: fal.Type8xH100, SSHKey: sshKey, Sector: "1"}, "sector_1, sector_2, sector_3"},
		{fal.CreateRequest{InstanceType: fal.Type8xH100}, "SSH public key is required"},
	}
	for _, tc := range cases {
		if err := tc.req.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want it to mention %q", tc.req, err, tc.want)
		}
	}
	for _, ok := range []fal.CreateRequest{
		{InstanceType: fal.Type1xH100, SSHKey: sshKey},
		{InstanceType: fal.Type8xH100, SSHKey: sshKey},
		{InstanceType: fal.Type8xH100, SSHKey: sshKey, Sector: fal.Sector3},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
}

func TestListFollowsCursorsOverAllPages(t *testing.T) {
	sim := newSim(t, falsim.Options{Manual: true, PageSize: 4})
	var want []string
	for range 25 {
		sim.AddInstance(fal.Instance{})
	}
	for _, inst := range sim.Instances() {
		want = append(want, inst.ID)
	}

	c := newTestClient(t, sim.URL())
	got, err := c.List(context.Background())
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if !slices.Equal(instanceIDs(got), want) {
		t.Errorf("listed %v, want %v", instanceIDs(got), want)
	}
	if calls := sim.Counters().Calls[fal.OpList]; calls != 7 {
		t.Errorf("%d list calls, want 7 pages of 4", calls)
	}

	sized := newTestClient(t, sim.URL(), func(cfg *fal.Config) { cfg.ListPageSize = 10 })
	if got, err := sized.List(context.Background()); err != nil || len(got) != 25 {
		t.Fatalf("list with limit 10: %d instances, %v", len(got), err)
	}
	sent := sized.wire.requests()
	if len(sent) != 3 || !strings.Contains(sent[0].query, "limit=10") || !strings.Contains(sent[1].query, "cursor=") {
		t.Errorf("requests %v, want 3 pages sent with limit=10 and cursors", sent)
	}
}

func TestListOfNothing(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	got, err := newTestClient(t, sim.URL()).List(context.Background())
	if err != nil || len(got) != 0 {
		t.Errorf("list = %v, %v; want empty", got, err)
	}
}

func TestListRetriesAFailedPage(t *testing.T) {
	sim := newSim(t, falsim.Options{PageSize: 2})
	for range 5 {
		sim.AddInstance(fal.Instance{})
	}
	c := newTestClient(t, sim.URL())
	// The first page is slow but fine, the second fails once.
	sim.InjectNext(fal.OpList, 1, falsim.Fault{Hang: time.Millisecond})
	sim.InjectNext(fal.OpList, 1, falsim.Fault{Status: http.StatusInternalServerError})
	got, err := c.List(context.Background())
	if err != nil || len(got) != 5 {
		t.Fatalf("list with a failed page: %d, %v", len(got), err)
	}
	if calls := sim.Counters().Calls[fal.OpList]; calls != 4 {
		t.Errorf("%d list calls, want 4 (3 pages, one retried)", calls)
	}
}

func TestListStopsOnARepeatedCursor(t *testing.T) {
	var calls atomic.Int32
	c := newStubServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"instances":[],"next_cursor":"Mg==","has_more":true}`))
	})
	_, err := c.List(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cursor") {
		t.Errorf("err %v, want a complaint about the cursor", err)
	}
	if calls.Load() != 2 {
		t.Errorf("%d calls, want 2: the second answer repeats the cursor", calls.Load())
	}
}

func TestListStopsAfterTheMaximumPages(t *testing.T) {
	var calls atomic.Int32
	c := newStubServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"instances":[{"id":"inst_%d","instance_type":"gpu_1x_h100_sxm5","region":"us-west","status":"ready"}],"next_cursor":"c%d","has_more":true}`, n, n)
	})
	fal.SetMaxListPages(c.Client, 50)
	_, err := c.List(context.Background())
	if err == nil || !strings.Contains(err.Error(), "50 pages") {
		t.Errorf("err %v, want it to give up after 50 pages", err)
	}
	if calls.Load() != 50 {
		t.Errorf("%d calls, want 50", calls.Load())
	}
}

func TestIdempotencyReplayAndExpiry(t *testing.T) {
	clock := testkit.FixedClock(time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC))
	sim := newSim(t, falsim.Options{Now: clock.Now})
	c := newTestClient(t, sim.URL())
	req := fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}
	ctx := context.Background()

	first, err := c.Create(ctx, req, "req-7")
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(9 * time.Minute)
	again, err := c.Create(ctx, req, "req-7")
	if err != nil || again != first {
		t.Errorf("same key within 10 minutes: %+v, %v; want the first instance %+v", again, err, first)
	}
	if n := sim.Counters().Creates; n != 1 {
		t.Errorf("%d instances created, want 1", n)
	}

	clock.Advance(time.Minute)
	later, err := c.Create(ctx, req, "req-7")
	if err != nil || later.ID == first.ID {
		t.Errorf("same key after 10 minutes: %+v, %v; want a new instance", later, err)
	}
	if n := sim.Counters().Creates; n != 2 {
		t.Errorf("%d instances created, want 2", n)
	}
}

func TestDeleteAfterALostResponseSucceeds(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	sim.AddInstance(fal.Instance{ID: "inst_gone"})
	sim.InjectNext(fal.OpDelete, 1, falsim.Fault{LoseResponse: true})
	c := newTestClient(t, sim.URL())
	if err := c.Delete(context.Background(), "inst_gone"); err != nil {
		t.Errorf("delete whose first answer was lost: %v, want success", err)
	}
	if n := len(sim.Instances()); n != 0 {
		t.Errorf("%d instances left", n)
	}
}

func TestRetriesStopAtMaxElapsed(t *testing.T) {
	t.Parallel()
	sim := newSim(t, falsim.Options{})
	sim.FailNext(1_000_000, http.StatusInternalServerError)
	c := newTestClient(t, sim.URL(), func(cfg *fal.Config) { cfg.MaxElapsed = time.Second })
	start := time.Now()
	_, err := c.Create(context.Background(), fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "k")
	took := time.Since(start)
	if !fal.IsServer(err) || !strings.Contains(err.Error(), "gave up after") {
		t.Errorf("err %v, want a server error after giving up", err)
	}
	if took > 5*time.Second {
		t.Errorf("kept retrying for %s with a 1s budget", took)
	}
	if calls := sim.Counters().CreateCalls; calls < 3 {
		t.Errorf("%d attempts in 1s with ~10ms backoff, want several", calls)
	}
	if sim.Counters().Creates != 0 {
		t.Error("an instance was created")
	}
}

func TestRetryAfterBeyondTheBudgetGivesUpAtOnce(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	sim.RateLimitNext(1, time.Minute)
	c := newTestClient(t, sim.URL(), func(cfg *fal.Config) { cfg.MaxElapsed = 10 * time.Second })
	start := time.Now()
	_, err := c.List(context.Background())
	if !fal.IsRateLimited(err) {
		t.Errorf("err %v, want rate limited", err)
	}
	var apiErr *fal.Error
	if errors.As(err, &apiErr) && apiErr.RetryAfter != time.Minute {
		t.Errorf("RetryAfter %s, want 1m", apiErr.RetryAfter)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("waited %s for a retry the 10s budget could never make", took)
	}
}

func TestChaosStillCreatesExactlyOnePerKey(t *testing.T) {
	t.Parallel()
	sim := newSim(t, falsim.Options{})
	sim.SetFaultRate(0.4, 2026)
	c := newTestClient(t, sim.URL())
	ctx := context.Background()
	ids := map[string]bool{}
	for i := range 20 {
		key := fmt.Sprintf("chaos-%d", i)
		inst, err := c.Create(ctx, fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, key)
		if err != nil {
			t.Fatalf("create %s: %v", key, err)
		}
		again, err := c.Create(ctx, fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, key)
		if err != nil || again.ID != inst.ID {
			t.Fatalf("repeat of %s: %+v, %v", key, again, err)
		}
		ids[inst.ID] = true
	}
	if got, err := c.List(ctx); err != nil || len(got) != 20 {
		t.Fatalf("list: %d, %v", len(got), err)
	}
	if cnt := sim.Counters(); cnt.Creates != 20 || len(ids) != 20 || cnt.Faults == 0 {
		t.Errorf("counters %+v with %d ids: want 20 instances despite faults", cnt, len(ids))
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var calls atomic.Int32
	c := newStubServer(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
	})
	_, err := c.Get(context.Background(), "inst_1")
	var apiErr *fal.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusTemporaryRedirect {
		t.Errorf("err %v, want a 307 error", err)
	}
	if calls.Load() != 1 {
		t.Errorf("%d calls, want 1", calls.Load())
	}
}

func TestMalformedSuccessBodyIsAnError(t *testing.T) {
	cases := map[string]string{
		"not JSON":    `not json`,
		"no id":       `{"instance_type":"gpu_1x_h100_sxm5","region":"us-west","status":"ready"}`,
		"wrong types": `{"id":7}`,
		"truncated":   `{"id":"inst_1","instance_`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			// These bodies break the contract on purpose: no contract check here.
			c := newUncheckedStubServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(body))
			})
			if _, err := c.Get(context.Background(), "inst_1"); err == nil || !strings.Contains(err.Error(), "decode") {
				t.Errorf("err %v, want a decode error", err)
			}
			if n := len(c.wire.requests()); n != 1 {
				t.Errorf("%d calls, want 1: a bad body is not retried", n)
			}
		})
	}
}

func TestNewChecksConfig(t *testing.T) {
	bad := []fal.Config{
		{},
		{APIKey: "with space"},
		{APIKey: "line\nbreak"},
		{APIKey: "k", BaseURL: "api.fal.ai/v1"},
		{APIKey: "k", BaseURL: "ftp://api.fal.ai/v1"},
		{APIKey: "k", ListPageSize: -1},
	}
	for _, cfg := range bad {
		if _, err := fal.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
	if _, err := fal.New(fal.Config{APIKey: "k"}); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestObserveSeesEveryAttempt(t *testing.T) {
	sim := newSim(t, falsim.Options{})
	sim.FailNext(1, http.StatusInternalServerError)
	type seen struct {
		op     string
		status int
	}
	var mu sync.Mutex
	var got []seen
	c := newTestClient(t, sim.URL(), func(cfg *fal.Config) {
		cfg.Observe = func(op string, status int, d time.Duration) {
			if d <= 0 {
				t.Errorf("%s: duration %s", op, d)
			}
			mu.Lock()
			defer mu.Unlock()
			got = append(got, seen{op, status})
		}
	})
	ctx := context.Background()
	inst, err := c.Create(ctx, fal.CreateRequest{InstanceType: fal.Type1xH100, SSHKey: sshKey}, "k")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Get(ctx, inst.ID)
	_, _ = c.List(ctx)
	_ = c.Delete(ctx, inst.ID)
	want := []seen{{"create", 500}, {"create", 201}, {"get", 200}, {"list", 200}, {"delete", 204}}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("observed %v, want %v", got, want)
	}
}

func instanceIDs(list []fal.Instance) []string {
	ids := make([]string, 0, len(list))
	for _, inst := range list {
		ids = append(ids, inst.ID)
	}
	return ids
}

func TestOversizedResponseIsNotRetried(t *testing.T) {
	huge := strings.Repeat("x", 9<<20)
	c := newUncheckedStubServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"` + huge + `"}`))
	}, func(cfg *fal.Config) {
		// Reading 9 MB on a busy machine may take longer than the usual test timeout,
		// and an attempt that times out is retried: only the size may end this one.
		cfg.Timeout = time.Hour
	})
	_, err := c.Get(context.Background(), "inst_1")
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("err %v, want a too-large error", err)
	}
	if n := len(c.wire.requests()); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}
