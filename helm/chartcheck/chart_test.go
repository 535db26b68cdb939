package chartcheck

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// helm lint --strict, for each values file, at the newest Kubernetes the
// linked API types know and at the oldest the chart supports.
func TestLintStrict(t *testing.T) {
	for _, f := range ciValuesFiles(t) {
		vals, err := ReadValues([]string{f}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range []string{"", "v1.30.0"} {
			if msgs := Lint(chartDir, vals, namespace, kv); len(msgs) > 0 {
				t.Errorf("helm lint --strict -f %s (kube %q):\n  %s", filepath.Base(f), kv, strings.Join(msgs, "\n  "))
			}
		}
	}
}

// helm template for each values file at Kubernetes 1.30 (the chart's
// minimum) too; every object decodes strictly (objects_test.go).
func TestTemplateDecodesStrictly(t *testing.T) {
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := rendered(t, f)
			if len(o.rel.Manifests) == 0 || o.rel.Notes == "" {
				t.Fatal("nothing rendered")
			}
			vals, _ := ReadValues([]string{f}, nil)
			if _, err := Render(chartDir, releaseName, namespace, "v1.30.0", vals); err != nil {
				t.Errorf("at Kubernetes 1.30: %v", err)
			}
			if _, err := Render(chartDir, releaseName, namespace, "v1.29.0", vals); err == nil {
				t.Error("rendered for Kubernetes 1.29, below the chart's kubeVersion (the preStop sleep action needs 1.30)")
			}
		})
	}
}

// hostPort parses ":8080" or "0.0.0.0:8080".
func hostPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	return int32(n)
}

func probePort(t *testing.T, c *corev1.Container, p *corev1.Probe) int32 {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Fatalf("container %s: probe without httpGet", c.Name)
	}
	if p.HTTPGet.Port.Type == intstr.String {
		return containerPort(c, p.HTTPGet.Port.StrVal)
	}
	return p.HTTPGet.Port.IntVal
}

func seconds(t *testing.T, d string) float64 {
	t.Helper()
	v, err := time.ParseDuration(d)
	if err != nil {
		t.Fatalf("%q: %v", d, err)
	}
	return v.Seconds()
}

