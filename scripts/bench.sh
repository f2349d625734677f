#!/usr/bin/env bash
# The performance harness: consul-mysql-proxy against HAProxy and a direct connection, on one
# machine, over loopback, against a MariaDB it starts itself.
#
#   scripts/bench.sh [all|sysbench|connect|idle|bulk|failover|profile|report]   (as root; default: all)
#
#   sysbench  oltp_point_select / oltp_read_only / oltp_read_write at 1, 8, 32 threads, in
#             interleaved rounds over every target; qps, p95 latency, errors, and each proxy's
#             CPU seconds (utime+stime from /proc/<pid>/stat around the run) per 10k queries
#   connect   new connections per second, PHP style (scripts/bench/connect.lua: connect,
#             SELECT 1, disconnect per event) at BENCH_CONNECT_THREADS threads, in interleaved
#             rounds over every target; each proxy's CPU seconds per 10k connections
#   idle      RSS growth per idle proxied MySQL session (BENCH_IDLE_CONNS authenticated sessions)
#   bulk      one 50 MB blob INSERT and SELECT through each target, MB/s
#   failover  writers through the proxy (Consul KV leader key), through the proxy with the fast
#             path (when fastpath is a target) and through HAProxy (mysql-check, primary +
#             backup) while the primary is killed and the replica promoted
#   profile   perf record (cpu-clock) of HAProxy and ours during oltp_point_select at 8 threads;
#             the hottest symbols go to profile-<target>.txt (skipped when perf is missing)
#   report    regenerate results.md and chart.svg from the CSVs in BENCH_OUT
#             (the chart alone: python3 scripts/bench/report.py --chart results.csv > chart.svg)
#
# Targets: direct (MariaDB itself), haproxy (mode tcp, nbthread 1), pump (ours, --relay pump,
# 1 worker: the default), copy (ours, --relay copy), pump-w2 (ours, --relay pump --workers 2),
# pump-idle (ours, --relay pump --on-failover idle: with the idle detector's observer; not in
# the default set), fastpath (ours, --fast-path connect: the sysbench, connect and failover
# clients run inside a cgroup the script creates and connect to the proxy's address, which the
# kernel rewrites to MariaDB's; needs root with BPF and cgroup v2 — drop it from BENCH_TARGETS
# on a host without; the idle and bulk phases skip it: nothing of theirs would pass the proxy).
#
# Environment knobs (defaults in brackets):
#   BENCH_TIME [20]        seconds per sysbench run
#   BENCH_ROUNDS [3]       interleaved rounds (each round runs every cell on every target)
#   BENCH_QUICK=1          smoke run (~4 min): 5 s runs, 1 round, 4 cells, direct/haproxy/pump,
#                          1000 idle sessions,
#                          1 bulk repetition, 1 failover; writes to target/bench-quick/
#   BENCH_WORKLOADS        ["oltp_point_select oltp_read_only oltp_read_write"]
#   BENCH_THREADS          ["1 8 32"]
#   BENCH_TARGETS          ["direct haproxy pump copy pump-w2 fastpath"]
#   BENCH_CONNECT_THREADS ["8"]  client threads of the connect workload (one cell per value)
#   BENCH_IDLE_CONNS [5000]  BENCH_BULK_MB [50]  BENCH_BULK_REPS [5]
#   BENCH_FAILOVER_ROUNDS [3]  BENCH_FAILOVER_WRITERS [8]
#   BENCH_FAILOVER_SEMISYNC [1]  semi-synchronous replication in the failover pair: a commit
#                          is acknowledged once the replica has it, so an acknowledged write
#                          survives the kill (0: asynchronous; then acked_lost counts what the
#                          old primary acknowledged but had not shipped — no proxy's doing)
#   BENCH_OUT [docs/perf]  where the CSVs, results.md and chart.svg go
#   BENCH_KEEP=1           keep the temp dir (datadirs, logs, raw sysbench output)
#
# Everything listens on 127.0.0.1 on free ports; every load loop is bounded in time; every
# process this script starts is stopped by its pid on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HELPERS=$ROOT/scripts/bench
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree

MODE=${1:-all}
case $MODE in all | sysbench | connect | idle | bulk | failover | profile | report) ;; *)
  echo "usage: scripts/bench.sh [all|sysbench|connect|idle|bulk|failover|profile|report]" >&2
  exit 64
  ;;
esac

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  : "${BENCH_TIME:=5}" "${BENCH_ROUNDS:=1}" "${BENCH_IDLE_CONNS:=1000}" "${BENCH_BULK_REPS:=1}"
  : "${BENCH_FAILOVER_ROUNDS:=1}" "${BENCH_OUT:=target/bench-quick}"
  : "${BENCH_WORKLOADS:=oltp_point_select oltp_read_write}" "${BENCH_THREADS:=1 32}"
  : "${BENCH_TARGETS:=direct haproxy pump}"
