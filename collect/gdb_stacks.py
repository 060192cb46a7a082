"""gdb session records (results/<run>/<host>/gdb/*.json, written by roles/kgdb) as stacks and call paths.

`python -m collect gdb-stacks results/<run>` prints every hit's stack; `--function X` answers "call path of X"
from the real stacks (each distinct path from X out to the entry point, with how often it was seen). The report
shows the stacks beside the ftrace call tree of the same host, joined to the traced call of the same function
and pid (nearest in time when trace.meta.json carries a clock_offset).
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


def ftrace_match(con, host, run, hit, clock_offset=None):
    """The traced call of the hit's function by the same pid: nearest in time when the trace clock maps to wall
    time (clock_offset = wall - trace seconds), else the first. None without a trace or a pid."""
    pid = (hit.get("task") or {}).get("pid")
    if con is None or pid is None or not hit.get("frames"):
        return None
    order = "abs(ts + %f - %f)" % (clock_offset, hit["epoch"]) if clock_offset is not None else "ts"
    row = con.execute(
        "SELECT ts, duration_us, parent, count(*) OVER () FROM calls WHERE host=? AND run=? AND function=? "
        "AND pid=? ORDER BY %s LIMIT 1" % order,
        [host, run, hit["frames"][0]["function"], pid],
    ).fetchone()
    if not row:
        return None
    return {"ts": row[0], "duration_us": row[1], "parent": row[2], "calls": row[3], "by_time": order != "ts"}


def _clock_offset(host_dir):
    try:
        with open(os.path.join(host_dir, "trace.meta.json")) as f:
            off = json.load(f).get("clock_offset")
    except (OSError, ValueError):
        return None
    return off if isinstance(off, int | float) else None


def text(host_dir, con=None, host=None, run=None):
    """Every session and hit of one host as plain text (the report's <pre> block)."""
    lines, offset, recs = [], _clock_offset(host_dir), records(host_dir)
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
            match = ftrace_match(con, host, run, hit, offset)
            if match:
                lines.append(
                    "  ftrace: %d traced call(s) of %s by this pid; %s one: parent %s, %.1f µs"
                    % (
                        match["calls"],
                        hit["frames"][0]["function"],
                        "nearest" if match["by_time"] else "first",
                        match["parent"],
                        match["duration_us"] or 0.0,
                    )
                )
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
        elif args.json:
            print(json.dumps({"host": os.path.basename(d), "records": recs}))
        else:
            print("== %s\n%s" % (os.path.basename(d), text(d)))
    return 0