// The gateway's ports, probes and drain as the binary understands them.
func TestGatewayPodMatchesBinary(t *testing.T) {
	b := getBinaries(t)
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := rendered(t, f)
			d := o.deployments[name("gateway")]
			if d == nil {
				t.Fatal("no gateway Deployment")
			}
			spec := &d.Spec.Template.Spec
			c := container(spec, "gateway")
			if c == nil || len(c.Command) != 1 || c.Command[0] != "/usr/local/bin/gateway" {
				t.Fatalf("gateway container command: %+v", c)
			}
			env := o.env(t, spec, "gateway", "pod", func(string, string) string { return "x" })
			flags := b.envFlags("gateway")
			for _, v := range []string{"WSFLEET_GATEWAY_LISTEN", "WSFLEET_GATEWAY_ADMIN_LISTEN", "WSFLEET_GATEWAY_NATS_URL", "WSFLEET_GATEWAY_DRAIN_TIMEOUT", "WSFLEET_GATEWAY_CLOSE_TIMEOUT", "WSFLEET_GATEWAY_MAX_CONNECTIONS", "WSFLEET_GATEWAY_NODE_ID"} {
				if env[v] == "" {
					t.Errorf("gateway env %s is not set", v)
				}
				if flags[v] == "" {
					t.Errorf("gateway --help has no flag for %s", v)
				}
			}
			if got, want := containerPort(c, "websocket"), hostPort(t, env["WSFLEET_GATEWAY_LISTEN"]); got != want {
				t.Errorf("websocket containerPort %d, --listen %s", got, env["WSFLEET_GATEWAY_LISTEN"])
			}
			admin := hostPort(t, env["WSFLEET_GATEWAY_ADMIN_LISTEN"])
			if got := containerPort(c, "admin"); got != admin {
				t.Errorf("admin containerPort %d, --admin-listen %s", got, env["WSFLEET_GATEWAY_ADMIN_LISTEN"])
			}
			for _, p := range []struct {
				kind  string
				probe *corev1.Probe
				path  string
			}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"startup", c.StartupProbe, "/healthz"}} {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("%s probe missing", p.kind)
					continue
				}
				if p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s probe path %s, want %s", p.kind, p.probe.HTTPGet.Path, p.path)
				}
				if got := probePort(t, c, p.probe); got != admin {
					t.Errorf("%s probe port %d, want the admin port %d", p.kind, got, admin)
				}
			}
			// The startup probe outlasts the first NATS connection.
			nct := 10.0
			if v := env["WSFLEET_GATEWAY_NATS_CONNECT_TIMEOUT"]; v != "" {
				nct = seconds(t, v)
			}
			if sp := c.StartupProbe; float64(sp.PeriodSeconds*sp.FailureThreshold) <= nct {
				t.Errorf("startup probe gives up after %ds, before --nats-connect-timeout %.0fs", sp.PeriodSeconds*sp.FailureThreshold, nct)
			}
			// Drain: the preStop runs `gateway drain --delay <sleep>`, and
			// grace > preStop sleep + drain timeout + close timeout (+ the
			// NATS drain, bounded at 5s).
			if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
				t.Fatal("no preStop exec")
			}
			pre := c.Lifecycle.PreStop.Exec.Command
			if len(pre) != 6 || pre[0] != c.Command[0] || pre[1] != "drain" || pre[2] != "--delay" || pre[4] != "--timeout" {
				t.Fatalf("preStop %q, want [%s drain --delay <seconds>s --timeout <seconds>s]", pre, c.Command[0])
			}
			sleep, hookTimeout := seconds(t, pre[3]), seconds(t, pre[5])
			// The hook reaches the node through its control socket, which
			// must sit on a writable volume of the container.
			// Its directory must be one the gateway creates (mode 0700): it
			// refuses a directory other users can open, such as the root
			// of an emptyDir (mode 0777).
			sock := env["WSFLEET_GATEWAY_CONTROL_SOCKET"]
			writable := false
			for _, m := range c.VolumeMounts {
				if m.ReadOnly || !strings.HasPrefix(sock, strings.TrimSuffix(m.MountPath, "/")+"/") {
					continue
				}
				writable = true
				if filepath.Dir(sock) == filepath.Clean(m.MountPath) {
					t.Errorf("control socket %q sits in the root of the volume %s, open to every user: the gateway refuses it; use a subdirectory", sock, m.MountPath)
				}
			}
			if sock == "" || !writable {
				t.Errorf("control socket %q is not on a writable volume of the gateway container", sock)
			}
			drain, closeT := seconds(t, env["WSFLEET_GATEWAY_DRAIN_TIMEOUT"]), seconds(t, env["WSFLEET_GATEWAY_CLOSE_TIMEOUT"])
			if spec.TerminationGracePeriodSeconds == nil {
				t.Fatal("no terminationGracePeriodSeconds")
			}
			grace := float64(*spec.TerminationGracePeriodSeconds)
			if need := sleep + drain + closeT + 5; grace <= need {
				t.Errorf("terminationGracePeriodSeconds %.0f <= preStop %.0fs + drain %.1fs + close %.1fs + NATS drain 5s", grace, sleep, drain, closeT)
			}
			if hookTimeout < sleep+drain+closeT || hookTimeout+5 >= grace {
				t.Errorf("the preStop hook's --timeout %.0fs: want at least delay + drain + close (%.1fs) and room for the NATS drain within the grace period %.0fs", hookTimeout, sleep+drain+closeT, grace)
			}
			if sleep < 1 {
				t.Errorf("preStop sleeps %.0fs: endpoints need a moment to drop the pod", sleep)
			}
			if mc, err := strconv.Atoi(env["WSFLEET_GATEWAY_MAX_CONNECTIONS"]); err != nil || mc < 1 {
				t.Errorf("--max-connections %q", env["WSFLEET_GATEWAY_MAX_CONNECTIONS"])
			} else if want := o.value("gateway.maxConnections"); fmt.Sprint(want) != strconv.Itoa(mc) {
				t.Errorf("--max-connections %d, values say %v", mc, want)
			}
			if d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable.String() != "0" {
				t.Errorf("gateway rolling update must keep capacity (maxUnavailable 0): %+v", d.Spec.Strategy)
			}
			if len(spec.TopologySpreadConstraints) == 0 && (spec.Affinity == nil || spec.Affinity.PodAntiAffinity == nil) {
				t.Error("gateways are not spread over nodes")
			}
			for _, tsc := range spec.TopologySpreadConstraints {
				if tsc.LabelSelector == nil || !labelsMatch(tsc.LabelSelector.MatchLabels, d.Spec.Template.Labels) {
					t.Errorf("topology spread on %s does not select the gateways", tsc.TopologyKey)
				}
			}
			if o.pdbs[name("gateway")] == nil {
				t.Error("no gateway PodDisruptionBudget")
			}
			if h, on := o.hpas[name("gateway")], o.value("gateway.autoscaling.enabled") == true; (h != nil) != on {
				t.Errorf("HPA rendered %v, autoscaling.enabled %v", h != nil, on)
			} else if on {
				if d.Spec.Replicas != nil {
					t.Error("the Deployment sets replicas under an HPA (every upgrade would reset the scale)")
				}
				if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
					t.Errorf("HPA targets %+v", h.Spec.ScaleTargetRef)
				}
				for _, m := range h.Spec.Metrics {
					if m.Pods != nil && m.Pods.Metric.Name != "wsfleet_gateway_connections" {
						t.Errorf("HPA pods metric %s", m.Pods.Metric.Name)
					}
				}
			}
		})
	}
}

