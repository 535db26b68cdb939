package flagenv

import (
	"bytes"
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
		wantErr string
	}{
		{name: "defaults", wantD: time.Second, wantL: []string{"a"}},
		{name: "env", env: map[string]string{"X_IDLE": "5s", "X_KEYS": "k1,k2"}, wantD: 5 * time.Second, wantL: []string{"k1", "k2"}},
		{name: "flag beats env", env: map[string]string{"X_IDLE": "5s", "X_KEYS": "k1"}, args: []string{"--idle=7s", "--keys", "k3", "--keys", "k4"}, wantD: 7 * time.Second, wantL: []string{"k3", "k4"}},
		{name: "bad env names the variable", env: map[string]string{"X_IDLE": "soon"}, wantErr: "X_IDLE"},
		{name: "bad flag", args: []string{"--idle=soon"}, wantErr: "idle"},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "nope"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "extra"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d time.Duration
			var l []string
			s := New("x", "X_", "usage")
			s.Duration(&d, "idle", time.Second, "idle timeout")
			s.List(&l, "keys", []string{"a"}, "keys")
			err := s.Parse(tc.args, env(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d != tc.wantD || strings.Join(l, ",") != strings.Join(tc.wantL, ",") {
				t.Fatalf("got %v %v, want %v %v", d, l, tc.wantD, tc.wantL)
			}
		})
	}
}

func TestUsageShowsDefaultsAndEnv(t *testing.T) {
	var d time.Duration
	var str, sec string
	s := New("x", "WSFLEET_", "Usage: x [flags]")
	s.Duration(&d, "heartbeat", 30*time.Second, "ping interval")
	s.String(&str, "listen", ":8080", "address")
	s.Secret(&sec, "api-key", "key")
	s.ShowDefault("listen", "computed")
	var b bytes.Buffer
	s.PrintUsage(&b)
	out := b.String()
	for _, want := range []string{"--heartbeat", "default 30s", "WSFLEET_HEARTBEAT", "default computed", "WSFLEET_API_KEY", "default none"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}
