package docs_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// ellipsis stands, in a documented answer, for what changes from run to
// run: a whole line of output ("…" alone: any number of lines), part of a
// line or of a JSON string ("token expired…"), or a JSON value ("id":…).
const ellipsis = "…"

// An answer is the expected output of an example, read as a sequence of
// parts matched one after the other against the output's lines.
type answerPart struct {
	kind   partKind
	line   int    // in the documented answer, from 1
	text   string // partText: the line, with … as a wildcard
	value  any    // partJSON: the value, every … a wildcard
	status string // partHTTP: the status line
	header []string
}

type partKind int

const (
	partAny  partKind = iota // "…" alone: any lines
	partText                 // one line
	partJSON                 // a JSON value, on one line or several
	partHTTP                 // a status line and the headers shown (a subset), up to the blank line
)

// parseAnswer splits a documented answer into parts.
func parseAnswer(want string) []answerPart {
	lines := splitLines(want)
	var parts []answerPart
	for i := 0; i < len(lines); {
		l := lines[i]
		switch {
		case l == ellipsis:
			parts = append(parts, answerPart{kind: partAny, line: i + 1})
			i++
			continue
		case strings.HasPrefix(l, "HTTP/"):
			p := answerPart{kind: partHTTP, line: i + 1, status: l}
			for i++; i < len(lines) && lines[i] != ""; i++ {
				p.header = append(p.header, lines[i])
			}
			i++ // the blank line
			parts = append(parts, p)
			continue
		case strings.HasPrefix(l, "{") || strings.HasPrefix(l, "["):
			// The fewest lines that make one JSON value.
			found := false
			for j := i; j < len(lines) && !found; j++ {
				if v, err := decodeOne(quoteEllipses(strings.Join(lines[i:j+1], "\n"))); err == nil {
					parts = append(parts, answerPart{kind: partJSON, line: i + 1, value: v})
					i, found = j+1, true
				}
			}
			if found {
				continue
			}
		}
		parts = append(parts, answerPart{kind: partText, line: i + 1, text: l})
		i++
	}
	return parts
}

// matchOutput checks an example's output against its documented answer.
func matchOutput(want, got string) error {
	parts := parseAnswer(want)
	lines := splitLines(got)
	// The error of the attempt that got furthest into the output.
	var worst error
	worstAt := -1
	note := func(at int, err error) {
		if at > worstAt {
			worst, worstAt = err, at
		}
	}
	var match func(pi, gi int) bool
	match = func(pi, gi int) bool {
		if pi == len(parts) {
			if gi == len(lines) {
				return true
			}
			note(gi, fmt.Errorf("output line %d is more than the answer shows: %q", gi+1, lines[gi]))
			return false
		}
		p := parts[pi]
		if p.kind == partAny {
			for k := gi; k <= len(lines); k++ {
				if match(pi+1, k) {
					return true
				}
			}
			return false
		}
		next, err := p.match(lines, gi)
		if err != nil {
			note(gi, fmt.Errorf("answer line %d, output line %d: %w", p.line, gi+1, err))
			return false
		}
		return match(pi+1, next)
	}
	if match(0, 0) {
		return nil
	}
	return worst
}

// match matches the part against lines from gi on and returns the index of
// the first line after it.
func (p answerPart) match(lines []string, gi int) (int, error) {
	if gi >= len(lines) {
		return 0, fmt.Errorf("the output ends before this")
	}
	switch p.kind {
	case partText:
		if !glob(p.text, lines[gi]) {
			return 0, fmt.Errorf("got %q, want %q", lines[gi], p.text)
		}
		return gi + 1, nil
	case partJSON:
		rest := strings.Join(lines[gi:], "\n")
		dec := json.NewDecoder(strings.NewReader(rest))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return 0, fmt.Errorf("got %q, want JSON: %v", lines[gi], err)
		}
		off := int(dec.InputOffset())
		end := len(rest)
		if nl := strings.IndexByte(rest[off:], '\n'); nl >= 0 {
			end = off + nl
		}
		if strings.TrimSpace(rest[off:end]) != "" {
			return 0, fmt.Errorf("%q after the JSON value", rest[off:end])
		}
		if err := matchJSON("$", p.value, v); err != nil {
			return 0, err
		}
		return gi + strings.Count(rest[:end], "\n") + 1, nil
	case partHTTP:
		if !glob(p.status, lines[gi]) {
			return 0, fmt.Errorf("status line %q, want %q", lines[gi], p.status)
		}
		end := gi + 1
		for end < len(lines) && lines[end] != "" {
			end++
		}
		got := lines[gi+1 : end]
		for _, h := range p.header {
			name, value, _ := strings.Cut(h, ":")
			value = strings.TrimSpace(value)
			found := slices.ContainsFunc(got, func(g string) bool {
				gn, gv, ok := strings.Cut(g, ":")
				return ok && strings.EqualFold(strings.TrimSpace(gn), name) && glob(value, strings.TrimSpace(gv))
			})
			if !found {
				return 0, fmt.Errorf("no header %q in %q", h, got)
			}
		}
		if end < len(lines) {
			end++ // the blank line
		}
		return end, nil
	}
	return 0, fmt.Errorf("unknown part kind %d", p.kind)
}

