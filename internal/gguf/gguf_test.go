package gguf

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The golden hashes pin the exact bytes: the same options must always produce the same model
// (they match the reference generator this package was adapted from). Change them only on
// purpose, together with a note in the change.
func TestWriteGolden(t *testing.T) {
	eos := DefaultOptions()
	eos.EOS = true
	tests := []struct {
		name string
		opts Options
		size int
		hash string
	}{
		{"default", DefaultOptions(), 583552, "ccaca7ca371d4d6f547fb42873dd3dbef0d2adc310c0910c205b69f0d28d4646"},
		{"eos", eos, 583552, "7c0987587268dccb92a7dfede6d001aecd3d973370b18b3466d64073e72538e0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a, b bytes.Buffer
			if err := Write(&a, tt.opts); err != nil {
				t.Fatal(err)
			}
			if err := Write(&b, tt.opts); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				t.Fatal("two writes with the same options differ")
			}
			if a.Len() != tt.size {
				t.Errorf("size = %d, want %d", a.Len(), tt.size)
			}
			sum := sha256.Sum256(a.Bytes())
			if got := hex.EncodeToString(sum[:]); got != tt.hash {
				t.Errorf("sha256 = %s, want %s", got, tt.hash)
			}
		})
	}
}

func TestWriteOptionsChangeOutput(t *testing.T) {
	base := DefaultOptions()
	var want bytes.Buffer
	if err := Write(&want, base); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mod  func(*Options)
	}{
		{"seed", func(o *Options) { o.Seed = 2 }},
		{"noise", func(o *Options) { o.Noise = 0.03 }},
		{"eos", func(o *Options) { o.EOS = true }},
		{"layers", func(o *Options) { o.Layers = 3 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.mod(&o)
			var got bytes.Buffer
			if err := Write(&got, o); err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Error("output did not change")
			}
		})
	}
}

