package httpengine

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
)

// A poller reads the engine connections of the generations in flight: one epoll instance of
// its own, level-triggered, whose descriptor waits in Go's poller, and one goroutine that,
// when it wakes, takes every connection that has bytes, reads each once into its answer's
// buffer and hands the lines out (EachLine's callback runs on it). nginx reads its upstreams
// the same way. Against a goroutine per generation reading its own connection this saves,
// per token, the read that finds nothing before a goroutine can wait (Go's poller forgets
// readiness when a new read begins) and a goroutine's wake-up: at 100 streams and more, one
// wake-up and one epoll_wait serve many tokens.
//
// The goroutine runs while connections are registered and ends with the last one.
type poller struct {
	epfd int
	file *os.File // epfd, in Go's poller: it is readable when a connection is

	mu    sync.Mutex
	slots []*connBody // registered answers, by slot (the event's data)
	gens  []int32     // each slot's generation, so that an event is never taken for a later owner
	free  []int32
	// n is the registered connections. It can be below 0 for a moment: the loop can end a
	// read that add registered with the kernel and has not counted yet. add's count follows,
	// and it starts a loop if this one ended meanwhile.
	n       int
	running bool // a goroutine runs loop

	// afterAdd, when set (tests), runs in add between a connection's registration with the
	// kernel and its count.
	afterAdd func()

	// The loop's own.
	evs  []syscall.EpollEvent
	due  []*connBody
	wait func(uintptr) bool // p.poll, made once
}

// maxPollEvents bounds the connections taken at one wake-up.
const maxPollEvents = 256

var pollers struct {
	once sync.Once
	ps   []*poller
	err  error
}

// pollerOf returns the poller of the connection fd; an error when epoll is unusable.
func pollerOf(fd int) (*poller, error) {
	pollers.once.Do(func() {
		n := min(runtime.GOMAXPROCS(0), 8)
		for range n {
			p, err := newPoller()
			if err != nil {
				pollers.err = err
				return
			}
			pollers.ps = append(pollers.ps, p)
		}
	})
	if pollers.err != nil {
		return nil, pollers.err
	}
	return pollers.ps[fd%len(pollers.ps)], nil
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	p := &poller{epfd: epfd, file: os.NewFile(uintptr(epfd), "enginepoll"), evs: make([]syscall.EpollEvent, maxPollEvents),
		due: make([]*connBody, maxPollEvents)}
	p.wait = p.poll
	return p, nil
}

// add registers b's connection fd; its events go to b.polled until remove.
func (p *poller) add(b *connBody, fd int) error {
	p.mu.Lock()
	var slot int32
	if k := len(p.free); k > 0 {
		slot = p.free[k-1]
		p.free = p.free[:k-1]
	} else {
		slot = int32(len(p.slots))
		p.slots = append(p.slots, nil)
		p.gens = append(p.gens, 0)
	}
	// b's fields are set before it is published under p.mu: the loop reads them after taking
	// p.mu to look the slot up, which orders the two for the memory model (the kernel's
	// ordering of EPOLL_CTL_ADD before the event is invisible to it, and to the race detector).
	b.slot, b.fd = slot, fd
	p.slots[slot] = b
	gen := p.gens[slot]
	p.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP}
	ev.Fd, ev.Pad = slot, gen
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		p.freeSlot(slot)
		p.mu.Unlock()
		return os.NewSyscallError("epoll_ctl", err)
	}
	if p.afterAdd != nil {
		p.afterAdd()
	}
	p.mu.Lock()
	p.n++
	start := !p.running
	p.running = true
	p.mu.Unlock()
	if start {
		go p.loop()
	}
	return nil
}

// remove ends b's registration (on the loop's goroutine).
func (p *poller) remove(b *connBody) {
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, b.fd, nil)
	p.mu.Lock()
	p.freeSlot(b.slot)
	p.n--
	p.mu.Unlock()
}

func (p *poller) freeSlot(slot int32) {
	p.slots[slot] = nil
	p.gens[slot]++
	p.free = append(p.free, slot)
}

func (p *poller) loop() {
	rc, err := p.file.SyscallConn()
	if err == nil {
		err = rc.Read(p.wait)
	}
	if err != nil { // never seen: the descriptor is the poller's own
		p.failAll(err)
	}
}

