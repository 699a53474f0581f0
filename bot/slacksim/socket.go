package slacksim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
)

const (
	maxConnections     = 10
	maxAckBytes        = 20 * 1024 // Slack drops ack frames of this size or more
	maxRedeliveries    = 3
	maxWaitingFrames   = 1000
	connQueueSize      = 4096
	maxFailures        = 10000
	maxLateAcks        = 10000
	ticketLifetime     = 30 * time.Second
	maxIncomingFrame   = 1 << 20
	socketWriteTimeout = 10 * time.Second
	// How long a connection stays open after a disconnect message: a warning comes
	// ahead of a refresh, other reasons close it soon.
	warningGrace    = 3 * time.Second
	disconnectGrace = 500 * time.Millisecond
)

// ErrAckRefused is returned by AwaitAck when the bot's ack frame was too large.
var ErrAckRefused = errors.New("slacksim: ack refused: 20,480 bytes or more")

// ErrAckLost is returned by AwaitAck, with the ack that was lost, for an envelope
// whose ack LoseNextAck made vanish.
var ErrAckLost = errors.New("slacksim: ack lost before it reached Slack")

// ErrFailed is returned (wrapped, with the reason) by AwaitAck for a slash command,
// click or view submission that failed for its user: Slack showed an error and will
// not send it again.
var ErrFailed = errors.New("slacksim: failed for the user")

// Why a slash command, click or view submission failed for its user.
const (
	FailedNoConnection   = "no_connection"     // no connection was open to take it
	FailedConnectionLost = "connection_lost"   // its connection closed before the ack
	FailedTimeout        = "operation_timeout" // no ack within the ack timeout
	FailedQueueFull      = "dispatch_failed"   // its connection had a full send queue
)

// Failure is a slash command, click or view submission that Slack could not get
// acknowledged. Slack does not retry these: the user sees an error, and the app may or
// may not have received it (a connection lost before the ack).
type Failure struct {
	EnvelopeID  string
	Interaction string // "slash_command", "block_actions", "view_submission", ...
	Reason      string // one of the Failed... constants
}

// socket is the Socket Mode side: connections, envelopes and acks.
type socket struct {
	conns            []*socketConn
	rng              *rand.Rand // picks a connection for each envelope
	tickets          map[string]time.Time
	waiting          []outFrame   // envelopes sent while no connection could take them
	waitingCount     atomic.Int64 // len(waiting), for writers to check without the lock
	totalConnections int
	envelopes        map[string]*envelope
	envelopeOrder    []string
	lateAcks         []string
	protocolErrors   []string
	loseNextAck      bool // see LoseNextAck
	failures         []Failure
}

func newSocket(seed uint64) socket {
	if seed == 0 {
		seed = rand.Uint64()
	}
	return socket{
		rng:     rand.New(rand.NewPCG(seed, seed>>1|1)),
		tickets: map[string]time.Time{}, envelopes: map[string]*envelope{},
	}
}

type outFrame struct {
	data       []byte
	envelopeID string // "" for hello and disconnect
	retried    bool   // an Events API envelope: sent again if its connection dies
}

type socketConn struct {
	server       *Server
	id           int
	ws           *websocket.Conn
	out          chan outFrame
	done         chan struct{}
	closeOnce    sync.Once
	pingsStopped atomic.Bool
	draining     bool                 // guarded by server.mu: takes no new envelopes
	unacked      map[string]*envelope // guarded by server.mu: user envelopes sent here, not yet acked
}

// envelopeOrigin is what a user did to cause an envelope.
type envelopeOrigin struct {
	interaction string // "slash_command", "block_actions", "view_submission", "event"
	user        string
	channel     string
	command     string
	viewID      string
}

type envelope struct {
	id              string
	kind            string // "slash_commands", "interactive", "events_api"
	payload         json.RawMessage
	acceptsResponse bool
	origin          envelopeOrigin
	deliveries      []*delivery
	acks            []Ack
	refused         bool
	late            bool
	failureShown    bool
	loseAcks        bool   // acks vanish until the envelope is redelivered (LoseNextAck)
	lostAcks        []Ack  // what the bot acked while loseAcks held
	failure         string // why it failed for its user ("" while it has not)
}

