"""Parquet tables (pyarrow, written in batches so memory stays flat) and the DuckDB views over them.

Layout: results/<run>/<host>/normalized/<table>.parquet, every row keyed by (run, host). DuckDB reads all hosts of
a run, or several runs, through one glob; see docs/collect.md for the columns.
"""

from __future__ import annotations

import json
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from collect.compactions import COMPACTION_COLUMNS
from collect.events import dump_formats, fields_sql, formats_from_dump, sql_literal, status_sql
from collect.funcgraph import CALL_COLUMNS

S, I32, I64, F64, B = pa.string(), pa.int32(), pa.int64(), pa.float64(), pa.bool_()
KEY = [("run", S), ("host", S)]
_CALL_TYPES = dict(
    id=I64,
    parent_id=I64,
    seq=I64,
    cpu=I32,
    task=S,
    pid=I32,
    depth=I32,
    function=S,
    parent=S,
    ts=F64,
    duration_us=F64,
    status=S,
    kind=S,
)
_COMPACTION_TYPES = dict(
    task=S,
    pid=I32,
    cpu=I32,
    zone=S,
    node=I32,
    order=I32,
    mode=S,
    status=S,
    trigger=S,
    trigger_evidence=S,
    ts_begin=F64,
    ts_end=F64,
    duration_us=F64,
    zone_start=I64,
    zone_end=I64,
    migrate_pfn_end=I64,
    free_pfn_end=I64,
    source=S,
    path=S,
)

SCHEMAS = {
    "calls": pa.schema(KEY + [(c, _CALL_TYPES[c]) for c in CALL_COLUMNS]),
    "events": pa.schema(
        [
            *KEY,
            ("seq", I64),
            ("ts", F64),
            ("cpu", I32),
            ("task", S),
            ("pid", I32),
            ("event", S),
            ("system", S),
            ("parse_status", S),
            ("body", S),
        ]
    ),
    # events as the Python lexer streams them: EventsWriter.close adds system and parse_status in bulk
    "events_raw": pa.schema(
        [*KEY, ("seq", I64), ("ts", F64), ("cpu", I32), ("task", S), ("pid", I32), ("event", S), ("body", S)]
    ),
    "switches": pa.schema(
        [*KEY, ("seq", I64), ("cpu", I32), ("prev_task", S), ("prev_pid", I32), ("next_task", S), ("next_pid", I32)]
    ),
    "compactions": pa.schema(KEY + [(c, _COMPACTION_TYPES[c]) for c in COMPACTION_COLUMNS]),
    "counters": pa.schema([*KEY, ("counter", S), ("before", I64), ("after", I64), ("delta", I64)]),
    "scores": pa.schema(
        [
            *KEY,
            ("seq", I64),
            ("node", I32),
            ("score", I32),
            ("wmark_low", I32),
            ("wmark_high", I32),
            ("proactiveness", I32),
            ("would_trigger", B),
            ("kswapd_running", B),
            ("ts", F64),
            ("ts_source", S),
            ("mono", F64),
            ("wall", F64),
            ("phase", S),
        ]
    ),
}
TABLES = tuple(n for n in SCHEMAS if n != "events_raw")
# DuckDB spills to disk beyond this: normalizing stays flat in memory whatever the trace size.
DUCKDB_SETTINGS = {
    "memory_limit": "256MB",
    "threads": 2,
    "preserve_insertion_order": False,
}


def duck():
    con = duckdb.connect(config=dict(DUCKDB_SETTINGS))
    con.execute("SET enable_progress_bar = false")  # it would print to the terminal of `collect summary`
    return con


# Columns with few distinct values, dictionary-encoded in Parquet; the others (ids, line numbers, times) gain nothing
# from a dictionary but its cost: for 1 M calls, 60 % of the write time and 70 % more bytes.
LOW_CARDINALITY = {
    "calls": ["run", "host", "cpu", "task", "pid", "depth", "function", "parent", "status", "kind"],
}


class TableWriter:
    """Append row tuples (without run/host); flushed to Parquet every ``batch`` rows."""

    def __init__(self, path, name, run, host, batch=65536, compression="zstd"):
        self.schema = SCHEMAS[name]
        # Rows become one struct array, split into columns: a single C++ pass (half the cost of a zip per column).
        self.row_type = pa.struct(list(self.schema)[2:])
        self.path, self.run, self.host, self.batch = path, run, host, batch
        self.rows = []
        self.count = 0
        self.writer = pq.ParquetWriter(
            path, self.schema, compression=compression, use_dictionary=LOW_CARDINALITY.get(name, True)
        )

    def append(self, row):
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self):
        if not self.rows:
            return
        self.write_columns(pa.array(self.rows, self.row_type).flatten())
        self.rows = []

    def write_columns(self, cols):
        """One batch given as Arrow arrays, the schema's columns minus run/host (funcgraph.CallGraph's rows)."""
        n = len(cols[0])
        arrays = [pa.array([self.run] * n, S), pa.array([self.host] * n, S), *cols]
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.count += n

    def close(self, discard=False):
        if not discard:
            self.flush()
        self.writer.close()
        if discard:
            os.unlink(self.path)


def write_rows(path, name, run, host, rows):
    w = TableWriter(path, name, run, host)
    for r in rows:
        w.append(r)
    w.close()
    return w.count


FORMATS_FILE = "formats.json"


