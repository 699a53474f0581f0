package falsim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
)

func TestCreateAnswersPendingInstance(t *testing.T) {
	s := newSim(t, falsim.Options{Manual: true})

	r := createRaw(t, s, `{"instance_type":"gpu_8x_h100_sxm5","ssh_key":"ssh-ed25519 AAAA k","sector":"sector_2"}`, "")
	if r.status != http.StatusCreated {
		t.Fatalf("status %d, want 201; body %s", r.status, r.body)
	}
	inst := r.instance(t)
	if !strings.HasPrefix(inst.ID, "inst_") || len(inst.ID) <= len("inst_") {
		t.Errorf("id %q, want inst_<random>", inst.ID)
	}
	want := fal.Instance{ID: inst.ID, InstanceType: fal.Type8xH100, Region: "us-west", Sector: "sector_2", Status: fal.StatusPending, CreatorUserNickname: "falsim"}
	if inst != want {
		t.Errorf("created %+v, want %+v", inst, want)
	}
	if got := getRaw(t, s, inst.ID).instance(t); got != inst {
		t.Errorf("get after create = %+v, want %+v", got, inst)
	}
	other := mustCreate(t, s)
	if other.ID == inst.ID {
		t.Errorf("two creates got the same id %s", inst.ID)
	}
}

func TestStepMovesPendingToReadyWithIP(t *testing.T) {
	s := newSim(t, falsim.Options{Manual: true})
	id := mustCreate(t, s).ID

	wantSteps := []fal.Status{fal.StatusProvisioning, fal.StatusReady}
	for _, want := range wantSteps {
		if err := s.Step(id); err != nil {
			t.Fatalf("step to %s: %v", want, err)
		}
		got := getRaw(t, s, id).instance(t)
		if got.Status != want {
			t.Fatalf("status %s, want %s", got.Status, want)
		}
		if (got.IP != "") != (want == fal.StatusReady) {
			t.Errorf("status %s with ip %q: an IP comes exactly at ready", got.Status, got.IP)
		}
	}
	if err := s.Step(id); err == nil {
		t.Error("step past ready succeeded, want an error")
	}
	if err := s.Step("inst_missing"); err == nil {
		t.Error("step of an unknown id succeeded, want an error")
	}
}

func TestManualInstancesDoNotMoveOnTheirOwn(t *testing.T) {
	s := newSim(t, falsim.Options{Manual: true, ProvisionAfter: time.Nanosecond, ReadyAfter: time.Nanosecond})
	id := mustCreate(t, s).ID
	time.Sleep(5 * time.Millisecond) // let the (disabled) timers' deadlines pass
	if got := getRaw(t, s, id).instance(t).Status; got != fal.StatusPending {
		t.Errorf("status %s, want pending until Step", got)
	}
}

func TestTimersMoveInstanceToReady(t *testing.T) {
	const provisionAfter, readyAfter = 20 * time.Millisecond, 30 * time.Millisecond
	s := newSim(t, falsim.Options{ProvisionAfter: provisionAfter, ReadyAfter: readyAfter})
	start := time.Now()
	created := mustCreate(t, s)
	if created.Status != fal.StatusPending {
		t.Fatalf("created as %s, want pending", created.Status)
	}

	rank := map[fal.Status]int{fal.StatusPending: 0, fal.StatusProvisioning: 1, fal.StatusReady: 2}
	last := fal.StatusPending
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ticker := time.NewTicker(2 * time.Millisecond)
	defer ticker.Stop()
	for last != fal.StatusReady {
		select {
		case <-ctx.Done():
			t.Fatalf("still %s after 10s", last)
		case <-ticker.C:
		}
		inst := getRaw(t, s, created.ID).instance(t)
		if rank[inst.Status] < rank[last] {
			t.Fatalf("status went back from %s to %s", last, inst.Status)
		}
		if (inst.IP != "") != (inst.Status == fal.StatusReady) {
			t.Errorf("status %s with ip %q: an IP comes exactly at ready", inst.Status, inst.IP)
		}
		last = inst.Status
	}
	if took := time.Since(start); took < provisionAfter+readyAfter {
		t.Errorf("ready after %s, before ProvisionAfter+ReadyAfter", took)
	}
}

