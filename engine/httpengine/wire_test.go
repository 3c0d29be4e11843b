package httpengine

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// readWire reads the answer in raw with a wire of bufSize bytes (the connection giving one
// byte per read when oneByte), the body through ReadSlice or, when !slices, Read.
func readWire(raw []byte, bufSize int, oneByte, slices bool) (head *wireHead, body []byte, w *wire, err error) {
	src := io.Reader(bytes.NewReader(raw))
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	w = &wire{c: src, buf: make([]byte, bufSize)}
	resp, err := w.readHead()
	if err != nil {
		return nil, nil, w, err
	}
	resp.Body = io.NopCloser(w)
	defer resp.Body.Close()
	head = &wireHead{Status: resp.Status, StatusCode: resp.StatusCode, Proto: resp.Proto, Header: resp.Header,
		ContentLength: resp.ContentLength, Close: resp.Close}
	for {
		var p []byte
		if slices {
			p, err = w.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				err = nil
			}
		} else {
			var b [7]byte
			var n int
			n, err = w.Read(b[:])
			p = b[:n]
		}
		body = append(body, p...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return head, body, w, err
		}
	}
}

// wireHead is what a test checks of an answer's head.
type wireHead struct {
	Status        string
	StatusCode    int
	Proto         string
	Header        http.Header
	ContentLength int64
	Close         bool
}

