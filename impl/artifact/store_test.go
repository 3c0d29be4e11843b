package artifact

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// stepClock returns a clock that advances one second per call.
func stepClock() func() time.Time {
	var n atomic.Int64
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return func() time.Time { return base.Add(time.Duration(n.Add(1)) * time.Second) }
}

func openStore(t *testing.T, dir string, o Options) *Store {
	t.Helper()
	if o.Now == nil {
		o.Now = stepClock()
	}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func parseObject(t *testing.T, s string) map[string]any {
	t.Helper()
	v, err := ParseJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return v.(map[string]any)
}

func mustPut(t *testing.T, s *Store, a Artifact) Ref {
	t.Helper()
	ref, err := s.Put(context.Background(), a)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	return ref
}

func TestOpen(t *testing.T) {
	t.Run("creates dir 0700", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		openStore(t, dir, Options{})
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Fatalf("mode = %v", fi.Mode().Perm())
		}
	})
	t.Run("invalid options", func(t *testing.T) {
		if _, err := Open(t.TempDir(), Options{MaxBytes: -1}); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("err = %v", err)
		}
		if _, err := Open("", Options{}); !errors.Is(err, ErrInvalidOptions) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("dir is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(f, Options{}); err == nil {
			t.Fatal("Open on a file succeeded")
		}
	})
}

func TestPutGet(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	a := Artifact{
		Kind:     "plan",
		Content:  parseObject(t, `{"steps":["read","write"],"n":12345678901234567890.50}`),
		Tags:     []string{"demo", "x"},
		Parent:   "sha256:" + strings.Repeat("ab", 32),
		Metadata: map[string]any{"by": "test"},
	}
	ref := mustPut(t, s, a)
	id, _, _ := Identify(a)
	if ref.ID != id || ref.Digest != id || ref.Kind != "plan" || !reflect.DeepEqual(ref.Tags, a.Tags) || ref.CreatedMs == 0 {
		t.Fatalf("Ref = %+v", ref)
	}
	got, err := s.Get(context.Background(), ref.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := Stored{Ref: ref, Content: a.Content, Parent: a.Parent, Metadata: a.Metadata}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Get = %+v\nwant  %+v", got, want)
	}
	if n := got.Content["n"]; n != json.Number("12345678901234567890.50") {
		t.Fatalf("number did not round-trip: %#v", n)
	}
}

func TestSameContentSameID(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	first := mustPut(t, s, Artifact{Kind: "plan", Content: parseObject(t, `{"a":1,"b":{"c":[1,2],"d":"x"}}`)})
	tests := []struct {
		name string
		a    Artifact
		same bool
	}{
		{"identical", Artifact{Kind: "plan", Content: parseObject(t, `{"a":1,"b":{"c":[1,2],"d":"x"}}`)}, true},
		{"key order and whitespace", Artifact{Kind: "plan", Content: parseObject(t, "{ \"b\" : {\"d\":\"x\", \"c\":[1, 2]},\n\"a\":1}")}, true},
		{"empty tags", Artifact{Kind: "plan", Content: parseObject(t, `{"a":1,"b":{"c":[1,2],"d":"x"}}`), Tags: []string{}}, true},
		{"tags", Artifact{Kind: "plan", Content: parseObject(t, `{"a":1,"b":{"c":[1,2],"d":"x"}}`), Tags: []string{"t"}}, false},
		{"kind", Artifact{Kind: "diff", Content: parseObject(t, `{"a":1,"b":{"c":[1,2],"d":"x"}}`)}, false},
		{"array order", Artifact{Kind: "plan", Content: parseObject(t, `{"a":1,"b":{"c":[2,1],"d":"x"}}`)}, false},
		{"number literal", Artifact{Kind: "plan", Content: parseObject(t, `{"a":1.0,"b":{"c":[1,2],"d":"x"}}`)}, false},
		{"metadata", Artifact{Kind: "plan", Content: parseObject(t, `{"a":1,"b":{"c":[1,2],"d":"x"}}`), Metadata: map[string]any{"m": 1}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := mustPut(t, s, tt.a)
			if (ref.ID == first.ID) != tt.same {
				t.Fatalf("id %s vs first %s, want same=%v", ref.ID, first.ID, tt.same)
			}
			if tt.same && ref.CreatedMs != first.CreatedMs {
				t.Fatalf("second Put changed created_ms: %d -> %d", first.CreatedMs, ref.CreatedMs)
			}
		})
	}
}

