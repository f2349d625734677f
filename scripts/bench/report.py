"""Turns the harness CSVs into docs/perf/results.md and docs/perf/chart.svg.

    python3 scripts/bench/report.py DIR            # DIR/results.md and DIR/chart.svg
    python3 scripts/bench/report.py --chart CSV    # only the chart of a sysbench CSV, to stdout

Reads DIR/machine.env and whichever of results.csv (sysbench), connect.csv (new connections
per second), idle.csv, bulk.csv and failover.csv exist. Medians over rounds; ranges are min–max; ratios "vs X" are the median of
the per-round ratios (each round runs the targets back to back, so a ratio within a round is
less exposed to a neighbour's build than a ratio of medians). Standard library only.
"""

import csv
import math
import operator
import os
import statistics
import sys
from collections import OrderedDict, defaultdict

TARGET_ORDER = ["direct", "haproxy", "pump", "copy", "pump-w2", "pump-idle", "fastpath"]
LABEL = {
    "direct": "direct",
    "haproxy": "HAProxy",
    "pump": "ours (pump)",
    "copy": "ours (copy)",
    "pump-w2": "ours (pump, 2 workers)",
    "pump-idle": "ours (pump, on_failover idle)",
    "fastpath": "ours (fastpath)",
}
# One hue per target (Okabe–Ito, tells apart with the common colour-vision deficiencies);
# targets not listed here take the spare colours in turn.
COLOR = {
    "direct": "#999999",
    "haproxy": "#e69f00",
    "pump": "#0072b2",
    "copy": "#009e73",
    "pump-w2": "#cc79a7",
    "fastpath": "#d55e00",
}
SPARE_COLORS = ["#56b4e9", "#f0e442", "#000000", "#7f3c8d"]
TARGET_DOC = {
    "direct": "direct (MariaDB itself)",
    "haproxy": "HAProxy `mode tcp`, `nbthread 1`",
    "pump": "ours `--relay pump`, 1 worker (the defaults)",
    "copy": "ours `--relay copy`, 1 worker",
    "pump-w2": "ours `--relay pump --workers 2`",
    "pump-idle": "ours `--relay pump --on-failover idle` (idle detector on)",
    "fastpath": "ours, fast path",
}
# Our relays whose ratios to direct and HAProxy the chart prints under every cell.
CHART_RATIO_TARGETS = ["pump", "fastpath"]
SHORT_WL = {"oltp_point_select": "point_select", "oltp_read_only": "read_only", "oltp_read_write": "read_write"}
# The targets of the issue (see README "Performance").
CPU_TARGET = 0.8
RSS_TARGET = 0.8
BULK_TARGET = 0.8
FASTPATH_TARGET = 0.95  # fast path ÷ direct, qps and new connections per second
# The fast path's failover outage counts as "no worse" within this of the relay's: both wait for
# the same Consul answer, and one writer's 20 ms retry pause is the resolution of the measure.
FASTPATH_OUTAGE_SLACK_S = 0.05


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_env(path):
    env = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    env[k] = v
    return env


