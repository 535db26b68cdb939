package ociimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The wsfleet module's root.
var moduleDir = filepath.Join("..", "..")

var (
	buildDir  string // the binaries' temporary directory
	routerBin = &built{}
	helloBins = &built{}
)

type built struct {
	once  sync.Once
	paths []string
	err   error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// get runs build once and returns its paths.
func (b *built) get(t *testing.T, build func(dir string) ([]string, error)) []string {
	t.Helper()
	b.once.Do(func() {
		if buildDir == "" {
			if buildDir, b.err = os.MkdirTemp("", "wsfleet-ociimage-"); b.err != nil {
				return
			}
		}
		b.paths, b.err = build(buildDir)
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.paths
}

// router is ./cmd/router built as make images builds it.
func router(t *testing.T) string {
	t.Helper()
	return routerBin.get(t, func(dir string) ([]string, error) {
		p := filepath.Join(dir, "router")
		return []string{p}, Build(context.Background(), "go", moduleDir, "./cmd/router", runtime.GOARCH, p)
	})[0]
}

// A small static program for the tests that write many images (the race
// detector makes compress/flate slow): what they check does not depend on
// the binary's size.
const helloSrc = `package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	flag.Usage = func() { fmt.Fprintln(os.Stderr, "Usage: hello") }
	flag.Parse()
}
`

// hello is helloSrc built twice by Build, into two files.
func hello(t *testing.T) (first, second string) {
	t.Helper()
	p := helloBins.get(t, func(dir string) ([]string, error) {
		src := filepath.Join(dir, "hello-src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module hello\n\ngo 1.26\n"), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(src, "main.go"), []byte(helloSrc), 0o644); err != nil {
			return nil, err
		}
		var paths []string
		for _, name := range []string{"hello-1", "hello-2"} {
			p := filepath.Join(dir, name)
			if err := Build(context.Background(), "go", src, ".", runtime.GOARCH, p); err != nil {
				return nil, err
			}
			paths = append(paths, p)
		}
		return paths, nil
	})
	return p[0], p[1]
}

// A CA bundle of the tests' own: New copies whatever PEM it is given.
const testCA = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"

func testOptions(t *testing.T) Options {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte(testCA), 0o644); err != nil {
		t.Fatal(err)
	}
	return Options{
		Registry: "registry.example.com:5000/team",
		Version:  "1.2.3-test",
		Created:  time.Unix(1700000000, 0),
		CAFile:   ca,
	}
}

var routerImage, _ = LookupBinary("router")

// writeImage writes the image of bin with o to a file of its own.
func writeImage(t *testing.T, bin string, o Options) (string, Written) {
	t.Helper()
	img, err := New(routerImage, bin, o)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	w, err := Write(bw, img)
	if err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return file, w
}

// unpacked is an image tarball read as a runtime reads it.
type unpacked struct {
	outer    []*tar.Header
	index    Index
	manifest Manifest
	config   ConfigFile
	docker   []DockerManifest
	layer    []*tar.Header // the layer's entries, in order
	root     string        // the layer extracted
}

// unpack reads index.json, the manifest, the configuration and the layer of
// the tarball at file, checking every blob against its digest and size and
// the Docker archive's manifest.json against the OCI manifest, and extracts
// the layer into a directory.
func unpack(t *testing.T, file string) *unpacked {
	t.Helper()
	u := &unpacked{root: t.TempDir()}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	contents := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		u.outer = append(u.outer, h)
		if h.Typeflag == tar.TypeReg {
			if contents[h.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range contents {
		if hexDigest, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexDigest {
				t.Fatalf("blob %s holds sha256:%x", name, sum)
			}
		}
	}
	if got := string(contents["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout %q", got)
	}
	blob := func(d Descriptor, mediaType string) []byte {
		t.Helper()
		if d.MediaType != mediaType {
			t.Fatalf("descriptor %s: media type %q, want %q", d.Digest, d.MediaType, mediaType)
		}
		b, ok := contents[BlobPath(d.Digest)]
		if !ok {
			t.Fatalf("no blob %s", d.Digest)
		}
		if int64(len(b)) != d.Size {
			t.Fatalf("blob %s: %d bytes, descriptor says %d", d.Digest, len(b), d.Size)
		}
		return b
	}
	decode := func(name string, b []byte, v any) {
		t.Helper()
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, b)
		}
	}
	decode("index.json", contents["index.json"], &u.index)
	if u.index.SchemaVersion != 2 || u.index.MediaType != MediaTypeIndex || len(u.index.Manifests) != 1 {
		t.Fatalf("index.json: %+v, want one manifest", u.index)
	}
	decode("manifest", blob(u.index.Manifests[0], MediaTypeManifest), &u.manifest)
	if u.manifest.SchemaVersion != 2 || u.manifest.MediaType != MediaTypeManifest {
		t.Fatalf("manifest %+v", u.manifest)
	}
	decode("config", blob(u.manifest.Config, MediaTypeConfig), &u.config)
	decode("manifest.json", contents["manifest.json"], &u.docker)
	wantDocker := DockerManifest{
		Config:   BlobPath(u.manifest.Config.Digest),
		RepoTags: []string{u.index.Manifests[0].Annotations[AnnotationRefName]},
	}
	if len(u.manifest.Layers) != len(u.config.RootFS.DiffIDs) {
		t.Fatalf("%d layers, %d diff_ids", len(u.manifest.Layers), len(u.config.RootFS.DiffIDs))
	}
	for i, l := range u.manifest.Layers {
		wantDocker.Layers = append(wantDocker.Layers, BlobPath(l.Digest))
		zr, err := gzip.NewReader(bytes.NewReader(blob(l, MediaTypeLayer)))
		if err != nil {
			t.Fatal(err)
		}
		layerTar, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(layerTar); "sha256:"+hex.EncodeToString(sum[:]) != u.config.RootFS.DiffIDs[i] {
			t.Fatalf("layer %d: uncompressed sha256:%x, diff_id %s", i, sum, u.config.RootFS.DiffIDs[i])
		}
		u.extract(t, layerTar)
	}
	if !reflect.DeepEqual(u.docker, []DockerManifest{wantDocker}) {
		t.Fatalf("manifest.json %+v, want %+v", u.docker, wantDocker)
	}
	return u
}

