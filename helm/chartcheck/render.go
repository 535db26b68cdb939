// Package chartcheck lints and renders the wsfleet Helm chart with Helm's
// own packages (what `helm lint --strict` and `helm template` run), so the
// chart is tested without a helm binary. Its tests decode every rendered
// object strictly into the Kubernetes API types and check the chart's
// invariants against the gateway and router binaries.
package chartcheck

import (
	"fmt"
	"maps"
	"os"
	"path"
	"runtime/debug"
	"slices"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Manifest is one rendered Kubernetes object.
type Manifest struct {
	Source     string // the template it came from, e.g. wsfleet/templates/gateway/deployment.yaml
	APIVersion string
	Kind       string
	Name       string
	Hook       string // the helm.sh/hook annotation, "" for ordinary objects
	YAML       string
}

// Release is a rendered chart: its objects in install order, hooks last,
// and NOTES.txt.
type Release struct {
	Manifests []Manifest
	Notes     string
}

// Find returns the manifest of kind and name, or nil.
func (r *Release) Find(kind, name string) *Manifest {
	for i := range r.Manifests {
		if m := &r.Manifests[i]; m.Kind == kind && m.Name == name {
			return m
		}
	}
	return nil
}

// Kinds returns the manifests of one kind.
func (r *Release) Kinds(kind string) []Manifest {
	var out []Manifest
	for _, m := range r.Manifests {
		if m.Kind == kind {
			out = append(out, m)
		}
	}
	return out
}

// ReadValues merges values files in order, then --set style assignments,
// the way `helm template -f a.yaml -f b.yaml --set k=v` does.
func ReadValues(files []string, sets []string) (map[string]any, error) {
	vals := map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		vals = mergeMaps(vals, v)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, vals); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	return vals, nil
}

// mergeMaps is Helm's values-file merge: maps merge key by key, anything
// else is replaced.
func mergeMaps(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	for k, v := range b {
		if vm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// KubeVersion is the Kubernetes version rendered for when none is given:
// the one of the k8s.io/api module linked in (Helm's library default is
// v1.20, which its release binaries override at link time).
func KubeVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "k8s.io/api" {
				var minor int
				if _, err := fmt.Sscanf(d.Version, "v0.%d.", &minor); err == nil {
					return fmt.Sprintf("v1.%d.0", minor)
				}
			}
		}
	}
	return "v1.37.0"
}

func capabilities(kubeVersion string) (*chartutil.Capabilities, error) {
	if kubeVersion == "" {
		kubeVersion = KubeVersion()
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	return caps, nil
}

// Lint runs Helm's chart linter with the values; strict, like
// `helm lint --strict`, it reports warnings as well as errors.
func Lint(chartDir string, vals map[string]any, namespace, kubeVersion string) []string {
	caps, err := capabilities(kubeVersion)
	if err != nil {
		return []string{err.Error()}
	}
	l := lint.AllWithKubeVersionAndSchemaValidation(chartDir, vals, namespace, &caps.KubeVersion, false)
	var out []string
	for _, m := range l.Messages {
		if m.Severity >= support.WarningSev {
			out = append(out, m.Error())
		}
	}
	return out
}

// Render renders the chart as `helm template NAME CHART -n NAMESPACE` does
// for an install: values checked against values.schema.json, the chart's
// kubeVersion checked, templates rendered in strict mode (a missing value
// is an error), objects sorted in install order with hooks apart.
// kubeVersion "" is KubeVersion().
func Render(chartDir, name, namespace, kubeVersion string, vals map[string]any) (*Release, error) {
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	return RenderChart(ch, name, namespace, kubeVersion, vals)
}

// RenderChart is Render for a loaded chart.
func RenderChart(ch *chart.Chart, name, namespace, kubeVersion string, vals map[string]any) (*Release, error) {
	caps, err := capabilities(kubeVersion)
	if err != nil {
		return nil, err
	}
	if kv := ch.Metadata.KubeVersion; kv != "" && !chartutil.IsCompatibleRange(kv, caps.KubeVersion.String()) {
		return nil, fmt.Errorf("chart requires kubeVersion %s, rendering for %s", kv, caps.KubeVersion.String())
	}
	opts := chartutil.ReleaseOptions{Name: name, Namespace: namespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(ch, vals, opts, caps)
	if err != nil {
		return nil, err
	}
	e := engine.Engine{Strict: true}
	files, err := e.Render(ch, top)
	if err != nil {
		return nil, err
	}
	rel := &Release{}
	for f, content := range files {
		if strings.HasSuffix(f, "NOTES.txt") {
			if f == path.Join(ch.Name(), "templates", "NOTES.txt") {
				rel.Notes = content
			}
			delete(files, f)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return nil, err
	}
	for _, m := range manifests {
		if m.Head == nil || m.Head.Metadata == nil {
			return nil, fmt.Errorf("%s: an object without kind or metadata", m.Name)
		}
		rel.Manifests = append(rel.Manifests, Manifest{Source: m.Name, APIVersion: m.Head.Version, Kind: m.Head.Kind, Name: m.Head.Metadata.Name, YAML: m.Content})
	}
	sort.SliceStable(hooks, func(i, j int) bool { return hooks[i].Weight < hooks[j].Weight })
	for _, h := range hooks {
		var head releaseutil.SimpleHead
		if err := yaml.Unmarshal([]byte(h.Manifest), &head); err != nil {
			return nil, fmt.Errorf("%s: %w", h.Path, err)
		}
		events := make([]string, 0, len(h.Events))
		for _, ev := range h.Events {
			events = append(events, string(ev))
		}
		slices.Sort(events)
		rel.Manifests = append(rel.Manifests, Manifest{Source: h.Path, APIVersion: head.Version, Kind: h.Kind, Name: h.Name, Hook: strings.Join(events, ","), YAML: h.Manifest})
	}
	return rel, nil
}

// String prints the release like `helm template`: each object as a YAML
// document headed by its source.
func (r *Release) String() string {
	var b strings.Builder
	for _, m := range r.Manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Source, strings.TrimSpace(m.YAML))
	}
	return b.String()
}
