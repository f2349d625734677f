#!/usr/bin/env bash
# No Docker engine runs on our machines, so this runs the Dockerfile's build steps on the host:
# the same cargo command, the same strip, and the runtime image's checks (the binary starts as
# a non-root user, the HEALTHCHECK command works, every COPY source exists).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "check-dockerfile: COPY sources exist"
grep -E '^COPY ' Dockerfile | grep -v -- '--from=' | while read -r _ src _; do
  [ -e "$src" ] || { echo "missing COPY source: $src" >&2; exit 1; }
done

echo "check-dockerfile: the build stage's command"
cmd=$(sed -n 's/^RUN \(cargo build .*\) \\$/\1/p' Dockerfile)
[ -n "$cmd" ] || { echo "no cargo build line found in Dockerfile" >&2; exit 1; }
echo "+ $cmd"
eval "$cmd"
cp target/release/consul-mysql-proxy /tmp/consul-mysql-proxy.image
strip /tmp/consul-mysql-proxy.image
ls -l /tmp/consul-mysql-proxy.image

echo "check-dockerfile: runtime as uid 10001 (the image's USER)"
setpriv --reuid=10001 --regid=10001 --clear-groups /tmp/consul-mysql-proxy.image --version
setpriv --reuid=10001 --regid=10001 --clear-groups /tmp/consul-mysql-proxy.image healthcheck --help >/dev/null
# HEALTHCHECK with nothing listening must fail (exit 1), not hang.
if setpriv --reuid=10001 --regid=10001 --clear-groups /tmp/consul-mysql-proxy.image healthcheck --admin 127.0.0.1:1 --timeout 1s; then
  echo "healthcheck passed with nothing listening" >&2; exit 1
fi
rm -f /tmp/consul-mysql-proxy.image
echo "check-dockerfile: ok"
