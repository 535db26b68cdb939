// Package flagenv defines command-line flags that each have an environment
// variable equivalent (--jwt-issuer and WSFLEET_GATEWAY_JWT_ISSUER), with
// help text that shows every default and variable. A flag on the command
// line wins over the environment; a malformed value in either is an error
// naming the flag or variable and saying what was expected
// (`--heartbeat: "abc" is not a duration (e.g. 30s)`).
//
// The fleet's binaries each read a namespace of their own (NewFleet):
// WSFLEET_GATEWAY_* for the gateway, WSFLEET_ROUTER_* for the router, so a
// name never means two things (the gateway's client-token secret and the
// router's API credentials in one shell). The few settings whose meaning is
// the same in every binary (SharedFlags: the NATS servers, the subject
// prefix, logging) are also read from WSFLEET_<NAME>. A fleet command
// refuses an unknown variable of its namespace, and an unknown
// WSFLEET_<NAME> outside every binary's namespace: a typo or a name from
// an older release is an error, never silently ignored.
//
// It parses; what the values mean and whether they are valid is the
// caller's (Options.Validate in gateway and router).
package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Root is the prefix of every fleet environment variable.
const Root = "WSFLEET_"

// Binaries are the fleet commands with a namespace of their own under Root
// (WSFLEET_GATEWAY_*, WSFLEET_ROUTER_*).
var Binaries = []string{"GATEWAY", "ROUTER"}

// reserved are namespaces under Root that are not a fleet binary's
// settings: WSFLEET_LOADTEST_WORKER marks the load tester's worker
// processes, WSFLEET_TEST_* are the tests' (WSFLEET_TEST_BIN_DIR).
var reserved = []string{"LOADTEST", "TEST"}

// SharedFlags are the flags whose meaning is the same in every fleet binary
// that has them; each also reads WSFLEET_<NAME> (its own name wins).
var SharedFlags = []string{"nats-url", "subject-prefix", "log-format", "log-level",
	// The history stream (--resume) must be configured alike by the gateways
	// and the routers of a deployment.
	"resume", "history-ttl", "history-max-per-user", "history-max-bytes", "history-replicas", "history-storage"}

// Set is a set of flags with environment equivalents.
type Set struct {
	name   string
	prefix string
	usage  string
	fleet  bool // prefix is a fleet binary's namespace under Root
	strict bool // unknown variables of the namespace are errors
	order  []string
	flags  map[string]*entry
	known  map[string]bool // variables of the namespace read elsewhere (Known)
	args   []string
}

type entry struct {
	name  string
	usage string
	def   string // default shown in help
	bool  bool   // takes no value on the command line
	set   func(string) error
	fresh func() // called after the environment set a list: the command line replaces it
	// positive reports whether a numeric flag's value is above zero and
	// shows it; nil for other kinds.
	positive  func() (bool, string)
	mustPos   bool   // Positive was called for it
	nonZero   bool   // NonZero was called for it
	usageZero string // NonZero's advice
}

// New returns a Set for command name; env variables are prefix + the flag
// name upper-cased with '-' as '_'. usage is printed above the flags.
func New(name, prefix, usage string) *Set {
	return &Set{name: name, prefix: prefix, usage: usage, flags: map[string]*entry{}}
}

// NewFleet returns a Set for a fleet binary (one of Binaries): its
// variables are WSFLEET_<BINARY>_<FLAG>, SharedFlags also WSFLEET_<FLAG>,
// and ParseEnv refuses unknown names of its namespace.
func NewFleet(name, binary, usage string) *Set {
	s := New(name, Root+binary+"_", usage)
	s.fleet, s.strict = true, true
	return s
}

// Lenient makes ParseEnv accept variables of the namespace that name no
// flag of s: for subcommands (`gateway drain`) that run beside the
// command's full environment.
func (s *Set) Lenient() { s.strict = false }

