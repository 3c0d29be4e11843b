package httpengine

import (
	"bytes"
	"io"
	"testing"
)

// BenchmarkReadHead reads the head of a streamed answer as engines send it: the status line and
// the header fields of llama-server, of uvicorn (vLLM, SGLang) and of Go's net/http (the
// simulator), each read once per generation.
func BenchmarkReadHead(b *testing.B) {
	for _, tc := range []struct{ name, head string }{
		{"llama-server", "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Type: text/event-stream\r\n" +
			"Server: llama.cpp\r\nTransfer-Encoding: chunked\r\nAccess-Control-Allow-Origin: \r\n\r\n"},
		{"uvicorn", "HTTP/1.1 200 OK\r\ndate: Wed, 02 Dec 2026 18:00:00 GMT\r\nserver: uvicorn\r\n" +
			"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"},
		{"net/http", "HTTP/1.1 200 OK\r\nCache-Control: no-cache\r\nContent-Type: text/event-stream\r\n" +
			"Date: Wed, 02 Dec 2026 18:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			raw := []byte(tc.head)
			src := bytes.NewReader(raw)
			w := &wire{c: src, buf: make([]byte, respBufBytes)}
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(raw)
				w.r, w.d, w.x, w.w, w.err = 0, 0, 0, 0, nil
				resp, err := w.readHead()
				if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") == "" {
					b.Fatalf("%v %v", resp, err)
				}
				resp.Body = io.NopCloser(w) // the wire is the body, left unread
				_ = resp.Body.Close()
			}
		})
	}
}
