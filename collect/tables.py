"""Parquet tables (pyarrow, written in batches so memory stays flat) and the DuckDB views over them.

Layout: results/<run>/<host>/normalized/<table>.parquet, every row keyed by (run, host). DuckDB reads all hosts of
a run, or several runs, through one glob; see docs/collect.md for the columns.
"""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from collect.callgraph import CALL_COLUMNS
from collect.compactions import COMPACTION_COLUMNS
from collect.events import typed_events_sql

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
            ("fields_int", pa.map_(S, I64)),
            ("fields_str", pa.map_(S, S)),
            ("parse_status", S),
            ("body", S),
        ]
    ),
    # events as streamed, fields still in the printed body: finalize_events types them in bulk
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


class TableWriter:
    """Append row tuples (without run/host); flushed to Parquet every ``batch`` rows."""

    def __init__(self, path, name, run, host, batch=65536):
        self.schema = SCHEMAS[name]
        self.path, self.run, self.host, self.batch = path, run, host, batch
        self.rows = []
        self.count = 0
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")

    def append(self, row):
        self.rows.append(row)
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self):
        if not self.rows:
            return
        n = len(self.rows)
        cols = list(zip(*self.rows, strict=True))
        arrays = [pa.array([self.run] * n, S), pa.array([self.host] * n, S)]
        for field, col in zip(list(self.schema)[2:], cols, strict=True):
            arrays.append(pa.array(col, field.type))
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.count += n
        self.rows = []

    def close(self):
        self.flush()
        self.writer.close()


def write_rows(path, name, run, host, rows):
    w = TableWriter(path, name, run, host)
    for r in rows:
        w.append(r)
    w.close()
    return w.count


def connect(table_dirs):
    """DuckDB connection with one view per table over every ``<dir>/<table>.parquet`` given."""
    con = duck()
    for name in TABLES:
        files = [os.path.join(d, name + ".parquet") for d in table_dirs]
        files = [f for f in files if os.path.exists(f)]
        if files:
            con.execute(
                "CREATE VIEW %s AS SELECT * FROM read_parquet(%s, union_by_name=true)"
                % (name, "[" + ",".join("'%s'" % f.replace("'", "''") for f in files) + "]")
            )
        else:  # an empty view with the right columns, so queries need no special cases
            con.register("_empty_" + name, SCHEMAS[name].empty_table())
            con.execute("CREATE VIEW %s AS SELECT * FROM _empty_%s" % (name, name))
    return con


def finalize_calls(raw_path, out_path, first_switch):
    """Second pass in DuckDB: name each row's parent from the lost frame its closing named, and give rows seen
    before a CPU's first context-switch banner the task that banner switched away from."""
    con = duck()
    con.register(
        "fs",
        pa.table(
            {
                "cpu": pa.array([c for c in first_switch], I32),
                "fseq": pa.array([v[0] for v in first_switch.values()], I64),
                "ftask": pa.array([v[1] for v in first_switch.values()], S),
                "fpid": pa.array([v[2] for v in first_switch.values()], I32),
            }
        ),
    )
    src = raw_path.replace("'", "''")
    con.execute(
        f"""COPY (
          SELECT c.* REPLACE (
            coalesce(c.task, CASE WHEN c.seq < fs.fseq THEN fs.ftask END) AS task,
            coalesce(c.pid, CASE WHEN c.seq < fs.fseq THEN fs.fpid END) AS pid,
            coalesce(c.parent, p.function) AS parent)
          FROM read_parquet('{src}') c
          LEFT JOIN (SELECT id, function FROM read_parquet('{src}') WHERE status = 'orphan') p ON p.id = c.parent_id
          LEFT JOIN fs ON fs.cpu = c.cpu
        ) TO '{out_path.replace("'", "''")}' (FORMAT parquet, COMPRESSION zstd)"""
    )
    con.close()
    os.unlink(raw_path)


def finalize_events(raw_path, out_path, formats):
    """Type every event's fields from its format in one vectorised DuckDB pass; returns {parse_status: count}."""
    con = duck()
    con.execute("CREATE VIEW raw AS SELECT * FROM read_parquet('%s')" % raw_path.replace("'", "''"))
    setup, query = typed_events_sql(formats)
    con.execute(setup)
    con.execute("COPY (%s) TO '%s' (FORMAT parquet, COMPRESSION zstd)" % (query, out_path.replace("'", "''")))
    counts = dict(
        con.execute(
            "SELECT parse_status, count(*) FROM read_parquet('%s') GROUP BY 1" % out_path.replace("'", "''")
        ).fetchall()
    )
    con.close()
    os.unlink(raw_path)
    return counts