// Every pod the chart runs is hardened and has resources.
func TestPodsHardenedWithResources(t *testing.T) {
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := rendered(t, f)
			specs := o.podSpecs()
			if len(specs) < 2 {
				t.Fatalf("pod templates: %v", sortedKeys(specs))
			}
			for what, spec := range specs {
				psc := spec.SecurityContext
				for _, c := range spec.Containers {
					where := what + " container " + c.Name
					if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
						t.Errorf("%s: resources need cpu and memory requests and a memory limit: %+v", where, c.Resources)
					}
					sc := c.SecurityContext
					if sc == nil {
						t.Errorf("%s: no securityContext", where)
						continue
					}
					nonRoot := (sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) || (psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
					uid := sc.RunAsUser
					if uid == nil && psc != nil {
						uid = psc.RunAsUser
					}
					if !nonRoot || uid == nil || *uid == 0 {
						t.Errorf("%s: must run as a non-root numeric user", where)
					}
					if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
						t.Errorf("%s: root filesystem must be read-only", where)
					}
					if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
						t.Errorf("%s: privilege escalation must be off", where)
					}
					if sc.Privileged != nil && *sc.Privileged {
						t.Errorf("%s: privileged", where)
					}
					if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
						t.Errorf("%s: capabilities must drop ALL and add none", where)
					}
					seccomp := sc.SeccompProfile
					if seccomp == nil && psc != nil {
						seccomp = psc.SeccompProfile
					}
					if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
						t.Errorf("%s: seccomp profile must be RuntimeDefault", where)
					}
				}
				if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
					t.Errorf("%s: mounts a service account token it never uses", what)
				}
			}
		})
	}
}

// Gateways and routers talk to the same NATS with the same subject prefix,
// always through --nats-url, and the bundled cluster is what they name.
func TestNATSAgreement(t *testing.T) {
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := rendered(t, f)
			gw, rt := o.configMaps[name("gateway")], o.configMaps[name("router")]
			if gw == nil || rt == nil {
				t.Fatal("gateway or router ConfigMap missing")
			}
			if gw.Data["WSFLEET_GATEWAY_NATS_URL"] == "" {
				t.Fatal("the gateways have no --nats-url: they would start the embedded NATS server")
			}
			if gw.Data["WSFLEET_GATEWAY_NATS_URL"] != rt.Data["WSFLEET_ROUTER_NATS_URL"] {
				t.Errorf("NATS URLs differ: gateway %q, router %q", gw.Data["WSFLEET_GATEWAY_NATS_URL"], rt.Data["WSFLEET_ROUTER_NATS_URL"])
			}
			if gw.Data["WSFLEET_GATEWAY_SUBJECT_PREFIX"] == "" || gw.Data["WSFLEET_GATEWAY_SUBJECT_PREFIX"] != rt.Data["WSFLEET_ROUTER_SUBJECT_PREFIX"] {
				t.Errorf("subject prefixes differ: gateway %q, router %q", gw.Data["WSFLEET_GATEWAY_SUBJECT_PREFIX"], rt.Data["WSFLEET_ROUTER_SUBJECT_PREFIX"])
			}
			for k := range gw.Data {
				if strings.HasPrefix(k, "WSFLEET_GATEWAY_NATS_EMBEDDED") {
					t.Errorf("gateway sets %s: the chart never runs the embedded server", k)
				}
			}
			sts := o.statefulSets[name("nats")]
			if deploy := o.value("nats.deploy") == true; deploy != (sts != nil) {
				t.Fatalf("nats.deploy %v, StatefulSet rendered %v", deploy, sts != nil)
			}
			if sts == nil {
				if want := fmt.Sprint(o.value("nats.url")); gw.Data["WSFLEET_GATEWAY_NATS_URL"] != want {
					t.Errorf("--nats-url %q, nats.url %q", gw.Data["WSFLEET_GATEWAY_NATS_URL"], want)
				}
				return
			}
			u, err := url.Parse(gw.Data["WSFLEET_GATEWAY_NATS_URL"])
			if err != nil || u.Scheme != "nats" {
				t.Fatalf("--nats-url %q: %v", gw.Data["WSFLEET_GATEWAY_NATS_URL"], err)
			}
			svc := o.services[u.Hostname()]
			if svc == nil {
				t.Fatalf("--nats-url names Service %q, which is not rendered", u.Hostname())
			}
			port, _ := strconv.Atoi(u.Port())
			var client *corev1.ServicePort
			for i := range svc.Spec.Ports {
				if int(svc.Spec.Ports[i].Port) == port {
					client = &svc.Spec.Ports[i]
				}
			}
			if client == nil {
				t.Fatalf("Service %s has no port %d", svc.Name, port)
			}
			c := container(&sts.Spec.Template.Spec, "nats")
			if client.TargetPort.StrVal == "" || containerPort(c, client.TargetPort.StrVal) == 0 {
				t.Errorf("NATS Service targets %v, not a NATS container port", client.TargetPort)
			}
			if !labelsMatch(svc.Spec.Selector, sts.Spec.Template.Labels) {
				t.Error("NATS Service does not select the NATS pods")
			}
			checkNATSConfig(t, o, sts)
		})
	}
}

