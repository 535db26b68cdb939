// Package ociimage builds container images of the wsfleet binaries without a
// container daemon (`make images`, cmd/mkimage): one tar file per image
// holding an OCI image layout (oci-layout, index.json, blobs/sha256/...) and,
// beside it, the manifest.json of a Docker archive that names the same
// blobs, which is what `docker save` writes. `docker load` (any version),
// `podman load` and skopeo (oci-archive: or docker-archive:) read it.
//
// An image has one gzip layer: a static binary at /usr/local/bin/<name>, a
// CA certificate bundle, /etc/passwd and /etc/group with the non-root user
// 65532, its home and a /tmp; no shell, no package manager. Every tar
// header, timestamp and JSON document follows from the inputs alone, so the
// same inputs give the same bytes and digests.
//
// Not here: building with a daemon (the repository's Dockerfile, whose
// images have the same user, paths and ports), pushing to a registry
// (docker, podman or skopeo), multi-platform indexes.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Media types and annotations of the OCI image specification (v1.1) and of
// containerd, which Docker's containerd image store imports with.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	AnnotationRefName   = "org.opencontainers.image.ref.name"
	AnnotationImageName = "io.containerd.image.name"
)

// File is one entry of an image's layer. Parent directories that are not
// listed are added (root's, 0755).
type File struct {
	// Path relative to the root, slash-separated: "etc/passwd".
	Path string
	// Permission bits with the setuid, setgid and sticky bits: 0o1777.
	Mode     int64
	Dir      bool
	UID, GID int
	// A regular file's contents.
	Data []byte
}

// Config is the image configuration's "config" object: how a runtime starts
// a container of the image.
type Config struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
}

// Image is everything an image tarball is made of.
type Image struct {
	// The fully qualified reference the image loads as, registry host
	// included ("localhost/wsfleet/gateway:0.1.0"), so that Docker and
	// Podman give it the same name. It is not part of the image digest.
	Ref          string
	OS           string
	Architecture string
	Variant      string
	// The config's created time, its history's, and every tar header's
	// modification time (whole seconds).
	Created time.Time
	// The history entry's created_by.
	CreatedBy string
	Config    Config
	Files     []File
}

// Descriptor points at a blob (OCI image specification, descriptor.md).
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform is an index entry's platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Index is an OCI image index (index.json).
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// ConfigFile is the OCI image configuration blob.
type ConfigFile struct {
	Created      string    `json:"created"`
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Variant      string    `json:"variant,omitempty"`
	Config       Config    `json:"config"`
	RootFS       RootFS    `json:"rootfs"`
	History      []History `json:"history,omitempty"`
}

// RootFS lists the uncompressed layers' digests.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// History is one entry of the configuration's history.
type History struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by,omitempty"`
}

// DockerManifest is one entry of a Docker archive's manifest.json.
type DockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Written describes an image tarball.
type Written struct {
	// The manifest: its digest is the image's digest, what a registry
	// reports after `skopeo copy oci-archive:FILE docker://...` (the blobs
	// go as they are) and what Docker's containerd image store shows as ID.
	Manifest Descriptor
	// The configuration: its digest is the image ID of Podman and of
	// Docker's classic image store.
	Config Descriptor
	Layer  Descriptor
	// The uncompressed layer's digest (rootfs.diff_ids).
	DiffID string
}

