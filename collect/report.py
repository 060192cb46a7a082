"""`python -m collect report RUN`: one self-contained HTML file (matplotlib PNGs embedded as data: URIs, no
scripts, no external resources) plus the same facts as Markdown for the terminal."""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from collect import compare as compare_mod
from collect import gdb_stacks, tables

TREE_LINES = 40


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _empty(ax, text):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def timeline(con, host, run):
    rows = con.execute(
        "SELECT ts, event FROM events WHERE host=? AND run=? AND ts IS NOT NULL USING SAMPLE 20000 ROWS",
        [host, run],
    ).fetchall()
    comps = con.execute(
        "SELECT ts_begin, duration_us, zone, trigger FROM compactions WHERE host=? AND run=? AND ts_begin IS NOT NULL",
        [host, run],
    ).fetchall()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if not rows:
        _empty(ax, "no timestamped events on %s (function_graph text without funcgraph-abstime?)" % host)
        return _png(fig)
    t0 = min(r[0] for r in rows)
    names = sorted({r[1] for r in rows})
    y = {n: i for i, n in enumerate(names)}
    ax.scatter([r[0] - t0 for r in rows], [y[r[1]] for r in rows], s=4, alpha=0.6)
    for ts, dur, zone, trig in comps:
        if dur is not None:
            ax.axvspan(ts - t0, ts - t0 + dur / 1e6, color="orange", alpha=0.2)
            ax.text(ts - t0, len(names) - 0.5, "%s/%s" % (zone, trig), fontsize=7, rotation=90, va="top")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("seconds since first event (shaded: compactions)")
    ax.set_title("%s: event timeline" % host)
    return _png(fig)


def score_plot(con, host, run, score):
    rows = con.execute(
        "SELECT coalesce(ts, mono, seq), node, score, wmark_low, wmark_high FROM scores WHERE host=? AND run=? "
        "ORDER BY 1",
        [host, run],
    ).fetchall()
    fig, ax = plt.subplots(figsize=(10, 3))
    if rows:
        for node in sorted({r[1] for r in rows}):
            pts = [r for r in rows if r[1] == node]
            ax.plot([r[0] for r in pts], [r[2] for r in pts], marker=".", label="node %s score" % node)
        ax.plot([r[0] for r in rows], [r[3] for r in rows], "g--", label="wmark_low")
        ax.plot([r[0] for r in rows], [r[4] for r in rows], "r--", label="wmark_high")
        ax.set_xlabel("sample time (s)")
    elif score.get("before") is not None:
        ax.bar(["before", "after"], [score["before"], score["after"] or 0], color=["#69c", "#36a"])
        for name, color in (("wmark_low", "g"), ("wmark_high", "r")):
            if score.get(name) is not None:
                ax.axhline(score[name], color=color, ls="--", label=name)
    else:
        _empty(ax, "no fragmentation score recorded on %s" % host)
        return _png(fig)
    ax.set_ylim(0, 105)
    ax.set_ylabel("fragmentation score")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("%s: fragmentation score against the proactive watermarks" % host)
    return _png(fig)


def latency_hist(con, labels_hosts):
    fig, ax = plt.subplots(figsize=(10, 3))
    data = {}
    for label, h in labels_hosts:
        d = [
            r[0]
            for r in con.execute(
                "SELECT duration_us FROM compactions WHERE host=? AND run=? AND duration_us > 0",
                [h.host, h.run],
            ).fetchall()
        ]
        if d:
            data[label] = d
    if not data:
        _empty(ax, "no compaction durations measured")
        return _png(fig)
    # Latencies span µs (an empty DMA zone) to seconds: log-spaced bins shared by all hosts.
    lo, hi = min(min(d) for d in data.values()), max(max(d) for d in data.values())
    bins = np.logspace(np.log10(lo) - 0.1, np.log10(hi) + 0.1, 30)
    for label, d in data.items():
        ax.hist(d, bins=bins, alpha=0.6, label="%s (%d)" % (label, len(d)))
    ax.set_xscale("log")
    ax.set_xlabel("compaction duration per zone (µs, log)")
    ax.set_ylabel("compactions")
    ax.legend(fontsize=7)
    ax.set_title("compaction latency")
    return _png(fig)


