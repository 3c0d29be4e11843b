//go:build pact

package pact

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pact-foundation/pact-go/v2/consumer"
	m "github.com/pact-foundation/pact-go/v2/matchers"

	"github.com/orchestratord/orchestratord/gen/client"
)

// TestConsumer describes what the Go client relies on, one interaction per subtest, and writes
// them to pacts/ (the file is rewritten from scratch on every run, so interactions that a test no
// longer describes do not linger).
func TestConsumer(t *testing.T) {
	pactEnv(t)
	if err := os.Remove(pactPath()); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	mp, err := consumer.NewV4Pact(consumer.MockHTTPProviderConfig{
		Consumer: consumerName, Provider: providerName, PactDir: pactDir, LogDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range interactions {
		t.Run(tc.name, func(t *testing.T) {
			i := tc.build(mp.AddInteraction())
			if err := i.ExecuteTest(t, func(cfg consumer.MockServerConfig) error {
				base := fmt.Sprintf("http://%s:%d", cfg.Host, cfg.Port)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return tc.run(ctx, base)
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

type interaction struct {
	name  string
	build func(*consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse
	run   func(ctx context.Context, baseURL string) error
}

// newClient is the generated client as an application would build it: the API key on every
// request (none when key is empty).
func newClient(baseURL, key string) *client.ClientWithResponses {
	c, err := client.NewClientWithResponses(baseURL, client.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		if key != "" {
			r.Header.Set("X-API-Key", key)
		}
		return nil
	}))
	if err != nil {
		panic(err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

// The request and response parts every interaction shares.

func authed(corr string) func(*consumer.V4RequestBuilder) {
	return func(b *consumer.V4RequestBuilder) {
		b.Header("X-API-Key", m.S(apiKey)).Header("X-Correlation-Id", m.S(corr))
	}
}

func authedJSON(corr string, body any) func(*consumer.V4RequestBuilder) {
	return func(b *consumer.V4RequestBuilder) {
		authed(corr)(b)
		b.Header("Content-Type", m.S("application/json")).JSONBody(body)
	}
}

// jsonResponse: the correlation id echoed, a JSON content type and body.
func jsonResponse(corr string, body any, extra ...func(*consumer.V4ResponseBuilder)) func(*consumer.V4ResponseBuilder) {
	return func(b *consumer.V4ResponseBuilder) {
		b.Header("X-Correlation-Id", m.S(corr)).
			Header("Content-Type", m.Term("application/json", jsonTypeRe))
		for _, f := range extra {
			f(b)
		}
		b.JSONBody(body)
	}
}

func noContent(corr string) func(*consumer.V4ResponseBuilder) {
	return func(b *consumer.V4ResponseBuilder) { b.Header("X-Correlation-Id", m.S(corr)) }
}

// errorBody is the ErrorEnvelope a client reads: the code exactly, the rest by type.
func errorBody(code string, retriable bool) map[string]any {
	return map[string]any{"code": m.S(code), "message": m.Like("explanation"), "retriable": m.Like(retriable)}
}

// backpressureBody is a 429 envelope: the code and policy exactly, the pool and the retry hint.
func backpressureBody(code, policy string) map[string]any {
	b := errorBody(code, true)
	b["retriable"] = true
	b["policy_label"] = m.S(policy)
	b["retry_after_ms"] = m.Integer(1500)
	b["pool_id"] = m.S(poolID)
	b["engine"] = m.S("llamacpp")
	return b
}

func backpressureHeaders(b *consumer.V4ResponseBuilder) {
	b.Header("Retry-After", m.Term("2", positiveIntRe)).Header("X-Backoff-Ms", m.Term("1500", positiveIntRe))
}

// taskRequest is a small completion task on pool default's model.
func taskRequest(taskID, sessionID string, prio client.Priority) client.TaskRequest {
	return client.TaskRequest{
		TaskId: uuid.MustParse(taskID), SessionId: uuid.MustParse(sessionID), Workload: client.Completion,
		ModelRef: modelID, Engine: client.Llamacpp, Ctx: 2048, Priority: prio,
		Prompt: ptr("Once upon a time"), MaxTokens: 16, DeadlineMs: 30000,
	}
}

// taskRequestBody is taskRequest as the consumer sends it (exact values).
func taskRequestBody(taskID, sessionID string, prio client.Priority) map[string]any {
	return map[string]any{
		"task_id": taskID, "session_id": sessionID, "workload": "completion", "model_ref": modelID,
		"engine": "llamacpp", "ctx": 2048, "priority": string(prio), "prompt": "Once upon a time",
		"max_tokens": 16, "deadline_ms": 30000,
	}
}

// wantStatus fails unless the response has the status and the client decoded what it needs.
func wantStatus(got, want int, decoded bool, body []byte) error {
	if got != want {
		return fmt.Errorf("status %d, want %d: %s", got, want, body)
	}
	if !decoded {
		return fmt.Errorf("status %d: the client did not decode the body: %s", got, body)
	}
	return nil
}

func wantHeaderInt(h http.Header, name string, least int64) error {
	v, err := strconv.ParseInt(h.Get(name), 10, 64)
	if err != nil || v < least {
		return fmt.Errorf("header %s = %q, want an integer >= %d", name, h.Get(name), least)
	}
	return nil
}

func wantEnvelope(e *client.ErrorEnvelope, code client.ErrorKind) error {
	if e == nil {
		return fmt.Errorf("no error envelope decoded")
	}
	if e.Code != code {
		return fmt.Errorf("code %s, want %s", e.Code, code)
	}
	return nil
}

var interactions = []interaction{
	// ---------------------------------------------------------------- data plane
	{
		name: "enqueue",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("a task is enqueued").
				WithRequest(http.MethodPost, "/v1/tasks", authedJSON("pact-enqueue", taskRequestBody(exampleTaskID, exampleSessionID, client.Interactive))).
				WillRespondWith(http.StatusAccepted, jsonResponse("pact-enqueue", map[string]any{
					"task_id":            exampleTaskID,
					"queue_position":     m.Integer(0),
					"predicted_start_ms": m.Integer(0),
					"backoff_ms":         m.Integer(0),
					"pool_id":            m.S(poolID),
					"streams": map[string]any{
						"sse":         "/v1/tasks/" + exampleTaskID + "/stream",
						"sse_verbose": "/v1/tasks/" + exampleTaskID + "/stream?verbose=true",
					},
				}, func(b *consumer.V4ResponseBuilder) {
					b.Header("X-Budget-Time-Remaining-Ms", m.Term("30000", nonNegIntRe))
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).CreateTaskWithResponse(ctx, &client.CreateTaskParams{XCorrelationId: ptr("pact-enqueue")},
				taskRequest(exampleTaskID, exampleSessionID, client.Interactive))
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusAccepted, r.JSON202 != nil, r.Body); err != nil {
				return err
			}
			if r.JSON202.TaskId.String() != exampleTaskID || r.JSON202.Streams == nil || r.JSON202.Streams.Sse == "" {
				return fmt.Errorf("admission %+v", *r.JSON202)
			}
			if got := r.HTTPResponse.Header.Get("X-Correlation-Id"); got != "pact-enqueue" {
				return fmt.Errorf("X-Correlation-Id %q", got)
			}
			return wantHeaderInt(r.HTTPResponse.Header, "X-Budget-Time-Remaining-Ms", 0)
		},
	},
	{
		name: "get task",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateTask).UponReceiving("the state of a task is read").
				WithRequestPathMatcher(http.MethodGet, m.FromProviderState("/v1/tasks/${taskId}", "/v1/tasks/"+exampleTaskID), authed("pact-get-task")).
				WillRespondWith(http.StatusOK, jsonResponse("pact-get-task", map[string]any{
					"task_id":    m.Term(exampleTaskID, uuidRe),
					"session_id": m.Term(exampleSessionID, uuidRe),
					"state":      m.Term("running", `^(queued|running|succeeded|failed|canceled)$`),
					"priority":   m.Term("interactive", `^(interactive|batch)$`),
					"pool_id":    m.S(poolID),
					"tokens_out": m.Integer(0),
					"created_ms": m.Integer(1795877669000),
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).GetTaskWithResponse(ctx, uuid.MustParse(exampleTaskID), &client.GetTaskParams{XCorrelationId: ptr("pact-get-task")})
			if err != nil {
				return err
			}
			return wantStatus(r.StatusCode(), http.StatusOK, r.JSON200 != nil, r.Body)
		},
	},
	{
		name: "cancel task",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateTask).UponReceiving("a running task is canceled").
				WithRequestPathMatcher(http.MethodPost, m.FromProviderState("/v1/tasks/${taskId}/cancel", "/v1/tasks/"+exampleTaskID+"/cancel"), authed("pact-cancel")).
				WillRespondWith(http.StatusNoContent, noContent("pact-cancel"))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).CancelTaskWithResponse(ctx, uuid.MustParse(exampleTaskID), &client.CancelTaskParams{XCorrelationId: ptr("pact-cancel")})
			if err != nil {
				return err
			}
			return wantStatus(r.StatusCode(), http.StatusNoContent, true, r.Body)
		},
	},
	{
		name: "stream task",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateFinishedTask).UponReceiving("the events of a finished task are streamed").
				WithRequestPathMatcher(http.MethodGet, m.FromProviderState("/v1/tasks/${taskId}/stream", "/v1/tasks/"+exampleTaskID+"/stream"), authed("pact-stream")).
				WillRespondWith(http.StatusOK, func(b *consumer.V4ResponseBuilder) {
					b.Header("X-Correlation-Id", m.S("pact-stream")).
						Header("Content-Type", m.Term("text/event-stream", `^text/event-stream`))
				})
		},
		run: func(ctx context.Context, base string) error {
			// The plain client: the WithResponse variant buffers the whole stream.
			resp, err := newClient(base, apiKey).StreamTask(ctx, uuid.MustParse(exampleTaskID), &client.StreamTaskParams{XCorrelationId: ptr("pact-stream")})
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
			mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			if resp.StatusCode != http.StatusOK || mt != "text/event-stream" {
				return fmt.Errorf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			return nil
		},
	},
	{
		name: "get session",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateSession).UponReceiving("a session is read").
				WithRequestPathMatcher(http.MethodGet, m.FromProviderState("/v1/sessions/${sessionId}", "/v1/sessions/"+exampleSessionID), authed("pact-get-session")).
				WillRespondWith(http.StatusOK, jsonResponse("pact-get-session", map[string]any{
					"ttl_ms_remaining": m.Integer(600000),
					"turns":            m.Integer(1),
					"kv_bytes":         m.Integer(0),
					"kv_warmth":        m.Like(true),
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).GetSessionWithResponse(ctx, uuid.MustParse(exampleSessionID), &client.GetSessionParams{XCorrelationId: ptr("pact-get-session")})
			if err != nil {
				return err
			}
			return wantStatus(r.StatusCode(), http.StatusOK, r.JSON200 != nil, r.Body)
		},
	},
	{
		name: "delete session",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateSession).UponReceiving("a session is deleted").
				WithRequestPathMatcher(http.MethodDelete, m.FromProviderState("/v1/sessions/${sessionId}", "/v1/sessions/"+exampleSessionID), authed("pact-delete-session")).
				WillRespondWith(http.StatusNoContent, noContent("pact-delete-session"))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).DeleteSessionWithResponse(ctx, uuid.MustParse(exampleSessionID), &client.DeleteSessionParams{XCorrelationId: ptr("pact-delete-session")})
			if err != nil {
				return err
			}
			return wantStatus(r.StatusCode(), http.StatusNoContent, true, r.Body)
		},
	},
	// ---------------------------------------------------------------- artifacts
	{
		name: "create artifact",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("an artifact is stored").
				WithRequest(http.MethodPost, "/v1/artifacts", authedJSON("pact-create-artifact", map[string]any{
					"kind": "plan", "content": map[string]any{"steps": []any{"read", "write"}}, "tags": []any{"demo"},
				})).
				WillRespondWith(http.StatusCreated, jsonResponse("pact-create-artifact", map[string]any{
					"id":         m.Term(exampleArtifactID, artifactIDRe),
					"digest":     m.Term(exampleArtifactID, artifactIDRe),
					"kind":       "plan",
					"created_ms": m.Integer(1795877670121),
					"tags":       []any{"demo"},
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).CreateArtifactWithResponse(ctx, &client.CreateArtifactParams{XCorrelationId: ptr("pact-create-artifact")},
				client.Artifact{Kind: client.Plan, Content: map[string]any{"steps": []any{"read", "write"}}, Tags: &[]string{"demo"}})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusCreated, r.JSON201 != nil, r.Body); err != nil {
				return err
			}
			if !strings.HasPrefix(r.JSON201.Id, "sha256:") || r.JSON201.Id != r.JSON201.Digest {
				return fmt.Errorf("artifact ref %+v", *r.JSON201)
			}
			return nil
		},
	},
	{
		name: "get artifact",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateArtifact).UponReceiving("an artifact is read").
				WithRequestPathMatcher(http.MethodGet, m.FromProviderState("/v1/artifacts/${artifactId}", "/v1/artifacts/"+exampleArtifactID), authed("pact-get-artifact")).
				WillRespondWith(http.StatusOK, jsonResponse("pact-get-artifact", map[string]any{
					"id":         m.Term(exampleArtifactID, artifactIDRe),
					"digest":     m.Term(exampleArtifactID, artifactIDRe),
					"kind":       "plan",
					"content":    map[string]any{"steps": []any{"read", "write"}},
					"tags":       []any{"demo"},
					"created_ms": m.Integer(1795877670121),
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).GetArtifactWithResponse(ctx, exampleArtifactID, &client.GetArtifactParams{XCorrelationId: ptr("pact-get-artifact")})
			if err != nil {
				return err
			}
			return wantStatus(r.StatusCode(), http.StatusOK, r.JSON200 != nil, r.Body)
		},
	},
	// ---------------------------------------------------------------- control plane
	{
		name: "capabilities",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("the capabilities are listed").
				WithRequest(http.MethodGet, "/v1/capabilities", authed("pact-capabilities")).
				WillRespondWith(http.StatusOK, jsonResponse("pact-capabilities", map[string]any{
					"api_version": m.Term("1.0.0", `^1\.[0-9]+\.[0-9]+$`),
					"engines": m.EachLike(map[string]any{
						"engine":              "llamacpp",
						"ctx_max":             m.Integer(4096),
						"supported_workloads": m.EachLike("completion", 1),
						"slots":               m.Integer(1),
					}, 1),
					"pools": m.EachLike(map[string]any{
						"pool_id":   m.S(poolID),
						"engine":    "llamacpp",
						"model_ref": m.Like(modelRef),
						"model_id":  m.S(modelID),
						"ctx_max":   m.Integer(4096),
						"slots":     m.Integer(1),
						"ready":     true,
						"draining":  false,
					}, 1),
					"gpus": map[string]any{
						"available": m.Like(true),
						"devices": m.EachLike(map[string]any{
							"index":              m.Integer(0),
							"name":               m.Like("NVIDIA H200"),
							"memory_total_bytes": m.Integer(151397597184),
							"memory_used_bytes":  m.Integer(0),
						}, 1),
					},
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).GetCapabilitiesWithResponse(ctx, &client.GetCapabilitiesParams{XCorrelationId: ptr("pact-capabilities")})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusOK, r.JSON200 != nil, r.Body); err != nil {
				return err
			}
			if len(r.JSON200.Pools) == 0 || r.JSON200.Pools[0].PoolId != poolID {
				return fmt.Errorf("pools %+v", r.JSON200.Pools)
			}
			return nil
		},
	},
	{
		name: "pool health",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("the health of a pool is read").
				WithRequest(http.MethodGet, "/v1/pools/"+poolID+"/health", authed("pact-health")).
				WillRespondWith(http.StatusOK, jsonResponse("pact-health", map[string]any{
					"pool_id":  poolID,
					"live":     true,
					"ready":    true,
					"draining": false,
					"model_id": m.S(modelID),
					"metrics": map[string]any{
						"queue_depth": m.Integer(0),
						"slots_total": m.Integer(1),
						"slots_busy":  m.Integer(0),
					},
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).GetPoolHealthWithResponse(ctx, poolID, &client.GetPoolHealthParams{XCorrelationId: ptr("pact-health")})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusOK, r.JSON200 != nil, r.Body); err != nil {
				return err
			}
			if !r.JSON200.Ready {
				return fmt.Errorf("health %+v", *r.JSON200)
			}
			return nil
		},
	},
	{
		name: "drain pool",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("a pool is drained").
				WithRequest(http.MethodPost, "/v1/pools/"+poolID+"/drain", authedJSON("pact-drain", map[string]any{"deadline_ms": 60000})).
				WillRespondWith(http.StatusAccepted, jsonResponse("pact-drain", map[string]any{"status": "draining", "deadline_ms": 60000}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).DrainPoolWithResponse(ctx, poolID, &client.DrainPoolParams{XCorrelationId: ptr("pact-drain")}, client.DrainRequest{DeadlineMs: 60000})
			if err != nil {
				return err
			}
			return wantStatus(r.StatusCode(), http.StatusAccepted, r.JSON202 != nil, r.Body)
		},
	},
	{
		name: "drain replica",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("one replica of a pool is drained").
				WithRequest(http.MethodPost, replicaPath+"/drain", authedJSON("pact-drain-replica", map[string]any{"deadline_ms": 60000})).
				WillRespondWith(http.StatusAccepted, jsonResponse("pact-drain-replica", map[string]any{"status": "draining", "deadline_ms": 60000}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).DrainReplicaWithResponse(ctx, poolID, replicaID,
				&client.DrainReplicaParams{XCorrelationId: ptr("pact-drain-replica")}, client.DrainRequest{DeadlineMs: 60000})
			if err != nil {
				return err
			}
			return wantStatus(r.StatusCode(), http.StatusAccepted, r.JSON202 != nil, r.Body)
		},
	},
	{
		name: "resume replica",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReplicaDrained).UponReceiving("a drained replica is resumed").
				WithRequest(http.MethodPost, replicaPath+"/resume", authed("pact-resume-replica")).
				WillRespondWith(http.StatusOK, jsonResponse("pact-resume-replica", map[string]any{
					"id": replicaID, "managed": false, "state": "ready", "breaker": "closed",
					"slots_busy": m.Integer(0), "slots_total": m.Integer(1), "restarts": m.Integer(0),
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).ResumeReplicaWithResponse(ctx, poolID, replicaID,
				&client.ResumeReplicaParams{XCorrelationId: ptr("pact-resume-replica")})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusOK, r.JSON200 != nil, r.Body); err != nil {
				return err
			}
			if r.JSON200.State != client.ReplicaHealthStateReady {
				return fmt.Errorf("resumed replica state %q", r.JSON200.State)
			}
			return nil
		},
	},
	{
		name: "404 unknown replica",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("an unknown replica is drained").
				WithRequest(http.MethodPost, "/v1/pools/"+poolID+"/replicas/default%2F9/drain", authedJSON("pact-404-replica", map[string]any{"deadline_ms": 60000})).
				WillRespondWith(http.StatusNotFound, jsonResponse("pact-404-replica", errorBody("NOT_FOUND", false)))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).DrainReplicaWithResponse(ctx, poolID, unknownReplica,
				&client.DrainReplicaParams{XCorrelationId: ptr("pact-404-replica")}, client.DrainRequest{DeadlineMs: 60000})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusNotFound, r.JSON404 != nil, r.Body); err != nil {
				return err
			}
			return wantEnvelope(r.JSON404, client.NOTFOUND)
		},
	},
	{
		name: "reload pool",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateManaged).UponReceiving("a managed pool is reloaded").
				WithRequest(http.MethodPost, "/v1/pools/"+poolID+"/reload", authedJSON("pact-reload", map[string]any{"new_model_ref": modelRef})).
				WillRespondWith(http.StatusOK, jsonResponse("pact-reload", map[string]any{
					"status": "reloaded", "pool_id": poolID, "model_ref": modelRef, "model_id": modelID,
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).ReloadPoolWithResponse(ctx, poolID, &client.ReloadPoolParams{XCorrelationId: ptr("pact-reload")}, client.ReloadRequest{NewModelRef: modelRef})
			if err != nil {
				return err
			}
			return wantStatus(r.StatusCode(), http.StatusOK, r.JSON200 != nil, r.Body)
		},
	},
	{
		name: "reload rollback",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateManaged).UponReceiving("a reload to a model the engine cannot load is rolled back").
				WithRequest(http.MethodPost, "/v1/pools/"+poolID+"/reload", authedJSON("pact-reload-rollback", map[string]any{"new_model_ref": brokenModelRef})).
				WillRespondWith(http.StatusConflict, jsonResponse("pact-reload-rollback", map[string]any{
					"status": "rollback", "pool_id": poolID, "model_ref": modelRef, "model_id": modelID,
					"reason":  "engine_exited",
					"message": m.Like("the engine exited before it became healthy (see the daemon log)"),
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).ReloadPoolWithResponse(ctx, poolID, &client.ReloadPoolParams{XCorrelationId: ptr("pact-reload-rollback")}, client.ReloadRequest{NewModelRef: brokenModelRef})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusConflict, r.JSON409 != nil, r.Body); err != nil {
				return err
			}
			if r.JSON409.Status != client.Rollback || r.JSON409.Reason == nil || *r.JSON409.Reason != client.EngineExited {
				return fmt.Errorf("reload %+v", *r.JSON409)
			}
			return nil
		},
	},
	{
		name: "reload outside models_dirs",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateManaged).UponReceiving("a reload to a file outside the models directories is refused").
				WithRequest(http.MethodPost, "/v1/pools/"+poolID+"/reload", authedJSON("pact-reload-outside", map[string]any{"new_model_ref": "/etc/passwd"})).
				WillRespondWith(http.StatusBadRequest, jsonResponse("pact-reload-outside", errorBody("INVALID_PARAMS", false)))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).ReloadPoolWithResponse(ctx, poolID, &client.ReloadPoolParams{XCorrelationId: ptr("pact-reload-outside")}, client.ReloadRequest{NewModelRef: "/etc/passwd"})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusBadRequest, r.JSON400 != nil, r.Body); err != nil {
				return err
			}
			return wantEnvelope(r.JSON400, client.INVALIDPARAMS)
		},
	},
	// ---------------------------------------------------------------- every error class
	{
		name: "400 invalid params",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			body := taskRequestBody(exampleTaskID, exampleSessionID, client.Interactive)
			body["max_tokens"] = 0
			return i.Given(stateReady).UponReceiving("a task with max_tokens 0 is refused").
				WithRequest(http.MethodPost, "/v1/tasks", authedJSON("pact-400", body)).
				WillRespondWith(http.StatusBadRequest, jsonResponse("pact-400", errorBody("INVALID_PARAMS", false)))
		},
		run: func(ctx context.Context, base string) error {
			req := taskRequest(exampleTaskID, exampleSessionID, client.Interactive)
			req.MaxTokens = 0
			r, err := newClient(base, apiKey).CreateTaskWithResponse(ctx, &client.CreateTaskParams{XCorrelationId: ptr("pact-400")}, req)
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusBadRequest, r.JSON400 != nil, r.Body); err != nil {
				return err
			}
			return wantEnvelope(r.JSON400, client.INVALIDPARAMS)
		},
	},
	{
		name: "401 missing key",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("a request without an API key is refused").
				WithRequest(http.MethodGet, "/v1/capabilities", func(b *consumer.V4RequestBuilder) {
					b.Header("X-Correlation-Id", m.S("pact-401"))
				}).
				WillRespondWith(http.StatusUnauthorized, jsonResponse("pact-401", errorBody("UNAUTHORIZED", false)))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, "").GetCapabilitiesWithResponse(ctx, &client.GetCapabilitiesParams{XCorrelationId: ptr("pact-401")})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusUnauthorized, r.JSON401 != nil, r.Body); err != nil {
				return err
			}
			return wantEnvelope(r.JSON401, client.UNAUTHORIZED)
		},
	},
	{
		name: "403 wrong key",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("a request with a wrong API key is refused").
				WithRequest(http.MethodGet, "/v1/capabilities", func(b *consumer.V4RequestBuilder) {
					b.Header("X-API-Key", m.S("not-the-key-0123456789")).Header("X-Correlation-Id", m.S("pact-403"))
				}).
				WillRespondWith(http.StatusForbidden, jsonResponse("pact-403", errorBody("FORBIDDEN", false)))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, "not-the-key-0123456789").GetCapabilitiesWithResponse(ctx, &client.GetCapabilitiesParams{XCorrelationId: ptr("pact-403")})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusForbidden, r.JSON403 != nil, r.Body); err != nil {
				return err
			}
			return wantEnvelope(r.JSON403, client.FORBIDDEN)
		},
	},
	{
		name: "404 unknown task",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("an unknown task is read").
				WithRequest(http.MethodGet, "/v1/tasks/"+unknownTaskID, authed("pact-404")).
				WillRespondWith(http.StatusNotFound, jsonResponse("pact-404", errorBody("NOT_FOUND", false)))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).GetTaskWithResponse(ctx, uuid.MustParse(unknownTaskID), &client.GetTaskParams{XCorrelationId: ptr("pact-404")})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusNotFound, r.JSON404 != nil, r.Body); err != nil {
				return err
			}
			return wantEnvelope(r.JSON404, client.NOTFOUND)
		},
	},
	{
		name: "413 payload too large",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateBodyLimit).UponReceiving("an artifact larger than the body limit is refused").
				WithRequest(http.MethodPost, "/v1/artifacts", authedJSON("pact-413", map[string]any{
					"kind": "trace", "content": map[string]any{"log": largeText},
				})).
				WillRespondWith(http.StatusRequestEntityTooLarge, jsonResponse("pact-413", errorBody("PAYLOAD_TOO_LARGE", false)))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).CreateArtifactWithResponse(ctx, &client.CreateArtifactParams{XCorrelationId: ptr("pact-413")},
				client.Artifact{Kind: client.Trace, Content: map[string]any{"log": largeText}})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusRequestEntityTooLarge, r.JSON413 != nil, r.Body); err != nil {
				return err
			}
			return wantEnvelope(r.JSON413, client.PAYLOADTOOLARGE)
		},
	},
	{
		name: "507 artifact store full",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateArtifactsFull).UponReceiving("an artifact beyond the store's limit is refused").
				WithRequest(http.MethodPost, "/v1/artifacts", authedJSON("pact-507", map[string]any{
					"kind": "summary", "content": map[string]any{"text": "one too many"},
				})).
				WillRespondWith(http.StatusInsufficientStorage, jsonResponse("pact-507", errorBody("STORAGE_FULL", false)))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).CreateArtifactWithResponse(ctx, &client.CreateArtifactParams{XCorrelationId: ptr("pact-507")},
				client.Artifact{Kind: client.Summary, Content: map[string]any{"text": "one too many"}})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusInsufficientStorage, r.JSON507 != nil, r.Body); err != nil {
				return err
			}
			return wantEnvelope(r.JSON507, client.STORAGEFULL)
		},
	},
	{
		name: "429 admission reject",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateQueueFull).UponReceiving("a task is refused because the queue is full").
				WithRequest(http.MethodPost, "/v1/tasks", authedJSON("pact-429-reject", taskRequestBody(unknownTaskID, exampleSessionID, client.Interactive))).
				WillRespondWith(http.StatusTooManyRequests, jsonResponse("pact-429-reject", backpressureBody("ADMISSION_REJECT", "reject"), backpressureHeaders))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).CreateTaskWithResponse(ctx, &client.CreateTaskParams{XCorrelationId: ptr("pact-429-reject")},
				taskRequest(unknownTaskID, exampleSessionID, client.Interactive))
			if err != nil {
				return err
			}
			return want429(r, client.ADMISSIONREJECT)
		},
	},
	{
		name: "429 queue full drop-lru",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateQueueFullInteractive).UponReceiving("a batch task is refused because the drop-lru queue holds only interactive tasks").
				WithRequest(http.MethodPost, "/v1/tasks", authedJSON("pact-429-drop-lru", taskRequestBody(unknownTaskID, exampleSessionID, client.Batch))).
				WillRespondWith(http.StatusTooManyRequests, jsonResponse("pact-429-drop-lru", backpressureBody("QUEUE_FULL_DROP_LRU", "drop-lru"), backpressureHeaders))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, apiKey).CreateTaskWithResponse(ctx, &client.CreateTaskParams{XCorrelationId: ptr("pact-429-drop-lru")},
				taskRequest(unknownTaskID, exampleSessionID, client.Batch))
			if err != nil {
				return err
			}
			return want429(r, client.QUEUEFULLDROPLRU)
		},
	},
	{
		name: "403 scope",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReady).UponReceiving("a key without the control scope may not drain a pool").
				WithRequest(http.MethodPost, "/v1/pools/"+poolID+"/drain", func(b *consumer.V4RequestBuilder) {
					b.Header("X-API-Key", m.S(tasksOnlyKey)).Header("X-Correlation-Id", m.S("pact-403-scope")).
						Header("Content-Type", m.S("application/json")).JSONBody(map[string]any{"deadline_ms": 60000})
				}).
				WillRespondWith(http.StatusForbidden, jsonResponse("pact-403-scope", errorBody("FORBIDDEN", false)))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, tasksOnlyKey).DrainPoolWithResponse(ctx, poolID, &client.DrainPoolParams{XCorrelationId: ptr("pact-403-scope")},
				client.DrainRequest{DeadlineMs: 60000})
			if err != nil {
				return err
			}
			if err := wantStatus(r.StatusCode(), http.StatusForbidden, r.JSON403 != nil, r.Body); err != nil {
				return err
			}
			return wantEnvelope(r.JSON403, client.FORBIDDEN)
		},
	},
	{
		name: "429 rate limited",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			body := errorBody("RATE_LIMITED", true)
			body["retriable"], body["policy_label"], body["limit"], body["retry_after_ms"] = true, m.S("rate-limit"), m.S("requests"), m.Integer(60000)
			return i.Given(stateRateLimited).UponReceiving("a task over its key's submissions per minute is refused").
				WithRequest(http.MethodPost, "/v1/tasks", func(b *consumer.V4RequestBuilder) {
					b.Header("X-API-Key", m.S(limitedKey)).Header("X-Correlation-Id", m.S("pact-429-rate")).
						Header("Content-Type", m.S("application/json")).JSONBody(taskRequestBody(unknownTaskID, exampleSessionID, client.Interactive))
				}).
				WillRespondWith(http.StatusTooManyRequests, jsonResponse("pact-429-rate", body, func(b *consumer.V4ResponseBuilder) {
					b.Header("Retry-After", m.Term("60", positiveIntRe)).Header("X-Backoff-Ms", m.Term("60000", positiveIntRe)).
						Header("x-ratelimit-limit-requests", m.S("1")).Header("x-ratelimit-remaining-requests", m.S("0"))
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, limitedKey).CreateTaskWithResponse(ctx, &client.CreateTaskParams{XCorrelationId: ptr("pact-429-rate")},
				taskRequest(unknownTaskID, exampleSessionID, client.Interactive))
			if err != nil {
				return err
			}
			if err := want429(r, client.RATELIMITED); err != nil {
				return err
			}
			if r.JSON429.Limit == nil || *r.JSON429.Limit != client.BackpressureErrorEnvelopeLimitRequests {
				return fmt.Errorf("limit %v, want requests", r.JSON429.Limit)
			}
			return nil
		},
	},
	{
		name: "429 budget exceeded",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			body := errorBody("BUDGET_EXCEEDED", true)
			body["policy_label"], body["retry_after_ms"] = m.S("budget"), m.Integer(60000)
			return i.Given(stateBudgetSpent).UponReceiving("a task of a key whose token budget is spent is refused").
				WithRequest(http.MethodPost, "/v1/tasks", func(b *consumer.V4RequestBuilder) {
					b.Header("X-API-Key", m.S(budgetKey)).Header("X-Correlation-Id", m.S("pact-429-budget")).
						Header("Content-Type", m.S("application/json")).JSONBody(taskRequestBody(unknownTaskID, exampleSessionID, client.Interactive))
				}).
				WillRespondWith(http.StatusTooManyRequests, jsonResponse("pact-429-budget", body, func(b *consumer.V4ResponseBuilder) {
					b.Header("Retry-After", m.Term("60", positiveIntRe)).Header("X-Backoff-Ms", m.Term("60000", positiveIntRe)).
						Header("X-Budget-Tokens-Remaining", m.S("0"))
				}))
		},
		run: func(ctx context.Context, base string) error {
			r, err := newClient(base, budgetKey).CreateTaskWithResponse(ctx, &client.CreateTaskParams{XCorrelationId: ptr("pact-429-budget")},
				taskRequest(unknownTaskID, exampleSessionID, client.Interactive))
			if err != nil {
				return err
			}
			if err := want429(r, client.BUDGETEXCEEDED); err != nil {
				return err
			}
			return wantHeaderInt(r.HTTPResponse.Header, "X-Budget-Tokens-Remaining", 0)
		},
	},
	{
		name: "503 drained",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateDrained).UponReceiving("a task is refused because its pool is draining").
				WithRequest(http.MethodPost, "/v1/tasks", authedJSON("pact-503-drained", taskRequestBody(unknownTaskID, exampleSessionID, client.Interactive))).
				WillRespondWith(http.StatusServiceUnavailable, jsonResponse("pact-503-drained", errorBody("POOL_UNAVAILABLE", true)))
		},
		run: func(ctx context.Context, base string) error {
			return want503(ctx, base, "pact-503-drained")
		},
	},
	{
		name: "503 every replica drained",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateReplicaDrained).UponReceiving("a task is refused because every replica of its pool is drained").
				WithRequest(http.MethodPost, "/v1/tasks", authedJSON("pact-503-replica-drained", taskRequestBody(unknownTaskID, exampleSessionID, client.Interactive))).
				WillRespondWith(http.StatusServiceUnavailable, jsonResponse("pact-503-replica-drained", errorBody("POOL_UNAVAILABLE", true)))
		},
		run: func(ctx context.Context, base string) error {
			return want503(ctx, base, "pact-503-replica-drained")
		},
	},
	{
		name: "503 engine stopped",
		build: func(i *consumer.V4UnconfiguredInteraction) *consumer.V4InteractionWithResponse {
			return i.Given(stateEngineStopped).UponReceiving("a task is refused because the engine of its pool is stopped").
				WithRequest(http.MethodPost, "/v1/tasks", authedJSON("pact-503-engine", taskRequestBody(unknownTaskID, exampleSessionID, client.Interactive))).
				WillRespondWith(http.StatusServiceUnavailable, jsonResponse("pact-503-engine", errorBody("POOL_UNAVAILABLE", true)))
		},
		run: func(ctx context.Context, base string) error {
			return want503(ctx, base, "pact-503-engine")
		},
	},
}

