package main

import (
	"strings"
	"testing"
)

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

// TestBadFlagValuesAreUsageErrors guards that --priority and --deadline are checked locally
// against the contract (interactive or batch; deadline_ms 1 to 86400000 for a task, 1 to
// 3600000 for a drain) before any request: sent as they are, they would exit 3 with the daemon
// up and 1 with it down, so a script could not tell its own typo from a refusal or an outage.
func TestBadFlagValuesAreUsageErrors(t *testing.T) {
	down := map[string]string{"ORCHD_URL": "http://127.0.0.1:1", "ORCHD_API_KEY": "k"}
	for _, args := range [][]string{
		{"run", "--priority", "urgent", "hi"},
		{"run", "--deadline", "-1s", "hi"},
		{"run", "--deadline", "500us", "hi"},
		{"run", "--deadline", "25h", "hi"},
		{"pools", "drain", "p1", "--deadline", "-1s"},
		{"pools", "drain", "p1", "--deadline", "2h"},
	} {
		if r := orchctl(t, down, "", args...); r.code != exitUsage {
			t.Errorf("orchctl %v: exit %d, stderr %q; want %d (bad command line)", args, r.code, r.stderr, exitUsage)
		}
	}
	// The bounds themselves are valid: these reach the (absent) daemon.
	for _, args := range [][]string{
		{"run", "--priority", "batch", "--deadline", "24h", "hi"},
		{"run", "--deadline", "1ms", "hi"},
		{"pools", "drain", "p1", "--deadline", "1h"},
	} {
		if r := orchctl(t, down, "", args...); r.code != exitError {
			t.Errorf("orchctl %v: exit %d, stderr %q; want %d (the daemon is down)", args, r.code, r.stderr, exitError)
		}
	}
}

// `orchctl version` prints its own version, and a daemon it cannot reach is an error (exit 1,
// the message on stderr), not a line on stdout and exit 0: a script that checks the daemon
// with it learns that it is down.
func TestVersionWithTheDaemonDown(t *testing.T) {
	down := map[string]string{"ORCHD_URL": "http://127.0.0.1:1", "ORCHD_API_KEY": "k"}
	r := orchctl(t, down, "", "version")
	if r.code != exitError || !strings.HasPrefix(r.stdout, "orchctl ") || strings.Contains(r.stdout, "daemon") ||
		!strings.Contains(r.stderr, "daemon") {
		t.Errorf("exit %d, stdout %q, stderr %q; want %d, orchctl's version on stdout and the daemon's error on stderr",
			r.code, r.stdout, r.stderr, exitError)
	}
}
