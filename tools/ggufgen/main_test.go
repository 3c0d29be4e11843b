package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/orchestratord/orchestratord/internal/gguf"
)

// TestMainFlags runs the command's main with flags and checks it wrote what gguf.Write
// writes for the same options.
func TestMainFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		opts func(*gguf.Options)
	}{
		{"defaults", nil, func(*gguf.Options) {}},
		{"eos and size", []string{"-eos", "-embd", "32", "-layers", "1", "-heads", "2", "-ff", "64", "-seed", "3", "-noise", "0.01"}, func(o *gguf.Options) {
			*o = gguf.Options{Embd: 32, Layers: 1, Heads: 2, FF: 64, EOS: true, Seed: 3, Noise: 0.01}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "m.gguf")
			oldArgs, oldFlags := os.Args, flag.CommandLine
			t.Cleanup(func() { os.Args, flag.CommandLine = oldArgs, oldFlags })
			os.Args = append([]string{"ggufgen", "-o", out}, tt.args...)
			flag.CommandLine = flag.NewFlagSet("ggufgen", flag.ContinueOnError)
			main()

			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			o := gguf.DefaultOptions()
			tt.opts(&o)
			var want bytes.Buffer
			if err := gguf.Write(&want, o); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Error("ggufgen output differs from gguf.Write with the same options")
			}
		})
	}
}
