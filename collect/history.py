"""The results store: every run's per-host figures as Parquet, queried with DuckDB (embedded, no server).

Layout (under `results/history/`, one file per run so ingesting is atomic and re-ingesting replaces):
  hosts/<run-id>.parquet         one row per (run, host): status, kernel, arch and the figures of merit below
  compactions/<run-id>.parquet   one row per compaction: zone, trigger, task, duration_us, status

Raw run folders may be pruned by retention (`collect run --keep-runs`); the history keeps their rows.
The figures are computed once, here (`host_metrics`), for both the history and `compare --baseline`.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from datetime import UTC, datetime
from pathlib import Path

RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)-(.+)$")
# mm_compaction_end statuses that mean "compaction reached its goal" (compaction_status_string in mm/compaction.c).
SUCCESS_STATUSES = {"success", "complete"}
HOST_COLUMNS = {
    "run": "str",
    "experiment": "str",
    "started": "time",
    "host": "str",
    "status": "str",
    "msg": "str",
    "kernel": "str",
    "arch": "str",
    "tracer": "str",
    "compactions": "int",
    "success_rate": "float",
    "latency_mean_us": "float",
    "latency_p50_us": "float",
    "latency_p95_us": "float",
    "pages_migrated": "int",
    "migrate_scanned": "int",
    "free_scanned": "int",
    "lost_events": "int",
    "orphan_exits": "int",
    "score_before": "float",
    "score_after": "float",
}
COMPACTION_COLUMNS = {
    "run": "str",
    "host": "str",
    "kernel": "str",
    "arch": "str",
    "zone": "str",
    "trigger": "str",
    "task": "str",
    "duration_us": "float",
    "status": "str",
}


def _percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[round(pct) - 1])


def host_metrics(summary: dict) -> dict:
    """Figures of merit of one host's summary.json object (the issue 9 per-host contract)."""
    comps = summary.get("compactions") or []
    # A compaction whose begin or end was lost has no outcome: it counts for latency, not for the success rate.
    known = [c.get("status") for c in comps if c.get("status") and not str(c["status"]).startswith("unknown")]
    durations = [float(c["duration_us"]) for c in comps if c.get("duration_us") is not None]
    vm = summary.get("vmstat_delta") or {}
    integrity = summary.get("integrity") or {}
    score = summary.get("score") or {}
    return {
        "kernel": summary.get("kernel"),
        "arch": summary.get("arch"),
        "tracer": summary.get("tracer"),
        "compactions": len(comps),
        "success_rate": (sum(s in SUCCESS_STATUSES for s in known) / len(known)) if known else None,
        "latency_mean_us": statistics.fmean(durations) if durations else None,
        "latency_p50_us": _percentile(durations, 50),
        "latency_p95_us": _percentile(durations, 95),
        "pages_migrated": vm.get("pgmigrate_success"),
        "migrate_scanned": vm.get("compact_migrate_scanned"),
        "free_scanned": vm.get("compact_free_scanned"),
        "lost_events": integrity.get("lost_events"),
        "orphan_exits": integrity.get("orphan_exits"),
        "score_before": score.get("before"),
        "score_after": score.get("after"),
    }


