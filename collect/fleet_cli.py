"""Fleet subcommands of `python -m collect`: run (ansible-runner), history (results store), fetch (pyinfra)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from collect import fetch, fleet_summary, history, regressions
from collect.runner import ROOT, experiments, run_experiment

RESULTS = ROOT / "results"


def prune_runs(results_dir: Path, keep: int) -> list[str]:
    """Retention: delete all but the newest `keep` run folders, only once their rows are in the history."""
    runs = sorted((p for p in Path(results_dir).iterdir() if p.is_dir() and history.RUN_ID.match(p.name)), reverse=True)
    stored = history.store_dir(results_dir) / "hosts"
    pruned = []
    for run_dir in runs[keep:]:
        # A run that never produced summary.json has nothing in the history: its raw folder is the only record
        # of what went wrong, but it still counts against retention (a broken fleet must not fill the disk).
        if (run_dir / "summary.json").exists() and not (stored / f"{run_dir.name}.parquet").exists():
            history.ingest_run(run_dir, results_dir)
        shutil.rmtree(run_dir)
        pruned.append(run_dir.name)
    return pruned


def cmd_run(args) -> int:
    extravars = {}
    for item in args.extra_vars or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"-e {item!r}: use KEY=VALUE")
        extravars[key] = value
    outcome = run_experiment(
        args.experiment,
        args.inventory,
        args.limit,
        forks=args.forks,
        serial=args.serial,
        extravars=extravars,
        results_dir=args.results,
    )
    results_dir = outcome.run_dir.parent
    if (outcome.run_dir / "summary.json").exists():
        history.ingest_run(outcome.run_dir, results_dir)
    for host, state in sorted(outcome.hosts.items()):
        print(f"{host:24} {state['status']:12} {state.get('msg') or ''}".rstrip())
    if args.keep_runs:
        for name in prune_runs(results_dir, args.keep_runs):
            print(f"retention: removed {name} (its figures stay in {history.store_dir(results_dir)})")
    report = outcome.run_dir / "report.html"
    print(f"run {outcome.run_id}: ansible {outcome.status} (rc {outcome.rc}) in {outcome.seconds:.0f}s")
    print(f"results: {outcome.run_dir}" + (f"  report: {report}" if report.exists() else "  (no report)"))
    return outcome.exit_code


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def cmd_history(args) -> int:
    results_dir = Path(args.results)
    new = history.ingest_new(results_dir)
    if new:
        print(f"ingested {len(new)} run(s) into {history.store_dir(results_dir)}", file=sys.stderr)
    rows = history.trends(results_dir, host=args.host, kernel=args.kernel, experiment=args.experiment, last=args.last)
    if args.format == "json":
        print(json.dumps(rows, default=str, indent=2))
        return 0
    if not rows:
        print(f"no runs in {history.store_dir(results_dir)} (python -m collect run EXPERIMENT adds them)")
        return 0
    cols = [
        "started",
        "run",
        "status",
        "compactions",
        "success_rate",
        "latency_p50_us",
        "d_latency_p50_us",
        "latency_p95_us",
        "pages_migrated",
        "d_pages_migrated",
        "lost_events",
        "score_before",
        "score_after",
    ]
    group = None
    for row in rows:
        key = (row["host"], row["kernel"], row["arch"])
        if key != group:
            group = key
            print(f"\n{row['host']}  kernel {row['kernel'] or '?'}  arch {row['arch'] or '?'}")
            print("  " + "  ".join(c.rjust(14) for c in cols))
        print("  " + "  ".join(_fmt(row[c]).rjust(14) for c in cols))
    print("\nd_* = change against the previous run of the same host and kernel")
    return 0


def cmd_fleet(args) -> int:
    run_dir = regressions.resolve_run(args.run, args.results)
    print(fleet_summary.markdown(run_dir))
    return regressions.baseline_report(args, run_dir, args.results) if args.baseline else 0


def register(sub) -> None:
    """Add run/history to collect's argparse subparsers (collect/cli.py calls this)."""
    p = sub.add_parser("run", help="run an experiment across the fleet through ansible-runner, then collect")
    p.add_argument("experiment", help=f"experiment playbook name: {', '.join(experiments()) or '(none yet)'}")
    p.add_argument("-i", "--inventory", action="append", help="inventory source (repeatable)")
    p.add_argument("-l", "--limit", help="host pattern, as ansible-playbook --limit")
    p.add_argument("-f", "--forks", type=int, help="parallel hosts (default: ansible.cfg forks)")
    p.add_argument("--serial", help="batch size for large fleets, e.g. 10 or 25%%")
    p.add_argument("-e", "--extra-vars", action="append", metavar="KEY=VALUE", help="extra variable (repeatable)")
    p.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: %(default)s)")
    p.add_argument("--keep-runs", type=int, metavar="N", help="retention: keep the newest N run folders")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("history", help="trends per host and kernel from the results store (Parquet + DuckDB)")
    p.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: %(default)s)")
    p.add_argument("--host", help="only this inventory host")
    p.add_argument("--kernel", help="only kernels starting with this release, e.g. 6.12")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--last", type=int, default=10, help="runs per host and kernel (default: %(default)s)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("fleet", help="one run across the fleet: host outcomes, figures per arch and per kernel")
    p.add_argument("run", help="run id or folder")
    p.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: %(default)s)")
    regressions.add_arguments(p)
    p.set_defaults(func=cmd_fleet)

    fetch.register(sub, RESULTS)
