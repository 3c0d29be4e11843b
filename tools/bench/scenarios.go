package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/tools/loadgen/load"
)

// Contender names.
const (
	cDirect = "direct"
	cNginx  = "nginx"
	// cGoRelay is tools/gorelay: net/http's server and httputil.ReverseProxy, flushing each
	// write (opt-in: name it in -contenders): what any Go relay pays on the machine.
	cGoRelay   = "go-relay"
	cOrchd     = "orchestratord"
	cOrchdInfo = "orchestratord-info"
	cOrchdBase = "orchestratord-base" // -base-orchd: the same daemon built before a change
	// cOrchdNoSync is this build with journal.sync none: a 202 waits for the admission
	// record's write, not its fdatasync (opt-in: name it in -contenders).
	cOrchdNoSync = "orchestratord-nosync"
	cLiteLLM     = "litellm"
)

// contender is a started contender: where loadgen sends requests and which process group is
// the relay whose CPU time and memory are measured (nil for direct: there is no relay).
type contender struct {
	name  string
	url   string
	relay *proc
	// restart starts the relay again when it died between runs (nil: cannot).
	restart func(ctx context.Context) (*service, error)
	// sim is the simulator behind the contender (for settle).
	sim *service
}

// settleWait is how long the simulator may keep generating for a finished run's requests.
const settleWait = 5 * time.Second