func (u *unpacked) extract(t *testing.T, layerTar []byte) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(layerTar))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		u.layer = append(u.layer, h)
		name := path.Clean(h.Name)
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			t.Fatalf("layer entry %q outside the root", h.Name)
		}
		p := filepath.Join(u.root, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			// Owner-writable whatever the image says, so the test can fill
			// and remove it.
			if err := os.MkdirAll(p, h.FileInfo().Mode().Perm()|0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, h.FileInfo().Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("layer entry %q of type %q", h.Name, h.Typeflag)
		}
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (u *unpacked) header(t *testing.T, name string) *tar.Header {
	t.Helper()
	for _, h := range u.layer {
		if h.Name == name {
			return h
		}
	}
	t.Fatalf("no %q in the layer", name)
	return nil
}

func (u *unpacked) file(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(u.root, filepath.FromSlash(name)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkStatic checks an ELF executable has no interpreter and needs no
// shared library.
func checkStatic(t *testing.T, p string) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Fatalf("%s has a program interpreter", p)
		}
	}
	if needed, err := f.DynString(elf.DT_NEEDED); err == nil && len(needed) > 0 {
		t.Fatalf("%s needs %v", p, needed)
	}
}

func TestImage(t *testing.T) {
	o := testOptions(t)
	file, w := writeImage(t, router(t), o)
	u := unpack(t, file)
	ref := "registry.example.com:5000/team/wsfleet/router:1.2.3-test"
	created := o.Created.UTC()

	t.Run("names and digests", func(t *testing.T) {
		e := u.index.Manifests[0]
		if e.Annotations[AnnotationRefName] != ref || e.Annotations[AnnotationImageName] != ref {
			t.Errorf("index.json annotations %v, want both names %s", e.Annotations, ref)
		}
		if e.Digest != w.Manifest.Digest || u.manifest.Config.Digest != w.Config.Digest ||
			u.manifest.Layers[0].Digest != w.Layer.Digest || u.config.RootFS.DiffIDs[0] != w.DiffID {
			t.Errorf("Write returned %+v, the tarball has manifest %s config %s layer %s", w, e.Digest, u.manifest.Config.Digest, u.manifest.Layers[0].Digest)
		}
		want := Platform{Architecture: runtime.GOARCH, OS: "linux"}
		if *e.Platform != want || u.config.Architecture != want.Architecture || u.config.OS != want.OS {
			t.Errorf("platform %+v, config %s/%s, want %+v", *e.Platform, u.config.OS, u.config.Architecture, want)
		}
		if u.config.Created != created.Format(time.RFC3339) {
			t.Errorf("created %s, want %s", u.config.Created, created.Format(time.RFC3339))
		}
	})

	t.Run("config", func(t *testing.T) {
		c := u.config.Config
		if !reflect.DeepEqual(c.Entrypoint, []string{"/usr/local/bin/router"}) || c.Cmd != nil {
			t.Errorf("entrypoint %q, cmd %q", c.Entrypoint, c.Cmd)
		}
		if !reflect.DeepEqual(c.ExposedPorts, map[string]struct{}{"8090/tcp": {}, "8091/tcp": {}}) {
			t.Errorf("exposed ports %v", c.ExposedPorts)
		}
		if c.WorkingDir != "/home/nonroot" || !slices.Contains(c.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") {
			t.Errorf("working dir %q, env %q", c.WorkingDir, c.Env)
		}
		want := map[string]string{
			"org.opencontainers.image.source":      "https://github.com/wsfleet/wsfleet",
			"org.opencontainers.image.version":     "1.2.3-test",
			"org.opencontainers.image.title":       "wsfleet router",
			"org.opencontainers.image.description": Description,
		}
		info, err := buildinfo.ReadFile(router(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				want["org.opencontainers.image.revision"] = s.Value
			}
		}
		if !reflect.DeepEqual(c.Labels, want) {
			t.Errorf("labels %v, want %v", c.Labels, want)
		}
	})

	t.Run("non-root user", func(t *testing.T) {
		uid, gid, ok := strings.Cut(u.config.Config.User, ":")
		if !ok || uid != "65532" || gid != "65532" {
			t.Fatalf("user %q, want 65532:65532", u.config.Config.User)
		}
		passwd := u.file(t, "etc/passwd")
		var found bool
		for _, line := range strings.Split(strings.TrimSpace(passwd), "\n") {
			f := strings.Split(line, ":")
			if len(f) != 7 {
				t.Fatalf("/etc/passwd line %q", line)
			}
			if f[2] == uid {
				found = true
				if f[0] != "nonroot" || f[3] != gid || f[5] != u.config.Config.WorkingDir {
					t.Errorf("/etc/passwd entry %q, want nonroot with group %s and home %s", line, gid, u.config.Config.WorkingDir)
				}
			}
		}
		if !found {
			t.Errorf("no user %s in /etc/passwd:\n%s", uid, passwd)
		}
		if !strings.Contains(u.file(t, "etc/group"), "nonroot:x:65532:") {
			t.Errorf("no group 65532 in /etc/group:\n%s", u.file(t, "etc/group"))
		}
		home := u.header(t, "home/nonroot/")
		if home.Uid != 65532 || home.Gid != 65532 || home.Mode != 0o700 {
			t.Errorf("home: %d:%d %o", home.Uid, home.Gid, home.Mode)
		}
	})

	t.Run("CA certificates", func(t *testing.T) {
		if got := u.file(t, "etc/ssl/certs/ca-certificates.crt"); got != testCA {
			t.Errorf("CA bundle %q, want the one given", got)
		}
	})

	t.Run("tar headers", func(t *testing.T) {
		for _, set := range [][]*tar.Header{u.outer, u.layer} {
			for i, h := range set {
				if i > 0 && set[i-1].Name >= h.Name {
					t.Errorf("%q after %q: not sorted", h.Name, set[i-1].Name)
				}
				if !h.ModTime.Equal(created) || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
					t.Errorf("%s: mtime %v atime %v ctime %v, want mtime %v only", h.Name, h.ModTime, h.AccessTime, h.ChangeTime, created)
				}
				if len(h.PAXRecords) > 0 || h.Format != tar.FormatUSTAR || h.Uname != "" || h.Gname != "" {
					t.Errorf("%s: format %v, PAX %v, names %q %q", h.Name, h.Format, h.PAXRecords, h.Uname, h.Gname)
				}
				if (h.Uid != 0 || h.Gid != 0) && h.Name != "home/nonroot/" {
					t.Errorf("%s: owner %d:%d, want root's", h.Name, h.Uid, h.Gid)
				}
			}
		}
		if tmp := u.header(t, "tmp/"); tmp.Mode != 0o1777 {
			t.Errorf("/tmp mode %o, want 1777", tmp.Mode)
		}
		if bin := u.header(t, "usr/local/bin/router"); bin.Mode != 0o755 {
			t.Errorf("binary mode %o, want 755", bin.Mode)
		}
	})

	t.Run("entrypoint runs", func(t *testing.T) {
		exe := filepath.Join(u.root, filepath.FromSlash(strings.TrimPrefix(u.config.Config.Entrypoint[0], "/")))
		checkStatic(t, exe)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, exe, "--help")
		cmd.Dir = u.root
		cmd.Env = u.config.Config.Env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v\n%s", exe, err, out)
		}
		if !strings.Contains(string(out), "Usage: router") {
			t.Fatalf("%s --help printed no usage:\n%s", exe, out)
		}
	})
}

