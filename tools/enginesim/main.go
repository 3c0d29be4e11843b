package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/orchestratord/orchestratord/tools/enginesim/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		if errors.Is(err, errCrashed) {
			fmt.Fprintln(os.Stderr, "enginesim:", err)
			os.Exit(3)
		}
		fmt.Fprintln(os.Stderr, "enginesim:", err)
		os.Exit(1)
	}
}

// errCrashed is run's error after an injected crash; the command exits with status 3.
var errCrashed = errors.New("crashed: injected fault")

// config is the command line.
type config struct {
	addr      string
	exitAfter time.Duration
	fault     string
	logLevel  slog.Level
	sim       sim.Options
}

func parseFlags(args []string, stderr io.Writer) (c config, err error) {
	fs := flag.NewFlagSet("enginesim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:0", "listen address (loopback only; port 0 picks a free port)")
	fs.IntVar(&c.sim.Tokens, "tokens", 0, "tokens per request; 0 uses the request's n_predict / max_tokens")
	fs.IntVar(&c.sim.MaxTokens, "max-tokens", sim.DefaultMaxTokens, "cap on tokens per request")
	fs.IntVar(&c.sim.DefaultTokens, "default-tokens", sim.DefaultTokens, "tokens when a request names none")
	fs.DurationVar(&c.sim.FirstTokenDelay, "first-token-delay", 0, "delay from slot acquisition to the first token")
	fs.DurationVar(&c.sim.TokenDelay, "token-delay", 0, "delay between tokens")
	fs.IntVar(&c.sim.Slots, "slots", 0, "concurrent generations; more wait for a slot (0 = unlimited)")
	fs.IntVar(&c.sim.TotalSlots, "total-slots", 0, "total_slots reported by /props (0 = -slots, or 64 when unlimited)")
	fs.StringVar(&c.sim.Model, "model", sim.DefaultModel, "model id reported by /v1/models")
	fs.IntVar(&c.sim.NCtx, "n-ctx", sim.DefaultNCtx, "n_ctx reported by /props")
	fs.StringVar(&c.fault, "fault", "", "inject a fault into every generation: overload, unavailable, slow-first-token, cut, malformed, crash, context-too-long")
	fs.IntVar(&c.sim.Fault.After, "fault-after", 0, "tokens sent before a cut, malformed frame or crash")
	fs.DurationVar(&c.sim.Fault.Delay, "fault-delay", 0, "extra delay before the first token of slow-first-token")
	fs.DurationVar(&c.exitAfter, "exit-after", 0, "stop by itself after this long (0 = run until signaled)")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level (debug logs every request)")
	if err = fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case c.sim.Tokens < 0, c.sim.MaxTokens < 1, c.sim.DefaultTokens < 1:
		return c, errors.New("-tokens must be >= 0, -max-tokens and -default-tokens >= 1")
	case c.sim.FirstTokenDelay < 0, c.sim.TokenDelay < 0, c.exitAfter < 0:
		return c, errors.New("delays and -exit-after must be >= 0")
	case c.sim.Slots < 0, c.sim.TotalSlots < 0:
		return c, errors.New("-slots and -total-slots must be >= 0")
	case c.sim.Fault.After < 0, c.sim.Fault.Delay < 0:
		return c, errors.New("-fault-after and -fault-delay must be >= 0")
	}
	if c.sim.Fault.Mode, err = sim.ParseFaultMode(c.fault); err != nil {
		return c, fmt.Errorf("-fault: %w", err)
	}
	if err := checkLoopback(c.addr); err != nil {
		return c, err
	}
	return c, nil
}

// checkLoopback refuses listen addresses that are not a loopback IP or "localhost".
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("-addr %q: only loopback addresses are allowed", addr)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: c.logLevel}))
	c.sim.Logger = logger
	crashed := make(chan struct{})
	var crashOnce sync.Once
	c.sim.OnCrash = func() { crashOnce.Do(func() { close(crashed) }) }
	if c.exitAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.exitAfter)
		defer cancel()
	}

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", c.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           sim.NewHandler(c.sim),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())
	logger.Info("enginesim started", "addr", ln.Addr().String(), "slots", c.sim.Slots,
		"tokens", c.sim.Tokens, "first_token_delay", c.sim.FirstTokenDelay, "token_delay", c.sim.TokenDelay)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-crashed:
		_ = srv.Close() // every connection dies at once, as with a crashed process
		_ = <-errc
		logger.Error("enginesim crashed (injected fault)")
		return errCrashed
	case <-ctx.Done():
	}
	// Streams end when their clients go; give them a moment, then cut them.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	_ = <-errc // http.ErrServerClosed after Shutdown
	logger.Info("enginesim stopped")
	return nil
}
