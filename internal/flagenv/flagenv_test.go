package flagenv

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestPrecedence(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		wantD   time.Duration
		wantL   []string
		wantN   int
		wantB   bool
		wantErr string
	}{
		{name: "defaults", wantD: time.Second, wantL: []string{"a"}, wantN: 3},
		{name: "env", env: map[string]string{"X_IDLE": "5s", "X_KEYS": "k1,k2", "X_N": "7", "X_ON": "true"}, wantD: 5 * time.Second, wantL: []string{"k1", "k2"}, wantN: 7, wantB: true},
		{name: "flag beats env", env: map[string]string{"X_IDLE": "5s", "X_KEYS": "k1", "X_ON": "true"}, args: []string{"--idle=7s", "--keys", "k3", "--keys", "k4", "-n", "-2", "--on=false"}, wantD: 7 * time.Second, wantL: []string{"k3", "k4"}, wantN: -2},
		{name: "bool without value", args: []string{"--on"}, wantD: time.Second, wantL: []string{"a"}, wantN: 3, wantB: true},
		{name: "double dash ends flags", args: []string{"--idle", "2s", "--"}, wantD: 2 * time.Second, wantL: []string{"a"}, wantN: 3},
		{name: "bad env names the variable", env: map[string]string{"X_IDLE": "soon"}, wantErr: `X_IDLE: "soon" is not a duration (e.g. 30s`},
		{name: "bad duration flag", args: []string{"--idle=soon"}, wantErr: `--idle: "soon" is not a duration (e.g. 30s`},
		{name: "bad duration flag, one dash", args: []string{"-idle", "abc"}, wantErr: `--idle: "abc" is not a duration`},
		{name: "bad int", args: []string{"--n", "1.5"}, wantErr: `--n: "1.5" is not a whole number`},
		{name: "bad bool", args: []string{"--on=maybe"}, wantErr: `--on: "maybe" is not true or false`},
		{name: "bad bool env", env: map[string]string{"X_ON": "yes"}, wantErr: `X_ON: "yes" is not true or false`},
		{name: "missing value", args: []string{"--idle"}, wantErr: "--idle needs a value"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "unknown flag --nope"},
		{name: "stray argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d time.Duration
			var l []string
			var n int
			var b bool
			s := New("x", "X_", "usage")
			s.Duration(&d, "idle", time.Second, "idle timeout")
			s.List(&l, "keys", []string{"a"}, "keys")
			s.Int(&n, "n", 3, "n")
			s.Bool(&b, "on", false, "on")
			err := s.Parse(tc.args, env(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d != tc.wantD || strings.Join(l, ",") != strings.Join(tc.wantL, ",") || n != tc.wantN || b != tc.wantB {
				t.Fatalf("got %v %v %d %v, want %v %v %d %v", d, l, n, b, tc.wantD, tc.wantL, tc.wantN, tc.wantB)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		s := New("x", "X_", "usage")
		if err := s.Parse([]string{arg}, env(nil)); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: err = %v, want flag.ErrHelp", arg, err)
		}
	}
}

// TestFleetNamespace: each fleet binary reads its own variables and the
// shared ones, and refuses unknown names of its namespace and of the
// shared one.
func TestFleetNamespace(t *testing.T) {
	cases := []struct {
		name     string
		environ  []string
		wantURL  string
		wantSec  string
		wantErr  string
		lenient  bool
		wantHint string
	}{
		{name: "own names", environ: []string{"WSFLEET_GATEWAY_NATS_URL=nats://a", "WSFLEET_GATEWAY_JWT_HS256_SECRET=s"}, wantURL: "nats://a", wantSec: "s"},
		{name: "shared name", environ: []string{"WSFLEET_NATS_URL=nats://shared"}, wantURL: "nats://shared"},
		{name: "own name beats shared", environ: []string{"WSFLEET_NATS_URL=nats://shared", "WSFLEET_GATEWAY_NATS_URL=nats://own"}, wantURL: "nats://own"},
		{name: "another binary's names are not read", environ: []string{"WSFLEET_ROUTER_JWT_HS256_SECRET=r", "WSFLEET_ROUTER_WHATEVER=1"}},
		{name: "other programs' variables are ignored", environ: []string{"HOME=/root", "LOADTEST_CONNS=5", "WSFLEETX=1", "WSFLEET_LOADTEST_WORKER=1", "WSFLEET_TEST_BIN_DIR=bin"}},
		{name: "typo in own namespace", environ: []string{"WSFLEET_GATEWAY_NATS_ULR=nats://a"}, wantErr: "unknown environment variable WSFLEET_GATEWAY_NATS_ULR: gateway has no --nats-ulr flag"},
		{name: "unshared name", environ: []string{"WSFLEET_JWT_HS256_SECRET=s"}, wantErr: "unknown environment variable WSFLEET_JWT_HS256_SECRET", wantHint: "WSFLEET_GATEWAY_JWT_HS256_SECRET or WSFLEET_ROUTER_JWT_HS256_SECRET"},
		{name: "lenient subcommand", environ: []string{"WSFLEET_GATEWAY_HEARTBEAT=5s"}, lenient: true},
		{name: "a subcommand's variable", environ: []string{"WSFLEET_GATEWAY_TTL=1h"}},
		{name: "Kubernetes service links", environ: []string{"WSFLEET_GATEWAY_PORT=tcp://10.0.0.1:8080", "WSFLEET_GATEWAY_PORT_8080_TCP=tcp://10.0.0.1:8080",
			"WSFLEET_GATEWAY_PORT_8080_TCP_ADDR=10.0.0.1", "WSFLEET_GATEWAY_PORT_8080_TCP_PROTO=tcp", "WSFLEET_GATEWAY_SERVICE_HOST=10.0.0.1",
			"WSFLEET_GATEWAY_SERVICE_PORT=8080", "WSFLEET_GATEWAY_SERVICE_PORT_WEBSOCKET=8080", "WSFLEET_NATS_SERVICE_HOST=10.0.0.2", "WSFLEET_PORT=tcp://10.0.0.3:80"}},
		{name: "not a service link", environ: []string{"WSFLEET_GATEWAY_PORT_X_TCP=1"}, wantErr: "unknown environment variable WSFLEET_GATEWAY_PORT_X_TCP"},
		{name: "every source set", environ: []string{"WSFLEET_LOG_LEVEL=x", "WSFLEET_NATS_URL=nats://a", "WSFLEET_GATEWAY_NATS_URL=nats://b"}, wantURL: "nats://b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var url, sec, level string
			s := NewFleet("gateway", "GATEWAY", "usage")
			s.String(&url, "nats-url", "", "NATS")
			s.Secret(&sec, "jwt-hs256-secret", "secret")
			s.String(&level, "log-level", "info", "level")
			if tc.lenient {
				s.Lenient()
			}
			s.Known("ttl")
			err := s.ParseEnv(nil, tc.environ)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), tc.wantHint) {
					t.Fatalf("err = %v, want one containing %q and %q", err, tc.wantErr, tc.wantHint)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if url != tc.wantURL || sec != tc.wantSec {
				t.Fatalf("got url %q secret %q, want %q %q", url, sec, tc.wantURL, tc.wantSec)
			}
		})
	}
}