fi
BENCH_TIME=${BENCH_TIME:-20}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_WORKLOADS=${BENCH_WORKLOADS:-oltp_point_select oltp_read_only oltp_read_write}
BENCH_THREADS=${BENCH_THREADS:-1 8 32}
BENCH_TARGETS=${BENCH_TARGETS:-direct haproxy pump copy pump-w2 fastpath}
BENCH_CONNECT_THREADS=${BENCH_CONNECT_THREADS:-8}
BENCH_IDLE_CONNS=${BENCH_IDLE_CONNS:-5000}
BENCH_BULK_MB=${BENCH_BULK_MB:-50}
BENCH_BULK_REPS=${BENCH_BULK_REPS:-5}
BENCH_FAILOVER_ROUNDS=${BENCH_FAILOVER_ROUNDS:-3}
BENCH_FAILOVER_WRITERS=${BENCH_FAILOVER_WRITERS:-8}
BENCH_FAILOVER_SEMISYNC=${BENCH_FAILOVER_SEMISYNC:-1}
BENCH_OUT=${BENCH_OUT:-docs/perf}
case $BENCH_OUT in /*) ;; *) BENCH_OUT=$ROOT/$BENCH_OUT ;; esac
mkdir -p "$BENCH_OUT"

log() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

if [ "$MODE" = report ]; then
  exec python3 "$HELPERS/report.py" "$BENCH_OUT"
fi

[ "$(id -u)" = 0 ] || die "run as root (mariadbd is started as the mysql user)"
scripts/install-deps.sh
# 5000 idle sessions: two descriptors each in a proxy, one in the client, one in MariaDB.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge 12000 ] || log "warning: open-files limit $(ulimit -n) is low for $BENCH_IDLE_CONNS idle sessions"

log "building the proxy (release)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet -p consul-mysql-proxy -p consul-double
PROXY_BIN=$CARGO_TARGET_DIR/release/consul-mysql-proxy
DOUBLE_BIN=$CARGO_TARGET_DIR/release/consul-double

WORK=$(mktemp -d /tmp/cmp-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -CONT "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${FASTPATH_CG:-}" ] && { rmdir "$FASTPATH_CG" 2>/dev/null || true; }
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process we started (by pid) and forgets it.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

# Drops a reaped pid from the cleanup list.
forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (bounded) until something accepts TCP connections on 127.0.0.1:$1.
wait_port() {
  local port=$1 what=$2 i
  for i in $(seq 300); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), timeout=1).close()" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "$what did not listen on 127.0.0.1:$port within 30 s"
}

cpu_ticks() { # utime+stime of a process, in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
CLK_TCK=$(getconf CLK_TCK)
load1() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------------------------------------
# MariaDB

TEMPLATE=$WORK/template
BOOTSTRAP_SQL="
FLUSH PRIVILEGES;
DELETE FROM mysql.global_priv WHERE User = '';
DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '%');
FLUSH PRIVILEGES;
CREATE DATABASE sbtest;
CREATE DATABASE bench;
CREATE USER 'sbtest'@'%' IDENTIFIED BY 'sbtest';
GRANT ALL ON sbtest.* TO 'sbtest'@'%';
GRANT ALL ON bench.* TO 'sbtest'@'%';
CREATE USER 'repl'@'%' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
CREATE USER 'hacheck'@'%';
"

make_template() {
  [ -d "$TEMPLATE" ] && return 0
  log "mariadb-install-db (template datadir)"
  local build=$WORK/template.build
  mkdir -p "$build/data" "$build/tmp"
  chown -R mysql:mysql "$build"
  mariadb-install-db --no-defaults --datadir="$build/data" --tmpdir="$build/tmp" --user=mysql \
    --auth-root-authentication-method=socket --skip-test-db >"$build/install.log" 2>&1 ||
    die "mariadb-install-db failed: $(tail -20 "$build/install.log")"
  printf '%s' "$BOOTSTRAP_SQL" | mariadbd --no-defaults --bootstrap --datadir="$build/data" \
    --tmpdir="$build/tmp" --user=mysql --skip-log-bin --log-error="$build/bootstrap.log" \
    >>"$build/install.log" 2>&1 || die "mariadbd --bootstrap failed: $(tail -20 "$build/bootstrap.log")"
  mv "$build/data" "$TEMPLATE"
}

# start_mariadb NAME SERVER_ID EXTRA_CNF_LINES → sets DB_PORT, DB_PID, DB_SOCK
start_mariadb() {
  local name=$1 id=$2 extra=$3 dir=$WORK/$1
  make_template
  mkdir -p "$dir/tmp"
  cp -a "$TEMPLATE" "$dir/data"
  chown -R mysql:mysql "$dir"
  DB_PORT=$(free_port)
  DB_SOCK=$dir/mysqld.sock
  cat >"$dir/my.cnf" <<EOF
[mariadbd]
user = mysql
datadir = $dir/data
tmpdir = $dir/tmp
socket = $DB_SOCK
pid-file = $dir/mysqld.pid
log-error = $dir/error.log
port = $DB_PORT
bind-address = 127.0.0.1
server-id = $id
skip-name-resolve
max-connections = 6000
max-connect-errors = 4294967295
connect-timeout = 60
max-allowed-packet = 256M
innodb-buffer-pool-size = 512M
innodb-log-file-size = 256M
innodb-flush-log-at-trx-commit = 2
innodb-doublewrite = 0
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
$extra
EOF
  mariadbd --defaults-file="$dir/my.cnf" >"$dir/stderr.log" 2>&1 &
  DB_PID=$!
  PIDS+=("$DB_PID")
  local i
  for i in $(seq 600); do
    if mysql --protocol=tcp -h 127.0.0.1 -P "$DB_PORT" -usbtest -psbtest -e 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$DB_PID" 2>/dev/null || die "mariadbd $name exited: $(tail -20 "$dir/error.log")"
    sleep 0.1
  done
  die "mariadbd $name not ready within 60 s: $(tail -20 "$dir/error.log")"
}

# admin SQL as root over the unix socket
db_admin() { mysql --socket="$1" -uroot -N -B -e "$2"; }

# ---------------------------------------------------------------------------------------------
# proxies

# start_haproxy NAME CONFIG_BODY → sets HA_PORT, HA_PID
start_haproxy() {
  local name=$1 body=$2 cfg=$WORK/$1.cfg
  HA_PORT=$(free_port)
  cat >"$cfg" <<EOF
global
    nbthread 1
    maxconn 8000

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    maxconn 8000

listen mysql
    bind 127.0.0.1:$HA_PORT
$body
EOF
  haproxy -f "$cfg" -db >"$WORK/$name.log" 2>&1 &
  HA_PID=$!
  PIDS+=("$HA_PID")
  wait_port "$HA_PORT" "haproxy $name"
}

# start_ours NAME ARGS... → sets OURS_PORT, OURS_PID
start_ours() {
  local name=$1
  shift
  OURS_PORT=$(free_port)
  "$PROXY_BIN" --listen "127.0.0.1:$OURS_PORT" --max-connections 8000 --admin off --log-level warn "$@" \
    >"$WORK/$name.log" 2>&1 &
  OURS_PID=$!
  PIDS+=("$OURS_PID")
  wait_port "$OURS_PORT" "consul-mysql-proxy $name"
}

declare -A TPORT TPID
# The cgroup the `fastpath` target's clients run in (created on first use, removed on exit).
FASTPATH_CG=
make_fastpath_cgroup() {
  [ -n "$FASTPATH_CG" ] && return 0
  local root
  root=$(awk '$0 ~ / - cgroup2 / { print $5; exit }' /proc/self/mountinfo)
  [ -n "$root" ] || die "fastpath target: no cgroup v2 mount in /proc/self/mountinfo"
  FASTPATH_CG=$root/cmp-bench-$$
  mkdir "$FASTPATH_CG"
}
# in_target_cgroup TARGET CMD...: runs CMD as a client of TARGET — for `fastpath` inside its
# cgroup, so the kernel rewrites its connects to the proxy's address into the server's.
in_target_cgroup() {
  local t=$1
  shift
  if [ "$t" = fastpath ]; then
    sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$FASTPATH_CG" "$@"
  else
    "$@"
  fi
}
# Starts every target of BENCH_TARGETS in front of the MariaDB on $1 (fresh processes).
start_targets() {
  local db=$1 t
  for t in $BENCH_TARGETS; do
    case $t in
    direct) TPORT[$t]=$db TPID[$t]= ;;
    haproxy)
      start_haproxy haproxy "    server db 127.0.0.1:$db"
      TPORT[$t]=$HA_PORT TPID[$t]=$HA_PID
      ;;
    pump) start_ours "$t" --backend "127.0.0.1:$db" --relay pump --workers 1 ;;&
    copy) start_ours "$t" --backend "127.0.0.1:$db" --relay copy --workers 1 ;;&
    pump-w2) start_ours "$t" --backend "127.0.0.1:$db" --relay pump --workers 2 ;;&
    pump-idle) start_ours "$t" --backend "127.0.0.1:$db" --relay pump --on-failover idle ;;&
    fastpath)
      make_fastpath_cgroup
      start_ours "$t" --backend "127.0.0.1:$db" --fast-path connect --fast-path-cgroup "$FASTPATH_CG"
      ;;&
    pump | copy | pump-w2 | pump-idle | fastpath) TPORT[$t]=$OURS_PORT TPID[$t]=$OURS_PID ;;
    *) die "unknown target $t (known: direct haproxy pump copy pump-w2 pump-idle fastpath)" ;;
    esac
  done
}
stop_targets() {
  local t
  for t in $BENCH_TARGETS; do
    [ -n "${TPID[$t]:-}" ] && stop_pid "${TPID[$t]}"
    TPID[$t]=
  done
}

# ---------------------------------------------------------------------------------------------
# machine facts (kept next to the results so the report can be regenerated)

write_machine_facts() {
  {
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "nproc=$(nproc)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "mariadb=$(mariadbd --version | sed 's/.*Ver \([^ ]*\).*/\1/')"
    echo "haproxy=$(haproxy -v | head -1 | awk '{print $3}')"
    echo "sysbench=$(sysbench --version | awk '{print $2}')"
    echo "proxy=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "rustc=$(rustc --version | awk '{print $2}')"
    echo "bench_time=$BENCH_TIME"
    echo "bench_rounds=$BENCH_ROUNDS"
    echo "quick=${BENCH_QUICK:-0}"
  } >"$BENCH_OUT/machine.env"
}