// retried reports whether Slack sends an envelope of this kind again when it goes
// unacked. Only Events API envelopes are; a slash command, click or view submission
// that cannot be delivered, or whose ack does not come, fails for its user.
func retried(kind string) bool { return kind == "events_api" }

type delivery struct {
	attempt int
	sentAt  time.Time
	acked   bool
}

var upgrader = websocket.Upgrader{
	// slack-go sends Origin https://api.slack.com; any origin is fine on loopback.
	CheckOrigin: func(*http.Request) bool { return true },
}

func (s *Server) appsConnectionsOpenLocked(_ *apiRequest) (map[string]any, *apiError) {
	if len(s.conns) >= maxConnections {
		return nil, slackError("too_many_websockets")
	}
	now := time.Now()
	for ticket, expires := range s.tickets {
		if now.After(expires) {
			delete(s.tickets, ticket)
		}
	}
	ticket := randomHex(16)
	s.tickets[ticket] = now.Add(ticketLifetime)
	url := "ws" + s.baseURL[len("http"):] + "/link/?ticket=" + ticket + "&app_id=" + appID
	return map[string]any{"url": url}, nil
}

func (s *Server) serveSocket(w http.ResponseWriter, r *http.Request) {
	if status, reason := s.admitTicket(r.URL.Query().Get("ticket")); status != http.StatusOK {
		http.Error(w, reason, status)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(maxIncomingFrame)
	c := &socketConn{server: s, ws: ws, out: make(chan outFrame, connQueueSize), done: make(chan struct{}), unacked: map[string]*envelope{}}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.conns) >= maxConnections {
		_ = ws.Close()
		return
	}
	s.totalConnections++
	c.id = s.totalConnections
	s.conns = append(s.conns, c)
	c.out <- outFrame{data: s.helloFrameLocked()}
	s.flushWaitingLocked()
	s.wg.Add(2)
	go c.writeLoop()
	go c.readLoop()
	s.notifyLocked()
}

// admitTicket checks the single-use ticket apps.connections.open handed out.
func (s *Server) admitTicket(ticket string) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	expires, ok := s.tickets[ticket]
	delete(s.tickets, ticket)
	switch {
	case s.closed:
		return http.StatusServiceUnavailable, "closed"
	case !ok || time.Now().After(expires):
		return http.StatusUnauthorized, "invalid or used ticket"
	case len(s.conns) >= maxConnections:
		return http.StatusTooManyRequests, "too many websockets"
	}
	return http.StatusOK, ""
}

func (s *Server) helloFrameLocked() []byte {
	data, _ := json.Marshal(map[string]any{
		"type":            "hello",
		"num_connections": len(s.conns),
		"debug_info": map[string]any{
			"host":                        "applink-sim",
			"build_number":                1,
			"approximate_connection_time": 18060,
		},
		"connection_info": map[string]any{"app_id": appID},
	})
	return data
}

func (c *socketConn) writeLoop() {
	defer c.server.wg.Done()
	defer c.shutdown()
	ticker := time.NewTicker(c.server.opts.PingInterval)
	defer ticker.Stop()
	// A first PING at once: slack-go counts from the moment it connected.
	if !c.ping() {
		return
	}
	for {
		select {
		case <-c.done:
			return
		case frame := <-c.out:
			_ = c.ws.SetWriteDeadline(time.Now().Add(socketWriteTimeout))
			if err := c.ws.WriteMessage(websocket.TextMessage, frame.data); err != nil {
				c.server.requeue(frame)
				return
			}
			if c.server.waitingCount.Load() > 0 {
				c.server.flushWaiting()
			}
		case <-ticker.C:
			if !c.ping() {
				return
			}
		}
	}
}

func (c *socketConn) ping() bool {
	if c.pingsStopped.Load() {
		return true
	}
	return c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(socketWriteTimeout)) == nil
}

func (c *socketConn) readLoop() {
	defer c.server.wg.Done()
	defer c.shutdown()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		c.server.handleFrame(c, data)
	}
}

// shutdown closes the connection and hands its unsent envelopes to other connections.
func (c *socketConn) shutdown() {
	c.closeOnce.Do(func() {
		close(c.done)
		_ = c.ws.Close()
		c.server.removeConn(c)
	})
}

