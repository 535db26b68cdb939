package router_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nats-io/nats-server/v2/server"

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
		AdminListen:        ":8091",
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