func TestWriteStructure(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"default", DefaultOptions()},
		{"wider", Options{Embd: 128, Layers: 3, Heads: 8, FF: 256, Seed: 7, Noise: 0.01}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, tt.opts); err != nil {
				t.Fatal(err)
			}
			m, err := parse(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if m.kv["general.architecture"] != "llama" {
				t.Errorf("architecture = %v", m.kv["general.architecture"])
			}
			for key, want := range map[string]any{
				"llama.embedding_length":      uint32(tt.opts.Embd),
				"llama.block_count":           uint32(tt.opts.Layers),
				"llama.attention.head_count":  uint32(tt.opts.Heads),
				"llama.feed_forward_length":   uint32(tt.opts.FF),
				"llama.context_length":        uint32(ContextLength),
				"tokenizer.ggml.eos_token_id": uint32(2),
			} {
				if m.kv[key] != want {
					t.Errorf("%s = %v, want %v", key, m.kv[key], want)
				}
			}
			if want := 2 + 9*tt.opts.Layers + 1; len(m.tensors) != want {
				t.Errorf("%d tensors, want %d", len(m.tensors), want)
			}
			toks, _ := m.kv["tokenizer.ggml.tokens"].([]string)
			if uint32(len(toks)) != m.kv["llama.vocab_size"] {
				t.Errorf("%d tokens, vocab_size %v", len(toks), m.kv["llama.vocab_size"])
			}
			for _, w := range words {
				if !contains(toks, w) {
					t.Errorf("vocabulary lacks %q", w)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Options)
		ok   bool
	}{
		{"default", func(*Options) {}, true},
		{"embd too small", func(o *Options) { o.Embd = 10 }, false},
		{"no layers", func(o *Options) { o.Layers = 0 }, false},
		{"heads do not divide", func(o *Options) { o.Heads = 5 }, false},
		{"odd head size", func(o *Options) { o.Embd, o.Heads = 66, 2 }, false},
		{"no ff", func(o *Options) { o.FF = 0 }, false},
		{"negative noise", func(o *Options) { o.Noise = -1 }, false},
		{"zero noise", func(o *Options) { o.Noise = 0 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := DefaultOptions()
			tt.mod(&o)
			err := Write(io.Discard, o)
			if (err == nil) != tt.ok {
				t.Errorf("Write error = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestWriteReportsWriterError(t *testing.T) {
	errBoom := errors.New("disk full")
	tests := []struct {
		name  string
		limit int
	}{
		{"at once", 0},
		{"in the header", 100},
		{"in the tensor data", 400000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Write(&failAfter{n: tt.limit, err: errBoom}, DefaultOptions())
			if !errors.Is(err, errBoom) {
				t.Errorf("err = %v, want %v", err, errBoom)
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := WriteFile(path, DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := Write(&want, DefaultOptions()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Error("WriteFile and Write differ")
	}
	if err := WriteFile(filepath.Join(t.TempDir(), "no", "such", "dir"), DefaultOptions()); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}

func TestTokens(t *testing.T) {
	toks := Tokens()
	if got := strings.Join(toks, ""); got != Sentence {
		t.Errorf("joined tokens = %q, want %q", got, Sentence)
	}
	if toks[0] != " The" || toks[len(toks)-1] != "." {
		t.Errorf("tokens = %q", toks)
	}
}

func BenchmarkWriteDefault(b *testing.B) {
	for b.Loop() {
		if err := Write(io.Discard, DefaultOptions()); err != nil {
			b.Fatal(err)
		}
	}
}

type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) <= f.n {
		f.n -= len(p)
		return len(p), nil
	}
	n := f.n
	f.n = 0
	return n, f.err
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// model is what parse reads back: enough of GGUF v3 to check the writer's framing.
type model struct {
	kv      map[string]any
	tensors map[string][]uint64
}

// parse reads a GGUF v3 file written by this package and checks its framing: aligned tensor
// offsets, data that exactly fills the file.
func parse(data []byte) (*model, error) {
	r := &reader{b: data}
	if string(r.n(4)) != "GGUF" {
		return nil, errors.New("bad magic")
	}
	if v := r.u32(); v != 3 {
		return nil, fmt.Errorf("version %d", v)
	}
	nt, nkv := r.u64(), r.u64()
	m := &model{kv: map[string]any{}, tensors: map[string][]uint64{}}
	for range nkv {
		key := r.str()
		m.kv[key] = r.value(r.u32())
	}
	type info struct {
		dims []uint64
		off  uint64
	}
	var infos []info
	for range nt {
		name := r.str()
		dims := make([]uint64, r.u32())
		for i := range dims {
			dims[i] = r.u64()
		}
		if typ := r.u32(); typ != 0 {
			return nil, fmt.Errorf("tensor %s type %d", name, typ)
		}
		off := r.u64()
		if off%alignment != 0 {
			return nil, fmt.Errorf("tensor %s offset %d unaligned", name, off)
		}
		m.tensors[name] = dims
		infos = append(infos, info{dims, off})
	}
	if r.err != nil {
		return nil, r.err
	}
	start := (r.p + alignment - 1) / alignment * alignment
	var end uint64
	for _, in := range infos {
		n := uint64(4)
		for _, d := range in.dims {
			n *= d
		}
		end = max(end, in.off+n)
	}
	end = (end + alignment - 1) / alignment * alignment
	if uint64(start)+end != uint64(len(data)) {
		return nil, fmt.Errorf("data section %d+%d != file size %d", start, end, len(data))
	}
	return m, nil
}

type reader struct {
	b   []byte
	p   int
	err error
}

func (r *reader) n(k int) []byte {
	if r.err != nil || k < 0 || r.p+k > len(r.b) {
		if r.err == nil {
			r.err = io.ErrUnexpectedEOF
		}
		return make([]byte, max(k, 0))
	}
	v := r.b[r.p : r.p+k]
	r.p += k
	return v
}
func (r *reader) u32() uint32 { return binary.LittleEndian.Uint32(r.n(4)) }
func (r *reader) u64() uint64 { return binary.LittleEndian.Uint64(r.n(8)) }
func (r *reader) str() string { return string(r.n(int(r.u64()))) }

func (r *reader) value(typ uint32) any {
	switch typ {
	case tUint32:
		return r.u32()
	case tInt32:
		return int32(r.u32())
	case tFloat32:
		return r.u32()
	case tBool:
		return r.n(1)[0] == 1
	case tString:
		return r.str()
	case tArray:
		et, n := r.u32(), r.u64()
		if et == tString {
			out := make([]string, 0, n)
			for range n {
				out = append(out, r.str())
			}
			return out
		}
		out := make([]any, 0, n)
		for range n {
			out = append(out, r.value(et))
		}
		return out
	}
	r.err = fmt.Errorf("unknown value type %d", typ)
	return nil
}
