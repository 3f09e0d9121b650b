# syntax=docker/dockerfile:1
# The mt-stream (event-stream) image: `docker build -t anomalyco/monkeytown-event-stream .`

# --- build -------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
# The commit the image is built from, for mt_stream_build_info (.git is not copied in):
# `docker build --build-arg MT_BUILD_COMMIT=$(git rev-parse --short=12 HEAD) .`
ARG MT_BUILD_COMMIT=unknown
WORKDIR /src
# The whole workspace: the root package (src/, tests/), every member Cargo.toml resolves
# (crates/budget, crates/hub, crates/deploy, crates/testkit, loadtest) and scripts/publish.lua,
# which crates/hub compiles in. .dockerignore keeps out target/, the chart, the rest of
# scripts/ and local tooling.
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is copied out of the
# cached target/ in the same step. The image gets it stripped (about 13 MiB instead of 98); its
# symbols go to /out/mt-stream.debug, linked by name (gnu-debuglink), for the debug-symbols
# stage below.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mt-stream \
    && install -D -m 0755 target/release/mt-stream /out/mt-stream.full \
    && objcopy --only-keep-debug /out/mt-stream.full /out/mt-stream.debug \
    && objcopy --strip-all --add-gnu-debuglink=/out/mt-stream.debug /out/mt-stream.full /out/mt-stream \
    && rm /out/mt-stream.full

# --- debug symbols -------------------------------------------------------------------------
# Not part of the image: `docker build --target debug-symbols --output type=local,dest=symbols .`
# writes symbols/mt-stream.debug, for gdb or perf against a crash or profile of the image.
FROM scratch AS debug-symbols
COPY --from=builder /out/mt-stream.debug /mt-stream.debug

# --- runtime -----------------------------------------------------------------------------
# bookworm-slim matches the builder's glibc and ships coreutils' `sleep`, which the chart's
# preStop hook runs.
FROM debian:bookworm-slim AS runtime
# ca-certificates: the system roots a rediss:// REDIS_URL is verified against when no
# MT_REDIS_CA_FILE is set (a managed Redis with a public CA).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 mtstream \
    && useradd --system --uid 10001 --gid mtstream --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mtstream
COPY --from=builder /out/mt-stream /usr/local/bin/mt-stream
USER 10001:10001
# 8080: public WebSocket listener (MT_LISTEN); 9090: admin (probes, metrics, publish).
EXPOSE 8080 9090
ENV MT_LISTEN=0.0.0.0:8080 \
    MT_ADMIN_LISTEN=0.0.0.0:9090
ENTRYPOINT ["mt-stream"]
CMD ["serve"]
