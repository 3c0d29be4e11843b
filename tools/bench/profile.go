package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/internal/cpuclock"
	"github.com/orchestratord/orchestratord/tools/loadgen/load"
)

// runProfile runs orchestratord in this process (impl/app, as cmd/orchestratord assembles it)
// on a simulator, drives the relay scenario against it with loadgen, and records a CPU profile
// and an allocation profile of the daemon for exactly the measured run. The daemon gets no
// pprof endpoint: the profile is taken from the outside of its HTTP surface.
func runProfile(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench profile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "tmp/bench/profile", "directory for cpu.pprof, allocs profiles, top*.txt and the loadgen result")
	scenario := fs.String("scenario", "relay", "relay (POST + SSE stream per task), admission (POST /v1/tasks only) "+
		"or idle (heap and stacks per open slow stream)")
	streams := fs.Int("streams", 100, "concurrent streams (relay) or concurrent clients (admission)")
	requests := fs.Int("requests", 2000, "streams or admissions in the measured run")
	tokens := fs.Int("tokens", 256, "tokens per stream")
	tokenDelay := fs.Duration("token-delay", 5*time.Millisecond, "the simulator's delay between tokens")
	duration := fs.Duration("duration", 20*time.Second, "bound of the measured run")
	logLevel := fs.String("log-level", "warn", "the daemon's log level (records go to <out>/daemon.log)")
	journalSync := fs.String("journal-sync", "", "the daemon's journal.sync (admission, always or none; default: the daemon's), or off (no journal)")
	skipBuild := fs.Bool("skip-build", false, "use the binaries already in <out>/bin")
	nodes := fs.Int("nodecount", 30, "frames in the top listings")
	traceRun := fs.Bool("trace", false, "also write an execution trace of the measured run to <out>/trace.out "+
		"(go tool trace -pprof=sched <out>/trace.out: where goroutines waited to run); keep -requests small")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	b := &bench{scratch: *out, maxRun: time.Hour, unavailable: map[string]string{}, traceRun: *traceRun,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if *scenario != "relay" && *scenario != "admission" && *scenario != "idle" {
		fmt.Fprintln(stderr, "bench profile: -scenario must be relay, admission or idle")
		return 2
	}
	if err := b.profile(ctx, *scenario, *streams, *requests, *tokens, *tokenDelay, *duration, *logLevel, *journalSync, *skipBuild, *nodes); err != nil {
		fmt.Fprintln(stderr, "bench profile:", err)
		return 1
	}
	return 0
}

