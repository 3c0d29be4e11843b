package artifact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Default bounds.
const (
	// DefaultMaxBytes bounds an artifact's canonical size.
	DefaultMaxBytes = 1 << 20
	// DefaultMaxTotalBytes bounds the size of all stored files together.
	DefaultMaxTotalBytes = 1 << 30
	// DefaultMaxCount bounds the number of stored artifacts.
	DefaultMaxCount = 100_000
)

const idPrefix = "sha256:"

// tmpPrefix starts the name of a file being written; Open removes any it finds.
const tmpPrefix = ".tmp-"

// Errors returned by the store. Match them with errors.Is.
var (
	// ErrNotFound: no artifact has this id.
	ErrNotFound = errors.New("artifact not found")
	// ErrInvalidID: the id does not match ^sha256:[0-9a-f]{64}$.
	ErrInvalidID = errors.New("invalid artifact id")
	// ErrInvalid: the artifact is malformed (missing kind or content, a value outside the
	// JSON data model, invalid UTF-8, a parent that is not an id).
	ErrInvalid = errors.New("invalid artifact")
	// ErrTooLarge: the artifact's canonical form exceeds Options.MaxBytes.
	ErrTooLarge = errors.New("artifact too large")
	// ErrFull: storing the artifact would pass Options.MaxTotalBytes or Options.MaxCount.
	ErrFull = errors.New("artifact store full")
	// ErrCorrupt: a stored file does not hold the artifact its name says.
	ErrCorrupt = errors.New("artifact file corrupt")
	// ErrInvalidOptions: an Options field is out of range.
	ErrInvalidOptions = errors.New("invalid artifact store options")
)

// Artifact is an artifact as submitted.
type Artifact struct {
	Kind     string
	Content  map[string]any // a JSON object; required (may be empty)
	Tags     []string
	Parent   string // an artifact id, optional
	Metadata map[string]any
}

// Ref names a stored artifact.
type Ref struct {
	ID        string
	Kind      string
	Digest    string // equal to ID
	CreatedMs int64  // Unix milliseconds of the first Put
	Tags      []string
}

// Stored is a stored artifact.
type Stored struct {
	Ref
	Content  map[string]any
	Parent   string
	Metadata map[string]any
}

// Options configures a Store. The zero value is valid.
type Options struct {
	// MaxBytes bounds the canonical size of one artifact (default 1 MiB).
	MaxBytes int64
	// MaxTotalBytes bounds the size of all stored files together (default 1 GiB).
	MaxTotalBytes int64
	// MaxCount bounds the number of stored artifacts (default 100000).
	MaxCount int64
	// Now is the clock for created_ms (default time.Now).
	Now func() time.Time
	// Logger receives warnings about corrupt files (default: discard).
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	for _, f := range []struct {
		name string
		v    *int64
		def  int64
	}{{"MaxBytes", &o.MaxBytes, DefaultMaxBytes}, {"MaxTotalBytes", &o.MaxTotalBytes, DefaultMaxTotalBytes}, {"MaxCount", &o.MaxCount, DefaultMaxCount}} {
		if *f.v < 0 {
			return o, fmt.Errorf("%w: %s %d is negative", ErrInvalidOptions, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Store is an artifact store rooted at one directory.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger

	// locks serialise Puts of the same id (striped by the digest's first byte).
	locks [64]sync.Mutex

	// usageMu guards count and bytes: the stored artifacts and the size of their files.
	usageMu sync.Mutex
	count   int64
	bytes   int64
}

// Usage is what a store holds.
type Usage struct {
	Count int64 // stored artifacts
	Bytes int64 // size of their files
}

// Open opens (creating it with mode 0700 when needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: empty directory", ErrInvalidOptions)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("artifact: create store directory: %w", err)
	}
	s := &Store{dir: dir, opts: o, log: o.Logger}
	if err := s.scan(); err != nil {
		return nil, err
	}
	return s, nil
}

// scan counts the stored artifacts and removes the temporary files that a crash during a Put
// left behind (no Put runs yet, so every temporary file is stale).
func (s *Store) scan() error {
	shards, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("artifact: read store directory: %w", err)
	}
	removed := 0
	for _, sh := range shards {
		if strings.HasPrefix(sh.Name(), tmpPrefix) && sh.Type().IsRegular() {
			if err := os.Remove(filepath.Join(s.dir, sh.Name())); err != nil {
				return fmt.Errorf("artifact: remove stale temporary file: %w", err)
			}
			removed++
			continue
		}
		if !sh.IsDir() || !isShard(sh.Name()) {
			continue
		}
		shard := filepath.Join(s.dir, sh.Name())
		files, err := os.ReadDir(shard)
		if err != nil {
			return fmt.Errorf("artifact: read shard: %w", err)
		}
		for _, f := range files {
			name := f.Name()
			switch {
			case strings.HasPrefix(name, tmpPrefix) && f.Type().IsRegular():
				if err := os.Remove(filepath.Join(shard, name)); err != nil {
					return fmt.Errorf("artifact: remove stale temporary file: %w", err)
				}
				removed++
			case f.Type().IsRegular() && strings.HasSuffix(name, ".json") &&
				ValidID(idPrefix+strings.TrimSuffix(name, ".json")) && strings.HasPrefix(name, sh.Name()):
				fi, err := f.Info()
				if err != nil {
					return fmt.Errorf("artifact: stat %s: %w", name, err)
				}
				s.count++
				s.bytes += fi.Size()
			}
		}
	}
	if removed > 0 {
		s.log.Warn("removed temporary files left by an interrupted write", "dir", s.dir, "count", removed)
	}
	return nil
}

