#!/usr/bin/env bash
# Fuzzes the pure parsers with cargo-fuzz (libFuzzer + AddressSanitizer):
#   config       TOML text -> Settings::from_toml -> Config::resolve
#   consul_json  Consul HTTP bodies -> decode_health / decode_catalog / decode_kv
#   consul_http  whole Consul HTTP answers (status, headers, body) -> interpret -> decoders
#   kv_value     leader key values -> parse_primary_value
#   dns_answer   DNS response bytes -> Message::from_vec -> answer::read_reply, SRV/A handling
#   mysql_conversation  relayed MySQL bytes (both sides, any split) -> the idle detector
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET defaults to 60; CI runs 30; use 600 for a real local session.
#   FUZZ_SANITIZER=address (default) | none — none builds faster and runs more executions.
# Exits non-zero as soon as a target crashes; the crashing input is in fuzz/artifacts/<target>/
# (reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>`).
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address). Only stable Rust is installed
# here, so RUSTC_BOOTSTRAP=1 lets the stable compiler accept them: a build switch for this
# fuzz build only, never set for the product's build.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(config consul_json consul_http kv_value dns_answer mysql_conversation)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz.sh: $t for ${secs}s"
    # corpus/ grows across runs (git-ignored); seeds/ are the committed starting points.
    if ! cargo fuzz run --sanitizer "${FUZZ_SANITIZER:-address}" --fuzz-dir fuzz --target-dir "$target_dir" "$t" \
        "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 >"$logs/$t.log" 2>&1; then
        tail -n 60 "$logs/$t.log"
        echo "fuzz.sh: FAILED: $t crashed or could not run (input in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*')"
    ft="$(grep -o 'ft: [0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*')"
    corpus="$(find "fuzz/corpus/$t" -type f | wc -l)"
    summary+=("$t: ${runs:-?} executions in ${secs}s, coverage ${cov:-?} edges / ${ft:-?} features, corpus $corpus inputs")
done
echo "fuzz.sh: no crash"
printf '  %s\n' "${summary[@]}"