// poll is the loop's RawConn.Read callback: it serves the connections that have bytes until
// none has, then waits (false); true ends the loop, once nothing is registered.
func (p *poller) poll(epfd uintptr) bool {
	for {
		n, err := syscall.EpollWait(int(epfd), p.evs, 0)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			p.failAll(os.NewSyscallError("epoll_wait", err))
			return true
		}
		again := n == len(p.evs)
		p.mu.Lock()
		for i, ev := range p.evs[:n] {
			if p.gens[ev.Fd] == ev.Pad {
				p.due[i] = p.slots[ev.Fd]
			}
		}
		p.mu.Unlock()
		for i := range n {
			b := p.due[i]
			p.due[i] = nil
			if b != nil && !b.polled(p, p.evs[i].Events) {
				again = true
			}
		}
		if again {
			continue
		}
		// Every connection served was read empty with no end pending: those that get bytes
		// now wake the loop again (the epoll descriptor becomes readable). Below 0, a read
		// ended before add counted it: add starts a loop for what is registered then.
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.n <= 0 {
			p.running = false
			return true
		}
		return false
	}
}

// failAll ends every registered read with err, and the loop.
func (p *poller) failAll(err error) {
	p.mu.Lock()
	due := make([]*connBody, 0, max(p.n, 0))
	for _, b := range p.slots {
		if b != nil {
			due = append(due, b)
		}
	}
	p.mu.Unlock()
	for _, b := range due {
		b.pushEnd(p, err)
	}
	p.mu.Lock()
	p.running = false
	p.mu.Unlock()
}

// pushLines runs a push read of b's lines (wire.eachLine's setting) on the connection's
// poller and waits for its end. ok is false when the connection cannot be polled (the caller
// then reads it itself).
func (b *connBody) pushLines() (ok bool) {
	fd := -1
	if b.rc == nil || b.rc.Control(func(s uintptr) { fd = int(s) }) != nil || fd < 0 {
		return false
	}
	p, err := pollerOf(fd)
	if err != nil {
		return false
	}
	return b.pushLinesOn(p, fd)
}

// pushLinesOn is pushLines on poller p, fd being the connection's descriptor.
func (b *connBody) pushLinesOn(p *poller, fd int) (ok bool) {
	if b.pushed == nil {
		b.pushed = make(chan struct{}, 1)
	}
	if b.r == b.d && b.x == b.w {
		b.wire.release() // nothing buffered: the wait holds no buffer
	}
	b.pushing.Store(true)
	defer b.pushing.Store(false)
	if err := p.add(b, fd); err != nil {
		if b.buf == nil {
			b.getBuf()
			b.r, b.d, b.x, b.w = 0, 0, 0, 0
		}
		return false
	}
	if b.aborted.Load() {
		b.shutRead() // an abort that came before the registration: the loop ends the read
	}
	<-b.pushed
	if b.buf == nil { // a Close reads the end of the body in it
		b.getBuf()
		b.r, b.d, b.x, b.w = 0, 0, 0, 0
	}
	return true
}

// polled serves an event of b's connection on the loop: it reads once (on while a read fills
// the buffer) and hands the lines out. drained: the connection was read empty with no end
// pending, or b's read is over.
func (b *connBody) polled(p *poller, events uint32) (drained bool) {
	if b.aborted.Load() {
		b.pushEnd(p, os.ErrDeadlineExceeded)
		return true
	}
	for {
		if b.buf == nil {
			b.getBuf()
			b.r, b.d, b.x, b.w = 0, 0, 0, 0
		}
		if err := b.room(); err != nil {
			b.linesEnd, b.linesErr, b.err = true, err, err
			b.pushEnd(p, nil)
			return true
		}
		space := len(b.buf) - b.w
		n, err := syscall.Read(b.fd, b.buf[b.w:])
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			if b.r == b.d && b.x == b.w {
				b.wire.release() // nothing buffered: the wait holds no buffer (not connBody.release)
			}
			return true
		case err != nil:
			n, err = 0, b.readError(os.NewSyscallError("read", err))
		case n == 0:
			err = io.EOF
		}
		if b.took(n, err) {
			b.pushEnd(p, nil)
			return true
		}
		if n < space {
			if b.r == b.d && b.x == b.w {
				b.wire.release()
			}
			return events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) == 0
		}
	}
}

// pushEnd ends b's push read (with err when the read failed before its end), and wakes its
// caller.
func (b *connBody) pushEnd(p *poller, err error) {
	p.remove(b)
	if err != nil && !b.linesEnd {
		b.err = b.readError(err)
		b.linesEnd, b.linesErr = true, b.err
	}
	b.pushed <- struct{}{}
}

// shutRead makes an answer's connection read as ended: its poller wakes and ends the read
// (as aborted). The descriptor is held by Control, so it cannot be another's by then.
func (b *connBody) shutRead() {
	sc, ok := b.c.(syscall.Conn)
	if !ok {
		return
	}
	if rc, err := sc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RD) })
	}
}

func (b *wire) readError(err error) error {
	nc := b.c.(net.Conn)
	return &net.OpError{Op: "read", Net: "tcp", Source: nc.LocalAddr(), Addr: nc.RemoteAddr(), Err: err}
}
