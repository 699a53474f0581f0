package slacksim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// apiRequest is one Web API call, read the way Slack reads it: a form (body or
// query) with a `token` field, or a JSON body with a Bearer token.
type apiRequest struct {
	method string
	token  string
	params map[string]string          // every field; JSON strings unquoted, other JSON values raw
	json   map[string]json.RawMessage // the JSON body's fields, when it was JSON
}

func (r *apiRequest) has(field string) bool {
	_, ok := r.params[field]
	return ok
}

// rawField is a field holding JSON: as sent in a JSON body, or the JSON text of a form field.
func (r *apiRequest) rawField(field string) json.RawMessage {
	if value, ok := r.json[field]; ok {
		var text string
		if json.Unmarshal(value, &text) == nil {
			return json.RawMessage(text)
		}
		return value
	}
	if value, ok := r.params[field]; ok {
		return json.RawMessage(value)
	}
	return nil
}

type apiHandler func(s *Server, req *apiRequest) (map[string]any, *apiError)

// apiMethods are the Web API methods the simulator implements. Each runs with s.mu held.
var apiMethods = map[string]apiHandler{
	"apps.connections.open": (*Server).appsConnectionsOpenLocked,
	"auth.test":             (*Server).authTestLocked,
	"chat.postMessage":      (*Server).chatPostMessageLocked,
	"chat.update":           (*Server).chatUpdateLocked,
	"chat.postEphemeral":    (*Server).chatPostEphemeralLocked,
	"chat.delete":           (*Server).chatDeleteLocked,
	"views.open":            (*Server).viewsOpenLocked,
	"views.push":            (*Server).viewsPushLocked,
	"views.update":          (*Server).viewsUpdateLocked,
	"views.publish":         (*Server).viewsPublishLocked,
	"conversations.open":    (*Server).conversationsOpenLocked,
	"users.info":            (*Server).usersInfoLocked,
	"usergroups.users.list": (*Server).usergroupsUsersListLocked,
	"chat.getPermalink":     (*Server).chatGetPermalinkLocked,
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	method := r.PathValue("method")
	req, err := readAPIRequest(method, w, r)
	if err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "error": "invalid_form_data", "response_metadata": map[string]any{"messages": []string{err.Error()}}})
		return
	}

	s.mu.Lock()
	call := Call{Method: method, Params: req.params, At: s.now()}
	f := s.takeFaultLocked(method)
	if f == nil {
		f = s.publishRateLocked(method)
	}
	if f != nil {
		call.Error = f.callError()
		s.recordCallLocked(call)
		s.mu.Unlock()
		f.write(w)
		return
	}
	result, apiErr := s.answerLocked(req)
	if apiErr != nil {
		call.Error = apiErr.code
	}
	s.recordCallLocked(call)
	s.mu.Unlock()

	if apiErr != nil {
		writeAPIError(w, http.StatusOK, apiErr)
		return
	}
	result["ok"] = true
	writeJSON(w, http.StatusOK, result)
}

func (s *Server) answerLocked(req *apiRequest) (map[string]any, *apiError) {
	handler, known := apiMethods[req.method]
	if !known {
		return nil, slackError("unknown_method")
	}
	if s.closed {
		return nil, slackError("internal_error")
	}
	if err := s.checkTokenLocked(req); err != nil {
		return nil, err
	}
	if err := s.checkScopeLocked(req.method); err != nil {
		return nil, err
	}
	return handler(s, req)
}

// checkTokenLocked wants the app-level token for apps.connections.open and the bot
// token for everything else.
func (s *Server) checkTokenLocked(req *apiRequest) *apiError {
	want := s.opts.BotToken
	if req.method == "apps.connections.open" {
		want = s.opts.AppToken
	}
	switch req.token {
	case "":
		return slackError("not_authed")
	case want:
		return nil
	default:
		return slackError("invalid_auth")
	}
}

func readAPIRequest(method string, w http.ResponseWriter, r *http.Request) (*apiRequest, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	req := &apiRequest{method: method, params: map[string]string{}}
	if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, "Bearer ") {
		req.token = strings.TrimPrefix(auth, "Bearer ")
	}
	contentType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if contentType == "application/json" {
		fields, err := readJSONObject(r.Body)
		if err != nil {
			return nil, err
		}
		req.json = fields
		for name, value := range fields {
			req.params[name] = rawParam(value)
		}
		for name, values := range r.URL.Query() {
			req.params[name] = values[0]
		}
	} else {
		if err := r.ParseForm(); err != nil {
			return nil, fmt.Errorf("read form: %w", err)
		}
		for name, values := range r.Form {
			req.params[name] = values[0]
		}
	}
	if token := req.params["token"]; token != "" && req.token == "" {
		req.token = token
	}
	delete(req.params, "token")
	return req, nil
}

