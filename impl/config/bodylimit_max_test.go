package config

import (
	"strings"
	"testing"

	"github.com/orchestratord/orchestratord/impl/journal"
)

// TestBodyLimitFitsAJournalRecord: body_limit_bytes is bounded so that the largest admission
// record a body can make (its text twice, each byte escaped to six) fits the journal's record
// limit. A larger record was written and acknowledged, then taken for corruption at the next
// start, dropping it and every record after it.
func TestBodyLimitFitsAJournalRecord(t *testing.T) {
	if worst := 2 * 6 * MaxBodyLimitBytes; worst+64<<10 > journal.MaxRecordBytes {
		t.Fatalf("MaxBodyLimitBytes %d can make a %d-byte admission record; the journal reads at most %d", MaxBodyLimitBytes, worst, journal.MaxRecordBytes)
	}
	for _, tc := range []struct {
		limit   string
		wantErr bool
	}{
		{"1048576", false},
		{"5242880", false},
		{"5242881", true},
		{"12582912", true},
		{"1023", true},
	} {
		_, err := load(t, minimal+"body_limit_bytes: "+tc.limit+"\n", Overrides{StateDir: t.TempDir()})
		if (err != nil) != tc.wantErr || (err != nil && !strings.Contains(err.Error(), "body_limit_bytes")) {
			t.Errorf("body_limit_bytes %s: err %v, want error %v naming the field", tc.limit, err, tc.wantErr)
		}
	}
}
