package falsim_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gpubot/gpubot/fal/falsim"
)

func loadContract(t *testing.T) *falsim.Contract {
	t.Helper()
	c, err := falsim.LoadContract(specPath)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newRequest(t *testing.T, method, target, body string) *http.Request {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Header.Set("Authorization", "Key k")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

func TestContractRejectsRenamedRequestField(t *testing.T) {
	c := loadContract(t)
	good := `{"instance_type":"gpu_1x_h100_sxm5","ssh_key":"ssh-ed25519 AAAA k"}`
	renamed := `{"instanceType":"gpu_1x_h100_sxm5","ssh_key":"ssh-ed25519 AAAA k"}`

	if _, err := c.CheckRequest(newRequest(t, http.MethodPost, "http://127.0.0.1/v1/compute/instances", good), []byte(good)); err != nil {
		t.Fatalf("the documented body was rejected: %v", err)
	}
	_, err := c.CheckRequest(newRequest(t, http.MethodPost, "http://127.0.0.1/v1/compute/instances", renamed), []byte(renamed))
	if err == nil || !strings.Contains(err.Error(), "instance_type") {
		t.Errorf("renamed field: err %v, want a complaint about the missing instance_type", err)
	}
}

func TestContractRejectsRenamedResponseField(t *testing.T) {
	c := loadContract(t)
	req := newRequest(t, http.MethodGet, "http://127.0.0.1/v1/compute/instances/inst_1", "")
	input, err := c.CheckRequest(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	header := http.Header{"Content-Type": {"application/json"}}
	good := `{"id":"inst_1","instance_type":"gpu_1x_h100_sxm5","region":"us-west","status":"ready","ip":"203.0.113.1"}`
	if err := c.CheckResponse(context.Background(), input, http.StatusOK, header, []byte(good)); err != nil {
		t.Fatalf("the documented body was rejected: %v", err)
	}
	renamed := strings.Replace(good, `"instance_type"`, `"instanceType"`, 1)
	if err := c.CheckResponse(context.Background(), input, http.StatusOK, header, []byte(renamed)); err == nil {
		t.Error("a response with instance_type renamed passed the contract")
	}
	listInput, err := c.CheckRequest(newRequest(t, http.MethodGet, "http://127.0.0.1/v1/compute/instances", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	renamedList := `{"instances":[],"nextCursor":null,"has_more":false}`
	if err := c.CheckResponse(context.Background(), listInput, http.StatusOK, header, []byte(renamedList)); err == nil {
		t.Error("a list with next_cursor renamed passed the contract")
	}
}

func TestContractRejectsUndocumentedStatusAndValues(t *testing.T) {
	c := loadContract(t)
	input, err := c.CheckRequest(newRequest(t, http.MethodDelete, "http://127.0.0.1/v1/compute/instances/inst_1", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckResponse(context.Background(), input, http.StatusNoContent, http.Header{}, nil); err != nil {
		t.Errorf("204 on delete was rejected: %v", err)
	}
	if err := c.CheckResponse(context.Background(), input, http.StatusOK, http.Header{}, nil); err == nil {
		t.Error("200 on delete (undocumented) passed the contract")
	}
	header := http.Header{"Content-Type": {"application/json"}}
	badType := `{"error":{"type":"oops","message":"m"}}`
	if err := c.CheckResponse(context.Background(), input, http.StatusNotFound, header, []byte(badType)); err == nil {
		t.Error("an error type outside the enum passed the contract")
	}
	for _, status := range []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout} {
		if err := c.CheckResponse(context.Background(), input, status, http.Header{"Content-Type": {"text/html"}}, []byte("<html>")); err != nil {
			t.Errorf("%d from a proxy was held to fal's contract: %v", status, err)
		}
	}
}

func TestContractChecksTheAuthorizationScheme(t *testing.T) {
	c := loadContract(t)
	req := newRequest(t, http.MethodGet, "http://127.0.0.1/v1/compute/instances", "")
	req.Header.Set("Authorization", "Bearer k")
	if _, err := c.CheckRequest(req, nil); err == nil {
		t.Error(`"Bearer" passed where fal wants "Key <key>"`)
	}
}

func TestMiddlewareReportsRenamedFieldFromAHandler(t *testing.T) {
	c := loadContract(t)
	found := &violations{}
	handler := c.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"id":"inst_1","type":"gpu_1x_h100_sxm5","region":"us-west","status":"ready"}`))
	}), found.add)
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, newRequest(t, http.MethodGet, "http://127.0.0.1/v1/compute/instances/inst_1", ""))
	if got := found.bySide("response"); len(got) != 1 || got[0].Status != http.StatusOK {
		t.Errorf("violations %v, want one for the 200 response", got)
	}
	if !bytes.Contains(rec.Body.Bytes(), []byte(`"type":"gpu_1x_h100_sxm5"`)) {
		t.Error("the middleware changed the response")
	}
}

func TestTransportReportsBothSides(t *testing.T) {
	c := loadContract(t)
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"inst_1","instance_type":"gpu_1x_h100_sxm5","region":"mars","status":"pending"}`))
	}))
	defer server.Close()
	found := &violations{}
	client := &http.Client{Transport: c.Transport(nil, found.add)}
	body := `{"instance_type":"gpu_1x_h100_sxm5","ssh_key":""}`
	req, err := http.NewRequest(http.MethodPost, server.URL+"/v1/compute/instances", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Key k")
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := found.bySide("request"); len(got) != 1 || !strings.Contains(got[0].Error(), "ssh_key") {
		t.Errorf("request violations %v, want one about the empty ssh_key", got)
	}
	if got := found.bySide("response"); len(got) != 1 || !strings.Contains(got[0].Error(), "region") {
		t.Errorf("response violations %v, want one about the region", got)
	}
}

func TestNewWithContractFailsTheTestOnABreach(t *testing.T) {
	fake := &fakeTB{}
	s := falsim.NewWithContract(fake, specPath, falsim.Options{APIKey: testKey})
	send(t, s, http.MethodGet, "/compute/instances?limit=0", "", nil)
	fake.runCleanups()
	if len(fake.errors) == 0 {
		t.Error("an off-contract request did not fail the test")
	}
}

type fakeTB struct {
	errors   []string
	cleanups []func()
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Errorf(format string, args ...any) { f.errors = append(f.errors, format) }
func (f *fakeTB) Fatalf(format string, args ...any) { panic("fatal: " + format) }
func (f *fakeTB) Cleanup(fn func())                 { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// The contract is OpenAPI 3.1: next_cursor is `type: [string, 'null']`.
func TestContractUnderstandsOpenAPI31TypeArrays(t *testing.T) {
	c := loadContract(t)
	input, err := c.CheckRequest(newRequest(t, http.MethodGet, "http://127.0.0.1/v1/compute/instances?limit=5&cursor=Mg==", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	header := http.Header{"Content-Type": {"application/json"}}
	for body, valid := range map[string]bool{
		`{"instances":[],"next_cursor":null,"has_more":false}`:   true,
		`{"instances":[],"next_cursor":"NA==","has_more":true}`:  true,
		`{"instances":[],"next_cursor":4,"has_more":true}`:       false,
		`{"instances":[],"has_more":false}`:                      false,
		`{"instances":null,"next_cursor":null,"has_more":false}`: false,
	} {
		err := c.CheckResponse(context.Background(), input, http.StatusOK, header, []byte(body))
		if (err == nil) != valid {
			t.Errorf("%s: err %v, want valid=%v", body, err, valid)
		}
	}
}