def connect(table_dirs):
    """DuckDB connection with one view per table over every ``<dir>/<table>.parquet`` given; the events view adds
    ``fields_int``/``fields_str``, typed from each dir's own formats (events.fields_sql)."""
    con = duck()
    for name in TABLES:
        files = [os.path.join(d, name + ".parquet") for d in table_dirs]
        files = [f for f in files if os.path.exists(f)]
        if name == "events":
            parts = [fields_sql(_dir_formats(os.path.dirname(f)), "read_parquet(%s)" % sql_literal(f)) for f in files]
            if not parts:
                con.register("_empty_events", SCHEMAS[name].empty_table())
                parts = [fields_sql({}, "_empty_events")]
            con.execute("CREATE VIEW events AS %s" % " UNION ALL BY NAME ".join("(%s)" % p for p in parts))
        elif files:
            con.execute(
                "CREATE VIEW %s AS SELECT * FROM read_parquet(%s, union_by_name=true)"
                % (name, "[" + ",".join(sql_literal(f) for f in files) + "]")
            )
        else:  # an empty view with the right columns, so queries need no special cases
            con.register("_empty_" + name, SCHEMAS[name].empty_table())
            con.execute("CREATE VIEW %s AS SELECT * FROM _empty_%s" % (name, name))
    return con


def write_formats(table_dir, formats):
    """The host's event formats beside its tables: the events view types fields from them."""
    with open(os.path.join(table_dir, FORMATS_FILE), "w") as f:
        json.dump(dump_formats(formats), f)


def _dir_formats(table_dir):
    try:
        with open(os.path.join(table_dir, FORMATS_FILE)) as f:
            return formats_from_dump(json.load(f))
    except FileNotFoundError:
        return {}


def finalize_calls(pending_path, calls_w, first_switch, lost_names):
    """The rows funcgraph.CallGraph wrote as pending, completed in DuckDB and appended to ``calls_w``: the parent
    named by the orphan closing of a lost frame (``lost_names`` {id: name}), and for rows seen before a CPU's first
    context-switch banner the task that banner switched away from (``first_switch`` cpu -> (seq, task, pid))."""
    meta = pq.read_metadata(pending_path)
    if meta.num_rows:
        con = duck()
        con.register(
            "fs",
            pa.table(
                {
                    "cpu": pa.array(list(first_switch), I32),
                    "fseq": pa.array([v[0] for v in first_switch.values()], I64),
                    "ftask": pa.array([v[1] for v in first_switch.values()], S),
                    "fpid": pa.array([v[2] for v in first_switch.values()], I32),
                }
            ),
        )
        names = pa.table({"id": pa.array(list(lost_names), I64), "name": pa.array(list(lost_names.values()), S)})
        con.register("lost", names)
        reader = con.sql(
            f"""SELECT c.* EXCLUDE (run, host) REPLACE (
                coalesce(c.task, CASE WHEN c.seq < fs.fseq THEN fs.ftask END) AS task,
                coalesce(c.pid, CASE WHEN c.seq < fs.fseq THEN fs.fpid END) AS pid,
                coalesce(c.parent, lost.name) AS parent)
              FROM read_parquet({sql_literal(pending_path)}) c
              LEFT JOIN lost ON lost.id = c.parent_id
              LEFT JOIN fs ON fs.cpu = c.cpu"""
        ).to_arrow_reader(65536)
        for batch in reader:
            calls_w.write_columns(batch.columns)
        con.close()
    os.unlink(pending_path)


class EventsWriter:
    """events.parquet: Arrow batches already typed in DuckDB (the text fast path) and the Python lexer's rows, whose
    system and parse_status finalize() adds in one DuckDB pass."""

    def __init__(self, out_dir, run, host, formats):
        self.path = os.path.join(out_dir, "events.parquet")
        self.run, self.host, self.formats = run, host, formats
        self.raw = TableWriter(os.path.join(out_dir, "events.raw.parquet"), "events_raw", run, host)
        self.append = self.raw.append
        # body is nearly unique per row: dictionary pages and min/max statistics of it cost time and buy nothing
        low = ["run", "host", "task", "event", "system", "parse_status"]
        self.writer = pq.ParquetWriter(
            self.path, SCHEMAS["events"], compression="zstd", use_dictionary=low, write_statistics=[*low, "seq", "ts"]
        )
        self.counts = {}
        self.closed = False

    @property
    def count(self):
        return sum(self.counts.values()) if self.closed else self.raw.count + sum(self.counts.values())

    def write_batch(self, batch):
        """``batch``: SCHEMAS["events"] columns minus run/host."""
        n = batch.num_rows
        if not n:
            return
        cols = [pa.array([self.run] * n, S), pa.array([self.host] * n, S), *batch.columns]
        self.writer.write_batch(pa.RecordBatch.from_arrays(cols, schema=SCHEMAS["events"]))
        for k, c in zip(*batch.column("parse_status").value_counts().flatten(), strict=True):
            self.counts[k.as_py()] = self.counts.get(k.as_py(), 0) + c.as_py()

    def close(self, discard=False):
        """Type the Python lexer's rows, close the file; returns {parse_status: count}."""
        self.raw.close(discard)
        if discard:
            self.writer.close()
            os.unlink(self.path)
            return {}
        if self.raw.count:
            con = duck()
            status, system = status_sql(self.formats)
            reader = con.sql(
                "SELECT seq, ts, cpu, task, pid, event, %s AS system, parse_status, body FROM "
                "(SELECT *, %s AS parse_status FROM read_parquet(%s))" % (system, status, sql_literal(self.raw.path))
            ).to_arrow_reader(65536)
            for batch in reader:
                self.write_batch(pa.RecordBatch.from_arrays(batch.columns, names=batch.schema.names))
            con.close()
        os.unlink(self.raw.path)
        self.writer.close()
        self.closed = True
        return dict(self.counts)
