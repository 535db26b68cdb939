package router_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wsfleet/wsfleet/internal/history"
	"github.com/wsfleet/wsfleet/router"
)

func itoa(n int) string { return strconv.Itoa(n) }

func natsConnect(t testing.TB, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestDefaults(t *testing.T) {
	var o router.Options
	o.SetDefaults()
	want := router.Options{
		Listen:             ":8090",
		AdminListen:        "127.0.0.1:8091",
		NATSURL:            "nats://127.0.0.1:4222",
		NATSConnectTimeout: 10 * time.Second,
		SubjectPrefix:      "wsfleet",
		MaxBodyBytes:       262144,
	}
	if o.Listen != want.Listen || o.AdminListen != want.AdminListen || o.NATSURL != want.NATSURL ||
		o.NATSConnectTimeout != want.NATSConnectTimeout || o.SubjectPrefix != want.SubjectPrefix ||
		o.MaxBodyBytes != want.MaxBodyBytes || o.APIKeys != nil {
		t.Fatalf("defaults %+v, want %+v", o, want)
	}
	if o.NodeTTL != 15*time.Second || o.NodeMaxSilence != 2*time.Minute || o.PublishWait != 5*time.Second ||
		o.SnapshotTimeout != 2*time.Second || o.KickTimeout != 2*time.Second ||
		o.MaxBatchUsers != 1000 || o.IdempotencyWindow != time.Hour || o.IdempotencyStore != "auto" ||
		o.IdempotencyBucket != "wsfleet_idempotency" || o.IdempotencyMaxKeys != 100000 ||
		o.RateLimit != 1000 || o.RateLimitBurst != 2000 || o.JWTScope != "publish" ||
		o.JWT.Leeway != 5*time.Second || o.JWT.JWKSRefresh != 5*time.Minute {
		t.Fatalf("defaults %+v", o)
	}
	if o.Resume || o.History.Prefix != "wsfleet" || o.History.TTL != history.DefaultTTL || o.History.MaxPerUser != history.DefaultMaxPerUser ||
		o.History.MaxBytes != history.DefaultMaxBytes || o.History.Replicas != history.DefaultReplicas || o.History.Storage != history.DefaultStorage {
		t.Fatalf("history defaults: resume %v, %+v", o.Resume, o.History)
	}
	// The history stream's prefix is the router's.
	o = router.Options{SubjectPrefix: "acme", History: history.Config{Prefix: "other", TTL: time.Hour}}
	o.SetDefaults()
	if o.History.Prefix != "acme" || o.History.TTL != time.Hour {
		t.Fatalf("history %+v with --subject-prefix acme and --history-ttl 1h", o.History)
	}
	o = router.Options{RateLimit: 2.5}
	o.SetDefaults()
	if o.RateLimitBurst != 5 {
		t.Fatalf("burst %d for a rate of 2.5, want 5", o.RateLimitBurst)
	}
	o = router.Options{RateLimit: -1}
	o.SetDefaults()
	if o.RateLimitBurst != 0 {
		t.Fatalf("burst %d without a limit, want 0", o.RateLimitBurst)
	}
}

func TestValidate(t *testing.T) {
	valid := func() router.Options {
		o := router.Options{APIKeys: []string{testKey}}
		o.SetDefaults()
		return o
	}
	cases := []struct {
		name string
		mod  func(*router.Options)
		flag string // "" for a valid setting
	}{
		{name: "defaults with a key", mod: func(*router.Options) {}},
		{name: "admin off", mod: func(o *router.Options) { o.AdminListen = "off" }},
		{name: "two keys", mod: func(o *router.Options) { o.APIKeys = []string{testKey, testKey2} }},
		{name: "no key", mod: func(o *router.Options) { o.APIKeys = nil }, flag: "--api-key"},
		{name: "short key", mod: func(o *router.Options) { o.APIKeys = []string{testKey, "short-key"} }, flag: "--api-key"},
		{name: "key with space", mod: func(o *router.Options) { o.APIKeys = []string{"0123456789 abcdefgh"} }, flag: "--api-key"},
		{name: "key with control", mod: func(o *router.Options) { o.APIKeys = []string{"0123456789\nabcdefgh"} }, flag: "--api-key"},
		{name: "listen not host:port", mod: func(o *router.Options) { o.Listen = "8090" }, flag: "--listen"},
		{name: "listen bad port", mod: func(o *router.Options) { o.Listen = ":99999" }, flag: "--listen"},
		{name: "listen hostname", mod: func(o *router.Options) { o.Listen = "example.com:80" }, flag: "--listen"},
		{name: "admin bad", mod: func(o *router.Options) { o.AdminListen = "on" }, flag: "--admin-listen"},
		{name: "nats url blank", mod: func(o *router.Options) { o.NATSURL = " , " }, flag: "--nats-url"},
		{name: "connect timeout negative", mod: func(o *router.Options) { o.NATSConnectTimeout = -time.Second }, flag: "--nats-connect-timeout"},
		{name: "prefix wildcard", mod: func(o *router.Options) { o.SubjectPrefix = "ws.*" }, flag: "--subject-prefix"},
		{name: "prefix empty token", mod: func(o *router.Options) { o.SubjectPrefix = "a..b" }, flag: "--subject-prefix"},
		{name: "body negative", mod: func(o *router.Options) { o.MaxBodyBytes = -1 }, flag: "--max-body-bytes"},
		{name: "body huge", mod: func(o *router.Options) { o.MaxBodyBytes = router.MaxBodyLimit + 1 }, flag: "--max-body-bytes"},
		{name: "JWT only", mod: func(o *router.Options) { o.APIKeys = nil; o.JWT.HS256Secret = testJWTSecret }},
		{name: "JWKS file only", mod: func(o *router.Options) { o.APIKeys = nil; o.JWT.JWKSFile = "/etc/keys.json" }},
		{name: "short JWT secret", mod: func(o *router.Options) { o.JWT.HS256Secret = "short" }, flag: "--jwt-hs256-secret"},
		{name: "JWKS URL not http", mod: func(o *router.Options) { o.JWT.JWKSURL = "ftp://keys" }, flag: "--jwt-jwks-url"},
		{name: "algorithm none", mod: func(o *router.Options) { o.JWT.Algorithms = []string{"none"} }, flag: "--jwt-algorithms"},
		{name: "leeway huge", mod: func(o *router.Options) { o.JWT.Leeway = time.Hour }, flag: "--jwt-leeway"},
		{name: "scope with space", mod: func(o *router.Options) { o.JWTScope = "a b" }, flag: "--jwt-scope"},
		{name: "no rate limit", mod: func(o *router.Options) { o.RateLimit = -1; o.RateLimitBurst = 0 }},
		{name: "burst negative", mod: func(o *router.Options) { o.RateLimitBurst = -1 }, flag: "--rate-limit-burst"},
		{name: "batch zero", mod: func(o *router.Options) { o.MaxBatchUsers = -1 }, flag: "--max-batch-users"},
		{name: "batch huge", mod: func(o *router.Options) { o.MaxBatchUsers = router.MaxBatchUsersLimit + 1 }, flag: "--max-batch-users"},
		{name: "window negative", mod: func(o *router.Options) { o.IdempotencyWindow = -time.Second }, flag: "--idempotency-window"},
		{name: "store unknown", mod: func(o *router.Options) { o.IdempotencyStore = "redis" }, flag: "--idempotency-store"},
		{name: "bucket dotted", mod: func(o *router.Options) { o.IdempotencyBucket = "a.b" }, flag: "--idempotency-bucket"},
		{name: "max keys negative", mod: func(o *router.Options) { o.IdempotencyMaxKeys = -1 }, flag: "--idempotency-max-keys"},
		{name: "node ttl negative", mod: func(o *router.Options) { o.NodeTTL = -time.Second }, flag: "--node-ttl"},
		{name: "max silence equal to the ttl", mod: func(o *router.Options) { o.NodeMaxSilence = o.NodeTTL }, flag: "--node-max-silence"},
		{name: "ttl above the default max silence", mod: func(o *router.Options) { o.NodeTTL = 3 * time.Minute }, flag: "--node-max-silence"},
		{name: "max silence above a long ttl", mod: func(o *router.Options) { o.NodeTTL, o.NodeMaxSilence = 3*time.Minute, 5*time.Minute }},
		{name: "publish wait negative", mod: func(o *router.Options) { o.PublishWait = -time.Second }, flag: "--publish-wait"},
		{name: "no publish wait", mod: func(o *router.Options) { o.PublishWait = router.NoPublishWait }},
		{name: "snapshot timeout tiny", mod: func(o *router.Options) { o.SnapshotTimeout = time.Nanosecond }, flag: "--snapshot-timeout"},
		{name: "kick timeout negative", mod: func(o *router.Options) { o.KickTimeout = -1 }, flag: "--kick-timeout"},
		{name: "resume", mod: func(o *router.Options) { o.Resume = true }},
		{name: "resume with a history ttl under a second", mod: func(o *router.Options) { o.Resume = true; o.History.TTL = 500 * time.Millisecond }, flag: "--history-ttl"},
		{name: "resume with a small history", mod: func(o *router.Options) { o.Resume = true; o.History.MaxBytes = 1000 }, flag: "--history-max-bytes"},
		{name: "resume with 7 replicas", mod: func(o *router.Options) { o.Resume = true; o.History.Replicas = 7 }, flag: "--history-replicas"},
		{name: "resume with unknown storage", mod: func(o *router.Options) { o.Resume = true; o.History.Storage = "disk" }, flag: "--history-storage"},
		{name: "history settings unchecked without resume", mod: func(o *router.Options) { o.History.TTL, o.History.Storage = time.Millisecond, "disk" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := valid()
			tc.mod(&o)
			err := o.Validate()
			if tc.flag == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, router.ErrBadOption) {
				t.Fatalf("Validate: %v, want ErrBadOption", err)
			}
			if !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("error %q does not name %s", err, tc.flag)
			}
			for _, k := range o.APIKeys {
				if strings.Contains(err.Error(), k) {
					t.Fatalf("error %q shows an API key", err)
				}
			}
			if _, nerr := router.New(o); !errors.Is(nerr, router.ErrBadOption) {
				t.Fatalf("New: %v, want ErrBadOption", nerr)
			}
		})
	}
}
