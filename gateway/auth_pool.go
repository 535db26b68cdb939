package gateway

import (
	"errors"
	"sync"

	"github.com/wsfleet/wsfleet/internal/jwtverify"
	"github.com/wsfleet/wsfleet/protocol"
)

// authPool verifies tokens on a fixed set of worker goroutines, off the
// event loops (signature checks cost tens of microseconds). Its queue is
// bounded: a full queue refuses the client (1013) rather than growing.
type authPool struct {
	s    *Server
	jobs chan authJob
	wg   sync.WaitGroup
}

type authJob struct {
	c       *conn
	token   string
	refresh bool   // a token sent on an open connection
	topic   string // a subscription token for this topic
	queued  int64  // mono() when queued
}

func newAuthPool(s *Server) *authPool {
	a := &authPool{s: s, jobs: make(chan authJob, s.opts.AuthQueue)}
	for i := 0; i < s.opts.AuthWorkers; i++ {
		a.wg.Add(1)
		go a.worker()
	}
	return a
}

// submit queues a token without blocking; false means the queue is full.
func (a *authPool) submit(c *conn, token string, refresh bool) bool {
	select {
	case a.jobs <- authJob{c: c, token: token, refresh: refresh, queued: mono()}:
		return true
	default:
		return false
	}
}

// submitTopic queues a subscription token for topic without blocking;
// false means the queue is full.
func (a *authPool) submitTopic(c *conn, token, topic string) bool {
	select {
	case a.jobs <- authJob{c: c, token: token, topic: topic, queued: mono()}:
		return true
	default:
		return false
	}
}

func (a *authPool) close() {
	close(a.jobs)
	a.wg.Wait()
}

func (a *authPool) worker() {
	defer a.wg.Done()
	for j := range a.jobs {
		a.s.adm.authWait.Store(mono() - j.queued)
		j.c.l.p.Post(a.check(j))
	}
}

// check verifies one token and returns the verdict as a task for the
// connection's loop.
func (a *authPool) check(j authJob) task {
	if j.topic != "" {
		return a.checkTopic(j)
	}
	t := task{kind: taskAuth, c: j.c, refresh: j.refresh}
	cl, err := a.s.verifier.verify(j.token)
	if err == nil && cl.topic != "" {
		// A subscription token opens one topic, not a connection.
		err = &jwtverify.Error{Label: "subscription_token", Text: "a subscription token (with a topic claim) cannot authenticate a connection"}
	}
	if err == nil {
		t.tok, err = protocol.EncodeUserToken(cl.sub)
	}
	if err != nil {
		var ae *jwtverify.Error
		if !errors.As(err, &ae) {
			ae = badSub(err)
		}
		a.s.m.authFailure(ae.Label)
		t.reason = ae.Text
		return t
	}
	t.ok, t.sub, t.exp, t.tc = true, cl.sub, cl.exp, cl.tc
	return t
}

// checkTopic verifies a subscription token: valid as a connection token
// is (signature, exp, issuer, audience), naming the connection's user in
// sub and the topic in its "topic" claim. c.user is set before the
// connection opens and never changes after, so it is read here.
func (a *authPool) checkTopic(j authJob) task {
	t := task{kind: taskTopicAuth, c: j.c, name: j.topic}
	cl, err := a.s.verifier.verify(j.token)
	switch {
	case err != nil:
		var ae *jwtverify.Error
		if !errors.As(err, &ae) {
			ae = badSub(err)
		}
		a.s.m.topicTokenFailure(ae.Label)
		t.reason = "subscription token refused: " + ae.Text
	case cl.sub != j.c.user.id:
		a.s.m.topicTokenFailure("other_user")
		t.reason = "the subscription token names another user"
	case cl.topic != j.topic:
		a.s.m.topicTokenFailure("other_topic")
		t.reason = "the subscription token's topic claim does not name this topic"
	default:
		t.ok = true
	}
	return t
}
