package falsim

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/gpubot/gpubot/fal"
)

// createBody mirrors fal's request schema with pointers, so a missing
// field can be told from an empty one.
type createBody struct {
	InstanceType *string `json:"instance_type"`
	SSHKey       *string `json:"ssh_key"`
	Sector       *string `json:"sector"`
}

// validate applies fal's rules for a create body. It is written apart
// from fal.CreateRequest.Validate on purpose: the client's checks are
// tested against this server, not against themselves.
func (b createBody) validate() error {
	switch {
	case b.InstanceType == nil:
		return errors.New("instance_type is required")
	case *b.InstanceType != fal.Type1xH100 && *b.InstanceType != fal.Type8xH100:
		return fmt.Errorf("instance_type %q is not one of gpu_8x_h100_sxm5, gpu_1x_h100_sxm5", *b.InstanceType)
	case b.SSHKey == nil || *b.SSHKey == "":
		return errors.New("ssh_key is required")
	case b.Sector == nil:
		return nil
	case *b.Sector != "sector_1" && *b.Sector != "sector_2" && *b.Sector != "sector_3":
		return fmt.Errorf("sector %q is not one of sector_1, sector_2, sector_3", *b.Sector)
	case *b.InstanceType != fal.Type8xH100:
		return errors.New("sector is only valid with gpu_8x_h100_sxm5")
	}
	return nil
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	if s.opts.CreateDelay > 0 && !s.pause(r.Context(), s.opts.CreateDelay) {
		return
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, fal.ErrorTypeValidation, "could not read the request body")
		return
	}
	status, body, replayed := s.create(r.Header.Get("Idempotency-Key"), raw)
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeBody(w, status, body)
}

// create decides a create call under the lock: a replay, a validation
// error or a new instance. Only successes are kept for replay, so a client
// that fixes its request can send it again with the same key.
func (s *Server) create(key string, raw []byte) (status int, body []byte, replayed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if key != "" {
		if cached, ok := s.replay(key, now); ok {
			return cached.status, cached.body, true
		}
	}
	var req createBody
	if err := json.Unmarshal(raw, &req); err != nil {
		status, body = errorBody(http.StatusBadRequest, "the request body is not valid JSON: "+err.Error())
		return status, body, false
	}
	if err := req.validate(); err != nil {
		status, body = errorBody(http.StatusBadRequest, err.Error())
		return status, body, false
	}
	inst := fal.Instance{
		ID:                  newID("inst_"),
		InstanceType:        *req.InstanceType,
		Region:              regions[s.state.seq%len(regions)],
		Status:              fal.StatusPending,
		CreatorUserNickname: "falsim",
	}
	if req.Sector != nil {
		inst.Sector = *req.Sector
	}
	s.insert(inst)
	s.state.counters.Creates++
	body = mustJSON(inst)
	if key != "" {
		s.remember(key, idempotentResponse{status: http.StatusCreated, body: body, at: now})
	}
	return http.StatusCreated, body, false
}

type listBody struct {
	Instances  []fal.Instance `json:"instances"`
	NextCursor *string        `json:"next_cursor"`
	HasMore    bool           `json:"has_more"`
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	limit, offset, err := s.pageParams(r)
	if err != nil {
		// fal documents no 400 for list; this is its usual answer to bad
		// parameters elsewhere.
		writeError(w, http.StatusBadRequest, fal.ErrorTypeValidation, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.page(limit, offset))
}

func (s *Server) page(limit, offset int) listBody {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := len(s.state.order)
	from := min(offset, total)
	to := min(from+limit, total)
	page := listBody{Instances: s.snapshot(from, to)}
	if to < total {
		next := encodeCursor(to)
		page.NextCursor = &next
		page.HasMore = true
	}
	return page
}

func (s *Server) pageParams(r *http.Request) (limit, offset int, err error) {
	query := r.URL.Query()
	limit = s.opts.PageSize
	if raw := query.Get("limit"); raw != "" {
		limit, err = strconv.Atoi(raw)
		if err != nil || limit < 1 {
			return 0, 0, fmt.Errorf("limit %q must be an integer of at least 1", raw)
		}
	}
	if raw := query.Get("cursor"); raw != "" {
		offset, err = decodeCursor(raw)
		if err != nil {
			return 0, 0, fmt.Errorf("cursor %q is not a cursor this server returned", raw)
		}
	}
	return limit, offset, nil
}

// Cursors are base64 offsets: opaque to clients, like fal's.
func encodeCursor(offset int) string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.Itoa(offset)))
}

func decodeCursor(cursor string) (int, error) {
	raw, err := base64.StdEncoding.DecodeString(cursor)
	if err != nil {
		return 0, err
	}
	offset, err := strconv.Atoi(string(raw))
	if err != nil || offset < 0 {
		return 0, errors.New("bad offset")
	}
	return offset, nil
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, fal.ErrorTypeNotFound, "Compute instance not found")
		return
	}
	writeJSON(w, http.StatusOK, inst)
}

func (s *Server) get(id string) (fal.Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.lookup(id)
	if !ok {
		return fal.Instance{}, false
	}
	return r.inst, true
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	if !s.delete(r.PathValue("id")) {
		writeError(w, http.StatusNotFound, fal.ErrorTypeNotFound, "Compute instance not found")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) delete(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.state.instances[id]
	if !ok {
		return false
	}
	s.unlink(r)
	s.state.counters.Deletes++
	return true
}

func errorBody(status int, message string) (int, []byte) {
	return status, mustJSON(map[string]any{"error": errorDetail{
		Type:      errorTypeFor(status),
		Message:   strings.TrimSpace(message),
		RequestID: newID("req_"),
	}})
}

func mustJSON(v any) []byte {
	body, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("falsim: encode response: %v", err))
	}
	return body
}