func (s *Server) removeConn(c *socketConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	index := slices.Index(s.conns, c)
	if index < 0 {
		return
	}
	s.conns = slices.Delete(s.conns, index, index+1)
	for {
		select {
		case frame := <-c.out:
			if frame.retried {
				s.waiting = append(s.waiting, frame)
			}
			continue
		default:
		}
		break
	}
	// What the app had not acked on this connection is lost: Slack shows the user an
	// error and does not send it again.
	for _, env := range c.unacked {
		s.failLocked(env, FailedConnectionLost)
	}
	clear(c.unacked)
	s.flushWaitingLocked()
	s.notifyLocked()
}

// requeue takes back an envelope frame a dying connection could not write.
func (s *Server) requeue(frame outFrame) {
	if !frame.retried {
		return // a user's envelope: its connection's end fails it
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.waiting = append(s.waiting, frame)
	s.flushWaitingLocked()
}

func (s *Server) liveConnsLocked() []*socketConn {
	return slices.Clone(s.conns)
}

// sendFrameLocked hands a frame to a connection that takes envelopes, chosen at
// random as Slack does, or keeps it until one does.
func (s *Server) sendFrameLocked(frame outFrame) error {
	if s.offerLocked(frame) {
		return nil
	}
	if len(s.waiting) >= maxWaitingFrames {
		return fmt.Errorf("slacksim: %d envelopes already wait for a connection", len(s.waiting))
	}
	s.waiting = append(s.waiting, frame)
	s.waitingCount.Store(int64(len(s.waiting)))
	return nil
}

func (s *Server) offerLocked(frame outFrame) bool {
	for _, c := range s.openConnsInRandomOrderLocked() {
		select {
		case c.out <- frame:
			return true
		default:
		}
	}
	return false
}

// pickConnLocked chooses the connection for a user's envelope, at random among
// those taking envelopes; nil when none is.
func (s *Server) pickConnLocked() *socketConn {
	if open := s.openConnsInRandomOrderLocked(); len(open) > 0 {
		return open[0]
	}
	return nil
}

// openConnsInRandomOrderLocked lists the connections taking envelopes, shuffled:
// Slack sends each envelope to any one of an app's connections, and a retried
// event may land on another connection than its first try.
func (s *Server) openConnsInRandomOrderLocked() []*socketConn {
	open := make([]*socketConn, 0, len(s.conns))
	for _, c := range s.conns {
		if !c.draining {
			open = append(open, c)
		}
	}
	s.rng.Shuffle(len(open), func(i, j int) { open[i], open[j] = open[j], open[i] })
	return open
}

func (s *Server) flushWaitingLocked() {
	for len(s.waiting) > 0 && s.offerLocked(s.waiting[0]) {
		s.waiting = s.waiting[1:]
	}
	if len(s.waiting) == 0 {
		s.waiting = nil
	}
	s.waitingCount.Store(int64(len(s.waiting)))
}

// flushWaiting moves waiting envelopes to connections that have room again.
func (s *Server) flushWaiting() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushWaitingLocked()
}

// sendEnvelopeLocked creates an envelope and delivers it for the first time.
func (s *Server) sendEnvelopeLocked(kind string, payload any, acceptsResponse bool, origin envelopeOrigin) (*envelope, error) {
	if s.closed {
		return nil, ErrClosed
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("slacksim: encode %s payload: %w", kind, err)
	}
	env := &envelope{id: uuid.NewString(), kind: kind, payload: data, acceptsResponse: acceptsResponse, origin: origin}
	env.loseAcks, s.loseNextAck = s.loseNextAck, false
	if err := s.deliverLocked(env, 0, "", true); err != nil {
		return nil, err
	}
	s.envelopes[env.id] = env
	s.envelopeOrder = append(s.envelopeOrder, env.id)
	s.pruneEnvelopesLocked()
	return env, nil
}

// failLocked records that a user's envelope failed, and shows the user what Slack
// shows. An envelope already acked, or already failed, is left as it is.
func (s *Server) failLocked(env *envelope, reason string) {
	if env.failure != "" || len(env.acks) > 0 || retried(env.kind) {
		return
	}
	env.failure = reason
	s.failures = append(s.failures, Failure{EnvelopeID: env.id, Interaction: env.origin.interaction, Reason: reason})
	if len(s.failures) > maxFailures {
		s.failures = slices.Clone(s.failures[len(s.failures)-maxFailures/2:])
	}
	slackErr := "dispatch_failed"
	if reason == FailedTimeout {
		slackErr = reason
	}
	s.showFailureLocked(env, slackErr)
	s.notifyLocked()
}

