#!/usr/bin/env bash
# The test command: installs the test dependencies (Debian packages) and runs every test of the
# workspace against real MariaDB, the Consul API double and the proxy binary.
# Set CONSUL_BIN=/path/to/consul to run the Consul tests against a real `consul agent -dev` too.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Tests are mostly waiting on processes and sockets: more threads than cores shortens the run.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
cargo test --workspace "$@"
