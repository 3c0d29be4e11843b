package llamacpp

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/engine"
)

// TestIdleTimeoutWhateverTheURLSpelling: a base URL that the configuration accepts but
// that the kept-alive connections do not serve (a scheme in capitals, a query) still gets the
// idle timeout: a server that never answers is a decode timeout, not a generation that hangs
// until the caller gives up.
func TestIdleTimeoutWhateverTheURLSpelling(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { waitGone(r) }))
	defer srv.Close()
	for _, base := range []string{
		srv.URL,
		strings.Replace(srv.URL, "http://", "HTTP://", 1),
		strings.Replace(srv.URL, "http://", "Http://", 1),
	} {
		t.Run(base, func(t *testing.T) {
			r := New(Options{BaseURL: base, IdleTimeout: 50 * time.Millisecond})
			t.Cleanup(r.client.CloseIdleConnections)
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			start := time.Now()
			_, err := r.Generate(ctx, engine.Request{Prompt: "p", MaxTokens: 4}, func(engine.Token) error { return nil })
			if k := engine.KindOf(err); k != engine.KindDecodeTimeout {
				t.Fatalf("after %v: err = %v (kind %v), want a decode timeout", time.Since(start).Round(time.Millisecond), err, k)
			}
		})
	}
}
