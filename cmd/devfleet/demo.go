package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	jsclient "github.com/wsfleet/wsfleet/clients/js"
	"github.com/wsfleet/wsfleet/internal/jwtmint"
)

// The demo page: a small page served by devfleet (--demo-listen) that uses
// the JavaScript client against the local fleet. It connects as the sample
// user, shows the connection's state, the messages as they arrive, the
// user's presence and a room's, and publishes through the router. The
// server side holds what a page must not: it mints the user's tokens (the
// way an application's backend would) and calls the router with the API
// key.

//go:embed demo/index.html
var demoPage []byte

// demoRoom is the room the page joins; the sample user's topics claim
// (--topics, "room.*" by default) must allow it.
const demoRoom = "room.demo"

type demo struct {
	in     info
	secret string
	topics []string
	router *http.Client
}

// demoConfig is what the page reads from /config.
type demoConfig struct {
	WSURL  string `json:"ws_url"`
	SSEURL string `json:"sse_url"`
	User   string `json:"user"`
	Room   string `json:"room"`
}

// serveDemo serves the demo page on ln until the listener closes.
func serveDemo(ln net.Listener, in info, secret string, topics []string) *http.Server {
	d := &demo{in: in, secret: secret, topics: topics, router: &http.Client{Timeout: 10 * time.Second}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(demoPage)
	})
	mux.HandleFunc("GET /client.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(jsclient.Module)
	})
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		sse := strings.Replace(in.WSURL, "ws://", "http://", 1)
		sse = strings.TrimSuffix(sse, "/ws") + "/sse"
		writeJSON(w, http.StatusOK, demoConfig{WSURL: in.WSURL, SSEURL: sse, User: in.User, Room: demoRoom})
	})
	mux.HandleFunc("POST /token", d.token)
	mux.HandleFunc("GET /presence", d.presence)
	mux.HandleFunc("POST /publish", d.publish)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv
}

// token mints a fresh token for the sample user, as an application's
// backend does for its signed-in user. Its lifetime is short, so the page
// shows the client refreshing it.
// ?ttl= (2s to 1h) sets another lifetime.
func (d *demo) token(w http.ResponseWriter, r *http.Request) {
	ttl := 10 * time.Minute
	if v := r.URL.Query().Get("ttl"); v != "" {
		var err error
		if ttl, err = time.ParseDuration(v); err != nil || ttl < 2*time.Second || ttl > time.Hour {
			writeJSON(w, http.StatusBadRequest, map[string]string{"code": "bad_ttl", "reason": "ttl is a duration from 2s to 1h"})
			return
		}
	}
	c := jwtmint.Claims{Subject: d.in.User, TTL: ttl}
	if len(d.topics) > 0 {
		c.Extra = map[string]any{"topics": d.topics}
	}
	tok, err := jwtmint.Mint("HS256", []byte(d.secret), c)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"code": "internal", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok})
}

// presence answers the user's presence and the room's, from the router.
func (d *demo) presence(w http.ResponseWriter, r *http.Request) {
	var out struct {
		User json.RawMessage `json:"user"`
		Room json.RawMessage `json:"room"`
	}
	var err error
	if out.User, err = d.call(r, http.MethodGet, "/v1/users/"+url.PathEscape(d.in.User)+"/presence", nil); err == nil {
		out.Room, err = d.call(r, http.MethodGet, "/v1/topics/"+url.PathEscape(demoRoom)+"/presence", nil)
	}
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"code": "router", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// publish sends {"to":"user"|"room","text":...} through the router.
func (d *demo) publish(w http.ResponseWriter, r *http.Request) {
	var req struct{ To, Text string }
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.Text == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"code": "bad_request", "reason": `send {"to":"user"|"room","text":"..."}`})
		return
	}
	path := "/v1/users/" + url.PathEscape(d.in.User) + "/messages"
	switch req.To {
	case "room":
		path = "/v1/topics/" + url.PathEscape(demoRoom) + "/messages"
	case "user", "":
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"code": "bad_request", "reason": `"to" is "user" or "room"`})
		return
	}
	body, _ := json.Marshal(map[string]any{"text": req.Text, "sent_at": time.Now().UnixMilli()})
	res, err := d.call(r, http.MethodPost, path, body)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"code": "router", "reason": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(res)
}

// call makes one router request with the fleet's API key and returns the
// body of a 2xx answer.
func (d *demo) call(r *http.Request, method, path string, body []byte) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(r.Context(), method, d.in.RouterURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+d.in.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := d.router.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, bytes.TrimSpace(b))
	}
	if !json.Valid(b) {
		return nil, errors.New(path + ": the router's answer is not JSON")
	}
	return b, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