func TestCreateRejectsInvalidBodies(t *testing.T) {
	cases := []struct {
		name, body  string
		offContract bool // the request itself breaks the contract
	}{
		{"unknown type", `{"instance_type":"gpu_2x_a100","ssh_key":"k"}`, true},
		{"sector with 1x", `{"instance_type":"gpu_1x_h100_sxm5","ssh_key":"k","sector":"sector_1"}`, false},
		{"unknown sector", `{"instance_type":"gpu_8x_h100_sxm5","ssh_key":"k","sector":"sector_9"}`, true},
		{"missing ssh_key", `{"instance_type":"gpu_1x_h100_sxm5"}`, true},
		{"empty ssh_key", `{"instance_type":"gpu_1x_h100_sxm5","ssh_key":""}`, true},
		{"missing instance_type", `{"ssh_key":"k"}`, true},
		{"bad JSON", `{"instance_type":`, true},
		{"wrong JSON type", `{"instance_type":1,"ssh_key":"k"}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, found := newRecordingSim(t, falsim.Options{})
			r := createRaw(t, s, tc.body, "key-"+tc.name)
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400; body %s", r.status, r.body)
			}
			if got := r.apiError(t).Error.Type; got != "validation_error" {
				t.Errorf("error type %q, want validation_error", got)
			}
			if n := s.Counters().Creates; n != 0 {
				t.Errorf("%d instances created, want 0", n)
			}
			s.Close() // wait for the response check
			if got := len(found.bySide("request")); (got > 0) != tc.offContract {
				t.Errorf("request violations %v, want some: %v", found.bySide("request"), tc.offContract)
			}
			if got := found.bySide("response"); len(got) != 0 {
				t.Errorf("response violations: %v", got)
			}
		})
	}
}

func TestRejectedCreateIsNotReplayed(t *testing.T) {
	s := newSim(t, falsim.Options{})
	bad := createRaw(t, s, `{"instance_type":"gpu_1x_h100_sxm5","ssh_key":"k","sector":"sector_1"}`, "same-key")
	if bad.status != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", bad.status)
	}
	fixed := createRaw(t, s, create1x, "same-key")
	if fixed.status != http.StatusCreated {
		t.Fatalf("corrected create with the same key: status %d, want 201; body %s", fixed.status, fixed.body)
	}
}

func TestAuthorization(t *testing.T) {
	cases := []struct {
		name, header string
		want         int
		offContract  bool
	}{
		{"no header", "", http.StatusUnauthorized, true},
		{"bearer scheme", "Bearer " + testKey, http.StatusUnauthorized, true},
		{"wrong key", "Key not-the-key", http.StatusUnauthorized, false},
		{"forbidden key", "Key read-only-key", http.StatusForbidden, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, found := newRecordingSim(t, falsim.Options{ForbiddenKeys: []string{"read-only-key"}})
			for _, call := range []struct{ method, path, body string }{
				{http.MethodPost, "/compute/instances", create1x},
				{http.MethodGet, "/compute/instances", ""},
				{http.MethodGet, "/compute/instances/inst_x", ""},
				{http.MethodDelete, "/compute/instances/inst_x", ""},
			} {
				r := send(t, s, call.method, call.path, call.body, map[string]string{"Authorization": tc.header})
				if r.status != tc.want {
					t.Errorf("%s %s: status %d, want %d", call.method, call.path, r.status, tc.want)
				}
				if got := r.apiError(t).Error.Type; got != "authorization_error" {
					t.Errorf("%s %s: error type %q, want authorization_error", call.method, call.path, got)
				}
			}
			if n := s.Counters().Creates; n != 0 {
				t.Errorf("%d instances created without a valid key", n)
			}
			s.Close()
			if got := len(found.bySide("request")); (got > 0) != tc.offContract {
				t.Errorf("request violations %v, want some: %v", found.bySide("request"), tc.offContract)
			}
			if got := found.bySide("response"); len(got) != 0 {
				t.Errorf("response violations: %v", got)
			}
		})
	}
}

func TestEmptyAPIKeyOptionAcceptsAnyKey(t *testing.T) {
	s := falsim.New(falsim.Options{})
	defer s.Close()
	r := send(t, s, http.MethodGet, "/compute/instances", "", map[string]string{"Authorization": "Key anything"})
	if r.status != http.StatusOK {
		t.Errorf("status %d, want 200", r.status)
	}
}

func TestListPaginatesInCreationOrder(t *testing.T) {
	s := newSim(t, falsim.Options{Manual: true, PageSize: 4})
	var want []string
	for range 25 {
		want = append(want, mustCreate(t, s).ID)
	}

	var got []string
	cursor := ""
	pages := 0
	for pages < 100 {
		path := "/compute/instances"
		if cursor != "" {
			path += "?cursor=" + cursor
		}
		r := send(t, s, http.MethodGet, path, "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("page %d: status %d", pages+1, r.status)
		}
		var page struct {
			Instances  []fal.Instance `json:"instances"`
			NextCursor *string        `json:"next_cursor"`
			HasMore    bool           `json:"has_more"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, inst := range page.Instances {
			got = append(got, inst.ID)
		}
		if page.HasMore != (page.NextCursor != nil) {
			t.Errorf("page %d: has_more %v with next_cursor %v", pages, page.HasMore, page.NextCursor)
		}
		if page.NextCursor == nil {
			if !strings.Contains(string(r.body), `"next_cursor":null`) {
				t.Errorf("last page %s does not send next_cursor as null", r.body)
			}
			break
		}
		if len(page.Instances) != 4 {
			t.Errorf("page %d has %d instances, want 4", pages, len(page.Instances))
		}
		cursor = *page.NextCursor
	}
	if pages != 7 {
		t.Errorf("%d pages, want 7 (25 instances, 4 a page)", pages)
	}
	if !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}

	r := send(t, s, http.MethodGet, "/compute/instances?limit=30", "", nil)
	var all struct{ Instances []fal.Instance }
	if err := json.Unmarshal(r.body, &all); err != nil || len(all.Instances) != 25 {
		t.Errorf("limit=30 gave %d instances (err %v), want 25", len(all.Instances), err)
	}
}

