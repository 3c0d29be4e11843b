package app

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/orchestratord/orchestratord/impl/pool"
)

// installDirs are where `make engine` / `make run` install an engine's program, relative to the
// repository: tools/ensure-llama-server.sh puts llama-server in .tools/llama. A daemon started
// by hand (bin/orchestratord, from the repository or elsewhere) finds it there, next to its
// binary's directory or under the working directory, when it is not on PATH.
var installDirs = map[string]string{"llamacpp": filepath.Join(".tools", "llama")}

// programHints says, per engine, what to set when its program is missing.
var programHints = map[string]string{
	"llamacpp": "set ORCHD_LLAMA_SERVER (or --llama-server, or llama_server: in the config) to a llama-server binary, or run make engine",
}

// resolveProgram returns the path of a managed replica's program: name itself when it holds a
// slash, else name on PATH, else (for the engine's default program only) the install
// directory under the binary's parent or the working directory, unless another user may write
// there. A missing program is a permanent StartError that says what to set.
func resolveProgram(engineName, name string, isDefault bool, exe, wd string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	if dir, ok := installDirs[engineName]; ok && isDefault && filepath.Base(name) == name {
		var roots []string
		if exe != "" {
			roots = append(roots, filepath.Dir(filepath.Dir(exe))) // bin/orchestratord -> the repository
		}
		if wd != "" {
			roots = append(roots, wd)
		}
		for _, root := range roots {
			cand := filepath.Join(root, dir, name)
			// Not from a directory another user may write to (cd /tmp; orchestratord): that
			// user's program would run as the daemon's (exec.ErrDot, for PATH, is the same rule).
			if fi, err := os.Stat(cand); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 && !foreignWritable(root, cand) {
				return cand, nil
			}
		}
	}
	hint := programHints[engineName]
	if hint == "" {
		hint = fmt.Sprintf("set programs.%s in the config to its path, or put %s on PATH", engineName, name)
	}
	return "", &pool.StartError{Reason: pool.ReasonProgramNotFound, Permanent: true,
		Message: fmt.Sprintf("engine program %s not found: %s", name, hint)}
}
