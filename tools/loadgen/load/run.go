package load

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

// Run performs one bounded run against opts.URL and returns its result. It returns an error
// only for invalid options; request failures are counted in the Result by class. Cancelling
// ctx stops the run early (in-flight requests are aborted and counted as "canceled"). Run
// starts goroutines only for the run's duration; all of them have ended when it returns.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.Normalize(); err != nil {
		return nil, err
	}
	base, _ := ParseLoopbackURL(opts.URL)
	r := &runner{
		o:       opts,
		log:     opts.Logger,
		base:    base,
		lat:     make([]time.Duration, opts.Requests),
		ttft:    make([]time.Duration, opts.Requests),
		tokHist: NewHistogram(),
		errors:  map[string]int64{},
		parent:  ctx,
	}
	for i := range r.lat {
		r.lat[i], r.ttft[i] = -1, -1
	}
	transport := opts.Transport
	if transport == nil {
		idle := opts.Concurrency
		if opts.Target == TargetOrchdStream {
			idle *= 2 // a POST and a stream per task
		}
		t := NewLoopbackTransport(idle)
		defer t.CloseIdleConnections()
		transport = t
	}
	r.exec = r.do
	r.client = &http.Client{
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if err := r.prepare(); err != nil {
		return nil, err
	}

	hardCtx, cancelHard := context.WithTimeout(ctx, opts.Duration+opts.Grace)
	defer cancelHard()
	issueCtx, cancelIssue := context.WithTimeout(hardCtx, opts.Duration)
	defer cancelIssue()
	r.hard = hardCtx

	r.log.Info("load run starting", "target", opts.Target, "url", opts.URL, "concurrency", opts.Concurrency,
		"rate", opts.Rate, "requests", opts.Requests, "duration", opts.Duration, "tokens", opts.Tokens,
		"stream", opts.IsStream())
	r.start = time.Now()
	r.lastEnd.Store(r.start.UnixNano())
	if opts.Rate > 0 {
		r.openLoop(issueCtx)
	} else {
		r.closedLoop(issueCtx)
	}
	res := r.result(ctx)
	r.log.Info("load run finished", "requests", res.Requests, "succeeded", res.Succeeded,
		"failed", res.Failed, "wall_s", res.WallS, "stopped_by", res.StoppedBy)
	return res, nil
}

// NewLoopbackTransport returns an HTTP/1.1 transport that keeps maxIdlePerHost idle
// connections, ignores proxy environment variables, does not ask for compression, and refuses
// to connect to any address that is not loopback.
func NewLoopbackTransport(maxIdlePerHost int) *http.Transport {
	d := &net.Dialer{
		Timeout:   10 * time.Second,
		KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("load: refusing to connect to non-loopback address %s", address)
			}
			return nil
		},
	}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		MaxIdleConns:          maxIdlePerHost + 16,
		MaxIdleConnsPerHost:   maxIdlePerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}

// runner is the state of one run.
type runner struct {
	o      Options
	log    *slog.Logger
	base   *url.URL
	client *http.Client
	parent context.Context // the caller's
	hard   context.Context // parent bounded by Duration + Grace
	start  time.Time
	exec   func(t int, start time.Time) // r.do; replaced in tests of the schedulers

	// Prepared requests (see prepare).
	endpoint   string
	body       []byte // static body (llama.cpp, OpenAI)
	taskRest   []byte // orchd task body after the ids
	sessions   []string
	authHeader string
	authValue  string

	// Per-ticket records of successful requests (-1: none).
	lat  []time.Duration
	ttft []time.Duration

	issued    atomic.Int64
	succeeded atomic.Int64
	lastEnd   atomic.Int64 // UnixNano of the latest request end
	tokens    atomic.Int64
	stamped   atomic.Int64
	unstamped atomic.Int64
	tokHist   *Histogram

	mu     sync.Mutex
	errors map[string]int64
}

// closedLoop runs Concurrency workers that take tickets until Requests or ctx is done.
func (r *runner) closedLoop(ctx context.Context) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range r.o.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				t := next.Add(1) - 1
				if t >= int64(r.o.Requests) {
					return
				}
				r.exec(int(t), time.Now())
			}
		})
	}
	wg.Wait()
}

// openLoop issues request i at start + i/Rate, at most Concurrency in flight.
func (r *runner) openLoop(ctx context.Context) {
	sem := make(chan struct{}, r.o.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := range r.o.Requests {
		due := r.start.Add(time.Duration(float64(i) * float64(time.Second) / r.o.Rate))
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			r.issued.Add(1)
			r.fail("client_overload", nil)
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			r.exec(i, due)
		})
	}
}

// outcome is what one request produced.
type outcome struct {
	class   string // "" on success
	err     error  // detail for the log
	end     time.Time
	ttft    time.Duration // -1: no token received
	tokens  int64
	stamped int64
}

