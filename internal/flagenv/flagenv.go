// Package flagenv defines command-line flags that each have an environment
// variable equivalent (--jwt-issuer and WSFLEET_JWT_ISSUER), with help text
// that shows every default and variable. A flag on the command line wins
// over the environment; a malformed value in either is an error naming it.
//
// It parses; what the values mean and whether they are valid is the
// caller's (Options.Validate in gateway and router).
package flagenv

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Set is a set of flags with environment equivalents.
type Set struct {
	fs     *flag.FlagSet
	prefix string
	usage  string
	order  []string
	shown  map[string]string // flag -> default shown in help, when not the value
	quote  map[string]bool   // flags whose default help shows quoted
}

// New returns a Set for command name; env variables are prefix + the flag
// name upper-cased with '-' as '_'. usage is printed above the flags.
func New(name, prefix, usage string) *Set {
	s := &Set{fs: flag.NewFlagSet(name, flag.ContinueOnError), prefix: prefix, usage: usage, shown: map[string]string{}, quote: map[string]bool{}}
	s.fs.Usage = func() { s.PrintUsage(s.fs.Output()) }
	return s
}

// Env returns the environment variable of flag name.
func (s *Set) Env(name string) string {
	return s.prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func (s *Set) add(name string) { s.order = append(s.order, name) }

// String defines a string flag.
func (s *Set) String(p *string, name, def, usage string) {
	s.fs.StringVar(p, name, def, usage)
	s.add(name)
	s.quote[name] = true
}

// Secret defines a string flag whose value help never shows.
func (s *Set) Secret(p *string, name, usage string) {
	s.fs.StringVar(p, name, "", usage)
	s.add(name)
	s.shown[name] = "none"
}

// Bool defines a boolean flag.
func (s *Set) Bool(p *bool, name string, def bool, usage string) {
	s.fs.BoolVar(p, name, def, usage)
	s.add(name)
}

// Int defines an integer flag.
func (s *Set) Int(p *int, name string, def int, usage string) {
	s.fs.IntVar(p, name, def, usage)
	s.add(name)
}

// Float defines a floating-point flag.
func (s *Set) Float(p *float64, name string, def float64, usage string) {
	s.fs.Float64Var(p, name, def, usage)
	s.add(name)
}

// Duration defines a duration flag ("30s", "5m").
func (s *Set) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	s.fs.DurationVar(p, name, def, usage)
	s.add(name)
}

// List defines a comma-separated list flag; repeating it appends.
func (s *Set) List(p *[]string, name string, def []string, usage string) {
	*p = append([]string(nil), def...)
	s.fs.Var(&listValue{p: p, fresh: true}, name, usage)
	s.add(name)
	s.quote[name] = true
}

// ShowDefault sets the default help shows for name (for computed defaults
// such as "<hostname>-<pid>").
func (s *Set) ShowDefault(name, shown string) { s.shown[name] = shown }

type listValue struct {
	p     *[]string
	fresh bool // the next Set replaces the default instead of appending
}

func (l *listValue) String() string {
	if l == nil || l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

func (l *listValue) Set(v string) error {
	if l.fresh {
		*l.p = nil
		l.fresh = false
	}
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l.p = append(*l.p, item)
		}
	}
	return nil
}

// Parse applies the environment, then args. It returns flag.ErrHelp after
// printing help for -h/--help.
func (s *Set) Parse(args []string, environ func(string) (string, bool)) error {
	if environ == nil {
		environ = os.LookupEnv
	}
	for _, name := range s.order {
		env := s.Env(name)
		v, ok := environ(env)
		if !ok {
			continue
		}
		if err := s.fs.Set(name, v); err != nil {
			return fmt.Errorf("invalid %s=%q: %v", env, v, err)
		}
		if lv, ok := s.fs.Lookup(name).Value.(*listValue); ok {
			lv.fresh = true // a command-line flag replaces the environment's list
		}
	}
	s.fs.SetOutput(io.Discard)
	err := s.fs.Parse(args)
	s.fs.SetOutput(os.Stderr)
	if err == flag.ErrHelp {
		s.PrintUsage(os.Stdout)
		return err
	}
	if err != nil {
		return fmt.Errorf("%v (see --help)", err)
	}
	if s.fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", s.fs.Arg(0))
	}
	return nil
}

// Args returns the arguments left after the flags.
func (s *Set) Args() []string { return s.fs.Args() }

// PrintUsage writes the help: the usage text, then each flag with its
// default and environment variable, sorted by name.
func (s *Set) PrintUsage(w io.Writer) {
	fmt.Fprintln(w, strings.TrimRight(s.usage, "\n"))
	fmt.Fprintln(w, "\nFlags (each can also be set with the environment variable shown):")
	names := append([]string(nil), s.order...)
	sort.Strings(names)
	for _, name := range names {
		f := s.fs.Lookup(name)
		def, ok := s.shown[name]
		if !ok {
			def = f.DefValue
			if s.quote[name] {
				def = strconv.Quote(def)
			}
		}
		fmt.Fprintf(w, "  --%s\n      %s\n      default %s, env %s\n", name, f.Usage, def, s.Env(name))
	}
}
