"""History store, fleet view and baseline regressions on real captures laid out as runs.

Run A: this host's real tracepoint capture (tests/fixtures/host-6.18: 3 compactions, 2 complete + 1 contended,
no lost events) as host `local`, with lab-arm unreachable in run.json. Run B: the seed's real x86 capture (ring
buffer overwritten, 12 orphan closings) as host `local`. Summaries come from the real `collect summary`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run

from collect import history
from collect.regressions import find_regressions

FIXTURES = ROOT / "tests" / "fixtures"
RUN_A, RUN_B = "20261125T100000Z-trace_manual", "20261126T100000Z-trace_manual"


def _collect(*args, check=True):
    return run([sys.executable, "-m", "collect", *args], check=check)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    a, b = root / RUN_A, root / RUN_B
    shutil.copytree(FIXTURES / "host-6.18", a / "local")
    hosts = {"local": {"status": "ok", "msg": ""}, "lab-arm": {"status": "unreachable", "msg": "ssh: refused"}}
    (a / "run.json").write_text(json.dumps({"run": RUN_A, "experiment": "trace_manual", "hosts": hosts}))
    (b / "local").mkdir(parents=True)
    shutil.copy(FIXTURES / "seed" / "trace.txt", b / "local" / "trace.txt")
    for run_dir in (a, b):
        _collect("summary", run_dir, "--format", "json")
    return root


def test_history_keeps_real_figures_and_the_unreachable_host(results):
    proc = _collect("history", "--results", results, "--format", "json")
    assert f"ingested 2 run(s) into {results / 'history'}" in proc.stderr
    rows = {(r["run"], r["host"]): r for r in json.loads(proc.stdout)}
    a = rows[(RUN_A, "local")]
    assert a["kernel"] == json.loads((FIXTURES / "host-6.18" / "trace.meta.json").read_text())["kernel"]
    assert a["compactions"] == 3 and a["lost_events"] == 0
    assert a["success_rate"] == pytest.approx(2 / 3)  # complete, complete, contended
    assert a["latency_p50_us"] == pytest.approx(265.163)
    assert rows[(RUN_A, "lab-arm")]["status"] == "unreachable" and rows[(RUN_A, "lab-arm")]["compactions"] is None
    b = rows[(RUN_B, "local")]
    assert b["success_rate"] is None  # both compactions lost their begin: no outcome, not a failure
    assert b["latency_p50_us"] == pytest.approx((158712.7 + 133383.8) / 2)
    # Re-running ingests nothing new; the table view groups per host and kernel.
    again = _collect("history", "--results", results, "--host", "local")
    assert "ingested" not in again.stderr and "local  kernel" in again.stdout
    assert {f.name for f in (results / "history" / "hosts").iterdir()} == {f"{RUN_A}.parquet", f"{RUN_B}.parquet"}


def test_fleet_view_names_missing_hosts_and_groups(results):
    out = _collect("fleet", RUN_A, "--results", results).stdout
    assert "1 of 2 hosts completed" in out
    assert "- lab-arm: unreachable — ssh: refused" in out
    assert "| arch x86_64 " in out and "| kernel 6.18 " in out


def test_baseline_flags_the_seeds_lost_entries_and_latency(results):
    rows = {r["metric"]: r for r in find_regressions(results / RUN_B, results / RUN_A)}
    assert rows["orphan exits (entries lost)"]["verdict"] == "REGRESSION"
    assert rows["compaction latency p50 (us)"]["verdict"] == "REGRESSION"
    assert rows["compaction success rate"]["verdict"] == "n/a"  # unknown outcomes are not counted as failures
    proc = _collect("fleet", RUN_B, "--results", results, "--baseline", RUN_A, "--fail-on-regression", check=False)
    assert proc.returncode == 3
    assert "threshold" in proc.stdout and "+25%" in proc.stdout and "REGRESSION" in proc.stdout
    # collect compare takes the same option (regressions of its first run).
    cmp = _collect("compare", results / RUN_B, "--baseline", RUN_A, check=False)
    assert cmp.returncode == 0 and f"Regressions of {RUN_B} against baseline {RUN_A}" in cmp.stdout
    # The same run against itself: nothing flagged; a loosened threshold is printed as given.
    same = _collect("fleet", RUN_A, "--results", results, "--baseline", RUN_A, "--threshold", "latency_p95_us=40%")
    assert "0 regression(s) flagged" in same.stdout and "+40%" in same.stdout


def test_bad_threshold_and_missing_baseline_are_clear_errors(results):
    bad = _collect("fleet", RUN_A, "--results", results, "--baseline", RUN_A, "--threshold", "speed=3", check=False)
    assert bad.returncode != 0 and "METRIC one of latency_p50_us" in bad.stderr
    gone = run(
        [sys.executable, "-m", "collect", "fleet", RUN_A, "--results", results, "--baseline", "nope"], check=False
    )
    assert gone.returncode != 0 and "baseline 'nope': no such run folder" in gone.stderr


def test_ingest_refuses_an_uncollected_run(tmp_path):
    run_dir = tmp_path / "20261127T000000Z-trace_manual"
    run_dir.mkdir()
    with pytest.raises(SystemExit, match=r"no summary\.json — collect it first"):
        history.ingest_run(Path(run_dir))