// Known makes ParseEnv accept the variables of these flag names of
// s's namespace though s has no such flag: the flags of the command's
// subcommands (`gateway token --ttl`: WSFLEET_GATEWAY_TTL).
func (s *Set) Known(names ...string) {
	if s.known == nil {
		s.known = map[string]bool{}
	}
	for _, n := range names {
		s.known[s.Env(n)] = true
	}
}

// Env returns the environment variable of flag name.
func (s *Set) Env(name string) string {
	return s.prefix + envName(name)
}

func envName(flag string) string { return strings.ToUpper(strings.ReplaceAll(flag, "-", "_")) }

// sharedEnv returns the shared variable of flag name, or "".
func (s *Set) sharedEnv(name string) string {
	if !s.fleet {
		return ""
	}
	for _, f := range SharedFlags {
		if f == name {
			return Root + envName(name)
		}
	}
	return ""
}

func (s *Set) add(e *entry) {
	if _, dup := s.flags[e.name]; dup {
		panic("flagenv: flag redefined: " + e.name)
	}
	s.flags[e.name] = e
	s.order = append(s.order, e.name)
}

// String defines a string flag.
func (s *Set) String(p *string, name, def, usage string) {
	*p = def
	s.add(&entry{name: name, usage: usage, def: strconv.Quote(def), set: func(v string) error { *p = v; return nil }})
}

// Secret defines a string flag whose value help never shows.
func (s *Set) Secret(p *string, name, usage string) {
	*p = ""
	s.add(&entry{name: name, usage: usage, def: "none", set: func(v string) error { *p = v; return nil }})
}

// Bool defines a boolean flag: --name sets it, --name=false clears it.
func (s *Set) Bool(p *bool, name string, def bool, usage string) {
	*p = def
	s.add(&entry{name: name, usage: usage, def: strconv.FormatBool(def), bool: true, set: func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p = b
		return nil
	}})
}

// Int defines an integer flag.
func (s *Set) Int(p *int, name string, def int, usage string) {
	*p = def
	s.add(&entry{name: name, usage: usage, def: strconv.Itoa(def), set: func(v string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 0, strconv.IntSize)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return fmt.Errorf("%q is out of range", v)
			}
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p = int(n)
		return nil
	}, positive: func() (bool, string) { return *p > 0, strconv.Itoa(*p) }})
}

// Float defines a floating-point flag.
func (s *Set) Float(p *float64, name string, def float64, usage string) {
	*p = def
	s.add(&entry{name: name, usage: usage, def: strconv.FormatFloat(def, 'g', -1, 64), set: func(v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number (e.g. 2.5)", v)
		}
		*p = f
		return nil
	}, positive: func() (bool, string) { return *p > 0, strconv.FormatFloat(*p, 'g', -1, 64) }})
}

// Duration defines a duration flag ("30s", "5m").
func (s *Set) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	s.add(&entry{name: name, usage: usage, def: def.String(), set: func(v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 30s, 5m, 1h30m)", v)
		}
		*p = d
		return nil
	}, positive: func() (bool, string) { return *p > 0, p.String() }})
}

// Positive makes Parse refuse a value of zero or less for each named
// numeric flag: for settings whose zero would otherwise stand for "the
// default" further in, so that 0 is an error rather than silently ignored.
func (s *Set) Positive(names ...string) {
	for _, name := range names {
		e, ok := s.flags[name]
		if !ok || e.positive == nil {
			panic("flagenv: Positive of an undefined or non-numeric flag: " + name)
		}
		e.mustPos = true
	}
}

// NonZero makes Parse refuse exactly 0 for each named numeric flag whose
// negative values mean "no limit" and whose 0 would otherwise stand for
// the default further in; why says what to give instead.
func (s *Set) NonZero(why string, names ...string) {
	for _, name := range names {
		e, ok := s.flags[name]
		if !ok || e.positive == nil {
			panic("flagenv: NonZero of an undefined or non-numeric flag: " + name)
		}
		e.nonZero = true
		e.usageZero = why
	}
}

