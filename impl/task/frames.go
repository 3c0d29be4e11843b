package task

import (
	"math"
	"strconv"
	"time"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/impl/sse"
	"github.com/orchestratord/orchestratord/internal/textclip"
)

// metricsData builds a metrics frame's payload, plain and verbose.
func (s *Service) metricsData(t *Task, tokensOut int, now time.Time) ([]byte, []byte) {
	rates, err := s.queue.PoolRates(t.poolID)
	tps := rates.TokensPerS
	if err != nil || tps <= 0 {
		tps = 1
	}
	want := t.spec.MaxTokens
	if t.spec.ExpectedTokens > 0 {
		want = min(t.spec.ExpectedTokens, t.spec.MaxTokens)
	}
	remaining := float64(max(want-tokensOut, 0))
	a := float64(t.deadline.Sub(now).Milliseconds())
	r := remaining / tps * 1000
	p := OnTimeProbability(a, r)
	depth := s.queue.Depth()
	warm := tokensOut > 0
	// One buffer holds both: the plain payload, then the verbose one (the same fields and
	// "human"). The callers copy them into the log and the journal.
	b := make([]byte, 0, 512)
	b = append(b, `{"queue_depth":`...)
	b = strconv.AppendInt(b, int64(depth), 10)
	b = append(b, `,"on_time_probability":`...)
	b = strconv.AppendFloat(b, p, 'f', -1, 64)
	b = append(b, `,"kv_warmth":`...)
	b = strconv.AppendBool(b, warm)
	b = append(b, `,"tokens_out":`...)
	b = strconv.AppendInt(b, int64(tokensOut), 10)
	b = append(b, `,"time_budget_remaining_ms":`...)
	b = strconv.AppendInt(b, max(int64(a), 0), 10)
	if info, ok := s.sessionOf(t); ok && info.TokensBudgetRemaining != nil {
		// What the session would have left if this task stopped now: its unreserved budget
		// plus the part of this task's reservation it has not produced yet.
		left := *info.TokensBudgetRemaining + int64(max(t.spec.SessionGrant-tokensOut, 0))
		b = append(b, `,"tokens_budget_remaining":`...)
		b = strconv.AppendInt(b, left, 10)
	}
	fields := len(b)
	b = append(b, '}')
	plain := b[:len(b):len(b)]
	b = append(b, b[:fields]...)
	b = append(b, `,"human":`...)
	b = appendMetricsHuman(b, t.poolID, tokensOut, want, tps, max(int64(a), 0), p)
	b = append(b, '}')
	return plain, b[len(plain):]
}

// appendMetricsHuman appends a metrics frame's sentence as a JSON string: what
// sse.AppendString(b, fmt.Sprintf("decoding on pool %s: %d of up to %d tokens, %.0f tokens/s,
// %d ms left, on-time probability %.2f", ...)) appends, without building the sentence apart.
// Only the pool id can need escaping: the rest is ASCII letters, digits and punctuation.
func appendMetricsHuman(b []byte, poolID string, tokensOut, want int, tps float64, leftMs int64, p float64) []byte {
	b = append(b, `"decoding on pool `...)
	n := len(b)
	b = sse.AppendString(b, poolID)
	b = append(b[:n], b[n+1:len(b)-1]...) // without its quotes
	b = append(b, ": "...)
	b = strconv.AppendInt(b, int64(tokensOut), 10)
	b = append(b, " of up to "...)
	b = strconv.AppendInt(b, int64(want), 10)
	b = append(b, " tokens, "...)
	b = appendFixed(b, tps, 0)
	b = append(b, " tokens/s, "...)
	b = strconv.AppendInt(b, leftMs, 10)
	b = append(b, " ms left, on-time probability "...)
	b = appendFixed(b, p, 2)
	return append(b, '"')
}

// appendFixed appends v as fmt's %.<prec>f writes it.
func appendFixed(b []byte, v float64, prec int) []byte {
	return strconv.AppendFloat(b, v, 'f', prec, 64)
}

// OnTimeProbability is the documented estimate p = 1 / (1 + exp(−(A − R) / s)) with
// s = max(50, 0.25·R), where A is the time left until the deadline and R the predicted time
// still needed, both in milliseconds; rounded to 3 decimals. It is 0 once no time is left.
func OnTimeProbability(a, r float64) float64 {
	if a <= 0 {
		return 0
	}
	sc := math.Max(50, 0.25*r)
	p := 1 / (1 + math.Exp(-(a-r)/sc))
	return math.Round(p*1000) / 1000
}

func startedData(pos int, predicted int64, poolID, eng string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"queue_position":`...)
	b = strconv.AppendInt(b, int64(pos), 10)
	b = append(b, `,"predicted_start_ms":`...)
	b = strconv.AppendInt(b, predicted, 10)
	b = append(b, `,"pool_id":`...)
	b = sse.AppendString(b, poolID)
	b = append(b, `,"engine":`...)
	b = sse.AppendString(b, eng)
	return append(b, '}')
}

// maxEngineStop is the contract's maxLength of SSEEnd.engine_stop_reason.
const maxEngineStop = 64

func endData(tokensOut int, decodeMs int64, canceled bool, stop engine.StopReason, migrations, cached int) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"tokens_out":`...)
	b = strconv.AppendInt(b, int64(tokensOut), 10)
	b = append(b, `,"decode_ms":`...)
	b = strconv.AppendInt(b, decodeMs, 10)
	b = append(b, `,"decode_time_ms":`...)
	b = strconv.AppendInt(b, decodeMs, 10)
	switch {
	case canceled:
		b = append(b, `,"canceled":true,"stop_reason":"canceled"`...)
	case stop == engine.StopLimit, stop == engine.StopEOS, stop == engine.StopWord, stop == StopBudget:
		b = append(b, `,"stop_reason":`...)
		b = sse.AppendString(b, string(stop))
	case stop != "":
		// A finish reason of the engine's own (content_filter, tool_calls, a new one): the
		// contract's stop_reason is a closed set, and the engine ended the generation itself.
		b = append(b, `,"stop_reason":"eos","engine_stop_reason":`...)
		b = sse.AppendString(b, textclip.Clip(string(stop), maxEngineStop))
	}
	if migrations > 0 {
		b = append(b, `,"migrations":`...)
		b = strconv.AppendInt(b, int64(migrations), 10)
	}
	if cached > 0 {
		b = append(b, `,"tokens_cached":`...)
		b = strconv.AppendInt(b, int64(cached), 10)
	}
	if stop == StopBudget && !canceled {
		b = append(b, `,"stop":"budget"`...)
	}
	return append(b, '}')
}

func errorData(code string, ei *ErrorInfo) []byte {
	b := make([]byte, 0, 192)
	b = append(b, `{"code":`...)
	b = sse.AppendString(b, code)
	b = append(b, `,"message":`...)
	b = sse.AppendString(b, ei.Message)
	b = append(b, `,"retriable":`...)
	b = strconv.AppendBool(b, ei.Retriable)
	if ei.RetryAfterMs > 0 {
		b = append(b, `,"retry_after_ms":`...)
		b = strconv.AppendInt(b, ei.RetryAfterMs, 10)
	}
	if ei.Engine != "" {
		b = append(b, `,"engine":`...)
		b = sse.AppendString(b, ei.Engine)
	}
	if ei.PoolID != "" {
		b = append(b, `,"pool_id":`...)
		b = sse.AppendString(b, ei.PoolID)
	}
	return append(b, '}')
}
