# Multi-stage build: compile in the Rust image, run in a slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# SQLite's compile-time options (LIBSQLITE3_FLAGS).
COPY .cargo .cargo
COPY src src
COPY config config
RUN cargo build --release --locked --bin aq-ingest

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/aq-ingest aq \
    && mkdir -p /var/lib/aq-ingest && chown aq /var/lib/aq-ingest
COPY --from=build /src/target/release/aq-ingest /usr/local/bin/aq-ingest
USER aq
WORKDIR /var/lib/aq-ingest
ENTRYPOINT ["/usr/local/bin/aq-ingest"]
CMD ["serve"]
