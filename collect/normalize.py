"""Normalize one host's raw results into Parquet tables + integrity.json, streaming the trace once.

Inputs (docs/interfaces.md): trace.dat (read through `trace-cmd report`) or trace.txt, trace.meta.json,
formats/<system>/<event>, facts_before/after.json, vmstat_delta.json, scores.jsonl. Any of them may be missing;
what was missing is said in integrity.json, never guessed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import duckdb
from compaction_module_utils import fragmentation, tracefs

from collect import tables
from collect.compactions import CLOSE_FUNCS, CompactionPairer, ZoneCallCompactions
from collect.events import load_formats, parse_fields, status_sql
from collect.ftrace_text import TraceFormatError, lex, mostly_tracepoints, open_text, split_text_sql
from collect.funcgraph import CallGraph

OUT_DIR = "normalized"
SKIP_SAMPLES = 5


class NormalizeError(RuntimeError):
    pass


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except json.JSONDecodeError as e:
        raise NormalizeError("%s is not valid JSON (%s): re-fetch the host's results" % (path, e)) from e


def parse_cpu_stats(text):
    """Several CPUs' stats (`trace-cmd report --stat`, or `CPU: n` / `== cpun` blocks) -> {cpu: {key: value}};
    each block is read by the one per-CPU stats parser, tracefs.parse_cpu_stats."""
    out, cpu, block = {}, None, []
    for line in [*text.splitlines(), "CPU: end"]:
        head = line.strip()
        if head.startswith(("CPU:", "== cpu")):
            if cpu is not None:
                out[cpu] = tracefs.parse_cpu_stats("\n".join(block))
            label = head.replace("== cpu", "").replace("CPU:", "").strip()
            cpu, block = (int(label) if label.isdigit() else None), []
        elif cpu is not None:
            block.append(line)
    return out


def per_cpu_loss(meta):
    """Σ overrun + dropped events over CPUs from trace.meta.json's per_cpu stats; None when not recorded.

    Accepts {cpu: {overrun, dropped_events, ...}}, [{cpu, overrun, ...}] or {cpu: "<stats file text>"}.
    """
    per_cpu = (meta or {}).get("per_cpu")
    if not per_cpu:
        return None, {}
    items = per_cpu.items() if isinstance(per_cpu, dict) else enumerate(per_cpu)
    detail = {}
    for cpu, st in items:
        if isinstance(st, str):
            st = tracefs.parse_cpu_stats(st)
        if not isinstance(st, dict):
            continue
        st = {k.replace(" ", "_"): v for k, v in st.items()}
        cpu = st.get("cpu", cpu)
        detail[str(cpu)] = {
            "overrun": int(st.get("overrun", 0) or 0),
            "dropped_events": int(st.get("dropped_events", 0) or 0),
            "commit_overrun": int(st.get("commit_overrun", 0) or 0),
        }
    if not detail:
        return None, {}
    return sum(d["overrun"] + d["dropped_events"] for d in detail.values()), detail


def trace_cmd_lines(dat):
    """Stream `trace-cmd report` of a trace.dat (the binary capture, when trace-cmd recorded)."""
    if shutil.which("trace-cmd") is None:
        raise NormalizeError("%s needs trace-cmd to read: apt-get install trace-cmd (make setup does)" % dat)
    proc = subprocess.Popen(
        ["trace-cmd", "report", "-t", "-i", dat],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        bufsize=1 << 20,
    )
    try:
        yield from proc.stdout
    finally:
        proc.stdout.close()
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise NormalizeError("trace-cmd report %s failed (%d): %s" % (dat, proc.returncode, err.strip()[-400:]))


def trace_cmd_info(dat):
    """(stats {cpu: {...}}, uname 'Linux host release arch' or '') of a trace.dat."""

    def run(*args):
        p = subprocess.run(["trace-cmd", "report", *args, "-i", dat], capture_output=True, text=True, check=False)
        return p.stdout if p.returncode == 0 else ""

    return parse_cpu_stats(run("--stat")), run("--uname").strip().splitlines()[-1:] or [""]


def pick_source(host_dir, prefer="auto"):
    """(kind, path) of the trace to read: trace.dat (complete when trace-cmd streamed it) before trace.txt."""
    dat, txt = os.path.join(host_dir, "trace.dat"), os.path.join(host_dir, "trace.txt")
    if prefer in ("auto", "dat") and os.path.exists(dat):
        return "dat", dat
    if prefer in ("auto", "txt") and os.path.exists(txt):
        return "txt", txt
    return None, None


class _SplitFailed(Exception):
    pass


def normalize_trace(source_kind, path, out_dir, run, host, formats, meta):
    """Stream one trace into calls/events/switches/compactions; returns the integrity facts found in it.

    A text trace of mostly tracepoint lines is read by DuckDB (ftrace_text.split_text_sql): the plain tracepoint
    lines go to events.parquet without a Python step, the rest to lex(). Other text (function_graph) and a file DuckDB
    cannot read as lines (invalid UTF-8, control bytes) are read by lex() alone, which counts what it cannot parse."""
    if source_kind == "txt":
        try:
            open_text(path).close()  # refuses trace.dat and binary files with the fix
        except TraceFormatError as e:
            raise NormalizeError(str(e)) from e
        if mostly_tracepoints(path):
            try:
                return _normalize_trace(source_kind, path, out_dir, run, host, formats, split=True)
            except _SplitFailed:
                pass
    return _normalize_trace(source_kind, path, out_dir, run, host, formats, split=False)


def _split_lines(path, events_w, python_names):
    """(seq, line) of the lines lex() must read; the others, split by DuckDB, are written to ``events_w``."""
    con = tables.duck()
    con.execute("SET preserve_insertion_order = true")  # row_number() OVER () = line number
    status, system = status_sql(events_w.formats)
    query = (
        "SELECT seq, line, ts, cpu, task, pid, event, %s AS system, parse_status, body FROM "
        "(SELECT *, CASE WHEN event IS NOT NULL THEN %s END AS parse_status FROM (%s))"
        % (system, status, split_text_sql(path, python_names))
    )
    try:
        for batch in con.sql(query).to_arrow_reader(65536):
            split = batch.column("event").is_valid()
            events_w.write_batch(batch.filter(split).drop_columns(["line"]))
            rest = batch.filter(batch.column("line").is_valid())  # blank lines are NULL: lex() skips them anyway
            yield from zip(rest.column("seq").to_pylist(), rest.column("line").to_pylist(), strict=True)
    except duckdb.Error as e:
        raise _SplitFailed(str(e)) from e
    finally:
        con.close()


def _normalize_trace(source_kind, path, out_dir, run, host, formats, split):
    os.makedirs(out_dir, exist_ok=True)
    events_w = tables.EventsWriter(out_dir, run, host, formats)
    switches_w = tables.TableWriter(os.path.join(out_dir, "switches.parquet"), "switches", run, host)
    calls_w = tables.TableWriter(os.path.join(out_dir, "calls.parquet"), "calls", run, host)
    pending_calls = os.path.join(out_dir, "calls.pending.parquet")
    pending_w = tables.TableWriter(pending_calls, "calls", run, host, compression="none")
    comp_rows = []
    pairer = CompactionPairer(comp_rows.append)
    zone_calls = ZoneCallCompactions()

    def on_close(frame, dur, status):
        pairer.on_close(frame, dur, status)
        zone_calls.on_close(frame, dur, status)

    # Graph lines are paired in compiled code (funcgraph.pyx); only the compact_zone closings come back here.
    graph = CallGraph(calls_w.write_columns, pending_w.write_columns, on_close, CLOSE_FUNCS)
    running, wants = graph.current, pairer.WANTS
    header, skips, first_switch = {}, {}, {}
    skip_samples, counts = [], {"lost": 0, "irq": 0}

    def record(rec):
        """Every lexed tuple but the graph calls: events, switches, headers, markers, skips (ftrace_text)."""
        kind = rec[0]
        if kind == "event":
            _, seq, cpu, task, pid, ts, name, body = rec
            if pid is None:
                key, task, pid = graph.key_for(cpu, task, pid)
            else:  # what key_for does for a line with a task column, minus the call; key only when needed
                running[cpu] = (task, pid)
                key = None
            # Only the events that pair compactions are typed here; all of them are typed in bulk by DuckDB
            # (tables.EventsWriter.close) from the raw body, which is what keeps this path fast.
            if name in wants and pairer.wants(name, pid if pid is not None else -1 - cpu):
                if key is None:
                    key = graph.key(cpu, pid)
                ints, strs, _ = parse_fields(name, body, formats)
                stack = graph.stacks.get(key, ())
                frames = [f for f in stack if f is not None and f.fn]
                pairer.event(cpu, task, pid if pid is not None else -1 - cpu, ts, name, ints, strs, frames)
            append_event((seq, ts, cpu, task, pid, name, body))
        elif kind == "func":
            _, seq, cpu, task, pid, ts, fn, parent = rec
            graph.function_call(seq, cpu, task, pid, ts, fn, parent)
        elif kind == "switch":
            _, seq, cpu, pt, pp, nt, np_ = rec
            if cpu not in graph.current:
                first_switch.setdefault(cpu, (seq, pt, pp))
            graph.switch(cpu, pt, pp, nt, np_)
            switches_w.append((seq, cpu, pt, pp, nt, np_))
        elif kind == "header":
            _, _, k, v = rec
            if k == "cpu_buffer_started":
                header.setdefault("cpu_buffer_started", []).append(v)
            else:
                header[k] = v
        elif kind == "lost":
            counts["lost"] += rec[3]
        elif kind == "irq":
            counts["irq"] += 1
        else:  # skip
            _, seq, reason, text = rec
            skips[reason] = skips.get(reason, 0) + 1
            if len(skip_samples) < SKIP_SAMPLES:
                skip_samples.append({"line": seq, "reason": reason, "text": text})

    append_event = events_w.append
    try:
        if split:
            lines = _split_lines(path, events_w, wants)
        else:
            lines = trace_cmd_lines(path) if source_kind == "dat" else open_text(path)
    except TraceFormatError as e:
        raise NormalizeError(str(e)) from e
    try:
        lex(lines, graph, record, trace_cmd=source_kind == "dat", numbered=split)
    except TraceFormatError as e:
        raise NormalizeError(str(e)) from e
    except _SplitFailed:
        for w in (calls_w, pending_w, switches_w, events_w):
            w.close(discard=True)
        raise
    finally:
        if hasattr(lines, "close"):
            lines.close()

    graph.finish()
    pairer.finish()
    pending_w.close()
    tables.finalize_calls(pending_calls, calls_w, first_switch, graph.lost_names())
    calls_w.close()
    switches_w.close()
    event_status = events_w.close()
    if pairer.begins == 0 and pairer.ends_without_begin == 0:
        comp_rows.extend(zone_calls.rows(first_switch))
    tables.write_rows(os.path.join(out_dir, "compactions.parquet"), "compactions", run, host, comp_rows)
    return {
        "header": header,
        "skipped_lines": sum(skips.values()),
        "skipped_by_reason": skips,
        "skipped_samples": skip_samples,
        "lost_markers": counts["lost"],
        "orphan_exits": graph.orphan_exits,
        "truncated_calls": graph.truncated,
        "mismatched_exits": graph.mismatched_exits,
        "event_parse": event_status,
        "irq_markers": counts["irq"],
        "compaction_ends_without_begin": pairer.ends_without_begin,
        "calls": calls_w.count,
        "events": events_w.count,
    }


def _scores_rows(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                s = json.loads(line)
            except json.JSONDecodeError as e:
                raise NormalizeError("%s line %d is not JSON (%s)" % (path, n, e)) from e
            rows.append(
                (
                    s.get("seq"),
                    s.get("node"),
                    s.get("score"),
                    s.get("wmark_low"),
                    s.get("wmark_high"),
                    s.get("proactiveness"),
                    s.get("would_trigger"),
                    s.get("kswapd_running"),
                    s.get("ts"),
                    s.get("ts_source"),
                    s.get("mono"),
                    s.get("wall"),
                    s.get("phase"),
                )
            )
    return rows


def _marker_times(rows, out_dir):
    """Samples with ts_source "marker": their trace time is that of the sampler's trace_marker line
    `compaction_lab_score seq=<seq> node=<node> ...` (docs/interfaces.md, scores.jsonl)."""
    events = os.path.join(out_dir, "events.parquet")
    if not any(r[9] == "marker" and r[8] is None for r in rows) or not os.path.exists(events):
        return rows
    con = tables.duck()
    marks = con.execute(
        "SELECT ts, body FROM read_parquet(?) "
        "WHERE event = 'tracing_mark_write' AND body LIKE 'compaction_lab_score %'",
        [events],
    ).fetchall()
    con.close()
    at = {}
    for ts, body in marks:
        kv = dict(p.split("=", 1) for p in body.split()[1:] if "=" in p)
        if kv.get("seq", "").isdigit() and kv.get("node", "").isdigit():
            at[(int(kv["seq"]), int(kv["node"]))] = ts
    return [(*r[:8], at.get((r[0], r[1]), r[8]), *r[9:]) if r[9] == "marker" else r for r in rows]


def _counters(host_dir, facts_before, facts_after):
    """vmstat_delta.json when the capture wrote it, else after-before of the facts' vmstat (fragmentation.py)."""
    vb = (facts_before or {}).get("vmstat") or {}
    va = (facts_after or {}).get("vmstat") or {}
    delta = read_json(os.path.join(host_dir, "vmstat_delta.json"))
    if delta is None and vb and va:
        delta = fragmentation.vmstat_delta(vb, va)
    return {k: int(v) for k, v in (delta or {}).items()}, vb, va


