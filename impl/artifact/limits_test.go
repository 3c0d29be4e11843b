package artifact

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fileSize is the size of the stored file of ref.
func fileSize(t *testing.T, dir string, ref Ref) int64 {
	t.Helper()
	h := strings.TrimPrefix(ref.ID, idPrefix)
	fi, err := os.Stat(filepath.Join(dir, h[:2], h+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestOpenRemovesStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	ref := mustPut(t, s, Artifact{Kind: "plan", Content: map[string]any{"k": "v"}})
	h := strings.TrimPrefix(ref.ID, idPrefix)
	// What a kill -9 during writeAtomic leaves: a temporary file in a shard (complete or not),
	// and one in a shard that holds nothing else.
	stale := []string{
		filepath.Join(dir, h[:2], ".tmp-123456"),
		filepath.Join(dir, "ff", ".tmp-999"),
	}
	keep := []string{filepath.Join(dir, "README"), filepath.Join(dir, h[:2], "notes.txt")}
	if err := os.MkdirAll(filepath.Join(dir, "ff"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(stale, keep...) {
		if err := os.WriteFile(p, []byte(`{"half":`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2 := openStore(t, dir, Options{})
	for _, p := range stale {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale temporary file %s still there (%v)", p, err)
		}
	}
	for _, p := range keep {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("Open removed %s, which is not a temporary file: %v", p, err)
		}
	}
	if got, err := s2.Get(context.Background(), ref.ID); err != nil || got.Content["k"] != "v" {
		t.Fatalf("acknowledged artifact after reopen: %+v, %v", got, err)
	}
	if u := s2.Usage(); u.Count != 1 || u.Bytes != fileSize(t, dir, ref) {
		t.Fatalf("usage after reopen = %+v, want 1 artifact of %d bytes", u, fileSize(t, dir, ref))
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	if u := s.Usage(); u != (Usage{}) {
		t.Fatalf("empty store usage = %+v", u)
	}
	var refs []Ref
	for i := range 3 {
		refs = append(refs, mustPut(t, s, Artifact{Kind: "plan", Content: map[string]any{"i": i}}))
	}
	// The same content again is the same artifact: no second count.
	mustPut(t, s, Artifact{Kind: "plan", Content: map[string]any{"i": 1}})
	var want int64
	for _, r := range refs {
		want += fileSize(t, dir, r)
	}
	if u := s.Usage(); u.Count != 3 || u.Bytes != want {
		t.Fatalf("usage = %+v, want 3 artifacts of %d bytes", u, want)
	}
	if u := openStore(t, dir, Options{}).Usage(); u.Count != 3 || u.Bytes != want {
		t.Fatalf("usage after a restart = %+v, want 3 artifacts of %d bytes", u, want)
	}
}

func TestLimits(t *testing.T) {
	art := func(i int) Artifact { return Artifact{Kind: "plan", Content: map[string]any{"i": i}} }
	probe := openStore(t, t.TempDir(), Options{})
	one := fileSize(t, probe.dir, mustPut(t, probe, art(0))) // every art(i<10) has this size

	tests := []struct {
		name  string
		opts  Options
		fits  int
		limit string
	}{
		{"max_count", Options{MaxCount: 2}, 2, "max_count"},
		{"max_total_bytes", Options{MaxTotalBytes: 3*one + one/2}, 3, "max_total_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, tt.opts)
			for i := range tt.fits {
				mustPut(t, s, art(i))
			}
			_, err := s.Put(context.Background(), art(tt.fits))
			if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), tt.limit) {
				t.Fatalf("Put beyond the limit = %v, want ErrFull naming %s", err, tt.limit)
			}
			// Refused content left nothing behind and counts for nothing.
			if u := s.Usage(); u.Count != int64(tt.fits) || u.Bytes != int64(tt.fits)*one {
				t.Fatalf("usage = %+v after a refusal", u)
			}
			if _, err := s.Get(context.Background(), mustID(t, art(tt.fits))); !errors.Is(err, ErrNotFound) {
				t.Fatalf("refused artifact: Get = %v", err)
			}
			// Content already stored is still accepted: it takes no more room.
			if _, err := s.Put(context.Background(), art(0)); err != nil {
				t.Fatalf("Put of stored content at the limit: %v", err)
			}
			// The limit holds across a restart: usage is counted from disk.
			if _, err := openStore(t, dir, tt.opts).Put(context.Background(), art(tt.fits)); !errors.Is(err, ErrFull) {
				t.Fatalf("Put beyond the limit after a restart = %v, want ErrFull", err)
			}
		})
	}
}

func TestLimitsConcurrentPuts(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{MaxCount: 5})
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored := 0
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Put(context.Background(), Artifact{Kind: "plan", Content: map[string]any{"i": i}})
			switch {
			case err == nil:
				mu.Lock()
				stored++
				mu.Unlock()
			case !errors.Is(err, ErrFull):
				t.Errorf("Put: %v", err)
			}
		}()
	}
	wg.Wait()
	if u := s.Usage(); stored != 5 || u.Count != 5 {
		t.Fatalf("%d stored, usage %+v; want exactly 5", stored, u)
	}
}

func TestWriteFailureReleasesUsage(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	a := Artifact{Kind: "plan", Content: map[string]any{"k": "v"}}
	h := strings.TrimPrefix(mustID(t, a), idPrefix)
	// The shard directory is a dangling link: the artifact is not found, then its write fails.
	if err := os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, h[:2])); err != nil {
		t.Skipf("symlinks unavailable: %v", err)
	}
	if _, err := s.Put(context.Background(), a); err == nil {
		t.Fatal("Put succeeded without its shard directory")
	}
	if u := s.Usage(); u != (Usage{}) {
		t.Fatalf("usage after a failed write = %+v", u)
	}
}

func mustID(t *testing.T, a Artifact) string {
	t.Helper()
	id, _, err := Identify(a)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
