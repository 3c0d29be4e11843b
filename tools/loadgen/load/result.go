package load

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// SchemaVersion is Result.Schema; it changes when a field changes meaning or is removed.
const SchemaVersion = 1

// Summary is a latency distribution in milliseconds (fractional, microsecond precision). A
// zero Count means no samples; the other fields are then 0.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	Min   float64 `json:"min"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// Result is the outcome of a run; the JSON form is what the benchmark scripts read.
type Result struct {
	Schema int    `json:"schema"`
	Label  string `json:"label,omitempty"`
	Target Target `json:"target"`
	URL    string `json:"url"`
	// Mode is "closed" (fixed concurrency) or "open" (fixed rate).
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	Stream      bool    `json:"stream"`
	// Tokens is the max_tokens / n_predict sent.
	Tokens int `json:"tokens"`
	// MaxRequests and MaxDurationS are the run's bounds; StoppedBy says which one ended
	// issuing: "requests", "duration" or "canceled".
	MaxRequests  int     `json:"max_requests"`
	MaxDurationS float64 `json:"max_duration_s"`
	StoppedBy    string  `json:"stopped_by"`

	StartedAt time.Time `json:"started_at"`
	// WallS is the time from the first request's start to the last request's end, seconds.
	WallS float64 `json:"wall_s"`

	// Requests is the number of requests issued (including client_overload ones, which were
	// due but not sent); Succeeded + Failed == Requests.
	Requests  int64 `json:"requests"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	// Errors counts failed requests by class (see the package documentation).
	Errors map[string]int64 `json:"errors"`
	// ThroughputRPS is Succeeded / WallS.
	ThroughputRPS float64 `json:"throughput_rps"`

	// LatencyMs is the request latency of successful requests: admission latency, the full
	// stream duration (to the final frame), or the full non-stream response.
	LatencyMs Summary `json:"latency_ms"`
	// TTFTMs is the time to the first token frame of successful streams, from the request's
	// start (orchd-stream: the POST's start).
	TTFTMs *Summary `json:"ttft_ms,omitempty"`

	// TokensReceived counts tokens received by all requests (successful or not); TokensPerS
	// is TokensReceived / WallS.
	TokensReceived int64   `json:"tokens_received"`
	TokensPerS     float64 `json:"tokens_per_s"`
	// TokenLatencyMs is the per-token added latency: client receive time minus the engine's
	// emission stamp, over all stamped stream tokens (histogram quantiles, within 1/16).
	TokenLatencyMs *Summary `json:"token_latency_ms,omitempty"`
	// StampedTokens counts tokens that carried an emission stamp; UnstampedTokens those that
	// did not (a real engine, or a proxy that rewrote the text). NegativeTokenLatencies counts
	// stamps later than their receipt (clock steps), recorded as 0.
	StampedTokens          int64 `json:"stamped_tokens"`
	UnstampedTokens        int64 `json:"unstamped_tokens"`
	NegativeTokenLatencies int64 `json:"negative_token_latencies,omitempty"`
}

// WriteSummary writes a human-readable summary of r.
func WriteSummary(w io.Writer, r *Result) error {
	var b strings.Builder
	name := string(r.Target)
	if r.Label != "" {
		name = r.Label + " (" + name + ")"
	}
	mode := fmt.Sprintf("closed loop, concurrency %d", r.Concurrency)
	if r.Mode == "open" {
		mode = fmt.Sprintf("open loop, %g req/s, max in flight %d", r.Rate, r.Concurrency)
	}
	fmt.Fprintf(&b, "%s → %s\n", name, r.URL)
	fmt.Fprintf(&b, "  mode        %s; stream %v; tokens %d; stopped by %s\n", mode, r.Stream, r.Tokens, r.StoppedBy)
	fmt.Fprintf(&b, "  requests    %d issued, %d ok, %d failed in %.3fs → %.1f req/s\n",
		r.Requests, r.Succeeded, r.Failed, r.WallS, r.ThroughputRPS)
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, "  errors     ")
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(&b, " %s=%d", k, r.Errors[k])
		}
		b.WriteByte('\n')
	}
	writeSummaryLine(&b, "latency", r.LatencyMs)
	if r.TTFTMs != nil {
		writeSummaryLine(&b, "ttft", *r.TTFTMs)
	}
	if r.Stream || r.TokensReceived > 0 {
		fmt.Fprintf(&b, "  tokens      %d received → %.1f tokens/s (stamped %d, unstamped %d)\n",
			r.TokensReceived, r.TokensPerS, r.StampedTokens, r.UnstampedTokens)
	}
	if r.TokenLatencyMs != nil {
		writeSummaryLine(&b, "token added", *r.TokenLatencyMs)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSummaryLine(b *strings.Builder, name string, s Summary) {
	if s.Count == 0 {
		fmt.Fprintf(b, "  %-11s no samples\n", name)
		return
	}
	fmt.Fprintf(b, "  %-11s ms p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  (mean %.3f, min %.3f, n=%d)\n",
		name, s.P50, s.P90, s.P99, s.Max, s.Mean, s.Min, s.Count)
}
