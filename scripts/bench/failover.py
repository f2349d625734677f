"""Writers through several targets at once while a failover hook kills the primary.

For each target (name=port), W writer threads each keep one MySQL session and insert rows
(src, writer, seq) as fast as the server acknowledges them. On a failed statement the writer
records the error, and on a lost connection it reconnects (20 ms pause between failed
attempts, like a pool's retry; every connect and statement is bounded by 10 s, a usual connector
timeout), so "outage" is what an application with a retrying pool sees.

Timeline: warm-up, then the hook runs (it prints `event <name> <epoch>` lines: kill,
promoted, published), then `--after` seconds more. Every timestamp is time.time() on this
machine (the hook uses `date +%s.%N`, the same clock).

Per target (one CSV row each; times in seconds relative to the kill):
* outage_s: the longest gap between two successive successful writes (across all of the
  target's writers) from 1 s before the kill to the end — the write unavailability;
  outage_start_s / outage_end_s: the last success before it and the first after it;
  outage_end_after_promotion_s: that first success, relative to the promotion (read_only=OFF);
* promoted_s / published_s: when the hook had promoted the replica and written the Consul key;
* failed_statements / failed_connects / errors_by_kind: what the clients saw (every attempt:
  a writer retries a failed write at its own 20 ms pace, so these grow with how fast its
  reconnects are); failed_writes: the writes that failed at least once (each retried until
  acknowledged), the count the proxy decides;
* acked_lost: acknowledged inserts missing on the promoted server afterwards (asynchronous
  replication loses what the old primary acknowledged but had not shipped; not the proxy).
"""

import argparse
import collections
import subprocess
import sys
import threading
import time

from minimysql import Connection, ServerError


def classify(e):
    if isinstance(e, ServerError):
        return f"ERR{e.code}"
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, BrokenPipeError):
        return "broken-pipe"
    if isinstance(e, ConnectionError):
        return "closed"
    return type(e).__name__


class Writer(threading.Thread):
    def __init__(self, target, port, index, stop):
        super().__init__(daemon=True)
        self.target, self.port, self.index, self.stop = target, port, index, stop
        self.ok = []  # (time, seq)
        self.failed_statements = 0
        self.failed_connects = 0
        self.kinds = collections.Counter()
        self.failed_seqs = set()  # the writes (seq) that failed at least once

    def run(self):
        conn, seq = None, 0
        while not self.stop.is_set():
            if conn is None:
                try:
                    conn = Connection("127.0.0.1", self.port, "sbtest", "sbtest", db="bench", timeout=10)
                except Exception as e:  # noqa: BLE001 - every failure is data here
                    self.failed_connects += 1
                    self.failed_seqs.add(seq)
                    self.kinds["connect:" + classify(e)] += 1
                    time.sleep(0.02)
                    continue
            try:
                conn.query(
                    f"INSERT INTO writes (src, writer, seq) VALUES ('{self.target}', {self.index}, {seq})"
                )
                self.ok.append((time.time(), seq))
                seq += 1
            except ServerError as e:
                self.failed_statements += 1
                self.failed_seqs.add(seq)
                self.kinds[classify(e)] += 1
                if e.code == 1062:
                    # The previous attempt committed but its answer was lost with the
                    # connection: the write is there, so go on at once, as an application
                    # that learns its write succeeded does (no retry pause).
                    seq += 1
                    continue
                time.sleep(0.02)
            except Exception as e:  # noqa: BLE001
                self.failed_statements += 1
                self.failed_seqs.add(seq)
                self.kinds[classify(e)] += 1
                conn.close()
                conn = None
                time.sleep(0.02)
        if conn is not None:
            conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--round", type=int, default=1)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--after", type=float, default=10)
    ap.add_argument("--hook", required=True, help="bash script performing the failover")
    ap.add_argument("--verify-port", type=int, required=True, help="the promoted server")
    ap.add_argument("targets", nargs="+", help="name=port")
    a = ap.parse_args()

    stop = threading.Event()
    writers = {}
    for spec in a.targets:
        name, port = spec.split("=", 1)
        writers[name] = [Writer(name, int(port), i, stop) for i in range(a.writers)]
    for ws in writers.values():
        for w in ws:
            w.start()
    time.sleep(a.warmup)
    hook = subprocess.run(["bash", a.hook], capture_output=True, text=True, timeout=120)
    events = {}
    for line in hook.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "event":
            events[parts[1]] = float(parts[2])
    if hook.returncode != 0 or "kill" not in events:
        print(f"failover hook failed ({hook.returncode}): {hook.stderr}", file=sys.stderr)
    time.sleep(a.after)
    stop.set()
    for ws in writers.values():
        for w in ws:
            w.join(timeout=10)
    print(
        f"  events: promoted +{events.get('promoted', float('nan')) - events.get('kill', 0):.3f} s, "
        f"published +{events.get('published', float('nan')) - events.get('kill', 0):.3f} s after the kill",
        file=sys.stderr,
    )

    kill = events.get("kill", float("nan"))
    promoted = events.get("promoted", float("nan"))
    published = events.get("published", float("nan"))
    verify = Connection("127.0.0.1", a.verify_port, "sbtest", "sbtest", db="bench", timeout=30)
    for name, ws in writers.items():
        times = sorted(t for w in ws for t, _ in w.ok)
        window = [t for t in times if t >= kill - 1.0]
        gaps = [(b - a_, a_, b) for a_, b in zip(window, window[1:])]
        outage, start, end = max(gaps, default=(float("nan"),) * 3)
        kinds = collections.Counter()
        for w in ws:
            kinds.update(w.kinds)
        present = {
            (int(r[0]), int(r[1]))
            for r in verify.query_rows(f"SELECT writer, seq FROM writes WHERE src = '{name}'")
        }
        acked = {(w.index, s) for w in ws for _, s in w.ok}
        lost = len(acked - present)
        print(
            f"{a.round},{name},{a.writers},{outage:.3f},{start - kill:.3f},{end - kill:.3f},"
            f"{end - promoted:.3f},{promoted - kill:.3f},{published - kill:.3f},{len(times)},"
            f"{sum(w.failed_statements for w in ws)},{sum(w.failed_connects for w in ws)},"
            f"{';'.join(f'{k}:{v}' for k, v in sorted(kinds.items()))},{lost},"
            f"{sum(len(w.failed_seqs) for w in ws)}",
            flush=True,
        )
        if lost:
            missing = acked - present
            when = sorted(t - kill for w in ws for t, s_ in w.ok if (w.index, s_) in missing)
            print(f"  {name}: {lost} acked rows lost, acked at {when[0]:+.3f}..{when[-1]:+.3f} s", file=sys.stderr)
    verify.close()


if __name__ == "__main__":
    main()
