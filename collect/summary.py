"""The per-host summary (a contract: scripts depend on these keys; docs/collect.md) and `summary.json`.

kernel, arch, tracer, events {name: count}, functions {symbol as printed: {calls, total_us, orphan_exits}},
compactions [{zone, trigger, task, duration_us, status}], integrity {lost_events, orphan_exits, ...},
vmstat_delta {name: int}, score {before, after, peak, wmark_low, wmark_high}.
`calls` counts entries seen (leaf or entered); `total_us` adds every known duration, including those read from
orphan closings whose entries were lost.
"""

from __future__ import annotations

import fcntl
import json
import os

from collect import tables
from collect.normalize import read_json


def _node_scores(facts):
    nodes = (facts or {}).get("nodes") or []
    return [n for n in nodes if n.get("score") is not None]


def score_summary(con, raw_dir):
    """Worst node (highest score) before/after from the facts, peak from scores.jsonl, watermarks of that kernel."""
    before = _node_scores(read_json(os.path.join(raw_dir, "facts_before.json")))
    after = _node_scores(read_json(os.path.join(raw_dir, "facts_after.json")))
    peak, low, high = con.execute("SELECT max(score), max(wmark_low), max(wmark_high) FROM scores").fetchone()
    b = max((n["score"] for n in before), default=None)
    a = max((n["score"] for n in after), default=None)
    low = low if low is not None else next((n.get("wmark_low") for n in before + after), None)
    high = high if high is not None else next((n.get("wmark_high") for n in before + after), None)
    known = [x for x in (peak, b, a) if x is not None]
    return {"before": b, "after": a, "peak": max(known) if known else None, "wmark_low": low, "wmark_high": high}


def host_summary(info, out_dir, raw_dir):
    con = tables.connect([out_dir])
    events = dict(con.execute("SELECT event, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall())
    functions = {
        fn: {"calls": int(calls), "total_us": round(total or 0.0, 3), "orphan_exits": int(orph)}
        for fn, calls, total, orph in con.execute(
            """SELECT function, count(*) FILTER (WHERE status <> 'orphan'),
                      sum(duration_us), count(*) FILTER (WHERE status = 'orphan')
               FROM calls GROUP BY 1 ORDER BY 1"""
        ).fetchall()
    }
    compactions = [
        {"zone": z, "trigger": t, "task": task, "duration_us": round(d, 3) if d is not None else None, "status": s}
        for z, t, task, d, s in con.execute(
            "SELECT zone, trigger, task, duration_us, status FROM compactions ORDER BY coalesce(ts_begin, 0)"
        ).fetchall()
    ]
    vmstat = dict(con.execute("SELECT counter, delta FROM counters ORDER BY 1").fetchall())
    score = score_summary(con, raw_dir)
    con.close()
    return {
        "kernel": info.get("kernel"),
        "arch": info.get("arch"),
        "tracer": info.get("tracer"),
        "events": events,
        "functions": functions,
        "compactions": compactions,
        "integrity": info["integrity"],
        "vmstat_delta": vmstat,
        "score": score,
        "source": info.get("source"),
    }


def write_summary_json(run_dir, run, per_host):
    """results/<run>/summary.json, merged with what is already there (hosts normalize one at a time)."""
    path = os.path.join(run_dir, "summary.json")
    lock = os.open(run_dir, os.O_RDONLY)  # the run dir itself is the lock: parallel collect_run forks merge
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_json(path, {}) or {}
        data["run"] = run
        data.setdefault("hosts", {}).update(per_host)
        tmp = path + ".tmp.%d" % os.getpid()
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    finally:
        os.close(lock)
    return path


def table(per_host):
    """Terminal rendering of per-host summaries."""
    out = []
    for host, s in per_host.items():
        integ = s["integrity"]
        out.append(
            "== %s  kernel=%s arch=%s tracer=%s source=%s"
            % (host, s["kernel"], s["arch"], s["tracer"], s.get("source"))
        )
        state = "complete" if integ.get("complete") else "INCOMPLETE"
        out.append(
            "integrity: %s  lost_events=%s orphan_exits=%s" % (state, integ["lost_events"], integ["orphan_exits"])
        )
        out.extend("  ! " + w for w in integ.get("why", []))
        if s["functions"]:
            out.append("%-44s %10s %16s %8s" % ("function", "calls", "total_us", "orphans"))
            top = sorted(s["functions"].items(), key=lambda kv: -kv[1]["total_us"])[:25]
            out.extend("%-44s %10d %16.1f %8d" % (fn, v["calls"], v["total_us"], v["orphan_exits"]) for fn, v in top)
        if s["events"]:
            out.append("events: " + ", ".join("%s=%d" % kv for kv in s["events"].items()))
        for c in s["compactions"]:
            out.append(
                "compaction zone=%s trigger=%s task=%s duration_us=%s status=%s"
                % (c["zone"], c["trigger"], c["task"], c["duration_us"], c["status"])
            )
        if s["vmstat_delta"]:
            nz = {k: v for k, v in s["vmstat_delta"].items() if v}
            out.append("vmstat_delta (non-zero): " + (", ".join("%s=%d" % kv for kv in nz.items()) or "none"))
        out.append("score: " + ", ".join("%s=%s" % kv for kv in s["score"].items()))
    return "\n".join(out)


def summarize(path, prefer="auto", force=False, write=True):
    """{"run", "hosts": {host: summary}} for a trace file, a host dir or a run dir (which gets summary.json)."""
    import tempfile

    from collect import layout

    with tempfile.TemporaryDirectory(prefix="collect-") as tmp:
        run, hosts = layout.resolve(path, workdir=tmp)
        per_host = {}
        for h in hosts:
            info = layout.ensure_normalized(h, force=force, prefer=prefer)
            per_host[h.host] = host_summary(info, h.out_dir, h.raw_dir)
    run_dir = os.path.abspath(path)
    if write and os.path.isdir(run_dir) and all(os.path.dirname(h.raw_dir) == run_dir for h in hosts):
        write_summary_json(run_dir, run, per_host)
    return {"run": run, "hosts": per_host}


def register(sub):
    p = sub.add_parser("summary", help="per-host summary of a trace file, a host dir or a run dir (contract keys)")
    p.add_argument("path", help="raw trace (trace.txt/trace.dat), results/<run>/<host> or results/<run>")
    p.add_argument("--format", choices=("json", "table"), default="table")
    p.add_argument("--source", choices=("auto", "txt", "dat"), default="auto", help="auto: trace.dat when present")
    p.add_argument("--force", action="store_true", help="re-normalize even when the tables are up to date")
    p.set_defaults(func=_cmd)


def _cmd(args):
    data = summarize(args.path, prefer=args.source, force=args.force)
    if args.format == "json":
        print(json.dumps(data, indent=1, sort_keys=True))
    else:
        print(table(data["hosts"]))
    return 0
