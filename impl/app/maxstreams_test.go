package app_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/fake"
)

// answer is a response whose body the test's cleanup closes, or the test itself.
type answer struct {
	status int
	header http.Header
	body   io.ReadCloser
}

// A key's max_streams bounds the responses it holds open while tasks run: event streams
// (several readers of one task count one each; HEAD does not count) and OpenAI completions,
// streamed or not. One past it is 429 RATE_LIMITED, limit "streams", Retry-After 1, in the
// envelope or in OpenAI's shape; another key is counted apart; a place frees when a stream
// ends. Both stream paths: hijacked connections and net/http's.
func TestMaxStreamsPerKey(t *testing.T) {
	for _, hijack := range []bool{true, false} {
		t.Run(fmt.Sprintf("hijack=%v", hijack), func(t *testing.T) {
			const otherKey = "other-test-key-0123456789"
			dir := t.TempDir()
			keys := filepath.Join(dir, "keys.yaml")
			if err := os.WriteFile(keys, []byte("keys:\n  - {name: limited, key: "+testKey+", scopes: [tasks, control, metrics], max_streams: 2}\n"+
				"  - {name: other, key: "+otherKey+", scopes: [tasks]}\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			d := startFakeDaemon(t, fmt.Sprintf("keys_file: %s\nstream: {hijack: %v}", keys, hijack),
				fake.Options{TokenDelay: 20 * time.Millisecond}, nil)
			hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			send := func(method, path, key, body string) *answer {
				t.Helper()
				req, err := http.NewRequest(method, "http://"+d.addr+path, strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("X-API-Key", key)
				if body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				res, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = res.Body.Close() })
				return &answer{status: res.StatusCode, header: res.Header, body: res.Body}
			}
			submit := func(key string) string {
				t.Helper()
				id := uuid.New()
				res := send("POST", "/v1/tasks", key, taskBody(id, 20000))
				if res.status != http.StatusAccepted {
					t.Fatalf("submit: %d", res.status)
				}
				return id.String()
			}
			stream := func(key, id string) *answer { return send("GET", "/v1/tasks/"+id+"/stream", key, "") }
			refused := func(what string, res *answer) {
				t.Helper()
				b, _ := io.ReadAll(res.body)
				var env struct {
					Code         string `json:"code"`
					Limit        string `json:"limit"`
					RetryAfterMs int64  `json:"retry_after_ms"`
					Policy       string `json:"policy_label"`
				}
				if err := json.Unmarshal(b, &env); err != nil {
					t.Fatalf("%s: %d %q: %v", what, res.status, b, err)
				}
				if res.status != http.StatusTooManyRequests || env.Code != "RATE_LIMITED" || env.Limit != "streams" ||
					env.RetryAfterMs != 1000 || env.Policy == "" || res.header.Get("Retry-After") != "1" {
					t.Fatalf("%s: %d %s (Retry-After %q), want 429 RATE_LIMITED limit streams, Retry-After 1", what, res.status, b, res.header.Get("Retry-After"))
				}
			}
			open := func(want float64) {
				t.Helper()
				eventually(t, fmt.Sprintf("tenant_streams_open{key=limited} = %v", want), func() bool {
					return counterWith(t, d.reg, "tenant_streams_open", "key", "limited") == want
				})
			}

			id := submit(testKey)
			first, second := stream(testKey, id), stream(testKey, id)
			if first.status != http.StatusOK || second.status != http.StatusOK {
				t.Fatalf("two readers within the limit: %d, %d", first.status, second.status)
			}
			open(2)
			refused("a third reader", stream(testKey, id))
			queued := submit(testKey)
			refused("a stream of another task", stream(testKey, queued))
			if res := send("HEAD", "/v1/tasks/"+id+"/stream", testKey, ""); res.status != http.StatusOK {
				t.Errorf("HEAD at the limit: %d, want 200 (it holds nothing open)", res.status)
			}

			// OpenAI's completions are held open while their task runs: refused, in OpenAI's
			// shape, before a task is made.
			for _, body := range []string{
				`{"model": "fake", "max_tokens": 2, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}`,
				`{"model": "fake", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}`,
			} {
				res := send("POST", "/v1/chat/completions", testKey, body)
				var oe struct {
					Error struct {
						Code string `json:"code"`
					} `json:"error"`
				}
				b, _ := io.ReadAll(res.body)
				if err := json.Unmarshal(b, &oe); err != nil || res.status != http.StatusTooManyRequests ||
					oe.Error.Code != "rate_limit_exceeded" || res.header.Get("Retry-After") != "1" || res.header.Get("X-Task-Id") != "" {
					t.Errorf("chat at the limit (%s): %d %s, want 429 rate_limit_exceeded with no task", body, res.status, b)
				}
			}

			if got := d.counterSum(t, "tenant_streams_refused_total", map[string]string{"key": "limited"}); got != 4 {
				t.Errorf("tenant_streams_refused_total{key=limited} = %v, want 4 (two streams, two chats)", got)
			}

			// Another key has its own count.
			others := submit(otherKey)
			if res := stream(otherKey, others); res.status != http.StatusOK {
				t.Fatalf("another key's stream: %d", res.status)
			}
			if got := counterWith(t, d.reg, "tenant_streams_open", "key", "other"); got != 1 {
				t.Errorf("tenant_streams_open{key=other} = %v, want 1", got)
			}

			// A stream that ends frees its place.
			_ = first.body.Close()
			open(1)
			third := stream(testKey, id)
			if third.status != http.StatusOK {
				t.Fatalf("after a stream ended: %d, want 200", third.status)
			}
			open(2)
			_ = second.body.Close()
			_ = third.body.Close()
			open(0)
			// An OpenAI completion counts while it runs and frees its place when answered (the
			// pool's one slot freed first).
			for key, ids := range map[string][]string{testKey: {id, queued}, otherKey: {others}} {
				for _, id := range ids {
					if res := send("POST", "/v1/tasks/"+id+"/cancel", key, ""); res.status != http.StatusNoContent {
						t.Fatalf("cancel: %d", res.status)
					}
				}
			}
			for _, stream := range []bool{false, true} {
				res := send("POST", "/v1/chat/completions", testKey,
					fmt.Sprintf(`{"model": "fake", "max_tokens": 3, "stream": %v, "messages": [{"role": "user", "content": "Hi"}]}`, stream))
				b, _ := io.ReadAll(res.body)
				if res.status != http.StatusOK || stream != strings.Contains(string(b), "[DONE]") {
					t.Fatalf("chat under the limit (stream %v): %d %s", stream, res.status, b)
				}
				open(0)
			}
		})
	}
}