func TestWire(t *testing.T) {
	const chunkedHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	long := strings.Repeat("v", 300)
	tests := []struct {
		name    string
		raw     string
		status  int
		body    string
		err     string // substring of the error; "" none
		ended   bool   // read to its end with nothing after it (the connection can be kept)
		after   bool   // bytes follow the body (unseen when they come a byte per read)
		close   bool
		headErr bool
	}{
		{name: "chunked", raw: chunkedHead + "6\r\ndata: \r\n3\r\nx\n\n\r\n0\r\n\r\n", status: 200, body: "data: x\n\n", ended: true},
		{name: "chunk extensions", raw: chunkedHead + "6;a=b;c=\"d\"\r\ndata: \r\n3;x\r\nx\n\n\r\n1 \t\r\n!\r\n0;last\r\n\r\n", status: 200, body: "data: x\n\n!", ended: true},
		{name: "space before an extension", raw: chunkedHead + "3 ;x\r\nabc\r\n0\r\n\r\n", status: 200, err: "invalid byte in chunk length"},
		{name: "upper-case hex", raw: chunkedHead + "0A\r\n0123456789\r\n0\r\n\r\n", status: 200, body: "0123456789", ended: true},
		{name: "trailers", raw: chunkedHead + "2\r\nok\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n", status: 200, body: "ok", ended: true},
		{name: "bytes after the body", raw: chunkedHead + "2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n", status: 200, body: "ok", after: true},
		{name: "not hex", raw: chunkedHead + "2\r\nok\r\nzz\r\n", status: 200, body: "ok", err: "invalid byte in chunk length"},
		{name: "empty size", raw: chunkedHead + "\r\nok\r\n", status: 200, err: "empty hex number"},
		{name: "size too large", raw: chunkedHead + "10000000000000000\r\n", status: 200, err: "too large"},
		{name: "size over int64", raw: chunkedHead + "8000000000000000\r\n", status: 200, err: "too large"},
		// From 2^62 on net/http refuses a length (it doubles it in an int64); so does wire.
		{name: "size at 2^62", raw: chunkedHead + "4000000000000000\r\nabc", status: 200, err: "too large"},
		{name: "size below 2^62", raw: chunkedHead + "3fffffffffffffff\r\nabc", status: 200, body: "abc", err: "unexpected EOF"},
		{name: "bare LF", raw: chunkedHead + "2\nok\r\n0\r\n\r\n", status: 200, err: "bare LF"},
		{name: "CR inside the line", raw: chunkedHead + "2\r;x\r\nok\r\n0\r\n\r\n", status: 200, err: "invalid CR"},
		{name: "no CRLF after data", raw: chunkedHead + "2\r\nokX\r\n0\r\n\r\n", status: 200, body: "ok", err: "malformed chunked encoding"},
		{name: "cut in a chunk", raw: chunkedHead + "5\r\nabc", status: 200, body: "abc", err: "unexpected EOF"},
		{name: "cut in a size line", raw: chunkedHead + "3\r\nabc\r\n1", status: 200, body: "abc", err: "unexpected EOF"},
		{name: "cut before the last chunk", raw: chunkedHead + "3\r\nabc\r\n", status: 200, body: "abc", err: "unexpected EOF"},
		{name: "size line longer than the buffer", raw: chunkedHead + "1;" + long + "\r\na\r\n0\r\n\r\n", status: 200, err: "chunk line too long"},
		{name: "too much non-data", raw: chunkedHead + strings.Repeat("1;"+strings.Repeat("e", 40)+"\r\na\r\n", 1000) + "0\r\n\r\n", status: 200,
			body: strings.Repeat("a", 630), err: "too much non-data"},
		{name: "content-length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", status: 200, body: "hello", ended: true},
		{name: "content-length, more after", raw: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello", status: 200, body: "he", after: true},
		{name: "content-length cut", raw: "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", status: 200, body: "hello", err: "unexpected EOF"},
		{name: "content-length zero", raw: "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", status: 400, ended: true},
		{name: "content-lengths differ", raw: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", headErr: true, err: "multiple Content-Length"},
		{name: "bad content-length", raw: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", headErr: true, err: "bad Content-Length"},
		{name: "to the end", raw: "HTTP/1.1 200 OK\r\n\r\n" + long, status: 200, body: long, ended: true, close: true},
		{name: "no content", raw: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, ended: true},
		{name: "connection close", raw: "HTTP/1.1 500 Oops\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx", status: 500, body: "x", ended: true, close: true},
		{name: "HTTP/1.0", raw: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", ended: true, close: true},
		{name: "HTTP/1.0 keep-alive", raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", status: 200, body: "x", ended: true},
		{name: "LF-only head, folded field, long field", raw: "HTTP/1.1 200 OK\nX-A: 1\n  2\nX-Long: " + long + long + long + long + "\nContent-Length: 1\n\nx",
			status: 200, body: "x", ended: true},
		{name: "unsupported transfer encoding", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", headErr: true, err: "unsupported transfer encoding"},
		{name: "malformed status line", raw: "HTTP/1.1\r\n\r\n", headErr: true, err: "malformed HTTP response"},
		{name: "no space after the version", raw: "HTTP/1.1200 OK\r\n\r\n", headErr: true, err: "malformed HTTP status code"},
		{name: "malformed status code", raw: "HTTP/1.1 20 OK\r\n\r\n", headErr: true, err: "malformed HTTP status code"},
		{name: "malformed version", raw: "HTTP/2.0 200 OK\r\n\r\n", headErr: true, err: "malformed HTTP version"},
		{name: "malformed field", raw: "HTTP/1.1 200 OK\r\nNo colon\r\n\r\n", headErr: true, err: "malformed MIME header line"},
		{name: "head cut", raw: "HTTP/1.1 200 OK\r\nContent-Ty", headErr: true, err: "unexpected EOF"},
		{name: "nothing", raw: "", headErr: true, err: "unexpected EOF"},
	}
	for _, tt := range tests {
		for _, mode := range []struct {
			name            string
			buf             int
			oneByte, slices bool
		}{{"slices", 1024, false, true}, {"reads", 1024, false, false}, {"one byte, 64", 64, true, true}, {"one byte reads, 64", 64, true, false}} {
			if tt.name == "size line longer than the buffer" && mode.buf < 1024 {
				continue // the head's lines are assembled beside a small buffer, size lines are not
			}
			t.Run(tt.name+"/"+mode.name, func(t *testing.T) {
				buf := mode.buf
				if strings.HasPrefix(tt.name, "size line longer") {
					buf = 128
				}
				resp, body, w, err := readWire([]byte(tt.raw), buf, mode.oneByte, mode.slices)
				if tt.headErr {
					if resp != nil || err == nil || !strings.Contains(err.Error(), tt.err) {
						t.Fatalf("head: %v, %v; want error %q", resp, err, tt.err)
					}
					return
				}
				if err != nil && (tt.err == "" || !strings.Contains(err.Error(), tt.err)) || err == nil && tt.err != "" {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				if resp.StatusCode != tt.status || string(body) != tt.body {
					t.Fatalf("status %d body %q, want %d %q", resp.StatusCode, body, tt.status, tt.body)
				}
				if got := w.ended(); got != (tt.ended || tt.after && mode.oneByte) {
					t.Errorf("ended = %v, want %v", got, tt.ended)
				}
				if resp.Close != tt.close {
					t.Errorf("Close = %v, want %v", resp.Close, tt.close)
				}
			})
		}
	}
}

func TestWireHeader(t *testing.T) {
	raw := "HTTP/1.1 429 Too Many Requests\r\ncontent-type:  application/json \r\nRetry-After: 3\r\nX-A: 1\r\nx-a: 2\r\nX-F: a\r\n\tb\r\nContent-Length: 2\r\n\r\n{}"
	resp, body, _, err := readWire([]byte(raw), 32, true, true)
	if err != nil {
		t.Fatal(err)
	}
	want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Body.Close()
	if resp.Status != want.Status || resp.StatusCode != want.StatusCode || resp.Proto != want.Proto || string(body) != "{}" {
		t.Fatalf("got %q %d %q %q, want %q %d %q", resp.Status, resp.StatusCode, resp.Proto, body, want.Status, want.StatusCode, want.Proto)
	}
	for _, k := range []string{"Content-Type", "Retry-After", "X-A", "Content-Length"} {
		if g, w := strings.Join(resp.Header[k], "|"), strings.Join(want.Header[k], "|"); g != w {
			t.Errorf("%s = %q, net/http reads %q", k, g, w)
		}
	}
	if g := resp.Header.Get("X-F"); g != "a b" {
		t.Errorf("folded X-F = %q, want %q", g, "a b")
	}
	if resp.ContentLength != 2 {
		t.Errorf("ContentLength = %d", resp.ContentLength)
	}
}

// FuzzWireChunked reads a chunked body with wire and with net/http: what one reads the other
// reads, and where one fails the other does (trailer fields aside, which wire drops unread).
func FuzzWireChunked(f *testing.F) {
	f.Add([]byte("6\r\ndata: \r\n3\r\nx\n\n\r\n0\r\n\r\n"), uint8(0), false)
	f.Add([]byte("6;ext=1\r\ndata: \r\n3 \r\nx\n\n\r\n0\r\nT: 1\r\n\r\n"), uint8(3), true)
	f.Add([]byte("2\r\nok\r\n0\r\n\r\nextra"), uint8(9), false)
	f.Add([]byte("1\nx\r\n"), uint8(1), true)
	f.Add([]byte("fffffffffffffffff\r\n"), uint8(2), false)
	f.Add([]byte("3\r\nab"), uint8(40), true)
	f.Fuzz(func(t *testing.T, chunked []byte, size uint8, oneByte bool) {
		head := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		raw := append([]byte(head), chunked...)
		bufSize := 16 + int(size)%200
		src := io.Reader(bytes.NewReader(raw))
		if oneByte {
			src = iotest.OneByteReader(src)
		}
		ref, err := http.ReadResponse(bufio.NewReaderSize(src, bufSize), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ref.Body.Close()
		want, werr := io.ReadAll(ref.Body)
		for _, slices := range []bool{true, false} {
			_, got, w, err := readWire(raw, bufSize, oneByte, slices)
			if errors.Is(err, errChunkTooLarge) && werr != nil && bytes.HasPrefix(want, got) {
				// A chunk of 2^62 bytes or more: wire refuses its length, where net/http may read
				// its data until the body ends short (see chunkSize). Both fail.
				continue
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("slices %v: body %q, net/http reads %q (err %v, net/http %v)", slices, got, want, err, werr)
			}
			if (err == nil) != (werr == nil) && w.st != stTrailer && w.st != stDone {
				t.Fatalf("slices %v: err = %v, net/http: %v", slices, err, werr)
			}
		}
	})
}

// TestWireEndNow: endNow reads what came after an answer's final event without waiting, and
// tells whether the body's end is there with nothing after it.
func TestWireEndNow(t *testing.T) {
	tests := []struct {
		name    string
		parts   []string // sent after the final event, endNow called once each has come
		want    []bool   // ended after each part
		wantErr error    // after the last part
	}{
		{name: "the end already there", parts: []string{"0\r\n\r\n"}, want: []bool{true}},
		{name: "the end later", parts: []string{"", "0\r\n\r\n"}, want: []bool{false, true}},
		{name: "the end in pieces", parts: []string{"0\r\n", "\r", "\n"}, want: []bool{false, false, true}},
		{name: "a trailer", parts: []string{"0\r\nX-T: 1\r\n", "\r\n"}, want: []bool{false, true}},
		{name: "bytes after the end", parts: []string{"0\r\n\r\nHTTP/1.1"}, want: []bool{false}},
		{name: "more body after the final event", parts: []string{strings.Repeat(lastEventChunk, 1000)}, want: []bool{false}, wantErr: errTrailing},
		{name: "the engine hangs up", parts: []string{"0\r\n", hangUp}, want: []bool{false, false}, wantErr: io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			if _, err := io.WriteString(server, answerHead+lastEventChunk); err != nil {
				t.Fatal(err)
			}
			w := newPooledWire(client)
			defer w.release()
			resp, err := w.readHead()
			if err != nil {
				t.Fatal(err)
			}
			resp.Body = io.NopCloser(&w) // the wire is the body, read below
			defer resp.Body.Close()
			line, err := w.ReadSlice('\n')
			for err == nil && string(line) != "\n" {
				line, err = w.ReadSlice('\n')
			}
			if err != nil {
				t.Fatalf("reading the event: %v", err)
			}
			sent := int64(len(answerHead + lastEventChunk))
			var got error
			for i, part := range tc.parts {
				if part == hangUp {
					_ = server.Close()
				} else if _, err := io.WriteString(server, part); err != nil {
					t.Fatal(err)
				}
				sent += int64(len(part))
				// endNow never waits: call it until what was sent has been read (or the read
				// failed), as the kernel hands a large write over in parts.
				var ended bool
				waitFor(t, func() bool {
					ended, got = w.endNow()
					return got != nil || part != hangUp && w.n >= sent
				})
				if ended != tc.want[i] {
					t.Fatalf("after part %d: ended %v, want %v (err %v)", i, ended, tc.want[i], got)
				}
			}
			if !errors.Is(got, tc.wantErr) {
				t.Fatalf("error %v, want %v", got, tc.wantErr)
			}
		})
	}
}

// hangUp, as a part of TestWireEndNow, closes the engine's end of the connection.
const hangUp = "\x00hang up"

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

// FuzzWireHead reads an answer's head with wire and with net/http: a head net/http reads, wire
// reads too, with the same status and the same header fields (names canonical, values trimmed,
// folded lines joined). A field name with a space is the exception: net/http takes it as it
// is (go.dev/issue/34540), wire refuses the answer. Otherwise wire is the more lenient of the
// two (it takes any field name without spaces), so a head only wire reads is not a failure. The fields net/http rewrites as it reads
// them (Transfer-Encoding, Trailer, Content-Length beside chunked, Cache-Control from Pragma,
// Connection: close)
// are compared by what they mean instead: the body's framing and whether the connection closes.
func FuzzWireHead(f *testing.F) {
	f.Add([]byte("Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"), uint8(0), false)
	f.Add([]byte("content-type:  application/json \r\nRetry-After: 3\r\nX-A: 1\r\nx-a: 2\r\nX-F: a\r\n\tb\r\n"), uint8(7), true)
	f.Add([]byte("keep-alive: timeout=5, max=100\nserver: llama.cpp\nCONNECTION: close\nx-\u00e9: 1\n"), uint8(3), false)
	f.Add([]byte("Date: Wed, 02 Dec 2026 18:00:00 GMT\r\nVary: a\r\nvary: b\r\nContent-Length: 4\r\n"), uint8(90), true)
	f.Fuzz(func(t *testing.T, fields []byte, size uint8, oneByte bool) {
		raw := append([]byte("HTTP/1.1 200 OK\r\n"), fields...)
		raw = append(raw, "\r\n\r\n"...)
		want, werr := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
		if werr != nil {
			return
		}
		defer want.Body.Close()
		for k := range want.Header {
			if strings.ContainsAny(k, " \t") {
				return
			}
		}
		src := io.Reader(bytes.NewReader(raw))
		if oneByte {
			src = iotest.OneByteReader(src)
		}
		w := &wire{c: src, buf: make([]byte, 32+int(size))}
		got, err := w.readHead()
		if err != nil {
			t.Fatalf("wire: %v; net/http reads %q", err, want.Header)
		}
		got.Body = io.NopCloser(w) // the wire is the body, left unread
		defer got.Body.Close()
		if got.StatusCode != want.StatusCode || got.Status != want.Status || got.Close != want.Close ||
			got.ContentLength != want.ContentLength || !reflect.DeepEqual(got.TransferEncoding, want.TransferEncoding) {
			t.Fatalf("status %d %q, close %v, length %d, %q; net/http %d %q, %v, %d, %q", got.StatusCode, got.Status, got.Close,
				got.ContentLength, got.TransferEncoding, want.StatusCode, want.Status, want.Close, want.ContentLength, want.TransferEncoding)
		}
		g, h := got.Header.Clone(), want.Header.Clone()
		for _, k := range []string{"Transfer-Encoding", "Trailer", "Content-Length", "Cache-Control", "Connection"} {
			delete(g, k)
			delete(h, k)
		}
		if len(g) != len(h) || len(g) > 0 && !reflect.DeepEqual(g, h) {
			t.Fatalf("header %q, net/http reads %q", g, h)
		}
	})
}
