package fal

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/go-resty/resty/v2"
)

// call describes one API operation; do runs it with retries.
type call struct {
	op             string
	method         string
	path           string // relative to the base URL; "{id}" is filled from id
	id             string
	query          url.Values
	body           []byte
	idempotencyKey string
	// goneAfterUncertain turns a 404 into success once an earlier attempt
	// may have reached the server (delete).
	goneAfterUncertain bool
}

// response is a 2xx answer.
type response struct {
	status int
	body   []byte
}

// outcome is what one attempt produced.
type outcome struct {
	resp      response
	err       error
	retryable bool
	// uncertain: the request may have taken effect although no success
	// answer came back.
	uncertain bool
	wait      time.Duration // server-requested wait (Retry-After), if any
}

// do runs cl until it succeeds, fails for good, the retry budget
// (maxElapsed) is spent or ctx ends. The budget decides whether another
// attempt may start; a started attempt keeps its full timeout, so that the
// error returned is fal's last answer rather than a cut-short attempt.
// A call thus ends within maxElapsed plus one timeout.
//
// The loop is ours rather than resty's retry support because resty caps a
// server's Retry-After at its maximum backoff, counts retries instead of
// bounding elapsed time, and logs each failed attempt itself.
func (c *Client) do(ctx context.Context, cl call) (response, error) {
	start := time.Now()
	uncertain := false
	for attempt := 1; ; attempt++ {
		out := c.attempt(ctx, cl)
		if out.err == nil {
			return out.resp, nil
		}
		if cl.goneAfterUncertain && uncertain && IsNotFound(out.err) {
			c.log.Debug("fal: not found after an uncertain attempt, treating as done", "op", cl.op, "attempt", attempt)
			return response{status: http.StatusNoContent}, nil
		}
		uncertain = uncertain || out.uncertain
		if ctx.Err() != nil {
			return response{}, fmt.Errorf("%w (attempt %d: %v)", context.Cause(ctx), attempt, out.err)
		}
		if !out.retryable {
			return response{}, out.err
		}
		wait := out.wait
		if wait <= 0 {
			wait = c.backoff(attempt)
		}
		elapsed := time.Since(start)
		if elapsed+wait >= c.maxElapsed {
			return response{}, fmt.Errorf("gave up after %d attempts in %s: %w", attempt, elapsed.Round(time.Millisecond), out.err)
		}
		c.log.Warn("fal: call failed, retrying", "op", cl.op, "attempt", attempt, "wait", wait, "error", out.err.Error())
		if err := sleep(ctx, wait); err != nil {
			return response{}, fmt.Errorf("%w (attempt %d: %v)", err, attempt, out.err)
		}
	}
}

// attempt sends cl once, bounded by the per-attempt timeout.
func (c *Client) attempt(ctx context.Context, cl call) outcome {
	attemptCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	req := c.http.R().SetContext(attemptCtx)
	if cl.id != "" {
		req.SetPathParam("id", cl.id)
	}
	if len(cl.query) > 0 {
		req.SetQueryParamsFromValues(cl.query)
	}
	if cl.body != nil {
		req.SetHeader("Content-Type", "application/json").SetBody(cl.body)
	}
	if cl.idempotencyKey != "" {
		req.SetHeader("Idempotency-Key", cl.idempotencyKey)
	}

	began := time.Now()
	resp, err := req.Execute(cl.method, cl.path)
	took := time.Since(began)
	if err != nil {
		c.report(cl.op, 0, took)
		if errors.Is(err, resty.ErrResponseBodyTooLarge) {
			return outcome{err: fmt.Errorf("response over %d bytes: %w", maxResponseBytes, err)}
		}
		// The request may have reached fal before the connection failed.
		return outcome{err: err, retryable: true, uncertain: true}
	}
	status := resp.StatusCode()
	c.report(cl.op, status, took)
	if status >= 200 && status <= 299 {
		c.log.Debug("fal: call done", "op", cl.op, "status", status, "took", took)
		return outcome{resp: response{status: status, body: resp.Body()}}
	}
	apiErr := parseError(status, resp.Header(), resp.Body(), c.redact)
	c.log.Debug("fal: call failed", "op", cl.op, "status", status, "took", took, "request_id", apiErr.RequestID)
	return outcome{
		err:       apiErr,
		retryable: retryableStatus(status),
		uncertain: status >= 500,
		wait:      apiErr.RetryAfter,
	}
}

// retryableStatus: 429 and 5xx can succeed later; 501 means fal does not
// implement the call, which waiting will not change.
func retryableStatus(status int) bool {
	return status == http.StatusTooManyRequests || (status >= 500 && status <= 599 && status != http.StatusNotImplemented)
}

// backoff is capped exponential backoff with "equal jitter": half the step
// is fixed, half random, so concurrent clients spread out without ever
// retrying immediately.
func (c *Client) backoff(attempt int) time.Duration {
	step := c.baseDelay
	for i := 1; i < attempt && step < c.maxDelay; i++ {
		step *= 2
	}
	step = min(step, c.maxDelay)
	half := step / 2
	return half + rand.N(step-half+1)
}

func (c *Client) report(op string, status int, took time.Duration) {
	if c.observe != nil {
		c.observe(op, status, took)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