func TestListOfNothingIsAnEmptyArray(t *testing.T) {
	s := newSim(t, falsim.Options{})
	r := send(t, s, http.MethodGet, "/compute/instances", "", nil)
	if want := `{"instances":[],"next_cursor":null,"has_more":false}`; string(r.body) != want {
		t.Errorf("body %s, want %s", r.body, want)
	}
}

func TestListRejectsBadParameters(t *testing.T) {
	s, found := newRecordingSim(t, falsim.Options{})
	for _, query := range []string{"cursor=not-ours", "limit=0", "limit=ten"} {
		r := send(t, s, http.MethodGet, "/compute/instances?"+query, "", nil)
		if r.status != http.StatusBadRequest || r.apiError(t).Error.Type != "validation_error" {
			t.Errorf("%s: status %d body %s, want 400 validation_error", query, r.status, r.body)
		}
	}
	s.Close()
	// fal documents no 400 for list: the contract flags every such answer,
	// and the two bad limits are off-contract requests as well.
	if got := len(found.bySide("response")); got != 3 {
		t.Errorf("%d response violations, want 3 (undocumented 400)", got)
	}
	if got := len(found.bySide("request")); got != 2 {
		t.Errorf("%d request violations, want 2 (limit below 1, limit not an integer)", got)
	}
}