// The bundled NATS cluster's configuration, parsed and checked by
// nats-server itself.
func checkNATSConfig(t *testing.T, o *objects, sts interface{ GetName() string }) {
	t.Helper()
	s := o.statefulSets[sts.GetName()]
	cm := o.configMaps[name("nats")]
	if cm == nil || cm.Data["nats.conf"] == "" {
		t.Fatal("no nats.conf")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(cm.Data["nats.conf"]), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", s.Name+"-0")
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server rejects nats.conf: %v\n%s", err, cm.Data["nats.conf"])
	}
	replicas := int(*s.Spec.Replicas)
	if opts.ServerName != s.Name+"-0" {
		t.Errorf("server_name %q", opts.ServerName)
	}
	c := container(&s.Spec.Template.Spec, "nats")
	if int32(opts.Port) != containerPort(c, "client") || int32(opts.HTTPPort) != containerPort(c, "monitor") {
		t.Errorf("nats ports %d/%d, container ports %v", opts.Port, opts.HTTPPort, c.Ports)
	}
	if replicas > 1 {
		if len(opts.Routes) != replicas || int32(opts.Cluster.Port) != containerPort(c, "cluster") {
			t.Errorf("%d routes on port %d for %d replicas", len(opts.Routes), opts.Cluster.Port, replicas)
		}
		headless := o.services[s.Spec.ServiceName]
		if headless == nil || headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReadyAddresses {
			t.Errorf("the routes need a headless Service publishing unready pods: %s", s.Spec.ServiceName)
		}
		for i, r := range opts.Routes {
			want := fmt.Sprintf("%s-%d.%s.%s.svc.", s.Name, i, s.Spec.ServiceName, namespace)
			if !strings.HasPrefix(r.Host, want) {
				t.Errorf("route %s, want host %s…", r, want)
			}
		}
	}
	if js := o.value("nats.jetstream.enabled") == true; opts.JetStream != js {
		t.Errorf("JetStream %v, values %v", opts.JetStream, js)
	} else if js && o.value("nats.jetstream.fileStore.enabled") == true {
		if opts.StoreDir != "/data" || len(s.Spec.VolumeClaimTemplates) != 1 {
			t.Errorf("JetStream store %q with %d volume claims", opts.StoreDir, len(s.Spec.VolumeClaimTemplates))
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || (m.MountPath == opts.StoreDir && m.Name == s.Spec.VolumeClaimTemplates[0].Name)
		}
		if !mounted {
			t.Error("the JetStream store directory is not on the volume claim")
		}
	} else if js {
		// Memory streams only: JetStream's own state (the cluster's meta
		// log) still needs a directory, on an emptyDir.
		if len(s.Spec.VolumeClaimTemplates) != 0 || opts.JetStreamMaxStore != 0 {
			t.Errorf("without fileStore: %d volume claims, max_file_store %d", len(s.Spec.VolumeClaimTemplates), opts.JetStreamMaxStore)
		}
		checkStoreDir(t, s, c, opts.StoreDir)
		for _, m := range c.VolumeMounts {
			if m.MountPath != opts.StoreDir {
				continue
			}
			for _, v := range s.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.EmptyDir == nil {
					t.Errorf("JetStream's state without fileStore on volume %s, not an emptyDir", v.Name)
				}
			}
		}
	} else if len(s.Spec.VolumeClaimTemplates) != 0 {
		t.Errorf("volume claims without JetStream: %d", len(s.Spec.VolumeClaimTemplates))
	}
	grace := time.Duration(*s.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if grace <= opts.LameDuckDuration+opts.LameDuckGracePeriod {
		t.Errorf("NATS grace %s <= lame duck %s + %s", grace, opts.LameDuckDuration, opts.LameDuckGracePeriod)
	}
	pre := c.Lifecycle.PreStop
	if pre == nil || pre.Exec == nil || !strings.Contains(strings.Join(pre.Exec.Command, " "), "ldm="+opts.PidFile) {
		t.Errorf("preStop must put the server in lame duck mode through %s: %+v", opts.PidFile, pre)
	}
	if o.pdbs[name("nats")] == nil {
		t.Error("no NATS PodDisruptionBudget")
	}
}

// Every WSFLEET_* variable the chart sets names a flag of the binary.
func TestEnvNamesAreFlags(t *testing.T) {
	b := getBinaries(t)
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := rendered(t, f)
			for _, bin := range []string{"gateway", "router"} {
				d := o.deployments[name(bin)]
				if d == nil {
					t.Fatalf("no %s Deployment", bin)
				}
				flags := b.envFlags(bin)
				env := o.env(t, &d.Spec.Template.Spec, bin, "pod", func(string, string) string { return "x" })
				for k := range env {
					if strings.HasPrefix(k, "WSFLEET_") && flags[k] == "" {
						t.Errorf("%s: %s is not a flag's variable in `%s --help`", bin, k, bin)
					}
				}
			}
		})
	}
}

