// Command orchestratord runs the daemon: flags and environment → configuration → app, until
// SIGINT or SIGTERM, then a graceful shutdown. With no --config it uses the embedded default
// (one managed llama.cpp pool on the tiny model under the state directory).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/orchestratord/orchestratord/impl/app"
	"github.com/orchestratord/orchestratord/impl/config"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

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
	checkConfig := fs.String("check-config", "", "load and validate this config file (with the environment and other flags), print a one-line summary and exit: 0 when valid, 2 naming the field when not")
	if err := fs.Parse(args); err != nil {
		return 2
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
		fmt.Fprintf(stdout, "%s: ok: %s\n", *checkConfig, cfg.Summary())
		return 0
	}
	cfg, err := config.Load(fl.Merge(config.FromEnv(os.LookupEnv)))
	if err != nil {
		fmt.Fprintln(stderr, "orchestratord:", err)
		return 2
	}
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	a, err := app.New(cfg, app.Options{Logger: log})
	if err != nil {
		log.Error("start-up failed", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
