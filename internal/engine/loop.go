package engine

import (
	"cmp"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
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

// Event is a set of epoll event bits.
type Event = netpoll.EpollEvent

// Config configures a Loop. T is the type of task posted to it.
type Config[T any] struct {
	// OnTask runs each posted task on the loop goroutine. Required.
	OnTask func(T)
	// Tick is the interval of OnTick; zero means no ticks.
	Tick time.Duration
	// OnTick runs every Tick on the loop goroutine, after Now was updated.
	OnTick func()
	// Nanotime is the loop's clock in nanoseconds, read at every tick (and
	// at New) to update Now. Default: monotonic time since New.
	Nanotime func() int64
	// OnError is told of epoll_wait failures, after which the loop runs
	// nothing more. Default: ignore.
	OnError func(error)
	// MaxCost bounds the summed cost of droppable tasks waiting (TryPost).
	// Default 0: no bound.
	MaxCost int64
	// HeavyPerWake is how many droppable tasks one wake-up runs before it
	// lets the ready socket events and the tick go first. Default 1.
	HeavyPerWake int
	// ReadBufSize is the size of the loop's read scratch buffer.
	// Default ReadBufSize (64 KiB).
	ReadBufSize int
}

// Loop is one epoll instance and the goroutine that waits on it.
type Loop[T any] struct {
	ep       *netpoll.Epoll
	efd      int
	tfd      int
	onTask   func(T)
	onTick   func()
	nanotime func() int64
	tick     time.Duration
	maxCost  int64
	heavyMax int

	mu     sync.Mutex
	closed bool
	tasks  []item[T] // posted, not yet taken

	cost    atomic.Int64 // of droppable tasks posted and not yet run
	ticking atomic.Bool  // StartTicks ran: what OnTick uses is wired (and visible to this goroutine)

	// Loop goroutine only.
	pending []item[T] // taken by a wake-up and not yet run
	head    int
	now     atomic.Uint32
	scratch [8]byte
	rbuf    []byte
	iov     []unix.Iovec
}

type item[T any] struct {
	t    T
	cost int64
	drop bool // posted with TryPost
}

// ReadBufSize is the size of each loop's read scratch buffer.
const ReadBufSize = 64 << 10

// maxIovecs is how many queued buffers one writev takes.
const maxIovecs = 64

// New creates a Loop and starts its goroutine; its ticks start with
// StartTicks.
func New[T any](cfg Config[T]) (*Loop[T], error) {
	if cfg.OnTask == nil {
		return nil, errors.New("engine: OnTask is required")
	}
	onErr := cfg.OnError
	if onErr == nil {
		onErr = func(error) {}
	}
	l := &Loop[T]{
		efd: -1, tfd: -1,
		onTask: cfg.OnTask, onTick: cfg.OnTick, nanotime: cfg.Nanotime, tick: cfg.Tick,
		maxCost: cfg.MaxCost, heavyMax: max(cfg.HeavyPerWake, 1),
		rbuf: make([]byte, cmp.Or(cfg.ReadBufSize, ReadBufSize)),
		iov:  make([]unix.Iovec, 0, maxIovecs),
	}
	if l.nanotime == nil {
		start := time.Now()
		l.nanotime = func() int64 { return int64(time.Since(start)) }
	}
	l.updateNow()
	ep, err := epollCreate(onErr)
	if err != nil {
		return nil, fmt.Errorf("engine: epoll_create: %w", err)
	}
	l.ep = ep
	l.efd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("engine: eventfd: %w", err)
	}
	if err := ep.Add(l.efd, EventRead|EventEdge, l.onWake); err != nil {
		l.Close()
		return nil, fmt.Errorf("engine: register eventfd: %w", err)
	}
	if cfg.Tick > 0 && cfg.OnTick != nil {
		l.tfd, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("engine: timerfd: %w", err)
		}
		if err := ep.Add(l.tfd, EventRead|EventEdge, l.onTimer); err != nil {
			l.Close()
			return nil, fmt.Errorf("engine: register timerfd: %w", err)
		}
	}
	return l, nil
}

// StartTicks arms the tick, once the caller has wired what OnTick uses:
// before it, the loop runs tasks and socket events but never OnTick.
func (l *Loop[T]) StartTicks() error {
	if l.tfd < 0 {
		return nil
	}
	l.ticking.Store(true)
	ts := unix.NsecToTimespec(l.tick.Nanoseconds())
	spec := unix.ItimerSpec{Interval: ts, Value: ts}
	if err := unix.TimerfdSettime(l.tfd, 0, &spec, nil); err != nil {
		return fmt.Errorf("engine: timerfd_settime: %w", err)
	}
	return nil
}

// epollCreate is netpoll.EpollCreate with close-on-exec set on the epoll
// fd and easygo's eventfd, which easygo creates without it. ForkLock is
// held across both, as the standard library does for fds it cannot create
// close-on-exec atomically, so no fork in between inherits them.
func epollCreate(onErr func(error)) (*netpoll.Epoll, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	ep, err := netpoll.EpollCreate(&netpoll.EpollConfig{OnWaitError: onErr})
	if err != nil {
		return nil, err
	}
	epfd, evfd := epollFds(ep)
	unix.CloseOnExec(epfd)
	unix.CloseOnExec(evfd)
	return ep, nil
}

// Now is the loop's clock in ticks, as of the last tick. Any goroutine may
// read it.
func (l *Loop[T]) Now() uint32 { return l.now.Load() }

// Ticks converts a duration to ticks, rounding up.
func (l *Loop[T]) Ticks(d time.Duration) uint32 {
	if l.tick <= 0 {
		return 0
	}
	return uint32((d + l.tick - 1) / l.tick)
}

