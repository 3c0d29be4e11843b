//go:build !linux

package httpengine

// pushLines is false where there is no poller: the caller's goroutine reads the answer.
func (b *connBody) pushLines() bool { return false }

// shutRead has nothing to wake where there is no poller: the deadline ends a read.
func (b *connBody) shutRead() {}
