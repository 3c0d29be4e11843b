//go:build linux

package app_test

import (
	"encoding/json"
	"net/http"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"github.com/orchestratord/orchestratord/engine/fake"
)

// TestJournalFailureIsShown: when the journal's disk refuses a write, the admission it was
// for is refused with a retriable 500 INTERNAL (README, Journal), and journal_failed goes to 1,
// so an operator's alert sees what only a log line said before: the daemon refuses every
// admission until it restarts on a working disk.
func TestJournalFailureIsShown(t *testing.T) {
	d := startFakeDaemon(t, "", fake.Options{}, nil)
	if v := d.metric(t, "journal_failed"); v != 0 {
		t.Fatalf("journal_failed %v at start-up, want 0", v)
	}
	// Every write past the journal file's first byte now fails (EFBIG, as a full disk's
	// ENOSPC would). The limit is the whole process's: it is lifted as soon as the answer came.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 1, Max: old.Max}); err != nil {
		t.Skipf("cannot lower RLIMIT_FSIZE: %v", err)
	}
	res, err := d.do("POST", "/v1/tasks", taskBody(uuid.New(), 1))
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Code      string `json:"code"`
		Retriable bool   `json:"retriable"`
	}
	if res.status != http.StatusInternalServerError || json.Unmarshal(res.body, &e) != nil || e.Code != "INTERNAL" || !e.Retriable {
		t.Fatalf("an admission the journal could not write: %d %s, want 500 INTERNAL, retriable", res.status, res.body)
	}
	if v := d.metric(t, "journal_failed"); v != 1 {
		t.Fatalf("journal_failed %v after the journal failed, want 1", v)
	}
}
