// Command wsfleet-template renders or lints the wsfleet chart with Helm's
// packages, for machines without a helm binary:
//
//	go run ./cmd/wsfleet-template [-f values.yaml]... [--set k=v]... [--lint] [--notes] [CHART]
//
// Rendering matches `helm template wsfleet CHART`; --lint matches
// `helm lint --strict`.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/wsfleet/wsfleet/helm/chartcheck"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var files, sets list
	name := flag.String("name", "wsfleet", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	doLint := flag.Bool("lint", false, "lint (strict: warnings fail) instead of rendering")
	kubeVersion := flag.String("kube-version", "", "Kubernetes version to render for (default: the linked k8s.io/api's)")
	notes := flag.Bool("notes", false, "print NOTES.txt after the objects")
	flag.Var(&files, "f", "values file (repeatable)")
	flag.Var(&sets, "set", "key=value (repeatable)")
	flag.Parse()
	chartDir := "wsfleet"
	if flag.NArg() > 0 {
		chartDir = flag.Arg(0)
	}
	vals, err := chartcheck.ReadValues(files, sets)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if *doLint {
		if msgs := chartcheck.Lint(chartDir, vals, *namespace, *kubeVersion); len(msgs) > 0 {
			for _, m := range msgs {
				fmt.Fprintln(os.Stderr, m)
			}
			os.Exit(1)
		}
		fmt.Printf("%s: lint passed (strict)\n", chartDir)
		return
	}
	rel, err := chartcheck.Render(chartDir, *name, *namespace, *kubeVersion, vals)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Print(rel.String())
	if *notes {
		fmt.Printf("\nNOTES:\n%s\n", rel.Notes)
	}
}
