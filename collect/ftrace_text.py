"""Streaming lexer for ftrace text: the `trace` file of any tracer, and `trace-cmd report` output.

One pass, one tuple per meaningful line, nothing kept across lines except the line number, so memory is flat in the
input size. The per-line loop, the function_graph line parser and the pairing of graph calls are compiled
(funcgraph.pyx): graph lines go straight to its CallGraph; the tuples below reach Python. Typing event fields
happens downstream (events.py).

Tuples (first item = kind):
  ("graph", seq, cpu, task, pid, ts, depth, op, fn, dur_us)   function_graph line; op: leaf | enter | exit
  ("event", seq, cpu, task, pid, ts, name, body)              tracepoint line, or `/* name: body */` inside a graph
  ("func", seq, cpu, task, pid, ts, fn, parent)               function tracer line
  ("switch", seq, cpu, prev_task, prev_pid, next_task, next_pid)   function_graph context-switch banner
  ("irq", seq, cpu, "enter" | "exit")                         funcgraph-irqs markers ==========> / <==========
  ("lost", seq, cpu, n)                                       `CPU:N [LOST n EVENTS]`
  ("header", seq, key, value)                                 tracer, entries_in_buffer, entries_written, ncpus,
                                                              cpu_buffer_started (overwritten CPU buffer)
  ("skip", seq, reason, line)                                 unparsable line: counted, never silently dropped
task/pid/ts are None when the line does not carry them (function_graph without funcgraph-proc/abstime).
"""

from __future__ import annotations

import os
import re

from collect import funcgraph
from collect.events import sql_literal

# task-pid [cpu] flags ts: [name: ]rest   (tgid column and flags optional; trace-cmd report prints no flags).
# The event name is matched in the same pass and read with one groups() call: this is the hot path of tracepoint
# captures, where per-line Python work (not the regex) is what costs.
_TP = re.compile(
    r"^\s*(.*?)-(\d+)\s+(?:\(\s*(?:\d+|-+)\)\s+)?\[(\d+)\]\s+(?:\S{4,6}\s+)?(\d+\.\d+):\s+(?:(\w+):\s?)?(.*)$"
)
# trace-cmd's funcgraph_entry/funcgraph_exit body: [marker] [duration us] | text
_GRAPH_BODY = re.compile(r"^\s*[+!#*@$]?\s*(?:(?P<dur>\d+(?:\.\d+)?)\s*us\s*)?\|(?P<text>.*)$")
_FUNC = re.compile(r"^(\S+)\s+<-+\s*(\S+)")


# The vectorised form of _tp_line, for the lines DuckDB splits itself (split_text_sql): a named tracepoint line
# whose fields cut at fixed separators give exactly _TP's groups — ASCII task without brackets, blanks that are
# spaces, flags without ':', one space after `ts:`, and `name:` followed by the end or by one space and a printable
# character. Any other line (headers, graph lines, lost markers, odd spacing, non-ASCII) goes through lex(), so
# each line has one reading. Pieces of a plain line: head = up to '[', rest = after ']' = `flags ts: name: body`.
_TP_PLAIN = (
    r"^ *[!-\"$-Z\\^-~][ -Z\\^-~]*?-\d+ +(?:\( *(?:\d+|-+)\) +)?\[\d+\] +(?:[!-9;-~]{4,6} +)?"
    r"\d+\.\d+: \w+:(?: [!-~]|$)"
)
_TGID = r" *\( *(?:\d+|-+)\)$"
_GRAPH_PREFIX = r"^\s*(?:\d+\.\d+\s*\|\s*)?\d+\)"


