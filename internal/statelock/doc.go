// Package statelock keeps two daemons off one state directory. Its journal, budgets, artifacts
// and engine keys are each one process's: a second daemon given the same state_dir would
// rewrite and append to the first one's journal segment while it runs.
package statelock
