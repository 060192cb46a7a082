"""`compare --baseline RUN`: flag per-host regressions of a run against a baseline run, thresholds printed.

Hosts are matched by inventory name, so a host that moved from 6.1 to 6.12 between the runs is compared with
itself and the kernel change is shown next to the verdict. Figures come from history.host_metrics (one home).
A direction of +1 means "higher is worse" (latency, lost events), -1 "lower is worse" (success rate, pages
migrated by a run whose job is to compact).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collect.history import host_metrics, load_run


@dataclass(frozen=True)
class Threshold:
    metric: str
    label: str
    direction: int  # +1: an increase is a regression; -1: a decrease is
    limit: float
    relative: bool  # limit is a fraction of the baseline (else an absolute difference)

    def describe(self) -> str:
        sign = "+" if self.direction > 0 else "-"
        return f"{sign}{self.limit:.0%}" if self.relative else f"{sign}{self.limit:g}"


DEFAULT_THRESHOLDS = (
    Threshold("latency_p50_us", "compaction latency p50 (us)", +1, 0.25, True),
    Threshold("latency_p95_us", "compaction latency p95 (us)", +1, 0.25, True),
    Threshold("success_rate", "compaction success rate", -1, 0.10, False),
    Threshold("pages_migrated", "pages migrated", -1, 0.25, True),
    Threshold("lost_events", "lost events", +1, 0, False),
    Threshold("orphan_exits", "orphan exits (entries lost)", +1, 0, False),
)


def parse_threshold_overrides(items: list[str]) -> tuple[Threshold, ...]:
    """`metric=25%` (relative) or `metric=0.1` (absolute) overrides for the defaults."""
    by_metric = {t.metric: t for t in DEFAULT_THRESHOLDS}
    for item in items or ():
        name, _, value = item.partition("=")
        if name not in by_metric or not value:
            raise SystemExit(f"--threshold {item!r}: use METRIC=VALUE[%], METRIC one of {', '.join(by_metric)}")
        relative = value.endswith("%")
        try:
            limit = float(value.rstrip("%")) / (100 if relative else 1)
        except ValueError:
            raise SystemExit(f"--threshold {item!r}: {value!r} is not a number") from None
        t = by_metric[name]
        by_metric[name] = Threshold(t.metric, t.label, t.direction, limit, relative)
    return tuple(by_metric.values())


def _verdict(t: Threshold, base, now) -> tuple[str, str]:
    if base is None or now is None:
        return "n/a", "no data"
    diff = (now - base) * t.direction  # > 0 means worse
    if t.relative:
        if base == 0:
            return ("REGRESSION" if diff > 0 else "ok"), "from 0"
        change = (now - base) / abs(base)
        return ("REGRESSION" if diff / abs(base) > t.limit else "ok"), f"{change:+.0%}"
    return ("REGRESSION" if diff > t.limit else "ok"), f"{now - base:+g}"


def find_regressions(run_dir: Path, baseline_dir: Path, thresholds=DEFAULT_THRESHOLDS) -> list[dict]:
    """One row per (host, metric) present in both runs; hosts in only one run get a single 'missing' row."""
    _, now = load_run(Path(run_dir))
    _, base = load_run(Path(baseline_dir))
    rows = []
    for host in sorted(set(now["hosts"]) | set(base["hosts"])):
        if host not in now["hosts"] or host not in base["hosts"]:
            where = "this run" if host not in now["hosts"] else "the baseline"
            rows.append({"host": host, "metric": "-", "verdict": "missing", "change": f"not in {where}"})
            continue
        m_now, m_base = host_metrics(now["hosts"][host]), host_metrics(base["hosts"][host])
        kernels = m_now["kernel"] if m_now["kernel"] == m_base["kernel"] else f"{m_base['kernel']} -> {m_now['kernel']}"
        for t in thresholds:
            verdict, change = _verdict(t, m_base[t.metric], m_now[t.metric])
            rows.append(
                {
                    "host": host,
                    "kernel": kernels,
                    "arch": m_now["arch"],
                    "metric": t.label,
                    "baseline": m_base[t.metric],
                    "now": m_now[t.metric],
                    "change": change,
                    "threshold": t.describe(),
                    "verdict": verdict,
                }
            )
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def format_table(rows: list[dict], run: str, baseline: str) -> str:
    cols = ("host", "kernel", "metric", "baseline", "now", "change", "threshold", "verdict")
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = [f"Regressions of {run} against baseline {baseline}"]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    flagged = sum(r["verdict"] == "REGRESSION" for r in rows)
    lines.append(f"{flagged} regression(s) flagged; a threshold is the worst change tolerated against the baseline.")
    return "\n".join(lines)


def add_arguments(parser):
    """The baseline options of `compare`; the compare command calls `baseline_report(args, run_dir)`."""
    parser.add_argument("--baseline", metavar="RUN", help="flag regressions against this run (id or folder)")
    parser.add_argument(
        "--threshold",
        action="append",
        metavar="METRIC=VALUE[%]",
        help="override a regression threshold, e.g. latency_p95_us=40%% or lost_events=10",
    )
    parser.add_argument("--fail-on-regression", action="store_true", help="exit 3 when a regression is flagged")


def resolve_run(ref: str, results_dir: Path) -> Path:
    path = Path(ref)
    if path.is_dir():
        return path
    if (Path(results_dir) / ref).is_dir():
        return Path(results_dir) / ref
    raise SystemExit(f"baseline {ref!r}: no such run folder (looked in {results_dir}); list runs: ls {results_dir}")


def baseline_report(args, run_dir: Path, results_dir: Path) -> int:
    baseline = resolve_run(args.baseline, results_dir)
    rows = find_regressions(run_dir, baseline, parse_threshold_overrides(args.threshold))
    print(format_table(rows, Path(run_dir).name, baseline.name))
    return 3 if args.fail_on_regression and any(r["verdict"] == "REGRESSION" for r in rows) else 0