func (s *Server) pruneEnvelopesLocked() {
	if len(s.envelopeOrder) <= maxEnvelopes {
		return
	}
	drop := len(s.envelopeOrder) - maxEnvelopes*9/10
	for _, id := range s.envelopeOrder[:drop] {
		delete(s.envelopes, id)
	}
	s.envelopeOrder = slices.Clone(s.envelopeOrder[drop:])
}

// deliverLocked sends env (again) and arms the ack deadline and, for automatic
// deliveries, the redelivery timer.
func (s *Server) deliverLocked(env *envelope, attempt int, reason string, automatic bool) error {
	frame, err := json.Marshal(map[string]any{
		"envelope_id":              env.id,
		"type":                     env.kind,
		"payload":                  env.payload,
		"accepts_response_payload": env.acceptsResponse,
		"retry_attempt":            attempt,
		"retry_reason":             reason,
	})
	if err != nil {
		return fmt.Errorf("slacksim: encode envelope: %w", err)
	}
	d := &delivery{attempt: attempt, sentAt: time.Now()}
	if retried(env.kind) {
		if err := s.sendFrameLocked(outFrame{data: frame, envelopeID: env.id, retried: true}); err != nil {
			return err
		}
	} else if !s.sendToOneLocked(env, outFrame{data: frame, envelopeID: env.id}) {
		env.deliveries = append(env.deliveries, d)
		s.notifyLocked()
		return nil
	}
	env.deliveries = append(env.deliveries, d)
	s.afterFuncLocked(s.opts.AckTimeout, func() { s.ackDeadlinePassedLocked(env, d) })
	if automatic && retried(env.kind) && s.opts.RedeliverAfter > 0 && attempt < maxRedeliveries {
		s.afterFuncLocked(s.opts.RedeliverAfter, func() {
			if !d.acked && !env.refused {
				if err := s.deliverLocked(env, attempt+1, "timeout", true); err != nil {
					s.logger.Warn("slacksim: redeliver", "envelope", env.id, "err", err)
				}
			}
		})
	}
	s.notifyLocked()
	return nil
}

// sendToOneLocked hands a user's envelope to one connection, as Slack does, and
// reports whether one took it; if none did, the envelope has failed.
func (s *Server) sendToOneLocked(env *envelope, frame outFrame) bool {
	c := s.pickConnLocked()
	if c == nil {
		s.failLocked(env, FailedNoConnection)
		return false
	}
	select {
	case c.out <- frame:
	default:
		s.failLocked(env, FailedQueueFull)
		return false
	}
	c.unacked[env.id] = env
	return true
}

func (s *Server) ackDeadlinePassedLocked(env *envelope, d *delivery) {
	if d.acked {
		return
	}
	s.markLateLocked(env)
	s.failLocked(env, FailedTimeout)
}

func (s *Server) markLateLocked(env *envelope) {
	if env.late {
		return
	}
	env.late = true
	s.lateAcks = append(s.lateAcks, env.id)
	if len(s.lateAcks) > maxLateAcks {
		s.lateAcks = slices.Clone(s.lateAcks[len(s.lateAcks)-maxLateAcks/2:])
	}
	s.notifyLocked()
}

// showFailureLocked shows the user what Slack shows when a slash command gets no
// usable ack.
func (s *Server) showFailureLocked(env *envelope, slackErr string) {
	if env.failureShown || env.origin.interaction != "slash_command" {
		return
	}
	env.failureShown = true
	text := fmt.Sprintf("%s didn't respond: failed with the error \"%s\"", env.origin.command, slackErr)
	s.postEphemeralLocked(env.origin.channel, env.origin.user, "", messageContent{text: text}, "slack")
}

