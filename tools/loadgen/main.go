package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/orchestratord/orchestratord/tools/loadgen/load"
)

// Exit statuses.
const (
	exitOK        = 0
	exitFailed    = 1
	exitUsage     = 2
	exitNoSuccess = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is the parsed command line.
type config struct {
	opts     load.Options
	jsonPath string
	logLevel slog.Level
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	o := &c.opts
	var target string
	stream := true
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.URL, "url", "", "target base URL, loopback only (e.g. http://127.0.0.1:8080)")
	fs.StringVar(&target, "target", "", fmt.Sprintf("what to load: %v", load.Targets))
	fs.IntVar(&o.Concurrency, "concurrency", load.DefaultConcurrency, "closed-loop workers, or the open loop's cap on requests in flight")
	fs.Float64Var(&o.Rate, "rate", 0, "open loop at this many requests/s (0 = closed loop)")
	fs.IntVar(&o.Requests, "requests", load.DefaultRequests, fmt.Sprintf("maximum requests issued (1..%d)", load.MaxRequests))
	fs.DurationVar(&o.Duration, "duration", load.DefaultDuration, fmt.Sprintf("maximum time issuing requests (up to %v)", load.MaxDuration))
	fs.DurationVar(&o.Grace, "grace", load.DefaultGrace, "time in-flight requests may finish after -duration before being aborted")
	fs.DurationVar(&o.Timeout, "timeout", load.DefaultTimeout, "per-request timeout (orchd-stream: POST and stream together)")
	fs.IntVar(&o.Tokens, "tokens", 0, fmt.Sprintf("max_tokens / n_predict (0 = 1 for orchd-admit and -stream=false, %d for streams)", load.DefaultStreamTokens))
	fs.BoolVar(&stream, "stream", true, "stream responses (llamacpp-stream, openai-stream); false measures one JSON response")
	fs.StringVar(&o.APIKey, "api-key", "", "X-API-Key for orchestratord, Authorization: Bearer otherwise (default $LOADGEN_API_KEY)")
	fs.StringVar(&o.Model, "model", load.DefaultModel, "orchestratord model_ref, or the OpenAI model name")
	fs.StringVar(&o.Prompt, "prompt", load.DefaultPrompt, "prompt text")
	fs.StringVar(&o.Label, "label", "", "scenario label copied into the result")
	fs.StringVar(&c.jsonPath, "json", "", `write the result as JSON to this path ("-" for stdout)`)
	fs.StringVar(&o.Engine, "engine", load.DefaultEngine, "orchestratord task engine")
	fs.StringVar(&o.Priority, "priority", load.DefaultPriority, "orchestratord task priority (interactive|batch)")
	fs.IntVar(&o.Ctx, "ctx", load.DefaultCtx, "orchestratord task ctx")
	fs.Int64Var(&o.DeadlineMs, "deadline-ms", load.DefaultDeadlineMs, "orchestratord task deadline_ms")
	fs.IntVar(&o.Sessions, "sessions", 0, "distinct orchestratord session ids (0 = one per -concurrency)")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelWarn, "log level of stderr logs")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.URL == "" || target == "" {
		return c, errors.New("-url and -target are required")
	}
	o.Target = load.Target(target)
	o.NoStream = !stream
	if o.APIKey == "" {
		o.APIKey = getenv("LOADGEN_API_KEY")
	}
	if err := o.Normalize(); err != nil {
		return c, err
	}
	return c, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintln(stderr, "loadgen:", err)
		return exitUsage
	}
	c.opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: c.logLevel}))
	res, err := load.Run(ctx, c.opts)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return exitUsage
	}
	summaryOut := stdout
	if c.jsonPath == "-" {
		summaryOut = stderr
	}
	_ = load.WriteSummary(summaryOut, res)
	if c.jsonPath != "" {
		if err := writeJSON(c.jsonPath, stdout, res); err != nil {
			fmt.Fprintln(stderr, "loadgen:", err)
			return exitFailed
		}
	}
	if res.Succeeded == 0 {
		return exitNoSuccess
	}
	return exitOK
}

func writeJSON(path string, stdout io.Writer, res *load.Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
