// Package natsurl handles NATS server URL lists as given on command lines
// ("nats://a:4222,nats://b:4222"): their check and the redaction of
// credentials for logs and errors. Connecting is nats.go's.
package natsurl

import (
	"fmt"
	"net/url"
	"strings"
)

// Check checks a list of one or more nats://, tls://, ws:// or wss://
// URLs (or bare host:port, which nats.go reads as nats://). Its error says
// what is wrong with which URL (credentials redacted), without naming a
// setting: the caller does.
func Check(list string) error {
	if strings.TrimSpace(strings.ReplaceAll(list, ",", "")) == "" {
		return fmt.Errorf("is required: the NATS server(s) to connect to, e.g. nats://127.0.0.1:4222")
	}
	for _, u := range strings.Split(list, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		scheme, rest, ok := strings.Cut(u, "://")
		if !ok {
			rest = u
		} else {
			switch scheme {
			case "nats", "tls", "ws", "wss":
			case "http", "https":
				return fmt.Errorf("%q is an HTTP URL: NATS clients speak the NATS protocol, e.g. nats://%s (port 4222 by default, not the monitoring port)", Redact(u), hostOf(rest))
			default:
				return fmt.Errorf("%q: scheme must be nats, tls, ws or wss", Redact(u))
			}
		}
		if hostOf(rest) == "" {
			return fmt.Errorf("%q has no host", Redact(u))
		}
	}
	return nil
}

// hostOf returns the host[:port] of what follows "scheme://", without
// credentials or a path.
func hostOf(rest string) string {
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// Redact returns the list with any password in it replaced by "xxxxx" and
// any bare token user replaced the same way.
func Redact(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil || u.User == nil {
			parts[i] = p
			continue
		}
		if _, hasPass := u.User.Password(); !hasPass {
			u.User = url.User("xxxxx") // a token given as the user part
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
