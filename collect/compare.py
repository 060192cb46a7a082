"""`python -m collect compare RUN_OR_HOSTS...`: hosts side by side (per-function calls and time, call edges on
one side only, compaction latency and outcomes, figures of merit, score, why kcompactd did or did not act)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from collect import figures, layout, regressions, tables
from collect.summary import host_summary


def gather(paths, tmp, prefer="auto", force=False):
    """[(label, Host, summary)] for every host under ``paths``; labels are unique (host, or run/host)."""
    out = []
    for n, path in enumerate(paths):
        _run, hosts = layout.resolve(path, workdir="%s/%d" % (tmp, n))
        for h in hosts:
            info = layout.ensure_normalized(h, force=force, prefer=prefer)
            out.append([h.host, h, host_summary(info, h.out_dir, h.raw_dir)])
    names = [o[0] for o in out]
    for o in out:
        if names.count(o[0]) > 1:
            o[0] = "%s/%s" % (o[1].run, o[1].host)
    return [tuple(o) for o in out]


def _quantiles(con, label):
    return con.execute(
        """SELECT trigger, count(*), quantile_cont(duration_us, 0.5), quantile_cont(duration_us, 0.9),
                  max(duration_us), string_agg(DISTINCT status, ',' ORDER BY status)
           FROM compactions WHERE host = ? AND run = ? GROUP BY 1 ORDER BY 1""",
        label,
    ).fetchall()


def compare(paths, prefer="auto", force=False, top=20):
    with tempfile.TemporaryDirectory(prefix="collect-") as tmp:
        hosts = gather(paths, tmp, prefer, force)
        con = tables.connect([h.out_dir for _, h, _ in hosts])
        result = {"hosts": {}, "functions": {}, "edges_only_on": {}}
        edges = {}
        for label, h, s in hosts:
            key = [h.host, h.run]
            lat = [
                {"trigger": t, "count": n, "p50_us": p50, "p90_us": p90, "max_us": mx, "statuses": st}
                for t, n, p50, p90, mx, st in _quantiles(con, key)
            ]
            result["hosts"][label] = {
                "kernel": s["kernel"],
                "arch": s["arch"],
                "tracer": s["tracer"],
                "integrity": {k: s["integrity"].get(k) for k in ("complete", "lost_events", "orphan_exits", "why")},
                "latency": lat,
                "figures": figures.merit(s["vmstat_delta"], con, h.host),
                "score": s["score"],
                "kcompactd": figures.kcompactd_verdict(s, h.raw_dir),
            }
            for fn, v in s["functions"].items():
                result["functions"].setdefault(fn, {})[label] = v
            edges[label] = {
                "%s -> %s" % (p or "?", f)
                for p, f in con.execute(
                    "SELECT DISTINCT parent, function FROM calls WHERE host = ? AND run = ? AND kind <> 'function'",
                    key,
                ).fetchall()
            }
        con.close()
    ranked = sorted(result["functions"].items(), key=lambda kv: -max(v["total_us"] for v in kv[1].values()))
    result["functions"] = dict(ranked[:top])
    for label, e in edges.items():
        others = set().union(*(v for k, v in edges.items() if k != label)) if len(edges) > 1 else set()
        result["edges_only_on"][label] = sorted(e - others) if len(edges) > 1 else []
    return result


def markdown(result):
    labels = list(result["hosts"])
    out = ["# Compare: " + " vs ".join(labels), ""]
    out.append("| | " + " | ".join(labels) + " |")
    out.append("|---" * (len(labels) + 1) + "|")
    rows = [
        ("kernel", lambda h: h["kernel"]),
        ("arch", lambda h: h["arch"]),
        ("tracer", lambda h: h["tracer"]),
        ("trace complete", lambda h: h["integrity"]["complete"]),
        ("lost events", lambda h: h["integrity"]["lost_events"]),
        ("orphan exits", lambda h: h["integrity"]["orphan_exits"]),
    ]
    for fig in ("compaction_efficiency", "scan_efficiency", "pages_migrated", "compact_stall", "compact_daemon_wake"):
        rows.append((fig, lambda h, f=fig: h["figures"][f]))
    for k in ("before", "after", "peak", "wmark_high"):
        rows.append(("score " + k, lambda h, k=k: h["score"][k]))
    for name, get in rows:
        out.append("| %s | %s |" % (name, " | ".join(str(get(result["hosts"][lb])) for lb in labels)))
    out += ["", "## Functions (calls / total µs; orphan exits in brackets)", ""]
    out.append("| function | " + " | ".join(labels) + " |")
    out.append("|---" * (len(labels) + 1) + "|")
    for fn, per in result["functions"].items():
        cells = []
        for lb in labels:
            v = per.get(lb)
            cells.append(
                "—"
                if v is None
                else "%d / %.1f%s"
                % (v["calls"], v["total_us"], " [%d]" % v["orphan_exits"] if v["orphan_exits"] else "")
            )
        out.append("| `%s` | %s |" % (fn, " | ".join(cells)))
    out += ["", "## Compaction latency by trigger", ""]
    for lb in labels:
        for r in result["hosts"][lb]["latency"] or [{"trigger": "none", "count": 0}]:
            out.append(
                "- %s: %s x%d p50=%s µs p90=%s µs max=%s µs status=%s"
                % (
                    lb,
                    r["trigger"],
                    r["count"],
                    _f(r.get("p50_us")),
                    _f(r.get("p90_us")),
                    _f(r.get("max_us")),
                    r.get("statuses"),
                )
            )
    out += ["", "## Call edges present on one side only", ""]
    for lb, edges in result["edges_only_on"].items():
        out.append("- %s: %s" % (lb, ", ".join("`%s`" % e for e in edges[:40]) or "none"))
    out += ["", "## Why kcompactd did / did not act", ""]
    out += ["- %s: %s" % (lb, result["hosts"][lb]["kcompactd"]) for lb in labels]
    for lb in labels:
        for w in result["hosts"][lb]["integrity"]["why"]:
            out.append("- ⚠ %s: %s" % (lb, w))
    return "\n".join(out) + "\n"


def _f(x):
    return "%.1f" % x if isinstance(x, float) else x


def register(sub):
    p = sub.add_parser("compare", help="hosts side by side: functions, call edges, latency, figures of merit")
    p.add_argument("paths", nargs="+", help="run dirs, host dirs or trace files")
    p.add_argument("--format", choices=("md", "json"), default="md")
    p.add_argument("--source", choices=("auto", "txt", "dat"), default="auto")
    p.add_argument("--top", type=int, default=20, help="functions shown (by total time)")
    regressions.add_arguments(p)  # --baseline RUN: regressions of the first run against it (collect/regressions.py)
    p.set_defaults(func=_cmd)


def _cmd(args):
    result = compare(args.paths, prefer=args.source, top=args.top)
    print(json.dumps(result, indent=1, default=str) if args.format == "json" else markdown(result))
    if args.baseline:
        run_dir = Path(args.paths[0])
        return regressions.baseline_report(args, run_dir, run_dir.parent)
    return 0
