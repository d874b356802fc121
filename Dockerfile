# syntax=docker/dockerfile:1
# The `chat` binary (every role) in a small non-root image, with `chat-loadgen` beside it (the
# chart's `helm test` runs its `probe`):
#   docker build -t chat:dev --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 3000:3000 chat:dev            # all-in-one: SQLite in /data
#   docker run --rm chat:dev gateway                 # a cluster role (configure by env)
# deploy/check-image.sh checks, without Docker, that every COPY source is in the build context
# .dockerignore leaves, and that the labels and the health check are here.

# --- build --------------------------------------------------------------------------------------
# The toolchain CI builds with (the workspace needs >= 1.85).
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, in a layer of their own: it is rebuilt only when a manifest or the lock
# file changes, not on every source edit. The workspace's crates get empty stand-in sources.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/
COPY bus/Cargo.toml bus/
COPY migrations/Cargo.toml migrations/
COPY persister/Cargo.toml persister/
COPY presence/Cargo.toml presence/
COPY gateway/Cargo.toml gateway/
COPY telemetry/Cargo.toml telemetry/
COPY deploy/loadgen/Cargo.toml deploy/loadgen/
RUN for crate in proto bus migrations persister presence gateway telemetry; do \
      mkdir -p "$crate/src" && : > "$crate/src/lib.rs"; \
    done \
 && mkdir -p src deploy/loadgen/src && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > deploy/loadgen/src/main.rs \
 && cargo build --release --locked -p chat -p chat-loadgen \
 && rm -rf src */src deploy/loadgen/src

# Then the real sources. COPY keeps the files' own modification times, which may be older than
# the stand-ins' build: touch them so that cargo rebuilds the workspace's crates.
COPY src src
COPY proto/src proto/src
COPY bus/src bus/src
COPY migrations/src migrations/src
COPY persister/src persister/src
COPY presence/src presence/src
COPY gateway/src gateway/src
COPY telemetry/src telemetry/src
COPY deploy/loadgen/src deploy/loadgen/src
# The test client page, the API docs and the vendored Socket.IO client, compiled into the binary.
COPY gateway/assets gateway/assets
# Stripped: the release profile's line tables make the binary about six times larger (120 MB).
RUN find src */src deploy/loadgen/src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p chat -p chat-loadgen \
 && install -D -s -m 0755 target/release/chat /out/chat \
 && install -D -s -m 0755 target/release/chat-loadgen /out/chat-loadgen

# --- run ----------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# Set by the release build; they only label the image.
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/example/chat
LABEL org.opencontainers.image.title="chat" \
      org.opencontainers.image.description="Real-time chat backend (Socket.IO API): gateway, persister and presence roles on NATS JetStream and Postgres, or all-in-one on SQLite" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# CA certificates for TLS to NATS, Postgres and JWKS hosts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chat \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home chat \
 && install -d -o 10001 -g 10001 /data
COPY --from=builder /out/chat /usr/local/bin/chat
COPY --from=builder /out/chat-loadgen /usr/local/bin/chat-loadgen
# Numeric, so that Kubernetes' runAsNonRoot can verify it without resolving the name.
USER 10001:10001
WORKDIR /data
ENV CHAT_DATA_DIR=/data \
    LOG_FORMAT=json
EXPOSE 3000
# Liveness (GET /healthz on PORT) for `docker run` and Compose; Kubernetes ignores this and uses
# the chart's probes. The slim image has no curl or wget and the binary no client subcommand:
# bash (always in Debian) speaks the one HTTP/1.0 request over its /dev/tcp redirection. A role
# whose work stops exits rather than answering, so liveness is enough here; Compose setups that
# must wait for NATS or the database can override this with /readyz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/\"${PORT:-3000}\" && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]
ENTRYPOINT ["/usr/local/bin/chat"]
