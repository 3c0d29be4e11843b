package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// sessionsDaemon runs a whole daemon with the sessions section given, one key (alice) and an
// external llama.cpp pool of 4 slots on tools/enginesim, whose first token comes after
// firstToken (an hour: every admitted task keeps running, and keeps its reservations).
func sessionsDaemon(t *testing.T, sessions string, firstToken time.Duration) (url, key string) {
	t.Helper()
	ts := httptest.NewServer(sim.New(sim.Options{Model: "sim", NCtx: 4096, FirstTokenDelay: firstToken}))
	t.Cleanup(ts.Close)
	dir := t.TempDir()
	key = "alice-sessions-key-0123456789"
	if err := os.WriteFile(filepath.Join(dir, "keys.yaml"), []byte("keys: [{name: alice, key: "+key+", scopes: [tasks, sessions, control]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`addr: 127.0.0.1:0
keys_file: keys.yaml
state_dir: %s
shutdown_grace: 1s
sessions: %s
pools:
  - {id: default, engine: llamacpp, model_ref: sim, model_id: sim, ctx_max: 4096, slots: 4, replicas: [{url: %q}]}
`, filepath.Join(dir, "state"), sessions, ts.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: cfgPath})
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, app.Options{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(),
		HealthInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := serveLoopback(t, a, nil)
	url = "http://" + addr
	waitPoolReady(t, clientAs(t, url, key))
	return url, key
}

func submitIn(t *testing.T, c *client.ClientWithResponses, session uuid.UUID, maxTokens int32) *client.CreateTaskResponse {
	t.Helper()
	prompt := "Once upon a time"
	r, err := c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{TaskId: uuid.New(), SessionId: session,
		Workload: client.Completion, ModelRef: "sim", Engine: client.Llamacpp, Ctx: 2048,
		Priority: client.Interactive, Prompt: &prompt, MaxTokens: maxTokens, DeadlineMs: 600000})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSessionHoldingAGrantIsNotEvicted: a session whose task runs with 64 of its 100 tokens
// reserved is not evicted when other sessions fill sessions.max_sessions (2 here). It was: the
// next task naming it was granted the whole budget again, and the two running tasks held 128
// of 100 tokens (the contract: "concurrent tasks of one session are never granted more than
// it has together"; only a restart, an expiry or a delete starts a session over).
func TestSessionHoldingAGrantIsNotEvicted(t *testing.T) {
	url, key := sessionsDaemon(t, "{ttl: 10m, max_turns: 8, max_sessions: 2, token_budget: 100}", time.Hour)
	alice := clientAs(t, url, key)
	s := uuid.New()
	if r := submitIn(t, alice, s, 64); r.StatusCode() != http.StatusAccepted || r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining") != "36" {
		t.Fatalf("first task of the session: %d %s remaining %q", r.StatusCode(), r.Body, r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining"))
	}
	for i := range 2 { // two more sessions, named by tasks of their own
		if r := submitIn(t, alice, uuid.New(), 1); r.StatusCode() != http.StatusAccepted {
			t.Fatalf("task %d of another session: %d %s", i, r.StatusCode(), r.Body)
		}
	}
	g, err := alice.GetSessionWithResponse(context.Background(), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g.StatusCode() != http.StatusOK || g.JSON200.Turns != 1 || g.JSON200.TokensBudgetRemaining == nil || *g.JSON200.TokensBudgetRemaining != 36 {
		t.Errorf("GET the session while its task runs: %d %s, want 200 with turns 1 and tokens_budget_remaining 36", g.StatusCode(), g.Body)
	}
	r := submitIn(t, alice, s, 64)
	if got := r.HTTPResponse.Header.Get("X-Budget-Tokens-Remaining"); r.StatusCode() != http.StatusAccepted || got != "0" {
		t.Errorf("second concurrent task of the session: %d, X-Budget-Tokens-Remaining %q; want 202 with 0 (granted the 36 left)", r.StatusCode(), got)
	}
}

// TestFacadeRequestsDoNotPushOutSessions: each OpenAI-compatible completion runs as a task of a
// session of its own, which no client names again. It is forgotten when the task ends: before,
// it stayed for sessions.ttl, so a run of facade requests filled max_sessions and evicted the
// sessions clients name (no token budget here, so nothing else protects them).
func TestFacadeRequestsDoNotPushOutSessions(t *testing.T) {
	url, key := sessionsDaemon(t, "{ttl: 10m, max_turns: 8, max_sessions: 2}", 0)
	alice := clientAs(t, url, key)
	s := uuid.New()
	if r := submitIn(t, alice, s, 1); r.StatusCode() != http.StatusAccepted {
		t.Fatalf("task of the session: %d %s", r.StatusCode(), r.Body)
	}
	for i := range 3 { // one after the other, each read to its end
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/completions", strings.NewReader(`{"model":"sim","prompt":"Hi","max_tokens":1,"stream":true}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "[DONE]") {
			t.Fatalf("completion %d: %d %s", i, resp.StatusCode, body)
		}
	}
	g, err := alice.GetSessionWithResponse(context.Background(), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g.StatusCode() != http.StatusOK {
		t.Errorf("GET the session after three OpenAI completions: %d %s; want 200", g.StatusCode(), g.Body)
	}
}
