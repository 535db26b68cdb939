// Package poller is the event loop of wsfleet's engines: one easygo epoll
// instance (github.com/mailru/easygo/netpoll) with its wait goroutine, plus
// an eventfd that runs tasks posted from other goroutines and a timerfd that
// ticks, both on that same goroutine. Whatever a poller owns is therefore
// touched by one goroutine only, without locks.
//
// It registers raw file descriptors the caller owns. It never wraps a
// net.Conn, never calls netpoll.Handle* or (*os.File).Fd (which dup the fd
// and make it blocking). Sockets, frames and timers of connections live in
// the packages that use it.
package poller

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mailru/easygo/netpoll"
	"golang.org/x/sys/unix"
)

// Event bits, re-exported from easygo for callers.
const (
	EventRead   = netpoll.EPOLLIN
	EventWrite  = netpoll.EPOLLOUT
	EventRdHup  = netpoll.EPOLLRDHUP
	EventHup    = netpoll.EPOLLHUP
	EventErr    = netpoll.EPOLLERR
	EventEdge   = netpoll.EPOLLET
	EventClosed = netpoll.EpollEvent(0x20) // easygo's _EPOLLCLOSED: the epoll instance closed
	// EventExclusive is EPOLLEXCLUSIVE: of several epoll instances waiting on
	// one listening socket, only one is woken per connection.
	EventExclusive = netpoll.EpollEvent(unix.EPOLLEXCLUSIVE)
)

// Config configures a Poller. T is the type of task posted to it.
type Config[T any] struct {
	// OnTask runs each posted task on the poller goroutine. Required.
	OnTask func(T)
	// Tick is the interval of OnTick; zero means no ticks.
	Tick time.Duration
	// OnTick runs every Tick on the poller goroutine.
	OnTick func()
	// OnError is told of epoll_wait failures. Default: ignore.
	OnError func(error)
}

// Poller is one epoll instance and its goroutine.
type Poller[T any] struct {
	ep      *netpoll.Epoll
	efd     int
	tfd     int
	onTask  func(T)
	onTick  func()
	mu      sync.Mutex
	closed  bool
	tasks   []T
	running []T
	scratch [8]byte
}

// New creates a Poller and starts its goroutine.
func New[T any](cfg Config[T]) (*Poller[T], error) {
	if cfg.OnTask == nil {
		return nil, errors.New("poller: OnTask is required")
	}
	onErr := cfg.OnError
	if onErr == nil {
		onErr = func(error) {}
	}
	ep, err := netpoll.EpollCreate(&netpoll.EpollConfig{OnWaitError: onErr})
	if err != nil {
		return nil, fmt.Errorf("poller: epoll_create: %w", err)
	}
	p := &Poller[T]{ep: ep, efd: -1, tfd: -1, onTask: cfg.OnTask, onTick: cfg.OnTick}
	p.efd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("poller: eventfd: %w", err)
	}
	if err := ep.Add(p.efd, EventRead|EventEdge, p.onWake); err != nil {
		p.Close()
		return nil, fmt.Errorf("poller: register eventfd: %w", err)
	}
	if cfg.Tick > 0 && cfg.OnTick != nil {
		p.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("poller: timerfd: %w", err)
		}
		ts := unix.NsecToTimespec(cfg.Tick.Nanoseconds())
		spec := unix.ItimerSpec{Interval: ts, Value: ts}
		if err := unix.TimerfdSettime(p.tfd, 0, &spec, nil); err != nil {
			p.Close()
			return nil, fmt.Errorf("poller: timerfd_settime: %w", err)
		}
		if err := ep.Add(p.tfd, EventRead|EventEdge, p.onTimer); err != nil {
			p.Close()
			return nil, fmt.Errorf("poller: register timerfd: %w", err)
		}
	}
	return p, nil
}

// Add registers fd; cb runs on the poller goroutine for each event.
// cb receives EventClosed once when the poller closes with fd still added.
func (p *Poller[T]) Add(fd int, events netpoll.EpollEvent, cb func(netpoll.EpollEvent)) error {
	return p.ep.Add(fd, events, cb)
}

// Mod changes the events fd is watched for.
func (p *Poller[T]) Mod(fd int, events netpoll.EpollEvent) error { return p.ep.Mod(fd, events) }

// Del unregisters fd. Call it before closing fd: a closed fd number is soon
// reused by the kernel.
func (p *Poller[T]) Del(fd int) error { return p.ep.Del(fd) }

// Post queues t to run on the poller goroutine. It never blocks. A task
// posted after Close is dropped.
func (p *Poller[T]) Post(t T) {
	p.mu.Lock()
	if !p.closed {
		p.wakeLocked()
		p.tasks = append(p.tasks, t)
	}
	p.mu.Unlock()
}

// PostAll queues several tasks with one wake-up.
func (p *Poller[T]) PostAll(ts []T) {
	if len(ts) == 0 {
		return
	}
	p.mu.Lock()
	if !p.closed {
		p.wakeLocked()
		p.tasks = append(p.tasks, ts...)
	}
	p.mu.Unlock()
}

var one = [8]byte{1, 0, 0, 0, 0, 0, 0, 0}

// wakeLocked signals the eventfd when the queue is empty (otherwise a wake-up
// is already pending). Holding mu keeps Close from closing the eventfd, whose
// number the kernel may hand out again, meanwhile. An eventfd write fails
// only when the counter would overflow, which a pending wake-up makes
// harmless.
func (p *Poller[T]) wakeLocked() {
	if len(p.tasks) == 0 {
		_, _ = unix.Write(p.efd, one[:])
	}
}

func (p *Poller[T]) onWake(ev netpoll.EpollEvent) {
	if ev == EventClosed {
		return
	}
	// Reset the counter before taking the queue: a Post after the swap
	// writes again and wakes us again.
	_, _ = unix.Read(p.efd, p.scratch[:])
	for {
		p.mu.Lock()
		p.tasks, p.running = p.running[:0], p.tasks
		p.mu.Unlock()
		if len(p.running) == 0 {
			return
		}
		for i, t := range p.running {
			p.onTask(t)
			var zero T
			p.running[i] = zero
		}
	}
}

func (p *Poller[T]) onTimer(ev netpoll.EpollEvent) {
	if ev == EventClosed {
		return
	}
	// Several expirations read at once (after a stall) run one tick: the
	// tick's user reads the clock itself.
	for {
		if _, err := unix.Read(p.tfd, p.scratch[:]); err != nil {
			break
		}
	}
	p.onTick()
}

// Close stops the goroutine and releases the epoll, eventfd and timerfd.
// Every fd still added gets EventClosed; closing those fds is the caller's.
func (p *Poller[T]) Close() error {
	var err error
	if p.ep != nil {
		err = p.ep.Close()
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.efd >= 0 {
		unix.Close(p.efd)
		p.efd = -1
	}
	if p.tfd >= 0 {
		unix.Close(p.tfd)
		p.tfd = -1
	}
	return err
}
