package falsim_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gpubot/gpubot/internal/testkit"

	"github.com/gpubot/gpubot/fal"
	"github.com/gpubot/gpubot/fal/falsim"
)

// specPath is the repository's copy of fal's contract.
const specPath = "../testdata/openapi.yaml"

const testKey = "sim-admin-key"

// newSim starts a server that fails the test on any contract breach.
func newSim(t *testing.T, opts falsim.Options) *falsim.Server {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	return falsim.NewWithContract(t, specPath, opts)
}

// violations collects contract breaches for tests that send off-contract
// requests on purpose.
type violations struct {
	mu   sync.Mutex
	list []falsim.Violation
}

func (v *violations) add(violation falsim.Violation) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.list = append(v.list, violation)
}

func (v *violations) bySide(side string) []falsim.Violation {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []falsim.Violation
	for _, violation := range v.list {
		if violation.Side == side {
			out = append(out, violation)
		}
	}
	return out
}

// newRecordingSim starts a server whose contract breaches are collected
// rather than failing the test.
func newRecordingSim(t *testing.T, opts falsim.Options) (*falsim.Server, *violations) {
	t.Helper()
	contract, err := falsim.LoadContract(specPath)
	if err != nil {
		t.Fatal(err)
	}
	found := &violations{}
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	opts.Contract = contract
	opts.OnViolation = found.add
	s := falsim.New(opts)
	t.Cleanup(s.Close)
	return s, found
}

// reply is a raw HTTP answer.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) instance(t *testing.T) fal.Instance {
	t.Helper()
	var inst fal.Instance
	if err := json.Unmarshal(r.body, &inst); err != nil {
		t.Fatalf("decode instance %s: %v", r.body, err)
	}
	return inst
}

type errorReply struct {
	Error struct {
		Type      string `json:"type"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

func (r reply) apiError(t *testing.T) errorReply {
	t.Helper()
	var e errorReply
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("decode error body %s: %v", r.body, err)
	}
	if e.Error.RequestID == "" {
		t.Errorf("error body %s has no request_id", r.body)
	}
	return e
}

// send makes one raw request with the working key unless headers say
// otherwise (an empty Authorization value removes the header).
func send(t *testing.T, s *falsim.Server, method, path, body string, headers map[string]string) reply {
	t.Helper()
	r, err := sendErr(context.Background(), s, method, path, body, headers)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func sendErr(ctx context.Context, s *falsim.Server, method, path, body string, headers map[string]string) (reply, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+path, reader)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Authorization", "Key "+testKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for name, value := range headers {
		if value == "" {
			req.Header.Del(name)
			continue
		}
		req.Header.Set(name, value)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

const create1x = `{"instance_type":"gpu_1x_h100_sxm5","ssh_key":"ssh-ed25519 AAAAC3Nza test@host"}`

func createRaw(t *testing.T, s *falsim.Server, body, idempotencyKey string) reply {
	t.Helper()
	headers := map[string]string{}
	if idempotencyKey != "" {
		headers["Idempotency-Key"] = idempotencyKey
	}
	return send(t, s, http.MethodPost, "/compute/instances", body, headers)
}

func mustCreate(t *testing.T, s *falsim.Server) fal.Instance {
	t.Helper()
	r := createRaw(t, s, create1x, "")
	if r.status != http.StatusCreated {
		t.Fatalf("create: status %d, body %s", r.status, r.body)
	}
	return r.instance(t)
}

func getRaw(t *testing.T, s *falsim.Server, id string) reply {
	t.Helper()
	return send(t, s, http.MethodGet, "/compute/instances/"+id, "", nil)
}

// newFakeClock is the clock these tests start from.
func newFakeClock() *testkit.Clock {
	return testkit.FixedClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}