func TestDeleteThenNotFound(t *testing.T) {
	s := newSim(t, falsim.Options{})
	id := mustCreate(t, s).ID

	first := send(t, s, http.MethodDelete, "/compute/instances/"+id, "", nil)
	if first.status != http.StatusNoContent || len(first.body) != 0 {
		t.Fatalf("delete: status %d body %q, want 204 and no body", first.status, first.body)
	}
	for _, method := range []string{http.MethodDelete, http.MethodGet} {
		r := send(t, s, method, "/compute/instances/"+id, "", nil)
		if r.status != http.StatusNotFound || r.apiError(t).Error.Type != "not_found" {
			t.Errorf("%s after delete: status %d body %s, want 404 not_found", method, r.status, r.body)
		}
	}
	if c := s.Counters(); c.Deletes != 1 || c.Calls["delete"] != 2 {
		t.Errorf("counters %+v, want 1 delete of 2 delete calls", c)
	}
	if n := len(s.Instances()); n != 0 {
		t.Errorf("%d live instances after delete, want 0", n)
	}
}

func TestIdempotencyReplayAndExpiry(t *testing.T) {
	clock := newFakeClock()
	s := newSim(t, falsim.Options{Manual: true, Now: clock.Now})

	first := createRaw(t, s, create1x, "key-1")
	if err := s.Step(first.instance(t).ID); err != nil { // the replay must not show this
		t.Fatal(err)
	}
	clock.Advance(falsim.IdempotencyWindow - time.Second)
	replay := createRaw(t, s, create1x, "key-1")
	if replay.status != first.status || string(replay.body) != string(first.body) {
		t.Errorf("replay = %d %s, want the first answer %d %s", replay.status, replay.body, first.status, first.body)
	}
	if replay.header.Get("Idempotent-Replayed") != "true" {
		t.Error("replay lacks Idempotent-Replayed: true")
	}
	if c := s.Counters(); c.Creates != 1 || c.CreateCalls != 2 || c.Instances != 1 {
		t.Errorf("after a replay: %+v, want 1 create of 2 calls", c)
	}

	other := createRaw(t, s, create1x, "key-2")
	if other.instance(t).ID == first.instance(t).ID {
		t.Error("a different key replayed the first instance")
	}

	clock.Advance(time.Second) // exactly 10 minutes after the first create
	expired := createRaw(t, s, create1x, "key-1")
	if expired.status != http.StatusCreated || expired.instance(t).ID == first.instance(t).ID {
		t.Errorf("after 10 minutes the key still replayed: %d %s", expired.status, expired.body)
	}
	if c := s.Counters(); c.Creates != 3 {
		t.Errorf("%d creates, want 3", c.Creates)
	}
}

func TestConcurrentCreatesWithOneKeyMakeOneInstance(t *testing.T) {
	s := newSim(t, falsim.Options{CreateDelay: 5 * time.Millisecond})
	const callers = 16
	ids := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			r, err := sendErr(context.Background(), s, http.MethodPost, "/compute/instances", create1x, map[string]string{"Idempotency-Key": "shared"})
			if err != nil || r.status != http.StatusCreated {
				t.Errorf("caller %d: %v status %d", i, err, r.status)
				return
			}
			var inst fal.Instance
			if err := json.Unmarshal(r.body, &inst); err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
			ids[i] = inst.ID
		})
	}
	wg.Wait()
	for i, id := range ids {
		if id != ids[0] {
			t.Errorf("caller %d got %s, caller 0 got %s", i, id, ids[0])
		}
	}
	if c := s.Counters(); c.Creates != 1 || c.CreateCalls != callers {
		t.Errorf("counters %+v, want 1 create of %d calls", c, callers)
	}
}

func TestFailNextAnswersWithFalErrors(t *testing.T) {
	s := newSim(t, falsim.Options{})
	s.FailNext(2, http.StatusInternalServerError)
	s.FailNext(1, http.StatusServiceUnavailable) // a proxy's status: outside the contract, never flagged
	for i, want := range []int{500, 500, 503} {
		r := createRaw(t, s, create1x, "k")
		if r.status != want || r.apiError(t).Error.Type != "server_error" {
			t.Errorf("call %d: status %d body %s, want %d server_error", i+1, r.status, r.body, want)
		}
	}
	if r := createRaw(t, s, create1x, "k"); r.status != http.StatusCreated {
		t.Errorf("after the faults: status %d, want 201", r.status)
	}
	if c := s.Counters(); c.Creates != 1 || c.Faults != 3 || c.CreateCalls != 4 {
		t.Errorf("counters %+v, want 1 create, 3 faults, 4 calls", c)
	}
}

