# syntax=docker/dockerfile:1
# The `chat` binary (every role) in a small non-root image:
#   docker build -t chat:dev .
#   docker run --rm -p 3000:3000 chat:dev            # all-in-one: SQLite in /data
#   docker run --rm chat:dev gateway                 # a cluster role (configure by env)

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
# The load generator is a workspace member too: cargo needs its manifest, never its code here.
COPY deploy/loadgen/Cargo.toml deploy/loadgen/
RUN for crate in proto bus migrations persister presence gateway telemetry; do \
      mkdir -p "$crate/src" && : > "$crate/src/lib.rs"; \
    done \
 && mkdir -p src deploy/loadgen/src && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > deploy/loadgen/src/main.rs \
 && cargo build --release --locked -p chat \
 && rm -rf src */src

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
# The test client page, the API docs and the vendored Socket.IO client, compiled into the binary.
COPY gateway/assets gateway/assets
# Stripped: the release profile's line tables make the binary about six times larger (120 MB).
RUN find src */src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p chat \
 && install -D -s -m 0755 target/release/chat /out/chat

# --- run ----------------------------------------------------------------------------------------
FROM debian:bookworm-slim
# CA certificates for TLS to NATS, Postgres and JWKS hosts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chat \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home chat \
 && install -d -o 10001 -g 10001 /data
COPY --from=builder /out/chat /usr/local/bin/chat
# Numeric, so that Kubernetes' runAsNonRoot can verify it without resolving the name.
USER 10001:10001
WORKDIR /data
ENV CHAT_DATA_DIR=/data \
    LOG_FORMAT=json
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/chat"]
