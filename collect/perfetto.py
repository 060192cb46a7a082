"""`python -m collect export --perfetto RUN`: Chrome trace-event JSON (opens in ui.perfetto.dev / chrome://tracing).

One process per host, one thread track per CPU; calls are complete ("X") slices, tracepoints instants ("i"),
compactions slices on a per-host "compactions" track. Written row by row from DuckDB (memory stays flat).
function_graph text without funcgraph-abstime carries no timestamps: those calls cannot be placed and are
counted in the output, not invented.
"""

from __future__ import annotations

import json
import os
import tempfile

from collect import layout, tables

COMPACTION_TID = 1_000_000


def _fields(col):
    """The members of map ``col`` as JSON object members after a comma ('' when empty)."""
    return "CASE WHEN cardinality(%s) > 0 THEN ',' || trim(to_json(%s), '{}') ELSE '' END" % (col, col)


# A call with a duration is a complete slice, one without (truncated) an instant.
_CALL_JSON = (
    """'{"ph":' || CASE WHEN duration_us IS NOT NULL THEN '"X"' ELSE '"i"' END || ',"pid":' || ?::INTEGER """
    """|| ',"tid":' || coalesce(to_json(cpu), 'null') || ',"ts":' || to_json(ts * 1e6) || ',"name":' """
    """|| coalesce(to_json(function), 'null') || ',"cat":"call","args":{"task":' || coalesce(to_json(task), 'null') """
    """|| ',"pid":' || coalesce(to_json(pid), 'null') || ',"status":' || coalesce(to_json(status), 'null') || '}' """
    """|| CASE WHEN duration_us IS NOT NULL THEN ',"dur":' || to_json(duration_us) ELSE ',"s":"t"' END || '}'"""
)
_EVENT_JSON = (
    """'{"ph":"i","s":"t","pid":' || ?::INTEGER || ',"tid":' || coalesce(to_json(cpu), 'null') || ',"ts":' """
    """|| to_json(ts * 1e6) || ',"name":' || to_json(event) || ',"cat":"event","args":{"task":' """
    """|| coalesce(to_json(task), 'null') || ',"pid":' || coalesce(to_json(pid), 'null') || %s || %s || '}}'"""
    % (_fields("fields_int"), _fields("fields_str"))
)


def export(paths, out_path, prefer="auto"):
    stats = {"calls": 0, "events": 0, "compactions": 0, "calls_without_ts": 0}
    with tempfile.TemporaryDirectory(prefix="collect-") as tmp, open(out_path, "w") as out:
        hosts = []
        for n, path in enumerate(paths):
            _run, hs = layout.resolve(path, workdir="%s/%d" % (tmp, n))
            for h in hs:
                layout.ensure_normalized(h, prefer=prefer)
                hosts.append(h)
        con = tables.connect([h.out_dir for h in hosts])
        out.write('{"displayTimeUnit": "ns", "traceEvents": [\n')
        first = True

        def put_json(text):
            nonlocal first
            out.write(("" if first else ",\n") + text)
            first = False

        def put(ev):
            put_json(json.dumps(ev, separators=(",", ":")))

        def stream(select, table, pid, h):
            """Write every timed row of ``table`` for host ``h`` as the JSON ``select`` builds; returns how many."""
            cur = con.execute(
                "SELECT %s FROM %s WHERE host=? AND run=? AND ts IS NOT NULL ORDER BY ts" % (select, table),
                [pid, h.host, h.run],
            )
            n = 0
            while rows := cur.fetchmany(10000):
                put_json(",\n".join(ev for (ev,) in rows))
                n += len(rows)
            return n

        for pid, h in enumerate(hosts, 1):
            put({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": "%s (%s)" % (h.host, h.run)}})
            put({"ph": "M", "pid": pid, "tid": COMPACTION_TID, "name": "thread_name", "args": {"name": "compactions"}})
            for (cpu,) in con.execute(
                "SELECT DISTINCT cpu FROM (SELECT cpu FROM calls WHERE host=$1 AND run=$2 "
                "UNION SELECT cpu FROM events WHERE host=$1 AND run=$2) ORDER BY 1",
                [h.host, h.run],
            ).fetchall():
                put({"ph": "M", "pid": pid, "tid": cpu, "name": "thread_name", "args": {"name": "CPU %s" % cpu}})
            # Each call's JSON is built in DuckDB, not by a dict and json.dumps per row.
            stats["calls_without_ts"] += con.execute(
                "SELECT count(*) FROM calls WHERE host=? AND run=? AND ts IS NULL", [h.host, h.run]
            ).fetchone()[0]
            stats["calls"] += stream(_CALL_JSON, "calls", pid, h)
            # Events too: converting the typed field maps to Python dicts and dumping them again cost more than
            # building them. A field named task/pid repeats the key; readers keep the last.
            stats["events"] += stream(_EVENT_JSON, "events", pid, h)
            for zone, trig, task, ts, dur, status in con.execute(
                "SELECT zone, trigger, task, ts_begin, duration_us, status FROM compactions WHERE host=? AND run=? "
                "AND ts_begin IS NOT NULL AND duration_us IS NOT NULL ORDER BY ts_begin",
                [h.host, h.run],
            ).fetchall():
                put(
                    {
                        "ph": "X",
                        "pid": pid,
                        "tid": COMPACTION_TID,
                        "ts": ts * 1e6,
                        "dur": dur,
                        "cat": "compaction",
                        "name": "compact %s (%s)" % (zone, trig),
                        "args": {"task": task, "status": status},
                    }
                )
                stats["compactions"] += 1
        out.write("\n]}\n")
        con.close()
    return stats


def register(sub):
    p = sub.add_parser("export", help="export a run for other viewers (--perfetto: Chrome trace-event JSON)")
    p.add_argument("paths", nargs="+", help="run dirs, host dirs or trace files")
    p.add_argument("--perfetto", action="store_true", required=True, help="Chrome trace-event JSON for Perfetto")
    p.add_argument("-o", "--output", help="default: <run>/trace.perfetto.json, or ./<name>.perfetto.json")
    p.add_argument("--source", choices=("auto", "txt", "dat"), default="auto")
    p.set_defaults(func=_cmd)


def _cmd(args):
    first = os.path.abspath(args.paths[0])
    default = (
        os.path.join(first, "trace.perfetto.json")
        if os.path.isdir(first)
        else os.path.splitext(os.path.basename(first))[0] + ".perfetto.json"
    )
    out = args.output or default
    stats = export(args.paths, out, prefer=args.source)
    print(
        "wrote %s: %d call slices, %d events, %d compactions"
        % (out, stats["calls"], stats["events"], stats["compactions"])
    )
    if stats["calls_without_ts"]:
        print(
            "note: %d calls have no timestamp (function_graph text without funcgraph-abstime) and are not placed"
            % stats["calls_without_ts"]
        )
    return 0
