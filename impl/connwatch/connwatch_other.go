//go:build !linux

package connwatch

import "net"

type poller struct{}

// watchFD is unavailable without epoll: Watch falls back to a read per connection.
func (w *Watcher) watchFD(net.Conn, func()) (func(), bool) { return nil, false }

// watchInput is unavailable without epoll: WatchInput reports false.
func (w *Watcher) watchInput(net.Conn, func()) (func(), bool) { return nil, false }
