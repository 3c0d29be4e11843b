package tenant

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// BudgetError is a submission refused because its key's token budget is spent, or its
// session's (Session set).
type BudgetError struct {
	Key string
	// Session is set when the session's budget is spent rather than the key's.
	Session string
	Budget  int64
	// Pending is what the key's (or the session's) admitted tasks still hold reserved: a retry
	// may succeed once they end with tokens unused.
	Pending int64
}

func (e *BudgetError) Error() string {
	if e.Session != "" {
		return fmt.Sprintf("session %s: token budget spent", e.Session)
	}
	return fmt.Sprintf("key %q: token budget of %d spent", e.Key, e.Budget)
}

// Budgets holds each key's token budget: tokens used by tasks that ended (persisted) and
// tokens reserved by tasks admitted and not yet ended (in memory). A task is granted at
// admission its max_tokens, or what is left of the budget when that is less; it is charged
// what it produced when it ends, and the rest of its grant returns. The used counts are written
// to one file under the state directory with an atomic replace (temporary file, fsync,
// rename, fsync of the directory) each time a budgeted task ends.
type Budgets struct {
	path     string
	mu       sync.Mutex
	used     map[string]int64
	reserved map[string]int64
	// settled holds the tasks charged (SettleTask) whose final journal record may not be on
	// disk yet, by that record's mark: a crash before it is would bring the task back, not
	// ended, and a restart would settle it again. They are written with the used counts and
	// forgotten once durable() passes their mark. prev holds those the file named at open (the
	// process before), until Recovered.
	settled map[string]uint64
	prev    map[string]struct{}
	durable func() uint64 // the journal's mark of records on disk; nil: no journal, nothing kept
}

type budgetFile struct {
	Used map[string]int64 `json:"used"`
	// Settled are the tasks charged whose end the journal may not hold yet (see Budgets).
	Settled []string `json:"settled,omitempty"`
}

// OpenBudgets reads the budget file at path (absent: nothing used yet).
func OpenBudgets(path string) (*Budgets, error) {
	b := &Budgets{path: path, used: map[string]int64{}, reserved: map[string]int64{}, settled: map[string]uint64{},
		prev: map[string]struct{}{}}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return b, nil
	case err != nil:
		return nil, fmt.Errorf("budgets: %w", err)
	}
	var f budgetFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("budgets: %s: %w", path, err)
	}
	for k, v := range f.Used {
		if v > 0 {
			b.used[k] = v
		}
	}
	for _, id := range f.Settled {
		b.prev[id] = struct{}{}
	}
	return b, nil
}

// TrackDurable makes SettleTask keep each charged task until durable, the journal's mark of
// the records on disk, passes the mark of its final record. Called once, before any settle.
func (b *Budgets) TrackDurable(durable func() uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.durable = durable
}

// Recovered forgets the tasks the budget file named at open: the restart has settled again
// those the journal brought back unended (SettleTask charged them nothing), and the others
// ended in the journal. They leave the file at its next write.
func (b *Budgets) Recovered() {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.prev)
}

// Reserve grants a task of k up to want tokens. Without a budget the grant is want and
// remaining is -1. A spent budget is a *BudgetError.
func (b *Budgets) Reserve(k *Key, want int) (grant int, remaining int64, err error) {
	if k.TokenBudget <= 0 {
		return want, -1, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	left := k.TokenBudget - b.used[k.Name] - b.reserved[k.Name]
	if left <= 0 {
		return 0, 0, &BudgetError{Key: k.Name, Budget: k.TokenBudget, Pending: b.reserved[k.Name]}
	}
	grant = int(min(int64(want), left))
	b.reserved[k.Name] += int64(grant)
	return grant, left - int64(grant), nil
}

// Remaining is what k may still reserve (-1: no budget).
func (b *Budgets) Remaining(k *Key) int64 {
	if k.TokenBudget <= 0 {
		return -1
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(0, k.TokenBudget-b.used[k.Name]-b.reserved[k.Name])
}

// Restore reserves again, after a restart, the grant of a recovered task that has not ended:
// reservations live in memory only, and the task was granted those tokens within the budget
// before the restart, so they are held whatever is left now. Its Settle ends the grant.
func (b *Budgets) Restore(name string, granted int) {
	if granted <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserved[name] += int64(granted)
}

// Settle ends a grant: used tokens are charged to the key named name, the rest of granted
// returns, and the used counts are persisted. A grant of 0 (no budget) charges nothing. A
// recovered task's grant is reserved again at the restart (Restore) before it is settled.
func (b *Budgets) Settle(name string, granted, used int) error {
	return b.SettleTask(name, "", 0, granted, used)
}

// PendingMark is the mark of a task's final journal record that is appended after its settle:
// the task stays named in the file until Journaled gives the record's mark and the journal has
// it on disk.
const PendingMark uint64 = math.MaxUint64

// Journaled gives the mark of the final journal record of task, settled with PendingMark.
func (b *Budgets) Journaled(task string, mark uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m, ok := b.settled[task]; ok && m == PendingMark {
		b.settled[task] = mark
	}
}

// SettleTask is Settle for task, whose final journal record has the mark given (0: none;
// PendingMark: appended after the settle, its mark given by Journaled): a
// task already charged, in this process or (named by the file) the one before, is not charged
// again, only its grant returns. It happens when the daemon stopped after the charge was
// written and before the journal had the task's end on disk: the restart finds the task
// unended and ends it again.
func (b *Budgets) SettleTask(name, task string, mark uint64, granted, used int) error {
	if granted <= 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	_, again := b.settled[task]
	if _, ok := b.prev[task]; ok {
		again = true
	}
	b.reserved[name] = max(0, b.reserved[name]-int64(granted))
	if b.reserved[name] == 0 {
		delete(b.reserved, name)
	}
	if again || used <= 0 {
		return nil
	}
	b.used[name] += int64(used)
	if b.durable != nil && task != "" && mark != 0 {
		b.settled[task] = mark
		done := b.durable()
		for id, m := range b.settled {
			if m <= done {
				delete(b.settled, id)
			}
		}
	}
	return b.persistLocked()
}

// Used is the tokens charged to the key named name by tasks that ended.
func (b *Budgets) Used(name string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used[name]
}

// persistLocked replaces the budget file atomically: a crash leaves the old or the new file,
// never a torn one.
func (b *Budgets) persistLocked() error {
	f := budgetFile{Used: b.used}
	for id := range b.settled {
		f.Settled = append(f.Settled, id)
	}
	for id := range b.prev {
		f.Settled = append(f.Settled, id)
	}
	slices.Sort(f.Settled)
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	dir := filepath.Dir(b.path)
	tmp, err := os.CreateTemp(dir, ".budgets-*")
	if err != nil {
		return fmt.Errorf("budgets: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone after the rename; there after a failure
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("budgets: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("budgets: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("budgets: %w", err)
	}
	if err := os.Rename(tmp.Name(), b.path); err != nil {
		return fmt.Errorf("budgets: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
