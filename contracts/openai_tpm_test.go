package contracts

import (
	"net/http"
	"strings"
	"testing"
)

// TestOpenAIOpenEndedChatUnderTPM: the OpenAI clients send no max_tokens unless asked, and the
// facade then gives the task the pool's context as its max_tokens (4096 here). For a key whose
// tpm (1000) is below that, every such chat was refused with 400 "/max_tokens: ... exceed the
// limit of 1000 per minute", for a field the client never sent, and no wait helped. It is
// admitted now, running to at most the key's tpm (cut with finish_reason "length").
func TestOpenAIOpenEndedChatUnderTPM(t *testing.T) {
	const tpmKey = "tpm-limited-key-0123456789abc"
	h := newHarness(t, withKeys(keysDoc+"  - {name: tpmk, key: "+tpmKey+", scopes: [tasks], tpm: 1000}\n")) // ctx_max 4096
	body := `{"model":"` + modelID + `","messages":[{"role":"user","content":"Hi"}]}`                       // no max_tokens: the SDK default
	resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(body), bearer(tpmKey))
	if resp.StatusCode != http.StatusOK {
		typ, code, param := openAIErr(t, out)
		t.Errorf("a chat without max_tokens from a key with tpm 1000 (< ctx_max 4096): %d %s/%s param %q: %s; want it admitted (reserving at most the key's tpm)",
			resp.StatusCode, typ, code, param, out)
		if strings.Contains(string(out), "max_tokens") && !strings.Contains(body, "max_tokens") {
			t.Errorf("the error names max_tokens, which the request does not have")
		}
	}
	// The same key with an explicit max_tokens inside its limit works: only the daemon's own
	// default is refused.
	ok := `{"model":"` + modelID + `","max_tokens":4,"messages":[{"role":"user","content":"Hi"}]}`
	if resp, out := h.do(t, http.MethodPost, "/v1/chat/completions", strings.NewReader(ok), bearer(tpmKey)); resp.StatusCode != http.StatusOK {
		t.Fatalf("control: %d %s", resp.StatusCode, out)
	}
}