// largeText makes a request body over the provider state's 4096-byte limit.
var largeText = strings.Repeat("0123456789abcdef", 320)

func want429(r *client.CreateTaskResponse, code client.ErrorKind) error {
	if err := wantStatus(r.StatusCode(), http.StatusTooManyRequests, r.JSON429 != nil, r.Body); err != nil {
		return err
	}
	if r.JSON429.Code != code || r.JSON429.RetryAfterMs <= 0 {
		return fmt.Errorf("backpressure %+v", *r.JSON429)
	}
	if err := wantHeaderInt(r.HTTPResponse.Header, "Retry-After", 1); err != nil {
		return err
	}
	return wantHeaderInt(r.HTTPResponse.Header, "X-Backoff-Ms", 1)
}

func want503(ctx context.Context, base, corr string) error {
	r, err := newClient(base, apiKey).CreateTaskWithResponse(ctx, &client.CreateTaskParams{XCorrelationId: ptr(corr)},
		taskRequest(unknownTaskID, exampleSessionID, client.Interactive))
	if err != nil {
		return err
	}
	if err := wantStatus(r.StatusCode(), http.StatusServiceUnavailable, r.JSON503 != nil, r.Body); err != nil {
		return err
	}
	if err := wantEnvelope(r.JSON503, client.POOLUNAVAILABLE); err != nil {
		return err
	}
	if !r.JSON503.Retriable {
		return fmt.Errorf("503 not retriable: %+v", *r.JSON503)
	}
	return nil
}
