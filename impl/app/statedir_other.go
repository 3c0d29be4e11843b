//go:build !unix

package app

import "os"

// checkOwnDir checks nothing where file modes do not say who may write (see
// statedir_unix.go).
func checkOwnDir(string, string, string) error { return nil }

// checkKeyFile checks nothing where file modes do not say who may read (see
// statedir_unix.go).
func checkKeyFile(string, os.FileInfo) error { return nil }

// foreignWritable reports nothing where file modes do not say who may write (see
// statedir_unix.go).
func foreignWritable(string, string) bool { return false }
