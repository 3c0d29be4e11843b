package impl

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orchestratord/orchestratord/impl/artifact"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task"
	"github.com/orchestratord/orchestratord/impl/tenant"
	"github.com/orchestratord/orchestratord/internal/textclip"
)

// Error is an API error: it renders as the ErrorEnvelope with the HTTP status of its code.
type Error struct {
	Code       string
	Message    string
	Engine     string
	PoolID     string
	Retriable  bool
	RetryAfter time.Duration // > 0: retry_after_ms, and on 429 the Retry-After / X-Backoff-Ms headers
	Policy     string
	// Param names the request field at fault, for OpenAI-shaped errors (empty: none).
	Param string
	// TaskID is the task a facade request ran as, sent in X-Task-Id with its error.
	TaskID string
	// Limit names the limit that refused the request: the key's rate limit (RATE_LIMITED) or
	// the budget, the key's or the session's (BUDGET_EXCEEDED).
	Limit string
	// badKey marks the FORBIDDEN of a key that is no key: the OpenAI facade answers it 401
	// invalid_api_key like a missing one, and a valid key's FORBIDDEN (a scope, a priority)
	// 403.
	badKey bool
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// statusOf is the one table from error code to HTTP status.
func statusOf(code string) int {
	switch code {
	case "INVALID_PARAMS", "DEADLINE_UNMET", "UNTRUSTED_ARTIFACT":
		return http.StatusBadRequest
	case "UNAUTHORIZED":
		return http.StatusUnauthorized
	case "FORBIDDEN":
		return http.StatusForbidden
	case "NOT_FOUND":
		return http.StatusNotFound
	case "METHOD_NOT_ALLOWED":
		return http.StatusMethodNotAllowed
	case "CONFLICT", "CANCELED": // CANCELED: the OpenAI facade's completion whose task was canceled
		return http.StatusConflict
	case "PAYLOAD_TOO_LARGE":
		return http.StatusRequestEntityTooLarge
	case "UNSUPPORTED_MEDIA_TYPE":
		return http.StatusUnsupportedMediaType
	case "ADMISSION_REJECT", "QUEUE_FULL_DROP_LRU", "RATE_LIMITED", "BUDGET_EXCEEDED":
		return http.StatusTooManyRequests
	case "POOL_UNAVAILABLE", "POOL_UNREADY", "REPLICA_EXHAUSTED", "MODEL_DEPRECATED":
		return http.StatusServiceUnavailable
	case "STORAGE_FULL":
		return http.StatusInsufficientStorage
	default:
		return http.StatusInternalServerError
	}
}

// FailureCode names a task failure class with its API error code: the one table from the task
// package's classes to codes. The task service uses it for error frames and metric labels.
func FailureCode(c task.Class) string {
	switch c {
	case task.ClassInvalid:
		return "INVALID_PARAMS"
	case task.ClassPoolUnavailable:
		return "POOL_UNAVAILABLE"
	case task.ClassQueueFull:
		return "ADMISSION_REJECT"
	case task.ClassEvicted:
		return "QUEUE_FULL_DROP_LRU"
	case task.ClassDeadline:
		return "DEADLINE_UNMET"
	case task.ClassWorkerReset:
		return "WORKER_RESET"
	case task.ClassDecodeTimeout:
		return "DECODE_TIMEOUT"
	case task.ClassOverload:
		return "REPLICA_EXHAUSTED"
	default:
		return "INTERNAL"
	}
}

// codeOfStatus maps an HTTP status produced outside our handlers (router, body limit, binder)
// to an error code.
func codeOfStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "INVALID_PARAMS"
	case http.StatusUnauthorized:
		return "UNAUTHORIZED"
	case http.StatusForbidden:
		return "FORBIDDEN"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusMethodNotAllowed:
		return "METHOD_NOT_ALLOWED"
	case http.StatusRequestEntityTooLarge:
		return "PAYLOAD_TOO_LARGE"
	case http.StatusUnsupportedMediaType:
		return "UNSUPPORTED_MEDIA_TYPE"
	case http.StatusServiceUnavailable:
		return "POOL_UNAVAILABLE"
	default:
		return "INTERNAL"
	}
}