// checkPositive reports the first flag set to zero or less despite
// Positive, or to zero despite NonZero, naming its flag and variable.
func (s *Set) checkPositive() error {
	for _, name := range s.order {
		e := s.flags[name]
		if !e.mustPos && !e.nonZero {
			continue
		}
		ok, v := e.positive()
		switch {
		case e.mustPos && !ok:
			return fmt.Errorf("--%s (%s): must be more than 0, got %s", name, s.Env(name), v)
		case e.nonZero && !ok && (v == "0" || v == "0s"):
			return fmt.Errorf("--%s (%s): 0 is not a setting: %s", name, s.Env(name), e.usageZero)
		}
	}
	return nil
}

// List defines a comma-separated list flag; repeating it appends.
func (s *Set) List(p *[]string, name string, def []string, usage string) {
	*p = append([]string(nil), def...)
	fresh := true // the next value replaces the default instead of appending
	s.add(&entry{name: name, usage: usage, def: strconv.Quote(strings.Join(def, ",")), set: func(v string) error {
		if fresh {
			*p = nil
			fresh = false
		}
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				*p = append(*p, item)
			}
		}
		return nil
	}, fresh: func() { fresh = true }})
}

// ShowDefault sets the default help shows for name (for computed defaults
// such as "<hostname>-<pid>").
func (s *Set) ShowDefault(name, shown string) {
	e, ok := s.flags[name]
	if !ok {
		panic("flagenv: ShowDefault of an undefined flag: " + name)
	}
	e.def = shown
}

// Parse applies the environment, then args. environ looks variables up
// (nil: the process environment, checked with ParseEnv's rules). It
// returns flag.ErrHelp after printing help for -h/--help.
func (s *Set) Parse(args []string, environ func(string) (string, bool)) error {
	if environ == nil {
		return s.ParseEnv(args, os.Environ())
	}
	if err := s.applyEnv(environ); err != nil {
		return err
	}
	if err := s.parseArgs(args); err != nil {
		return err
	}
	return s.checkPositive()
}

// ParseEnv applies environ ("NAME=value" entries, as os.Environ), then
// args. For a fleet Set it first refuses variables of its namespace that
// name no flag, and WSFLEET_<NAME> variables in no binary's namespace that
// are not shared.
func (s *Set) ParseEnv(args []string, environ []string) error {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	if err := s.checkUnknown(m); err != nil {
		return err
	}
	return s.Parse(args, func(k string) (string, bool) { v, ok := m[k]; return v, ok })
}

// checkUnknown reports the first (sorted) unknown variable of s's namespace.
func (s *Set) checkUnknown(env map[string]string) error {
	if !s.fleet || !s.strict {
		return nil
	}
	known := map[string]bool{}
	for _, name := range s.order {
		known[s.Env(name)] = true
	}
	shared := map[string]bool{}
	for _, f := range SharedFlags {
		shared[Root+envName(f)] = true
	}
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		switch {
		case serviceLink(k):
			// Kubernetes' variables of a Service named like the fleet's
			// (WSFLEET_GATEWAY_PORT, WSFLEET_NATS_SERVICE_HOST, ...).
		case strings.HasPrefix(k, s.prefix):
			if !known[k] && !s.known[k] {
				return fmt.Errorf("unknown environment variable %s: %s has no --%s flag (see --help)", k, s.name, strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, s.prefix), "_", "-")))
			}
		case strings.HasPrefix(k, Root) && !shared[k] && !inBinaryNamespace(k):
			rest := strings.TrimPrefix(k, Root)
			hint := ""
			var where []string
			for _, b := range Binaries {
				where = append(where, Root+b+"_"+rest)
			}
			hint = fmt.Sprintf("; settings of one binary are named %s", strings.Join(where, " or "))
			return fmt.Errorf("unknown environment variable %s: only %s are shared by the fleet's binaries%s (see --help)", k, sharedList(), hint)
		}
	}
	return nil
}

