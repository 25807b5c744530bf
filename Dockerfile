# pgvalet's container image: built with the same Rust toolchain as the repository, run on
# distroless (glibc and CA roots; no shell, no package manager) as a non-root user.
#
#   docker build -t pgvalet .
#   docker run --rm -p 6432:6432 -v "$PWD/pgvalet.toml:/etc/pgvalet/pgvalet.toml:ro" \
#     -e PGVALET_LISTEN_ADDR=0.0.0.0:6432 pgvalet
#
# The base images are build arguments with the public images as defaults. Where those cannot be
# pulled, scripts/local-base-images.sh makes equivalents from Debian's packages:
#   eval "$(scripts/local-base-images.sh --env)"
#   docker build --build-arg RUST_IMAGE=$PGVALET_RUST_IMAGE \
#     --build-arg RUNTIME_IMAGE=$PGVALET_RUNTIME_IMAGE --build-arg DEVTOOLS_IMAGE=$PGVALET_DEVTOOLS_IMAGE .
#
# The `devtools` stage (the dev PKI generator and docker-compose.yml's setup script) is the
# image of `docker build --target devtools .`.
#
# Works with the classic builder (docker-compose 1.29, dockerd 20.10) and with BuildKit.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG DEVTOOLS_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# No debug info: the binary is stripped anyway, and the build is shorter.
ENV CARGO_PROFILE_RELEASE_DEBUG=none
# The dependencies first, in a layer of their own: pgvalet's manifest with empty targets builds
# every crate it depends on, so a change to pgvalet's sources rebuilds only pgvalet.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src examples/devpki \
 && echo 'fn main() {}' >src/main.rs && touch src/lib.rs && echo 'fn main() {}' >examples/devpki/main.rs \
 && cargo build --release --locked --bin pgvalet --example devpki \
 && rm -rf src examples target/release/pgvalet* target/release/examples/devpki* \
      target/release/deps/pgvalet-* target/release/deps/libpgvalet-* target/release/deps/devpki-* \
      target/release/.fingerprint/pgvalet-*
COPY src src
COPY examples examples
RUN cargo build --release --locked --bin pgvalet --example devpki \
 && strip target/release/pgvalet target/release/examples/devpki

FROM ${DEVTOOLS_IMAGE} AS devtools
COPY --from=build /src/target/release/examples/devpki /usr/local/bin/devpki
COPY deploy/compose/setup.sh /usr/local/bin/pgvalet-dev-setup
ENTRYPOINT ["/usr/local/bin/pgvalet-dev-setup"]

FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/pgvalet /usr/local/bin/pgvalet
# The configuration file; PGVALET_CONFIG_TOML may carry it whole instead, and PGVALET_<KEY>
# variables override single keys (see config/example.toml).
ENV PGVALET_CONFIG=/etc/pgvalet/pgvalet.toml
# Clients, and metrics/health when [metrics] is configured.
EXPOSE 6432 9930
USER nonroot
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/pgvalet", "health"]
ENTRYPOINT ["/usr/local/bin/pgvalet"]
CMD ["run"]
