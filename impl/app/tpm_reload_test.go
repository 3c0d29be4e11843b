package app_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/gen/client"
	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// keysFileDaemon runs a whole daemon with a keys file and one external llama.cpp pool on
// tools/enginesim whose generations never reach their first token (until canceled). It
// returns the app (for ReloadKeys, as SIGHUP calls it), its URL and a function rewriting the
// keys file.
func keysFileDaemon(t *testing.T, keysDoc string) (*app.App, string, func(string)) {
	t.Helper()
	s := sim.New(sim.Options{Model: "sim", NCtx: 4096, FirstTokenDelay: time.Hour})
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.yaml")
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(keys, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(keysDoc)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`addr: 127.0.0.1:0
keys_file: keys.yaml
state_dir: %s
shutdown_grace: 1s
pools:
  - {id: default, engine: llamacpp, model_ref: sim, model_id: sim, ctx_max: 4096, slots: 4, replicas: [{url: %q}]}
`, filepath.Join(dir, "state"), ts.URL)), 0o600); err != nil {
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
	url := "http://" + addr
	return a, url, write
}

func clientAs(t *testing.T, url, key string) *client.ClientWithResponses {
	t.Helper()
	c, err := client.NewClientWithResponses(url, client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		r.Header.Set("X-API-Key", key)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitPoolReady(t *testing.T, c *client.ClientWithResponses) {
	t.Helper()
	for i := 0; ; i++ {
		r, err := c.GetPoolHealthWithResponse(context.Background(), "default", nil)
		if err == nil && r.JSON200 != nil && r.JSON200.Ready {
			return
		}
		if i > 300 {
			t.Fatalf("pool never became ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func submitTokens(t *testing.T, c *client.ClientWithResponses, maxTokens int32) (uuid.UUID, *client.CreateTaskResponse) {
	t.Helper()
	id, prompt := uuid.New(), "Once upon a time"
	r, err := c.CreateTaskWithResponse(context.Background(), nil, client.TaskRequest{TaskId: id, SessionId: uuid.New(),
		Workload: client.Completion, ModelRef: "sim", Engine: client.Llamacpp, Ctx: 2048,
		Priority: client.Interactive, Prompt: &prompt, MaxTokens: maxTokens, DeadlineMs: 600000})
	if err != nil {
		t.Fatal(err)
	}
	return id, r
}

// A key given a tpm limit by a keys reload while one of its tasks runs: that task took nothing
// from the new bucket, so its end gives nothing back to it (it gave back its max_tokens, and
// the key could take 120 tokens in a minute under tpm 60). A recovered task, for which a
// restart took no reservation, likewise (Spec.TPMReserved is not journaled).
func TestReloadAddingTPMGivesBackNoTokensNeverTaken(t *testing.T) {
	const aliceKey = "alice-tpm-key-0123456789"
	a, url, write := keysFileDaemon(t, "keys: [{name: alice, key: "+aliceKey+", scopes: [tasks, control]}]\n")
	alice := clientAs(t, url, aliceKey)
	waitPoolReady(t, clientAs(t, url, aliceKey))
	ctx := context.Background()

	old, r := submitTokens(t, alice, 1000)
	if r.StatusCode() != http.StatusAccepted {
		t.Fatalf("alice's first task (no tpm yet): %d %s", r.StatusCode(), r.Body)
	}
	write("keys: [{name: alice, key: " + aliceKey + ", scopes: [tasks, control], tpm: 60}]\n")
	if err := a.ReloadKeys(); err != nil {
		t.Fatal(err)
	}
	if _, r := submitTokens(t, alice, 60); r.StatusCode() != http.StatusAccepted ||
		r.HTTPResponse.Header.Get("x-ratelimit-remaining-tokens") != "0" {
		t.Fatalf("alice's task under tpm 60: %d %s remaining %q", r.StatusCode(), r.Body,
			r.HTTPResponse.Header.Get("x-ratelimit-remaining-tokens"))
	}
	if cr, err := alice.CancelTaskWithResponse(ctx, old, nil); err != nil || cr.StatusCode() != http.StatusNoContent {
		t.Fatalf("cancel: %v %v", err, cr)
	}
	for i := 0; ; i++ { // the meter settles before the final state is visible
		g, err := alice.GetTaskWithResponse(ctx, old, nil)
		if err == nil && g.JSON200 != nil && g.JSON200.State == client.Canceled {
			break
		}
		if i > 200 {
			t.Fatalf("the first task never ended canceled: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, r = submitTokens(t, alice, 60)
	if r.StatusCode() != http.StatusTooManyRequests {
		t.Errorf("a second 60-token task within the minute under tpm 60: %d (remaining-tokens %q), want 429 RATE_LIMITED: "+
			"the task admitted before the reload gave back 1000 tokens it never took from the bucket",
			r.StatusCode(), r.HTTPResponse.Header.Get("x-ratelimit-remaining-tokens"))
	}
}

// The other side: a task that reserved its max_tokens from the key's tpm bucket and used none
// gives them back when it ends, so the key's next task within the minute is admitted.
func TestUnusedTPMReservationIsGivenBack(t *testing.T) {
	const bobKey = "bob-tpm-key-0123456789"
	_, url, _ := keysFileDaemon(t, "keys: [{name: bob, key: "+bobKey+", scopes: [tasks, control], tpm: 60}]\n")
	bob := clientAs(t, url, bobKey)
	waitPoolReady(t, bob)
	ctx := context.Background()
	first, r := submitTokens(t, bob, 60)
	if r.StatusCode() != http.StatusAccepted {
		t.Fatalf("bob's first task: %d %s", r.StatusCode(), r.Body)
	}
	if cr, err := bob.CancelTaskWithResponse(ctx, first, nil); err != nil || cr.StatusCode() != http.StatusNoContent {
		t.Fatalf("cancel: %v %v", err, cr)
	}
	for i := 0; ; i++ { // the meter settles before the final state is visible
		g, err := bob.GetTaskWithResponse(ctx, first, nil)
		if err == nil && g.JSON200 != nil && g.JSON200.State == client.Canceled {
			break
		}
		if i > 200 {
			t.Fatalf("the first task never ended canceled: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, r := submitTokens(t, bob, 60); r.StatusCode() != http.StatusAccepted {
		t.Errorf("bob's second 60-token task after the first used none: %d %s, want 202", r.StatusCode(), r.Body)
	}
}