// matchJSON compares a JSON value with the documented one: the same object
// members (no more, no fewer), arrays of the same length, the same values,
// but for the string "…" (any value) and strings with … in them (a string
// that matches).
func matchJSON(path string, want, got any) error {
	switch w := want.(type) {
	case string:
		if w == ellipsis {
			return nil
		}
		if g, ok := got.(string); ok && glob(w, g) {
			return nil
		}
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		var missing, extra []string
		for k := range w {
			if _, ok := g[k]; !ok {
				missing = append(missing, k)
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				extra = append(extra, k)
			}
		}
		if len(missing) > 0 || len(extra) > 0 {
			slices.Sort(missing)
			slices.Sort(extra)
			return fmt.Errorf("%s: members missing %q, not in the answer %q (got %s)", path, missing, extra, compact(got))
		}
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if err := matchJSON(path+"."+k, w[k], g[k]); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok {
			break
		}
		if len(g) != len(w) {
			return fmt.Errorf("%s: %d elements, want %d (got %s)", path, len(g), len(w), compact(got))
		}
		for i := range w {
			if err := matchJSON(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); err != nil {
				return err
			}
		}
		return nil
	default:
		if reflect.DeepEqual(want, got) {
			return nil
		}
	}
	return fmt.Errorf("%s: got %s, want %s", path, compact(got), compact(want))
}

// glob matches s against pattern, in which each … stands for any text.
func glob(pattern, s string) bool {
	parts := strings.Split(pattern, ellipsis)
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}

