package devtest

import (
	"os"
	"strings"
	"testing"
)

// The README's first example runs on a machine without uuidgen: the daemon chooses the ids.
func TestREADMEFirstExampleNeedsNoUUIDGen(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, using, ok := strings.Cut(string(b), "\n## Using it\n")
	if !ok {
		t.Fatal(`README has no "## Using it" section`)
	}
	first, _, _ := strings.Cut(using, "\n```\n")
	for _, tool := range []string{"uuidgen", "/proc/sys/kernel/random/uuid", "jq "} {
		if strings.Contains(first, tool) {
			t.Errorf("the first example needs %s", strings.TrimSpace(tool))
		}
	}
	if !strings.Contains(first, `"task_id":"([^"]+)"`) {
		t.Error("the first example does not read the generated task id from the admission")
	}
}
