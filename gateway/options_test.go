package gateway_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsfleet/wsfleet/gateway"
	"github.com/wsfleet/wsfleet/internal/jwtverify"
)

func TestOptionsValidation(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*gateway.Options)
		flag string // the setting the error must name; "" means valid
	}{
		{"defaults with a secret", func(o *gateway.Options) {}, ""},
		{"no key", func(o *gateway.Options) { o.JWT.HS256Secret = "" }, "jwt-hs256-secret"},
		{"short secret", func(o *gateway.Options) { o.JWT.HS256Secret = "short" }, "--jwt-hs256-secret"},
		{"bad listen", func(o *gateway.Options) { o.Listen = "8080" }, "--listen"},
		{"bad admin", func(o *gateway.Options) { o.AdminListen = "host:port" }, "--admin-listen"},
		{"admin off", func(o *gateway.Options) { o.AdminListen = "off" }, ""},
		{"no nats url", func(o *gateway.Options) { o.NATSURL = "" }, "--nats-url"},
		{"blank nats url", func(o *gateway.Options) { o.NATSURL = " , " }, "--nats-url"},
		{"http nats url", func(o *gateway.Options) { o.NATSURL = "http://127.0.0.1:4222" }, "--nats-url"},
		{"nats url list", func(o *gateway.Options) { o.NATSURL = "nats://a:4222, tls://b:4222,c:4222" }, ""},
		{"zero loop queue", func(o *gateway.Options) { o.LoopQueueBytes = 100 }, "--loop-queue-bytes"},
		{"negative outage grace", func(o *gateway.Options) { o.NATSOutageGrace = -time.Second }, "--nats-outage-grace"},
		{"bad prefix", func(o *gateway.Options) { o.SubjectPrefix = "a.*" }, "--subject-prefix"},
		{"node id with space", func(o *gateway.Options) { o.NodeID = "a b" }, "--node-id"},
		{"idle not above heartbeat", func(o *gateway.Options) { o.IdleTimeout = 10 * time.Second; o.Heartbeat = 10 * time.Second }, "--idle-timeout"},
		{"negative heartbeat", func(o *gateway.Options) { o.Heartbeat = -time.Second }, "--heartbeat"},
		{"unknown algorithm", func(o *gateway.Options) { o.JWT.Algorithms = []string{"none"} }, "--jwt-algorithms"},
		{"jwks url scheme", func(o *gateway.Options) { o.JWT.JWKSURL = "ftp://x" }, "--jwt-jwks-url"},
		{"tiny max message", func(o *gateway.Options) { o.MaxMessageBytes = 10 }, "--max-message-bytes"},
		{"tiny pending", func(o *gateway.Options) { o.MaxPendingBytes = 10 }, "--max-pending-bytes"},
		{"huge leeway", func(o *gateway.Options) { o.JWT.Leeway = time.Hour }, "--jwt-leeway"},
		{"too many topics", func(o *gateway.Options) { o.MaxTopicsPerConnection = 10001 }, "--max-topics-per-connection"},
		{"negative topics", func(o *gateway.Options) { o.MaxTopicsPerConnection = -1 }, "--max-topics-per-connection"},
		{"topics claim is sub", func(o *gateway.Options) { o.TopicsClaim = "sub" }, "--jwt-topics-claim"},
		{"topics claim is topic", func(o *gateway.Options) { o.TopicsClaim = "topic" }, "--jwt-topics-claim"},
		{"topics claim with a space", func(o *gateway.Options) { o.TopicsClaim = "a b" }, "--jwt-topics-claim"},
		{"namespaced topics claim", func(o *gateway.Options) { o.TopicsClaim = "https://example.com/topics" }, ""},
		{"publish claim is the topics claim", func(o *gateway.Options) { o.PublishClaim = "topics" }, "--jwt-publish-claim"},
		{"bad client topic publish", func(o *gateway.Options) { o.ClientTopicPublish = "both" }, "--client-topic-publish"},
		{"direct client topic publish", func(o *gateway.Options) { o.ClientTopicPublish = "direct" }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := gateway.Options{JWT: jwtverify.Config{HS256Secret: testSecret}, NATSURL: "nats://127.0.0.1:4222"}
			tc.mod(&o)
			o.SetDefaults()
			err := o.Validate()
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, gateway.ErrBadOption) || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("error %v, want ErrBadOption naming %s", err, tc.flag)
			}
		})
	}
}

// sharedDirSocket is a socket path in a directory other users can reach:
// mode 0755 in the system's temporary directory.
func sharedDirSocket(t *testing.T) string {
	dir, err := os.MkdirTemp("", "wsfleet-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "gw.sock")
}

func TestStartErrorsNameTheSetting(t *testing.T) {
	first := startGateway(t, nil)
	cases := []struct {
		name string
		mod  func(*gateway.Options)
		want string
	}{
		{"port in use", func(o *gateway.Options) { o.Listen = first.Addr().String() }, "--listen"},
		{"control socket in a shared directory", func(o *gateway.Options) { o.ControlSocket = sharedDirSocket(t) }, "--control-socket"},
		{"jwks file missing", func(o *gateway.Options) { o.JWT.JWKSFile = "/nonexistent/jwks.json" }, "--jwt-jwks-file"},
		{"timeout past the wheel's horizon", func(o *gateway.Options) {
			o.HandshakeTimeout = 20 * time.Millisecond // a 1 ms tick
			o.IdleTimeout = 30 * 24 * time.Hour
		}, "--idle-timeout"},
		{"nats unreachable", func(o *gateway.Options) {
			o.NATSURL = "nats://127.0.0.1:1"
			o.NATSConnectTimeout = 300 * time.Millisecond
		}, "--nats-url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t)
			tc.mod(&o)
			srv, err := gateway.New(o)
			if err == nil {
				err = srv.Start()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}
