package impl_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/orchestratord/orchestratord/impl"
)

// BodyLimit leaves a request without a body as http.NoBody (nothing after it reads or keeps a
// buffer for it) and bounds every other body.
func TestBodyLimit(t *testing.T) {
	tests := []struct {
		name       string
		body       io.Reader // nil: no body
		length     int64     // -1: unknown (chunked)
		wantNoBody bool
		wantErr    bool // reading the body fails with *http.MaxBytesError
		wantRead   string
	}{
		{name: "no body", wantNoBody: true},
		{name: "small body", body: strings.NewReader("abc"), length: 3, wantRead: "abc"},
		{name: "chunked body over the limit", body: strings.NewReader("0123456789"), length: -1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/v1/tasks/x/stream", tt.body)
			if tt.body != nil {
				req.ContentLength = tt.length
			}
			e := echo.New()
			c := e.NewContext(req, httptest.NewRecorder())
			var body io.ReadCloser
			var read []byte
			var readErr error
			err := impl.BodyLimit(8)(func(c echo.Context) error {
				body = c.Request().Body
				read, readErr = io.ReadAll(body)
				return nil
			})(c)
			if err != nil {
				t.Fatalf("BodyLimit: %v", err)
			}
			if got := body == http.NoBody; got != tt.wantNoBody {
				t.Fatalf("body is http.NoBody: %v, want %v (%T)", got, tt.wantNoBody, body)
			}
			var tooLarge *http.MaxBytesError
			if got := errors.As(readErr, &tooLarge); got != tt.wantErr {
				t.Fatalf("read error %v, want a MaxBytesError: %v", readErr, tt.wantErr)
			}
			if !tt.wantErr && string(read) != tt.wantRead {
				t.Fatalf("read %q, want %q", read, tt.wantRead)
			}
		})
	}
}
