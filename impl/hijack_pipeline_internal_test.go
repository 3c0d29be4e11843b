package impl

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratord/orchestratord/impl/metrics"
	"github.com/orchestratord/orchestratord/impl/task"
)

// A client that keeps one HTTP/1.1 connection and pipelines its next request behind each event
// stream gets its connection back with one prefixConn at most: closeHijacked wrapped the
// connection given back before once more per stream (each layer with a copy of the pipelined
// bytes, every Read walking them all) for the connection's whole life.
func TestPipelinedStreamsDoNotNestPrefixConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	go func() { _, _ = io.Copy(io.Discard, client) }() // the client reads every answer
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	s := NewServer(Options{Metrics: metrics.New(prometheus.NewRegistry())})
	var returned net.Conn
	s.ReturnConnections(func(c net.Conn) bool { returned = c; return true }, time.Hour)

	pipelined := []byte("GET /v1/pools/p1/health HTTP/1.1\r\nHost: x\r\n\r\n")
	conn := server
	const streams = 50
	for range streams {
		// One stream on conn (as openHijacked leaves it), complete, keep-alive answered,
		// with the client's next request already buffered behind it.
		tk := &task.Task{}
		st := &sseStream{
			r:         &sseResponse{s: s, t: tk},
			out:       streamWriter{conn: conn, timeout: time.Second},
			cur:       tk.Subscribe(0, false),
			hb:        time.AfterFunc(time.Hour, func() {}),
			stopWatch: func() {},
			complete:  true,
			keepAlive: true,
			pre:       append([]byte(nil), pipelined...),
		}
		s.streams.add()
		s.streams.attach(conn, st)
		s.opts.Metrics.StreamsOpen.Inc()
		returned = nil
		st.closeHijacked()
		if returned == nil {
			t.Fatal("the stream's connection was not given back")
		}
		// net/http reads the pipelined request from the connection given back (draining its
		// prefix), and serves the next stream on that same net.Conn.
		if pc, ok := returned.(*prefixConn); ok {
			pc.pre = pc.pre[len(pc.pre):]
		}
		conn = returned
	}
	depth := 0
	for c := conn; ; depth++ {
		pc, ok := c.(*prefixConn)
		if !ok {
			break
		}
		c = pc.Conn
	}
	if depth > 1 {
		t.Fatalf("after %d pipelined streams on one connection it is wrapped in %d prefixConn layers, want at most 1", streams, depth)
	}
}

// The bytes of a connection given back before that net/http had not read yet come after those
// it had read (the stream's pre): a client's pipelined requests keep their order.
func TestPrefixKeepsPipelinedOrder(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	s := NewServer(Options{Metrics: metrics.New(prometheus.NewRegistry())})
	var returned net.Conn
	s.ReturnConnections(func(c net.Conn) bool { returned = c; return true }, time.Hour)
	conn := &prefixConn{Conn: server, pre: []byte("B")} // "B" not read by net/http yet
	tk := &task.Task{}
	st := &sseStream{
		r: &sseResponse{s: s, t: tk}, out: streamWriter{conn: conn, timeout: time.Second},
		cur: tk.Subscribe(0, false), hb: time.AfterFunc(time.Hour, func() {}), stopWatch: func() {},
		complete: true, keepAlive: true, pre: []byte("A"), // "A" read by net/http before the stream
	}
	s.streams.add()
	s.streams.attach(conn, st)
	s.opts.Metrics.StreamsOpen.Inc()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	st.closeHijacked()
	pc, ok := returned.(*prefixConn)
	if !ok || pc.Conn != server {
		t.Fatalf("given back %T, want one prefixConn over the connection", returned)
	}
	if got := string(pc.pre); got != "AB" {
		t.Errorf("the connection reads %q first, want %q", got, "AB")
	}
}