// quoteEllipses writes each … outside a JSON string as the string "…", so
// that `"exp":…` reads as JSON.
func quoteEllipses(s string) string {
	var b strings.Builder
	inString, escaped := false, false
	for _, r := range s {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case r == '\\':
				escaped = true
			case r == '"':
				inString = false
			}
		case r == '"':
			inString = true
		case string(r) == ellipsis:
			b.WriteString(`"` + ellipsis + `"`)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// decodeOne decodes s, which must be exactly one JSON value.
func decodeOne(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if rest := s[dec.InputOffset():]; strings.TrimFunc(rest, unicode.IsSpace) != "" {
		return nil, fmt.Errorf("%q after the value", rest)
	}
	return v, nil
}

func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// splitLines splits text into lines, without carriage returns or the
// final line end; no lines for empty text.
func splitLines(s string) []string {
	s = strings.TrimRight(strings.ReplaceAll(s, "\r", ""), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestMatchOutput(t *testing.T) {
	const httpOut = "HTTP/1.1 404 Not Found\r\nCache-Control: no-store\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n" +
		`{"code":"user_offline","reason":"nobody is there"}` + "\n"
	tests := []struct {
		name      string
		want, got string
		ok        bool
	}{
		{"same JSON", `{"a":1,"b":[true,null]}`, `{"b":[true,null],"a":1}`, true},
		{"a value differs", `{"a":1}`, `{"a":2}`, false},
		{"a number is not its string", `{"a":1}`, `{"a":"1"}`, false},
		{"a member more", `{"a":1}`, `{"a":1,"b":2}`, false},
		{"a member fewer", `{"a":1,"b":2}`, `{"a":1}`, false},
		{"an element more", `[1]`, `[1,1]`, false},
		{"any value", `{"id":…,"n":"…"}`, `{"id":"x1","n":{"deep":[1]}}`, true},
		{"a wildcard does not make a member optional", `{"id":…}`, `{}`, false},
		{"a string pattern", `{"reason":"token …ed"}`, `{"reason":"token expired"}`, true},
		{"a string pattern that fails", `{"reason":"token …ed"}`, `{"reason":"token invalid"}`, false},
		{"an ellipsis in a string is not quoted again", `{"a":"x…"}`, `{"a":"xyz"}`, true},
		{"JSON over lines in the answer", "{\"a\":1,\n \"b\":2}", `{"a":1,"b":2}`, true},
		{"two values", "{\"a\":1}\n{\"b\":2}", "{\"a\":1}\n{\"b\":2}\n", true},
		{"a value missing", "{\"a\":1}\n{\"b\":2}", "{\"a\":1}\n", false},
		{"output not shown", `{"a":1}`, "{\"a\":1}\nmore\n", false},
		{"text after the JSON value", `{"a":1}`, `{"a":1} more`, false},
		{"text", "gateway: --heartbeat: \"abc\" is not a duration", "gateway: --heartbeat: \"abc\" is not a duration\n", true},
		{"text with a pattern", "eyJ….…", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig", true},
		{"text that differs", "exit 2", "exit 1", false},
		{"any lines", "---\n…\nkind: Service\n…", "---\na\nb\nkind: Service\nc\n", true},
		{"any lines, none", "a\n…\nb", "a\nb", true},
		{"any lines, the line after missing", "a\n…\nb", "a\nc\nd", false},
		{"HTTP, headers a subset", "HTTP/1.1 404 Not Found\ncontent-type: application/json\n\n" +
			`{"code":"user_offline","reason":"…"}`, httpOut, true},
		{"HTTP, a status that differs", "HTTP/1.1 202 Accepted\n\n" + `{"code":"user_offline","reason":"…"}`, httpOut, false},
		{"HTTP, a header missing", "HTTP/1.1 404 Not Found\nRetry-After: 1\n\n" + `{"code":"user_offline","reason":"…"}`, httpOut, false},
		{"HTTP, a header value that differs", "HTTP/1.1 404 Not Found\nContent-Type: text/plain\n\n" + `{"code":"user_offline","reason":"…"}`, httpOut, false},
		{"HTTP, a body that differs", "HTTP/1.1 404 Not Found\n\n" + `{"code":"not_found","reason":"…"}`, httpOut, false},
		{"empty", "", "", true},
		{"empty answer, some output", "", "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := matchOutput(tt.want, tt.got)
			if (err == nil) != tt.ok {
				t.Errorf("matchOutput(%q, %q) = %v, want ok %v", tt.want, tt.got, err, tt.ok)
			}
		})
	}
}

func TestParseExamples(t *testing.T) {
	const fence = "```"
	tests := []struct {
		name     string
		doc      string
		examples []string // name:lang:exit:answer line
		errs     []string // what each error says, in order
	}{
		{"an example and its answer",
			"<!-- example: one -->\n" + fence + "sh\ncurl x\n" + fence + "\n\n<!-- expect: one -->\n" + fence + "json\n{}\n" + fence + "\n",
			[]string{"one:sh:0:6"}, nil},
		{"an exit status, no answer",
			"<!-- example: two; exit 2 -->\n" + fence + "sh\nbin/gateway --x\n" + fence + "\n",
			[]string{"two:sh:2:0"}, nil},
		{"a session and Helm values",
			"<!-- example: s -->\n" + fence + "text\n> {}\n" + fence + "\n<!-- example: v -->\n" + fence + "yaml\na: 1\n" + fence + "\n",
			[]string{"s:text:0:0", "v:yaml:0:0"}, nil},
		{"a command without a marker",
			fence + "sh\nfoo | curl -sS x\n" + fence + "\n",
			nil, []string{"doc.md:1: a ```sh block with a command"}},
		{"a command in a comment only",
			fence + "sh\nmake run   # prints a curl\n" + fence + "\n",
			nil, nil},
		{"a command not run, with the reason",
			"<!-- not run: too long -->\n" + fence + "sh\nbin/loadtest deliver\n" + fence + "\n",
			nil, nil},
		{"a malformed marker",
			"<!-- example: Bad Name -->\n" + fence + "sh\necho\n" + fence + "\n",
			nil, []string{"doc.md:1: malformed marker"}},
		{"a marker away from its block",
			"<!-- example: one -->\n\n" + fence + "sh\necho\n" + fence + "\n",
			nil, []string{"doc.md:1: a marker not right before a fenced block"}},
		{"an answer without its example",
			"<!-- expect: one -->\n" + fence + "\nx\n" + fence + "\n",
			nil, []string{"doc.md:1: the answer of example one, which no block before it is"}},
		{"two answers",
			"<!-- example: one -->\n" + fence + "sh\necho\n" + fence + "\n<!-- expect: one -->\n" + fence + "\n\n" + fence + "\n<!-- expect: one -->\n" + fence + "\n\n" + fence + "\n",
			[]string{"one:sh:0:5"}, []string{"doc.md:9: example one already has its answer at line 5"}},
		{"a name twice",
			"<!-- example: one -->\n" + fence + "sh\necho\n" + fence + "\n<!-- example: one -->\n" + fence + "sh\necho\n" + fence + "\n",
			[]string{"one:sh:0:0", "one:sh:0:0"}, []string{"doc.md:5: example one is already at line 1"}},
		{"a block of another language",
			"<!-- example: g -->\n" + fence + "go\nfunc main() {}\n" + fence + "\n",
			[]string{"g:go:0:0"}, []string{"doc.md:1: example g: a ```go block"}},
		{"a block without its end",
			"<!-- example: one -->\n" + fence + "sh\necho\n",
			nil, []string{"doc.md:2: a fenced block without its end"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exs, errs := parseExamples("doc.md", tt.doc)
			var got []string
			for _, ex := range exs {
				got = append(got, fmt.Sprintf("%s:%s:%d:%d", ex.name, ex.lang, ex.exit, ex.answerLine))
			}
			if !slices.Equal(got, tt.examples) {
				t.Errorf("examples %q, want %q", got, tt.examples)
			}
			if len(errs) != len(tt.errs) {
				t.Fatalf("errors %v, want %d: %q", errs, len(tt.errs), tt.errs)
			}
			for i, err := range errs {
				if !strings.HasPrefix(err.Error(), tt.errs[i]) {
					t.Errorf("error %q, want it to start with %q", err, tt.errs[i])
				}
			}
		})
	}
}