// values.schema.json lists the flags gateway.config and router.config may
// set: each must be a flag of the binary, and the chart's own settings
// must be flags too.
func TestSchemaConfigKeysAreFlags(t *testing.T) {
	b := getBinaries(t)
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties map[string]struct {
			Properties map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"properties"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	helpers, err := os.ReadFile(filepath.Join(chartDir, "templates", "_helpers.tpl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{"gateway", "router"} {
		flags := b.flags[bin]
		keys := schema.Properties[bin].Properties["config"].Properties
		if len(keys) == 0 {
			t.Fatalf("schema lists no %s.config keys", bin)
		}
		for k := range keys {
			if _, ok := flags[k]; !ok {
				t.Errorf("schema %s.config.%s is not a flag of `%s --help`", bin, k, bin)
			}
		}
		m := regexp.MustCompile(`define "wsfleet.` + bin + `.reserved" -}}\s*([a-z0-9 -]+)`).FindSubmatch(helpers)
		if m == nil {
			t.Fatalf("no wsfleet.%s.reserved in _helpers.tpl", bin)
		}
		reserved := strings.Fields(string(m[1]))
		for _, k := range reserved {
			if _, ok := flags[k]; !ok {
				t.Errorf("wsfleet.%s.reserved names %q, not a flag of %s", bin, k, bin)
			}
			if _, ok := keys[k]; ok {
				t.Errorf("schema lets %s.config set %q, which the chart sets", bin, k)
			}
		}
		var missing []string
		for f := range flags {
			if _, ok := keys[f]; !ok && !slices.Contains(reserved, f) && f != "help" {
				missing = append(missing, f)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			t.Logf("%s flags the chart cannot set through %s.config yet (extraEnv can): %s", bin, bin, strings.Join(missing, ", "))
		}
	}
}

// Services, PDBs, Ingresses, ServiceMonitors and NetworkPolicies point at
// things that exist.
func TestReferences(t *testing.T) {
	for _, f := range ciValuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			o := rendered(t, f)
			podsOf := func(sel map[string]string) []*corev1.PodTemplateSpec {
				var out []*corev1.PodTemplateSpec
				for _, d := range o.deployments {
					if labelsMatch(sel, d.Spec.Template.Labels) {
						out = append(out, &d.Spec.Template)
					}
				}
				for _, s := range o.statefulSets {
					if labelsMatch(sel, s.Spec.Template.Labels) {
						out = append(out, &s.Spec.Template)
					}
				}
				return out
			}
			for _, d := range o.deployments {
				if !labelsMatch(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
					t.Errorf("Deployment %s selector does not match its pods", d.Name)
				}
			}
			for _, svc := range o.services {
				pods := podsOf(svc.Spec.Selector)
				if len(pods) != 1 {
					t.Errorf("Service %s selects %d workloads", svc.Name, len(pods))
					continue
				}
				for _, p := range svc.Spec.Ports {
					found := false
					for _, c := range pods[0].Spec.Containers {
						found = found || containerPort(&c, p.TargetPort.StrVal) != 0
					}
					if p.TargetPort.Type != intstr.String || !found {
						t.Errorf("Service %s port %s targets %v, not a named container port", svc.Name, p.Name, p.TargetPort)
					}
				}
			}
			for _, p := range o.pdbs {
				if len(podsOf(p.Spec.Selector.MatchLabels)) != 1 {
					t.Errorf("PDB %s does not select one workload", p.Name)
				}
			}
			for _, ing := range o.ingresses {
				for _, r := range ing.Spec.Rules {
					for _, p := range r.HTTP.Paths {
						svc := o.services[p.Backend.Service.Name]
						if svc == nil {
							t.Errorf("Ingress backend %s not rendered", p.Backend.Service.Name)
							continue
						}
						ok := false
						for _, sp := range svc.Spec.Ports {
							ok = ok || sp.Name == p.Backend.Service.Port.Name
						}
						if !ok {
							t.Errorf("Ingress backend port %q not on Service %s", p.Backend.Service.Port.Name, svc.Name)
						}
					}
				}
				checkIngressAnnotations(t, o, ing.Annotations)
			}
			for _, sm := range o.serviceMonitors {
				var selected []string
				for _, svc := range o.services {
					if labelsMatch(sm.Spec.Selector.MatchLabels, svc.Labels) {
						selected = append(selected, svc.Name)
						for _, ep := range sm.Spec.Endpoints {
							ok := false
							for _, p := range svc.Spec.Ports {
								ok = ok || p.Name == ep.Port
							}
							if !ok {
								t.Errorf("ServiceMonitor port %q not on %s", ep.Port, svc.Name)
							}
						}
					}
				}
				slices.Sort(selected)
				if !slices.Contains(selected, name("gateway-metrics")) || slices.Contains(selected, name("gateway")) {
					t.Errorf("ServiceMonitor selects %v: it must scrape the gateways' metrics Service only", selected)
				}
			}
			for _, np := range o.netpols {
				pods := podsOf(np.Spec.PodSelector.MatchLabels)
				if len(pods) != 1 {
					t.Errorf("NetworkPolicy %s selects %d workloads", np.Name, len(pods))
					continue
				}
				for _, r := range np.Spec.Ingress {
					for _, p := range r.Ports {
						if p.Port != nil && p.Port.Type == intstr.String {
							found := false
							for _, c := range pods[0].Spec.Containers {
								found = found || containerPort(&c, p.Port.StrVal) != 0
							}
							if !found {
								t.Errorf("NetworkPolicy %s allows port %q, not a container port", np.Name, p.Port.StrVal)
							}
						}
					}
				}
				dns := false
				for _, r := range np.Spec.Egress {
					for _, p := range r.Ports {
						dns = dns || (p.Port != nil && p.Port.IntVal == 53)
					}
				}
				if !dns {
					t.Errorf("NetworkPolicy %s blocks DNS", np.Name)
				}
			}
			if o.value("networkPolicy.enabled") == true {
				for _, c := range []string{"gateway", "router"} {
					np := o.netpols[name(c)]
					if np == nil {
						t.Fatalf("no NetworkPolicy for %s", c)
					}
					if !egressAllowsNATS(o, np) {
						t.Errorf("NetworkPolicy %s does not let the %s reach NATS", np.Name, c)
					}
					if u := o.configMaps[name(c)].Data["WSFLEET_"+strings.ToUpper(c)+"_JWT_JWKS_URL"]; u != "" && !egressAllowsURL(np, u) {
						t.Errorf("NetworkPolicy %s does not let the %s reach its JWKS URL %s", np.Name, c, u)
					}
				}
			}
		})
	}
}