func TestRateLimitNextSendsRetryAfter(t *testing.T) {
	s := newSim(t, falsim.Options{})
	s.RateLimitNext(1, 1500*time.Millisecond)
	s.RateLimitNext(1, 0)
	first := send(t, s, http.MethodGet, "/compute/instances", "", nil)
	if first.status != http.StatusTooManyRequests || first.header.Get("Retry-After") != "2" {
		t.Errorf("status %d Retry-After %q, want 429 with 2 (1.5s rounded up)", first.status, first.header.Get("Retry-After"))
	}
	if got := first.apiError(t).Error.Type; got != "rate_limited" {
		t.Errorf("error type %q, want rate_limited", got)
	}
	second := send(t, s, http.MethodGet, "/compute/instances", "", nil)
	if second.status != http.StatusTooManyRequests || second.header.Get("Retry-After") != "" {
		t.Errorf("status %d Retry-After %q, want 429 without Retry-After", second.status, second.header.Get("Retry-After"))
	}
}

func TestFaultsCanTargetOneOperation(t *testing.T) {
	s := newSim(t, falsim.Options{})
	s.InjectNext(fal.OpGet, 1, falsim.Fault{Status: http.StatusInternalServerError})
	id := mustCreate(t, s).ID // not a get: untouched
	if r := getRaw(t, s, id); r.status != http.StatusInternalServerError {
		t.Errorf("get: status %d, want the injected 500", r.status)
	}
	if r := getRaw(t, s, id); r.status != http.StatusOK {
		t.Errorf("second get: status %d, want 200", r.status)
	}
}

func TestDropNextClosesTheConnection(t *testing.T) {
	s := newSim(t, falsim.Options{})
	s.DropNext(1)
	if _, err := sendErr(context.Background(), s, http.MethodGet, "/compute/instances", "", nil); err == nil {
		t.Error("dropped call returned an answer")
	}
	if r := send(t, s, http.MethodGet, "/compute/instances", "", nil); r.status != http.StatusOK {
		t.Errorf("next call: status %d, want 200", r.status)
	}
}

func TestLoseResponseServesTheCallButDropsTheAnswer(t *testing.T) {
	s := newSim(t, falsim.Options{})
	s.InjectNext(fal.OpCreate, 1, falsim.Fault{LoseResponse: true})
	if _, err := sendErr(context.Background(), s, http.MethodPost, "/compute/instances", create1x, map[string]string{"Idempotency-Key": "k"}); err == nil {
		t.Fatal("call with a lost response returned an answer")
	}
	if n := len(s.Instances()); n != 1 {
		t.Fatalf("%d instances, want the 1 the lost call created", n)
	}
	r := createRaw(t, s, create1x, "k")
	if r.instance(t).ID != s.Instances()[0].ID {
		t.Error("retry with the same key did not replay the lost create")
	}
}

func TestHangIsReleasedWhenTheClientGivesUp(t *testing.T) {
	s := newSim(t, falsim.Options{})
	s.HangNext(1, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := sendErr(ctx, s, http.MethodGet, "/compute/instances", "", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the client's deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("gave up after %s, want about 100ms", took)
	}
	// Close waits for every handler: it returns only if the hang ended.
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: the hung handler is still held")
	}
}

func TestHangThenAnswersNormally(t *testing.T) {
	s := newSim(t, falsim.Options{})
	s.HangNext(1, 20*time.Millisecond)
	start := time.Now()
	r := send(t, s, http.MethodGet, "/compute/instances", "", nil)
	if r.status != http.StatusOK || time.Since(start) < 20*time.Millisecond {
		t.Errorf("status %d after %s, want 200 after at least 20ms", r.status, time.Since(start))
	}
}

