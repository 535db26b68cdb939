package chartcheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// gatewayMetrics are the series names gateway/metrics.go registers, with
// the _bucket/_sum/_count series of its histograms, and the process
// collector's series. Names come from its helpers (counter, gauge, loopSum:
// the per-loop counters summed at scrape time), from Opts literals and from
// collectors' descriptors (prometheus.NewDesc(ns+"_name", ...)).
func gatewayMetrics(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "gateway", "metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, re := range []string{`(?:counter|gauge|loopSum)\("([a-z_]+)"`, `Name:\s*"([a-z_]+)"`, `NewDesc\(ns\s*\+\s*"_([a-z_]+)"`} {
		for _, m := range regexp.MustCompile(re).FindAllSubmatch(src, -1) {
			n := "wsfleet_gateway_" + string(m[1])
			names[n] = true
			if strings.HasSuffix(n, "_seconds") {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[n+s] = true
				}
			}
		}
	}
	for _, must := range []string{"wsfleet_gateway_connections", "wsfleet_gateway_max_connections", "wsfleet_gateway_nats_connected",
		"wsfleet_gateway_slow_consumer_closes_total", "wsfleet_gateway_auth_failures_total", "wsfleet_gateway_handshake_seconds", "wsfleet_gateway_connect_seconds",
		"wsfleet_gateway_messages_out_total", "wsfleet_gateway_nats_dropped_messages_total", "wsfleet_gateway_dropped_total"} {
		if !names[must] {
			t.Fatalf("gateway/metrics.go no longer registers %s (found %d series)", must, len(names))
		}
	}
	for _, p := range []string{"process_max_fds", "process_open_fds", "process_resident_memory_bytes"} {
		names[p] = true
	}
	return names
}

var seriesName = regexp.MustCompile(`\b(wsfleet_[a-z_]+|process_[a-z_]+)\b`)

func checkExpr(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	found := seriesName.FindAllString(expr, -1)
	if len(found) == 0 {
		t.Errorf("%s: no wsfleet series in %q", where, expr)
	}
	for _, n := range found {
		if !known[n] {
			t.Errorf("%s: %s is not a series the gateway exports", where, n)
		}
	}
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
		t.Errorf("%s: unbalanced expression %q", where, expr)
	}
}

// The alerts and the dashboard query series the gateway exports.
func TestMonitoringUsesGatewaySeries(t *testing.T) {
	known := gatewayMetrics(t)
	o := rendered(t, filepath.Join(chartDir, "ci", "bundled-nats-jetstream-values.yaml"))
	if len(o.promRules) != 1 || len(o.serviceMonitors) != 1 {
		t.Fatalf("want one PrometheusRule and one ServiceMonitor, got %d and %d", len(o.promRules), len(o.serviceMonitors))
	}
	alerts := map[string]string{}
	for _, r := range o.promRules {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				alerts[rule.Alert] = rule.Expr.String()
				checkExpr(t, "alert "+rule.Alert, rule.Expr.String(), known)
				if rule.Labels["severity"] == "" || rule.Annotations["summary"] == "" {
					t.Errorf("alert %s lacks a severity or a summary", rule.Alert)
				}
			}
		}
	}
	for alert, series := range map[string]string{
		"WsfleetGatewayNATSDisconnected":           "wsfleet_gateway_nats_connected",
		"WsfleetGatewaySlowConsumerCloses":         "wsfleet_gateway_slow_consumer_closes_total",
		"WsfleetGatewayNearMaxConnections":         "wsfleet_gateway_max_connections",
		"WsfleetGatewayAuthFailureSpike":           "wsfleet_gateway_auth_failures_total",
		"WsfleetGatewayMaxConnectionsAboveFdLimit": "process_max_fds",
		"WsfleetGatewayBroadcastsDropped":          `wsfleet_gateway_dropped_total{reason="loop_queue_full",`,
	} {
		if !strings.Contains(alerts[alert], series) {
			t.Errorf("alert %s missing or not on %s: %q", alert, series, alerts[alert])
		}
	}
	// The alerts select the metrics Service's job, which the ServiceMonitor scrapes.
	if !strings.Contains(alerts["WsfleetGatewayNATSDisconnected"], `job="`+name("gateway-metrics")+`"`) {
		t.Errorf("alerts select %q", alerts["WsfleetGatewayNATSDisconnected"])
	}

	cm := o.configMaps[name("dashboard")]
	if cm == nil || cm.Labels["grafana_dashboard"] != "1" {
		t.Fatal("no dashboard ConfigMap labelled for the Grafana sidecar")
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(cm.Data["wsfleet-gateway.json"]), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" {
		t.Error("dashboard without uid")
	}
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkExpr(t, "panel "+p.Title, tg.Expr, known)
			for _, n := range seriesName.FindAllString(tg.Expr, -1) {
				queried[n] = true
			}
		}
	}
	for _, must := range []string{"wsfleet_gateway_handshake_seconds_bucket", "wsfleet_gateway_connect_seconds_bucket", "wsfleet_gateway_connections",
		"wsfleet_gateway_nats_connected", "wsfleet_gateway_slow_consumer_closes_total", "wsfleet_gateway_auth_failures_total",
		"wsfleet_gateway_dropped_total"} {
		if !queried[must] {
			t.Errorf("the dashboard has no panel on %s", must)
		}
	}
}
