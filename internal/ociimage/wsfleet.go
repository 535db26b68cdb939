package ociimage

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"strings"
	"time"
)

// Binary is a wsfleet command packaged as an image of its own.
type Binary struct {
	// ./cmd/<Name>, /usr/local/bin/<Name>, repository wsfleet/<Name> (the
	// chart's image.repository).
	Name string
	// The config's ExposedPorts: the chart's default ports and the
	// Dockerfile's EXPOSE.
	Ports []string
}

// Binaries are the images `make images` builds.
var Binaries = []Binary{
	{Name: "gateway", Ports: []string{"8080/tcp", "8081/tcp"}}, // WebSocket, admin
	{Name: "router", Ports: []string{"8090/tcp", "8091/tcp"}},  // HTTP API, admin
	{Name: "loadtest"},
}

// LookupBinary finds name in Binaries.
func LookupBinary(name string) (Binary, bool) {
	for _, b := range Binaries {
		if b.Name == name {
			return b, true
		}
	}
	return Binary{}, false
}

// What every image has, as the Dockerfile's images (distroless static
// :nonroot) and the chart's securityContext.
const (
	UserID      = 65532
	UserName    = "nonroot"
	User        = "65532:65532"
	Home        = "/home/nonroot"
	BinDir      = "/usr/local/bin"
	CACertsPath = "/etc/ssl/certs/ca-certificates.crt"
	Source      = "https://github.com/wsfleet/wsfleet"
	Description = "wsfleet: a NATS-backed WebSocket gateway fleet"
)

// Options are an image's inputs besides its binary.
type Options struct {
	// The registry host, with an optional path, the repositories go under:
	// "localhost", "registry.example.com", "registry.example.com:5000/team".
	Registry string
	// The tag and the org.opencontainers.image.version label.
	Version string
	// Every file's modification time and the config's created time
	// (SOURCE_DATE_EPOCH).
	Created time.Time
	// The CA certificate bundle copied to CACertsPath, e.g. the build
	// host's /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates).
	CAFile string
}

// Ref is the reference of b's image: <registry>/wsfleet/<name>:<version>.
func (o Options) Ref(b Binary) string {
	return strings.TrimSuffix(o.Registry, "/") + "/wsfleet/" + b.Name + ":" + o.Version
}

// Build builds the main package pkg ("./cmd/gateway") of the module in dir
// as a static Linux executable for goarch at out: CGO_ENABLED=0, -trimpath
// and no build ID, so that the same tree and toolchain give the same bytes.
// GOFLAGS and the rest of the environment pass through.
func Build(ctx context.Context, goCmd, dir, pkg, goarch, out string) error {
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s (GOARCH=%s): %v\n%s", pkg, goarch, err, b)
	}
	return nil
}

// New makes the image of b from the executable at bin, which must be a
// static Linux Go executable built with CGO_ENABLED=0 (Build's): its
// platform is the one it was built for, its revision label the commit it
// was built from.
func New(b Binary, bin string, o Options) (*Image, error) {
	if _, ok := LookupBinary(b.Name); !ok {
		return nil, fmt.Errorf("no wsfleet image %q (want one of gateway, router, loadtest)", b.Name)
	}
	if o.Version == "" {
		return nil, errors.New("the image version (tag) is required")
	}
	img := &Image{
		Ref:       o.Ref(b),
		Created:   o.Created,
		CreatedBy: "make images: " + BinDir + "/" + b.Name + ", CA certificates, user " + UserName,
	}
	if err := CheckRef(img.Ref); err != nil {
		return nil, err
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	if err := CheckStatic(bin); err != nil {
		return nil, err
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("%s: not a Go executable: %w", bin, err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" {
		return nil, fmt.Errorf("%s: built with CGO_ENABLED=%s, want 0 (a static executable needs no libc in the image)", bin, settings["CGO_ENABLED"])
	}
	img.OS, img.Architecture = settings["GOOS"], settings["GOARCH"]
	if img.OS != "linux" {
		return nil, fmt.Errorf("%s: built for GOOS=%s, want linux", bin, img.OS)
	}
	if img.Architecture == "arm" {
		v, _, _ := strings.Cut(settings["GOARM"], ",")
		img.Variant = "v" + v
	}

	ca, err := os.ReadFile(o.CAFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no CA certificates at %s (the images need them for HTTPS, e.g. a JWKS URL): install them (Debian: apt-get install ca-certificates) or name a bundle", o.CAFile)
	}
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", o.CAFile)
	}

	labels := map[string]string{
		"org.opencontainers.image.source":      Source,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.title":       "wsfleet " + b.Name,
		"org.opencontainers.image.description": Description,
	}
	if rev := settings["vcs.revision"]; rev != "" {
		labels["org.opencontainers.image.revision"] = rev
	}
	var ports map[string]struct{}
	if len(b.Ports) > 0 {
		ports = map[string]struct{}{}
		for _, p := range b.Ports {
			ports[p] = struct{}{}
		}
	}
	entrypoint := path.Join(BinDir, b.Name)
	img.Config = Config{
		User:         User,
		ExposedPorts: ports,
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"SSL_CERT_FILE=" + CACertsPath,
		},
		Entrypoint: []string{entrypoint},
		WorkingDir: Home,
		Labels:     labels,
	}
	root := func(p string) string { return strings.TrimPrefix(p, "/") }
	img.Files = []File{
		{Path: root(entrypoint), Mode: 0o755, Data: exe},
		{Path: root(CACertsPath), Mode: 0o644, Data: ca},
		{Path: "etc/passwd", Mode: 0o644, Data: []byte(fmt.Sprintf(
			"root:x:0:0:root:/root:/sbin/nologin\n"+
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+
				"%s:x:%d:%d:%s:%s:/sbin/nologin\n", UserName, UserID, UserID, UserName, Home))},
		{Path: "etc/group", Mode: 0o644, Data: []byte(fmt.Sprintf(
			"root:x:0:\nnobody:x:65534:\n%s:x:%d:\n", UserName, UserID))},
		{Path: root(Home), Dir: true, Mode: 0o700, UID: UserID, GID: UserID},
		{Path: "tmp", Dir: true, Mode: 0o1777},
	}
	return img, nil
}

// CheckStatic fails unless the file at p is an ELF executable with no
// program interpreter and no shared library dependency.
func CheckStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: not an ELF executable: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: dynamically linked (PT_INTERP): build it with CGO_ENABLED=0", p)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("%s: needs shared libraries %v: build it with CGO_ENABLED=0", p, libs)
	}
	return nil
}