def split_text_sql(path, python_names):
    """DuckDB query streaming every line of the text trace ``path`` as (seq, line) for lex() — NULL line when DuckDB
    split it — and, for plain tracepoint lines whose event is not in ``python_names``, the columns
    ts, cpu, task, pid, event, body (what _tp_line yields for them). Line numbers are the file's (blank lines kept)."""
    names = ", ".join(sql_literal(n) for n in sorted({"funcgraph_entry", "funcgraph_exit", "function", *python_names}))
    return f"""
    SELECT seq, CASE WHEN event IS NULL THEN line END AS line,
      CAST(right(stamp, strpos(reverse(stamp), ' ') - 1) AS DOUBLE) AS ts, cpu,
      trim(left(who, dash - 1)) AS task, CAST(substr(who, dash + 1) AS INTEGER) AS pid, event,
      substr(after, length(event) + 3) AS body
    FROM (
      SELECT seq, line, stamp, after, cpu, who, length(who) - strpos(reverse(who), '-') + 1 AS dash,
        CASE WHEN name NOT IN ({names}) THEN name END AS event
      FROM (
        SELECT seq, line, left(rest, strpos(rest, ': ') - 1) AS stamp, substr(rest, strpos(rest, ': ') + 2) AS after,
          left(substr(rest, strpos(rest, ': ') + 2), strpos(substr(rest, strpos(rest, ': ') + 2), ':') - 1) AS name,
          CASE WHEN suffix(head, ')') THEN rtrim(regexp_replace(head, {sql_literal(_TGID)}, '')) ELSE head END AS who,
          CASE WHEN rest IS NOT NULL THEN CAST(substr(line, strpos(line, '[') + 1, strpos(line, ']')
            - strpos(line, '[') - 1) AS INTEGER) END AS cpu
        FROM (
          SELECT seq, line, rest, CASE WHEN rest IS NOT NULL THEN rtrim(left(line, strpos(line, '[') - 1)) END AS head
          FROM (
            SELECT seq, line, CASE WHEN regexp_matches(line, {sql_literal(_TP_PLAIN)}) AND NOT contains(line, '[LOST')
              AND NOT regexp_matches(line, {sql_literal(_GRAPH_PREFIX)})
              THEN substr(line, strpos(line, ']') + 1) END AS rest
            FROM (SELECT row_number() OVER () AS seq, line FROM read_csv({sql_literal(path)}, header = false,
              columns = {{'line': 'VARCHAR'}}, delim = '\x01', quote = '', escape = '', auto_detect = false))
          )
        )
      )
    )"""


TRACE_DAT_MAGIC = b"\x17\x08\x44tracing"


class TraceFormatError(ValueError):
    """The input is not ftrace text at all (binary data, wrong file)."""


def lex(lines, graph, emit, trace_cmd=False, numbered=False):
    """Read ``lines`` (an iterable of str; of (line number, str) when ``numbered``: the lines split_text_sql left to
    Python): function_graph calls go to ``graph`` (funcgraph.CallGraph), every other tuple (see the module
    docstring) to ``emit``."""
    funcgraph.lex(lines, trace_cmd, numbered, _tp_line, graph, emit)


def _tp_line(seq, line):
    m = _TP.match(line)
    if m is None:
        return None
    task, pid, cpu, ts, name, body = m.groups()
    task, pid, cpu, ts = task.strip(), int(pid), int(cpu), float(ts)
    if name is not None:
        if name == "funcgraph_entry" or name == "funcgraph_exit":
            g = _GRAPH_BODY.match(body)
            if g is None:
                return ("skip", seq, "unreadable %s body" % name, line[:120])
            # Re-use the graph path on "<cpu>) <dur> | <text>", trace-cmd's columns in front.
            dur = g.group("dur")
            rec = funcgraph.graph_line(seq, "%d) %s |%s" % (cpu, dur + " us" if dur else "", g.group("text")))
            if rec is None or rec[0] not in ("graph", "event"):
                return ("skip", seq, "unreadable %s body" % name, line[:120])
            return (*rec[:3], task, pid, ts, *rec[6:])
        if name == "function":
            f = _FUNC.match(body.strip())
            if f:
                return ("func", seq, cpu, task, pid, ts, f.group(1), f.group(2))
        return ("event", seq, cpu, task, pid, ts, name, body)
    f = _FUNC.match(body)
    if f is not None:
        return ("func", seq, cpu, task, pid, ts, f.group(1), f.group(2))
    return ("skip", seq, "tracepoint line without an event name", line[:120])


def mostly_tracepoints(path, sample=256):
    """Are most of the first ``sample`` trace lines of ``path`` tracepoint events? Then split_text_sql pays off;
    for function_graph or function text nearly every line would still go to lex(), through DuckDB first."""
    events = seen = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            rec = _tp_line(0, line.rstrip("\n"))
            events += rec is not None and rec[0] == "event"
            seen += 1
            if seen >= sample:
                break
    return events * 2 > seen


def open_text(path):
    """Open a text trace for streaming; refuses binary files (e.g. trace.dat passed as text) with the fix."""
    with open(path, "rb") as f:
        head = f.read(4096)
    path = os.path.realpath(path)
    if head.startswith(TRACE_DAT_MAGIC):
        raise TraceFormatError("%s is a trace-cmd trace.dat: read it with `trace-cmd report` (collect does)" % path)
    if head and head.count(b"\x00") > len(head) // 8:
        raise TraceFormatError("%s is binary, not ftrace text: pass the tracefs `trace` file or a results dir" % path)
    return open(path, encoding="utf-8", errors="replace")
