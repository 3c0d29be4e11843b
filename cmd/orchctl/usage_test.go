package main

import "testing"

// TestUnknownCommandIsAUsageError: README and `orchctl --help` promise exit 2 for a bad
// command line. A mistyped command exits 1 (as if the network failed); a mistyped subcommand
// of a command group (tasks, sessions, artifacts, pools) prints the group's help and exits 0,
// so `orchctl tasks cancle ID` in a script "succeeds" without canceling anything.
func TestUnknownCommandIsAUsageError(t *testing.T) {
	env := map[string]string{"ORCHD_URL": "http://127.0.0.1:1", "ORCHD_API_KEY": "k"}
	for _, args := range [][]string{
		{"bogus"},
		{"tasks", "cancle", "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11"},
		{"pools", "drian", "default"},
		{"sessions", "delete", "6f1c5e1a-3c1e-4b0e-9a57-0d8d2b6c9a11"},
	} {
		if r := orchctl(t, env, "", args...); r.code != exitUsage {
			t.Errorf("orchctl %v: exit %d (stdout %d bytes, stderr %q), want %d (bad command line)", args, r.code, len(r.stdout), r.stderr, exitUsage)
		}
	}
	for _, args := range [][]string{{}, {"tasks"}, {"pools"}} { // a group alone: its help
		if r := orchctl(t, env, "", args...); r.code != 0 || len(r.stdout) == 0 {
			t.Errorf("orchctl %v: exit %d, %d bytes of help; want 0 and the help", args, r.code, len(r.stdout))
		}
	}
}
