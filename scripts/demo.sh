#!/usr/bin/env bash
# The demo: MariaDB primary + replica, the Consul API double with both nodes checked by
# `consul-mysql-proxy check`, the proxy (on_failover = idle), 8 writers through it; a planned
# switchover (classic runbook), a sequenced one (Consul maintenance + idle drain first), then a
# crash (kill -9) and promotion; then the routes demo: a primary with two replicas behind a
# read-write and a read-only route (a replica stopped and left, a primary crash, the RO
# fallback). Prints a timeline and a summary. Cleans up after itself.
# Usage: scripts/demo.sh            (installs Debian packages if missing, builds, runs)
# Env:   DEMO_PROFILE=release       build with optimisations (default: dev, reuses test builds)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
profile="${DEMO_PROFILE:-dev}"
dir=debug
[ "$profile" = release ] && dir=release
cargo build --profile "$profile" --bin consul-mysql-proxy --example demo --example demo_routes
export CONSUL_MYSQL_PROXY_BIN="$PWD/target/$dir/consul-mysql-proxy"
timeout 300 "target/$dir/examples/demo"
exec timeout 180 "target/$dir/examples/demo_routes"
