package impl

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/artifact"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task"
	"github.com/orchestratord/orchestratord/impl/tenant"
)

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		code   string
		status int
	}{
		{"reject", &task.RejectError{Class: task.ClassQueueFull, RetryAfter: time.Second}, "ADMISSION_REJECT", 429},
		{"drop-lru", fmt.Errorf("wrapped: %w", &task.RejectError{Class: task.ClassEvicted}), "QUEUE_FULL_DROP_LRU", 429},
		{"task not found", task.ErrNotFound, "NOT_FOUND", 404},
		{"conflict", fmt.Errorf("%w: x", task.ErrConflict), "CONFLICT", 409},
		{"invalid", fmt.Errorf("%w: ctx", task.ErrInvalid), "INVALID_PARAMS", 400},
		{"turn limit", &session.TurnLimitError{Limit: 8}, "CONFLICT", 409},
		{"turn limit through the task service", fmt.Errorf("%w: %w", task.ErrInvalid, &session.TurnLimitError{Limit: 8}), "CONFLICT", 409},
		{"turn limit, bare", fmt.Errorf("%w: %w", task.ErrInvalid, session.ErrTurnLimit), "CONFLICT", 409},
		{"no pool", fmt.Errorf("%w: none", task.ErrUnavailable), "POOL_UNAVAILABLE", 503},
		{"no pool serves the task", fmt.Errorf("%w: engine vllm", task.ErrNoMatch), "POOL_UNAVAILABLE", 503},
		{"shutting down", task.ErrShuttingDown, "POOL_UNAVAILABLE", 503},
		{"journal cannot record", fmt.Errorf("%w: %w", task.ErrNotDurable, fmt.Errorf("disk full")), "INTERNAL", 500},
		{"pool not found", pool.ErrNotFound, "NOT_FOUND", 404},
		{"artifact not found", artifact.ErrNotFound, "NOT_FOUND", 404},
		{"artifact too large", artifact.ErrTooLarge, "PAYLOAD_TOO_LARGE", 413},
		{"artifact store full", fmt.Errorf("%w: max_count", artifact.ErrFull), "STORAGE_FULL", 507},
		{"route", echo.ErrNotFound, "NOT_FOUND", 404},
		{"method", echo.ErrMethodNotAllowed, "METHOD_NOT_ALLOWED", 405},
		{"bind", echo.NewHTTPError(http.StatusBadRequest, "bad json"), "INVALID_PARAMS", 400},
		{"api error", Errorf("UNAUTHORIZED", "missing"), "UNAUTHORIZED", 401},
		{"forbidden", Errorf("FORBIDDEN", "bad"), "FORBIDDEN", 403},
		{"media type", Errorf("UNSUPPORTED_MEDIA_TYPE", "x"), "UNSUPPORTED_MEDIA_TYPE", 415},
		{"engine fault", Errorf("WORKER_RESET", "x"), "WORKER_RESET", 500},
		{"unknown", errors.New("boom"), "INTERNAL", 500},
		{"rate limited", fmt.Errorf("w: %w", &tenant.LimitError{Limit: tenant.LimitRequests, Max: 2, Asked: 1, RetryAfter: time.Second}), "RATE_LIMITED", 429},
		{"over the whole tpm", &tenant.LimitError{Limit: tenant.LimitTokens, Max: 2, Asked: 3}, "INVALID_PARAMS", 400},
		{"budget spent", &tenant.BudgetError{Key: "a", Budget: 10}, "BUDGET_EXCEEDED", 429},
		{"another key's session through the task service", fmt.Errorf("%w: %q", session.ErrNotFound, "s"), "NOT_FOUND", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := toAPIError(tt.err)
			if e.Code != tt.code || statusOf(e.Code) != tt.status {
				t.Fatalf("toAPIError = %s (status %d), want %s (%d)", e.Code, statusOf(e.Code), tt.code, tt.status)
			}
		})
	}
}

