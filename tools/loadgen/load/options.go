package load

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Target names what a run sends.
type Target string

// Targets.
const (
	TargetOrchdAdmit     Target = "orchd-admit"
	TargetOrchdStream    Target = "orchd-stream"
	TargetLlamaCppStream Target = "llamacpp-stream"
	TargetOpenAIStream   Target = "openai-stream"
)

// Targets lists every Target.
var Targets = []Target{TargetOrchdAdmit, TargetOrchdStream, TargetLlamaCppStream, TargetOpenAIStream}

// Defaults for zero Options fields.
const (
	DefaultRequests     = 1000
	DefaultDuration     = 30 * time.Second
	DefaultGrace        = 10 * time.Second
	DefaultTimeout      = 60 * time.Second
	DefaultConcurrency  = 8
	DefaultStreamTokens = 32
	DefaultPrompt       = "Once upon a time"
	DefaultModel        = "enginesim"
	DefaultEngine       = "llamacpp"
	DefaultPriority     = "interactive"
	DefaultCtx          = 2048
	DefaultDeadlineMs   = 60000

	// MaxRequests bounds Options.Requests (per-request records are pre-allocated).
	MaxRequests = 1_000_000
	// MaxDuration bounds Options.Duration.
	MaxDuration = time.Hour
	// MaxConcurrency bounds Options.Concurrency.
	MaxConcurrency = 4096
)

// Options configures a run. Zero fields take the defaults above (see Normalize).
type Options struct {
	// URL is the base URL of the target server: http://127.0.0.1:PORT (loopback only).
	URL    string
	Target Target
	// Concurrency is the number of closed-loop workers, or the cap on in-flight requests of an
	// open-loop run.
	Concurrency int
	// Rate, when positive, selects open loop at this many requests per second.
	Rate float64
	// Requests is the maximum number of requests issued (required bound).
	Requests int
	// Duration is the maximum time during which requests are issued (required bound).
	Duration time.Duration
	// Grace is how long in-flight requests may continue after Duration before being aborted.
	Grace time.Duration
	// Timeout bounds each request (orchd-stream: the POST and the stream together).
	Timeout time.Duration
	// Tokens is max_tokens / n_predict. 0: 1 for orchd-admit and non-stream requests,
	// DefaultStreamTokens for streams.
	Tokens int
	// NoStream sends stream=false (llamacpp-stream and openai-stream only).
	NoStream bool
	// APIKey is sent as X-API-Key to orchestratord and as "Authorization: Bearer" otherwise.
	APIKey string
	// Model is the orchestratord task's model_ref, or the OpenAI request's model.
	Model  string
	Prompt string
	// Label is copied into the Result to name the scenario.
	Label string

	// Engine, Priority, Ctx, DeadlineMs and Sessions shape orchestratord tasks. Sessions is the
	// number of distinct session ids the tasks rotate over (0: one per Concurrency slot).
	Engine     string
	Priority   string
	Ctx        int
	DeadlineMs int64
	Sessions   int

	// Logger receives progress and per-class first-error lines; nil discards.
	Logger *slog.Logger
	// Transport, when set, replaces the loopback-only transport the run builds (tests). The
	// caller then owns its idle connections.
	Transport http.RoundTripper
}

// IsStream reports whether the run reads token streams.
func (o *Options) IsStream() bool {
	switch o.Target {
	case TargetOrchdStream:
		return true
	case TargetLlamaCppStream, TargetOpenAIStream:
		return !o.NoStream
	}
	return false
}

// Normalize fills zero fields with defaults and validates the result.
func (o *Options) Normalize() error {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Requests == 0 {
		o.Requests = DefaultRequests
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Grace == 0 {
		o.Grace = DefaultGrace
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Tokens == 0 {
		o.Tokens = 1
		if o.IsStream() {
			o.Tokens = DefaultStreamTokens
		}
	}
	if o.Prompt == "" {
		o.Prompt = DefaultPrompt
	}
	if o.Model == "" {
		o.Model = DefaultModel
	}
	if o.Engine == "" {
		o.Engine = DefaultEngine
	}
	if o.Priority == "" {
		o.Priority = DefaultPriority
	}
	if o.Ctx == 0 {
		o.Ctx = DefaultCtx
	}
	if o.DeadlineMs == 0 {
		o.DeadlineMs = DefaultDeadlineMs
	}
	if o.Sessions == 0 {
		o.Sessions = o.Concurrency
	}
	return o.validate()
}

func (o *Options) validate() error {
	known := false
	for _, t := range Targets {
		known = known || o.Target == t
	}
	var errs []error
	if !known {
		errs = append(errs, fmt.Errorf("unknown target %q (want one of %v)", o.Target, Targets))
	}
	if o.NoStream && (o.Target == TargetOrchdAdmit || o.Target == TargetOrchdStream) {
		errs = append(errs, fmt.Errorf("stream=false applies to %s and %s only", TargetLlamaCppStream, TargetOpenAIStream))
	}
	if _, err := ParseLoopbackURL(o.URL); err != nil {
		errs = append(errs, err)
	}
	if o.Concurrency < 1 || o.Concurrency > MaxConcurrency {
		errs = append(errs, fmt.Errorf("concurrency %d out of [1, %d]", o.Concurrency, MaxConcurrency))
	}
	if o.Rate < 0 || o.Rate > 1e6 {
		errs = append(errs, fmt.Errorf("rate %g out of [0, 1e6]", o.Rate))
	}
	if o.Requests < 1 || o.Requests > MaxRequests {
		errs = append(errs, fmt.Errorf("requests %d out of [1, %d]", o.Requests, MaxRequests))
	}
	if o.Duration <= 0 || o.Duration > MaxDuration {
		errs = append(errs, fmt.Errorf("duration %v out of (0, %v]", o.Duration, MaxDuration))
	}
	if o.Grace < 0 || o.Timeout < 0 {
		errs = append(errs, errors.New("grace and timeout must be positive"))
	}
	if o.Tokens < 1 || o.Tokens > 1<<20 {
		errs = append(errs, fmt.Errorf("tokens %d out of [1, %d]", o.Tokens, 1<<20))
	}
	if o.Sessions < 1 {
		errs = append(errs, fmt.Errorf("sessions %d must be >= 1", o.Sessions))
	}
	if o.Ctx < 1 || o.DeadlineMs < 1 {
		errs = append(errs, errors.New("ctx and deadline-ms must be >= 1"))
	}
	return errors.Join(errs...)
}

// ParseLoopbackURL parses an http(s) URL whose host is "localhost" or a loopback IP, and
// refuses any other.
func ParseLoopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("url %q: scheme must be http or https", raw)
	}
	if !IsLoopbackHost(u.Hostname()) {
		return nil, fmt.Errorf("url %q: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed", raw)
	}
	return u, nil
}

// IsLoopbackHost reports whether host is "localhost" or a loopback IP literal.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
