# syntax=docker/dockerfile:1

# The worker and the simulator, as static binaries in a small image that runs
# as a non-root user:
#
#   docker build -t idenfy-worker .
#   docker run --rm -e IDENFY_API_KEY=... -e IDENFY_API_SECRET=... \
#       -e NATS_URL=nats://nats.example:4222 idenfy-worker
#
# docker-compose.yml builds it for both the worker and (profile sandbox) the
# simulator, whose entrypoint is /usr/local/bin/idenfy-sim.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first: a change to the code does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# TARGETOS and TARGETARCH are set by BuildKit (docker buildx build
# --platform ...); empty, Go builds for the build machine.
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/idenfy-worker ./cmd/idenfy-sim

# Runtime: busybox (about 1.5 MB): a shell and wget to look around a running
# container, and the wget the simulator's health check in docker-compose.yml
# uses. The worker's own health check needs neither: it is the worker
# binary (idenfy-worker healthcheck). The musl variant needs no glibc; the
# binaries are static anyway.
FROM busybox:stable-musl
# The worker calls https://ivs.idenfy.com: it needs the CA certificates,
# which busybox lacks. Go reads this path on Linux.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/idenfy-worker /out/idenfy-sim /usr/local/bin/
# nobody:nogroup. The worker writes no file and listens on an unprivileged
# port: the container may also run with a read-only root file system.
USER 65534:65534
# Prometheus /metrics, /healthz and /readyz (METRICS_ADDR, default :9464).
EXPOSE 9464
# SIGTERM stops the worker gracefully (WORKER_SHUTDOWN_TIMEOUT, default 30s,
# plus draining NATS): give the container more than that before SIGKILL.
STOPSIGNAL SIGTERM
# Healthy while /readyz on METRICS_ADDR's port answers 200: the worker
# serves (NATS connected, consumer consuming, KV reachable). Until then
# /readyz says why not: docker inspect shows it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/idenfy-worker", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/idenfy-worker"]
