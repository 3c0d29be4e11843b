// Package impl implements the generated strict server interface (gen/api). Handlers only
// translate: request objects into domain calls (impl/task, impl/session, impl/artifact,
// impl/pool), and results or errors into typed responses. Errors are rendered in one place
// (HTTPErrorHandler) from one code→status table; middleware (middleware.go) adds correlation ids,
// panic recovery, the body limit, API-key auth and request validation against the embedded spec.
package impl

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/orchestratord/orchestratord/engine"
	"github.com/orchestratord/orchestratord/engine/gpu"
	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/admission"
	"github.com/orchestratord/orchestratord/impl/artifact"
	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/pool"
	"github.com/orchestratord/orchestratord/impl/session"
	"github.com/orchestratord/orchestratord/impl/task"
	"github.com/orchestratord/orchestratord/impl/tenant"
)

var _ api.StrictServerInterface = (*Server)(nil)

// Tasks is what the task handlers need from the scheduler.
type Tasks interface {
	Submit(ctx context.Context, spec task.Spec) (task.Admission, error)
	// Replay answers a re-post of a task that stands admitted (ok), reserving nothing.
	Replay(ctx context.Context, spec task.Spec) (adm task.Admission, ok bool, err error)
	Get(ctx context.Context, id string) (task.Snapshot, error)
	Task(id string) (*task.Task, error)
	Cancel(ctx context.Context, id string) error
	Disconnected(ctx context.Context, t *task.Task)
	// Abandoned is Disconnected for a client that waited without a stream.
	Abandoned(ctx context.Context, t *task.Task)
	Stats(ctx context.Context) (admission.Stats, error)
	// Busy is a pool's busy slots and fills perReplica with its replicas' (one snapshot of
	// their one count).
	Busy(poolID string, perReplica map[string]int) int
	Depth() int
}

// Sessions is what the session handlers and admission need.
type Sessions interface {
	Get(id string) (session.Info, bool)
	// Delete forgets a session owned by the key named owner (another key's: nothing happens).
	Delete(id, owner string)
	// Reserve reserves a task's tokens of its session's budget for the key named owner,
	// claiming the session for it on first use; Settle ends the reservation.
	Reserve(id, owner string, want int) (session.Reservation, error)
	Settle(id, owner string, gen uint64, granted, used int)
}

// Artifacts is what the artifact handlers need.
type Artifacts interface {
	Put(ctx context.Context, a artifact.Artifact) (artifact.Ref, error)
	Get(ctx context.Context, id string) (artifact.Stored, error)
}

// Pools is what the control-plane handlers need.
type Pools interface {
	Views() []pool.View
	Get(id string) (pool.View, bool)
	Drain(id string, deadline time.Duration) error
	DrainReplica(poolID, replicaID string, deadline time.Duration) error
	ResumeReplica(poolID, replicaID string) (pool.ReplicaView, error)
	Reload(ctx context.Context, id, newRef string) (pool.View, error)
}

// GPUs reports the GPU inventory.
type GPUs interface {
	Snapshot(ctx context.Context) gpu.Inventory
}

// Options wires a Server.
type Options struct {
	Tasks     Tasks
	Sessions  Sessions
	Artifacts Artifacts
	Pools     Pools
	GPUs      GPUs
	Metrics   *metrics.Metrics
	Gatherer  prometheus.Gatherer
	Logger    *slog.Logger
	// Heartbeat between SSE keep-alive comments.
	Heartbeat time.Duration
	// StreamWriteTimeout bounds each write of an SSE stream; a client that reads nothing for
	// longer is dropped and its task follows the disconnect policy. 0: 30s.
	StreamWriteTimeout time.Duration
	// NetHTTPStreams keeps task event streams on net/http's response writer. By default a
	// stream over HTTP/1.1 takes its connection over (hijacks it) and writes its chunks itself:
	// no net/http goroutine, buffers or request state stay behind for an open stream.
	NetHTTPStreams bool
	// SpecJSON is the contract served at /openapi.json.
	SpecJSON []byte
	// BeforeScrape refreshes gauges computed from live state before /metrics is rendered.
	BeforeScrape func(ctx context.Context)
	// OpenAIDeadline is the deadline of the tasks of the OpenAI-compatible routes (which have no
	// deadline field). 0: 10 minutes.
	OpenAIDeadline time.Duration
	// Models confines the model references of managed pools. Nil refuses every reload of a
	// managed pool (fail closed).
	Models Models
	// Engines are the engine drivers built in, listed by /v1/capabilities.
	Engines *engine.Registry
	// Limits enforces the keys' rpm and tpm on task submissions. Nil: no limits.
	Limits *tenant.Limiter
	// Streams counts the keys' open streams and OpenAI completions against their max_streams.
	// Nil: no count, no limit.
	Streams *tenant.Streams
	// Budgets reserves the keys' token budgets at admission. Nil: no budgets.
	Budgets *tenant.Budgets
	// Tracer records a task.stream span for each event stream on a hijacked connection, whose
	// request's span ends when the connection is taken over. Nil: none.
	Tracer trace.Tracer
}

// Models resolves a managed pool's model reference to a file inside the models directories
// (config.Config.ResolveModel), or explains why it may not be used.
type Models interface {
	ResolveModel(ref string) (string, error)
}

// Server implements api.StrictServerInterface.
type Server struct {
	opts    Options
	log     *slog.Logger
	started time.Time // reported as the models' `created`
	// streams are the event streams on connections taken over from net/http, which
	// http.Server.Shutdown neither waits for nor closes (CloseStreams does).
	streams hijackedStreams
	batches streamBatches
	// sessionSpace derives the session of a task posted without one (generateIDs): random, so
	// that no other key can tell a task's session from its id.
	sessionSpace uuid.UUID
}

// NewServer returns a Server.
func NewServer(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.StreamWriteTimeout <= 0 {
		opts.StreamWriteTimeout = 30 * time.Second
	}
	if opts.OpenAIDeadline <= 0 {
		opts.OpenAIDeadline = 10 * time.Minute
	}
	s := &Server{opts: opts, log: opts.Logger, started: time.Now(), sessionSpace: uuid.New()}
	if m := opts.Metrics; m != nil {
		s.batches = streamBatches{journal: m.SSEBatches.WithLabelValues("journal"),
			drain: m.SSEBatches.WithLabelValues("drain"), netHTTP: m.SSEBatches.WithLabelValues("net_http")}
	}
	return s
}

// streamBatches counts the batches of frames written to streams, by writer.
type streamBatches struct{ journal, drain, netHTTP prometheus.Counter }
