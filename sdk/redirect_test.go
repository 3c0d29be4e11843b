package sdk_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/orchestratord/orchestratord/sdk"
)

// TestRedirectDoesNotCarryTheKeyToAnotherHost: a redirect to another host (a proxy or
// load balancer in front of the daemon that sends clients elsewhere, an open redirect) must not
// take the API key along. net/http drops Authorization on such a redirect, but forwards every
// other header: the SDK's X-API-Key went to whatever host the redirect named.
func TestRedirectDoesNotCarryTheKeyToAnotherHost(t *testing.T) {
	const key = "audit-secret-key-0123456789"
	var leaked atomic.Value
	leaked.Store("")
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store(r.Header.Get("X-API-Key") + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		http.Error(w, "no", http.StatusNotFound)
	}))
	defer elsewhere.Close()
	// The same server under another host name: localhost instead of 127.0.0.1.
	other := strings.Replace(elsewhere.URL, "127.0.0.1", "localhost", 1)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer front.Close()
	c, err := sdk.New(front.URL, sdk.Options{APIKey: key, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Capabilities(context.Background())
	if got := leaked.Load().(string); strings.Contains(got, key) {
		t.Fatalf("the API key reached %s, the host a redirect named", other)
	}
}
