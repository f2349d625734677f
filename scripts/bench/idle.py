"""RSS per idle proxied MySQL session.

Opens N authenticated sessions (handshake + one `SELECT 1`, as a connection pool leaves them)
through a proxy, waits, and prints one CSV row:
target,connections,rss_before_kib,rss_after_kib,kib_per_connection,open_seconds
RSS is the proxy process's VmRSS from /proc/<pid>/status before and after.
"""

import argparse
import sys
import time

from minimysql import Connection


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole run")
    a = ap.parse_args()
    deadline = time.monotonic() + a.deadline
    before = rss_kib(a.pid)
    conns = []
    t0 = time.monotonic()
    try:
        for i in range(a.connections):
            if time.monotonic() > deadline:
                raise RuntimeError(f"deadline reached after {i} sessions")
            c = Connection("127.0.0.1", a.port, "sbtest", "sbtest", db="sbtest", timeout=30)
            c.query("SELECT 1")
            conns.append(c)
        opened = time.monotonic() - t0
        time.sleep(a.settle)
        after = rss_kib(a.pid)
        # every session still works
        for c in conns[:: max(1, len(conns) // 50)]:
            c.query("SELECT 1")
    finally:
        for c in conns:
            c.close()
    per = (after - before) / len(conns)
    print(f"{a.name},{len(conns)},{before},{after},{per:.2f},{opened:.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
