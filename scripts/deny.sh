#!/usr/bin/env bash
# Supply-chain checks with cargo-deny, policy in deny.toml:
#   licenses  every dependency under an allowed permissive license
#   bans      duplicate versions are reported (warn), wildcard versions fail
#   sources   crates only from crates.io, no git dependencies
#   advisories  RustSec security advisories — only where its database can be fetched
#
# The advisory database is a git repository on GitHub; these machines reach only the package
# registries, so the fetch fails at once and the advisories check is SKIPPED here, saying so.
# Set DENY_REQUIRE_ADVISORIES=1 (e.g. on a machine with GitHub access) to make that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
    echo "deny.sh: installing cargo-deny"
    cargo install cargo-deny --locked
fi

# cargo-deny reads `cargo metadata` for every platform; download all locked crates first (from
# crates.io), so the checks below can run offline.
cargo fetch --locked >/dev/null

echo "deny.sh: cargo deny check licenses bans sources"
cargo deny --offline check --hide-inclusion-graph licenses bans sources

if cargo deny fetch db >/tmp/deny-fetch.$$ 2>&1; then
    rm -f /tmp/deny-fetch.$$
    echo "deny.sh: cargo deny check advisories"
    cargo deny --offline check --hide-inclusion-graph advisories
else
    reason="$(grep -m1 -o 'fatal: .*' /tmp/deny-fetch.$$ || tail -n 1 /tmp/deny-fetch.$$)"
    rm -f /tmp/deny-fetch.$$
    if [ "${DENY_REQUIRE_ADVISORIES:-0}" = 1 ]; then
        echo "deny.sh: FAILED: cannot fetch the RustSec advisory database: $reason" >&2
        exit 1
    fi
    echo "deny.sh: advisories SKIPPED: the RustSec advisory database cannot be fetched from this machine ($reason)"
fi
echo "deny.sh: ok"
