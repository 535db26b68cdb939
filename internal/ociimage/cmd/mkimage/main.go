// Command mkimage is `make images`: it builds the gateway, router and
// loadtest as static Linux executables and writes an image tarball of each
// (internal/ociimage) that docker load and podman load read, without a
// container daemon.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/wsfleet/wsfleet/internal/ociimage"
)

const usage = `Usage: mkimage [flags] [gateway|router|loadtest ...]

Builds each named wsfleet binary (all three by default) as a static Linux
executable (CGO_ENABLED=0, -trimpath, no build ID) and writes its image to
OUT/wsfleet-<name>-<version>.tar: an OCI image layout with a Docker archive
manifest, for docker load -i, podman load -i or skopeo copy oci-archive:...
The image: the binary at /usr/local/bin/<name> (the entrypoint), the CA
certificates, /etc/passwd and /etc/group with the user 65532 (nonroot) it
runs as, /tmp. The same tree, toolchain, flags, CA bundle and
SOURCE_DATE_EPOCH give the same digests.

Every file's time and the image's created time are SOURCE_DATE_EPOCH
(seconds since 1970; unset: 0). make images sets it to the last commit's
time.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var (
		o      ociimage.Options
		out    = fs.String("out", "dist/images", "directory the tarballs go to")
		arch   = fs.String("arch", runtime.GOARCH, "GOARCH of the binaries and the images")
		goCmd  = fs.String("go", "go", "the go command")
		module = fs.String("C", ".", "the wsfleet module's directory")
	)
	fs.StringVar(&o.Registry, "registry", "localhost", "registry host (and path) of the repositories: <registry>/wsfleet/<name>:<version>")
	fs.StringVar(&o.Version, "version", "", "the images' tag and version label (required)")
	fs.StringVar(&o.CAFile, "ca-file", "/etc/ssl/certs/ca-certificates.crt", "CA certificate bundle to copy into the images")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if o.Version == "" {
		fmt.Fprintln(stderr, "mkimage: --version is required (make images: VERSION, default git describe --always --dirty)")
		return 2
	}
	var err error
	if o.Created, err = sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH")); err != nil {
		fmt.Fprintln(stderr, "mkimage:", err)
		return 2
	}
	var bins []ociimage.Binary
	if fs.NArg() == 0 {
		bins = ociimage.Binaries
	}
	for _, name := range fs.Args() {
		b, ok := ociimage.LookupBinary(name)
		if !ok {
			fmt.Fprintf(stderr, "mkimage: no image %q: want gateway, router or loadtest\n", name)
			return 2
		}
		bins = append(bins, b)
	}
	for _, b := range bins {
		if err := ociimage.CheckRef(o.Ref(b)); err != nil {
			fmt.Fprintln(stderr, "mkimage:", err)
			return 2
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(stderr, "mkimage:", err)
		return 1
	}
	tmp, err := os.MkdirTemp(*out, ".build-")
	if err != nil {
		fmt.Fprintln(stderr, "mkimage:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	for _, b := range bins {
		file := filepath.Join(*out, "wsfleet-"+b.Name+"-"+o.Version+".tar")
		w, err := buildImage(ctx, b, o, *goCmd, *module, *arch, tmp, file)
		if err != nil {
			fmt.Fprintln(stderr, "mkimage:", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s  %s  %s/%s\n  digest %s\n  config %s\n  docker load -i %s   # or podman load -i\n",
			file, o.Ref(b), "linux", *arch, w.Manifest.Digest, w.Config.Digest, file)
	}
	return 0
}

// buildImage builds b's binary in tmp and writes its image to file.
func buildImage(ctx context.Context, b ociimage.Binary, o ociimage.Options, goCmd, module, arch, tmp, file string) (ociimage.Written, error) {
	var w ociimage.Written
	bin := filepath.Join(tmp, b.Name)
	if err := ociimage.Build(ctx, goCmd, module, "./cmd/"+b.Name, arch, bin); err != nil {
		return w, err
	}
	img, err := ociimage.New(b, bin, o)
	if err != nil {
		return w, err
	}
	f, err := os.CreateTemp(tmp, b.Name+"-*.tar")
	if err != nil {
		return w, err
	}
	defer f.Close()
	if w, err = ociimage.Write(f, img); err != nil {
		return w, err
	}
	if err := f.Chmod(0o644); err != nil {
		return w, err
	}
	if err := f.Close(); err != nil {
		return w, err
	}
	return w, os.Rename(f.Name(), file)
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org):
// seconds since 1970; "" is 0.
func sourceDateEpoch(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	s, err := strconv.ParseInt(v, 10, 64)
	if err != nil || s < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", v)
	}
	return time.Unix(s, 0).UTC(), nil
}