def fnum(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rng(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def fmt_ratio(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = statistics.median(xs)
    lo, hi = min(xs), max(xs)
    if len(xs) == 1:
        return f"{m:.2f}"
    return f"{m:.2f} ({lo:.2f}–{hi:.2f})"


def ordered_targets(present):
    return [t for t in TARGET_ORDER if t in present] + sorted(set(present) - set(TARGET_ORDER))


# ---------------------------------------------------------------------------------------------
# sysbench


def index_rows(rows):
    """(cells in CSV order, {(workload, threads): {target: {round: row}}}, targets in order)."""
    cells = OrderedDict()
    by = defaultdict(dict)
    for r in rows:
        key = (r["workload"], int(r["threads"]))
        cells[key] = True
        by[key].setdefault(r["target"], {})[int(r["round"])] = r
    return list(cells), by, ordered_targets({r["target"] for r in rows})


def series(by, key, t, field):
    """{round: value of `field`} of target `t` in cell `key`."""
    return {rd: fnum(row[field]) for rd, row in by[key].get(t, {}).items()}


def round_ratios(by, key, t, base, field="qps"):
    """Per-round ratios t ÷ base of `field` in cell `key` (rounds where both ran)."""
    a, b = series(by, key, t, field), series(by, key, base, field)
    return [a[rd] / b[rd] for rd in a if rd in b and a[rd] and b[rd]]


def sysbench_tables(rows):
    cells, by, targets = index_rows(rows)
    out = []
    verdict = {}

    def ratios(key, t, base, field="qps"):
        return round_ratios(by, key, t, base, field)

    # qps
    out.append("### Throughput: queries per second (median, [min–max] over rounds)\n")
    out.append("| workload | threads | " + " | ".join(LABEL.get(t, t) for t in targets) + " |")
    out.append("|---|---:|" + "---:|" * len(targets))
    for key in cells:
        cols = []
        for t in targets:
            q = list(series(by, key, t, "qps").values())
            lo, hi = rng(q)
            cols.append((f"{fmt(med(q))} [{fmt(lo)}–{fmt(hi)}]" if len(q) > 1 else fmt(med(q))) if q else "–")
        out.append(f"| {SHORT_WL.get(key[0], key[0])} | {key[1]} | " + " | ".join(cols) + " |")
    out.append("")

    # ratios
    rel = [t for t in targets if t != "direct"]
    if "direct" in targets or "haproxy" in targets:
        out.append("### Ratios (median of per-round ratios, (min–max))\n")
        heads, specs = [], []
        for t in rel:
            if "direct" in targets:
                heads.append(f"{LABEL[t]} ÷ direct")
                specs.append((t, "direct"))
        for t in rel:
            if t != "haproxy" and "haproxy" in targets:
                heads.append(f"{LABEL[t]} ÷ HAProxy")
                specs.append((t, "haproxy"))
        out.append("| workload | threads | " + " | ".join(heads) + " |")
        out.append("|---|---:|" + "---:|" * len(heads))
        for key in cells:
            out.append(
                f"| {SHORT_WL.get(key[0], key[0])} | {key[1]} | "
                + " | ".join(fmt_ratio(ratios(key, t, b)) for t, b in specs)
                + " |"
            )
        out.append("")

    # latency
    out.append("### p95 latency, ms (median over rounds)\n")
    out.append("| workload | threads | " + " | ".join(LABEL.get(t, t) for t in targets) + " |")
    out.append("|---|---:|" + "---:|" * len(targets))
    for key in cells:
        out.append(
            f"| {SHORT_WL.get(key[0], key[0])} | {key[1]} | "
            + " | ".join(fmt(med(list(series(by, key, t, "p95_ms").values())), 2) for t in targets)
            + " |"
        )
    out.append("")

    # CPU
    proxies = [t for t in targets if t != "direct"]
    if proxies:
        out.append("### Proxy CPU seconds per 10k queries (median, [min–max]; utime+stime of the proxy process)\n")
        heads = [LABEL[t] for t in proxies]
        cmp = [t for t in proxies if t != "haproxy"] if "haproxy" in proxies else []
        heads += [f"{LABEL[t]} ÷ HAProxy" for t in cmp]
        out.append("| workload | threads | " + " | ".join(heads) + " |")
        out.append("|---|---:|" + "---:|" * len(heads))
        for key in cells:
            cols = []
            for t in proxies:
                c = list(series(by, key, t, "cpu_s_per_10k_queries").values())
                lo, hi = rng(c)
                cols.append(
                    (f"{fmt(med(c), 3)} [{fmt(lo, 3)}–{fmt(hi, 3)}]" if len(c) > 1 else fmt(med(c), 3)) if c else "–"
                )
            cols += [fmt_ratio(ratios(key, t, "haproxy", "cpu_s_per_10k_queries")) for t in cmp]
            out.append(f"| {SHORT_WL.get(key[0], key[0])} | {key[1]} | " + " | ".join(cols) + " |")
        out.append("")

    # errors and noise
    errs = defaultdict(int)
    for r in rows:
        errs[r["target"]] += int(fnum(r["errors"]) or 0)
    loads = [fnum(r["load1_before"]) for r in rows] + [fnum(r["load1_after"]) for r in rows]
    lo, hi = rng(loads)
    out.append(
        "Errors counted by sysbench (ignored deadlocks etc., all runs): "
        + ", ".join(f"{LABEL.get(t, t)} {errs[t]}" for t in targets)
        + f". 1-minute load average around the runs: {fmt(lo, 2)}–{fmt(hi, 2)} "
        "(2 cores; sysbench, MariaDB and the proxy share them)."
    )
    out.append("")

    # verdicts for ours (pump, 1 worker)
    if "pump" in targets and "haproxy" in targets:
        below = []
        cpu_ratios = []
        qps_ratios = []
        for key in cells:
            # the same statistic as the ratio table: median of the per-round ratios
            qr = med(ratios(key, "pump", "haproxy"))
            if qr is not None:
                qps_ratios.append(qr)
                if qr < 1.0:
                    below.append(f"{SHORT_WL.get(key[0], key[0])}/{key[1]} ({qr:.2f}×)")
            cr = med(ratios(key, "pump", "haproxy", "cpu_s_per_10k_queries"))
            if cr is not None:
                cpu_ratios.append((key, cr))
        span = f"{min(qps_ratios):.2f}–{max(qps_ratios):.2f}× HAProxy per cell" if qps_ratios else ""
        verdict["qps"] = (
            not below,
            f"{span}; " + ("at or above in every cell" if not below else "below in " + ", ".join(below)),
        )
        worst = max(cpu_ratios, key=lambda kc: kc[1]) if cpu_ratios else None
        if worst:
            allok = all(c <= CPU_TARGET for _, c in cpu_ratios)
            lo_c = min(c for _, c in cpu_ratios)
            verdict["cpu"] = (
                allok,
                f"{lo_c:.2f}–{worst[1]:.2f}× HAProxy per cell (worst {SHORT_WL.get(worst[0][0], worst[0][0])}/{worst[0][1]})",
            )
    # the fast path's target (issue 16): ≥ 0.95× direct in every cell
    if "fastpath" in targets and "direct" in targets:
        fp = [(key, med(ratios(key, "fastpath", "direct"))) for key in cells]
        fp = [(key, r) for key, r in fp if r is not None]
        if fp:
            below = [f"{SHORT_WL.get(k[0], k[0])}/{k[1]} ({r:.2f}×)" for k, r in fp if r < FASTPATH_TARGET]
            span = f"{min(r for _, r in fp):.2f}–{max(r for _, r in fp):.2f}× direct per cell"
            verdict["fastpath_qps"] = (
                not below,
                f"{span}; " + (f"≥ {FASTPATH_TARGET} in every cell" if not below else "below in " + ", ".join(below)),
            )
    return out, verdict, cells, by, targets


# ---------------------------------------------------------------------------------------------
# other phases


def idle_table(rows):
    if not rows:
        return [], {}
    out = ["### Idle sessions: RSS growth of the proxy process\n"]
    out.append("| target | sessions | RSS before (KiB) | RSS after (KiB) | KiB per session |")
    out.append("|---|---:|---:|---:|---:|")
    per = {}
    for r in sorted(rows, key=lambda r: TARGET_ORDER.index(r["target"]) if r["target"] in TARGET_ORDER else 99):
        per[r["target"]] = fnum(r["kib_per_connection"])
        out.append(
            f"| {LABEL.get(r['target'], r['target'])} | {r['connections']} | {r['rss_before_kib']} | "
            f"{r['rss_after_kib']} | {fnum(r['kib_per_connection']):.2f} |"
        )
    out.append("")
    verdict = {}
    if "pump" in per and "haproxy" in per and per["haproxy"]:
        ratio = per["pump"] / per["haproxy"]
        verdict["rss"] = (ratio <= RSS_TARGET, f"{per['pump']:.2f} vs {per['haproxy']:.2f} KiB = {ratio:.2f}× HAProxy")
    return out, verdict


def bulk_table(rows):
    if not rows:
        return [], {}
    by = defaultdict(lambda: defaultdict(list))
    cpu = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[r["op"]][r["target"]].append(fnum(r["mb_per_s"]))
        cpu[r["op"]][r["target"]].append(fnum(r["proxy_cpu_s"]))
    targets = ordered_targets({r["target"] for r in rows})
    mb = rows[0]["mb"]
    out = [f"### Bulk: one {mb} MB blob, MB/s (median, [min–max] over {max(len(v) for v in by['select'].values())} reps; proxy CPU s)\n"]
    out.append("| operation | " + " | ".join(LABEL.get(t, t) for t in targets) + " |")
    out.append("|---|" + "---:|" * len(targets))
    verdict = {}
    notes = []
    for op in ("insert", "select"):
        cols = []
        for t in targets:
            xs = by[op].get(t, [])
            lo, hi = rng(xs)
            c = med(cpu[op].get(t, []))
            ratio = ""
            if t != "direct" and med(by[op].get("direct", [])):
                ratio = f", {med(xs) / med(by[op]['direct']):.2f}× direct"
            cols.append(
                f"{fmt(med(xs))} [{fmt(lo)}–{fmt(hi)}]{ratio}" + (f", {c:.2f} s CPU" if c is not None else "")
            )
        out.append(f"| {op} | " + " | ".join(cols) + " |")
        d, p = med(by[op].get("direct", [])), med(by[op].get("pump", []))
        if d and p:
            notes.append((op, p / d))
    out.append("")
    if notes:
        verdict["bulk"] = (
            all(r >= BULK_TARGET for _, r in notes),
            ", ".join(f"{op} {r:.2f}× direct" for op, r in notes),
        )
    return out, verdict


def failover_table(rows):
    if not rows:
        return [], {}
    out = ["### Failover: write unavailability (primary killed with SIGKILL, replica promoted)\n"]
    out.append(
        "| round | target | write outage (s) | outage from → to (s after kill) | first write after promotion (s) "
        "| writes ok | writes that failed | failed statements | failed connects | errors by kind | acked rows lost |"
    )
    out.append("|---:|---|---:|---|---:|---:|---:|---:|---:|---|---:|")
    outages = defaultdict(list)
    for r in rows:
        name = {
            "ours": "ours (pump, Consul KV)",
            "fastpath": "ours (fast path, Consul KV)",
            "haproxy": "HAProxy (mysql-check)",
        }.get(r["target"], r["target"])
        outages[r["target"]].append(fnum(r["outage_s"]))
        out.append(
            f"| {r['round']} | {name} | {r['outage_s']} | {r['outage_start_s']} → {r['outage_end_s']} | "
            f"{r['outage_end_after_promotion_s']} | {r['ok_writes']} | {r.get('failed_writes') or '–'} | "
            f"{r['failed_statements']} | "
            f"{r['failed_connects']} | {r['errors_by_kind'].replace(';', ', ')} | {r['acked_lost']} |"
        )
    proms = [fnum(r["promoted_s"]) for r in rows]
    pubs = [fnum(r["published_s"]) for r in rows]
    if proms and pubs:
        out.append("")
        out.append(
            f"The failover hook promoted the replica {fmt(min(proms), 3)}–{fmt(max(proms), 3)} s after the kill "
            f"(relay log applied, `STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=OFF`) and wrote the Consul "
            f"key {fmt(min(pubs), 3)}–{fmt(max(pubs), 3)} s after it."
        )
    out.append("")
    verdict = {}
    if outages.get("ours") and outages.get("haproxy"):
        o, h = med(outages["ours"]), med(outages["haproxy"])
        verdict["failover"] = (o < h, f"median outage {o:.3f} s vs HAProxy {h:.3f} s")
    if outages.get("ours") and outages.get("fastpath"):
        # "no worse than the relay's": outage within a failover round trip of it, nothing lost
        o, f = med(outages["ours"]), med(outages["fastpath"])
        lost = sum(int(fnum(r["acked_lost"]) or 0) for r in rows if r["target"] == "fastpath")
        relay_lost = sum(int(fnum(r["acked_lost"]) or 0) for r in rows if r["target"] == "ours")
        # Writes that failed at least once (each writer retries one until it is acknowledged);
        # older CSVs have no such column: then only outage and losses are compared.
        failed = [fnum(r.get("failed_writes")) for r in rows if r["target"] == "fastpath"]
        relay_failed = [fnum(r.get("failed_writes")) for r in rows if r["target"] == "ours"]
        known = all(x is not None for x in failed + relay_failed)
        f_w, r_w = (sum(failed), sum(relay_failed)) if known else (None, None)
        verdict["fastpath_failover"] = (
            f <= o + FASTPATH_OUTAGE_SLACK_S and lost <= relay_lost and (not known or f_w <= r_w),
            f"median outage {f:.3f} s vs the relay's {o:.3f} s; acked rows lost {lost} (relay {relay_lost})"
            + (f"; writes that failed {f_w:.0f} (relay {r_w:.0f})" if known else ""),
        )
    return out, verdict


def connect_rows(rows):
    """The connect workload's rows in the sysbench rows' shape (one event = one connection), so
    the same indexing, ratios and chart code serve both."""
    return [
        {
            "round": r["round"],
            "workload": "connect",
            "threads": r["threads"],
            "target": r["target"],
            "qps": r["conns_per_s"],
            "cpu_s_per_10k_queries": r["cpu_s_per_10k_conns"],
            "p95_ms": r["p95_ms"],
        }
        for r in rows
    ]


def connect_table(rows):
    if not rows:
        return [], {}
    cells, by, targets = index_rows(connect_rows(rows))
    secs = rows[0]["time_s"]
    rounds = len({r["round"] for r in rows})
    out = [
        f"### New connections per second (connect, `SELECT 1`, disconnect; {rounds} interleaved "
        f"round(s) of {secs} s; median, [min–max])\n"
    ]
    proxies = [t for t in targets if t != "direct"]
    heads = [LABEL.get(t, t) for t in targets]
    specs = [(t, "direct") for t in proxies if "direct" in targets]
    specs += [(t, "haproxy") for t in proxies if t != "haproxy" and "haproxy" in targets]
    heads += [f"{LABEL.get(t, t)} ÷ {LABEL.get(b, b)}" for t, b in specs]
    heads += [f"CPU s/10k connections, {LABEL.get(t, t)}" for t in proxies]
    out.append("| threads | " + " | ".join(heads) + " |")
    out.append("|---:|" + "---:|" * len(heads))
    verdict = {}
    for key in cells:
        cols = []
        for t in targets:
            q = list(series(by, key, t, "qps").values())
            lo, hi = rng(q)
            cols.append(f"{fmt(med(q))} [{fmt(lo)}–{fmt(hi)}]" if len(q) > 1 else fmt(med(q)))
        cols += [fmt_ratio(round_ratios(by, key, t, b)) for t, b in specs]
        cols += [fmt(med(list(series(by, key, t, "cpu_s_per_10k_queries").values())), 3) for t in proxies]
        out.append(f"| {key[1]} | " + " | ".join(cols) + " |")
        for name, t, base, goal in (
            ("connect", "pump", "haproxy", 1.0),
            ("fastpath_connect", "fastpath", "direct", FASTPATH_TARGET),
        ):
            r = med(round_ratios(by, key, t, base))
            if r is not None:
                ok, text = verdict.get(name, (True, ""))
                verdict[name] = (
                    ok and r >= goal,
                    (text + "; " if text else "") + f"{key[1]} threads: {r:.2f}× {LABEL.get(base, base)}",
                )
    out.append("")
    return out, verdict


# ---------------------------------------------------------------------------------------------
# chart


def nice_step(raw):
    """1, 2 or 5 times a power of ten, at least `raw`."""
    if raw <= 0:
        return 1
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def color_of(t, targets):
    if t in COLOR:
        return COLOR[t]
    spare = [x for x in targets if x not in COLOR]
    return SPARE_COLORS[spare.index(t) % len(SPARE_COLORS)]


def esc(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def text_width(text, size):
    """Rough rendered width of `text` in the sans-serif font at `size` px."""
    return 0.58 * size * len(text)


# Ratio colours: meets the target, misses it, no target.
GOOD, BAD, NEUTRAL = "#1a7f37", "#b42318", "#333333"


def chart_svg(cells, by, targets, connect=None):
    """Two bar panels (qps; proxy CPU per 10k queries), one bar per target per cell, and under
    each panel a table of our relay's ratios per cell (median of per-round ratios, as in
    results.md); with `connect` (the connect workload, indexed like the sysbench rows), a third
    panel of new connections per second. Every label has its own row or column: nothing
    overlaps."""
    cells = list(cells)
    W, ML, MR, PH = 1000, 170, 20, 240
    ROW = 17  # height of one ratio-table row
    pw = W - ML - MR

    def stats(key, t, field, by=by):
        xs = [x for x in series(by, key, t, field).values() if x is not None]
        return (statistics.median(xs), min(xs), max(xs)) if xs else None

    def ratio_rows(field, bases, better, cells=cells, by=by, targets=targets):
        """[(label, [(text, colour, tooltip) per cell])] for each of ours against each base."""
        ours = [t for t in CHART_RATIO_TARGETS if t in targets]
        rows = []
        for t in ours:
            for base, target in bases:
                if base not in targets:
                    continue
                vals = []
                for key in cells:
                    rs = round_ratios(by, key, t, base, field)
                    if not rs:
                        vals.append(("–", NEUTRAL, ""))
                        continue
                    m = statistics.median(rs)
                    colour = NEUTRAL if target is None else (GOOD if better(m, target) else BAD)
                    tip = f"{LABEL.get(t, t)} ÷ {LABEL.get(base, base)}, {key[0]} {key[1]} thr: median {m:.2f}"
                    if len(rs) > 1:
                        tip += f" (rounds {min(rs):.2f}–{max(rs):.2f})"
                    vals.append((f"{m:.2f}×", colour, tip))
                rows.append((f"{LABEL.get(t, t)} ÷ {LABEL.get(base, base)}", vals))
        return rows

    el = []

    def panel(y0, title, field, tgts, digits, rows, cells=cells, by=by):
        """Draws one panel with its top (title baseline) at y0; returns the y below it."""
        if not cells:
            return y0
        gw = pw / len(cells)
        # workload groups: runs of consecutive cells with the same workload
        groups = []
        for ci, key in enumerate(cells):
            if groups and groups[-1][0] == key[0]:
                groups[-1][2] = ci
            else:
                groups.append([key[0], ci, ci])
        vals = {(key, t): v for key in cells for t in tgts if (v := stats(key, t, field, by))}
        if not vals:
            return y0
        el.append(f'<text x="{ML}" y="{y0}" font-size="14" font-weight="bold">{esc(title)}</text>')
        top_y = y0 + 14
        peak = max(v[2] for v in vals.values()) * 1.05
        step = nice_step(peak / 8)
        top = step * math.ceil(peak / step)
        bottom = top_y + PH
        for i in range(round(top / step) + 1):
            v = step * i
            y = bottom - PH * v / top
            el.append(f'<line x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
            el.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,.{digits}f}</text>')
        bw = gw * 0.84 / len(tgts)
        for ci, key in enumerate(cells):
            gx = ML + ci * gw + gw * 0.08
            for ti, t in enumerate(tgts):
                if (key, t) not in vals:
                    continue
                m, lo, hi = vals[(key, t)]
                x = gx + ti * bw
                h = PH * m / top
                el.append(
                    f'<rect x="{x:.1f}" y="{bottom - h:.1f}" width="{bw * 0.88:.1f}" height="{h:.1f}" '
                    f'fill="{color_of(t, targets)}"><title>{esc(LABEL.get(t, t))}, {key[0]} {key[1]} thr: '
                    f"{m:,.{digits}f} [{lo:,.{digits}f}–{hi:,.{digits}f}]</title></rect>"
                )
                cx = x + bw * 0.44
                ylo, yhi = bottom - PH * lo / top, bottom - PH * hi / top
                el.append(
                    f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{ylo:.1f}" y2="{yhi:.1f}" stroke="#222" stroke-width="1"/>'
                )
        el.append(f'<line x1="{ML}" x2="{W - MR}" y1="{bottom}" y2="{bottom}" stroke="black"/>')
        # x axis: threads per cell, the workload under its group of cells
        for ci, key in enumerate(cells):
            el.append(
                f'<text x="{ML + (ci + 0.5) * gw:.1f}" y="{bottom + 15}" text-anchor="middle">{key[1]} thr</text>'
            )
        for wl, first, last in groups:
            cx = ML + (first + last + 1) / 2 * gw
            el.append(
                f'<text x="{cx:.1f}" y="{bottom + 32}" text-anchor="middle" font-weight="bold">'
                f"{esc(SHORT_WL.get(wl, wl))}</text>"
            )
        # ratio table, one row per (ours, base)
        y = bottom + 42
        if rows:
            el.append(
                f'<text x="{ML - 8}" y="{y + 11}" text-anchor="end" font-size="11" fill="#555">'
                "ratio (median of rounds)</text>"
            )
            y += ROW
        for ri, (label, cols) in enumerate(rows):
            if ri % 2 == 0:
                el.append(f'<rect x="8" y="{y}" width="{W - MR - 8}" height="{ROW}" fill="#f4f4f4"/>')
            el.append(f'<text x="{ML - 8}" y="{y + 12.5}" text-anchor="end" font-size="11">{esc(label)}</text>')
            for ci, (text, colour, tip) in enumerate(cols):
                weight = ' font-weight="bold"' if colour == BAD else ""
                title = f"<title>{esc(tip)}</title>" if tip else ""
                el.append(
                    f'<text x="{ML + (ci + 0.5) * gw:.1f}" y="{y + 12.5}" text-anchor="middle" font-size="11" '
                    f'fill="{colour}"{weight}>{text}{title}</text>'
                )
            y += ROW
        # workload separators through the axis labels and the table
        for _, first, _ in groups[1:]:
            x = ML + first * gw
            el.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top_y}" y2="{y}" stroke="#bbb" stroke-dasharray="3,3"/>')
        return y

    y = panel(
        24,
        "sysbench queries per second (higher is better; bar = median of rounds, whisker = min–max)",
        "qps",
        targets,
        0,
        ratio_rows("qps", [("direct", None), ("haproxy", 1.0)], operator.ge),
    )
    proxies = [t for t in targets if t != "direct"]
    y = panel(
        y + 40,
        "proxy CPU seconds per 10k queries (lower is better)",
        "cpu_s_per_10k_queries",
        proxies,
        2,
        ratio_rows("cpu_s_per_10k_queries", [("haproxy", CPU_TARGET)], operator.le),
    )
    if connect:
        c_cells, c_by, c_targets = connect
        y = panel(
            y + 40,
            "new connections per second: connect, SELECT 1, disconnect (higher is better)",
            "qps",
            c_targets,
            0,
            ratio_rows("qps", [("direct", None), ("haproxy", 1.0)], operator.ge, c_cells, c_by, c_targets),
            c_cells,
            c_by,
        )
        targets = targets + [t for t in c_targets if t not in targets]
    # legend: one swatch per target, wrapped to the width
    y += 28
    lx = ML
    for t in targets:
        label = LABEL.get(t, t)
        w = 16 + text_width(label, 12) + 24
        if lx + w > W - MR:
            lx, y = ML, y + 20
        el.append(f'<rect x="{lx}" y="{y - 10}" width="12" height="12" fill="{color_of(t, targets)}"/>')
        el.append(f'<text x="{lx + 16}" y="{y}">{esc(label)}</text>')
        lx += w
    y += 22
    el.append(
        f'<text x="{ML}" y="{y}" font-size="11" fill="#555">Ratios: '
        f'<tspan fill="{GOOD}">green</tspan> meets the target (qps ≥ HAProxy; CPU ≤ {CPU_TARGET}× HAProxy), '
        f'<tspan fill="{BAD}" font-weight="bold">red</tspan> misses it; ÷ direct has no target.</text>'
    )
    H = y + 16
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
    ]
    return "\n".join(head + el + ["</svg>"]) + "\n"


# ---------------------------------------------------------------------------------------------


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--chart":
        cells, by, targets = index_rows(read_csv(sys.argv[2]))
        if not cells:
            sys.exit(f"{sys.argv[2]}: no sysbench rows")
        sys.stdout.write(chart_svg(cells, by, targets))
        return
    d = sys.argv[1] if len(sys.argv) > 1 else "docs/perf"
    env = read_env(os.path.join(d, "machine.env"))
    sb = read_csv(os.path.join(d, "results.csv"))
    md = ["# consul-mysql-proxy performance results", ""]
    if env.get("quick") == "1":
        md += ["**Quick smoke run (`BENCH_QUICK=1`): short runs, one round — not for conclusions.**", ""]
    md.append(
        f"Measured {env.get('date', '?')} on {env.get('nproc', '?')} × {env.get('cpu', '?')}, "
        f"{env.get('mem', '?')} RAM, Linux {env.get('kernel', '?')}; MariaDB {env.get('mariadb', '?')}, "
        f"HAProxy {env.get('haproxy', '?')}, sysbench {env.get('sysbench', '?')}, proxy {env.get('proxy', '?')} "
        f"(rustc {env.get('rustc', '?')}, release). Everything on one machine over loopback: the client "
        "(sysbench or the Python harness), the proxy and MariaDB share the cores."
    )
    md.append("")
    verdict = {}
    cells, by, targets = [], {}, []
    conn = read_csv(os.path.join(d, "connect.csv"))
    conn_index = index_rows(connect_rows(conn)) if conn else None
    if sb:
        rounds = len({r["round"] for r in sb})
        secs = sb[0]["time_s"]
        md.append(
            f"sysbench: 4 tables × 10k rows, {rounds} interleaved round(s) of {secs} s per run; targets in "
            "rotated order within each cell. Targets: "
            + "; ".join(TARGET_DOC.get(t, t) for t in ordered_targets({r["target"] for r in sb}))
            + "."
        )
        md.append("")
        t, v, cells, by, targets = sysbench_tables(sb)
        md += t
        verdict.update(v)
    if conn:
        t, v = connect_table(conn)
        md += t
        verdict.update(v)
    if sb or conn:
        with open(os.path.join(d, "chart.svg"), "w") as f:
            f.write(chart_svg(cells, by, targets, conn_index))
        md += ["![qps, CPU per query and new connections per second](chart.svg)", ""]
    for fn, name in ((idle_table, "idle.csv"), (bulk_table, "bulk.csv"), (failover_table, "failover.csv")):
        t, v = fn(read_csv(os.path.join(d, name)))
        md += t
        verdict.update(v)

    extra = []
    for name, what in (
        ("profile-pump.txt", "perf/strace profile of ours"),
        ("profile-haproxy.txt", "perf/strace profile of HAProxy"),
        ("criterion.md", "criterion micro-benchmarks of the relay"),
    ):
        if os.path.exists(os.path.join(d, name)):
            extra.append(f"[{name}]({name}) ({what})")
    if extra:
        md += ["Also here: " + ", ".join(extra) + ".", ""]
    if verdict:
        md += [
            "### Targets (ours = `--relay pump`, 1 worker; the fast path rows: `--fast-path connect`)\n",
            "| target | met? | measured |",
            "|---|---|---|",
        ]
        names = {
            "qps": "sysbench qps ≥ HAProxy in every cell",
            "cpu": f"proxy CPU per query ≤ {CPU_TARGET}× HAProxy",
            "rss": f"RSS per idle connection ≤ {RSS_TARGET}× HAProxy",
            "bulk": f"50 MB blob ≥ {BULK_TARGET}× direct throughput",
            "failover": "write outage on failover below HAProxy's (mysql-check)",
            "connect": "new connections per second ≥ HAProxy",
            "fastpath_qps": f"fast path: sysbench qps ≥ {FASTPATH_TARGET}× direct in every cell",
            "fastpath_connect": f"fast path: new connections per second ≥ {FASTPATH_TARGET}× direct",
            "fastpath_failover": "fast path: failover outage, writes that failed and losses no worse than the relay's",
        }
        order = ("qps", "cpu", "rss", "bulk", "failover", "connect")
        order += ("fastpath_qps", "fastpath_connect", "fastpath_failover")
        for k in order:
            if k in verdict:
                ok, text = verdict[k]
                md.append(f"| {names[k]} | {'met' if ok else '**missed**'} | {text} |")
        md.append("")
    with open(os.path.join(d, "results.md"), "w") as f:
        f.write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
