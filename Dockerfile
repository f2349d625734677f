# consul-mysql-proxy sidecar image: release build, small runtime, non-root.
# No Docker engine runs on our CI machines: every build step below is also run on the host by
# scripts/check-dockerfile.sh (same cargo command, same binary), see README "Container image".

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY consul-double/Cargo.toml consul-double/Cargo.toml
COPY src src
COPY consul-double/src consul-double/src
RUN cargo build --release --locked -p consul-mysql-proxy --bin consul-mysql-proxy \
 && strip target/release/consul-mysql-proxy

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin proxy
COPY --from=build /src/target/release/consul-mysql-proxy /usr/local/bin/consul-mysql-proxy
USER 10001:10001
EXPOSE 3306
ENV CONSUL_MYSQL_PROXY_LISTEN=0.0.0.0:3306
ENTRYPOINT ["/usr/local/bin/consul-mysql-proxy"]