// refPattern is a fully qualified reference: a registry host (with a dot or
// a port, or localhost), lowercase path components, a tag.
var refPattern = regexp.MustCompile(`^((localhost|[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)+)(:[0-9]+)?|[a-zA-Z0-9-]+:[0-9]+)` +
	`(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)+` +
	`:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// CheckRef says what is wrong with ref as an image's Ref.
func CheckRef(ref string) error {
	if !refPattern.MatchString(ref) {
		return fmt.Errorf("image reference %q: want REGISTRY/REPOSITORY:TAG with a registry host (localhost, registry.example.com or host:port), a lowercase repository and a tag of letters, digits, '_', '.' and '-'", ref)
	}
	return nil
}

// Write writes img as a tarball to w.
func Write(w io.Writer, img *Image) (Written, error) {
	var out Written
	if err := CheckRef(img.Ref); err != nil {
		return out, err
	}
	if img.OS == "" || img.Architecture == "" {
		return out, fmt.Errorf("image %s: OS and architecture are required", img.Ref)
	}
	created := img.Created.UTC().Truncate(time.Second)
	stamp := created.Format(time.RFC3339)

	layerTar, err := layer(img.Files, created)
	if err != nil {
		return out, fmt.Errorf("image %s: %w", img.Ref, err)
	}
	out.DiffID = digest(layerTar)
	var gz bytes.Buffer
	// A gzip header without name or time: the bytes depend on the layer only
	// (and on compress/flate, which is the Go toolchain's). BestSpeed: a
	// tenth larger than the default level, in a third of the time.
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if err != nil {
		return out, err
	}
	if _, err := zw.Write(layerTar); err != nil {
		return out, err
	}
	if err := zw.Close(); err != nil {
		return out, err
	}
	layerBlob := gz.Bytes()
	out.Layer = Descriptor{MediaType: MediaTypeLayer, Digest: digest(layerBlob), Size: int64(len(layerBlob))}

	cfg := ConfigFile{
		Created:      stamp,
		Architecture: img.Architecture,
		OS:           img.OS,
		Variant:      img.Variant,
		Config:       img.Config,
		RootFS:       RootFS{Type: "layers", DiffIDs: []string{out.DiffID}},
		History:      []History{{Created: stamp, CreatedBy: img.CreatedBy}},
	}
	cfgBlob, err := json.Marshal(cfg)
	if err != nil {
		return out, err
	}
	out.Config = Descriptor{MediaType: MediaTypeConfig, Digest: digest(cfgBlob), Size: int64(len(cfgBlob))}

	manBlob, err := json.Marshal(Manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        out.Config,
		Layers:        []Descriptor{out.Layer},
	})
	if err != nil {
		return out, err
	}
	out.Manifest = Descriptor{MediaType: MediaTypeManifest, Digest: digest(manBlob), Size: int64(len(manBlob))}

	entry := out.Manifest
	// Podman names the image after ref.name, containerd (and so Docker's
	// containerd image store) after io.containerd.image.name; both take a
	// fully qualified reference as it is.
	entry.Annotations = map[string]string{AnnotationRefName: img.Ref, AnnotationImageName: img.Ref}
	entry.Platform = &Platform{Architecture: img.Architecture, OS: img.OS, Variant: img.Variant}
	indexJSON, err := json.Marshal(Index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{entry}})
	if err != nil {
		return out, err
	}
	dockerJSON, err := json.Marshal([]DockerManifest{{
		Config:   BlobPath(out.Config.Digest),
		RepoTags: []string{img.Ref},
		Layers:   []string{BlobPath(out.Layer.Digest)},
	}})
	if err != nil {
		return out, err
	}

	files := []File{
		{Path: "blobs", Dir: true, Mode: 0o755},
		{Path: "blobs/sha256", Dir: true, Mode: 0o755},
		{Path: BlobPath(out.Config.Digest), Mode: 0o644, Data: cfgBlob},
		{Path: BlobPath(out.Layer.Digest), Mode: 0o644, Data: layerBlob},
		{Path: BlobPath(out.Manifest.Digest), Mode: 0o644, Data: manBlob},
		{Path: "index.json", Mode: 0o644, Data: indexJSON},
		{Path: "manifest.json", Mode: 0o644, Data: dockerJSON},
		{Path: "oci-layout", Mode: 0o644, Data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	}
	if err := writeTar(w, files, created); err != nil {
		return out, err
	}
	return out, nil
}

// BlobPath is the path of the blob with digest d in an image layout.
func BlobPath(d string) string {
	return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:")
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// layer is the uncompressed layer tar of files and their missing parents.
func layer(files []File, mtime time.Time) ([]byte, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean(f.Path)
		if p != f.Path || p == "." || path.IsAbs(p) || strings.HasPrefix(p, "../") {
			return nil, fmt.Errorf("file path %q: want a clean path relative to the root", f.Path)
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("file %q listed twice", p)
		}
		byPath[p] = f
	}
	all := append([]File(nil), files...)
	for _, f := range files {
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			if g, ok := byPath[d]; ok {
				if !g.Dir {
					return nil, fmt.Errorf("%q is a file and the parent of %q", d, f.Path)
				}
				continue
			}
			byPath[d] = File{Path: d, Dir: true, Mode: 0o755}
			all = append(all, byPath[d])
		}
	}
	var buf bytes.Buffer
	if err := writeTar(&buf, all, mtime); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeTar writes files sorted by path (parents before their children) as
// a USTAR archive: no PAX records, no access or change times, no user or
// group names, mtime for every entry.
func writeTar(w io.Writer, files []File, mtime time.Time) error {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	tw := tar.NewWriter(w)
	for _, f := range sorted {
		h := &tar.Header{
			Name:    f.Path,
			Mode:    f.Mode,
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: mtime,
			Format:  tar.FormatUSTAR,
		}
		if f.Dir {
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("tar header of %s: %w", f.Path, err)
		}
		if !f.Dir {
			if _, err := tw.Write(f.Data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