func TestTagOrderChangesID(t *testing.T) {
	a, _, _ := Identify(Artifact{Kind: "plan", Content: map[string]any{}, Tags: []string{"a", "b"}})
	b, _, _ := Identify(Artifact{Kind: "plan", Content: map[string]any{}, Tags: []string{"b", "a"}})
	if a == b {
		t.Fatal("tag order does not change the id")
	}
}

func TestSizeLimit(t *testing.T) {
	_, canon, _ := Identify(Artifact{Kind: "plan", Content: map[string]any{"s": "xxxx"}})
	limit := int64(len(canon))
	tests := []struct {
		name    string
		content string
		wantErr error
	}{
		{"at limit", "xxxx", nil},
		{"one over", "xxxxx", ErrTooLarge},
		{"far over", strings.Repeat("x", 10000), ErrTooLarge},
	}
	s := openStore(t, t.TempDir(), Options{MaxBytes: limit})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Put(context.Background(), Artifact{Kind: "plan", Content: map[string]any{"s": tt.content}})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put error = %v, want %v", err, tt.wantErr)
			}
		})
	}
	t.Run("default 1 MiB", func(t *testing.T) {
		s := openStore(t, t.TempDir(), Options{})
		_, err := s.Put(context.Background(), Artifact{Kind: "plan", Content: map[string]any{"s": strings.Repeat("x", 1<<20)}})
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Put error = %v, want ErrTooLarge", err)
		}
	})
}