// fromDomain maps a domain error to an API error.
func fromDomain(err error) *Error {
	var apiErr *Error
	var rej *task.RejectError
	var turns *session.TurnLimitError
	var limit *tenant.LimitError
	var budget *tenant.BudgetError
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.As(err, &limit) && limit.RetryAfter == 0:
		// More than the key's whole minute: no wait helps.
		return Errorf("INVALID_PARAMS", "/max_tokens: %s", limit.Error())
	case errors.As(err, &limit):
		return &Error{Code: "RATE_LIMITED", Message: limit.Error(), Retriable: true, RetryAfter: limit.RetryAfter,
			Policy: "rate-limit", Limit: string(limit.Limit)}
	case errors.As(err, &budget):
		// Retriable only while the running tasks hold reservations that may come back.
		which := "key_budget"
		if budget.Session != "" {
			which = "session_budget"
		}
		return &Error{Code: "BUDGET_EXCEEDED", Message: budget.Error(), Retriable: budget.Pending > 0,
			RetryAfter: time.Minute, Policy: "budget", Limit: which}
	case errors.As(err, &rej):
		return &Error{Code: FailureCode(rej.Class), Message: rej.Error(), Engine: rej.Engine, PoolID: rej.PoolID,
			Retriable: true, RetryAfter: rej.RetryAfter, Policy: rej.Policy}
	case errors.Is(err, task.ErrNotFound):
		return Errorf("NOT_FOUND", "task not found")
	case errors.Is(err, session.ErrNotFound):
		return errSessionNotFound()
	case errors.Is(err, task.ErrNoMatch):
		// No configured pool can ever take it: 503 as the product specifies, but not retriable.
		return Errorf("POOL_UNAVAILABLE", "%v", err)
	case errors.Is(err, task.ErrConflict):
		return Errorf("CONFLICT", "%v", err)
	case errors.As(err, &turns):
		// The request is valid; the session it names has no turns left (its state, not the
		// request, is at fault: 409, as a different body for a known task_id). The session's
		// own message names the limit; the task service wraps it.
		return Errorf("CONFLICT", "%s", turns.Error())
	case errors.Is(err, session.ErrTurnLimit):
		return Errorf("CONFLICT", "%v", err)
	case errors.Is(err, task.ErrInvalid):
		return Errorf("INVALID_PARAMS", "%v", err)
	case errors.Is(err, task.ErrUnavailable):
		return &Error{Code: "POOL_UNAVAILABLE", Message: err.Error(), Retriable: true, RetryAfter: time.Second}
	case errors.Is(err, task.ErrNotDurable):
		return &Error{Code: "INTERNAL", Message: err.Error(), Retriable: true, RetryAfter: time.Second}
	case errors.Is(err, task.ErrShuttingDown):
		return &Error{Code: "POOL_UNAVAILABLE", Message: err.Error(), Retriable: true, RetryAfter: time.Second}
	case errors.Is(err, pool.ErrReplicaNotFound):
		return Errorf("NOT_FOUND", "replica not found")
	case errors.Is(err, pool.ErrNotFound):
		return Errorf("NOT_FOUND", "pool not found")
	case errors.Is(err, artifact.ErrNotFound):
		return Errorf("NOT_FOUND", "artifact not found")
	case errors.Is(err, artifact.ErrTooLarge):
		return Errorf("PAYLOAD_TOO_LARGE", "%v", err)
	case errors.Is(err, artifact.ErrFull):
		return Errorf("STORAGE_FULL", "%v", err)
	case errors.Is(err, artifact.ErrInvalidID), errors.Is(err, artifact.ErrInvalid):
		return Errorf("INVALID_PARAMS", "%v", err)
	default:
		return nil
	}
}

