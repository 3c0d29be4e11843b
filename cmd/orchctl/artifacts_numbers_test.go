package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/engine/fake"
	"github.com/orchestratord/orchestratord/internal/testdaemon"
)

// TestArtifactsKeepTheNumbersSent: an artifact's id is the SHA-256 of its canonical JSON, defined
// on the numbers as written (the daemon keeps 9007199254740993 and 1.0 as sent). orchctl read
// the file into float64s, so `artifacts put` stored other numbers (9007199254740992, 1) under
// another id than the same file posted with curl, and `artifacts get` printed rounded digits.
func TestArtifactsKeepTheNumbersSent(t *testing.T) {
	d := startDaemon(t, fake.Options{})
	env := map[string]string{"ORCHD_URL": d.URL, "ORCHD_API_KEY": testdaemon.Key}
	const content = `{"big":9007199254740993,"f":1.0}`
	sum := sha256.Sum256([]byte(`{"content":` + content + `,"kind":"other"}`))
	wantID := "sha256:" + hex.EncodeToString(sum[:])
	file := filepath.Join(t.TempDir(), "content.json")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, stdin string
		args        []string
	}{
		{"put --kind FILE", "", []string{"artifacts", "put", "--kind", "other", file}},
		{"put - (the whole artifact)", `{"kind":"other","content":` + content + `}`, []string{"artifacts", "put", "-"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := orchctl(t, env, tt.stdin, tt.args...)
			if got := strings.TrimSpace(r.stdout); r.code != 0 || got != wantID {
				t.Fatalf("exit %d, id %q (stderr %q); want the id of the JSON sent, %s", r.code, got, r.stderr, wantID)
			}
		})
	}
	r := orchctl(t, env, "", "artifacts", "get", wantID)
	if r.code != 0 || !strings.Contains(r.stdout, "9007199254740993") || !strings.Contains(r.stdout, "1.0") {
		t.Fatalf("artifacts get: exit %d, stdout %q, stderr %q; want the numbers as stored", r.code, r.stdout, r.stderr)
	}
}