func TestCloseReleasesHungRequests(t *testing.T) {
	s := falsim.New(falsim.Options{APIKey: testKey, CreateDelay: time.Minute})
	s.HangNext(2, time.Minute)
	done := make(chan error, 3)
	for _, call := range []struct{ method, body string }{{http.MethodGet, ""}, {http.MethodGet, ""}, {http.MethodPost, create1x}} {
		go func() {
			_, err := sendErr(context.Background(), s, call.method, "/compute/instances", call.body, nil)
			done <- err
		}()
	}
	waitForCalls(t, s, 3)

	start := time.Now()
	s.Close()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Close took %s", took)
	}
	for range 3 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("a held request was not released by Close")
		}
	}
	s.Close() // a second Close is harmless
	if n := s.Counters().Creates; n != 0 {
		t.Errorf("%d creates finished after Close, want 0", n)
	}
}

// waitForCalls waits until the server has seen n calls.
func waitForCalls(t *testing.T, s *falsim.Server, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ticker := time.NewTicker(time.Millisecond)
	defer ticker.Stop()
	for {
		total := 0
		for _, calls := range s.Counters().Calls {
			total += calls
		}
		if total >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("saw %d calls, want %d", total, n)
		case <-ticker.C:
		}
	}
}

func TestSetFaultRateIsRandomButReproducible(t *testing.T) {
	statuses := func(seed int64) []int {
		s := newSim(t, falsim.Options{})
		s.SetFaultRate(0.5, seed)
		var out []int
		for range 40 {
			out = append(out, send(t, s, http.MethodGet, "/compute/instances", "", nil).status)
		}
		return out
	}
	first, again := statuses(7), statuses(7)
	if !slices.Equal(first, again) {
		t.Errorf("same seed, different faults:\n%v\n%v", first, again)
	}
	count := map[int]int{}
	for _, st := range first {
		count[st]++
	}
	if count[200] == 0 || count[500] == 0 || count[429] == 0 || count[200]+count[500]+count[429] != 40 {
		t.Errorf("statuses %v, want a mix of 200, 500 and 429 only", count)
	}

	s := newSim(t, falsim.Options{})
	s.SetFaultRate(1, 1)
	s.SetFaultRate(0, 1)
	if r := send(t, s, http.MethodGet, "/compute/instances", "", nil); r.status != http.StatusOK {
		t.Errorf("rate 0: status %d, want 200", r.status)
	}
}

func TestClearFaults(t *testing.T) {
	s := newSim(t, falsim.Options{})
	s.FailNext(5, http.StatusInternalServerError)
	s.SetFaultRate(1, 3)
	s.ClearFaults()
	if r := send(t, s, http.MethodGet, "/compute/instances", "", nil); r.status != http.StatusOK {
		t.Errorf("status %d after ClearFaults, want 200", r.status)
	}
}

func TestAddInstanceAndRemove(t *testing.T) {
	s := newSim(t, falsim.Options{Manual: true})
	created := mustCreate(t, s)
	s.AddInstance(fal.Instance{ID: "inst_outside", InstanceType: fal.Type8xH100, Sector: "sector_3", CreatorUserNickname: "someone"})
	s.AddInstance(fal.Instance{Status: fal.StatusProvisioning})

	got := s.Instances()
	if len(got) != 3 || got[0].ID != created.ID || got[1].ID != "inst_outside" {
		t.Fatalf("instances %+v, want the created one, then inst_outside, then one more", got)
	}
	outside := got[1]
	if outside.Status != fal.StatusReady || outside.IP == "" || outside.Region == "" {
		t.Errorf("added instance %+v, want ready with an IP and a region", outside)
	}
	if got[2].Status != fal.StatusProvisioning || got[2].IP != "" || !strings.HasPrefix(got[2].ID, "inst_") {
		t.Errorf("second added instance %+v, want provisioning, no IP, a generated id", got[2])
	}
	if r := getRaw(t, s, "inst_outside"); r.instance(t) != outside {
		t.Errorf("get = %s, want %+v", r.body, outside)
	}
	if c := s.Counters(); c.Instances != 3 || c.Creates != 1 {
		t.Errorf("counters %+v, want 3 instances, 1 create", c)
	}

	s.Remove("inst_outside")
	if r := getRaw(t, s, "inst_outside"); r.status != http.StatusNotFound {
		t.Errorf("get after Remove: status %d, want 404", r.status)
	}
	if n := len(s.Instances()); n != 2 {
		t.Errorf("%d instances after Remove, want 2", n)
	}
	if c := s.Counters(); c.Deletes != 0 {
		t.Errorf("Remove counted as a delete: %+v", c)
	}
}