// envelope is the wire form of ErrorEnvelope (kept here so that rendering an error never
// depends on a handler's typed response).
type envelope struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	Engine       string `json:"engine,omitempty"`
	PoolID       string `json:"pool_id,omitempty"`
	Retriable    bool   `json:"retriable"`
	RetryAfterMs *int64 `json:"retry_after_ms,omitempty"`
	PolicyLabel  string `json:"policy_label,omitempty"`
	Limit        string `json:"limit,omitempty"`
}

const maxMessage = 2048

// HTTPErrorHandler renders every error that reaches echo as the error envelope.
func HTTPErrorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		e := toAPIError(err)
		if e.Code == "INTERNAL" {
			log.Error("internal error", "method", c.Request().Method, "path", c.Path(),
				"correlation_id", c.Response().Header().Get(HeaderCorrelationID), "err", err)
		}
		status := statusOf(e.Code)
		if status == http.StatusMethodNotAllowed {
			// RFC 9110 §15.5.6: a 405 lists the methods the resource supports. The router found
			// them; the request validator answered before echo's own 405 handler could set them.
			// echo's list always names OPTIONS, which this server answers with 405 too, and never
			// HEAD, which HeadAsGet serves wherever GET is.
			if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok && allow != "" {
				var methods []string
				for _, m := range strings.Split(allow, ",") {
					if m = strings.TrimSpace(m); m != "" && m != http.MethodOptions {
						methods = append(methods, m)
					}
					if m == http.MethodGet {
						methods = append(methods, http.MethodHead)
					}
				}
				c.Response().Header().Set(echo.HeaderAllow, strings.Join(methods, ", "))
			}
		}
		if e.TaskID != "" {
			c.Response().Header().Set(HeaderTaskID, e.TaskID)
		}
		if openAIRoute(c.Path()) {
			status, body := openAIError(e)
			shouldRetry(c.Response().Header(), status, e)
			if status == http.StatusTooManyRequests {
				setBackoff(c.Response().Header(), e.RetryAfter)
				// A key's own limit set its windows already (SetRateLimitHeaders: reset is when
				// the bucket is full again, as on POST /v1/tasks); a full queue has none.
				if c.Response().Header().Get("x-ratelimit-reset-requests") == "" {
					openAIRateLimitHeaders(c.Response().Header(), e.RetryAfter)
				}
			}
			_ = c.JSON(status, body)
			return
		}
		env := envelope{Code: e.Code, Message: e.Message, Engine: e.Engine, PoolID: e.PoolID,
			Retriable: e.Retriable, PolicyLabel: e.Policy, Limit: e.Limit}
		env.Message = textclip.Clip(env.Message, maxMessage)
		if e.RetryAfter > 0 {
			ms := max(e.RetryAfter.Milliseconds(), 1)
			env.RetryAfterMs = &ms
			if status == http.StatusTooManyRequests {
				setBackoff(c.Response().Header(), e.RetryAfter)
			}
		}
		body, _ := json.Marshal(env)
		// For a HEAD request (served as GET, see HeadAsGet) net/http discards the body and keeps
		// the headers, Content-Length included, that the GET gets.
		_ = c.JSONBlob(status, body)
	}
}

// toAPIError classifies any error into an API error.
func toAPIError(err error) *Error {
	if e := fromDomain(err); e != nil {
		return e
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code := codeOfStatus(he.Code)
		msg := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok && m != "" {
			msg = m
		}
		if code == "NOT_FOUND" && he.Internal == nil {
			msg = "no such endpoint"
		}
		return &Error{Code: code, Message: msg}
	}
	return Errorf("INTERNAL", "internal error")
}

// setBackoff sets a 429's Retry-After (whole seconds, at least 1) and X-Backoff-Ms.
func setBackoff(h http.Header, retryAfter time.Duration) {
	if retryAfter <= 0 {
		return
	}
	ms := max(retryAfter.Milliseconds(), 1)
	h.Set("Retry-After", strconv.FormatInt(max((ms+999)/1000, 1), 10))
	h.Set("X-Backoff-Ms", strconv.FormatInt(ms, 10))
}
