//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package statelock

import (
	"fmt"
	"os"
)

// Lock only creates dir where flock is not available.
func Lock(dir, what string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return nil, nil
}
