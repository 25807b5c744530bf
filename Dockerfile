# syntax=docker/dockerfile:1
# pgvalet's container image: built with the same Rust toolchain as the repository, run on
# distroless (glibc and CA roots; no shell, no package manager) as a non-root user.
#
#   docker build -t pgvalet .
#   docker run --rm -p 6432:6432 -v "$PWD/pgvalet.toml:/etc/pgvalet/pgvalet.toml:ro" \
#     -e PGVALET_LISTEN_ADDR=0.0.0.0:6432 pgvalet
#
# The `devtools` stage (the dev PKI generator and docker-compose.yml's setup script) is built
# only when asked for: `docker build --target devtools .`.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY examples examples
RUN cargo build --release --locked --bin pgvalet --example devpki \
 && strip target/release/pgvalet target/release/examples/devpki

FROM debian:bookworm-slim AS devtools
COPY --from=build /src/target/release/examples/devpki /usr/local/bin/devpki
COPY deploy/compose/setup.sh /usr/local/bin/pgvalet-dev-setup
ENTRYPOINT ["/usr/local/bin/pgvalet-dev-setup"]

FROM gcr.io/distroless/cc-debian12:nonroot
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
