//go:build unix

package app

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// checkOwnDir refuses a directory of the daemon's (what: "state dir", "journal dir"; holds:
// what is in it, for the message) that another user can write to: one owned by a user other
// than this one and root (a state_dir under /tmp that someone else created first), or writable
// by every user. Whoever can write there can plant the api-key file the daemon adopts, swap
// its engines' key and log files for links, or forge the journal's tasks that a restart
// replays. A group-writable one is left alone: with a user private group, the usual umask 002
// makes every directory so (the state directory that `make run` creates included).
func checkOwnDir(what, dir, holds string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s %s is owned by uid %d, not by this user (uid %d) or root: it holds %s; give the daemon a directory of its own", what, dir, st.Uid, os.Geteuid(), holds)
	}
	if perm := fi.Mode().Perm(); perm&0o002 != 0 {
		return fmt.Errorf("%s %s is writable by every user (mode %#o): it holds %s; chmod o-w it, or give the daemon a directory of its own", what, dir, perm, holds)
	}
	return nil
}

// checkKeyFile refuses the key file at path, with info fi, when other users may read or write
// it: the daemon writes it 0600, and a copy an operator wrote with the usual umask (0644) hands
// its all-scopes key to every local user.
func checkKeyFile(path string, fi os.FileInfo) error {
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("api key file %s is open to other users (mode %#o): chmod 600 it, or remove it for a new key", path, perm)
	}
	return nil
}

// foreignWritable reports whether another user could have put, or could swap, the file at
// path below the directory root: the file, root or a directory between them is writable by
// every user, or owned by a user other than this one and root (a working directory under
// /tmp that someone else made).
func foreignWritable(root, path string) bool {
	for p := path; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o002 != 0 {
			return true
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
			return true
		}
		if p == root || p == filepath.Dir(p) {
			return false
		}
	}
}
