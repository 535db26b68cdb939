// Package natsurl handles NATS server URL lists as given on command lines
// ("nats://a:4222,nats://b:4222"): redaction of credentials for logs and
// errors. Connecting is nats.go's.
package natsurl

import (
	"net/url"
	"strings"
)

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
