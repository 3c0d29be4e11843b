package impl

import (
	"crypto/sha256"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/orchestratord/orchestratord/gen/api"
	"github.com/orchestratord/orchestratord/impl/tenant"
)

// TestRouteScopes: the contract names the scopes of every secured operation; a secured
// operation without x-scopes, or with an unknown scope, is refused at start-up.
func TestRouteScopes(t *testing.T) {
	spec, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	public, scopes, err := routeScopes(spec)
	if err != nil {
		t.Fatal(err)
	}
	for route, want := range map[string][]tenant.Scope{
		"POST /v1/tasks":                                 {tenant.ScopeTasks},
		"GET /v1/tasks/:id/stream":                       {tenant.ScopeTasks},
		"DELETE /v1/sessions/:id":                        {tenant.ScopeSessions},
		"POST /v1/artifacts":                             {tenant.ScopeArtifacts},
		"POST /v1/pools/:id/drain":                       {tenant.ScopeControl},
		"POST /v1/pools/:id/reload":                      {tenant.ScopeControl},
		"GET /v1/pools/:id/health":                       {tenant.ScopeControl},
		"GET /v1/capabilities":                           nil,
		"POST /v1/tasks/:id/cancel":                      {tenant.ScopeTasks},
		"GET /v1/artifacts/:id":                          {tenant.ScopeArtifacts},
		"GET /v1/sessions/:id":                           {tenant.ScopeSessions},
		"GET /v1/tasks/:id":                              {tenant.ScopeTasks},
		"POST /v1/pools/:id/replicas/:replica_id/drain":  {tenant.ScopeControl},
		"POST /v1/pools/:id/replicas/:replica_id/resume": {tenant.ScopeControl},
	} {
		if got := scopes[route]; len(got) != len(want) || (len(want) > 0 && got[0] != want[0]) {
			t.Errorf("%s: scopes %v, want %v", route, got, want)
		}
	}
	if public["GET /metrics"] || !public["GET /openapi.json"] {
		t.Errorf("public routes %v", public)
	}
	// /metrics is secured by configuration: optional, with the metrics scope when secured.
	if opt := optionalRoutes(spec); len(opt) != 1 || !opt["GET /metrics"] {
		t.Errorf("optionally secured routes %v, want GET /metrics alone", opt)
	}
	if got := scopes["GET /metrics"]; len(got) != 1 || got[0] != tenant.ScopeMetrics {
		t.Errorf("GET /metrics: scopes %v, want [metrics]", got)
	}

	for name, tc := range map[string]struct {
		ext  map[string]any
		want string
	}{
		"missing": {nil, "has no x-scopes"},
		"unknown": {map[string]any{"x-scopes": []any{"root"}}, "unknown scope"},
		"no list": {map[string]any{"x-scopes": "tasks"}, "must be a list"},
	} {
		t.Run(name, func(t *testing.T) {
			doc := &openapi3.T{Paths: openapi3.NewPaths(openapi3.WithPath("/x", &openapi3.PathItem{
				Get: &openapi3.Operation{Extensions: tc.ext}}))}
			if _, _, err := routeScopes(doc); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestSetRateLimitHeaders(t *testing.T) {
	h := http.Header{}
	SetRateLimitHeaders(h, []tenant.Window{
		{Limit: tenant.LimitRequests, Max: 30, Remaining: 29, Reset: 2 * time.Second},
		{Limit: tenant.LimitTokens, Max: 1000, Remaining: 0, Reset: 90*time.Second + 400*time.Microsecond},
	})
	for name, want := range map[string]string{
		"x-ratelimit-limit-requests": "30", "x-ratelimit-remaining-requests": "29", "x-ratelimit-reset-requests": "2s",
		"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m30s",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	SetRateLimitHeaders(nil, nil) // no headers to write to: nothing happens
}

// TestAuthMetricsScope: /metrics is public unless configured otherwise; secured, it needs a
// key with the metrics scope (401 without a key, 403 with an unknown key or one without it).
func TestAuthMetricsScope(t *testing.T) {
	spec, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	ops := tenant.Key{Name: "ops", Digest: sha256.Sum256([]byte("ops-secret")), Scopes: []tenant.Scope{tenant.ScopeMetrics}}
	app := tenant.Key{Name: "app", Digest: sha256.Sum256([]byte("app-secret")), Scopes: []tenant.Scope{tenant.ScopeTasks}}
	ring := tenant.NewRing([]tenant.Key{ops, app})
	tests := []struct {
		name   string
		opts   []AuthOption
		key    string
		status int
	}{
		{"default public, no key", nil, "", http.StatusOK},
		{"default public, a key is not checked", nil, "unknown", http.StatusOK},
		{"configured public", []AuthOption{OptionalAuth(true)}, "", http.StatusOK},
		{"secured, no key", []AuthOption{OptionalAuth(false)}, "", http.StatusUnauthorized},
		{"secured, unknown key", []AuthOption{OptionalAuth(false)}, "unknown", http.StatusForbidden},
		{"secured, key without the scope", []AuthOption{OptionalAuth(false)}, "app-secret", http.StatusForbidden},
		{"secured, key with the scope", []AuthOption{OptionalAuth(false)}, "ops-secret", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mw, err := Auth(spec, ring, nil, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			e := echo.New()
			e.HTTPErrorHandler = HTTPErrorHandler(slog.New(slog.DiscardHandler))
			e.Use(mw)
			e.GET("/metrics", func(c echo.Context) error { return c.String(http.StatusOK, "up 1\n") })
			e.GET("/openapi.json", func(c echo.Context) error { return c.String(http.StatusOK, "{}") })
			for _, path := range []string{"/metrics", "/openapi.json"} {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				if tc.key != "" {
					req.Header.Set("X-API-Key", tc.key)
				}
				rec := httptest.NewRecorder()
				e.ServeHTTP(rec, req)
				want := tc.status
				if path == "/openapi.json" {
					want = http.StatusOK // public whatever the option
				}
				if rec.Code != want {
					t.Errorf("%s: %d %s, want %d", path, rec.Code, rec.Body, want)
				}
				if want != http.StatusOK && !strings.Contains(rec.Body.String(), `"code"`) {
					t.Errorf("%s: %s is not the error envelope", path, rec.Body)
				}
			}
		})
	}
}

// Reading the presented key allocates nothing: the header is looked up by its canonical name.
func TestPresentedKeyAllocatesNothing(t *testing.T) {
	h := http.Header{}
	h.Set("X-API-Key", "k1")
	h.Set("Authorization", "Bearer k1")
	var key string
	if allocs := testing.AllocsPerRun(100, func() { key, _ = presentedKey(h) }); allocs != 0 {
		t.Errorf("%.0f allocations, want 0", allocs)
	}
	if key != "k1" {
		t.Errorf("key %q", key)
	}
}
