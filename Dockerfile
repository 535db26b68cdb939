# syntax=docker/dockerfile:1
#
# Images of the wsfleet binaries: static (CGO_ENABLED=0), on distroless
# static as the non-root user 65532, each binary at /usr/local/bin/<name>.
#
#   docker build --target gateway  -t registry.example.com/wsfleet/gateway:0.2.0  .
#   docker build --target router   -t registry.example.com/wsfleet/router:0.2.0   .
#   docker build --target loadtest -t registry.example.com/wsfleet/loadtest:0.2.0 .
#   docker build                   -t registry.example.com/wsfleet/wsfleet:0.2.0  .   # all three
#
# No wsfleet images are published: push these to your registry and name it
# in the Helm chart's values. Without a container daemon, `make images`
# builds the per-binary images (same user, paths, entrypoints and ports) as
# tarballs for docker load / podman load: docs/deploy.md#images.
#
# The Helm chart (helm/wsfleet) runs the per-binary images and sets each
# container's command, so the all-in-one image works in their place.
# Multi-platform: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the Go toolchain cross-compiles; nothing runs under emulation).

ARG GO_VERSION=1.26
# gcr.io/distroless/static: CA certificates (for a JWKS URL over HTTPS),
# tzdata, /etc/passwd with nonroot; no shell, no package manager.
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS deps
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS="-trimpath -tags=jwx_goccy"
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

# One build stage per binary: `--target gateway` builds only the gateway.
FROM deps AS build-gateway
ARG TARGETOS TARGETARCH
RUN --mount=type=bind,target=/src,rw --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -ldflags="-s -w" -o /out/gateway ./cmd/gateway

FROM deps AS build-router
ARG TARGETOS TARGETARCH
RUN --mount=type=bind,target=/src,rw --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -ldflags="-s -w" -o /out/router ./cmd/router

FROM deps AS build-loadtest
ARG TARGETOS TARGETARCH
RUN --mount=type=bind,target=/src,rw --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -ldflags="-s -w" -o /out/loadtest ./cmd/loadtest

FROM ${RUNTIME_IMAGE} AS runtime
USER 65532:65532
LABEL org.opencontainers.image.source="https://github.com/wsfleet/wsfleet" \
      org.opencontainers.image.description="wsfleet: a NATS-backed WebSocket gateway fleet"

FROM runtime AS gateway
COPY --from=build-gateway /out/gateway /usr/local/bin/gateway
# WebSocket, admin (/healthz, /readyz, /metrics)
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/gateway"]

FROM runtime AS router
COPY --from=build-router /out/router /usr/local/bin/router
# HTTP API, admin
EXPOSE 8090 8091
ENTRYPOINT ["/usr/local/bin/router"]

FROM runtime AS loadtest
COPY --from=build-loadtest /out/loadtest /usr/local/bin/loadtest
ENTRYPOINT ["/usr/local/bin/loadtest"]

# The default target: every binary in one image (no entrypoint: name the
# binary, e.g. `docker run IMAGE gateway --help`).
FROM runtime AS wsfleet
COPY --from=build-gateway /out/gateway /usr/local/bin/gateway
COPY --from=build-router /out/router /usr/local/bin/router
COPY --from=build-loadtest /out/loadtest /usr/local/bin/loadtest
