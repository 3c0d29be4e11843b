package httpengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

var errTestTooLong = errors.New("test: line too long")

// rawEngine answers one request per connection with a chunked text/event-stream whose body is
// written in pieces (one chunk each). Before piece k (k > 0) it waits for wait(k), so a test
// can make the reader empty the socket and wait between pieces.
func rawEngine(t *testing.T, pieces []string, wait func(k int)) string {
	t.Helper()
	return rawEngineCut(t, pieces, wait, false)
}

// rawEngineCut is rawEngine; with cut, the engine closes the connection after the last piece
// instead of ending the body (a crash).
func rawEngineCut(t *testing.T, pieces []string, wait func(k int), cut bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for { // requests on a kept connection
					if !readRequest(br) {
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
					for k, p := range pieces {
						if k > 0 && wait != nil {
							wait(k)
						}
						if p == "" {
							continue
						}
						if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(p), p); err != nil {
							return
						}
					}
					if cut {
						return
					}
					if _, err := io.WriteString(c, "0\r\n\r\n"); err != nil {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// readRequest reads a request's head and its body (Content-Length) from br: false when the
// connection failed or ended first.
func readRequest(br *bufio.Reader) bool {
	n := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return false
		}
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if line == "\r\n" {
			break
		}
	}
	_, err := io.CopyN(io.Discard, br, int64(n))
	return err == nil
}

// splitLines is what EachLine must hand out for body: its lines without their ends, then
// io.EOF, or io.ErrUnexpectedEOF when body ends inside a line, or errTestTooLong at the first
// line over max (max is at least the wire's buffer, so that short lines are never measured).
func splitLines(body string, maxLen int) (lines []string, end error) {
	for body != "" {
		i := strings.IndexByte(body, '\n')
		if i < 0 {
			if len(body) > maxLen {
				return lines, errTestTooLong
			}
			return lines, io.ErrUnexpectedEOF
		}
		line := body[:i+1]
		body = body[i+1:]
		if len(line) > maxLen {
			return lines, errTestTooLong
		}
		lines = append(lines, string(trimEOL([]byte(line))))
	}
	return lines, io.EOF
}

// eachLines collects what EachLine hands out of a Conns answer from an engine writing pieces.
func eachLines(t *testing.T, url string, maxLen int, fn func(n int)) (lines []string, err error) {
	t.Helper()
	p := NewConns(url, 4)
	defer p.CloseIdle()
	resp, err := p.Post(t.Context(), "/", "", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var long []byte
	err = EachLine(resp.Body.(SliceReader), maxLen, errTestTooLong, &long, func(line []byte) (bool, error) {
		lines = append(lines, string(line))
		if fn != nil {
			fn(len(lines))
		}
		return false, nil
	})
	return lines, err
}

func TestEachLine(t *testing.T) {
	long := strings.Repeat("y", 3000)
	tests := []struct {
		name   string
		pieces []string
		max    int
	}{
		{"frames", []string{"data: a\n\n", "data: b\n\n", "data: c\n\n"}, 4096},
		{"CRLF and a comment", []string{"data: a\r\n\r\n", ": ping\r\n", "data: b\r\n\r\n"}, 4096},
		{"lines across pieces", []string{"da", "ta: a\n", "\nda", "ta: b\n\n"}, 4096},
		{"many frames in one piece", []string{strings.Repeat("data: 0123456789\n\n", 200)}, 4096},
		{"a line longer than the buffer", []string{"data: " + long + "\n\n", "data: b\n\n"}, 4096},
		{"a long line across pieces", []string{"data: " + long[:1500], long[1500:] + "\n\n", "data: b\n\n"}, 4096},
		{"a line over the bound", []string{"data: a\n\n", "data: " + long + "\n\n"}, 2048},
		{"the body ends inside a line", []string{"data: a\n\n", "data: b"}, 4096},
		{"the body ends inside a line over the bound", []string{"data: a\n\n", "data: " + long[:1200]}, 1024},
		{"the body ends inside a long line over the bound", []string{"data: a\n\n", "data: " + long}, 2048},
		{"an empty body", nil, 4096},
	}
	for _, tt := range tests {
		body := strings.Join(tt.pieces, "")
		want, wantEnd := splitLines(body, tt.max)
		// Piece k is written once the reader has handed out the lines of the pieces before
		// it (then it has read the socket empty): every piece is a wait for the engine.
		linesBefore := make([]int, len(tt.pieces))
		for k := range tt.pieces {
			linesBefore[k] = strings.Count(strings.Join(tt.pieces[:k], ""), "\n")
		}
		t.Run(tt.name+"/waiting", func(t *testing.T) {
			seen := make(chan int, 1<<16)
			url := rawEngine(t, tt.pieces, func(k int) {
				for n := 0; n < linesBefore[k]; {
					select {
					case n = <-seen:
					case <-time.After(10 * time.Second):
						return // the reader stopped early: the comparison below says how
					}
				}
			})
			got, err := eachLines(t, url, tt.max, func(n int) { seen <- n })
			checkLines(t, got, err, want, wantEnd)
		})
		t.Run(tt.name+"/written at once", func(t *testing.T) {
			got, err := eachLines(t, rawEngine(t, tt.pieces, nil), tt.max, nil)
			checkLines(t, got, err, want, wantEnd)
		})
		t.Run(tt.name+"/pulled", func(t *testing.T) {
			var got []string
			var long []byte
			err := EachLine(bufio.NewReaderSize(strings.NewReader(body), 1024), tt.max, errTestTooLong, &long, func(line []byte) (bool, error) {
				got = append(got, string(line))
				return false, nil
			})
			checkLines(t, got, err, want, wantEnd)
		})
	}
}

func checkLines(t *testing.T, got []string, err error, want []string, wantEnd error) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") || len(got) != len(want) {
		t.Errorf("lines %q\nwant %q", got, want)
	}
	if !errors.Is(err, wantEnd) {
		t.Errorf("end %v, want %v", err, wantEnd)
	}
}