func (b *bench) profile(ctx context.Context, scenario string, streams, requests, tokens int, tokenDelay, duration time.Duration,
	logLevel, journalSync string, skipBuild bool, nodes int) error {
	for _, d := range []string{filepath.Join(b.scratch, "logs"), filepath.Join(b.scratch, "runs"), filepath.Join(b.scratch, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	raiseNoFile()
	if !skipBuild {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(b.scratch, "bin")+"/", "./tools/enginesim", "./tools/loadgen")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build: %w", err)
		}
	}
	if scenario == "idle" {
		tokenDelay = 5 * time.Second
	}
	sim, err := b.startSim(ctx, "sim-profile", tokenDelay)
	if err != nil {
		return err
	}
	defer sim.stop()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	dir, _ := filepath.Abs(filepath.Join(b.scratch, "daemon"))
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	confPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(confPath, []byte(orchdConf(filepath.Join(dir, "state"), port, sim.url, logLevel, journalSync, streams)), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(config.Overrides{ConfigFile: confPath, APIKeys: benchKey})
	if err != nil {
		return err
	}
	lf, err := os.Create(filepath.Join(b.scratch, "daemon.log"))
	if err != nil {
		return err
	}
	defer lf.Close()
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(cfg.LogLevel))
	a, err := app.New(cfg, app.Options{Logger: slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: lv}))}) //nolint:contextcheck // app.New takes no context: its pool callbacks are detached by design
	if err != nil {
		return err
	}
	sctx, stopDaemon := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- a.Serve(sctx, ln) }()
	defer func() { stopDaemon(); _ = <-served }() // stopped on purpose: Serve's error says nothing new
	url := "http://" + ln.Addr().String()
	if err := waitReady(ctx, nil, url+"/v1/pools/bench0/health", map[string]string{"X-API-Key": benchKey}, 30*time.Second,
		func(b []byte) bool { return bytes.Contains(b, []byte(`"ready":true`)) }); err != nil {
		return err
	}
	c := &contender{name: cOrchd, url: url}
	if scenario == "idle" {
		return b.profileIdle(ctx, c, sim, streams, nodes)
	}
	var measured *load.Result
	loadArgsRun := func(label string, n, reqs int, d time.Duration) error {
		args := append(loadArgs(c, scenario), "-concurrency", strconv.Itoa(n), "-requests", strconv.Itoa(reqs),
			"-duration", d.String(), "-grace", "10s", "-timeout", (d + 10*time.Second).String())
		if scenario == "relay" {
			args = append(args, "-tokens", strconv.Itoa(tokens))
		}
		res, _, err := b.loadgen(ctx, label, args...)
		if err != nil {
			return err
		}
		measured = res
		if res.TokenLatencyMs != nil {
			b.log.Info("profile run", "label", label, "ok", res.Succeeded, "of", res.Requests, "tokens_per_s", round1(res.TokensPerS),
				"added_p50_ms", res.TokenLatencyMs.P50, "added_p99_ms", res.TokenLatencyMs.P99)
		} else {
			b.log.Info("profile run", "label", label, "ok", res.Succeeded, "of", res.Requests, "rps", round1(res.ThroughputRPS),
				"p50_ms", res.LatencyMs.P50, "p99_ms", res.LatencyMs.P99)
		}
		return nil
	}
	if err := loadArgsRun("profile-warmup", min(streams, 50), min(requests, 100), 20*time.Second); err != nil {
		return err
	}
	st0, _ := sim.simStats(ctx)
	runtime.GC()
	allocsBefore := filepath.Join(b.scratch, "allocs-before.pprof")
	if err := writeProfile("allocs", allocsBefore); err != nil {
		return err
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpuPath := filepath.Join(b.scratch, "cpu.pprof")
	cf, err := os.Create(cpuPath)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(cf); err != nil {
		cf.Close()
		return err
	}
	stopTrace := func() error { return nil }
	if b.traceRun {
		if stopTrace, err = startTrace(filepath.Join(b.scratch, "trace.out")); err != nil {
			pprof.StopCPUProfile()
			cf.Close()
			return err
		}
	}
	t0 := time.Now()
	ru0 := processTimes()
	runErr := loadArgsRun("profile-relay", streams, requests, duration)
	if err := stopTrace(); err != nil && runErr == nil {
		runErr = err
	}
	pprof.StopCPUProfile()
	cf.Close()
	wall := time.Since(t0)
	ru1 := processTimes()
	user, sys := ru1.user-ru0.user, ru1.sys-ru0.sys
	runtime.ReadMemStats(&ms1)
	allocsAfter := filepath.Join(b.scratch, "allocs-after.pprof")
	if err := writeProfile("allocs", allocsAfter); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	st1, _ := sim.simStats(ctx)
	mallocs, bytesAlloc := ms1.Mallocs-ms0.Mallocs, ms1.TotalAlloc-ms0.TotalAlloc
	var summary string
	if scenario == "relay" {
		toks := st1.Tokens - st0.Tokens
		summary = fmt.Sprintf("daemon in-process, relay: %d concurrent streams × %d tokens, %d streams, wall %.1fs, %.0f tokens/s, "+
			"added per-token latency p50 %.3f ms p99 %.3f ms\n"+
			"daemon heap: %d mallocs (%.2f per token relayed, %d tokens), %d bytes allocated (%.0f per token), %d GC cycles\n"+
			"daemon CPU (getrusage, profiler included): %.1f ms per 1,000 tokens (user %.1f, system %.1f)\n",
			streams, tokens, measured.Succeeded, wall.Seconds(), measured.TokensPerS, measured.TokenLatencyMs.P50, measured.TokenLatencyMs.P99,
			mallocs, perUnit(mallocs, toks), toks, bytesAlloc, perUnit(bytesAlloc, toks), ms1.NumGC-ms0.NumGC,
			perUnit(uint64((user+sys).Microseconds()), toks), perUnit(uint64(user.Microseconds()), toks), perUnit(uint64(sys.Microseconds()), toks))
	} else {
		n := uint64(max(measured.Succeeded, 0))
		summary = fmt.Sprintf("daemon in-process, admission: %d concurrent clients, %d tasks admitted, wall %.1fs, %.0f req/s, "+
			"latency p50 %.3f ms p99 %.3f ms\n"+
			"daemon heap: %d mallocs (%.1f per task, including running it), %d bytes allocated (%.0f per task), %d GC cycles\n"+
			"daemon CPU (getrusage, profiler included): %.1f µs per task (user %.1f, system %.1f)\n",
			streams, n, wall.Seconds(), measured.ThroughputRPS, measured.LatencyMs.P50, measured.LatencyMs.P99,
			mallocs, perUnit(mallocs, n), bytesAlloc, perUnit(bytesAlloc, n), ms1.NumGC-ms0.NumGC,
			perUnit(uint64((user+sys).Microseconds()), n), perUnit(uint64(user.Microseconds()), n), perUnit(uint64(sys.Microseconds()), n))
	}
	if err := os.WriteFile(filepath.Join(b.scratch, "summary.txt"), []byte(summary), 0o644); err != nil {
		return err
	}
	fmt.Fprint(os.Stderr, summary)
	n := strconv.Itoa(nodes)
	for _, t := range []struct {
		file string
		args []string
	}{
		{"top-flat.txt", []string{"tool", "pprof", "-top", "-nodecount", n, cpuPath}},
		{"top-cum.txt", []string{"tool", "pprof", "-top", "-cum", "-nodecount", n, cpuPath}},
		{"allocs-objects.txt", []string{"tool", "pprof", "-top", "-sample_index", "alloc_objects", "-nodecount", n, "-diff_base", allocsBefore, allocsAfter}},
		{"allocs-space.txt", []string{"tool", "pprof", "-top", "-sample_index", "alloc_space", "-nodecount", n, "-diff_base", allocsBefore, allocsAfter}},
	} {
		out, err := exec.CommandContext(ctx, "go", t.args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go %v: %w: %s", t.args, err, out)
		}
		if err := os.WriteFile(filepath.Join(b.scratch, t.file), out, 0o644); err != nil {
			return err
		}
	}
	b.log.Info("profile written", "dir", b.scratch, "cpu", cpuPath)
	return nil
}