// serviceLink reports whether k has the form of the variables Kubernetes
// gives a pod for each Service of its namespace (enableServiceLinks):
// <SVC>_SERVICE_HOST, <SVC>_SERVICE_PORT[_<NAME>], <SVC>_PORT and
// <SVC>_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR].
func serviceLink(k string) bool {
	if strings.HasSuffix(k, "_SERVICE_HOST") || strings.HasSuffix(k, "_SERVICE_PORT") || strings.Contains(k, "_SERVICE_PORT_") || strings.HasSuffix(k, "_PORT") {
		return true
	}
	i := strings.LastIndex(k, "_PORT_")
	if i < 0 {
		return false
	}
	rest := strings.Split(k[i+len("_PORT_"):], "_") // n, PROTO[, PROTO|PORT|ADDR]
	if len(rest) < 2 || len(rest) > 3 {
		return false
	}
	if _, err := strconv.Atoi(rest[0]); err != nil {
		return false
	}
	switch rest[1] {
	case "TCP", "UDP", "SCTP":
	default:
		return false
	}
	return len(rest) == 2 || rest[2] == "PROTO" || rest[2] == "PORT" || rest[2] == "ADDR"
}

func inBinaryNamespace(k string) bool {
	for _, b := range append(Binaries[:len(Binaries):len(Binaries)], reserved...) {
		if strings.HasPrefix(k, Root+b+"_") {
			return true
		}
	}
	return false
}

func sharedList() string {
	var l []string
	for _, f := range SharedFlags {
		l = append(l, Root+envName(f))
	}
	return strings.Join(l, ", ")
}

// applyEnv sets each flag from its variable: the shared name first, then
// the binary's own, which wins.
func (s *Set) applyEnv(environ func(string) (string, bool)) error {
	for _, name := range s.order {
		e := s.flags[name]
		for _, env := range []string{s.sharedEnv(name), s.Env(name)} {
			if env == "" {
				continue
			}
			v, ok := environ(env)
			if !ok {
				continue
			}
			if e.fresh != nil {
				e.fresh() // a later source replaces, not appends to, the list
			}
			if err := e.set(v); err != nil {
				return fmt.Errorf("%s: %v", env, err)
			}
			if e.fresh != nil {
				e.fresh()
			}
		}
	}
	return nil
}

// parseArgs reads --name=value, --name value, -name and bool --name, up to
// "--" or the first argument that is not a flag; anything left over is an
// error (no command takes positional arguments).
func (s *Set) parseArgs(args []string) error {
	s.args = nil
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			s.args = args[i+1:]
			break
		}
		if len(a) < 2 || a[0] != '-' {
			s.args = args[i:]
			break
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		if name == "h" || name == "help" {
			s.PrintUsage(os.Stdout)
			return flag.ErrHelp
		}
		e, ok := s.flags[name]
		if !ok || name == "" {
			return fmt.Errorf("unknown flag %s (see --help)", a)
		}
		if !hasValue {
			if e.bool {
				value = "true"
			} else {
				if i+1 >= len(args) {
					return fmt.Errorf("--%s needs a value (see --help)", name)
				}
				i++
				value = args[i]
			}
		}
		if err := e.set(value); err != nil {
			return fmt.Errorf("--%s: %v", name, err)
		}
	}
	if len(s.args) > 0 {
		return fmt.Errorf("unexpected argument %q (see --help)", s.args[0])
	}
	return nil
}

// Args returns the arguments left after the flags.
func (s *Set) Args() []string { return s.args }

// PrintUsage writes the help: the usage text, then each flag with its
// default and environment variable, sorted by name.
func (s *Set) PrintUsage(w io.Writer) {
	fmt.Fprintln(w, strings.TrimRight(s.usage, "\n"))
	fmt.Fprintln(w, "\nFlags (each can also be set with the environment variable shown):")
	names := append([]string(nil), s.order...)
	sort.Strings(names)
	for _, name := range names {
		e := s.flags[name]
		env := s.Env(name)
		if sh := s.sharedEnv(name); sh != "" {
			env += " (or " + sh + ", shared by the fleet's binaries)"
		}
		fmt.Fprintf(w, "  --%s\n      %s\n      default %s, env %s\n", name, e.usage, e.def, env)
	}
}