# ---------------------------------------------------------------------------------------------
# sysbench

SB_COMMON=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=sbtest --mysql-password=sbtest
  --mysql-db=sbtest --tables=4 --table-size=10000)

# run_sysbench ROUND WORKLOAD THREADS TARGET SECONDS → appends one row to results.csv
run_sysbench() {
  local round=$1 wl=$2 th=$3 t=$4 secs=$5 out pid c0 c1 l0 l1 started
  out=$WORK/runs/r$round-$wl-$th-$t.txt
  pid=${TPID[$t]:-}
  l0=$(load1)
  started=$(date -u +%H:%M:%S)
  c0=0
  [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
  in_target_cgroup "$t" timeout $((secs + 60)) sysbench "$wl" "${SB_COMMON[@]}" --mysql-port="${TPORT[$t]}" \
    --threads="$th" --time="$secs" --report-interval=0 --percentile=95 run >"$out" 2>&1 ||
    log "sysbench $wl $th threads via $t failed (exit $?): $(tail -3 "$out" | tr '\n' ' ')"
  c1=0
  [ -n "$pid" ] && c1=$(cpu_ticks "$pid")
  l1=$(load1)
  awk -v round="$round" -v wl="$wl" -v th="$th" -v t="$t" -v secs="$secs" -v started="$started" \
    -v cpu="$(((c1 - c0)))" -v tck="$CLK_TCK" -v proxy="${pid:+1}" -v l0="$l0" -v l1="$l1" '
    /^ *transactions:/ { tps = $3; sub(/\(/, "", tps) }
    /^ *queries:/ { q = $2; qps = $3; sub(/\(/, "", qps) }
    /^ *ignored errors:/ { err = $3 }
    /^ *reconnects:/ { rec = $2 }
    /^ *total time:/ { tt = $3; sub(/s$/, "", tt) }
    /95th percentile:/ { p95 = $3 }
    END {
      cpu_s = proxy ? sprintf("%.2f", cpu / tck) : ""
      per10k = (proxy && q > 0) ? sprintf("%.4f", cpu / tck / q * 10000) : ""
      if (q == "") { q = 0; qps = 0; tps = 0; p95 = ""; err = ""; rec = "" }
      printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", round, wl, th, t, secs, qps, \
        tps, q, p95, err, rec, cpu_s, per10k, l0, l1, started
    }' "$out" >>"$BENCH_OUT/results.csv"
  tail -1 "$BENCH_OUT/results.csv" | awk -F, '{ printf "  %-18s %2s thr %-8s %9s qps  p95 %6s ms  cpu/10k %s  load %s→%s\n", $2, $3, $4, $6, $9, $13, $14, $15 }' >&2
}

phase_sysbench() {
  log "sysbench: MariaDB primary"
  start_mariadb sb 1 "skip-log-bin"
  local db=$DB_PORT wl th t round i cell
  start_targets "$db"
  log "sysbench prepare (4 tables x 10k rows)"
  timeout 300 sysbench oltp_read_write "${SB_COMMON[@]}" --mysql-port="$db" prepare >"$WORK/prepare.log" 2>&1 ||
    die "sysbench prepare failed: $(tail -5 "$WORK/prepare.log")"
  mkdir -p "$WORK/runs"
  echo "round,workload,threads,target,time_s,qps,tps,queries,p95_ms,errors,reconnects,proxy_cpu_s,cpu_s_per_10k_queries,load1_before,load1_after,started_utc" \
    >"$BENCH_OUT/results.csv"
  log "warm-up: 3 s of oltp_read_only at 8 threads through every target"
  for t in $BENCH_TARGETS; do
    in_target_cgroup "$t" timeout 60 sysbench oltp_read_only "${SB_COMMON[@]}" --mysql-port="${TPORT[$t]}" --threads=8 \
      --time=3 run >/dev/null 2>&1 || log "warm-up via $t failed"
  done
  local targets=($BENCH_TARGETS) n=0
  for round in $(seq "$BENCH_ROUNDS"); do
    log "round $round/$BENCH_ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    cell=0
    for wl in $BENCH_WORKLOADS; do
      for th in $BENCH_THREADS; do
        # Rotate the target order per cell and round, so no target always runs first.
        for i in $(seq 0 $((${#targets[@]} - 1))); do
          t=${targets[$(((i + cell + round) % ${#targets[@]}))]}
          run_sysbench "$round" "$wl" "$th" "$t" "$BENCH_TIME"
          n=$((n + 1))
        done
        cell=$((cell + 1))
      done
    done
  done
  log "sysbench: $n runs done"
  stop_targets
  stop_pid "$DB_PID"
}

# ---------------------------------------------------------------------------------------------
# connect: new connections per second (connect, one query, disconnect)

# The connection options alone: connect.lua has no tables, and sysbench refuses unknown options.
SB_CONNECT=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=sbtest --mysql-password=sbtest
  --mysql-db=sbtest)

# run_connect ROUND THREADS TARGET SECONDS → appends one row to connect.csv
run_connect() {
  local round=$1 th=$2 t=$3 secs=$4 out pid c0 c1 l0 l1 started
  out=$WORK/runs/connect-r$round-$th-$t.txt
  pid=${TPID[$t]:-}
  l0=$(load1)
  started=$(date -u +%H:%M:%S)
  c0=0
  [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
  in_target_cgroup "$t" timeout $((secs + 60)) sysbench "$HELPERS/connect.lua" "${SB_CONNECT[@]}" --mysql-port="${TPORT[$t]}" \
    --threads="$th" --time="$secs" --report-interval=0 --percentile=95 run >"$out" 2>&1 ||
    log "connect workload, $th threads via $t failed (exit $?): $(tail -3 "$out" | tr '\n' ' ')"
  c1=0
  [ -n "$pid" ] && c1=$(cpu_ticks "$pid")
  l1=$(load1)
  # One event = one connection (connect, SELECT 1, COM_QUIT), so sysbench's events are ours.
  awk -v round="$round" -v th="$th" -v t="$t" -v secs="$secs" -v started="$started" \
    -v cpu="$(((c1 - c0)))" -v tck="$CLK_TCK" -v proxy="${pid:+1}" -v l0="$l0" -v l1="$l1" '
    /^ *transactions:/ { n = $2; rate = $3; sub(/\(/, "", rate) }
    /^ *ignored errors:/ { err = $3 }
    /95th percentile:/ { p95 = $3 }
    END {
      if (n == "") { n = 0; rate = 0; p95 = ""; err = "" }
      cpu_s = proxy ? sprintf("%.2f", cpu / tck) : ""
      per10k = (proxy && n > 0) ? sprintf("%.4f", cpu / tck / n * 10000) : ""
      printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", round, th, t, secs, rate, n, p95, err, \
        cpu_s, per10k, l0, l1, started
    }' "$out" >>"$BENCH_OUT/connect.csv"
  tail -1 "$BENCH_OUT/connect.csv" | awk -F, '{ printf "  connect %2s thr %-8s %9s conn/s  p95 %6s ms  cpu/10k %s  load %s→%s\n", $2, $3, $5, $7, $10, $11, $12 }' >&2
}

phase_connect() {
  log "connect: new connections per second, $BENCH_CONNECT_THREADS thread(s)"
  start_mariadb conn 1 "skip-log-bin"
  local db=$DB_PORT th t round i cell=0
  start_targets "$db"
  mkdir -p "$WORK/runs"
  echo "round,threads,target,time_s,conns_per_s,connections,p95_ms,errors,proxy_cpu_s,cpu_s_per_10k_conns,load1_before,load1_after,started_utc" \
    >"$BENCH_OUT/connect.csv"
  log "warm-up: 3 s of the connect workload at 8 threads through every target"
  for t in $BENCH_TARGETS; do
    in_target_cgroup "$t" timeout 60 sysbench "$HELPERS/connect.lua" "${SB_CONNECT[@]}" --mysql-port="${TPORT[$t]}" --threads=8 \
      --time=3 run >/dev/null 2>&1 || log "warm-up via $t failed"
  done
  local targets=($BENCH_TARGETS)
  for round in $(seq "$BENCH_ROUNDS"); do
    log "connect round $round/$BENCH_ROUNDS (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for th in $BENCH_CONNECT_THREADS; do
      # Rotate the target order by one per cell (cell counts across rounds), so each target
      # takes every position in turn; with two targets the order alternates. (Adding the round
      # too, as the sysbench phase does within a round, would step by two per round here and
      # leave an even number of targets in the same order every round.)
      for i in $(seq 0 $((${#targets[@]} - 1))); do
        run_connect "$round" "$th" "${targets[$(((i + cell) % ${#targets[@]}))]}" "$BENCH_TIME"
      done
      cell=$((cell + 1))
    done
  done
  stop_targets
  stop_pid "$DB_PID"
}

# ---------------------------------------------------------------------------------------------
# idle sessions: RSS per connection

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

phase_idle() {
  log "idle: $BENCH_IDLE_CONNS authenticated idle sessions through each proxy"
  start_mariadb idle 1 "skip-log-bin"
  local db=$DB_PORT t
  start_targets "$db"
  echo "target,connections,rss_before_kib,rss_after_kib,kib_per_connection,open_seconds" >"$BENCH_OUT/idle.csv"
  for t in $BENCH_TARGETS; do
    case $t in direct | fastpath) continue ;; esac
    python3 "$HELPERS/idle.py" --port "${TPORT[$t]}" --pid "${TPID[$t]}" --name "$t" \
      --connections "$BENCH_IDLE_CONNS" --settle 3 --deadline 300 >>"$BENCH_OUT/idle.csv" ||
      log "idle run via $t failed"
    tail -1 "$BENCH_OUT/idle.csv" | sed 's/^/  /' >&2
    # let MariaDB reap the closed sessions before the next target
    sleep 3
  done
  stop_targets
  stop_pid "$DB_PID"
}

# ---------------------------------------------------------------------------------------------
# bulk: one big blob

phase_bulk() {
  log "bulk: ${BENCH_BULK_MB} MB blob INSERT + SELECT through each target ($BENCH_BULK_REPS reps)"
  start_mariadb bulk 1 "skip-log-bin"
  local db=$DB_PORT t spec=()
  start_targets "$db"
  for t in $BENCH_TARGETS; do
    [ "$t" = fastpath ] || spec+=("$t=${TPORT[$t]}:${TPID[$t]:-}")
  done
  python3 "$HELPERS/bulk.py" --mb "$BENCH_BULK_MB" --reps "$BENCH_BULK_REPS" --setup-port "$db" \
    --deadline 900 "${spec[@]}" >"$BENCH_OUT/bulk.csv" || log "bulk run failed"
  stop_targets
  stop_pid "$DB_PID"
}

# ---------------------------------------------------------------------------------------------
# failover

phase_failover() {
  log "failover: $BENCH_FAILOVER_ROUNDS round(s), $BENCH_FAILOVER_WRITERS writers per target"
  echo "round,target,writers,outage_s,outage_start_s,outage_end_s,outage_end_after_promotion_s,promoted_s,published_s,ok_writes,failed_statements,failed_connects,errors_by_kind,acked_lost,failed_writes" \
    >"$BENCH_OUT/failover.csv"
  local round
  for round in $(seq "$BENCH_FAILOVER_ROUNDS"); do
    failover_round "$round" || log "failover round $round failed"
  done
}

# The failover phase adds the fast path beside the relay and HAProxy when it is a target.
failover_with_fastpath() { [[ " $BENCH_TARGETS " == *" fastpath "* ]]; }

failover_round() {
  local round=$1 a b a_sock b_sock a_pid b_pid i
  local bin="log-bin = mysql-bin
binlog-format = ROW
log-slave-updates = ON
sync-binlog = 0"
  # Semi-sync (built into MariaDB): the primary acknowledges a commit once the replica has
  # received it; the long timeout keeps it from quietly falling back to asynchronous.
  local semi_a= semi_b=
  if [ "$BENCH_FAILOVER_SEMISYNC" = 1 ]; then
    semi_a="
rpl-semi-sync-master-enabled = ON
rpl-semi-sync-master-timeout = 30000"
    semi_b="
rpl-semi-sync-slave-enabled = ON"
  fi
  start_mariadb "fo$round-a" 1 "$bin$semi_a"
  a=$DB_PORT a_sock=$DB_SOCK a_pid=$DB_PID
  start_mariadb "fo$round-b" 2 "$bin$semi_b
read-only = ON"
  b=$DB_PORT b_sock=$DB_SOCK b_pid=$DB_PID
  db_admin "$a_sock" "CREATE TABLE bench.writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, src VARCHAR(16) NOT NULL, writer INT NOT NULL, seq INT NOT NULL, UNIQUE KEY (src, writer, seq)) ENGINE=InnoDB"
  db_admin "$b_sock" "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$a, MASTER_USER='repl', MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE"
  for i in $(seq 300); do
    [ "$(db_admin "$b_sock" "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='bench' AND table_name='writes'")" = 1 ] && break
    sleep 0.1
  done
  [ "$i" -lt 300 ] || die "replica did not replicate the table within 30 s"
  if [ "$BENCH_FAILOVER_SEMISYNC" = 1 ]; then
    for i in $(seq 100); do
      [ "$(db_admin "$a_sock" "SELECT VARIABLE_VALUE FROM information_schema.global_status WHERE VARIABLE_NAME='RPL_SEMI_SYNC_MASTER_STATUS'")" = ON ] && break
      sleep 0.1
    done
    [ "$i" -lt 100 ] || die "semi-synchronous replication did not become active within 10 s (BENCH_FAILOVER_SEMISYNC=0 runs without it)"
  fi

  # Consul double with the leader key, and the proxy following it.
  local consul double_pid
  "$DOUBLE_BIN" --http 127.0.0.1:0 --dns 127.0.0.1:0 >"$WORK/double-$round.out" 2>"$WORK/double-$round.log" &
  double_pid=$!
  PIDS+=("$double_pid")
  for i in $(seq 300); do
    consul=$(sed -n 's/.*http=\([^ ]*\).*/\1/p' "$WORK/double-$round.out")
    [ -n "$consul" ] && break
    sleep 0.1
  done
  [ -n "$consul" ] || die "consul-double did not start: $(tail -5 "$WORK/double-$round.log")"
  curl -sf -X PUT --data "127.0.0.1:$a" "http://$consul/v1/kv/service/mysql/leader" >/dev/null
  # Both of ours fence (verify_writable, as the README advises with the fast path); with its
  # monitor user the fast path also keeps a liveness session on the primary.
  local fence=(--verify-writable --monitor-user sbtest)
  export CONSUL_MYSQL_PROXY_MONITOR_PASSWORD=sbtest
  start_ours "fo$round-pump" --discovery consul-kv --kv-key service/mysql/leader \
    --consul "http://$consul" --relay pump --log-level info "${fence[@]}"
  local ours_port=$OURS_PORT ours_pid=$OURS_PID specs=()
  specs+=("ours=$ours_port")
  # The same proxy with the fast path: its writers' connects are rewritten to the primary, and
  # at the failover it destroys their sockets to the old one (on_failover = close, the default).
  local fp_pid=
  if failover_with_fastpath; then
    make_fastpath_cgroup
    start_ours "fo$round-fastpath" --discovery consul-kv --kv-key service/mysql/leader \
      --consul "http://$consul" --log-level info --fast-path connect --fast-path-cgroup "$FASTPATH_CG" \
      "${fence[@]}"
    fp_pid=$OURS_PID
    specs+=("fastpath=$OURS_PORT")
  fi
  start_haproxy "fo$round-haproxy" "    option mysql-check user hacheck
    server a 127.0.0.1:$a check inter 500ms fall 2 rise 1
    server b 127.0.0.1:$b check inter 500ms fall 2 rise 1 backup"
  specs+=("haproxy=$HA_PORT")
  local ha_pid=$HA_PID

  # The failover hook, run by the writers' driver at the kill time: kill -9 A, let B apply its
  # relay log, promote B, publish B in Consul. Prints one "event <name> <epoch>" line per step.
  cat >"$WORK/failover-$round.sh" <<EOF
set -euo pipefail
kill -KILL $a_pid
echo "event kill \$(date +%s.%N)"
# Apply everything the replica received before promoting (RESET SLAVE ALL drops unapplied relay logs).
mysql --socket=$b_sock -uroot -e "STOP SLAVE IO_THREAD"
io_pos=\$(mysql --socket=$b_sock -uroot -e "SHOW SLAVE STATUS\\G" | sed -n 's/^ *Gtid_IO_Pos: *//p')
mysql --socket=$b_sock -uroot -N -B -e "SELECT MASTER_GTID_WAIT('\$io_pos', 10)" >/dev/null
mysql --socket=$b_sock -uroot -e "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF"
echo "event promoted \$(date +%s.%N)"
curl -sf -X PUT --data "127.0.0.1:$b" "http://$consul/v1/kv/service/mysql/leader" >/dev/null
echo "event published \$(date +%s.%N)"
EOF
  # All writers run in the fast path's cgroup (when it is on): only connects to the fastpath
  # proxy's own address are rewritten, so the other targets are reached as usual.
  local client=direct
  [ -n "$fp_pid" ] && client=fastpath
  in_target_cgroup "$client" python3 "$HELPERS/failover.py" --round "$round" --writers "$BENCH_FAILOVER_WRITERS" \
    --warmup 5 --after 10 --hook "$WORK/failover-$round.sh" --verify-port "$b" \
    "${specs[@]}" >>"$BENCH_OUT/failover.csv"
  tail -"${#specs[@]}" "$BENCH_OUT/failover.csv" | sed 's/^/  /' >&2
  stop_pid "$ours_pid"
  [ -n "$fp_pid" ] && stop_pid "$fp_pid"
  stop_pid "$ha_pid"
  stop_pid "$double_pid"
  stop_pid "$b_pid"
  stop_pid "$a_pid"
}

# ---------------------------------------------------------------------------------------------
# profile: where the proxies spend their CPU

phase_profile() {
  if ! command -v perf >/dev/null 2>&1 || ! perf stat -e cpu-clock true >/dev/null 2>&1; then
    log "profile: perf unavailable; skipped"
    return 0
  fi
  log "profile: perf record -e cpu-clock during oltp_point_select, 8 threads, ${BENCH_TIME}s"
  start_mariadb prof 1 "skip-log-bin"
  local db=$DB_PORT t
  local saved=$BENCH_TARGETS
  BENCH_TARGETS="haproxy pump"
  start_targets "$db"
  timeout 300 sysbench oltp_read_write "${SB_COMMON[@]}" --mysql-port="$db" prepare >"$WORK/prepare-prof.log" 2>&1 ||
    die "sysbench prepare failed: $(tail -5 "$WORK/prepare-prof.log")"
  local perf_pid stat_pid c0 c1 q
  for t in $BENCH_TARGETS; do
    perf record -e cpu-clock -F 1999 -g -p "${TPID[$t]}" -o "$WORK/perf-$t.data" -- sleep "$((BENCH_TIME + 2))" \
      >"$WORK/perf-$t.log" 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
    perf stat -e raw_syscalls:sys_enter,context-switches -p "${TPID[$t]}" -o "$WORK/perfstat-$t.txt" \
      -- sleep "$((BENCH_TIME + 2))" >/dev/null 2>&1 &
    stat_pid=$!
    PIDS+=("$stat_pid")
    sleep 1
    c0=$(cpu_ticks "${TPID[$t]}")
    timeout $((BENCH_TIME + 60)) sysbench oltp_point_select "${SB_COMMON[@]}" --mysql-port="${TPORT[$t]}" \
      --threads=8 --time="$BENCH_TIME" run >"$WORK/prof-sb-$t.txt" 2>&1 || log "profile sysbench via $t failed"
    c1=$(cpu_ticks "${TPID[$t]}")
    wait "$perf_pid" "$stat_pid" 2>/dev/null || true
    forget_pid "$perf_pid"
    forget_pid "$stat_pid"
    q=$(awk '/^ *queries:/ { print $2 }' "$WORK/prof-sb-$t.txt")
    # syscall mix per query: strace -c over a separate 5 s run (strace slows the proxy down a lot,
    # so only the counts per query mean something, not the times)
    timeout 30 strace -c -f -p "${TPID[$t]}" -o "$WORK/strace-$t.txt" &
    local strace_pid=$!
    PIDS+=("$strace_pid")
    sleep 1
    timeout 60 sysbench oltp_point_select "${SB_COMMON[@]}" --mysql-port="${TPORT[$t]}" \
      --threads=8 --time=5 run >"$WORK/prof-strace-sb-$t.txt" 2>&1 || log "strace sysbench via $t failed"
    kill -INT "$strace_pid" 2>/dev/null || true
    wait "$strace_pid" 2>/dev/null || true
    forget_pid "$strace_pid"
    {
      echo "# target $t: oltp_point_select, 8 threads, ${BENCH_TIME}s, under perf record -e cpu-clock -g"
      echo "# queries $q; proxy CPU $(((c1 - c0)))/$CLK_TCK s" \
        "= $(awk -v c=$((c1 - c0)) -v t="$CLK_TCK" -v q="${q:-0}" 'BEGIN { if (q > 0) printf "%.3f", c / t / q * 10000 }') s per 10k queries"
      echo "# perf stat over the same run (syscalls, context switches of the proxy process):"
      grep -E 'raw_syscalls|context-switches' "$WORK/perfstat-$t.txt" |
        awk -v q="${q:-0}" '{ gsub(",", "", $1); printf "#   %-28s %12s  = %.2f per query\n", $2, $1, (q > 0 ? $1 / q : 0) }' || true
      echo "# syscall mix (strace -c -f over a separate 5 s run, $(awk '/^ *queries:/ { print $2 }' "$WORK/prof-strace-sb-$t.txt") queries):"
      sed 's/^/#   /' "$WORK/strace-$t.txt" | head -14 || true
      echo "# self time by shared object"
      perf report -i "$WORK/perf-$t.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed 's/ *- *- *$//' | head -10 || true
      echo "# self time by symbol (top 40)"
      perf report -i "$WORK/perf-$t.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed 's/ *- *- *$//' | head -40 || true
    } >"$BENCH_OUT/profile-$t.txt"
    log "  $BENCH_OUT/profile-$t.txt"
  done
  stop_targets
  BENCH_TARGETS=$saved
  stop_pid "$DB_PID"
}

# ---------------------------------------------------------------------------------------------

write_machine_facts
log "mode $MODE; output $BENCH_OUT; targets: $BENCH_TARGETS; ${BENCH_TIME}s x $BENCH_ROUNDS rounds"
case $MODE in
all)
  phase_sysbench
  phase_connect
  phase_idle
  phase_bulk
  phase_failover
  phase_profile
  ;;
profile) phase_profile ;;
sysbench) phase_sysbench ;;
connect) phase_connect ;;
idle) phase_idle ;;
bulk) phase_bulk ;;
failover) phase_failover ;;
esac
python3 "$HELPERS/report.py" "$BENCH_OUT"
log "done: $BENCH_OUT/results.md"
