"""One big value through each target: `REPLACE INTO bench.blobs` of an N MB blob, then
`SELECT` it back, timed on the client, interleaved over the targets for several repetitions.

Targets are given as name=port:pid (pid empty for direct). Prints CSV:
rep,target,op,mb,seconds,mb_per_s,proxy_cpu_s
"""

import argparse
import os
import time

from minimysql import Connection

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    if not pid:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--setup-port", type=int, required=True)
    ap.add_argument("--deadline", type=float, default=900.0)
    ap.add_argument("targets", nargs="+", help="name=port:pid")
    a = ap.parse_args()
    deadline = time.monotonic() + a.deadline
    targets = []
    for spec in a.targets:
        name, rest = spec.split("=", 1)
        port, pid = rest.split(":", 1)
        targets.append((name, int(port), int(pid) if pid else None))

    size = a.mb * 1_000_000
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    payload = (pattern * (size // len(pattern) + 1))[:size]
    insert = b"REPLACE INTO bench.blobs VALUES (1, '" + payload + b"')"
    select = "SELECT b FROM bench.blobs WHERE id = 1"

    setup = Connection("127.0.0.1", a.setup_port, "sbtest", "sbtest", timeout=60)
    setup.query("CREATE TABLE IF NOT EXISTS bench.blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB")
    setup.query(insert)  # warm: the table and the redo log have seen one blob
    setup.close()

    print("rep,target,op,mb,seconds,mb_per_s,proxy_cpu_s", flush=True)
    for rep in range(1, a.reps + 1):
        order = targets[rep % len(targets):] + targets[: rep % len(targets)]
        for name, port, pid in order:
            if time.monotonic() > deadline:
                raise SystemExit("bulk: deadline reached")
            conn = Connection("127.0.0.1", port, "sbtest", "sbtest", timeout=120)
            for op, sql in (("insert", insert), ("select", select)):
                c0 = cpu_s(pid)
                t0 = time.monotonic()
                _, got = conn.query(sql)
                secs = time.monotonic() - t0
                c1 = cpu_s(pid)
                if op == "select" and got < size:
                    raise SystemExit(f"bulk: {name} returned {got} bytes, expected {size}")
                cpu = f"{c1 - c0:.2f}" if pid else ""
                print(f"{rep},{name},{op},{a.mb},{secs:.3f},{a.mb / secs:.1f},{cpu}", flush=True)
            conn.close()


if __name__ == "__main__":
    main()
