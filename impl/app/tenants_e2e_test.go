package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/llamacpp/llamatest"
	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/internal/gguf"
)

// TestEndToEndTwoKeys runs keys against a real llama-server: alice with a 20-token budget,
// bob with 2 submissions a minute, carol without limits; every session has a 24-token budget.
// Each key sees only its own tasks and sessions; alice's second task stops at what is left of
// her budget, which survives in budgets.json; two of carol's tasks running at once in one
// session are granted its budget between them and a third is 429; bob's third submission is 429.
func TestEndToEndTwoKeys(t *testing.T) {
	bin, ok := llamatest.ServerPath()
	if !ok {
		t.Skip("llama-server not found: set ORCHD_LLAMA_SERVER, put it on PATH or run make engine")
	}
	state := t.TempDir()
	model := filepath.Join(state, "models", "tiny.gguf")
	if err := os.MkdirAll(filepath.Dir(model), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := gguf.WriteFile(model, gguf.DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	const aliceKey, bobKey, carolKey = "alice-e2e-key-0123456789", "bob-e2e-key-0123456789", "carol-e2e-key-0123456789"
	keys := filepath.Join(state, "keys.yaml")
	if err := os.WriteFile(keys, []byte(`keys:
  - {name: alice, key: `+aliceKey+`, scopes: [tasks, sessions], token_budget: 20}
  - {name: bob, key: `+bobKey+`, scopes: [tasks], rpm: 2}
  - {name: carol, key: `+carolKey+`, scopes: [tasks, sessions]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
llama_server: %s
keys_file: %s
shutdown_grace: 2s
sessions:
  token_budget: 24
pools:
  - id: default
    engine: llamacpp
    model_ref: models/tiny.gguf
    model_id: tiny
    ctx_max: 2048
    slots: 2
    replicas:
      - managed: {args: ["-t", "1", "-tb", "1"]}
`, state, bin, keys))
	as := func(key string) *client.ClientWithResponses {
		c, err := client.NewClientWithResponses(d.url, client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			r.Header.Set("X-API-Key", key)
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, bob, carol := as(aliceKey), as(bobKey), as(carolKey)
	ctx := context.Background()
	submitIn := func(c *client.ClientWithResponses, session uuid.UUID, maxTokens int32) (uuid.UUID, *client.CreateTaskResponse) {
		t.Helper()
		id, prompt := uuid.New(), "Once upon a time"
		r, err := c.CreateTaskWithResponse(ctx, nil, client.TaskRequest{TaskId: id, SessionId: session,
			Workload: client.Completion, ModelRef: "tiny", Engine: client.Llamacpp, Ctx: 1024,
			Priority: client.Interactive, Prompt: &prompt, MaxTokens: maxTokens, DeadlineMs: 120000})
		if err != nil {
			t.Fatal(err)
		}
		return id, r
	}
	submit := func(c *client.ClientWithResponses, maxTokens int32) (uuid.UUID, *client.CreateTaskResponse) {
		t.Helper()
		return submitIn(c, uuid.New(), maxTokens)
	}
	end := func(c *client.ClientWithResponses, id uuid.UUID) map[string]any {
		t.Helper()
		resp, err := c.StreamTask(ctx, id, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream: %v %v", err, resp)
		}
		defer resp.Body.Close()
		f := lastFrame(t, bufioReader(resp))
		var m map[string]any
		if f.event != "end" || json.Unmarshal([]byte(f.data), &m) != nil {
			t.Fatalf("last frame %s %s", f.event, f.data)
		}
		return m
	}

	a1, r := submit(alice, 16)
	if r.StatusCode() != http.StatusAccepted || r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining") != "4" {
		t.Fatalf("alice's first task: %d %s remaining %q", r.StatusCode(), r.Body, r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining"))
	}
	// bob cannot see alice's task.
	if g, err := bob.GetTaskWithResponse(ctx, a1, nil); err != nil || g.StatusCode() != http.StatusNotFound {
		t.Fatalf("bob reads alice's task: %v %d", err, g.StatusCode())
	}
	e1 := end(alice, a1)
	used1 := int(e1["tokens_out"].(float64))
	a2, r := submit(alice, 16)
	if r.StatusCode() != http.StatusAccepted {
		t.Fatalf("alice's second task: %d %s", r.StatusCode(), r.Body)
	}
	e2 := end(alice, a2)
	used2 := int(e2["tokens_out"].(float64))
	left := 20 - used1
	t.Logf("alice: first %v, second %v", e1, e2)
	if used2 > left {
		t.Fatalf("alice's second task used %d tokens with %d left", used2, left)
	}
	if e1["stop_reason"] == "limit" && (e2["stop"] != "budget" || used2 != left) {
		t.Fatalf("alice's second task, granted %d: end %v", left, e2)
	}
	// What alice used is on disk.
	b, err := os.ReadFile(filepath.Join(state, "budgets.json"))
	var bf struct{ Used map[string]int }
	if err != nil || json.Unmarshal(b, &bf) != nil || bf.Used["alice"] != used1+used2 {
		t.Fatalf("budgets.json %s (%v), want alice %d", b, err, used1+used2)
	}

	// carol's session: two tasks at once reserve 16 and the 8 left of its 24; a third is
	// refused while they hold it all.
	session := uuid.New()
	c1, r := submitIn(carol, session, 16)
	if r.StatusCode() != http.StatusAccepted || r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining") != "8" {
		t.Fatalf("carol's first task: %d %s remaining %q", r.StatusCode(), r.Body, r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining"))
	}
	c2, r := submitIn(carol, session, 16)
	if r.StatusCode() != http.StatusAccepted || r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining") != "0" {
		t.Fatalf("carol's second task: %d %s remaining %q", r.StatusCode(), r.Body, r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining"))
	}
	if _, r := submitIn(carol, session, 16); r.StatusCode() != http.StatusTooManyRequests || r.JSON429 == nil ||
		r.JSON429.Code != client.BUDGETEXCEEDED || r.JSON429.Limit == nil || *r.JSON429.Limit != client.BackpressureErrorEnvelopeLimitSessionBudget {
		t.Fatalf("carol's third task: %d %s", r.StatusCode(), r.Body)
	}
	// The session is carol's: alice can neither read it nor run a task in it.
	if g, err := alice.GetSessionWithResponse(ctx, session, nil); err != nil || g.StatusCode() != http.StatusNotFound {
		t.Fatalf("alice reads carol's session: %v %d", err, g.StatusCode())
	}
	if _, r := submitIn(alice, session, 4); r.StatusCode() != http.StatusNotFound {
		t.Fatalf("alice's task in carol's session: %d %s", r.StatusCode(), r.Body)
	}
	ec1, ec2 := end(carol, c1), end(carol, c2)
	t.Logf("carol: first %v, second %v", ec1, ec2)
	usedC1, usedC2 := int(ec1["tokens_out"].(float64)), int(ec2["tokens_out"].(float64))
	if usedC1 > 16 || usedC2 > 8 || (usedC2 == 8 && ec2["stop"] != "budget") {
		t.Fatalf("carol's tasks, granted 16 and 8: ends %v and %v", ec1, ec2)
	}
	g, err := carol.GetSessionWithResponse(ctx, session, nil)
	if err != nil || g.JSON200 == nil || g.JSON200.TokensBudgetRemaining == nil || *g.JSON200.TokensBudgetRemaining != int64(24-usedC1-usedC2) {
		t.Fatalf("carol's session after its tasks: %v %s, want %d left", err, g.Body, 24-usedC1-usedC2)
	}

	for i := range 2 {
		if _, r := submit(bob, 4); r.StatusCode() != http.StatusAccepted || r.HTTPResponse.Header.Get("x-ratelimit-limit-requests") != "2" {
			t.Fatalf("bob's task %d: %d %s %v", i, r.StatusCode(), r.Body, r.HTTPResponse.Header)
		}
	}
	if _, r := submit(bob, 4); r.StatusCode() != http.StatusTooManyRequests || r.JSON429 == nil || r.JSON429.Code != client.RATELIMITED {
		t.Fatalf("bob's third task: %d %s", r.StatusCode(), r.Body)
	}
}

func bufioReader(resp *http.Response) *bufio.Reader { return bufio.NewReader(resp.Body) }