// readJSONObject reads a JSON object body; an empty body is an empty object.
func readJSONObject(body io.Reader) (map[string]json.RawMessage, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	fields := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(data)) == 0 {
		return fields, nil
	}
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("decode JSON body: %w", err)
	}
	return fields, nil
}

func rawParam(value json.RawMessage) string {
	var text string
	if err := json.Unmarshal(value, &text); err == nil {
		return text
	}
	return string(value)
}

func (s *Server) recordCallLocked(call Call) {
	s.calls = append(s.calls, call)
	if len(s.calls) > maxCalls {
		s.calls = append([]Call(nil), s.calls[len(s.calls)-maxCalls/2:]...)
	}
	s.callCounts[call.Method]++
	s.notifyLocked()
}

// Calls lists the Web API calls answered so far, oldest first (the most recent
// 5,000 to 10,000 are kept).
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallCount is how many times method was called (all of them, also faulted ones).
func (s *Server) CallCount(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.callCounts[method]
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func writeAPIError(w http.ResponseWriter, status int, e *apiError) {
	body := map[string]any{"ok": false, "error": e.code}
	for name, value := range e.fields {
		body[name] = value
	}
	if len(e.messages) > 0 {
		body["response_metadata"] = map[string]any{"messages": e.messages}
	}
	writeJSON(w, status, body)
}

// fault is a failure a test asked for on the next calls of a method.
type fault struct {
	slackError string        // answer ok:false with this error
	status     int           // or answer this HTTP status
	retryAfter time.Duration // with Retry-After, for a 429
	remaining  int
}

func (f *fault) callError() string {
	switch {
	case f.slackError != "":
		return f.slackError
	case f.status == http.StatusTooManyRequests:
		return "ratelimited"
	default:
		return "http_" + strconv.Itoa(f.status)
	}
}

func (f *fault) write(w http.ResponseWriter) {
	switch {
	case f.slackError != "":
		writeAPIError(w, http.StatusOK, slackError(f.slackError))
	case f.status == http.StatusTooManyRequests:
		// Retry-After is whole seconds; slack-go parses it as an integer.
		seconds := int64(math.Ceil(f.retryAfter.Seconds()))
		w.Header().Set("Retry-After", strconv.FormatInt(seconds, 10))
		writeAPIError(w, http.StatusTooManyRequests, slackError("ratelimited"))
	default:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, "<html><body>Slack is having trouble</body></html>")
	}
}

// FailNext makes the next n calls of method answer {"ok":false,"error":slackError}.
// method may be "*" for any method, or "response_url" for response_url posts.
func (s *Server) FailNext(method, slackError string, n int) {
	s.addFault(method, &fault{slackError: slackError, remaining: n})
}

// RateLimitNext makes the next n calls of method answer HTTP 429 with a Retry-After
// of retryAfter rounded up to whole seconds (slack-go returns *slack.RateLimitedError).
func (s *Server) RateLimitNext(method string, n int, retryAfter time.Duration) {
	s.addFault(method, &fault{status: http.StatusTooManyRequests, retryAfter: retryAfter, remaining: n})
}

// ServerErrorNext makes the next n calls of method answer HTTP status (a 5xx).
func (s *Server) ServerErrorNext(method string, n int, status int) {
	s.addFault(method, &fault{status: status, remaining: n})
}

func (s *Server) addFault(method string, f *fault) {
	if f.remaining <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[method] = append(s.faults[method], f)
}

// takeFaultLocked uses up one fault planned for method, if any; faults for method
// come before faults for "*".
func (s *Server) takeFaultLocked(method string) *fault {
	for _, key := range []string{method, "*"} {
		queue := s.faults[key]
		if len(queue) == 0 {
			continue
		}
		f := queue[0]
		f.remaining--
		if f.remaining <= 0 {
			s.faults[key] = queue[1:]
		}
		return f
	}
	return nil
}
