# The audit collector (crates/aura-collector). Build context: the repository root
#   docker build -f deploy/collector.Dockerfile -t aura-collector .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Only the collector is compiled; the other workspace members' manifests must be present.
RUN cargo build --release --locked -p aura-collector \
 && install -m 0755 target/release/aura-collector /usr/local/bin/aura-collector

FROM debian:bookworm-slim
# libssl3: the collector's TLS to PostgreSQL (native-tls, docs/audit.md §5); ca-certificates:
# the roots sslmode=verify-full checks the server against when the URL names no sslrootcert.
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /var/lib/aura-collector collector \
 && install -d -o collector -g collector -m 0750 /var/lib/aura-collector
COPY --from=build /usr/local/bin/aura-collector /usr/local/bin/aura-collector
USER collector
WORKDIR /var/lib/aura-collector
ENV AUDIT_COLLECTOR_LISTEN=0.0.0.0:9300
EXPOSE 9300
ENTRYPOINT ["aura-collector"]
CMD ["serve"]