// TestReproducible: the same inputs give the same bytes; every input that
// is part of the image changes its digest; the name does not.
func TestReproducible(t *testing.T) {
	bin, rebuilt := hello(t)
	if a, b := readFile(t, bin), readFile(t, rebuilt); !bytes.Equal(a, b) {
		t.Fatalf("two builds of the same source differ: %d and %d bytes", len(a), len(b))
	}
	baseFile, baseW := writeImage(t, bin, testOptions(t))
	baseBytes := readFile(t, baseFile)
	cases := []struct {
		name       string
		change     func(t *testing.T, o *Options, bin *string)
		sameDigest bool
		sameBytes  bool
	}{
		{"same inputs, binary built again", func(_ *testing.T, _ *Options, bin *string) { *bin = rebuilt }, true, true},
		{"other registry: same image, other name", func(_ *testing.T, o *Options, _ *string) { o.Registry = "localhost" }, true, false},
		{"other version", func(_ *testing.T, o *Options, _ *string) { o.Version = "1.2.4" }, false, false},
		{"other SOURCE_DATE_EPOCH", func(_ *testing.T, o *Options, _ *string) { o.Created = o.Created.Add(time.Second) }, false, false},
		{"other CA bundle", func(t *testing.T, o *Options, _ *string) {
			if err := os.WriteFile(o.CAFile, []byte(testCA+testCA), 0o644); err != nil {
				t.Fatal(err)
			}
		}, false, false},
		{"other binary", func(t *testing.T, _ *Options, bin *string) {
			*bin = filepath.Join(t.TempDir(), "hello")
			if err := os.WriteFile(*bin, append(readFile(t, rebuilt), 0), 0o755); err != nil {
				t.Fatal(err)
			}
		}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, bin := testOptions(t), bin
			tc.change(t, &o, &bin)
			file, w := writeImage(t, bin, o)
			b := readFile(t, file)
			if got := w.Manifest.Digest == baseW.Manifest.Digest; got != tc.sameDigest {
				t.Errorf("digest %s, base %s: same %v, want %v", w.Manifest.Digest, baseW.Manifest.Digest, got, tc.sameDigest)
			}
			if got := bytes.Equal(b, baseBytes); got != tc.sameBytes {
				t.Errorf("tarball identical to the base's: %v, want %v", got, tc.sameBytes)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dynamic := ""
	for _, p := range []string{"/bin/sh", "/usr/bin/env", "/bin/ls"} {
		if f, err := elf.Open(p); err == nil {
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP {
					dynamic = p
				}
			}
			f.Close()
		}
		if dynamic != "" {
			break
		}
	}
	cases := []struct {
		name   string
		change func(o *Options, b *Binary, bin *string)
		want   string
	}{
		{"no version", func(o *Options, _ *Binary, _ *string) { o.Version = "" }, "version (tag) is required"},
		{"bad tag", func(o *Options, _ *Binary, _ *string) { o.Version = "1.0+dirty" }, "want REGISTRY/REPOSITORY:TAG"},
		{"registry without a host", func(o *Options, _ *Binary, _ *string) { o.Registry = "team" }, "want REGISTRY/REPOSITORY:TAG"},
		{"unknown binary", func(_ *Options, b *Binary, _ *string) { b.Name = "devfleet" }, `no wsfleet image "devfleet"`},
		{"no CA bundle", func(o *Options, _ *Binary, _ *string) { o.CAFile = "/nonexistent/ca.crt" }, "no CA certificates at /nonexistent/ca.crt"},
		{"not a CA bundle", func(o *Options, _ *Binary, bin *string) { o.CAFile = notELF }, "no PEM certificate"},
		{"not an executable", func(_ *Options, _ *Binary, bin *string) { *bin = notELF }, "not an ELF executable"},
		{"dynamically linked", func(_ *Options, _ *Binary, bin *string) { *bin = dynamic }, "dynamically linked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "dynamically linked" && dynamic == "" {
				t.Skip("no dynamically linked executable on this host")
			}
			bin, _ := hello(t)
			o, b := testOptions(t), routerImage
			tc.change(&o, &b, &bin)
			_, err := New(b, bin, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestCheckRef(t *testing.T) {
	cases := []struct {
		ref string
		ok  bool
	}{
		{"localhost/wsfleet/gateway:0.1.0", true},
		{"localhost:5000/wsfleet/gateway:v1", true},
		{"registry.example.com/team/wsfleet/router:ac3ab91-dirty", true},
		{"registry:5000/wsfleet/loadtest:1", true},
		{"ghcr.io/wsfleet/gateway:v0.1.0-3-gac3ab91", true},
		{"wsfleet/gateway:0.1.0", false},       // no registry host
		{"localhost/wsfleet/gateway", false},   // no tag
		{"localhost/WSFLEET/gateway:1", false}, // uppercase repository
		{"localhost/wsfleet/gateway:1+x", false},
		{"localhost/wsfleet/gateway:-1", false},
		{"localhost//gateway:1", false},
	}
	for _, tc := range cases {
		t.Run(tc.ref, func(t *testing.T) {
			if err := CheckRef(tc.ref); (err == nil) != tc.ok {
				t.Fatalf("CheckRef(%q) = %v, want ok %v", tc.ref, err, tc.ok)
			}
		})
	}
}

// TestDockerfileAgrees: the Dockerfile's per-binary images have the same
// user, binary paths, entrypoints and ports as these.
func TestDockerfileAgrees(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(moduleDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string][]string{} // stage -> its instructions
	var stage string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Fields(line); f[0] == "FROM" && len(f) >= 4 && strings.EqualFold(f[len(f)-2], "AS") {
			stage = f[len(f)-1]
		}
		stages[stage] = append(stages[stage], line)
	}
	if !slices.Contains(stages["runtime"], fmt.Sprintf("USER %s", User)) {
		t.Errorf("the Dockerfile's runtime stage does not run as %s: %q", User, stages["runtime"])
	}
	for _, bin := range Binaries {
		t.Run(bin.Name, func(t *testing.T) {
			lines := stages[bin.Name]
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "FROM runtime AS") {
				t.Fatalf("no Dockerfile stage %q on the runtime stage: %q", bin.Name, lines)
			}
			entry := fmt.Sprintf(`ENTRYPOINT ["%s/%s"]`, BinDir, bin.Name)
			copyLine := fmt.Sprintf("COPY --from=build-%s /out/%s %s/%s", bin.Name, bin.Name, BinDir, bin.Name)
			if !slices.Contains(lines, entry) || !slices.Contains(lines, copyLine) {
				t.Errorf("stage %s: want %q and %q in %q", bin.Name, copyLine, entry, lines)
			}
			var ports []string
			for _, l := range lines {
				if rest, ok := strings.CutPrefix(l, "EXPOSE "); ok {
					for _, p := range strings.Fields(rest) {
						if _, err := strconv.Atoi(p); err == nil {
							p += "/tcp"
						}
						ports = append(ports, p)
					}
				}
			}
			if !slices.Equal(ports, bin.Ports) {
				t.Errorf("stage %s exposes %v, the image %v", bin.Name, ports, bin.Ports)
			}
		})
	}
}