// TestEachLineStops: a callback that stops or fails ends EachLine at once, with nil or its
// error; the body's end that follows the final line is left for Close, which keeps the
// connection.
func TestEachLineStops(t *testing.T) {
	errStop := errors.New("stop here")
	for _, tt := range []struct {
		name string
		err  error
	}{{"stop", nil}, {"fail", errStop}} {
		t.Run(tt.name, func(t *testing.T) {
			url := rawEngine(t, []string{"data: a\n\n", "data: end\n\n"}, nil)
			p := NewConns(url, 4)
			defer p.CloseIdle()
			resp, err := p.Post(t.Context(), "/", "", []byte("{}"))
			if err != nil {
				t.Fatal(err)
			}
			var long []byte
			var got []string
			err = EachLine(resp.Body.(SliceReader), 4096, errTestTooLong, &long, func(line []byte) (bool, error) {
				got = append(got, string(line))
				if string(line) == "data: end" {
					return tt.err == nil, tt.err
				}
				return false, nil
			})
			if !errors.Is(err, tt.err) || strings.Join(got, "|") != "data: a||data: end" {
				t.Fatalf("lines %q, err %v", got, err)
			}
			Complete(resp.Body)
			if err := resp.Body.Close(); err != nil {
				t.Fatal(err)
			}
			resp, err = p.Post(t.Context(), "/", "", []byte("{}"))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if s := p.Stats(); s.Dialed != 1 || s.Reused != 1 {
				t.Errorf("the connection was not kept: %+v", s)
			}
		})
	}
}

