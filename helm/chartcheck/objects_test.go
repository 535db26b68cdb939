package chartcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

const (
	chartDir    = "../wsfleet"
	repoRoot    = "../.."
	releaseName = "prod"
	namespace   = "realtime"
)

// The objects of a rendered release, decoded strictly (an unknown or
// duplicated field is an error) into the Kubernetes API types.
type objects struct {
	rel             *Release
	vals            map[string]any
	deployments     map[string]*appsv1.Deployment
	statefulSets    map[string]*appsv1.StatefulSet
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	serviceAccounts map[string]*corev1.ServiceAccount
	pods            map[string]*corev1.Pod
	pdbs            map[string]*policyv1.PodDisruptionBudget
	hpas            map[string]*autoscalingv2.HorizontalPodAutoscaler
	ingresses       map[string]*networkingv1.Ingress
	netpols         map[string]*networkingv1.NetworkPolicy
	serviceMonitors map[string]*monitoringv1.ServiceMonitor
	promRules       map[string]*monitoringv1.PrometheusRule
}

// kinds maps each kind the chart may render to its API version and a
// constructor; anything else fails the test.
var kinds = map[string]struct {
	apiVersion string
	add        func(o *objects, data []byte) (string, error)
}{
	"Deployment":              {"apps/v1", addTo(func(o *objects) map[string]*appsv1.Deployment { return o.deployments })},
	"StatefulSet":             {"apps/v1", addTo(func(o *objects) map[string]*appsv1.StatefulSet { return o.statefulSets })},
	"Service":                 {"v1", addTo(func(o *objects) map[string]*corev1.Service { return o.services })},
	"ConfigMap":               {"v1", addTo(func(o *objects) map[string]*corev1.ConfigMap { return o.configMaps })},
	"Secret":                  {"v1", addTo(func(o *objects) map[string]*corev1.Secret { return o.secrets })},
	"ServiceAccount":          {"v1", addTo(func(o *objects) map[string]*corev1.ServiceAccount { return o.serviceAccounts })},
	"Pod":                     {"v1", addTo(func(o *objects) map[string]*corev1.Pod { return o.pods })},
	"PodDisruptionBudget":     {"policy/v1", addTo(func(o *objects) map[string]*policyv1.PodDisruptionBudget { return o.pdbs })},
	"HorizontalPodAutoscaler": {"autoscaling/v2", addTo(func(o *objects) map[string]*autoscalingv2.HorizontalPodAutoscaler { return o.hpas })},
	"Ingress":                 {"networking.k8s.io/v1", addTo(func(o *objects) map[string]*networkingv1.Ingress { return o.ingresses })},
	"NetworkPolicy":           {"networking.k8s.io/v1", addTo(func(o *objects) map[string]*networkingv1.NetworkPolicy { return o.netpols })},
	"ServiceMonitor":          {"monitoring.coreos.com/v1", addTo(func(o *objects) map[string]*monitoringv1.ServiceMonitor { return o.serviceMonitors })},
	"PrometheusRule":          {"monitoring.coreos.com/v1", addTo(func(o *objects) map[string]*monitoringv1.PrometheusRule { return o.promRules })},
}

type named interface{ GetName() string }

func addTo[T any, PT interface {
	*T
	named
}](field func(*objects) map[string]PT) func(*objects, []byte) (string, error) {
	return func(o *objects, data []byte) (string, error) {
		v := PT(new(T))
		if err := yaml.UnmarshalStrict(data, v); err != nil {
			return "", err
		}
		m := field(o)
		if _, dup := m[v.GetName()]; dup {
			return "", fmt.Errorf("two objects named %q", v.GetName())
		}
		m[v.GetName()] = v
		return v.GetName(), nil
	}
}

