//go:build linux

package connwatch

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller is one epoll set and the eventfd that wakes its goroutine to stop. Its goroutine
// closes both once stopped is set (under Watcher.mu) and it has woken.
type poller struct {
	epfd, evfd int
	stopped    bool
}

// wakeID is the eventfd's id in the epoll set; connections get ids from 1.
const wakeID = 0

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeID}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		_ = unix.Close(evfd)
		_ = unix.Close(epfd)
		return nil, err
	}
	return &poller{epfd: epfd, evfd: evfd}, nil
}

// rawConn returns the connection's descriptor handle, looking through wrappers that expose
// the connection they wrap (NetConn, as crypto/tls does).
func rawConn(c net.Conn) (syscall.RawConn, bool) {
	for {
		if sc, ok := c.(syscall.Conn); ok {
			rc, err := sc.SyscallConn()
			return rc, err == nil
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, false
		}
		c = u.NetConn()
	}
}

// watchFD registers conn's socket for peer hang-up (one-shot) in the watcher's epoll set,
// starting the set and its goroutine if this is the first connection watched.
func (w *Watcher) watchFD(conn net.Conn, onHangup func()) (func(), bool) {
	return w.watchEvents(conn, unix.EPOLLRDHUP, onHangup)
}

// watchInput registers conn's socket for input or peer hang-up (one-shot).
func (w *Watcher) watchInput(conn net.Conn, fn func()) (func(), bool) {
	return w.watchEvents(conn, unix.EPOLLIN|unix.EPOLLRDHUP, fn)
}

// watchEvents registers conn's socket for events (one-shot), calling fn on the first.
func (w *Watcher) watchEvents(conn net.Conn, events uint32, fn func()) (func(), bool) {
	rc, ok := rawConn(conn)
	if !ok {
		return nil, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.poller == nil {
		p, err := newPoller()
		if err != nil {
			return nil, false
		}
		w.poller = p
		w.fns = make(map[uint32]func())
		w.fds = make(map[uint32]struct{})
		go w.run(p)
	}
	p := w.poller
	id := w.newIDLocked()
	var regErr error
	err := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: events | unix.EPOLLONESHOT, Fd: int32(id)}
		regErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err == nil {
		err = regErr
	}
	if err != nil {
		w.stopIfIdleLocked()
		return nil, false
	}
	w.fns[id] = fn
	w.fds[id] = struct{}{}
	return func() { w.unwatch(id, rc) }, true
}

// newIDLocked returns an id not in use (never wakeID).
func (w *Watcher) newIDLocked() uint32 {
	for {
		w.next++
		if _, used := w.fds[w.next]; w.next != wakeID && !used {
			return w.next
		}
	}
}

// unwatch removes id's socket from the set while its descriptor is still open (Control fails
// on a closed connection, whose socket the kernel has already taken out of the set), and stops
// the set once nothing is watched.
func (w *Watcher) unwatch(id uint32, rc syscall.RawConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.fds[id]; !ok {
		return
	}
	p := w.poller
	_ = rc.Control(func(fd uintptr) { _ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil) })
	delete(w.fds, id)
	delete(w.fns, id)
	w.stopIfIdleLocked()
}

// stopIfIdleLocked stops the poller when nothing is watched: its goroutine wakes, sees
// stopped, closes the descriptors and returns.
func (w *Watcher) stopIfIdleLocked() {
	if len(w.fds) > 0 || w.poller == nil {
		return
	}
	p := w.poller
	w.poller = nil
	p.stopped = true
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(p.evfd, one[:])
}

// run waits for hang-ups and calls their callbacks, each once, outside the lock.
func (w *Watcher) run(p *poller) {
	defer func() {
		_ = unix.Close(p.evfd)
		_ = unix.Close(p.epfd)
	}()
	events := make([]unix.EpollEvent, 64)
	var fire []func()
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		w.mu.Lock()
		if p.stopped {
			w.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			id := uint32(ev.Fd)
			if fn, ok := w.fns[id]; ok && id != wakeID {
				delete(w.fns, id)
				fire = append(fire, fn)
			}
		}
		w.mu.Unlock()
		for i, fn := range fire {
			fn()
			fire[i] = nil
		}
		fire = fire[:0]
	}
}