func egressAllowsNATS(o *objects, np interface{ GetName() string }) bool {
	p := o.netpols[np.GetName()]
	u, _ := url.Parse(strings.Split(o.configMaps[name("gateway")].Data["WSFLEET_GATEWAY_NATS_URL"], ",")[0])
	port, _ := strconv.Atoi(u.Port())
	if sts := o.statefulSets[name("nats")]; sts != nil {
		port = int(containerPort(container(&sts.Spec.Template.Spec, "nats"), "client"))
	}
	for _, r := range p.Spec.Egress {
		for _, pp := range r.Ports {
			if pp.Port != nil && pp.Port.IntVal == int32(port) {
				return true
			}
		}
	}
	return false
}

// nginx WebSocket timeouts are far above the heartbeat; sticky routing
// hashes on a header or query argument.
func checkIngressAnnotations(t *testing.T, o *objects, ann map[string]string) {
	t.Helper()
	if o.value("ingress.nginx.enabled") != true {
		return
	}
	hb := 30.0
	if v, ok := o.value("gateway.config.heartbeat").(string); ok {
		hb = seconds(t, v)
	}
	for _, k := range []string{"nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"} {
		v, err := strconv.Atoi(ann[k])
		if err != nil || float64(v) < 2*hb {
			t.Errorf("%s = %q: must be at least twice the heartbeat (%.0fs)", k, ann[k], hb)
		}
	}
	hash, sticky := ann["nginx.ingress.kubernetes.io/upstream-hash-by"]
	if want := o.value("ingress.stickyRouting.enabled") == true; sticky != want {
		t.Errorf("upstream-hash-by set %v, stickyRouting.enabled %v", sticky, want)
	} else if sticky && !regexp.MustCompile(`^\$(http_[a-z0-9_]+|arg_[A-Za-z0-9_]+)$`).MatchString(hash) {
		t.Errorf("upstream-hash-by %q is not a header or query argument variable", hash)
	}
}