func TestSetStatus(t *testing.T) {
	s := newSim(t, falsim.Options{Manual: true})
	id := mustCreate(t, s).ID
	for _, st := range []fal.Status{fal.StatusInit, fal.StatusStopped, fal.StatusUnknown, fal.StatusReady} {
		if err := s.SetStatus(id, st); err != nil {
			t.Fatalf("set %s: %v", st, err)
		}
		if got := getRaw(t, s, id).instance(t); got.Status != st {
			t.Errorf("status %s, want %s", got.Status, st)
		}
	}
	if getRaw(t, s, id).instance(t).IP == "" {
		t.Error("forced ready without an IP")
	}
	if err := s.SetStatus(id, "exploded"); err == nil {
		t.Error("an unknown status was accepted")
	}
	if err := s.SetStatus("inst_nope", fal.StatusReady); err == nil {
		t.Error("an unknown id was accepted")
	}
}

func TestUnknownEndpointAnswersNotFound(t *testing.T) {
	s := falsim.New(falsim.Options{})
	defer s.Close()
	r := send(t, s, http.MethodGet, "/compute/instance", "", nil)
	if r.status != http.StatusNotFound || r.apiError(t).Error.Type != "not_found" {
		t.Errorf("status %d body %s, want 404 not_found", r.status, r.body)
	}
}

func TestConcurrentUseIsSafe(t *testing.T) {
	s := newSim(t, falsim.Options{ProvisionAfter: time.Millisecond, ReadyAfter: time.Millisecond, PageSize: 3})
	s.SetFaultRate(0.1, 42)
	var wg sync.WaitGroup
	for worker := range 8 {
		wg.Go(func() {
			for i := range 10 {
				key := fmt.Sprintf("w%d-%d", worker, i)
				r, err := sendErr(context.Background(), s, http.MethodPost, "/compute/instances", create1x, map[string]string{"Idempotency-Key": key})
				if err != nil {
					t.Error(err)
					return
				}
				if r.status == http.StatusCreated {
					var inst fal.Instance
					_ = json.Unmarshal(r.body, &inst)
					_, _ = sendErr(context.Background(), s, http.MethodGet, "/compute/instances/"+inst.ID, "", nil)
					if i%2 == 0 {
						_, _ = sendErr(context.Background(), s, http.MethodDelete, "/compute/instances/"+inst.ID, "", nil)
					}
				}
				_, _ = sendErr(context.Background(), s, http.MethodGet, "/compute/instances", "", nil)
			}
		})
	}
	for range 20 {
		s.Instances()
		s.Counters()
	}
	wg.Wait()
	c := s.Counters()
	if live := len(s.Instances()); live != c.Creates-c.Deletes {
		t.Errorf("%d live instances, want creates-deletes = %d", live, c.Creates-c.Deletes)
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()

	s := falsim.New(falsim.Options{APIKey: testKey, ProvisionAfter: time.Millisecond, ReadyAfter: time.Millisecond})
	id := mustCreate(t, s).ID
	getRaw(t, s, id)
	s.DropNext(1)
	_, _ = sendErr(context.Background(), s, http.MethodGet, "/compute/instances", "", nil)
	s.HangNext(1, time.Minute)
	released := make(chan struct{})
	go func() {
		defer close(released)
		_, _ = sendErr(context.Background(), s, http.MethodGet, "/compute/instances", "", nil)
	}()
	waitForCalls(t, s, 4)
	s.Close()
	<-released

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for runtime.NumGoroutine() > before {
		select {
		case <-ctx.Done():
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		case <-ticker.C:
		}
	}
}
