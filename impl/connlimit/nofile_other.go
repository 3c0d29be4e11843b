//go:build !unix

package connlimit

func openFileLimit() uint64 { return 0 }
