"""Fleet comparison on the real 3-guest lab: x86 6.1 (lab-x86), arm64 6.1 (lab-arm), x86 6.12 (lab-x86-612).

lab-x86 and lab-arm come from the shared session fixture; only the 6.12 guest is booted here (and it is the one
killed mid-run, so the shared guests stay up for later tests). Runs go through `python -m collect run`, which
drives playbooks/compare.yml with ansible-runner — the path the scheduled runs take.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, _env, ansible_adhoc, ansible_playbook, run

pytestmark = pytest.mark.lab
EXTRA = "lab-x86-612"
HOSTS = ("lab-x86", "lab-arm", EXTRA)


@pytest.fixture(scope="module")
def three_guests(lab):
    """The shared guests plus lab-x86-612 (opt-in: not in the session lab unless COMPACTION_LAB_HOSTS names it)."""
    ours = EXTRA not in lab
    try:
        if ours:
            ansible_playbook("lab_up.yml", "-l", EXTRA, timeout=1800)
        yield HOSTS
    finally:
        if ours:
            ansible_playbook("lab_down.yml", "-l", EXTRA, timeout=600)


def _collect_run(results, *args, **popen):
    cmd = [sys.executable, "-m", "collect", "run", "trace_manual", "-l", ",".join(HOSTS), "--results", results, *args]
    return subprocess.Popen(
        [str(c) for c in cmd], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def _collect(*args):
    return run([sys.executable, "-m", "collect", *args], timeout=600)


def _run_dir(stdout: str, results: Path) -> Path:
    return results / re.search(r"^run (\S+):", stdout, re.M).group(1)


def test_compare_reports_every_guest_with_arch_and_kernel(three_guests, tmp_path):
    proc = _collect_run(tmp_path)
    out, err = proc.communicate(timeout=2400)
    assert proc.returncode == 0, f"{out}\n{err}"
    run_dir = _run_dir(out, tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())["hosts"]
    assert set(summary) == set(HOSTS)
    assert summary["lab-arm"]["arch"] == "aarch64"
    assert summary["lab-x86"]["arch"] == summary[EXTRA]["arch"] == "x86_64"
    assert summary["lab-x86"]["kernel"].startswith("6.1.") and summary[EXTRA]["kernel"].startswith("6.12.")
    report = (run_dir / "report.md").read_text() + (run_dir / "report.html").read_text()
    compare = (run_dir / "compare.md").read_text() + (run_dir / "fleet.md").read_text()
    for host, s in summary.items():
        for text in (report, compare):
            assert host in text and s["kernel"] in text and s["arch"] in text, host
    # Progress was shown and ansible-runner's artifacts are kept with the run.
    assert "PLAY Collect the run and build the comparison report" in err
    assert any((run_dir / "runner" / "artifacts" / "ansible" / "job_events").glob("*.json"))
    assert (run_dir / "runner" / "artifacts" / "ansible" / "rc").read_text().strip() == "0"


def test_fetch_pulls_a_scheduled_run_off_a_control_node(three_guests, tmp_path):
    """lab-x86-612 plays the control node a timer left a run on; fetch pulls it over SSH (pyinfra) from the same
    inventory and ingests it; a second fetch finds nothing new."""
    made = ROOT / "tests" / "fixtures" / "host-6.18"  # a real capture, laid out as a run
    run_id = "20261125T000000Z-trace_manual"
    staged = tmp_path / "staged" / run_id
    shutil.copytree(made, staged / "local")
    _collect("summary", staged, "--format", "json")
    archive = shutil.make_archive(str(tmp_path / "run"), "gztar", staged.parent)
    remote = "/var/tmp/compaction-lab-fetch-test"
    ansible_adhoc(EXTRA, "ansible.builtin.file", f"path={remote} state=directory mode=0755")
    ansible_adhoc(EXTRA, "ansible.builtin.unarchive", f"src={archive} dest={remote}")
    local = tmp_path / "results"
    proc = _collect("fetch", "-l", EXTRA, "--remote-results", remote, "--results", local)
    assert f"fetched: {run_id}" in proc.stdout, proc.stdout + proc.stderr
    assert (local / run_id / "summary.json").read_bytes() == (staged / "summary.json").read_bytes()
    assert json.loads((local / run_id / "fetched.json").read_text())["host"] == EXTRA
    assert (local / "history" / "hosts" / f"{run_id}.parquet").exists()
    again = _collect("fetch", "-l", EXTRA, "--remote-results", remote, "--results", local)
    assert "fetched: nothing new" in again.stdout
    ansible_adhoc(EXTRA, "ansible.builtin.file", f"path={remote} state=absent")


def _wait_for_event(events_dir: Path, host: str, kinds: set[str], deadline: float) -> dict:
    while time.monotonic() < deadline:
        for path in sorted(events_dir.glob("*.json")) if events_dir.exists() else ():
            try:
                event = json.loads(path.read_text())
            except ValueError:  # being written
                continue
            if event.get("event") in kinds and event.get("event_data", {}).get("host") == host:
                return event
        time.sleep(1)
    raise AssertionError(f"no {kinds} event for {host} in {events_dir}")


def test_guest_killed_mid_run_is_reported_missing_while_others_complete(three_guests, tmp_path):
    proc = _collect_run(tmp_path)
    try:
        # Wait until the experiment has really started on the 6.12 guest (a task after fact gathering succeeded).
        runs = _wait_for(lambda: [p for p in tmp_path.iterdir() if p.is_dir() and p.name != "history"], 600)
        events = runs[0] / "runner" / "artifacts" / "ansible" / "job_events"
        _wait_for_event(events, EXTRA, {"runner_on_ok"}, time.monotonic() + 900)
        pidfile = Path(_lab_cache()) / "run" / EXTRA / "qemu.pid"
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        out, err = proc.communicate(timeout=2400)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=300)
    assert proc.returncode == 2, f"partial run must exit 2\n{out}\n{err}"  # EXIT_PARTIAL
    run_dir = _run_dir(out, tmp_path)
    hosts = json.loads((run_dir / "run.json").read_text())["hosts"]
    assert hosts[EXTRA]["status"] in {"unreachable", "failed"}, hosts
    assert hosts["lab-x86"]["status"] == hosts["lab-arm"]["status"] == "ok", hosts
    summary = json.loads((run_dir / "summary.json").read_text())["hosts"]
    assert {"lab-x86", "lab-arm"} <= set(summary)
    assert summary["lab-x86"]["compactions"] and summary["lab-arm"]["compactions"]
    assert re.search(rf"^{EXTRA}\s+(unreachable|failed)", out, re.M)
    # The dead guest's console tail is kept with its results (why it died); the guests that finished get none.
    console = run_dir / EXTRA / "console.log"
    assert console.exists() and console.stat().st_size > 0, f"no console tail for the dead guest in {run_dir}"
    assert not (run_dir / "lab-x86" / "console.log").exists()
    assert (run_dir / "report.html").exists()


def _wait_for(probe, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"timed out after {seconds}s waiting for {probe}")


def _lab_cache() -> str:
    return os.environ.get("COMPACTION_LAB_CACHE", os.path.expanduser("~/.cache/compaction-lab"))
