package sim

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFaults: every personality injects every fault in its own words: refusals before any
// token (status and body), and mid-stream failures after Fault.After tokens (a cut body, a
// frame that is not JSON, a crash that calls OnCrash).
func TestFaults(t *testing.T) {
	type personalityCase struct {
		name, path, body, tokenMark string
		ctxStatus                   int
		ctxBody                     string
		overloadStatus              int
		overloadBody                string
	}
	personalities := []personalityCase{
		{"llamacpp", "/completion", `{"prompt":"a b c","n_predict":5,"stream":true}`, `"content":" t`,
			400, "exceed_context_size_error", 429, "rate_limit_error"},
		{"openai", "/v1/completions", `{"model":"m","prompt":"a b c","max_tokens":5,"stream":true}`, `"text":" t`,
			400, "maximum context length is 64 tokens", 429, "rate_limit_error"},
		{"tgi", "/generate_stream", `{"inputs":"a b c","parameters":{"max_new_tokens":5}}`, `"token":{`,
			200, `data:{"error":"` + "`inputs` tokens + `max_new_tokens` must be <= 64. Given: 3 `inputs` tokens and 5 `max_new_tokens`" + `","error_type":"validation"}`,
			200, `"error_type":"overloaded"`},
	}
	for _, p := range personalities {
		t.Run(p.name, func(t *testing.T) {
			var crashes atomic.Int32
			s, ts := newServer(t, Options{NCtx: 64, OnCrash: func() { crashes.Add(1) }})
			do := func(f Fault) (int, string, error) {
				s.SetFault(f)
				resp := post(t, t.Context(), ts, p.path, p.body)
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b), err
			}
			code, body, err := do(Fault{Mode: FaultContextTooLong})
			if err != nil || code != p.ctxStatus || !strings.Contains(body, p.ctxBody) || strings.Contains(body, p.tokenMark) {
				t.Errorf("context too long: %d %q %v", code, body, err)
			}
			code, body, err = do(Fault{Mode: FaultOverload})
			if err != nil || code != p.overloadStatus || !strings.Contains(body, p.overloadBody) {
				t.Errorf("overload: %d %q %v", code, body, err)
			}
			if code, body, err = do(Fault{Mode: FaultUnavailable}); err != nil || code != http.StatusServiceUnavailable {
				t.Errorf("unavailable: %d %q %v", code, body, err)
			}
			code, body, err = do(Fault{Mode: FaultCut, After: 2})
			if err == nil || code != http.StatusOK || strings.Count(body, p.tokenMark) != 2 || !strings.HasSuffix(body, `data: {"tok`) {
				t.Errorf("cut: %d %q %v", code, body, err)
			}
			code, body, err = do(Fault{Mode: FaultMalformed, After: 1})
			if err != nil || code != http.StatusOK || strings.Count(body, p.tokenMark) != 1 {
				t.Errorf("malformed: %d %q %v", code, body, err)
			} else if frames := strings.Split(strings.TrimSpace(body), "\n\n"); !strings.HasPrefix(frames[len(frames)-1], "data:") ||
				strings.HasSuffix(frames[len(frames)-1], "}") {
				t.Errorf("malformed: last frame %q", frames[len(frames)-1])
			}
			code, body, err = do(Fault{Mode: FaultCrash, After: 3})
			if err == nil || code != http.StatusOK || strings.Count(body, p.tokenMark) != 3 || crashes.Load() != 1 {
				t.Errorf("crash: %d %q %v, %d crashes", code, body, err, crashes.Load())
			}
			if code, body, err = do(Fault{}); err != nil || code != http.StatusOK || strings.Count(body, p.tokenMark) != 5 {
				t.Errorf("no fault: %d %q %v", code, body, err)
			}
		})
	}
}

// TestSlowFirstToken: the first token waits Fault.Delay beyond FirstTokenDelay (checked with
// the stamps the simulator writes, not the test's clock).
func TestSlowFirstToken(t *testing.T) {
	const delay = 50 * time.Millisecond
	_, ts := newServer(t, Options{Fault: Fault{Mode: FaultSlowFirstToken, Delay: delay}})
	sent := time.Now()
	resp := post(t, t.Context(), ts, "/generate_stream", `{"inputs":"x","parameters":{"max_new_tokens":2}}`)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(b), `"text":"`)
	if i < 0 {
		t.Fatalf("no token in %q", b)
	}
	at := mustStamp(t, string(b[i+8:i+8+StampLen]))
	if at.Sub(sent) < delay {
		t.Errorf("first token stamped %v after the request, want at least %v", at.Sub(sent), delay)
	}
}

// TestMetricsNames: GET /metrics carries the load series of vLLM, SGLang, TGI and llama.cpp,
// counting a generation that holds a slot.
func TestMetricsNames(t *testing.T) {
	_, ts := newServer(t, Options{Model: "m", TotalSlots: 4})
	resp, err := ts.Client().Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`vllm:num_requests_running{model_name="m"} 0`, "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
		"sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage", "tgi_batch_current_size 0",
		"tgi_queue_size 0", "llamacpp:requests_processing", "llamacpp:kv_cache_usage_ratio"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, b)
		}
	}
}
