#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need on a fresh Debian machine (as root):
# MariaDB server + client, sysbench, HAProxy, iproute2, Chromium (headless, for the status page
# test). Idempotent; never starts a distro service (tests start their own mariadbd on free
# loopback ports).
set -euo pipefail

need=()
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
command -v mysql >/dev/null 2>&1 || need+=(mariadb-client)
command -v sysbench >/dev/null 2>&1 || need+=(sysbench)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v tc >/dev/null 2>&1 || need+=(iproute2)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/bin/mariadb-install-db ] || [ -x /usr/bin/mysql_install_db ] || need+=(mariadb-server)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to apt-get install ${need[*]}" >&2
    exit 1
  fi
  # Keep package scripts from starting mariadb/haproxy services (no init system here anyway).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  echo "install-deps: apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi

# A distro mariadb on 3306 would not break the tests (they use free ports) but would confuse
# the demo; say so rather than kill someone's database.
if command -v ss >/dev/null 2>&1 && ss -ltn 'sport = :3306' | grep -q LISTEN; then
  echo "install-deps: note: something already listens on :3306 (a distro MariaDB?); tests do not use it" >&2
fi
