// Command orchestratord runs the daemon: flags and environment → configuration → app, until
// SIGINT or SIGTERM, then a graceful shutdown. With no --config it uses the embedded default
// (one managed llama.cpp pool on the tiny model under the state directory).
//
// Tracing is off by default; the standard OTEL_* environment variables turn it on (see
// impl/tracing): OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 exports spans over OTLP/HTTP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
	"github.com/orchestratord/orchestratord/impl/tracing"
	"github.com/orchestratord/orchestratord/internal/statelock"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// version and commit are set at build time by make build
// (-ldflags "-X main.version=... -X main.commit=..."); without them, what the Go build
// recorded, if anything.
var version, commit string

// beforeStart, when set (tests only), runs just before the daemon is built.
var beforeStart func()

// versionLine is what --version prints: version, commit and Go version.
func versionLine() string {
	v, c := buildInfo()
	return fmt.Sprintf("orchestratord %s (commit %s, %s %s/%s)", v, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// buildInfo returns the version and commit.
func buildInfo() (v, c string) {
	v, c = version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && c == "" {
				c = s.Value
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if c == "" {
		c = "unknown"
	}
	return v, c
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("orchestratord", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var fl config.Overrides
	fs.StringVar(&fl.ConfigFile, "config", "", "YAML config file (env ORCHD_CONFIG; default: the embedded default)")
	fs.StringVar(&fl.Addr, "addr", "", "listen address (env ORCHD_ADDR; default 127.0.0.1:8080)")
	fs.StringVar(&fl.StateDir, "state-dir", "", "state directory (env ORCHD_STATE_DIR; default .orchestratord)")
	fs.StringVar(&fl.APIKeysFile, "api-keys-file", "", "file with one API key per line (env ORCHD_API_KEYS_FILE; or ORCHD_API_KEYS=k1,k2)")
	fs.StringVar(&fl.LogFormat, "log-format", "", "text or json (env ORCHD_LOG_FORMAT)")
	fs.StringVar(&fl.LogLevel, "log-level", "", "debug, info, warn or error (env ORCHD_LOG_LEVEL)")
	fs.StringVar(&fl.LlamaServer, "llama-server", "", "llama-server binary for managed llama.cpp replicas (env ORCHD_LLAMA_SERVER)")
	printDefault := fs.Bool("print-default-config", false, "print the embedded default configuration and exit")
	showVersion := fs.Bool("version", false, "print the version, commit and Go version and exit")
	checkConfig := fs.String("check-config", "", "load and validate this config file (with the environment and other flags), print a one-line summary and exit: 0 when valid, 2 naming the field when not")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) { // -h, --help: the usage was asked for, not an error
			return 0
		}
		return 2
	}
	// The daemon takes no positional argument. The flag package stops at the first one, so
	// `orchestratord my.yaml --addr 0.0.0.0:9000` would otherwise start the embedded default
	// with --addr dropped too.
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "orchestratord: unexpected argument %q (a configuration file is given with --config); flags after it were not read\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, versionLine())
		return 0
	}
	if *printDefault {
		_, _ = stdout.Write(config.DefaultYAML())
		return 0
	}
	if *checkConfig != "" {
		fl.ConfigFile = *checkConfig
		cfg, err := config.Load(fl.Merge(config.FromEnv(os.LookupEnv)))
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", *checkConfig, err)
			return 2
		}
		for _, w := range cfg.Warnings() {
			fmt.Fprintf(stderr, "%s: warning: %s\n", *checkConfig, w)
		}
		fmt.Fprintf(stdout, "%s: ok: %s\n", *checkConfig, cfg.Summary())
		return 0
	}
	cfg, err := config.Load(fl.Merge(config.FromEnv(os.LookupEnv)))
	if err != nil {
		fmt.Fprintln(stderr, "orchestratord:", err)
		return 2
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if limit, ok, pct, okGC := cfg.Server.RuntimeSettings(os.LookupEnv); ok || okGC {
		if ok {
			debug.SetMemoryLimit(limit)
		}
		if okGC {
			debug.SetGCPercent(pct)
		}
		log.Info("go runtime memory settings", "memory_limit_bytes", debug.SetMemoryLimit(-1), "gc_percent_set", okGC, "gc_percent", pct)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first SIGINT or SIGTERM starts the graceful shutdown; the signals' default action
	// is then restored, so that a second one stops the daemon at once (an operator's second
	// Ctrl-C), as a kill -9 would: managed engines die with it (Pdeathsig), the journal keeps
	// what was admitted.
	// (Unregistered first on the way out: a return without a signal ends ctx too.)
	defer context.AfterFunc(ctx, func() {
		stop()
		log.Info("signal received: shutting down gracefully; a second SIGINT or SIGTERM stops the daemon at once")
	})()
	// SIGHUP reloads the keys file; streams and requests in flight keep their keys. It is
	// caught from here on: one sent while the daemon starts (a service manager's reload right
	// after its start) is held, and reloads the keys once the daemon runs, instead of killing
	// it by the signal's default action.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tp, stopTracing, err := tracing.Setup(ctx, os.Getenv, func() string { v, _ := buildInfo(); return v }())
	if err != nil {
		fmt.Fprintln(stderr, "orchestratord:", err)
		return 2
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn("flushing traces", "err", err)
		}
	}()
	if tracing.Enabled(os.Getenv) {
		log.Info("tracing on: exporting spans over OTLP/HTTP")
	}
	if beforeStart != nil {
		beforeStart()
	}
	// One daemon per state directory: a second would rewrite the first one's journal.
	lock, err := statelock.Lock(cfg.StateDir, "state_dir")
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	defer func() { _ = lock.Close() }()
	// The state directory's lock covers a journal dir that is the state directory itself: a
	// second lock of the same file would conflict with the first (flock is per open file).
	if cfg.Journal.EnabledOrDefault() && !sameDir(cfg.Journal.Dir, cfg.StateDir) {
		// journal.dir may lie outside the state directory (another disk): two daemons with
		// their own state_dir and one journal dir would rewrite each other's segment. Locked
		// inside the state directory too, where it costs a second LOCK file and nothing else.
		jlock, err := statelock.Lock(cfg.Journal.Dir, "journal dir")
		if err != nil {
			log.Error("start-up failed", "err", err)
			return 1
		}
		defer func() { _ = jlock.Close() }()
	}
	a, err := app.New(cfg, app.Options{Logger: log, TracerProvider: tp})
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	go func() {
		for {
			select {
			case <-hup:
				_ = a.ReloadKeys() // logged; a bad file keeps the current keys
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := a.Run(ctx); err != nil {
		log.Error("orchestratord failed", "err", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	// Records logged with a context that carries a span get its trace_id and span_id.
	if format == "json" {
		return slog.New(tracing.LogHandler(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(tracing.LogHandler(slog.NewTextHandler(w, opts)))
}

// sameDir reports whether a and b name one directory (after making them absolute).
func sameDir(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}