// do runs request t whose latency is measured from start.
func (r *runner) do(t int, start time.Time) {
	r.issued.Add(1)
	ctx, cancel := context.WithTimeout(r.hard, r.o.Timeout)
	defer cancel()
	oc := outcome{ttft: -1}
	switch r.o.Target {
	case TargetOrchdAdmit:
		r.orchdAdmit(ctx, t, &oc)
	case TargetOrchdStream:
		r.orchdStream(ctx, t, start, &oc)
	default:
		if r.o.NoStream {
			r.plainRequest(ctx, &oc)
		} else {
			r.engineStream(ctx, start, &oc)
		}
	}
	if oc.end.IsZero() {
		oc.end = time.Now()
	}
	r.tokens.Add(oc.tokens)
	r.stamped.Add(oc.stamped)
	r.unstamped.Add(oc.tokens - oc.stamped)
	for {
		last := r.lastEnd.Load()
		if oc.end.UnixNano() <= last || r.lastEnd.CompareAndSwap(last, oc.end.UnixNano()) {
			break
		}
	}
	if oc.class == "" && oc.err != nil {
		oc.class = r.classify(ctx)
	}
	if oc.class != "" {
		r.fail(oc.class, oc.err)
		return
	}
	r.succeeded.Add(1)
	r.lat[t] = max(oc.end.Sub(start), 0)
	r.ttft[t] = oc.ttft
}

// classify names the class of a request error that is not an HTTP status or a protocol error.
func (r *runner) classify(ctx context.Context) string {
	switch {
	case r.parent.Err() != nil:
		return "canceled"
	case r.hard.Err() != nil:
		return "aborted"
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return "timeout"
	}
	return "transport"
}

// fail counts a failed request; the first error of each class is logged.
func (r *runner) fail(class string, err error) {
	r.mu.Lock()
	r.errors[class]++
	first := r.errors[class] == 1
	r.mu.Unlock()
	if first && class != "client_overload" {
		r.log.Warn("first request error of its class", "class", class, "err", err)
	}
}

// recordToken counts one token frame's text received at now.
func (r *runner) recordToken(oc *outcome, text string, now time.Time) {
	if at, ok := sim.ParseStamp(text); ok {
		oc.tokens++
		oc.stamped++
		r.tokHist.Record(now.Sub(at))
		return
	}
	n := sim.EachStamp(text, func(at time.Time) { r.tokHist.Record(now.Sub(at)) })
	if n == 0 {
		if text == "" {
			return
		}
		n = 1
	} else {
		oc.stamped += int64(n)
	}
	oc.tokens += int64(n)
}

// result assembles the Result once all requests ended.
func (r *runner) result(ctx context.Context) *Result {
	o := r.o
	res := &Result{
		Schema:       SchemaVersion,
		Label:        o.Label,
		Target:       o.Target,
		URL:          o.URL,
		Mode:         "closed",
		Concurrency:  o.Concurrency,
		Rate:         o.Rate,
		Stream:       o.IsStream(),
		Tokens:       o.Tokens,
		MaxRequests:  o.Requests,
		MaxDurationS: o.Duration.Seconds(),
		StartedAt:    r.start.UTC(),
		Requests:     r.issued.Load(),
		Succeeded:    r.succeeded.Load(),
		Errors:       map[string]int64{},
	}
	if o.Rate > 0 {
		res.Mode = "open"
	}
	switch {
	case ctx.Err() != nil:
		res.StoppedBy = "canceled"
	case res.Requests >= int64(o.Requests):
		res.StoppedBy = "requests"
	default:
		res.StoppedBy = "duration"
	}
	r.mu.Lock()
	for k, v := range r.errors {
		res.Errors[k] = v
		res.Failed += v
	}
	r.mu.Unlock()
	wall := time.Duration(r.lastEnd.Load() - r.start.UnixNano())
	res.WallS = wall.Seconds()
	if wall > 0 {
		res.ThroughputRPS = float64(res.Succeeded) / wall.Seconds()
	}

	lat := make([]time.Duration, 0, res.Succeeded)
	var ttft []time.Duration
	for i, d := range r.lat {
		if d < 0 {
			continue
		}
		lat = append(lat, d)
		if r.ttft[i] >= 0 {
			ttft = append(ttft, r.ttft[i])
		}
	}
	res.LatencyMs = summarize(lat)
	if res.Stream {
		s := summarize(ttft)
		res.TTFTMs = &s
	}
	res.TokensReceived = r.tokens.Load()
	res.StampedTokens = r.stamped.Load()
	res.UnstampedTokens = r.unstamped.Load()
	if wall > 0 {
		res.TokensPerS = float64(res.TokensReceived) / wall.Seconds()
	}
	if res.Stream {
		s := r.tokHist.Summary()
		res.TokenLatencyMs = &s
		res.NegativeTokenLatencies = int64(r.tokHist.Negative())
	}
	return res
}
