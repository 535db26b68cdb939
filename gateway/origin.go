package gateway

import (
	"errors"
	"net/url"
	"strings"
)

// originPattern is one --allowed-origins entry: "*", an exact origin
// ("https://app.example.com:8443") or a subdomain wildcard
// ("https://*.example.com", which does not match example.com itself).
type originPattern struct {
	any    bool
	scheme string
	host   string // lower case, with port if given; "*.example.com" keeps the dot suffix
	wild   bool
}

func parseOriginPattern(p string) (originPattern, error) {
	if p == "*" {
		return originPattern{any: true}, nil
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return originPattern{}, errors.New(`want "*", "scheme://host[:port]" or "scheme://*.domain"`)
	}
	op := originPattern{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Host)}
	if rest, ok := strings.CutPrefix(op.host, "*."); ok {
		if rest == "" || strings.Contains(rest, "*") {
			return originPattern{}, errors.New("a wildcard must be followed by a domain")
		}
		op.wild, op.host = true, "."+rest
	} else if strings.Contains(op.host, "*") {
		return originPattern{}, errors.New(`"*" may only start the host`)
	}
	return op, nil
}

// originAllowed reports whether a request's Origin header value matches one
// of the patterns. Matching is on scheme and host (with port), ignoring case.
func originAllowed(patterns []originPattern, origin []byte) bool {
	if len(patterns) == 0 {
		return true
	}
	o := strings.ToLower(string(origin))
	scheme, host, ok := strings.Cut(o, "://")
	if !ok || host == "" || strings.ContainsAny(host, "/?#@") {
		return false
	}
	for _, p := range patterns {
		switch {
		case p.any:
			return true
		case p.scheme != scheme:
		case p.wild:
			if strings.HasSuffix(host, p.host) && len(host) > len(p.host) {
				return true
			}
		case p.host == host:
			return true
		}
	}
	return false
}