// TestBudgetLimit: a BUDGET_EXCEEDED envelope names the budget that refused, the key's or the
// session's.
func TestBudgetLimit(t *testing.T) {
	for _, tt := range []struct {
		err   error
		limit string
	}{
		{&tenant.BudgetError{Key: "a", Budget: 10}, "key_budget"},
		{fmt.Errorf("w: %w", &tenant.BudgetError{Key: "a", Session: "s"}), "session_budget"},
	} {
		if e := toAPIError(tt.err); e.Code != "BUDGET_EXCEEDED" || e.Limit != tt.limit {
			t.Errorf("%v: %s limit %q, want BUDGET_EXCEEDED limit %q", tt.err, e.Code, e.Limit, tt.limit)
		}
	}
}

// TestFailureCodes covers every task failure class: each has its API code and that code's
// status, and an engine failure keeps the code its engine.Kind names.
func TestFailureCodes(t *testing.T) {
	tests := []struct {
		class  task.Class
		code   string
		status int
	}{
		{task.ClassInternal, "INTERNAL", 500},
		{task.ClassInvalid, "INVALID_PARAMS", 400},
		{task.ClassPoolUnavailable, "POOL_UNAVAILABLE", 503},
		{task.ClassQueueFull, "ADMISSION_REJECT", 429},
		{task.ClassEvicted, "QUEUE_FULL_DROP_LRU", 429},
		{task.ClassDeadline, "DEADLINE_UNMET", 400},
		{task.ClassWorkerReset, "WORKER_RESET", 500},
		{task.ClassDecodeTimeout, "DECODE_TIMEOUT", 500},
		{task.ClassOverload, "REPLICA_EXHAUSTED", 503},
	}
	covered := map[task.Class]bool{}
	for _, tt := range tests {
		covered[tt.class] = true
		t.Run(tt.class.String(), func(t *testing.T) {
			if got := FailureCode(tt.class); got != tt.code || statusOf(got) != tt.status {
				t.Fatalf("FailureCode = %s (status %d), want %s (%d)", got, statusOf(got), tt.code, tt.status)
			}
		})
	}
	for _, c := range task.Classes() {
		if !covered[c] {
			t.Errorf("class %s is missing from this table", c)
		}
	}
}

// TestEngineKindCodes covers every engine failure kind: the code a task fails with (through its
// class) is in the contract's ErrorKind enum; the request's faults are INVALID_PARAMS; the
// daemon's are INTERNAL; the replica's and overload are never INVALID_PARAMS.
func TestEngineKindCodes(t *testing.T) {
	spec, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, v := range spec.Components.Schemas["ErrorKind"].Value.Enum {
		codes = append(codes, v.(string))
	}
	want := map[engine.Kind]string{
		engine.KindInternal: "INTERNAL", engine.KindInvalidRequest: "INVALID_PARAMS",
		engine.KindPoolUnavailable: "POOL_UNAVAILABLE", engine.KindWorkerReset: "WORKER_RESET",
		engine.KindDecodeTimeout: "DECODE_TIMEOUT", engine.KindEngineFailure: "WORKER_RESET",
		engine.KindProtocol: "WORKER_RESET", engine.KindOverload: "REPLICA_EXHAUSTED",
	}
	for _, k := range engine.Kinds() {
		t.Run(k.String(), func(t *testing.T) {
			code := FailureCode(task.ClassOfKind(k))
			if w, ok := want[k]; !ok || code != w {
				t.Errorf("code %s, want %q", code, w)
			}
			if !slices.Contains(codes, code) {
				t.Errorf("code %q is not in the contract's ErrorKind", code)
			}
			switch f := k.Fault(); {
			case f == engine.FaultRequest && code != "INVALID_PARAMS",
				f == engine.FaultDaemon && code != "INTERNAL",
				(f == engine.FaultReplica || f == engine.FaultOverload) && (code == "INVALID_PARAMS" || code == "INTERNAL"):
				t.Errorf("%v fault mapped to %s", f, code)
			}
		})
	}
}

// TestTurnLimitMessage: a session past its turns is refused with the limit's own message,
// which needs the task service to keep the session's error in the chain.
func TestTurnLimitMessage(t *testing.T) {
	err := fmt.Errorf("%w: %w", task.ErrInvalid, &session.TurnLimitError{Limit: 2})
	if e := toAPIError(err); e.Code != "CONFLICT" || e.Message != "session has reached its limit of 2 turns" {
		t.Fatalf("toAPIError = %+v", e)
	}
}
