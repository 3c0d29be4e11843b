package impl

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/orchestratord/orchestratord/impl/artifact"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task"
)

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		code   string
		status int
	}{
		{"reject", &task.RejectError{Code: "ADMISSION_REJECT", RetryAfter: time.Second}, "ADMISSION_REJECT", 429},
		{"drop-lru", fmt.Errorf("wrapped: %w", &task.RejectError{Code: "QUEUE_FULL_DROP_LRU"}), "QUEUE_FULL_DROP_LRU", 429},
		{"task not found", task.ErrNotFound, "NOT_FOUND", 404},
		{"conflict", fmt.Errorf("%w: x", task.ErrConflict), "CONFLICT", 409},
		{"invalid", fmt.Errorf("%w: ctx", task.ErrInvalid), "INVALID_PARAMS", 400},
		{"turn limit", &session.TurnLimitError{Limit: 8}, "INVALID_PARAMS", 400},
		{"no pool", fmt.Errorf("%w: none", task.ErrUnavailable), "POOL_UNAVAILABLE", 503},
		{"no pool serves the task", fmt.Errorf("%w: engine vllm", task.ErrNoMatch), "POOL_UNAVAILABLE", 503},
		{"shutting down", task.ErrShuttingDown, "POOL_UNAVAILABLE", 503},
		{"pool not found", pool.ErrNotFound, "NOT_FOUND", 404},
		{"artifact not found", artifact.ErrNotFound, "NOT_FOUND", 404},
		{"artifact too large", artifact.ErrTooLarge, "PAYLOAD_TOO_LARGE", 413},
		{"route", echo.ErrNotFound, "NOT_FOUND", 404},
		{"method", echo.ErrMethodNotAllowed, "METHOD_NOT_ALLOWED", 405},
		{"bind", echo.NewHTTPError(http.StatusBadRequest, "bad json"), "INVALID_PARAMS", 400},
		{"api error", Errorf("UNAUTHORIZED", "missing"), "UNAUTHORIZED", 401},
		{"forbidden", Errorf("FORBIDDEN", "bad"), "FORBIDDEN", 403},
		{"media type", Errorf("UNSUPPORTED_MEDIA_TYPE", "x"), "UNSUPPORTED_MEDIA_TYPE", 415},
		{"engine fault", Errorf("WORKER_RESET", "x"), "WORKER_RESET", 500},
		{"unknown", errors.New("boom"), "INTERNAL", 500},
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