// isShard reports whether name is a shard directory's name: two lowercase hex digits.
func isShard(name string) bool {
	return len(name) == 2 && isHex(name[0]) && isHex(name[1])
}

func isHex(c byte) bool { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') }

// Usage returns what the store holds: artifacts stored, and the size of their files.
func (s *Store) Usage() Usage {
	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	return Usage{Count: s.count, Bytes: s.bytes}
}

// reserve accounts for a file of size n replacing one of size old (old < 0: a new artifact),
// or fails with ErrFull when that would pass a limit. release undoes it.
func (s *Store) reserve(n, old int64) error {
	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	count, bytes := s.count, s.bytes+n
	if old < 0 {
		count++
	} else {
		bytes -= old
	}
	if count > s.opts.MaxCount {
		return fmt.Errorf("%w: it holds %d artifacts, its limit (max_count)", ErrFull, s.count)
	}
	if bytes > s.opts.MaxTotalBytes && bytes > s.bytes {
		return fmt.Errorf("%w: %d more bytes would pass its limit of %d bytes (max_total_bytes; %d in use)", ErrFull, n, s.opts.MaxTotalBytes, s.bytes)
	}
	s.count, s.bytes = count, bytes
	return nil
}

func (s *Store) release(n, old int64) {
	s.usageMu.Lock()
	defer s.usageMu.Unlock()
	if old < 0 {
		s.count--
		s.bytes -= n
	} else {
		s.bytes += old - n
	}
}

// ValidID reports whether id has the form sha256:<64 lowercase hex digits>.
func ValidID(id string) bool {
	if len(id) != len(idPrefix)+64 || id[:len(idPrefix)] != idPrefix {
		return false
	}
	for _, c := range []byte(id[len(idPrefix):]) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (s *Store) path(id string) (shard, file string) {
	h := id[len(idPrefix):]
	shard = filepath.Join(s.dir, h[:2])
	return shard, filepath.Join(shard, h+".json")
}

func (s *Store) lock(id string) *sync.Mutex {
	h := id[len(idPrefix):]
	b := hexVal(h[0])<<4 | hexVal(h[1])
	return &s.locks[int(b)%len(s.locks)]
}

func hexVal(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

// Put stores a and returns its Ref. Storing content that is already stored returns the
// original Ref (with its original CreatedMs) and writes nothing.
func (s *Store) Put(ctx context.Context, a Artifact) (Ref, error) {
	if err := ctx.Err(); err != nil {
		return Ref{}, err
	}
	id, _, err := identify(a, s.opts.MaxBytes)
	if err != nil {
		return Ref{}, err
	}
	mu := s.lock(id)
	mu.Lock()
	defer mu.Unlock()

	old := int64(-1) // size of the file replaced, -1 when there is none
	switch st, err := s.read(id); {
	case err == nil:
		return st.Ref, nil
	case errors.Is(err, ErrCorrupt):
		s.log.WarnContext(ctx, "rewriting corrupt artifact file", "id", id, "err", err)
		_, file := s.path(id)
		if fi, err := os.Stat(file); err == nil {
			old = fi.Size()
		}
	case !errors.Is(err, ErrNotFound):
		return Ref{}, err
	}

	ref := Ref{ID: id, Kind: a.Kind, Digest: id, CreatedMs: s.opts.Now().UnixMilli()}
	if len(a.Tags) > 0 {
		ref.Tags = append([]string(nil), a.Tags...)
	}
	env := map[string]any{
		"id": id, "digest": id, "kind": a.Kind, "created_ms": ref.CreatedMs, "content": a.Content,
	}
	if ref.Tags != nil {
		env["tags"] = ref.Tags
	}
	if a.Parent != "" {
		env["parent"] = a.Parent
	}
	if len(a.Metadata) > 0 {
		env["metadata"] = a.Metadata
	}
	data, err := Canonical(env)
	if err != nil {
		return Ref{}, err // unreachable: identify accepted the same values
	}
	n := int64(len(data))
	if err := s.reserve(n, old); err != nil {
		return Ref{}, err
	}
	shard, file := s.path(id)
	if err := s.writeAtomic(shard, file, data); err != nil {
		s.release(n, old)
		return Ref{}, fmt.Errorf("artifact: store %s: %w", id, err)
	}
	return ref, nil
}

// Get returns the artifact with the given id: ErrInvalidID for a malformed id, ErrNotFound
// when absent, ErrCorrupt when the file does not hold that artifact.
func (s *Store) Get(ctx context.Context, id string) (Stored, error) {
	if err := ctx.Err(); err != nil {
		return Stored{}, err
	}
	if !ValidID(id) {
		return Stored{}, fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	return s.read(id)
}

func (s *Store) read(id string) (Stored, error) {
	_, file := s.path(id)
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return Stored{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Stored{}, fmt.Errorf("artifact: read %s: %w", id, err)
	}
	st, err := decodeFile(data)
	if err != nil {
		return Stored{}, fmt.Errorf("%w: %s: %w", ErrCorrupt, id, err)
	}
	if st.ID != id {
		return Stored{}, fmt.Errorf("%w: %s: file holds %s", ErrCorrupt, id, st.ID)
	}
	return st, nil
}

// decodeFile parses a stored file and checks that its id is the digest of its fields.
func decodeFile(data []byte) (Stored, error) {
	v, err := ParseJSON(data)
	if err != nil {
		return Stored{}, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return Stored{}, errors.New("not a JSON object")
	}
	var st Stored
	str := func(key string, required bool) (string, error) {
		x, present := m[key]
		if !present && !required {
			return "", nil
		}
		s, ok := x.(string)
		if !ok {
			return "", fmt.Errorf("field %q: want a string", key)
		}
		return s, nil
	}
	obj := func(key string, required bool) (map[string]any, error) {
		x, present := m[key]
		if !present && !required {
			return nil, nil
		}
		o, ok := x.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("field %q: want an object", key)
		}
		return o, nil
	}
	if st.ID, err = str("id", true); err != nil {
		return Stored{}, err
	}
	if st.Digest, err = str("digest", true); err != nil {
		return Stored{}, err
	}
	if st.Kind, err = str("kind", true); err != nil {
		return Stored{}, err
	}
	if st.Parent, err = str("parent", false); err != nil {
		return Stored{}, err
	}
	if st.Content, err = obj("content", true); err != nil {
		return Stored{}, err
	}
	if st.Metadata, err = obj("metadata", false); err != nil {
		return Stored{}, err
	}
	n, ok := m["created_ms"].(json.Number)
	if !ok {
		return Stored{}, errors.New(`field "created_ms": want a number`)
	}
	if st.CreatedMs, err = n.Int64(); err != nil {
		return Stored{}, fmt.Errorf(`field "created_ms": %w`, err)
	}
	if x, present := m["tags"]; present {
		arr, ok := x.([]any)
		if !ok {
			return Stored{}, errors.New(`field "tags": want an array`)
		}
		for _, t := range arr {
			s, ok := t.(string)
			if !ok {
				return Stored{}, errors.New(`field "tags": want strings`)
			}
			st.Tags = append(st.Tags, s)
		}
	}
	id, _, err := Identify(Artifact{Kind: st.Kind, Content: st.Content, Tags: st.Tags, Parent: st.Parent, Metadata: st.Metadata})
	if err != nil {
		return Stored{}, err
	}
	if id != st.ID || id != st.Digest {
		return Stored{}, fmt.Errorf("digest mismatch: content hashes to %s, file says id %s digest %s", id, st.ID, st.Digest)
	}
	return st, nil
}

// writeAtomic writes data to file through a temporary file in shard and fsyncs the
// directories involved.
func (s *Store) writeAtomic(shard, file string, data []byte) (err error) {
	switch err := os.Mkdir(shard, 0o700); {
	case err == nil:
		if err := syncDir(s.dir); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrExist):
		return err
	}
	f, err := os.CreateTemp(shard, tmpPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, file); err != nil {
		return err
	}
	return syncDir(shard)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return fmt.Errorf("fsync %s: %w", dir, serr)
	}
	return cerr
}