// settle runs after each measured run: it waits until the simulator has no generation left
// from it and the relay is idle (under half a core). A relay still busy after settleWait (LiteLLM
// keeps working on requests whose clients loadgen aborted at its time bound) is restarted, so
// that the leftover work does not load the next run, of any contender.
func (b *bench) settle(ctx context.Context, c *contender, after string) {
	if c.sim == nil {
		return
	}
	deadline := time.Now().Add(settleWait)
	var st simStats
	var cpu float64
	for {
		var err error
		st, err = c.sim.simStats(ctx)
		simIdle := err == nil && st.Active+st.Waiting == 0
		cpu = 0
		if simIdle && c.relay != nil {
			g0 := readGroup(c.relay.pgid()).CPUSec
			time.Sleep(500 * time.Millisecond)
			cpu = (readGroup(c.relay.pgid()).CPUSec - g0) / 0.5
		}
		if (simIdle && cpu < 0.5) || ctx.Err() != nil {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c.relay == nil || c.restart == nil {
		return
	}
	why := fmt.Sprintf("%s restarted after %s: still busy %v after the run (%d generations open on the simulator, %.1f cores)",
		c.name, after, settleWait, st.Active+st.Waiting, cpu)
	b.log.Warn("relay still busy after its run; restarting it", "contender", c.name, "run", after,
		"open", st.Active+st.Waiting, "cores", cpu)
	b.restarts = append(b.restarts, why)
	c.relay.stop(10 * time.Second)
	s, err := c.restart(ctx)
	if err != nil {
		b.log.Warn("restart failed", "contender", c.name, "err", err)
		return
	}
	c.url, c.relay = s.url, s.p
}

// ensureUp restarts c's relay when it has exited since the last run, and records why it ended.
func (b *bench) ensureUp(ctx context.Context, c *contender) error {
	if c.relay == nil || !c.relay.exited() {
		return nil
	}
	why := fmt.Sprintf("%s exited unexpectedly (%v)", c.name, c.relay.err)
	b.log.Warn("relay exited; restarting it", "contender", c.name, "err", c.relay.err, "log", tailFile(c.relay.log.Name(), 300))
	b.restarts = append(b.restarts, why)
	if c.restart == nil {
		return errors.New(why)
	}
	s, err := c.restart(ctx)
	if err != nil {
		return fmt.Errorf("%s; restart failed: %w", why, err)
	}
	c.url, c.relay = s.url, s.p
	return nil
}

// loadArgs are the loadgen flags that select contender c's target for a scenario.
func loadArgs(c *contender, scenario string) []string {
	switch c.name {
	case cOrchd, cOrchdInfo, cOrchdBase, cOrchdNoSync:
		t := "orchd-stream"
		if scenario == "admission" {
			t = "orchd-admit"
		}
		return []string{"-target", t, "-url", c.url, "-api-key", benchKey, "-model", simModel}
	case cLiteLLM:
		a := []string{"-target", "openai-stream", "-url", c.url, "-api-key", benchKey, "-model", simModel}
		if scenario == "admission" {
			a = append(a, "-stream=false")
		}
		return a
	default: // direct, nginx, go-relay: the llama.cpp protocol, as orchestratord's adapter speaks it
		a := []string{"-target", "llamacpp-stream", "-url", c.url}
		if scenario == "admission" {
			a = append(a, "-stream=false")
		}
		return a
	}
}

// runRecord is one loadgen run of one contender.
type runRecord struct {
	Scenario  string             `json:"scenario"`
	Param     int                `json:"param"` // concurrency (admission) or concurrent streams (relay)
	Contender string             `json:"contender"`
	Round     int                `json:"round"`
	Slot      int                `json:"slot"` // position in the round's contender order
	Requests  int64              `json:"requests"`
	Succeeded int64              `json:"succeeded"`
	StoppedBy string             `json:"stopped_by"`
	Errors    map[string]int64   `json:"errors,omitempty"`
	Metrics   map[string]float64 `json:"metrics"`
	Raw       string             `json:"raw"`
	Err       string             `json:"error,omitempty"`
}

// loadgen runs bin/loadgen with args and returns its result.
func (b *bench) loadgen(ctx context.Context, label string, args ...string) (*load.Result, string, error) {
	b.seq++
	base := filepath.Join(b.scratch, "runs", fmt.Sprintf("%04d-%s", b.seq, label))
	args = append(args, "-json", base+".json", "-label", label)
	cmd := exec.CommandContext(ctx, b.binPath("loadgen"), args...)
	lf, err := os.Create(base + ".log")
	if err != nil {
		return nil, "", err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	runErr := cmd.Run()
	var ee *exec.ExitError
	if runErr != nil && (!errors.As(runErr, &ee) || ee.ExitCode() != 3) { // 3: no request succeeded
		return nil, base + ".json", fmt.Errorf("loadgen %s: %w: %s", label, runErr, tailFile(base+".log", 400))
	}
	raw, err := os.ReadFile(base + ".json")
	if err != nil {
		return nil, base + ".json", err
	}
	var res load.Result
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, base + ".json", err
	}
	return &res, base + ".json", nil
}

// measured runs loadgen while accounting the relay's CPU time.
func (b *bench) measured(ctx context.Context, c *contender, scenario string, param, round, slot int, extra ...string) runRecord {
	rec := runRecord{Scenario: scenario, Param: param, Contender: c.name, Round: round, Slot: slot, Metrics: map[string]float64{}}
	if err := b.ensureUp(ctx, c); err != nil {
		rec.Err = err.Error()
		return rec
	}
	var before groupStats
	if c.relay != nil {
		before = readGroup(c.relay.pgid())
	}
	label := fmt.Sprintf("%s-%d-%s-r%d", scenario, param, c.name, round)
	res, raw, err := b.loadgen(ctx, label, append(loadArgs(c, scenario), extra...)...)
	rec.Raw = raw
	if err != nil {
		rec.Err = err.Error()
		b.log.Warn("run failed", "run", label, "err", err)
		b.settle(ctx, c, label)
		return rec
	}
	var cpu float64 = -1
	if c.relay != nil {
		cpu = readGroup(c.relay.pgid()).CPUSec - before.CPUSec
	}
	b.settle(ctx, c, label)
	rec.Requests, rec.Succeeded, rec.StoppedBy, rec.Errors = res.Requests, res.Succeeded, res.StoppedBy, res.Errors
	m := rec.Metrics
	switch scenario {
	case "admission":
		if res.Succeeded > 0 {
			m["rps"] = res.ThroughputRPS
			m["p50_ms"] = res.LatencyMs.P50
			m["p99_ms"] = res.LatencyMs.P99
		}
		if cpu >= 0 && res.Succeeded > 0 {
			m["cpu_us_per_req"] = cpu * 1e6 / float64(res.Succeeded)
		}
	case "relay":
		m["tokens_per_s"] = res.TokensPerS
		if res.TokenLatencyMs != nil && res.TokenLatencyMs.Count > 0 {
			m["added_p50_ms"] = res.TokenLatencyMs.P50
			m["added_p99_ms"] = res.TokenLatencyMs.P99
		}
		if res.TTFTMs != nil && res.TTFTMs.Count > 0 {
			m["ttft_p50_ms"] = res.TTFTMs.P50
		}
		if res.Requests > 0 {
			m["completed_pct"] = 100 * float64(res.Succeeded) / float64(res.Requests)
		}
		if cpu >= 0 && res.TokensReceived > 0 {
			m["cpu_ms_per_1k_tokens"] = cpu * 1e3 / (float64(res.TokensReceived) / 1000)
		}
	}
	b.log.Info("run", "run", label, "requests", res.Requests, "ok", res.Succeeded, "rps", round1(res.ThroughputRPS),
		"tokens_per_s", round1(res.TokensPerS), "errors", res.Errors)
	return rec
}

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

// order is round r's contender order: rotated by r, reversed on odd rounds, so that no
// contender always runs first or right after the same neighbour.
func order(names []string, r int) []string {
	n := len(names)
	out := make([]string, n)
	for i := range names {
		out[i] = names[(i+r)%n]
	}
	if r%2 == 1 {
		slices.Reverse(out)
	}
	return out
}

// runLoadPhase runs scenarios 1 and 2: every contender on one simulator, interleaved rounds.
func (b *bench) runLoadPhase(ctx context.Context, rep *report) error {
	p := b.plan
	sim, err := b.startSim(ctx, "sim-relay", p.RelayTokenDelay.D())
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	defer sim.stop()
	maxStreams := slices.Max(p.RelayStreams)
	cs := map[string]*contender{}
	var started []*service
	defer func() {
		for _, s := range started {
			s.stop()
		}
	}()
	starters := map[string]func(ctx context.Context) (*service, error){
		cNginx: func(ctx context.Context) (*service, error) { return b.startNginx(ctx, "nginx-relay", sim) },
		cGoRelay: func(ctx context.Context) (*service, error) {
			return b.startGoRelay(ctx, "gorelay-relay", sim)
		},
		cOrchd: func(ctx context.Context) (*service, error) {
			return b.startOrchd(ctx, "orchd-relay", sim, "warn", maxStreams)
		},
		cOrchdInfo: func(ctx context.Context) (*service, error) {
			return b.startOrchd(ctx, "orchd-info-relay", sim, "info", maxStreams)
		},
		cLiteLLM: func(ctx context.Context) (*service, error) { return b.startLiteLLM(ctx, "litellm-relay", sim) },
		cOrchdBase: func(ctx context.Context) (*service, error) {
			return b.startOrchdBin(ctx, b.baseOrchd, "orchd-base-relay", sim, "warn", "", maxStreams)
		},
		cOrchdNoSync: func(ctx context.Context) (*service, error) {
			return b.startOrchdBin(ctx, b.binPath("orchestratord"), "orchd-nosync-relay", sim, "warn", config.JournalSyncNone, maxStreams)
		},
	}
	// LiteLLM takes the longest to start: start it while the others start.
	type startResult struct {
		s   *service
		err error
	}
	litellmDone := make(chan startResult, 1)
	if contains(b.wanted, cLiteLLM) {
		go func() { s, err := starters[cLiteLLM](ctx); litellmDone <- startResult{s, err} }()
	}
	for _, name := range b.wanted {
		var s *service
		var err error
		switch name {
		case cDirect:
			cs[name] = &contender{name: name, url: sim.url, sim: sim}
			continue
		case cLiteLLM:
			r := <-litellmDone
			s, err = r.s, r.err
		default:
			start, ok := starters[name]
			if !ok {
				err = fmt.Errorf("unknown contender %q", name)
				break
			}
			s, err = start(ctx)
		}
		if err != nil {
			if _, ok := b.unavailable[name]; !ok {
				b.unavailable[name] = err.Error()
			}
			b.log.Warn("contender unavailable", "contender", name, "err", err)
			continue
		}
		started = append(started, s)
		start := starters[name]
		cs[name] = &contender{name: name, url: s.url, relay: s.p, sim: sim, restart: func(ctx context.Context) (*service, error) {
			s, err := start(ctx)
			if err == nil {
				started = append(started, s)
			}
			return s, err
		}}
		b.log.Info("contender ready", "contender", name, "url", s.url)
	}
	var names []string
	for _, n := range b.wanted {
		if cs[n] != nil {
			names = append(names, n)
		}
	}
	// Warm-up: connections, code paths, and LiteLLM's lazy initialisation.
	for _, n := range names {
		c := cs[n]
		if b.scenarios["admission"] {
			_, _, _ = b.loadgen(ctx, "warmup-admission-"+n, append(loadArgs(c, "admission"),
				"-concurrency", "4", "-requests", "100", "-duration", "10s")...)
		}
		if b.scenarios["relay"] {
			_, _, _ = b.loadgen(ctx, "warmup-relay-"+n, append(loadArgs(c, "relay"),
				"-concurrency", "10", "-requests", "10", "-tokens", "32", "-duration", "20s")...)
		}
	}
	for r := range p.Rounds {
		ord := order(names, r)
		b.log.Info("round", "round", r+1, "of", p.Rounds, "order", strings.Join(ord, ","))
		if b.scenarios["admission"] {
			for _, conc := range p.AdmitConcurrency {
				for slot, n := range ord {
					if err := ctx.Err(); err != nil {
						return err
					}
					rep.Runs = append(rep.Runs, b.measured(ctx, cs[n], "admission", conc, r, slot,
						"-concurrency", strconv.Itoa(conc), "-requests", strconv.Itoa(p.AdmitRequests),
						"-duration", p.AdmitDuration.String(), "-grace", "5s", "-timeout", "30s"))
				}
			}
		}
		if b.scenarios["relay"] {
			for i, streams := range p.RelayStreams {
				for slot, n := range ord {
					if err := ctx.Err(); err != nil {
						return err
					}
					rep.Runs = append(rep.Runs, b.measured(ctx, cs[n], "relay", streams, r, slot,
						"-concurrency", strconv.Itoa(streams), "-requests", strconv.Itoa(p.RelayRequests[i]),
						"-tokens", strconv.Itoa(p.RelayTokens), "-duration", p.RelayDuration.String(),
						"-grace", p.RelayGrace.String(), "-timeout", (p.RelayDuration.D()+p.RelayGrace.D()).String()))
				}
			}
		}
	}
	return nil
}

// idleRecord is one idle-streams measurement.
type idleRecord struct {
	Streams   int    `json:"streams"`
	Contender string `json:"contender"`
	Round     int    `json:"round"`
	// Open is how many streams the simulator saw open at the sample; RampS how long they took.
	Open  int64   `json:"open"`
	RampS float64 `json:"ramp_s"`
	// BaseRSS is the measured process group's RSS after start-up and a warm-up, OpenRSS with the
	// streams open (the largest of three samples); PerStream = (OpenRSS − BaseRSS) / Open.
	Procs     int     `json:"procs"`
	BaseRSS   int64   `json:"base_rss_bytes"`
	OpenRSS   int64   `json:"open_rss_bytes"`
	PerStream float64 `json:"per_stream_bytes"`
	Err       string  `json:"error,omitempty"`
}

// runIdle runs scenario 3: for each measurement a fresh simulator and a fresh relay.
func (b *bench) runIdle(ctx context.Context, rep *report) {
	var names []string
	for _, n := range b.wanted {
		if n == cDirect || n == cNginx || n == cGoRelay || n == cOrchd || n == cOrchdBase {
			if _, gone := b.unavailable[n]; !gone {
				names = append(names, n)
			}
		}
	}
	for r := range b.plan.Rounds {
		for _, n := range b.plan.IdleStreams {
			for _, c := range order(names, r) {
				if ctx.Err() != nil {
					return
				}
				rec := b.idleOnce(ctx, c, n, r)
				if rec.Err != "" {
					b.log.Warn("idle measurement failed", "contender", c, "streams", n, "err", rec.Err)
				} else {
					b.log.Info("idle", "contender", c, "streams", n, "open", rec.Open, "ramp_s", round1(rec.RampS),
						"kib_per_stream", round1(rec.PerStream/1024))
				}
				rep.Idle = append(rep.Idle, rec)
			}
		}
	}
}

func (b *bench) idleOnce(ctx context.Context, name string, n, round int) (rec idleRecord) {
	rec = idleRecord{Streams: n, Contender: name, Round: round}
	fail := func(err error) idleRecord { rec.Err = err.Error(); return rec }
	sim, err := b.startSim(ctx, "sim-idle", b.plan.IdleTokenDelay.D())
	if err != nil {
		return fail(err)
	}
	defer sim.stop()
	c := &contender{name: name, url: sim.url, relay: sim.p} // direct: the simulator's own cost
	var relay *service
	switch name {
	case cNginx:
		relay, err = b.startNginx(ctx, "nginx-idle", sim)
	case cGoRelay:
		relay, err = b.startGoRelay(ctx, "gorelay-idle", sim)
	case cOrchd:
		relay, err = b.startOrchd(ctx, "orchd-idle", sim, "warn", n)
	case cOrchdBase:
		relay, err = b.startOrchdBin(ctx, b.baseOrchd, "orchd-base-idle", sim, "warn", "", n)
	}
	if err != nil {
		return fail(err)
	}
	if relay != nil {
		defer relay.stop()
		c.url, c.relay = relay.url, relay.p
	}
	// Warm-up: one-token streams (the first token is immediate).
	if _, _, err := b.loadgen(ctx, "warmup-idle-"+name, append(loadArgs(c, "relay"),
		"-concurrency", "8", "-requests", "64", "-tokens", "1", "-duration", "20s")...); err != nil {
		return fail(err)
	}
	time.Sleep(time.Second)
	base := readGroup(c.relay.pgid())
	rec.BaseRSS = base.RSSBytes

	// loadgen holds at most load.MaxConcurrency streams: split n over as many processes.
	parts := (n + load.MaxConcurrency - 1) / load.MaxConcurrency
	hold := 120 * time.Second
	var cmds []*exec.Cmd
	defer func() {
		for _, cmd := range cmds {
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, cmd := range cmds {
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
	}()
	start := time.Now()
	var logBase string
	for i := range parts {
		k := n / parts
		if i < n%parts {
			k++
		}
		b.seq++
		label := fmt.Sprintf("idle-%d-%s-r%d-p%d", n, name, round, i)
		logBase = filepath.Join(b.scratch, "runs", fmt.Sprintf("%04d-%s", b.seq, label))
		lf, err := os.Create(logBase + ".log")
		if err != nil {
			return fail(err)
		}
		defer lf.Close()
		args := append(loadArgs(c, "relay"), "-concurrency", strconv.Itoa(k), "-requests", strconv.Itoa(k),
			"-tokens", "1000", "-duration", hold.String(), "-grace", "1s", "-timeout", (hold + 10*time.Second).String(),
			"-json", logBase+".json", "-label", label)
		cmd := exec.Command(b.binPath("loadgen"), args...)
		cmd.Stdout, cmd.Stderr = lf, lf
		if err := cmd.Start(); err != nil {
			return fail(err)
		}
		cmds = append(cmds, cmd)
	}
	// Wait until the simulator holds n generations open (every stream reached the engine).
	deadline := start.Add(90 * time.Second)
	var maxSeen int64
	var lastErr error
	for {
		st, err := sim.simStats(ctx)
		if err == nil && st.Active >= int64(n) {
			rec.Open = st.Active
			break
		}
		if err == nil {
			maxSeen = max(maxSeen, st.Active)
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail(fmt.Errorf("at most %d of %d streams open within %v (last stats error: %v): %s", maxSeen, n,
				time.Since(start).Round(time.Second), lastErr, tailFile(logBase+".log", 300))) //nolint:errorlint // lastErr may be nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	rec.RampS = time.Since(start).Seconds()
	time.Sleep(b.plan.IdleSettle.D())
	for i := range 3 {
		if i > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		g := readGroup(c.relay.pgid())
		rec.Procs = g.Procs
		rec.OpenRSS = max(rec.OpenRSS, g.RSSBytes)
	}
	if st, err := sim.simStats(ctx); err == nil {
		rec.Open = min(rec.Open, st.Active)
	}
	if rec.Open > 0 {
		rec.PerStream = float64(rec.OpenRSS-rec.BaseRSS) / float64(rec.Open)
	}
	return rec
}

// queueRecord is one queue micro-benchmark: the median of its -count samples.
type queueRecord struct {
	Op    string `json:"op"`
	Depth int    `json:"depth"`
	// Tenants is the number of tenants whose items fill the queue (a tenants=N level in the
	// benchmark's name); 0 when the benchmark does not say (one tenant).
	Tenants     int       `json:"tenants,omitempty"`
	NsPerOp     float64   `json:"ns_per_op"`
	BytesPerOp  float64   `json:"bytes_per_op"`
	AllocsPerOp float64   `json:"allocs_per_op"`
	Samples     []float64 `json:"ns_samples"`
}

// benchLine matches `Benchmark<Op>/depth=N` and `Benchmark<Op>/tenants=T/depth=N` result lines.
var benchLine = regexp.MustCompile(`^Benchmark(\w+)/(?:tenants=(\d+)/)?depth=(\d+)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+([\d.]+) B/op\s+([\d.]+) allocs/op)?`)

// parseQueueBench turns `go test -bench` output into records (medians over -count).
func parseQueueBench(out []byte) []queueRecord {
	type acc struct{ ns, bytes, allocs []float64 }
	var keys []string
	accs := map[string]*acc{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		k := m[1] + "/" + m[2] + "/" + m[3]
		a := accs[k]
		if a == nil {
			a = &acc{}
			accs[k] = a
			keys = append(keys, k)
		}
		ns, _ := strconv.ParseFloat(m[4], 64)
		by, _ := strconv.ParseFloat(m[5], 64)
		al, _ := strconv.ParseFloat(m[6], 64)
		a.ns, a.bytes, a.allocs = append(a.ns, ns), append(a.bytes, by), append(a.allocs, al)
	}
	var recs []queueRecord
	for _, k := range keys {
		op, rest, _ := strings.Cut(k, "/")
		t, d, _ := strings.Cut(rest, "/")
		depth, _ := strconv.Atoi(d)
		tenants, _ := strconv.Atoi(t) // "" (no tenants level): 0
		a := accs[k]
		recs = append(recs, queueRecord{Op: op, Depth: depth, Tenants: tenants, NsPerOp: median(a.ns),
			BytesPerOp: median(a.bytes), AllocsPerOp: median(a.allocs), Samples: a.ns})
	}
	return recs
}

// runQueue runs scenario 4, the admission queue's Go benchmarks.
func (b *bench) runQueue(ctx context.Context, rep *report) error {
	// -timeout: the full plan's benchmarks take about 15 minutes here, mostly refilling queues
	// of 100,000 between timed rounds (go test's default timeout, 10 minutes, killed them).
	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-benchtime", b.plan.QueueBenchtime,
		"-count", strconv.Itoa(b.plan.QueueCount), "-timeout", "60m", "./impl/admission/"}
	rep.QueueCommand = "go " + strings.Join(args, " ")
	b.log.Info("queue benchmarks", "command", rep.QueueCommand)
	cmd := exec.CommandContext(ctx, "go", args...)
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(filepath.Join(b.scratch, "runs", "queue-bench.txt"), out, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w: %s", rep.QueueCommand, err, lastLines(out, 10))
	}
	rep.Queue = parseQueueBench(out)
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