// A config change rolls the pods that read it, and only those.
func TestChecksumRollsPods(t *testing.T) {
	annotations := func(sets ...string) map[string]map[string]string {
		t.Helper()
		vals, err := ReadValues([]string{filepath.Join(chartDir, "ci", "bundled-nats-jetstream-values.yaml")}, sets)
		if err != nil {
			t.Fatal(err)
		}
		rel, err := Render(chartDir, releaseName, namespace, "", vals)
		if err != nil {
			t.Fatal(err)
		}
		o := decode(t, rel, vals)
		out := map[string]map[string]string{}
		for n, d := range o.deployments {
			out[n] = d.Spec.Template.Annotations
		}
		for n, s := range o.statefulSets {
			out[n] = s.Spec.Template.Annotations
		}
		return out
	}
	base := annotations()
	for _, tc := range []struct {
		set   string
		rolls []string
	}{
		{"gateway.config.max-connect-rate=500", []string{"gateway"}},
		{"gateway.drain.timeout=40s", []string{"gateway"}},
		{"router.config.max-body-bytes=1024", []string{"router"}},
		{"auth.jwt.hs256Secret=another-hs256-secret-of-32-bytes-or-more", []string{"gateway", "router"}},
		{"router.apiKeys.keys={a-new-router-api-key-0001}", []string{"router"}},
		{"nats.maxPayload=2MB", []string{"nats"}},
		{"subjectPrefix=acme", []string{"gateway", "router"}},
		{"resume.history.ttl=1h", []string{"gateway", "router"}},
		{"resume.history.replicas=1", []string{"gateway", "router"}},
		{"resume.enabled=false", []string{"gateway", "router"}},
		{"nats.jetstream.memoryStore=300Mi", []string{"nats"}},
	} {
		got := annotations(tc.set)
		for _, c := range []string{"gateway", "router", "nats"} {
			changed := fmt.Sprint(got[name(c)]) != fmt.Sprint(base[name(c)])
			if want := slices.Contains(tc.rolls, c); changed != want {
				t.Errorf("--set %s: %s pods roll %v, want %v", tc.set, c, changed, want)
			}
		}
	}
	for n, a := range base {
		if a["checksum/config"] == "" {
			t.Errorf("%s has no checksum/config annotation", n)
		}
	}
}

