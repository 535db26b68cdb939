package router

import (
	"net/url"
	"testing"
)

// FuzzMatchRoute checks that any user id, escaped as one path segment the
// way a client library does (url.PathEscape), routes to the user endpoint
// and decodes back to the same id.
func FuzzMatchRoute(f *testing.F) {
	for _, id := range []string{"bob", "bob.smith", "a/b", "..", ".", "*", ">", "a b", "é", "%", "+", "a//b", "?x=1#y", ""} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		path := "/v1/users/" + url.PathEscape(id) + "/messages"
		u, err := url.Parse("http://h" + path)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", path, err)
		}
		route, seg := matchRoute(u.EscapedPath())
		if route != routeUser {
			t.Fatalf("id %q: path %q routed to %q", id, path, route)
		}
		got, err := url.PathUnescape(seg)
		if err != nil || got != id {
			t.Fatalf("id %q: decoded %q (%v)", id, got, err)
		}
	})
}

func TestMatchRoute(t *testing.T) {
	cases := []struct {
		name, path, route, seg string
	}{
		{"broadcast", "/v1/broadcast", routeBroadcast, ""},
		{"user", "/v1/users/bob/messages", routeUser, "bob"},
		{"escaped slash", "/v1/users/a%2Fb/messages", routeUser, "a%2Fb"},
		{"empty user", "/v1/users//messages", routeUser, ""},
		{"raw slash", "/v1/users/a/b/messages", routeOther, ""},
		{"no messages", "/v1/users/bob", routeOther, ""},
		{"trailing slash", "/v1/broadcast/", routeOther, ""},
		{"double slash", "//v1/broadcast", routeOther, ""},
		{"root", "/", routeOther, ""},
		{"users prefix only", "/v1/users/messages", routeOther, ""},
		{"presence", "/v1/users/bob/presence", routePresence, "bob"},
		{"connections", "/v1/users/a%2Fb/connections", routeConnections, "a%2Fb"},
		{"user named messages", "/v1/users/messages/presence", routePresence, "messages"},
		{"unknown user route", "/v1/users/bob/devices", routeOther, ""},
		{"batch", "/v1/messages", routeBatch, ""},
		{"query", "/v1/presence/query", routeQuery, ""},
		{"stats", "/v1/stats", routeStats, ""},
		{"openapi", "/v1/openapi.json", routeOpenAPI, ""},
		{"stats slash", "/v1/stats/", routeOther, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			route, seg := matchRoute(tc.path)
			if route != tc.route || seg != tc.seg {
				t.Fatalf("matchRoute(%q) = %q, %q; want %q, %q", tc.path, route, seg, tc.route, tc.seg)
			}
		})
	}
}
