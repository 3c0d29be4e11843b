// Command gorelay is the benchmark's Go reference relay: net/http's server in front of
// httputil.ReverseProxy, each response flushed as its bytes arrive, keep-alive to the
// upstream. It is what a Go program that only relays costs on the machine, next to nginx (a C
// relay) and orchestratord (a Go daemon that also admits, journals and fans out): the share of
// orchestratord's cost that any net/http relay pays. It is not part of the product.
//
//	gorelay -addr 127.0.0.1:8081 -upstream http://127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gorelay:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("gorelay", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream base URL, e.g. http://127.0.0.1:8080")
	idle := fs.Int("idle-conns", 1024, "idle keep-alive connections kept to the upstream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	up, err := url.Parse(*upstream)
	if err != nil || up.Scheme == "" || up.Host == "" {
		return fmt.Errorf("-upstream %q: want a base URL like http://127.0.0.1:8080", *upstream)
	}
	proxy := newProxy(up, *idle)
	proxy.ErrorLog = slog.NewLogLogger(slog.NewTextHandler(os.Stderr, nil), slog.LevelWarn)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintln(os.Stderr, "gorelay listening on", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newProxy relays every request to up, flushing each response write as it arrives.
func newProxy(up *url.URL, idle int) *httputil.ReverseProxy {
	proxy := httputil.NewSingleHostReverseProxy(up)
	proxy.FlushInterval = -1 // flush after each write: a token reaches the client as it arrives
	proxy.Transport = &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        idle,
		MaxIdleConnsPerHost: idle,
		IdleConnTimeout:     2 * time.Minute,
		DisableCompression:  true,
	}
	return proxy
}