// TestEachLineAbort: an Abort ends a push read that waits for the engine, with the deadline
// error, and a wait holds no buffer.
func TestEachLineAbort(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	url := rawEngine(t, []string{"data: a\n\n", "data: b\n\n"}, func(int) { <-release })
	p := NewConns(url, 4)
	defer p.CloseIdle()
	ab := new(Abort)
	resp, err := p.PostAbort(t.Context(), ab, "/", "", []byte("{}")) //nolint:bodyclose // closed by the deferred Close below
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	before := buffersHeld.Load()
	done := make(chan error, 1)
	go func() {
		var long []byte
		done <- EachLine(resp.Body.(SliceReader), 4096, errTestTooLong, &long, func([]byte) (bool, error) { return false, nil })
	}()
	for buffersHeld.Load() != before-1 { // the wait gave the answer's buffer back
		select {
		case err := <-done:
			t.Fatalf("EachLine ended before the abort: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	ab.Cancel(errStopTest)
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("EachLine after an abort: %v", err)
	}
}

var errStopTest = errors.New("test abort")

// FuzzEachLine checks the pushed lines of an answer written in pieces of a fuzzed size against
// a plain split of its body.
func FuzzEachLine(f *testing.F) {
	f.Add([]byte("data: a\n\ndata: b\r\n\r\n"), uint16(3), uint16(2048))
	f.Add([]byte(strings.Repeat("data: xyz\n", 300)), uint16(700), uint16(1024))
	f.Add(append(bytes.Repeat([]byte("z"), 2500), '\n'), uint16(1000), uint16(2000))
	f.Fuzz(func(t *testing.T, body []byte, piece, bound uint16) {
		if len(body) > 8<<10 { // a piece is a system call each way: keep an input quick
			body = body[:8<<10]
		}
		size := 1 + int(piece)%4096
		maxLen := 1024 + int(bound)%8192
		var pieces []string
		for s := string(body); s != ""; {
			k := min(size, len(s))
			pieces = append(pieces, s[:k])
			s = s[k:]
		}
		want, wantEnd := splitLines(string(body), maxLen)
		got, err := eachLines(t, rawEngine(t, pieces, nil), maxLen, nil)
		checkLines(t, got, err, want, wantEnd)
	})
}

// TestEachLineConcurrent: many answers read at once by the pollers, each engine writing its
// frames in pieces that wait for the reader, hand out each answer's own lines in order; an
// engine that closes its connection after its last frame (its bytes and its end arrive
// together) ends its answer with io.ErrUnexpectedEOF.
func TestEachLineConcurrent(t *testing.T) {
	const streams = 40
	var pieces []string
	for k := range 30 {
		pieces = append(pieces, fmt.Sprintf("data: %d\n\n", k))
	}
	body := strings.Join(pieces, "")
	for _, cut := range []bool{false, true} {
		t.Run(fmt.Sprintf("cut=%v", cut), func(t *testing.T) {
			want, wantEnd := splitLines(body, 4096)
			if cut {
				wantEnd = io.ErrUnexpectedEOF
			}
			url := rawEngineCut(t, pieces, nil, cut)
			errs := make(chan error, streams)
			for range streams {
				go func() {
					p := NewConns(url, 1)
					defer p.CloseIdle()
					resp, err := p.Post(t.Context(), "/", "", []byte("{}"))
					if err != nil {
						errs <- err
						return
					}
					defer resp.Body.Close()
					var long []byte
					var got []string
					err = EachLine(resp.Body.(SliceReader), 4096, errTestTooLong, &long, func(line []byte) (bool, error) {
						got = append(got, string(line))
						return false, nil
					})
					switch {
					case !errors.Is(err, wantEnd):
						errs <- fmt.Errorf("end %w, want %w", err, wantEnd)
					case strings.Join(got, "|") != strings.Join(want, "|"):
						errs <- fmt.Errorf("lines %q, want %q", got, want)
					default:
						errs <- nil
					}
				}()
			}
			for range streams {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestEachLineContext: the end of the request's context ends a push read that waits for the
// engine.
func TestEachLineContext(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	url := rawEngine(t, []string{"data: a\n\n", "data: b\n\n"}, func(int) { <-release })
	p := NewConns(url, 4)
	defer p.CloseIdle()
	ctx, cancel := context.WithCancel(t.Context())
	resp, err := p.Post(ctx, "/", "", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var long []byte
	err = EachLine(resp.Body.(SliceReader), 4096, errTestTooLong, &long, func(line []byte) (bool, error) {
		if string(line) == "data: a" {
			cancel() // the engine's next frame waits: the read is waiting when ctx ends
		}
		return false, nil
	})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("EachLine after its context ended: %v", err)
	}
}