// handleFrame reads what the bot sent on the websocket: acks.
func (s *Server) handleFrame(c *socketConn, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	var ack struct {
		EnvelopeID string          `json:"envelope_id"`
		Payload    json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(data, &ack); err != nil || ack.EnvelopeID == "" {
		s.protocolErrorLocked("connection %d: unreadable frame (%d bytes): %.200s", c.id, len(data), data)
		return
	}
	env, ok := s.envelopes[ack.EnvelopeID]
	if !ok {
		s.protocolErrorLocked("connection %d: ack for unknown envelope %s", c.id, ack.EnvelopeID)
		return
	}
	if env.loseAcks {
		env.lostAcks = append(env.lostAcks, Ack{EnvelopeID: env.id, Payload: nonNull(ack.Payload)})
		s.notifyLocked()
		return
	}
	if len(data) >= maxAckBytes {
		s.protocolErrorLocked("envelope %s: ack of %d bytes refused (Slack drops acks of %d bytes or more)", env.id, len(data), maxAckBytes)
		env.refused = true
		s.markLateLocked(env)
		s.showFailureLocked(env, "dispatch_failed")
		return
	}
	s.acceptAckLocked(env, ack.Payload)
}

func (s *Server) acceptAckLocked(env *envelope, payload json.RawMessage) {
	now := time.Now()
	var answered *delivery
	for _, d := range env.deliveries {
		if d.acked {
			continue
		}
		if answered == nil {
			answered = d
		}
		d.acked = true
	}
	if answered == nil {
		s.protocolErrorLocked("envelope %s: acked again", env.id)
		return
	}
	for _, c := range s.conns {
		delete(c.unacked, env.id)
	}
	ack := Ack{EnvelopeID: env.id, Latency: now.Sub(answered.sentAt)}
	if !isNull(payload) {
		ack.Payload = slices.Clone(payload)
	}
	env.acks = append(env.acks, ack)
	if ack.Latency > s.opts.AckTimeout {
		s.markLateLocked(env)
	}
	if env.failure == "" && (!env.late || env.origin.interaction != "slash_command") {
		s.applyAckPayloadLocked(env, ack.Payload)
	}
	s.notifyLocked()
}

func nonNull(payload json.RawMessage) json.RawMessage {
	if isNull(payload) {
		return nil
	}
	return slices.Clone(payload)
}

func isNull(payload json.RawMessage) bool {
	return len(payload) == 0 || string(payload) == "null"
}

// applyAckPayloadLocked does what Slack does with an ack's payload.
func (s *Server) applyAckPayloadLocked(env *envelope, payload json.RawMessage) {
	switch env.origin.interaction {
	case "slash_command":
		s.applySlashCommandAckLocked(env, payload)
	case "view_submission":
		s.applyViewSubmissionAckLocked(env, payload)
	}
}

// applySlashCommandAckLocked shows a slash command's ack payload: to the user alone,
// or in the channel for response_type "in_channel".
func (s *Server) applySlashCommandAckLocked(env *envelope, payload json.RawMessage) {
	if isEmptyPayload(payload) {
		return
	}
	var body responseMessage
	if err := json.Unmarshal(payload, &body); err != nil {
		s.protocolErrorLocked("envelope %s: slash command ack payload is not a message: %v", env.id, err)
		return
	}
	content, err := parseContent(body.Text, true, body.Blocks, !isEmptyPayload(body.Blocks))
	if err != nil {
		s.protocolErrorLocked("envelope %s: slash command ack payload refused: %v", env.id, err)
		s.showFailureLocked(env, err.code)
		return
	}
	if content.empty() {
		return
	}
	if body.ResponseType == "in_channel" {
		s.postInChannelLocked(env.origin.channel, "", content, "ack")
		return
	}
	s.postEphemeralLocked(env.origin.channel, env.origin.user, "", content, "ack")
}

// AwaitAck waits (ctx-bounded) for the first ack of an envelope. A slash command,
// click or view submission that fails for its user first (see Failures) returns an
// error wrapping ErrFailed.
func (s *Server) AwaitAck(ctx context.Context, envelopeID string) (Ack, error) {
	return s.awaitAckNumber(ctx, envelopeID, 0)
}

// awaitAckNumber waits for the envelope's ack number n (0 is the first).
func (s *Server) awaitAckNumber(ctx context.Context, envelopeID string, n int) (Ack, error) {
	var ack Ack
	var failure error
	err := s.WaitUntil(ctx, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		env, ok := s.envelopes[envelopeID]
		switch {
		case !ok:
			failure = fmt.Errorf("slacksim: unknown envelope %s", envelopeID)
		case len(env.acks) > n:
			ack = env.acks[n]
		case env.loseAcks && len(env.lostAcks) > 0:
			ack, failure = env.lostAcks[0], ErrAckLost
		case env.refused:
			failure = ErrAckRefused
		case env.failure != "":
			failure = fmt.Errorf("%w: %s", ErrFailed, env.failure)
		default:
			return false
		}
		return true
	})
	if err != nil {
		return Ack{}, fmt.Errorf("await ack of envelope %s: %w", envelopeID, err)
	}
	return ack, failure
}

