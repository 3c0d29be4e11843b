package app_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/fake"
)

// A chat asking for log probabilities is refused with 400, as README promises for what is not
// supported, not answered 200 without them; false or null is fine.
func TestChatLogprobsRefused(t *testing.T) {
	d := startFakeDaemon(t, "", fake.Options{}, nil)
	for body, want := range map[string]int{
		`{"model": "fake", "max_tokens": 2, "logprobs": true, "messages": [{"role": "user", "content": "Hi"}]}`:                        http.StatusBadRequest,
		`{"model": "fake", "max_tokens": 2, "logprobs": true, "top_logprobs": 3, "messages": [{"role": "user", "content": "Hi"}]}`:     http.StatusBadRequest,
		`{"model": "fake", "max_tokens": 2, "top_logprobs": 3, "messages": [{"role": "user", "content": "Hi"}]}`:                       http.StatusBadRequest,
		`{"model": "fake", "max_tokens": 2, "logprobs": false, "top_logprobs": null, "messages": [{"role": "user", "content": "Hi"}]}`: http.StatusOK,
	} {
		res, err := d.do("POST", "/v1/chat/completions", body)
		if err != nil {
			t.Fatal(err)
		}
		if res.status != want {
			t.Errorf("chat with %s: %d %s, want %d", body, res.status, res.body, want)
		}
	}
}

// A key's rpm limit reads the same on the OpenAI-compatible routes as on POST /v1/tasks:
// x-ratelimit-reset-requests is when its bucket is full again (the route overwrote it with the
// retry time, unrounded), and x-ratelimit-limit-requests is there too.
func TestOpenAIRateLimitHeadersAreTheKeys(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.yaml")
	if err := os.WriteFile(keys, []byte("keys:\n  - {name: limited, key: "+testKey+", scopes: [tasks, control, metrics], rpm: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startFakeDaemon(t, "keys_file: "+keys, fake.Options{}, nil)
	for i := range 2 {
		if res, err := d.do("POST", "/v1/tasks", taskBody(uuid.New(), 2)); err != nil || res.status != http.StatusAccepted {
			t.Fatalf("submission %d: %v %d %s", i, err, res.status, res.body)
		}
	}
	res, err := d.do("POST", "/v1/chat/completions", `{"model": "fake", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}`)
	if err != nil || res.status != http.StatusTooManyRequests {
		t.Fatalf("a third request within the minute: %v %d %s, want 429", err, res.status, res.body)
	}
	h := res.header
	reset, err := time.ParseDuration(h.Get("x-ratelimit-reset-requests"))
	if err != nil || reset < 50*time.Second || reset > time.Minute {
		t.Errorf("x-ratelimit-reset-requests = %q, want the bucket's refill (about a minute for rpm 2)", h.Get("x-ratelimit-reset-requests"))
	}
	if frac, ok := strings.CutSuffix(h.Get("x-ratelimit-reset-requests"), "s"); ok {
		if _, dec, found := strings.Cut(frac, "."); found && len(dec) > 3 {
			t.Errorf("x-ratelimit-reset-requests = %q: more than milliseconds", h.Get("x-ratelimit-reset-requests"))
		}
	}
	if h.Get("x-ratelimit-limit-requests") != "2" || h.Get("x-ratelimit-remaining-requests") != "0" || h.Get("Retry-After") == "" {
		t.Errorf("headers %v", h)
	}
}
