package engine

import (
	"sync"
	"unsafe"

	"github.com/mailru/easygo/netpoll"
)

// easygoEpoll mirrors the layout of netpoll.Epoll at the version go.mod
// pins (v0.0.0-20190618140210-3c14a0dc985f), whose fds are unexported.
// TestEpollFdsAreCloseOnExec checks the mirror against the kernel's view of
// the process's fds, so a different easygo fails a test, not a deployment.
type easygoEpoll struct {
	mu      sync.RWMutex
	fd      int
	eventFd int
}

// epollFds returns the epoll fd and the eventfd inside an easygo Epoll.
func epollFds(ep *netpoll.Epoll) (epfd, evfd int) {
	m := (*easygoEpoll)(unsafe.Pointer(ep))
	return m.fd, m.eventFd
}