// TickDuration is the loop's tick.
func (l *Loop[T]) TickDuration() time.Duration { return l.tick }

func (l *Loop[T]) updateNow() {
	if l.tick > 0 {
		l.now.Store(uint32(time.Duration(l.nanotime()) / l.tick))
	}
}

// ReadBuf is the loop's read scratch buffer, for the loop goroutine only:
// input is parsed in it and copied only when incomplete.
func (l *Loop[T]) ReadBuf() []byte { return l.rbuf }

// Iov is the loop's iovec scratch for FlushLocked, loop goroutine only.
func (l *Loop[T]) Iov() []unix.Iovec { return l.iov }

// Add registers fd; cb runs on the loop goroutine for each event, and once
// with EventClosed when the loop closes with fd still added.
func (l *Loop[T]) Add(fd int, events Event, cb func(Event)) error {
	return l.ep.Add(fd, events, cb)
}

// Mod changes the events fd is watched for.
func (l *Loop[T]) Mod(fd int, events Event) error { return l.ep.Mod(fd, events) }

// Del unregisters fd. Call it before closing fd: a closed fd number is soon
// reused by the kernel.
func (l *Loop[T]) Del(fd int) error { return l.ep.Del(fd) }

// Post queues a lifecycle task (a verdict, a close, a drain step) to run on
// the loop goroutine. It never blocks and never refuses: the caller bounds
// how many it posts (a few per connection at most). A task posted after
// Close is dropped.
func (l *Loop[T]) Post(t T) {
	l.mu.Lock()
	if !l.closed {
		l.wakeLocked()
		l.tasks = append(l.tasks, item[T]{t: t})
	}
	l.mu.Unlock()
}

// TryPost queues a droppable task of the given cost (its bytes, say) unless
// the droppable tasks already waiting cost MaxCost or more. It reports
// whether the task was queued; a refused one is the caller's to count.
func (l *Loop[T]) TryPost(t T, cost int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || (l.maxCost > 0 && l.cost.Load()+cost > l.maxCost) {
		return false
	}
	l.cost.Add(cost)
	l.wakeLocked()
	l.tasks = append(l.tasks, item[T]{t: t, cost: cost, drop: true})
	return true
}

// QueuedCost is the summed cost of droppable tasks not yet run.
func (l *Loop[T]) QueuedCost() int64 { return l.cost.Load() }

var one = [8]byte{1, 0, 0, 0, 0, 0, 0, 0}

// wakeLocked signals the eventfd when the queue is empty (otherwise a wake-up
// is already pending). Holding mu keeps Close from closing the eventfd, whose
// number the kernel may hand out again, meanwhile. An eventfd write fails
// only when the counter would overflow, which a pending wake-up makes
// harmless.
func (l *Loop[T]) wakeLocked() {
	if len(l.tasks) == 0 {
		_, _ = unix.Write(l.efd, one[:])
	}
}

// onWake runs the tasks found when it starts: every lifecycle task, and at
// most heavyMax droppable ones. What is left waits for the next wake-up,
// which it signals, so the socket events and the tick already ready run
// first.
func (l *Loop[T]) onWake(ev Event) {
	if ev == EventClosed {
		return
	}
	// Reset the counter before taking the queue: a Post after the swap
	// writes again and wakes us again.
	_, _ = unix.Read(l.efd, l.scratch[:])
	l.mu.Lock()
	if l.head == len(l.pending) {
		l.pending, l.tasks = l.tasks, l.pending[:0]
		l.head = 0
	} else {
		// Tasks left by the last wake-up go first; compact them to the front.
		n := copy(l.pending, l.pending[l.head:])
		clear(l.pending[n:])
		l.pending, l.head = append(l.pending[:n], l.tasks...), 0
		clear(l.tasks)
		l.tasks = l.tasks[:0]
	}
	l.mu.Unlock()
	heavy := 0
	for l.head < len(l.pending) {
		it := &l.pending[l.head]
		if it.drop {
			if heavy == l.heavyMax {
				break
			}
			heavy++
		}
		t, cost := it.t, it.cost
		*it = item[T]{}
		l.head++
		l.onTask(t)
		if cost != 0 {
			l.cost.Add(-cost)
		}
	}
	if l.head < len(l.pending) {
		l.mu.Lock()
		if !l.closed {
			_, _ = unix.Write(l.efd, one[:])
		}
		l.mu.Unlock()
		return
	}
	l.pending, l.head = l.pending[:0], 0
}

func (l *Loop[T]) onTimer(ev Event) {
	if ev == EventClosed {
		return
	}
	// Several expirations read at once (after a stall) run one tick: the
	// tick's user reads the clock itself.
	for {
		if _, err := unix.Read(l.tfd, l.scratch[:]); err != nil {
			break
		}
	}
	if !l.ticking.Load() {
		return
	}
	l.updateNow()
	l.onTick()
}

// Close stops the goroutine and releases the epoll, eventfd and timerfd.
// Every fd still added gets EventClosed; closing those fds is the caller's.
// Tasks still queued are dropped.
func (l *Loop[T]) Close() error {
	var err error
	if l.ep != nil {
		err = l.ep.Close()
	}
	l.mu.Lock()
	l.closed = true
	clear(l.tasks)
	l.tasks = nil
	l.cost.Store(0)
	l.mu.Unlock()
	if l.efd >= 0 {
		unix.Close(l.efd)
		l.efd = -1
	}
	if l.tfd >= 0 {
		unix.Close(l.tfd)
		l.tfd = -1
	}
	return err
}
