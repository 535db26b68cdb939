package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/wsfleet/wsfleet/internal/admin"
)

// controlServer serves actions on the node on a Unix socket
// (ControlSocket): POST /drain. File permissions decide who may call it: a
// process in the same container (the chart's preStop hook runs `gateway
// drain`), never a peer on the network, whatever address it comes from.
type controlServer struct {
	srv  *http.Server
	path string
	done chan struct{}
}

func startControl(s *Server) (*controlServer, error) {
	path := s.opts.ControlSocket
	if err := privateDir(filepath.Dir(path)); err != nil {
		return nil, badOption("control-socket", "%v", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, badOption("control-socket", "%v", err)
	}
	// The directory is the access control: only the node's user can open
	// it, so the socket is never reachable by others, not even for the
	// moment between bind and a chmod.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, badOption("control-socket", "%v", err)
	}
	_ = os.Chmod(path, 0o600) // and the socket itself too
	mux := http.NewServeMux()
	mux.HandleFunc("POST /drain", s.serveDrain)
	c := &controlServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: zap.NewStdLog(s.log.Named("control"))},
		path: path, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		if err := c.srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			s.log.Error("control socket stopped", zap.Error(err))
		}
	}()
	return c, nil
}

func (c *controlServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.srv.Shutdown(ctx); err != nil {
		_ = c.srv.Close()
	}
	<-c.done // Serve's listener removes the socket file
}

// privateDir makes sure dir exists (created with mode 0700 when missing)
// and that other users cannot reach inside it: it, or a directory above
// it, belongs to this process's user and is closed to group and others. A
// directory such as /tmp, open to everyone all the way up, is refused.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	// The directory the socket really lands in: a symlink on the way is
	// followed before the walk up, which must see that directory's parents.
	abs, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	if abs, err = filepath.Abs(abs); err != nil {
		return err
	}
	for d := abs; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", d)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && int(st.Uid) == os.Geteuid() && fi.Mode().Perm()&0o077 == 0 {
			return nil
		}
		if d == filepath.Dir(d) {
			return fmt.Errorf("directory %s is open to other users: put the socket in a directory only this user can open, e.g. /tmp/wsfleet/gateway.sock (created with mode 0700)", dir)
		}
	}
}

// removeStaleSocket removes a socket file a previous process left behind;
// a socket another process still serves is an error.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return errors.New(path + " exists and is not a socket")
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return errors.New(path + " is served by another process")
	}
	return os.Remove(path)
}

// serveDrain starts the node's drain (Drain) and answers 202
// {"status":"draining"}; with ?wait it answers 200 {"status":"drained"}
// once no connection is left.
func (s *Server) serveDrain(w http.ResponseWriter, r *http.Request) {
	drained, err := s.beginDrain()
	if err != nil {
		admin.WriteJSON(w, http.StatusConflict, map[string]any{"code": "not_running", "reason": "the node is stopping or stopped", "node": s.opts.NodeID})
		return
	}
	if q := r.URL.Query(); q.Has("wait") && q.Get("wait") != "false" && q.Get("wait") != "0" {
		select {
		case <-drained:
			admin.WriteJSON(w, http.StatusOK, map[string]any{"status": "drained", "node": s.opts.NodeID})
		case <-r.Context().Done():
		}
		return
	}
	admin.WriteJSON(w, http.StatusAccepted, map[string]any{"status": "draining", "node": s.opts.NodeID})
}
