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
	// OnTask runs a posted task on the loop goroutine. Required. A long
	// task (a broadcast over many connections) does one step and returns
	// true: it stays first in the queue, with what it recorded in *t, and
	// the next wake-up goes on with it after the socket events and the tick
	// ready meanwhile. Tasks run in the order they were posted.
	OnTask func(t *T) (again bool)
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
	onTask   func(*T) bool
	onTick   func()
	nanotime func() int64
	tick     time.Duration
	maxCost  int64
	heavyMax int

	mu     sync.Mutex
	closed bool
	life   []item[T] // lifecycle tasks posted, not yet taken
	heavy  []item[T] // droppable tasks posted, not yet taken

	cost    atomic.Int64 // of droppable tasks posted and not yet run
	ticking atomic.Bool  // StartTicks ran: what OnTick uses is wired (and visible to this goroutine)

	// Loop goroutine only.
	lq, hq     fifo[T] // taken by a wake-up and not yet run (or not yet done)
	lifeSpare  []item[T]
	heavySpare []item[T]
	now        atomic.Uint32
	scratch    [8]byte
	rbuf       []byte
	iov        []unix.Iovec
}

type item[T any] struct {
	t    T
	cost int64
}

// fifo is a queue of tasks taken from the posters' side: items[head:] wait.
type fifo[T any] struct {
	items []item[T]
	head  int
}

func (q *fifo[T]) empty() bool { return q.head == len(q.items) }

// take appends what was posted, compacting what is left first.
func (q *fifo[T]) take(posted []item[T]) {
	n := copy(q.items, q.items[q.head:])
	clear(q.items[n:])
	q.items, q.head = append(q.items[:n], posted...), 0
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
	userErr := cfg.OnError
	if userErr == nil {
		userErr = func(error) {}
	}
	var l *Loop[T]
	// After a failed epoll_wait the loop runs nothing more: posts are
	// refused from then on, so nothing queues for a loop that is gone.
	onErr := func(err error) {
		l.stopPosts()
		userErr(err)
	}
	l = &Loop[T]{
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
// with EventClosed (on the goroutine that calls Close) when the loop closes
// with fd still added. When Add fails, call Del(fd) before closing fd:
// easygo may have kept the callback, which would refuse the fd number's
// next registration.
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
// how many it posts (a few per connection at most). Every lifecycle task
// found by a wake-up runs in it, before the droppable ones. A task posted
// after Close is dropped.
func (l *Loop[T]) Post(t T) {
	l.mu.Lock()
	if !l.closed {
		l.wakeLocked()
		l.life = append(l.life, item[T]{t: t})
	}
	l.mu.Unlock()
}

// TryPost queues a droppable task of the given cost (its bytes, say) unless
// droppable tasks are already waiting and it would take their cost past
// MaxCost. It reports whether the task was queued; a refused one is the
// caller's to count.
// Droppable tasks run in the order they were posted, at most HeavyPerWake
// a wake-up.
func (l *Loop[T]) TryPost(t T, cost int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A task alone in the queue is taken whatever its cost, so one larger
	// than MaxCost still runs; with others waiting, MaxCost is the bound.
	if queued := l.cost.Load(); l.closed || (l.maxCost > 0 && queued > 0 && queued+cost > l.maxCost) {
		return false
	}
	l.cost.Add(cost)
	l.wakeLocked()
	l.heavy = append(l.heavy, item[T]{t: t, cost: cost})
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
	if len(l.life) == 0 && len(l.heavy) == 0 {
		_, _ = unix.Write(l.efd, one[:])
	}
}

// onWake runs the tasks found when it starts: every lifecycle task, then
// at most heavyMax droppable ones, or one step of a long one that asks to
// run again. What is left waits for the next wake-up, which it signals, so
// the socket events and the tick already ready run first.
func (l *Loop[T]) onWake(ev Event) {
	if ev == EventClosed {
		return
	}
	// Reset the counter before taking the queues: a Post after the swap
	// writes again and wakes us again.
	_, _ = unix.Read(l.efd, l.scratch[:])
	l.mu.Lock()
	life, heavy := l.life, l.heavy
	l.life, l.heavy = l.lifeSpare[:0], l.heavySpare[:0]
	l.mu.Unlock()
	l.lq.take(life)
	clear(life)
	l.lifeSpare = life
	l.hq.take(heavy)
	clear(heavy)
	l.heavySpare = heavy

	for !l.lq.empty() {
		it := &l.lq.items[l.lq.head]
		if l.onTask(&it.t) {
			break // again: first for the next wake-up
		}
		*it = item[T]{}
		l.lq.head++
	}
	for n := 0; n < l.heavyMax && !l.hq.empty(); n++ {
		it := &l.hq.items[l.hq.head]
		if l.onTask(&it.t) {
			break // a step was this wake-up's share
		}
		l.cost.Add(-it.cost)
		*it = item[T]{}
		l.hq.head++
	}
	if l.lq.empty() {
		l.lq.items, l.lq.head = l.lq.items[:0], 0
	}
	if l.hq.empty() {
		l.hq.items, l.hq.head = l.hq.items[:0], 0
	}
	if !l.lq.empty() || !l.hq.empty() {
		l.mu.Lock()
		if !l.closed {
			_, _ = unix.Write(l.efd, one[:])
		}
		l.mu.Unlock()
	}
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

// stopPosts refuses posts from now on and drops the tasks queued.
func (l *Loop[T]) stopPosts() {
	l.mu.Lock()
	l.closed = true
	clear(l.life)
	clear(l.heavy)
	l.life, l.heavy = nil, nil
	l.cost.Store(0)
	l.mu.Unlock()
}

// Close stops the goroutine and releases the epoll, eventfd and timerfd.
// Every fd still added gets EventClosed; closing those fds is the caller's.
// Tasks still queued are dropped.
func (l *Loop[T]) Close() error {
	var err error
	if l.ep != nil {
		err = l.ep.Close()
	}
	l.stopPosts()
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