// Values that would break a fleet fail rendering with a message naming
// the value.
func TestRenderFailures(t *testing.T) {
	for _, tc := range []struct {
		sets []string
		want string
	}{
		{[]string{"gateway.terminationGracePeriodSeconds=30"}, "shorter than the drain needs"},
		{[]string{"gateway.drain.timeout=2m", "gateway.terminationGracePeriodSeconds=120"}, "shorter than the drain needs"},
		{[]string{"gateway.drain.timeout=30"}, "/gateway/drain/timeout"},
		{[]string{"nats.url=nats://nats:4222"}, "not both"},
		{[]string{"nats.deploy=false"}, "the gateways need NATS"},
		{[]string{"gateway.config.nats-url=nats://x:4222"}, "nats-url"},
		{[]string{"gateway.config.drain-timeout=10s"}, "drain-timeout"},
		{[]string{"gateway.config.drian-timeout=10s"}, "drian-timeout"},
		{[]string{"router.config.api-key=abcdefghijklmnopq"}, "api-key"},
		{[]string{"gateway.config.heartbeat=2m"}, "idle-timeout must be longer"},
		{[]string{"gateway.config.memory-limit=1.5GB"}, "memory-limit"},
		{[]string{"gateway.config.gc-percent=0"}, "gc-percent"},
		{[]string{"gateway.config.memory-limit=0"}, "memory-limit"},
		{[]string{"gateway.config.max-pending-bytes=-5"}, "max-pending-bytes"},
		{[]string{"gateway.config.max-message-bytes=100000000"}, "max-message-bytes"},
		{[]string{"gateway.config.loop-queue-bytes=1000"}, "loop-queue-bytes"},
		{[]string{"gateway.config.nats-outage-grace=10"}, "nats-outage-grace"},
		{[]string{"gateway.config.control-socket=/tmp/gateway.sock"}, "control-socket"},
		{[]string{"ingress.enabled=true", "ingress.nginx.enabled=false", "ingress.stickyRouting.enabled=true", "ingress.stickyRouting.header=X-User"}, "ingress.nginx.enabled"},
		{[]string{"ingress.stickyRouting.enabled=true", "ingress.stickyRouting.header=X-User"}, "ingress.enabled"},
		{[]string{"nats.jetstream.enabled=true", "nats.replicas=2"}, "quorum"},
		{[]string{"ingress.enabled=true", "ingress.nginx.proxyReadTimeoutSeconds=45"}, "twice the heartbeat"},
		{[]string{"ingress.enabled=true", "ingress.stickyRouting.enabled=true"}, "header or a queryArg"},
		{[]string{"auth.jwt.hs256Secret=short"}, "32"},
		{[]string{"auth.jwt.jwksURL=http://idp/jwks.json"}, "gateway.config.jwt-jwks-allow-http"},
		{[]string{"auth.jwt.jwksURL=http://idp/jwks.json", "gateway.config.jwt-jwks-allow-http=true", "router.useGatewayJWTKeys=true"}, "router.config.jwt-jwks-allow-http"},
		{[]string{"router.apiKeys.keys={short}"}, "16"},
		{[]string{"nats.lameDuckDuration=10s"}, "lameDuckDuration"},
		{[]string{"nats.terminationGracePeriodSeconds=35"}, "lameDuckDuration + lameDuckGracePeriod"},
		{[]string{"gateway.autoscaling.enabled=true", "gateway.autoscaling.cpu.enabled=false"}, "cpu.enabled or connections.enabled"},
		{[]string{"gateway.sysctls.ipLocalPortRange=1024-65535"}, "ipLocalPortRange"},
		{[]string{"gateway.drain.preStopSleepSeconds=0"}, "preStopSleepSeconds"},
		{[]string{"nats.jetstream.enabled=false"}, "resume.enabled needs JetStream"},
		{[]string{"resume.history.replicas=5"}, "more than the NATS servers"},
		{[]string{"nats.replicas=1"}, ""},
		{[]string{"resume.history.replicas=6", "nats.replicas=7"}, "/resume/history/replicas"},
		{[]string{"resume.history.storage=disk"}, "/resume/history/storage"},
		{[]string{"nats.jetstream.fileStore.enabled=false"}, "nats.jetstream.fileStore.enabled"},
		{[]string{"resume.history.maxBytes=9Gi"}, "80% of nats.jetstream.fileStore.size"},
		{[]string{"resume.history.storage=memory"}, "80% of nats.jetstream.memoryStore"},
		{[]string{"resume.history.maxBytes=1Gb2"}, "/resume/history/maxBytes"},
		{[]string{"resume.history.maxBytes=1000"}, "/resume/history/maxBytes"},
		{[]string{"resume.history.maxBytes=1Ki"}, "at least 1Mi"},
		{[]string{"resume.history.ttl=500ms"}, "at least 1s"},
		{[]string{"resume.history.ttl=1d"}, "/resume/history/ttl"},
		{[]string{"resume.history.maxPerUser=0"}, "/resume/history/maxPerUser"},
		{[]string{"gateway.config.resume=false"}, "resume"},
		{[]string{"router.config.history-ttl=1h"}, "history-ttl"},
	} {
		vals, err := ReadValues(nil, tc.sets)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Render(chartDir, releaseName, namespace, "", vals)
		if tc.want == "" {
			if err != nil {
				t.Errorf("--set %s: %v, want it rendered", strings.Join(tc.sets, " --set "), err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s: got error %v, want one mentioning %q", strings.Join(tc.sets, " --set "), err, tc.want)
		}
	}
}

// The official nats image the chart runs is the nats-server version the
// gateway's tests run against.
func TestNATSImageMatchesGoMod(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`github.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("nats-server is not in go.mod")
	}
	if tag := fmt.Sprint(chartDefaults()["nats"].(map[string]any)["image"].(map[string]any)["tag"]); tag != string(m[1]) {
		t.Errorf("nats.image.tag %s, go.mod has nats-server v%s", tag, m[1])
	}
}

// The Dockerfile builds what the chart runs: every binary static, at the
// path the chart's commands name, as the user the pods run as.
func TestDockerfile(t *testing.T) {
	df, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(df)
	o := rendered(t, filepath.Join(chartDir, "ci", "default-values.yaml"))
	commands := map[string]string{}
	for what, spec := range o.podSpecs() {
		for _, c := range spec.Containers {
			if c.Name != "nats" {
				if len(c.Command) != 1 {
					t.Errorf("%s: command %v", what, c.Command)
					continue
				}
				commands[c.Name] = c.Command[0]
				if uid := spec.SecurityContext.RunAsUser; uid == nil || !strings.Contains(s, fmt.Sprintf("USER %d:%d", *uid, *uid)) {
					t.Errorf("%s runs as %v; the Dockerfile's USER differs", what, uid)
				}
			}
		}
	}
	for c, path := range commands {
		bin := filepath.Base(path)
		if !regexp.MustCompile(`(?m)^FROM \S+ AS ` + regexp.QuoteMeta(bin) + `$`).MatchString(s) {
			t.Errorf("no Dockerfile target %q for container %s", bin, c)
		}
		if !strings.Contains(s, "COPY --from=build-"+bin+" /out/"+bin+" "+path+"\n") {
			t.Errorf("the Dockerfile does not put %s at %s", bin, path)
		}
		if !strings.Contains(s, "-o /out/"+bin+" ./cmd/"+bin) {
			t.Errorf("the Dockerfile does not build ./cmd/%s", bin)
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "gcr.io/distroless/static", ":nonroot", "\nFROM runtime AS wsfleet\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(ignore), "\n") {
		if l = strings.TrimSpace(l); l == "go.mod" || l == "go.sum" || l == "cmd" || l == "internal" || l == "*.go" {
			t.Errorf(".dockerignore drops %s, which the build needs", l)
		}
	}
}

// egressAllowsURL reports whether np lets a pod open a connection to u's
// port (to any destination: a NetworkPolicy cannot name a host).
func egressAllowsURL(np *networkingv1.NetworkPolicy, u string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	port := 443
	if pu.Scheme == "http" {
		port = 80
	}
	if p := pu.Port(); p != "" {
		port, _ = strconv.Atoi(p)
	}
	for _, r := range np.Spec.Egress {
		if len(r.Ports) == 0 {
			return true
		}
		for _, p := range r.Ports {
			if p.Port != nil && p.Port.IntValue() == port {
				return true
			}
		}
	}
	return false
}
