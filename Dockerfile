# consul-mysql-proxy sidecar image: release build, small runtime, non-root.
# No Docker engine runs on our CI machines: scripts/check-dockerfile.sh runs the build stage's
# cargo command, the strip and the runtime checks on the host (see README "Container image").

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY consul-double/Cargo.toml consul-double/Cargo.toml
COPY consul-double/src consul-double/src
COPY src src
COPY benches benches
COPY config.example.toml config.example.toml
RUN cargo build --release --locked -p consul-mysql-proxy --bin consul-mysql-proxy \
 && strip target/release/consul-mysql-proxy

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin proxy
COPY --from=build /src/target/release/consul-mysql-proxy /usr/local/bin/consul-mysql-proxy
USER 10001:10001
# 9307: the read-only metrics_listen endpoint (/metrics, /, /status), when it is set (off by
# default, e.g. CONSUL_MYSQL_PROXY_METRICS_LISTEN=0.0.0.0:9307).
EXPOSE 3306 9307
# The admin endpoint stays on loopback; the HEALTHCHECK asks it from inside the container.
ENV CONSUL_MYSQL_PROXY_LISTEN=0.0.0.0:3306 \
    CONSUL_MYSQL_PROXY_ADMIN=127.0.0.1:9306
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/consul-mysql-proxy", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/consul-mysql-proxy"]