func TestInvalidArtifact(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	if _, err := s.Put(context.Background(), Artifact{Kind: "plan"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Put error = %v, want ErrInvalid", err)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s1 := openStore(t, dir, Options{})
	ref := mustPut(t, s1, Artifact{Kind: "trace", Content: map[string]any{"k": "v"}, Tags: []string{"t"}})

	s2 := openStore(t, dir, Options{})
	got, err := s2.Get(context.Background(), ref.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Ref, ref) || got.Content["k"] != "v" {
		t.Fatalf("after reopen: %+v", got)
	}
	again := mustPut(t, s2, Artifact{Kind: "trace", Content: map[string]any{"k": "v"}, Tags: []string{"t"}})
	if !reflect.DeepEqual(again, ref) {
		t.Fatalf("Put after reopen = %+v, want original %+v", again, ref)
	}
}

var fileName = regexp.MustCompile(`^[0-9a-f]{2}/[0-9a-f]{64}\.json$`)

func TestLayoutNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	refs := map[string]bool{}
	for i := range 20 {
		ref := mustPut(t, s, Artifact{Kind: "other", Content: map[string]any{"i": i}})
		refs[ref.ID] = true
	}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			if rel == "." {
				return nil
			}
			if fi, _ := d.Info(); fi.Mode().Perm() != 0o700 {
				t.Errorf("dir %s mode %v", rel, fi.Mode().Perm())
			}
			return nil
		}
		files = append(files, rel)
		if !fileName.MatchString(filepath.ToSlash(rel)) {
			t.Errorf("unexpected file %s", rel)
		}
		if !refs["sha256:"+strings.TrimSuffix(filepath.Base(rel), ".json")] {
			t.Errorf("file %s names no stored artifact", rel)
		}
		if !strings.HasPrefix(filepath.Base(rel), rel[:2]) {
			t.Errorf("file %s in the wrong shard", rel)
		}
		if fi, _ := d.Info(); fi.Mode().Perm() != 0o600 {
			t.Errorf("file %s mode %v", rel, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(refs) {
		t.Fatalf("%d files for %d artifacts: %v", len(files), len(refs), files)
	}
}

func TestFileFormat(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Now: func() time.Time { return time.UnixMilli(1700000000123) }})
	ref := mustPut(t, s, Artifact{Kind: "plan", Content: map[string]any{"a": "b"}, Tags: []string{"t"}})
	h := strings.TrimPrefix(ref.ID, "sha256:")
	data, err := os.ReadFile(filepath.Join(dir, h[:2], h+".json"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"content":{"a":"b"},"created_ms":1700000000123,"digest":"` + ref.ID + `","id":"` + ref.ID + `","kind":"plan","tags":["t"]}`
	if string(data) != want {
		t.Fatalf("file = %s\nwant   %s", data, want)
	}
}

func TestGetErrors(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	tests := []struct {
		name string
		id   string
		want error
	}{
		{"not found", "sha256:" + strings.Repeat("0", 64), ErrNotFound},
		{"empty", "", ErrInvalidID},
		{"no prefix", strings.Repeat("0", 64), ErrInvalidID},
		{"uppercase", "sha256:" + strings.Repeat("A", 64), ErrInvalidID},
		{"short", "sha256:" + strings.Repeat("0", 63), ErrInvalidID},
		{"long", "sha256:" + strings.Repeat("0", 65), ErrInvalidID},
		{"traversal", "sha256:../" + strings.Repeat("0", 61), ErrInvalidID},
		{"other algo", "sha512:" + strings.Repeat("0", 64), ErrInvalidID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Get(context.Background(), tt.id); !errors.Is(err, tt.want) {
				t.Fatalf("Get(%q) error = %v, want %v", tt.id, err, tt.want)
			}
		})
	}
}

func TestCancelledContext(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Put(ctx, Artifact{Kind: "plan", Content: map[string]any{}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put = %v", err)
	}
	if _, err := s.Get(ctx, "sha256:"+strings.Repeat("0", 64)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get = %v", err)
	}
}

func TestCorruptFile(t *testing.T) {
	a := Artifact{Kind: "plan", Content: map[string]any{"a": "b"}}
	tests := []struct {
		name   string
		mutate func(string) string
	}{
		{"garbage", func(string) string { return "not json" }},
		{"truncated", func(s string) string { return s[:len(s)/2] }},
		{"content changed", func(s string) string { return strings.Replace(s, `"a":"b"`, `"a":"c"`, 1) }},
		{"kind changed", func(s string) string { return strings.Replace(s, `"kind":"plan"`, `"kind":"diff"`, 1) }},
		{"tag added", func(s string) string { return strings.Replace(s, `"kind":"plan"`, `"kind":"plan","tags":["x"]`, 1) }},
		{"not an object", func(string) string { return `[1]` }},
		{"created_ms missing", func(s string) string { return regexp.MustCompile(`"created_ms":\d+,`).ReplaceAllString(s, "") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, Options{})
			ref := mustPut(t, s, a)
			h := strings.TrimPrefix(ref.ID, "sha256:")
			path := filepath.Join(dir, h[:2], h+".json")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(tt.mutate(string(data))), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(context.Background(), ref.ID); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Get error = %v, want ErrCorrupt", err)
			}
			// A Put of the same content repairs the file.
			mustPut(t, s, a)
			if _, err := s.Get(context.Background(), ref.ID); err != nil {
				t.Fatalf("Get after repair: %v", err)
			}
		})
	}
}

func TestFileUnderOtherName(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	ref := mustPut(t, s, Artifact{Kind: "plan", Content: map[string]any{}})
	h := strings.TrimPrefix(ref.ID, "sha256:")
	other := strings.Repeat("0", 64)
	if err := os.MkdirAll(filepath.Join(dir, "00"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, h[:2], h+".json"), filepath.Join(dir, "00", other+".json")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), "sha256:"+other); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get error = %v, want ErrCorrupt", err)
	}
}

func TestConcurrentPuts(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	const workers = 8
	refs := make([][]Ref, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				// Every worker stores the same 5 artifacts (fresh maps each time).
				a := Artifact{Kind: "plan", Content: map[string]any{"i": i % 5, "s": "same"}}
				ref, err := s.Put(context.Background(), a)
				if err != nil {
					t.Error(err)
					return
				}
				refs[w] = append(refs[w], ref)
				if _, err := s.Get(context.Background(), ref.ID); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	byID := map[string]Ref{}
	for _, rs := range refs {
		for _, r := range rs {
			if prev, ok := byID[r.ID]; ok && !reflect.DeepEqual(prev, r) {
				t.Fatalf("two Refs for %s: %+v and %+v", r.ID, prev, r)
			}
			byID[r.ID] = r
		}
	}
	if len(byID) != 5 {
		t.Fatalf("%d distinct ids, want 5", len(byID))
	}
	n := 0
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if n != 5 {
		t.Fatalf("%d files on disk, want 5", n)
	}
}