func decode(t *testing.T, rel *Release, vals map[string]any) *objects {
	t.Helper()
	o := &objects{
		rel: rel, vals: vals,
		deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		pods: map[string]*corev1.Pod{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}, ingresses: map[string]*networkingv1.Ingress{},
		netpols: map[string]*networkingv1.NetworkPolicy{}, serviceMonitors: map[string]*monitoringv1.ServiceMonitor{},
		promRules: map[string]*monitoringv1.PrometheusRule{},
	}
	for _, m := range rel.Manifests {
		k, ok := kinds[m.Kind]
		if !ok {
			t.Errorf("%s: kind %s is not one the tests know", m.Source, m.Kind)
			continue
		}
		if m.APIVersion != k.apiVersion {
			t.Errorf("%s: %s has apiVersion %s, want %s", m.Source, m.Kind, m.APIVersion, k.apiVersion)
		}
		name, err := k.add(o, []byte(m.YAML))
		if err != nil {
			t.Errorf("%s: %s %s does not decode strictly: %v", m.Source, m.Kind, m.Name, err)
			continue
		}
		var meta struct {
			Metadata struct {
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		_ = yaml.Unmarshal([]byte(m.YAML), &meta)
		if meta.Metadata.Namespace != namespace && !(m.Kind == "ConfigMap" && strings.HasSuffix(name, "-dashboard")) {
			t.Errorf("%s: %s %s is in namespace %q, want the release's %q", m.Source, m.Kind, name, meta.Metadata.Namespace, namespace)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return o
}

// ciValuesFiles are the values files rendered by every test, with "" for
// the chart's defaults alone.
func ciValuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) < 4 {
		t.Fatalf("want the values files under %s/ci (defaults, external NATS, bundled NATS with JetStream, HPA + ingress + sticky routing), got %v %v", chartDir, files, err)
	}
	return files
}

var renderCache sync.Map // values file -> *objects

// rendered renders the chart with a values file as release prod in
// namespace realtime, decoded.
func rendered(t *testing.T, file string) *objects {
	t.Helper()
	if o, ok := renderCache.Load(file); ok {
		return o.(*objects)
	}
	vals, err := ReadValues([]string{file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := Render(chartDir, releaseName, namespace, "", vals)
	if err != nil {
		t.Fatalf("rendering with %s: %v", file, err)
	}
	o := decode(t, rel, vals)
	renderCache.Store(file, o)
	return o
}

func name(component string) string { return releaseName + "-wsfleet-" + component }

// value reads a dotted path of the values the file set over the chart's
// defaults (values.yaml), the way the templates see them.
func (o *objects) value(path string) any {
	var v any = mergeMaps(chartDefaults(), o.vals)
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

var (
	defaultsOnce sync.Once
	defaults     map[string]any
)

func chartDefaults() map[string]any {
	defaultsOnce.Do(func() {
		b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
		if err != nil {
			panic(err)
		}
		if err := yaml.Unmarshal(b, &defaults); err != nil {
			panic(err)
		}
	})
	return defaults
}

// podSpecs are every pod template of the release: Deployments,
// StatefulSets and hook Pods.
func (o *objects) podSpecs() map[string]*corev1.PodSpec {
	out := map[string]*corev1.PodSpec{}
	for n, d := range o.deployments {
		out["Deployment "+n] = &d.Spec.Template.Spec
	}
	for n, s := range o.statefulSets {
		out["StatefulSet "+n] = &s.Spec.Template.Spec
	}
	for n, p := range o.pods {
		out["Pod "+n] = &p.Spec
	}
	return out
}

// env is a container's environment as the process sees it: envFrom
// ConfigMaps, then env (Secrets and the downward API resolved from the
// rendered objects; Secrets the chart does not render come from secretFor).
func (o *objects) env(t *testing.T, spec *corev1.PodSpec, container string, podName string, secretFor func(name, key string) string) map[string]string {
	t.Helper()
	var c *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == container {
			c = &spec.Containers[i]
		}
	}
	if c == nil {
		t.Fatalf("no container %q", container)
	}
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			t.Fatalf("container %s: envFrom other than a ConfigMap", container)
		}
		cm := o.configMaps[ef.ConfigMapRef.Name]
		if cm == nil {
			t.Fatalf("container %s: envFrom ConfigMap %s is not rendered", container, ef.ConfigMapRef.Name)
		}
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			if s := o.secrets[ref.Name]; s != nil {
				v, ok := s.Data[ref.Key]
				if !ok {
					t.Fatalf("container %s: %s refers to key %q missing from Secret %s", container, e.Name, ref.Key, ref.Name)
				}
				env[e.Name] = string(v)
			} else {
				env[e.Name] = secretFor(ref.Name, ref.Key)
			}
		default:
			t.Fatalf("container %s: env %s has a source the tests do not resolve", container, e.Name)
		}
	}
	return env
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

func containerPort(c *corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func labelsMatch(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
