// Package devtest holds tests of the developer experience around the Go code: what the
// Makefile prints and passes to the tools it runs. It has no non-test code.
package devtest
