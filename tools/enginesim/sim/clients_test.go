package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// clientsPython is a Python with the pinned official clients (tools/enginesim/clients/
// requirements.txt): $ORCHD_CLIENTS_PYTHON, else <repo>/.venv-clients/bin/python (make
// clients-venv). The test skips when neither imports the client it needs.
func clientsPython(t *testing.T, module string) string {
	t.Helper()
	candidates := []string{os.Getenv("ORCHD_CLIENTS_PYTHON"), filepath.Join("..", "..", "..", ".venv-clients", "bin", "python")}
	for _, py := range candidates {
		if py == "" {
			continue
		}
		if err := exec.Command(py, "-c", "import "+module).Run(); err == nil {
			return py
		}
	}
	t.Skipf("no Python with the %s client: run make clients-venv or set ORCHD_CLIENTS_PYTHON", module)
	return ""
}

// TestOpenAIClientAcceptsSimulator: the official openai Python client streams a completion and
// a chat completion from the simulator's OpenAI personality, sees every token as its own chunk,
// the finish reason and the usage chunk; with continuous_usage_stats, usage in every token's
// chunk too.
func TestOpenAIClientAcceptsSimulator(t *testing.T) {
	py := clientsPython(t, "openai")
	_, ts := newServer(t, Options{Model: "sim-model"})
	const n = 7
	out, err := exec.Command(py, filepath.Join("..", "clients", "openai_check.py"), ts.URL, "7").CombinedOutput()
	if err != nil {
		t.Fatalf("openai client: %v\n%s", err, out)
	}
	var kinds []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r struct {
			Kind, Text, Model string
			Chunks            int
			UsageChunks       int    `json:"usage_chunks"`
			FinishReason      string `json:"finish_reason"`
			Usage             *struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		kinds = append(kinds, r.Kind)
		if r.Chunks != n || strings.Count(r.Text, " t") != n || r.FinishReason != "length" ||
			r.Usage == nil || r.Usage.CompletionTokens != n || r.Model != "sim-model" {
			t.Errorf("%s: %+v", r.Kind, r)
		}
		if want := map[bool]int{false: 1, true: n + 1}[r.Kind == "chat-continuous"]; r.UsageChunks != want {
			t.Errorf("%s: %d chunks carried usage, want %d", r.Kind, r.UsageChunks, want)
		}
	}
	if strings.Join(kinds, ",") != "completion,chat,chat-continuous" {
		t.Errorf("streams %v\n%s", kinds, out)
	}
}

// TestTGIClientAcceptsSimulator: the official text-generation Python client streams from the
// simulator's TGI personality (through TGI's compat POST /, where the client posts), one
// frame per token with generated_text and details on the last, and reads a non-stream
// generation.
func TestTGIClientAcceptsSimulator(t *testing.T) {
	py := clientsPython(t, "text_generation")
	_, ts := newServer(t, Options{Model: "sim-model"})
	const n = 6
	out, err := exec.Command(py, filepath.Join("..", "clients", "tgi_check.py"), ts.URL, "6").CombinedOutput()
	if err != nil {
		t.Fatalf("text-generation client: %v\n%s", err, out)
	}
	var kinds []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r struct {
			Kind, Text      string
			Tokens          int
			GeneratedText   string `json:"generated_text"`
			FinishReason    string `json:"finish_reason"`
			GeneratedTokens int    `json:"generated_tokens"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		kinds = append(kinds, r.Kind)
		if r.Tokens != n || strings.Count(r.Text, " t") != n || r.GeneratedText != r.Text || r.FinishReason != "length" ||
			r.GeneratedTokens != n {
			t.Errorf("%s: %+v", r.Kind, r)
		}
	}
	if strings.Join(kinds, ",") != "stream,generate" {
		t.Errorf("calls %v\n%s", kinds, out)
	}
}
