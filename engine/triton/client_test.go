package triton

import (
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/tools/tritontest"
)

// TestOfficialClientAcceptsServer: the official tritonclient (HTTP: liveness, readiness,
// metadata, infer; gRPC: streaming the decoupled model) talks to the server the adapter is
// tested against, so the tests above run against a Triton its own client accepts.
func TestOfficialClientAcceptsServer(t *testing.T) {
	s := tritontest.Shared(t)
	py, _ := tritontest.Python()
	script, _ := tritontest.ServeScript()
	out, err := exec.Command(py, filepath.Join(filepath.Dir(script), "client_check.py"),
		strings.TrimPrefix(s.HTTP, "http://"), s.GRPC).Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("client_check.py: %v\n%s%s", err, out, stderr)
	}
	var got struct {
		Live, Ready bool
		ModelReady  bool `json:"model_ready"`
		Metadata    struct {
			Name            string
			Versions        []string
			Inputs, Outputs []string
		}
		HTTPInfer  string   `json:"http_infer"`
		GRPCStream []string `json:"grpc_stream"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !got.Live || !got.Ready || !got.ModelReady || got.Metadata.Name != "words" || !slices.Equal(got.Metadata.Versions, []string{"1"}) ||
		!slices.Equal(got.Metadata.Inputs, []string{"text_input", "max_tokens"}) || !slices.Equal(got.Metadata.Outputs, []string{"text_output"}) {
		t.Errorf("http: %+v", got)
	}
	if got.HTTPInfer != " The quick brown" || !slices.Equal(got.GRPCStream, words(4)) {
		t.Errorf("http infer %q, grpc stream %q", got.HTTPInfer, got.GRPCStream)
	}
}
