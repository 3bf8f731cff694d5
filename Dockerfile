# syntax=docker/dockerfile:1
# The Kassa image: `docker build -t kassa .` (or `podman build`, `buildah bud`).
# Stage 1 builds the release binary; stage 2 is Debian slim with CA certificates (Stripe,
# SMTP over TLS), the binary and nothing else, run as the unprivileged user 10001 that the
# Helm chart's securityContext names. Templates, migrations and the stylesheet are compiled
# into the binary, so the image needs no other file and runs on a read-only root file system;
# /var/lib/kassa (KASSA_DATA_DIR) is the only place it writes.
# scripts/image.sh builds the same runtime stage without registry pulls (a debootstrap base
# and a binary built on the host) and checks it with podman.

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Only the server binary (and kassa-actors, which it needs): no benches, tests or load tester.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin kassa \
 && install -D -m 0755 target/release/kassa /out/kassa

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates unpinned: a pinned Debian version disappears at the next point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kassa \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/kassa --create-home \
      --shell /usr/sbin/nologin kassa
COPY --from=build /out/kassa /usr/local/bin/kassa
USER 10001:10001
WORKDIR /var/lib/kassa
# Inside a container Kassa listens on every interface; the store and secrets come from the
# deployment (see the README's configuration table and helm/kassa).
ENV KASSA_LISTEN=0.0.0.0:8080 \
    KASSA_DATA_DIR=/var/lib/kassa
EXPOSE 8080
# No HEALTHCHECK: orchestrators probe GET /healthz (alive) and GET /readyz (store reachable,
# 503 while draining), as the Helm chart does.
ENTRYPOINT ["/usr/local/bin/kassa"]
CMD ["serve"]