def _started(run_id: str, run_meta: dict) -> datetime:
    stamp = RUN_ID.match(run_id)
    if run_meta.get("started"):
        try:
            return datetime.fromisoformat(str(run_meta["started"]).replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    return datetime.strptime(stamp.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def load_run(run_dir: Path) -> tuple[dict, dict]:
    """(run.json, summary.json) of a run folder; a clear error when the run was never collected."""
    run_dir = Path(run_dir)
    if not RUN_ID.match(run_dir.name):
        raise SystemExit(f"{run_dir}: not a run folder (expected results/<yyyymmddTHHMMSSZ>-<experiment>)")
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise SystemExit(f"{run_dir}: no summary.json — collect it first: python -m collect summary {run_dir}")
    run_path = run_dir / "run.json"
    run_meta = json.loads(run_path.read_text()) if run_path.exists() else {}
    return run_meta, json.loads(summary_path.read_text())


def run_rows(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """Rows for the hosts and compactions tables. Hosts run.json lists but summary.json lacks are kept as
    rows with their status (unreachable/failed), so trends show the gap instead of hiding it."""
    run_dir = Path(run_dir)
    run_meta, summary = load_run(run_dir)
    run_id = run_dir.name
    experiment = run_meta.get("experiment") or RUN_ID.match(run_id).group(2)
    started = _started(run_id, run_meta)
    statuses = run_meta.get("hosts") or {}
    hosts, compactions = [], []
    for host in sorted(set(statuses) | set(summary.get("hosts", {}))):
        per_host = summary.get("hosts", {}).get(host)
        state = statuses.get(host) or {"status": "ok" if per_host else "missing", "msg": ""}
        row = dict.fromkeys(HOST_COLUMNS)
        row.update(run=run_id, experiment=experiment, started=started, host=host, status=state.get("status"))
        row["msg"] = state.get("msg") or ""
        if per_host:
            row.update(host_metrics(per_host))
            for c in per_host.get("compactions") or []:
                compactions.append(
                    {
                        "run": run_id,
                        "host": host,
                        "kernel": row["kernel"],
                        "arch": row["arch"],
                        **{k: c.get(k) for k in ("zone", "trigger", "task", "duration_us", "status")},
                    }
                )
        hosts.append(row)
    return hosts, compactions


def store_dir(results_dir: Path) -> Path:
    return Path(results_dir) / "history"


def _write(table_dir: Path, run_id: str, rows: list[dict], columns: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "time": pa.timestamp("s", tz="UTC")}
    schema = pa.schema([(name, arrow[t]) for name, t in columns.items()])
    table = pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows], schema=schema)
    table_dir.mkdir(parents=True, exist_ok=True)
    tmp = table_dir / f".{run_id}.parquet.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, table_dir / f"{run_id}.parquet")


def ingest_run(run_dir: Path, results_dir: Path | None = None) -> int:
    """Write (or replace) one run in the store; returns the number of host rows."""
    run_dir = Path(run_dir)
    store = store_dir(results_dir or run_dir.parent)
    hosts, compactions = run_rows(run_dir)
    _write(store / "compactions", run_dir.name, compactions, COMPACTION_COLUMNS)
    _write(store / "hosts", run_dir.name, hosts, HOST_COLUMNS)
    return len(hosts)


def ingest_new(results_dir: Path) -> list[str]:
    """Ingest every collected run folder whose summary.json is newer than its stored rows."""
    results_dir = Path(results_dir)
    done = []
    for summary in sorted(results_dir.glob("*/summary.json")):
        run_dir = summary.parent
        if not RUN_ID.match(run_dir.name):
            continue
        stored = store_dir(results_dir) / "hosts" / f"{run_dir.name}.parquet"
        if not stored.exists() or stored.stat().st_mtime < summary.stat().st_mtime:
            ingest_run(run_dir, results_dir)
            done.append(run_dir.name)
    return done


def connect(results_dir: Path):
    """DuckDB connection with `hosts` and `compactions` views over the store's Parquet files."""
    import duckdb

    con = duckdb.connect()
    store = store_dir(results_dir)
    for table, columns in (("hosts", HOST_COLUMNS), ("compactions", COMPACTION_COLUMNS)):
        files = sorted((store / table).glob("*.parquet"))
        if files:
            paths = ", ".join(f"'{p}'" for p in files)
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet([{paths}], union_by_name = true)")
        else:  # an empty store still answers queries
            cols = ", ".join(f"NULL::{_duck(t)} AS {n}" for n, t in columns.items())
            con.execute(f"CREATE VIEW {table} AS SELECT {cols} WHERE false")
    return con


def _duck(arrow_type: str) -> str:
    return {"str": "VARCHAR", "int": "BIGINT", "float": "DOUBLE"}.get(arrow_type, "TIMESTAMPTZ")


TREND_SQL = """
SELECT host, kernel, arch, run, started, status, compactions, success_rate, latency_p50_us, latency_p95_us,
       pages_migrated, lost_events, score_before, score_after,
       latency_p50_us - lag(latency_p50_us) OVER w AS d_latency_p50_us,
       pages_migrated - lag(pages_migrated) OVER w AS d_pages_migrated
FROM hosts
WHERE ($host IS NULL OR host = $host) AND ($kernel IS NULL OR kernel LIKE $kernel || '%')
      AND ($experiment IS NULL OR experiment = $experiment)
WINDOW w AS (PARTITION BY host, kernel ORDER BY started)
QUALIFY row_number() OVER (PARTITION BY host, kernel ORDER BY started DESC) <= $last
ORDER BY host, kernel, started
"""


def trends(results_dir: Path, host=None, kernel=None, experiment=None, last=10) -> list[dict]:
    con = connect(results_dir)
    cur = con.execute(TREND_SQL, {"host": host, "kernel": kernel, "experiment": experiment, "last": last})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
