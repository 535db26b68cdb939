package gateway

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/wsfleet/wsfleet/internal/wsframe"
	"github.com/wsfleet/wsfleet/protocol"
)

func masked(p string) []byte {
	h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(p)), Masked: true, Mask: [4]byte{3, 1, 4, 1}}
	b := []byte(p)
	ws.Cipher(b, h.Mask, 0)
	return append(wsframe.Append(nil, h), b...)
}

// A socket holding more than one event's read budget is read to the end,
// even though no new bytes (no new edge-triggered event) arrive after it.
func TestReadBudgetContinues(t *testing.T) {
	_, l := benchServerBuf(t, 64) // a budget of 16 reads is then 1 KiB
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := os.NewFile(uintptr(fds[1]), "peer")
	defer peer.Close()
	c := testConn(l, fds[0], stOpen)
	defer unix.Close(fds[0])

	var burst []byte
	for len(burst) < 32<<10 {
		burst = append(burst, masked(`{"type":"pong"}`)...)
	}
	burst = append(burst, masked(`{"type":"ping"}`)...)
	if _, err := peer.Write(burst); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		var out []byte
		buf := make([]byte, 1024)
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		for !bytes.Contains(out, protocol.PongJSON) {
			n, err := peer.Read(buf)
			if err != nil {
				break
			}
			out = append(out, buf[:n]...)
		}
		got <- out
	}()
	// As the loop would on an event; the rest goes through a taskRead.
	c.readEvent(false)
	if out := <-got; !bytes.Contains(out, protocol.PongJSON) {
		t.Fatalf("the ping at the end of a %d-byte burst was never read (got %q)", len(burst), out)
	}
}
