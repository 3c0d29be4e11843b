//go:build !linux

package app

import (
	"net"
	"time"
)

// deferAccept is Linux's TCP_DEFER_ACCEPT; elsewhere connections are accepted at once.
func deferAccept(net.Listener, time.Duration) bool { return false }