// Redeliver sends an envelope again as it was, with retry_attempt 1 and retry_reason
// "timeout", whatever its kind (Slack itself retries only Events API envelopes: this
// plays a duplicate that an app must withstand), and waits (ctx-bounded) for the ack of that delivery: a bot must
// acknowledge the duplicate and not act on it twice.
func (s *Server) Redeliver(ctx context.Context, envelopeID string) (Ack, error) {
	s.mu.Lock()
	env, ok := s.envelopes[envelopeID]
	if !ok {
		s.mu.Unlock()
		return Ack{}, fmt.Errorf("slacksim: unknown envelope %s", envelopeID)
	}
	previousAcks := len(env.acks)
	env.loseAcks = false
	env.failure = "" // a new attempt; Failures keeps the record of the old one
	err := ErrClosed
	if !s.closed {
		err = s.deliverLocked(env, 1, "timeout", false)
	}
	s.mu.Unlock()
	if err != nil {
		return Ack{}, err
	}
	return s.awaitAckNumber(ctx, envelopeID, previousAcks)
}

// LoseNextAck makes the acks of the next envelope sent (a slash command, a click,
// a modal submission) vanish on their way to Slack, as if the bot died just after
// doing the envelope's work and before its ack left: Slack neither sees nor shows
// them, so the envelope stays unacked (late after the ack timeout). AwaitAck (and
// so SlashCommand, Click, SubmitView) answers ErrAckLost with the first lost ack,
// which tells a test that the bot has finished with the envelope. Redeliver ends
// it: the redelivery's ack reaches Slack as usual.
func (s *Server) LoseNextAck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loseNextAck = true
}

// Failures lists the slash commands, clicks and view submissions that failed for their
// users, in order: the ones a real user would have seen fail.
func (s *Server) Failures() []Failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.failures)
}

// LateAcks lists envelopes that were not acked within the ack timeout (3 s), or whose
// ack Slack refused.
func (s *Server) LateAcks() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lateAcks)
}

// Connections is the number of open websockets.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// TotalConnections counts every websocket ever accepted, to see reconnects.
func (s *Server) TotalConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.totalConnections
}

// WaitConnected waits (ctx-bounded) until at least one websocket is open.
func (s *Server) WaitConnected(ctx context.Context) error {
	return s.WaitUntil(ctx, func() bool { return s.Connections() > 0 })
}

// Disconnect sends every open connection a disconnect message with reason
// ("warning", "refresh_requested", "link_disabled", ...) and closes it a moment
// later; after a "warning" the connection keeps taking envelopes until then.
func (s *Server) Disconnect(reason string) {
	frame, _ := json.Marshal(map[string]any{
		"type":       "disconnect",
		"reason":     reason,
		"debug_info": map[string]any{"host": "applink-sim"},
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	grace := disconnectGrace
	if reason == "warning" {
		grace = warningGrace
	}
	for _, c := range s.conns {
		if reason != "warning" {
			c.draining = true
		}
		select {
		case c.out <- outFrame{data: frame}:
		default:
		}
		s.afterFuncLocked(grace, func() {
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, reason), time.Now().Add(time.Second))
			_ = c.ws.Close()
		})
	}
	s.flushWaitingLocked()
}

// DropConnections closes every websocket at once, without a close frame, as a
// network failure would.
func (s *Server) DropConnections() {
	s.mu.Lock()
	conns := s.liveConnsLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.shutdown() // closes the websocket, and the connection is gone before this returns
	}
}

// StopPings stops the PING frames on the connections open now (new connections get
// them again), so that slack-go's ping timeout makes it reconnect.
func (s *Server) StopPings() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.pingsStopped.Store(true)
	}
}