type cpuTimes struct{ user, sys time.Duration }

// processTimes is this process's CPU time so far: the in-process daemon's (the simulator and
// loadgen run in their own processes) and the profiler's.
func processTimes() cpuTimes {
	user, sys, err := cpuclock.Process()
	if err != nil {
		return cpuTimes{}
	}
	return cpuTimes{user: user, sys: sys}
}

func perUnit(v, units uint64) float64 {
	if units == 0 {
		return 0
	}
	return float64(v) / float64(units)
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup(name).WriteTo(f, 0)
}

// profileIdle opens n slow streams through the in-process daemon and reports its heap and
// goroutine stacks per open stream, with the heap profile's top in-use allocation sites.
func (b *bench) profileIdle(ctx context.Context, c *contender, sim *service, n, nodes int) error {
	if _, _, err := b.loadgen(ctx, "profile-idle-warmup", append(loadArgs(c, "relay"),
		"-concurrency", "8", "-requests", "64", "-tokens", "1", "-duration", "20s")...); err != nil {
		return err
	}
	// Sample every 4 KiB allocated instead of every 512 KiB: an open stream's objects are small,
	// and the default rate sees one stream in a hundred.
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 4 << 10
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	g0 := runtime.NumGoroutine()
	label := "profile-idle"
	cmd := exec.Command(b.binPath("loadgen"), append(loadArgs(c, "relay"), "-concurrency", strconv.Itoa(n),
		"-requests", strconv.Itoa(n), "-tokens", "1000", "-duration", "120s", "-grace", "1s", "-timeout", "130s",
		"-json", filepath.Join(b.scratch, "runs", label+".json"))...)
	lf, err := os.Create(filepath.Join(b.scratch, "runs", label+".log"))
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := sim.simStats(ctx)
		if err == nil && st.Active >= int64(n) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d streams open", st.Active, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	// Two collections: the first moves sync.Pool contents (net/http's buffers of connections
	// closed during the ramp, among others) to the pools' victim caches, the second frees them.
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	g1 := runtime.NumGoroutine()
	heapPath := filepath.Join(b.scratch, "heap-idle.pprof")
	if err := writeProfile("heap", heapPath); err != nil {
		return err
	}
	gr := filepath.Join(b.scratch, "goroutines-idle.txt")
	if f, err := os.Create(gr); err == nil {
		_ = pprof.Lookup("goroutine").WriteTo(f, 1)
		f.Close()
	}
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) / 1024 }
	summary := fmt.Sprintf("daemon in-process, idle: %d open streams\n"+
		"per open stream: %.1f goroutines, heap in use %.1f KiB, goroutine stacks %.1f KiB, all runtime memory (Sys) %.1f KiB\n",
		n, float64(g1-g0)/float64(n), per(ms0.HeapInuse, ms1.HeapInuse), per(ms0.StackInuse, ms1.StackInuse), per(ms0.Sys, ms1.Sys))
	if err := os.WriteFile(filepath.Join(b.scratch, "summary.txt"), []byte(summary), 0o644); err != nil {
		return err
	}
	fmt.Fprint(os.Stderr, summary)
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-sample_index", "inuse_space", "-nodecount",
		strconv.Itoa(nodes), heapPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pprof: %w: %s", err, out)
	}
	return os.WriteFile(filepath.Join(b.scratch, "heap-idle.txt"), out, 0o644)
}

// startTrace starts an execution trace written to path; stop ends it and closes the file.
func startTrace(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := trace.Start(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() error { trace.Stop(); return f.Close() }, nil
}
