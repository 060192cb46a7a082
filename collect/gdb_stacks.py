"""gdb session records (results/<run>/<host>/gdb/*.json, written by roles/kgdb) as stacks and call paths.

`python -m collect gdb-stacks results/<run>` prints every hit's stack; `--function X` answers "call path of X"
from the real stacks (each distinct path from X out to the entry point, with how often it was seen). Beside the
ftrace call tree of the same run (`collect report`, and here when the host was traced), each hit is joined to the
traced call it stopped in: same pid, and on the trace clock when gdb read the hit's time from the guest's ring
buffer (roles/kgdb/files/kgdb_gdb/traceclock.py).
"""

from __future__ import annotations

import glob
import html
import json
import os
from collections import Counter


def records(host_dir):
    """The host's gdb session records, oldest first."""
    out = []
    for path in sorted(glob.glob(os.path.join(host_dir, "gdb", "*.json"))):
        with open(path) as f:
            rec = json.load(f)
        rec["path"] = path
        out.append(rec)
    return sorted(out, key=lambda r: r.get("started") or "")


def host_dirs(path):
    """``path`` itself when it is a host dir with gdb/, else its subdirs that have one."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "gdb")):
        return [path]
    return sorted(d for d in glob.glob(os.path.join(path, "*")) if os.path.isdir(os.path.join(d, "gdb")))


def call_paths(recs, function):
    """Counter of call paths (function, caller, caller's caller, ...) through ``function`` in every hit."""
    paths = Counter()
    for rec in recs:
        for hit in rec.get("hits", []):
            names = [f["function"] for f in hit.get("frames", [])]
            if function in names:
                paths[tuple(names[names.index(function) :])] += 1
    return paths


def _frame_line(f):
    args = ", ".join("%s=%s" % (k, v) for k, v in f.get("args", {}).items())
    where = "%s:%s" % (f["file"], f["line"]) if f.get("file") else f.get("pc", "")
    return "#%-2d %s(%s) %s%s" % (f["level"], f["function"], args, where, " [inlined]" if f.get("inlined") else "")


def ftrace_match(con, host, run, hit):
    """The traced call a hit stopped in, or None (no trace, no pid, or no traced function in its stack).

    The innermost function of the hit's stack that the trace has calls of, by the same pid. When gdb read the
    hit's trace-clock time (``trace_clock.ts``: the last event written on the hitting CPU before the stop) the
    call is chosen by time: the one whose [entry, exit] holds it, else the nearest — a breakpoint on a function's
    first instruction stops just before its entry is traced. Without that time: the pid's first call."""
    pid = (hit.get("task") or {}).get("pid")
    if con is None or pid is None:
        return None
    stamp = (hit.get("trace_clock") or {}).get("ts")
    if stamp is not None:
        end = "ts + coalesce(duration_us, 0) / 1e6"
        dist = "CASE WHEN ts <= $t AND $t <= %s THEN 0 WHEN ts > $t THEN ts - $t ELSE $t - (%s) END" % (end, end)
    else:
        dist = "NULL"
    for frame in hit.get("frames", []):
        row = con.execute(
            "SELECT ts, duration_us, parent, count(*) OVER (), %s AS dist FROM calls WHERE host=$h AND run=$r "
            "AND function=$f AND pid=$p ORDER BY dist NULLS LAST, ts LIMIT 1" % dist,
            {"h": host, "r": run, "f": frame["function"], "p": pid, **({"t": stamp} if stamp is not None else {})},
        ).fetchone()
        if row:
            return {
                "function": frame["function"],
                "level": frame["level"],
                "ts": row[0],
                "duration_us": row[1],
                "parent": row[2],
                "calls": row[3],
                "by_time": stamp is not None,
                "stamp": stamp,
                "distance_us": None if row[4] is None else round(row[4] * 1e6, 3),
            }
    return None


def _match_line(hit, m):
    head = "  ftrace: %d traced call(s) of %s (frame #%d) by this pid; " % (m["calls"], m["function"], m["level"])
    call = "the call at %.6f s, %.1f µs long, parent %s" % (m["ts"], m["duration_us"] or 0.0, m["parent"])
    if not m["by_time"]:
        return head + "first one (no trace-clock time for this hit): " + call
    where = "inside" if m["distance_us"] == 0 else "%.1f µs from" % m["distance_us"]
    return head + "hit at %.6f s on the trace clock (cpu %s), %s %s" % (
        m["stamp"],
        hit["trace_clock"].get("cpu"),
        where,
        call,
    )


def connect(host_dir):
    """(DuckDB connection over the host's normalized tables, run id) or (None, None) without a normalized trace."""
    out = os.path.join(host_dir, "normalized")
    if not os.path.exists(os.path.join(out, "calls.parquet")):
        return None, None
    from collect import layout, tables

    return tables.connect([out]), layout.run_id(os.path.dirname(host_dir))


def text(host_dir, con=None, host=None, run=None):
    """Every session and hit of one host as plain text (the report's <pre> block)."""
    lines, recs = [], records(host_dir)
    for fn in dict.fromkeys(h["frames"][0]["function"] for r in recs for h in r.get("hits", []) if h.get("frames")):
        for path, n in call_paths(recs, fn).most_common():
            lines.append("call path of %s (seen %d times): %s" % (fn, n, " ← ".join(path)))
    for rec in recs:
        sess = rec.get("session") or {}
        lines.append("session %s: %s — %s" % (sess.get("name", "?"), rec.get("status"), rec.get("message")))
        for hit in rec.get("hits", []):
            task = hit.get("task") or {}
            lines.append(
                "hit %d %s at %s, task %s pid %s"
                % (hit["n"], hit["breakpoint"], hit["time"], task.get("comm", "?"), task.get("pid", "?"))
            )
            lines += ["  " + _frame_line(f) for f in hit.get("frames", [])]
            cc = hit.get("compact_control")
            if cc and "error" not in cc:
                lines.append(
                    "  compact_control: zone %s node %s order %s mode %s"
                    % (cc["zone"], cc["node"], cc["order"], cc["mode"])
                )
            for expr, val in hit.get("values", {}).items():
                lines.append("  %s = %s" % (expr, json.dumps(val)))
            match = ftrace_match(con, host, run, hit)
            if match:
                lines.append(_match_line(hit, match))
            elif (hit.get("trace_clock") or {}).get("error"):
                lines.append("  trace clock: %s" % hit["trace_clock"]["error"])
    return "\n".join(lines)


def html_section(host_dir, con=None, host=None, run=None):
    """The report's "gdb stacks" block for one host, or "" when the host has no gdb records."""
    if not os.path.isdir(os.path.join(host_dir, "gdb")):
        return ""
    return "<h3>gdb stacks</h3><pre>%s</pre>" % html.escape(text(host_dir, con, host, run))


def register(sub):
    p = sub.add_parser("gdb-stacks", help="stacks captured by gdb sessions; --function X: call paths of X")
    p.add_argument("path", help="results/<run> or results/<run>/<host>")
    p.add_argument("--function", help="print the distinct call paths through this function")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)


def _cmd(args):
    dirs = host_dirs(args.path)
    if not dirs:
        print("collect: no gdb/ records under %s (run playbooks/kgdb_session.yml)" % args.path)
        return 2
    for d in dirs:
        recs = records(d)
        if args.function:
            paths = call_paths(recs, args.function)
            if args.json:
                print(
                    json.dumps(
                        {
                            "host": os.path.basename(d),
                            "function": args.function,
                            "paths": [{"count": n, "path": list(p)} for p, n in paths.most_common()],
                        }
                    )
                )
                continue
            print("== %s: call paths of %s (%d)" % (os.path.basename(d), args.function, sum(paths.values())))
            for path, n in paths.most_common():
                print("%4d  %s" % (n, " ← ".join(path)))
            continue
        con, run = connect(d)
        host = os.path.basename(d)
        if args.json:
            for rec in recs:
                for hit in rec.get("hits", []):
                    hit["ftrace"] = ftrace_match(con, host, run, hit)
            print(json.dumps({"host": host, "records": recs}))
        else:
            print("== %s\n%s" % (host, text(d, con, host, run)))
        if con is not None:
            con.close()
    return 0
