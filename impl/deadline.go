package impl

import (
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// BodyDeadline bounds how long a request may take to send its body: a read deadline of base
// plus the body's size (as declared, else limit) at minRate bytes per second, set on the
// connection before anything reads the body. A body that does not arrive in time fails the
// request with 400 INVALID_PARAMS (retriable).
//
// An error answered before the body was read to its end (401 and 403 among them: Auth runs
// before anything reads a body) closes the connection right after the answer (Connection:
// close) without reading the rest: net/http would otherwise read up to 256 KiB of it first,
// which is how an unauthenticated client that never sent its body held a connection and a
// goroutine.
//
// Requests without a body get no deadline: once a body is consumed, net/http watches the
// connection for the client going away (and clears the deadline), and a read deadline there
// would cancel a long stream.
func BodyDeadline(limit int64, base time.Duration, minRate int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
				return next(c)
			}
			size := limit
			if r.ContentLength > 0 && r.ContentLength < limit {
				size = r.ContentLength
			}
			wait := base + time.Duration(float64(size)/float64(minRate)*float64(time.Second))
			rc := http.NewResponseController(c.Response())
			if err := rc.SetReadDeadline(time.Now().Add(wait)); err != nil {
				// Not a connection (a recorder in tests): nothing to bound.
				return next(c)
			}
			body := &watchedBody{ReadCloser: r.Body}
			r.Body = body
			err := next(c)
			if err == nil {
				return nil
			}
			if !body.eof.Load() {
				// After the answer, net/http closes the body, which reads what is left (up to
				// 256 KiB); a deadline already passed ends that read, and the connection, at once.
				c.Response().Header().Set(echo.HeaderConnection, "close")
				_ = rc.SetReadDeadline(time.Now())
			}
			if body.timedOut.Load() {
				return &Error{Code: "INVALID_PARAMS", Retriable: true,
					Message: "body: not received within " + wait.Round(time.Millisecond).String() +
						" (server.body_read_timeout plus its size at server.body_min_bytes_per_second)"}
			}
			return err
		}
	}
}

// watchedBody records whether the body was read to its end, and whether a read hit the
// deadline. The atomics keep a handler that reads from another goroutine race-free.
type watchedBody struct {
	io.ReadCloser
	eof, timedOut atomic.Bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.eof.Store(true)
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.timedOut.Store(true)
	}
	return n, err
}
