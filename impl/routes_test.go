package impl

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// Routes composes the middleware once per route, and every request, routed or not, passes
// the same chain in the same order as with echo's Use.
func TestRoutesApplyMiddlewareOncePerRoute(t *testing.T) {
	var applied int
	var trail []string
	mark := func(name string) echo.MiddlewareFunc {
		return func(next echo.HandlerFunc) echo.HandlerFunc {
			applied++
			return func(c echo.Context) error {
				trail = append(trail, name)
				return next(c)
			}
		}
	}
	e := echo.New()
	e.HTTPErrorHandler = HTTPErrorHandler(slog.New(slog.DiscardHandler))
	r := NewRoutes(e, Correlation(), mark("outer"), mark("inner"))
	handler := func(c echo.Context) error {
		trail = append(trail, "handler")
		return c.String(http.StatusOK, "ok")
	}
	r.GET("/a/:id", handler, mark("route"))
	r.POST("/a/:id", handler)
	if applied != 5 { // outer and inner for each route, and GET's own
		t.Fatalf("middleware applied %d times at registration, want 5", applied)
	}
	for _, c := range []struct {
		name, method, path string
		status             int
		trail              string
	}{
		{"routed", http.MethodGet, "/a/1", http.StatusOK, "outer inner route handler"},
		{"routed, no route middleware", http.MethodPost, "/a/2", http.StatusOK, "outer inner handler"},
		{"no such path", http.MethodGet, "/b", http.StatusNotFound, "outer inner"},
		{"no such method", http.MethodPut, "/a/1", http.StatusMethodNotAllowed, "outer inner"},
	} {
		t.Run(c.name, func(t *testing.T) {
			applied, trail = 0, nil
			for range 3 {
				trail = nil
				rec := httptest.NewRecorder()
				e.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
				if rec.Code != c.status {
					t.Fatalf("status %d, want %d: %s", rec.Code, c.status, rec.Body)
				}
				if rec.Header().Get(HeaderCorrelationID) == "" {
					t.Error("no correlation id")
				}
				if got := strings.Join(trail, " "); got != c.trail {
					t.Errorf("ran %q, want %q", got, c.trail)
				}
				if c.status >= 400 && !strings.Contains(rec.Body.String(), `"code"`) {
					t.Errorf("not the error envelope: %s", rec.Body)
				}
				if c.status == http.StatusMethodNotAllowed && rec.Header().Get("Allow") == "" {
					t.Error("a 405 without Allow")
				}
			}
			want := 0 // a routed request applies nothing
			if c.status >= 400 {
				want = 3 * 2 // no route: the chain, per request, as echo's Use does
			}
			if applied != want {
				t.Errorf("middleware applied %d times in 3 requests, want %d", applied, want)
			}
		})
	}
}