def normalize_host(host_dir, run, host, prefer="auto", out_dir=None):
    """Normalize ``host_dir`` into ``out_dir`` (default <host_dir>/normalized); returns the integrity dict."""
    out_dir = out_dir or os.path.join(host_dir, OUT_DIR)
    os.makedirs(out_dir, exist_ok=True)
    meta = read_json(os.path.join(host_dir, "trace.meta.json"), {}) or {}
    formats = load_formats(os.path.join(host_dir, "formats"))
    tables.write_formats(out_dir, formats)
    kind, path = pick_source(host_dir, prefer)
    missing = []
    if kind is None:
        missing.append("no trace.txt or trace.dat: nothing was captured on this host")
        found = None
    else:
        if os.path.getsize(path) == 0:
            raise NormalizeError(
                "%s is empty: the capture wrote nothing (tracing never on, wrong instance, or the copy failed)" % path
            )
        found = normalize_trace(kind, path, out_dir, run, host, formats, meta)
    if not formats:
        missing.append("no formats/: event fields split generically (fetch events/*/format with the capture)")
    facts_before = read_json(os.path.join(host_dir, "facts_before.json"))
    facts_after = read_json(os.path.join(host_dir, "facts_after.json"))
    delta, vb, va = _counters(host_dir, facts_before, facts_after)
    tables.write_rows(
        os.path.join(out_dir, "counters.parquet"),
        "counters",
        run,
        host,
        [(k, vb.get(k), va.get(k), v) for k, v in sorted(delta.items())],
    )
    tables.write_rows(
        os.path.join(out_dir, "scores.parquet"),
        "scores",
        run,
        host,
        _marker_times(_scores_rows(os.path.join(host_dir, "scores.jsonl")), out_dir),
    )
    dat_stats, uname = ({}, [""])
    if kind == "dat":
        dat_stats, uname = trace_cmd_info(path)
    integ = integrity(meta, found, dat_stats)
    integ["missing"] = missing
    info = {
        "run": run,
        "host": host,
        "source": os.path.basename(path) if path else None,
        "kernel": meta.get("kernel") or (facts_before or {}).get("kernel") or _uname_field(uname[0], 2),
        "arch": meta.get("arch") or (facts_before or {}).get("arch") or _uname_field(uname[0], 3),
        "tracer": meta.get("tracer") or (found or {}).get("header", {}).get("tracer"),
        "fallback_reason": meta.get("fallback_reason"),
        "integrity": integ,
        "found": found,
    }
    with open(os.path.join(out_dir, "host.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    return info


def _uname_field(uname, i):
    parts = uname.split()
    return parts[i] if len(parts) > i else None


def integrity(meta, found, dat_stats):
    """lost_events and the reasons a trace is incomplete, from per-CPU stats, the header and the trace itself."""
    why = []
    lost, detail = per_cpu_loss(meta)
    origin = "trace.meta.json per_cpu stats"
    if lost is None and dat_stats:
        lost = sum(s.get("overrun", 0) + s.get("dropped_events", 0) for s in dat_stats.values())
        detail = {str(c): s for c, s in dat_stats.items()}
        origin = "trace-cmd report --stat"
    header = (found or {}).get("header", {})
    if lost is None and "entries_written" in header:
        lost = header["entries_written"] - header["entries_in_buffer"]
        origin = "trace header entries-in-buffer/entries-written"
    markers = (found or {}).get("lost_markers", 0)
    if markers:
        lost = (lost or 0) + markers
        why.append("%d events reported lost by `[LOST n EVENTS]` markers" % markers)
    if lost is None:
        origin = "unknown: no per-CPU stats, no trace header with entry counts"
        why.append("lost events unknown: the capture recorded no per-CPU stats (trace.meta.json per_cpu)")
    elif lost:
        cpus = [c for c, d in detail.items() if d.get("overrun") or d.get("dropped_events")]
        why.append(
            "%d events lost (%s)%s: the ring buffer was too small or overwritten"
            % (lost, origin, " on CPUs " + ",".join(cpus) if cpus else "")
        )
    if found is not None and not found["calls"] and not found["events"]:
        why.append("the trace holds no calls and no events: nothing was recorded while tracing was on")
    orphans = (found or {}).get("orphan_exits", 0)
    if orphans:
        why.append("%d closings `} /* fn */` whose entries were lost (overwritten ring buffer)" % orphans)
    trunc = (found or {}).get("truncated_calls", 0)
    if trunc:
        why.append("%d calls entered but not returned before the trace ended" % trunc)
    started = header.get("cpu_buffer_started")
    if started:
        why.append("CPU buffers %s started late: their older entries were overwritten" % started)
    skipped = (found or {}).get("skipped_lines", 0)
    if skipped:
        why.append("%d unparsable lines skipped (%s)" % (skipped, (found or {}).get("skipped_by_reason")))
    ev = (found or {}).get("event_parse", {})
    for status, text in (
        ("unknown_event", "events with no format file"),
        ("mismatch", "events whose fields did not match their format"),
        ("unparsed", "events without key=value fields"),
    ):
        if ev.get(status):
            why.append("%d %s (kept with their raw text)" % (ev[status], text))
    if (meta or {}).get("fallback_reason"):
        why.append("capture fell back: %s" % meta["fallback_reason"])
    return {
        "lost_events": lost,
        "lost_events_source": origin,
        "per_cpu": detail,
        "orphan_exits": orphans,
        "truncated_calls": trunc,
        "skipped_lines": skipped,
        "complete": not why,
        "why": why,
    }
