//go:build !linux

package journal

import (
	"errors"
	"os"
)

// datasync is fsync where fdatasync is not available.
func datasync(f *os.File) error { return f.Sync() }

// preallocate is not available: the segment grows with each write.
func preallocate(*os.File, int64, int64) error { return errors.ErrUnsupported }
