package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"defaults", nil, ""},
		{"all", []string{"-addr", "127.0.0.1:9000", "-tokens", "8", "-max-tokens", "100", "-token-delay", "1ms",
			"-first-token-delay", "20ms", "-slots", "4", "-total-slots", "8", "-model", "m", "-exit-after", "1m"}, ""},
		{"localhost", []string{"-addr", "localhost:0"}, ""},
		{"ipv6 loopback", []string{"-addr", "[::1]:0"}, ""},
		{"any address refused", []string{"-addr", ":8080"}, "loopback"},
		{"public refused", []string{"-addr", "10.0.0.1:80"}, "loopback"},
		{"bad addr", []string{"-addr", "nope"}, "-addr"},
		{"negative tokens", []string{"-tokens", "-1"}, "-tokens"},
		{"negative delay", []string{"-token-delay", "-1ms"}, "delays"},
		{"negative slots", []string{"-slots", "-1"}, "-slots"},
		{"extra args", []string{"x"}, "unexpected"},
		{"fault", []string{"-fault", "cut", "-fault-after", "3"}, ""},
		{"slow first token", []string{"-fault", "slow-first-token", "-fault-delay", "2s"}, ""},
		{"unknown fault", []string{"-fault", "meltdown"}, "unknown fault"},
		{"negative fault-after", []string{"-fault", "cut", "-fault-after", "-1"}, "-fault-after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRunPrintsAddressAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-tokens", "2", "-token-delay", time.Microsecond.String()}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if !ok || !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("first stdout line %q", line)
	}
	resp, err := http.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != `{"status":"ok"}` {
		t.Fatalf("health %q", body)
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRunCrashFault: with -fault crash, the first generation's connection dies after
// -fault-after tokens and run returns errCrashed (the command exits 3), as a crashed engine.
func TestRunCrashFault(t *testing.T) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), []string{"-tokens", "5", "-fault", "crash", "-fault-after", "2"}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	base := strings.TrimPrefix(strings.TrimSpace(line), "listening on ")
	resp, err := http.Post(base+"/generate_stream", "application/json", strings.NewReader(`{"inputs":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr == nil || strings.Count(string(body), `"token"`) != 2 {
		t.Errorf("stream before the crash: %q, read error %v (want 2 tokens and a broken body)", body, rerr)
	}
	if err := <-done; !errors.Is(err, errCrashed) {
		t.Fatalf("run: %v, want errCrashed", err)
	}
	if resp, err := http.Get(base + "/health"); err == nil {
		resp.Body.Close()
		t.Error("the crashed simulator still answers")
	}
	http.DefaultClient.CloseIdleConnections()
}
