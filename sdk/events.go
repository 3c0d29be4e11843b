package sdk

import (
	"encoding/json"
	"fmt"

	"github.com/orchestratord/orchestratord/gen/client"
)

// Event is one event of a task's stream: *Started, *Token, *Metrics, *End or *ErrorEvent.
// Their fields are the contract's x-sse-events schemas of streamTask (a test checks that they
// match openapi/orchestratord.yaml).
type Event interface {
	// EventID is the frame's SSE id: monotonic per task, from 0.
	EventID() int64
	// EventName is the SSE event name ("started", "token", "metrics", "end", "error").
	EventName() string
}

// Started is the first event: the task was admitted and placed.
type Started struct {
	ID               int64         `json:"-"`
	QueuePosition    int32         `json:"queue_position"`
	PredictedStartMs int64         `json:"predicted_start_ms"`
	PoolID           string        `json:"pool_id,omitempty"`
	Engine           client.Engine `json:"engine,omitempty"`
}

// Token is one generated token; Index is contiguous from 0.
type Token struct {
	ID    int64  `json:"-"`
	Text  string `json:"t"`
	Index int32  `json:"i"`
}

// Metrics is a progress report while the task is queued or running.
type Metrics struct {
	ID                    int64   `json:"-"`
	QueueDepth            int32   `json:"queue_depth"`
	OnTimeProbability     float64 `json:"on_time_probability"`
	KVWarmth              bool    `json:"kv_warmth"`
	TokensOut             *int32  `json:"tokens_out,omitempty"`
	TokensBudgetRemaining *int64  `json:"tokens_budget_remaining,omitempty"`
	TimeBudgetRemainingMs *int64  `json:"time_budget_remaining_ms,omitempty"`
	// Human is a narration of the numbers (verbose streams only).
	Human string `json:"human,omitempty"`
}

// End is the last event of a task that finished or was canceled.
type End struct {
	ID           int64  `json:"-"`
	TokensOut    int32  `json:"tokens_out"`
	DecodeMs     int64  `json:"decode_ms"`
	DecodeTimeMs int64  `json:"decode_time_ms"`
	Canceled     bool   `json:"canceled,omitempty"`
	StopReason   string `json:"stop_reason,omitempty"`
	// EngineStopReason is the engine's own finish reason when StopReason names none of the
	// contract's (an OpenAI-compatible server's content_filter, say); StopReason is then eos.
	EngineStopReason string `json:"engine_stop_reason,omitempty"`
	// Migrations is how many times the task moved mid-stream to another replica (0: never).
	Migrations int32 `json:"migrations,omitempty"`
	// TokensCached is how many prompt tokens the engine served from its KV cache.
	TokensCached int32 `json:"tokens_cached,omitempty"`
	// Stop is "budget" when the task used all its key's token budget granted it at admission.
	Stop string `json:"stop,omitempty"`
}

// ErrorEvent is the last event of a task that failed. It is an error too.
type ErrorEvent struct {
	ID           int64            `json:"-"`
	Code         client.ErrorKind `json:"code"`
	Message      string           `json:"message"`
	Retriable    bool             `json:"retriable"`
	RetryAfterMs *int64           `json:"retry_after_ms,omitempty"`
	Engine       client.Engine    `json:"engine,omitempty"`
	PoolID       string           `json:"pool_id,omitempty"`
}

// EventID implements Event.
func (e *Started) EventID() int64 { return e.ID }

// EventID implements Event.
func (e *Token) EventID() int64 { return e.ID }

// EventID implements Event.
func (e *Metrics) EventID() int64 { return e.ID }

// EventID implements Event.
func (e *End) EventID() int64 { return e.ID }

// EventID implements Event.
func (e *ErrorEvent) EventID() int64 { return e.ID }

// EventName implements Event.
func (*Started) EventName() string { return "started" }

// EventName implements Event.
func (*Token) EventName() string { return "token" }

// EventName implements Event.
func (*Metrics) EventName() string { return "metrics" }

// EventName implements Event.
func (*End) EventName() string { return "end" }

// EventName implements Event.
func (*ErrorEvent) EventName() string { return "error" }

// Error implements error: a failed task.
func (e *ErrorEvent) Error() string { return fmt.Sprintf("task failed: %s (%s)", e.Message, e.Code) }

// decodeEvent turns a frame into its typed event; nil (and no error) for an unknown event name.
func decodeEvent(f frame) (Event, error) {
	var ev Event
	switch f.event {
	case "started":
		ev = &Started{ID: f.id}
	case "token":
		ev = &Token{ID: f.id}
	case "metrics":
		ev = &Metrics{ID: f.id}
	case "end":
		ev = &End{ID: f.id}
	case "error":
		ev = &ErrorEvent{ID: f.id}
	default:
		return nil, nil
	}
	if err := json.Unmarshal([]byte(f.data), ev); err != nil {
		return nil, fmt.Errorf("sdk: frame %d (%s): %w", f.id, f.event, err)
	}
	return ev, nil
}

// terminal reports whether ev is the last event of its stream.
func terminal(ev Event) bool {
	switch ev.(type) {
	case *End, *ErrorEvent:
		return true
	}
	return false
}
