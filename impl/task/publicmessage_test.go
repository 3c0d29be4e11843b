package task

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/orchestratord/orchestratord/engine"
)

// A task's error names no network address (the engine's host and port are the operator's);
// the log keeps them (ErrorInfo.Detail).
func TestPublicMessage(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 8000}
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"dial", engine.Errorf(engine.KindPoolUnavailable, "vllm: send completion: %w",
			&net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}),
			"unavailable: vllm: send completion: dial: connect: connection refused"},
		{"reset", engine.Errorf(engine.KindWorkerReset, "vllm: read: %w",
			&net.OpError{Op: "read", Net: "tcp", Source: src, Addr: addr, Err: syscall.ECONNRESET}),
			"reset: vllm: read: read: connection reset by peer"},
		{"dns", engine.Errorf(engine.KindPoolUnavailable, "tgi: send: %w",
			&net.DNSError{Err: "no such host", Name: "gpu-7.internal", Server: "10.0.0.2:53"}),
			"unavailable: tgi: send: lookup: no such host"},
		{"no network error", engine.Errorf(engine.KindInvalidRequest, "context too long"), "invalid_request: context too long"},
		{"plain", errors.New("boom"), "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := publicMessage(tt.err)
			if got != tt.want {
				t.Errorf("publicMessage = %q, want %q", got, tt.want)
			}
			for _, leak := range []string{"10.0.0.7", "8000", "40000", "gpu-7.internal", "10.0.0.2"} {
				if tt.name != "no network error" && tt.name != "plain" && strings.Contains(got, leak) {
					t.Errorf("%q shows %s", got, leak)
				}
			}
		})
	}
}