def top_functions(con, host, run):
    rows = con.execute(
        "SELECT function, sum(duration_us) t FROM calls WHERE host=? AND run=? AND duration_us IS NOT NULL "
        "GROUP BY 1 ORDER BY t DESC LIMIT 15",
        [host, run],
    ).fetchall()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if not rows:
        _empty(ax, "no function calls traced on %s (tracepoints only)" % host)
        return _png(fig)
    ax.barh([r[0] for r in rows][::-1], [r[1] for r in rows][::-1], color="#c63")
    ax.set_xscale("log")
    ax.set_xlabel("total µs (log; includes durations read from orphan closings)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("%s: top functions by total time" % host)
    return _png(fig)


def call_tree(con, host, run):
    """Top call tree as text: edges aggregated by (parent, function), walked from the roots by total time."""
    rows = con.execute(
        "SELECT coalesce(parent, ''), function, count(*) FILTER (WHERE status <> 'orphan'), sum(duration_us), "
        "count(*) FILTER (WHERE status = 'orphan') FROM calls WHERE host=? AND run=? AND kind <> 'function' "
        "GROUP BY 1, 2",
        [host, run],
    ).fetchall()
    children = {}
    for parent, fn, n, total, orph in rows:
        children.setdefault(parent, []).append((total or 0.0, fn, n, orph))
    lines = []

    def walk(name, depth, seen):
        for total, fn, n, orph in sorted(children.get(name, []), reverse=True):
            if len(lines) >= TREE_LINES or fn in seen:
                return
            lines.append(
                "%s%s  calls=%d total=%.1f µs%s"
                % ("  " * depth, fn, n, total, "  (%d orphan exits)" % orph if orph else "")
            )
            walk(fn, depth + 1, seen | {fn})

    walk("", 0, frozenset())
    return "\n".join(lines) or "(no function calls traced)"


_CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1100px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}img{max-width:100%}pre{background:#f6f6f6;padding:8px;
font-size:12px;overflow-x:auto}.warn{color:#a30}h2{border-bottom:1px solid #ddd}"""


def render(paths, out_dir, prefer="auto"):
    """Write report.html and report.md into ``out_dir``; returns their paths."""
    cmp = compare_mod.compare(paths, prefer=prefer)
    with tempfile.TemporaryDirectory(prefix="collect-") as tmp:
        hosts = compare_mod.gather(paths, tmp, prefer)
        con = tables.connect([h.out_dir for _, h, _ in hosts])
        md = compare_mod.markdown(cmp)
        parts = [
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>compaction report</title>",
            "<style>%s</style></head><body>" % _CSS,
            "<h1>Compaction report: %s</h1>" % html.escape(", ".join(label for label, _, _ in hosts)),
        ]
        parts.append("<h2>Side by side</h2>" + _md_table_html(md))
        parts.append(
            "<h2>Compaction latency</h2><img alt='latency histogram' src='%s'>"
            % latency_hist(con, [(label, h) for label, h, _ in hosts])
        )
        for label, h, s in hosts:
            e = html.escape
            parts.append(
                "<h2>%s</h2><p>kernel %s, arch %s, tracer %s</p>"
                % (e(label), e(s["kernel"] or "unknown"), e(s["arch"] or "unknown"), e(s["tracer"] or "unknown"))
            )
            for w in s["integrity"].get("why", []):
                parts.append("<p class='warn'>⚠ %s</p>" % e(w))
            parts.append("<p><b>kcompactd:</b> %s</p>" % e(cmp["hosts"][label]["kcompactd"]))
            parts.append("<img alt='event timeline %s' src='%s'>" % (e(label), timeline(con, h.host, h.run)))
            parts.append("<img alt='score %s' src='%s'>" % (e(label), score_plot(con, h.host, h.run, s["score"])))
            parts.append("<img alt='top functions %s' src='%s'>" % (e(label), top_functions(con, h.host, h.run)))
            parts.append("<h3>Top call tree</h3><pre>%s</pre>" % e(call_tree(con, h.host, h.run)))
            parts.append(gdb_stacks.html_section(h.raw_dir, con, h.host, h.run))
        con.close()
    parts.append("</body></html>")
    os.makedirs(out_dir, exist_ok=True)
    html_path, md_path = os.path.join(out_dir, "report.html"), os.path.join(out_dir, "report.md")
    with open(html_path, "w") as f:
        f.write("\n".join(parts))
    with open(md_path, "w") as f:
        f.write(md)
    return html_path, md_path


def _md_table_html(md):
    """The comparison's first Markdown table as HTML (the rest of the Markdown is in report.md)."""
    rows = []
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
        elif rows and not line.startswith("|"):
            break
    if not rows:
        return ""
    head = "".join("<th>%s</th>" % c for c in rows[0])
    body = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % c for c in r) for r in rows[1:])
    return "<table><tr>%s</tr>%s</table>" % (head, body)


def register(sub):
    p = sub.add_parser("report", help="self-contained HTML report (+ Markdown) of a run")
    p.add_argument("paths", nargs="+", help="a run dir (report goes into it), or host dirs / trace files")
    p.add_argument("-o", "--out-dir", help="default: the run dir, else the current directory")
    p.add_argument("--source", choices=("auto", "txt", "dat"), default="auto")
    p.set_defaults(func=_cmd)


def _cmd(args):
    first = os.path.abspath(args.paths[0])
    out_dir = args.out_dir or (first if os.path.isdir(first) and len(args.paths) == 1 else os.getcwd())
    html_path, md_path = render(args.paths, out_dir, prefer=args.source)
    with open(md_path) as f:
        print(f.read())
    print("wrote %s and %s" % (html_path, md_path))
    return 0
