package app_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/llamacpp/llamatest"
	"github.com/orchestratord/orchestratord/internal/gguf"
)

// hostProxy stands for a remote host: it forwards a loopback port to a llama-server, and
// cut() drops every connection and stops listening, as a host that dies does.
type hostProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newHostProxy(t *testing.T, target string) *hostProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hostProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); up.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() { p.cut(); p.wg.Wait() })
	return p
}

func (p *hostProxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *hostProxy) cut() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// TestExternalReplicasRealEngines: external replicas on several loopback "hosts" serve like
// managed ones: tasks spread over them, and when one host dies while tasks stream, none
// fails and every text is the model's text.
func TestExternalReplicasRealEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("real engines")
	}
	bin, ok := llamatest.ServerPath()
	if !ok {
		t.Skip(llamatest.SkipMessage)
	}
	state := t.TempDir()
	model := filepath.Join(state, "med.gguf")
	opts := gguf.DefaultOptions()
	opts.Embd, opts.Layers, opts.FF, opts.Heads = 256, 4, 512, 4
	if err := gguf.WriteFile(model, opts); err != nil {
		t.Fatal(err)
	}
	var hosts []*hostProxy
	var urls []string
	for range 3 {
		base := llamatest.Start(t, model, "-np", "1")
		h := newHostProxy(t, strings.TrimPrefix(base, "http://"))
		hosts = append(hosts, h)
		urls = append(urls, fmt.Sprintf("{name: host%d, url: %q}", len(urls), h.url()))
	}
	d := startDaemonYAML(t, fmt.Sprintf(`
addr: 127.0.0.1:0
state_dir: %s
llama_server: %s
admission: {capacity: 64, policy: reject}
shutdown_grace: 2s
pools:
  - id: default
    engine: llamacpp
    model_ref: med.gguf
    model_id: med
    ctx_max: 2048
    slots: 1
    replicas: [%s]
`, state, bin, strings.Join(urls, ", ")))
	for i := 0; ; i++ {
		r, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
		if err == nil && r.JSON200 != nil && r.JSON200.Replicas != nil && readyReplicas(*r.JSON200.Replicas) == 3 {
			break
		}
		if i > 300 {
			t.Fatalf("three replicas never became ready: %v %s", err, r.Body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	const prompt = "Once upon a time"
	_, want, _ := d.run(t, uuid.New(), prompt, 48)
	count := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	texts := make(chan string, 12)
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, text, last := d.run(t, uuid.New(), prompt, 48)
			if last.event != "end" {
				t.Errorf("task ended %s %s", last.event, last.data)
			}
			texts <- text
			if p := d.placement(t, id); p != nil {
				mu.Lock()
				count[p.ReplicaId]++
				mu.Unlock()
			}
		}()
	}
	waitBusy(t, d, "host1")
	hosts[1].cut()
	wg.Wait()
	close(texts)
	for text := range texts {
		if text != want {
			t.Errorf("text %q, want %q", text, want)
		}
	}
	if !strings.Contains(d.logs.String(), "replica failed the task; placing it again") {
		t.Error("no task was running on the host that died: the test proved nothing")
	}
	if count["host0"] == 0 || count["host2"] == 0 {
		t.Errorf("tasks did not spread over the hosts: %v", count)
	}
	r, err := d.c.GetPoolHealthWithResponse(context.Background(), "default", nil)
	if err != nil || r.JSON200 == nil || !r.JSON200.Ready {
		t.Fatalf("the pool with two hosts left is not ready: %v %s", err, r.Body)
	}
}
