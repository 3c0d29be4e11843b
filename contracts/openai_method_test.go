package contracts

import (
	"net/http"
	"strings"
	"testing"
)

// TestOpenAIWrongMethodIsOpenAIShaped: the openai tag's "Errors on these routes are
// OpenAI-shaped" holds for a wrong method too: 405 method_not_allowed in an OpenAI error object
// (the harness checks the shape and the table), not the task API's envelope, which OpenAI
// clients cannot read (they read body["error"]).
func TestOpenAIWrongMethodIsOpenAIShaped(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v1/chat/completions"},
		{http.MethodPut, "/v1/completions"},
		{http.MethodPost, "/v1/models"},
	} {
		resp, out := h.do(t, tc.method, tc.path, strings.NewReader(""), bearer(testKey))
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d %s, want 405", tc.method, tc.path, resp.StatusCode, out)
			continue
		}
		if typ, code, _ := openAIErr(t, out); typ != "invalid_request_error" || code != "method_not_allowed" {
			t.Errorf("%s %s: 405 %s, want an OpenAI error object with code method_not_allowed", tc.method, tc.path, out)
		}
	}
}