func TestUsageShowsDefaultsAndEnv(t *testing.T) {
	var d time.Duration
	var str, sec, url string
	s := NewFleet("x", "GATEWAY", "Usage: x [flags]")
	s.Duration(&d, "heartbeat", 30*time.Second, "ping interval")
	s.String(&str, "listen", ":8080", "address")
	s.Secret(&sec, "api-key", "key")
	s.String(&url, "nats-url", "", "NATS")
	s.ShowDefault("listen", "computed")
	var b bytes.Buffer
	s.PrintUsage(&b)
	out := b.String()
	for _, want := range []string{"--heartbeat", "default 30s", "WSFLEET_GATEWAY_HEARTBEAT", "default computed", "WSFLEET_GATEWAY_API_KEY", "default none", "env WSFLEET_GATEWAY_NATS_URL (or WSFLEET_NATS_URL"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}

func TestPositive(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		environ []string
		wantErr string
	}{
		{name: "defaults pass"},
		{name: "positive values pass", args: []string{"--n", "2", "--wait", "1ms", "--rate", "0.5"}},
		{name: "zero int", args: []string{"--n", "0"}, wantErr: "--n (X_N): must be more than 0, got 0"},
		{name: "zero duration", args: []string{"--wait", "0s"}, wantErr: "--wait (X_WAIT): must be more than 0, got 0s"},
		{name: "negative float from the environment", environ: []string{"X_RATE=-1"}, wantErr: "--rate (X_RATE): must be more than 0, got -1"},
		{name: "unmarked zero passes", args: []string{"--free", "0"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var n, free int
			var wait time.Duration
			var rate float64
			s := New("x", "X_", "usage")
			s.Int(&n, "n", 1, "n")
			s.Int(&free, "free", 1, "free")
			s.Duration(&wait, "wait", time.Second, "wait")
			s.Float(&rate, "rate", 1, "rate")
			s.Positive("n", "wait", "rate")
			err := s.ParseEnv(tc.args, tc.environ)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestNonZero(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "default passes"},
		{name: "negative passes", args: []string{"--rate", "-1"}},
		{name: "positive passes", args: []string{"--rate", "5"}},
		{name: "zero refused with the advice", args: []string{"--rate", "0"}, wantErr: "--rate (X_RATE): 0 is not a setting: a negative value means no limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rate float64
			s := New("x", "X_", "usage")
			s.Float(&rate, "rate", 10, "rate")
			s.NonZero("a negative value means no limit", "rate")
			err := s.ParseEnv(tc.args, nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
