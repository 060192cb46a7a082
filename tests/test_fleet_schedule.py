"""roles/fleet_schedule: real units checked by systemd's own verifier, and the service's command run for real.

PID 1 here is not systemd, so the role writes the units to a scratch folder with activation off; everything
systemd would read (unit syntax, calendar expression, ExecStart binary) is still checked by systemd-analyze.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, ansible_playbook, run


@pytest.fixture
def control_inventory(tmp_path):
    inv = tmp_path / "control.yml"
    inv.write_text(
        "fleet_control:\n  hosts:\n    local:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n"
    )
    return inv


def _schedule(inventory, unit_dir, results, **overrides):
    evars = {
        "fleet_schedule_project_dir": str(ROOT),
        "fleet_schedule_unit_dir": str(unit_dir),
        "fleet_schedule_results_dir": str(results),
        "fleet_schedule_activate": False,
        "fleet_schedule_inventory": ["inventory/local.yml"],
        "fleet_schedule_limit": "local",
        "fleet_schedule_keep_runs": 1,
        **overrides,
    }
    return ansible_playbook("fleet_schedule.yml", "-i", inventory, "-e", json.dumps(evars), check=False)


def _recap_changed(stdout: str) -> int:
    return int(re.search(r"local\s+: ok=\d+\s+changed=(\d+)", stdout).group(1))


def _service(unit_dir):
    """WorkingDirectory, Environment and ExecStart argv of the installed service, unescaped as systemd does."""
    text = (unit_dir / "compaction-lab-nightly.service").read_text()
    keys = dict(re.findall(r"^(WorkingDirectory|Environment|ExecStart)=(.*)$", text, re.M))
    argv = [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(keys["ExecStart"])]
    env = dict(kv.split("=", 1) for kv in shlex.split(keys["Environment"]))
    return keys["WorkingDirectory"], env, argv


def test_units_pass_systemd_verify_and_role_is_idempotent(control_inventory, tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    first = _schedule(control_inventory, units, tmp_path / "results", fleet_schedule_run_args=["--serial", "25%"])
    assert first.returncode == 0, first.stdout
    assert _recap_changed(first.stdout) == 1
    service, timer = units / "compaction-lab-nightly.service", units / "compaction-lab-nightly.timer"
    verify = run(["systemd-analyze", "verify", service, timer], check=False)
    assert verify.returncode == 0, verify.stderr
    assert "OnCalendar=*-*-* 02:30:00" in timer.read_text()
    workdir, env, argv = _service(units)
    assert workdir == str(ROOT) and env["ANSIBLE_CONFIG"] == str(ROOT / "ansible.cfg")
    # % must reach collect as a literal: systemd would expand a single % as a specifier.
    assert argv[-2:] == ["--serial", "25%"] and "25%%" in service.read_text()
    again = _schedule(control_inventory, units, tmp_path / "results", fleet_schedule_run_args=["--serial", "25%"])
    assert again.returncode == 0 and _recap_changed(again.stdout) == 0, again.stdout
    removed = _schedule(control_inventory, units, tmp_path / "results", fleet_schedule_state="absent")
    assert removed.returncode == 0 and not list(units.iterdir())


def test_bad_calendar_is_refused_before_any_unit_is_written(control_inventory, tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    proc = _schedule(control_inventory, units, tmp_path / "results", fleet_schedule_on_calendar="every tuesday-ish")
    assert proc.returncode != 0
    assert "is not a systemd calendar expression" in proc.stdout and "Examples: daily" in proc.stdout
    assert not list(units.iterdir())


@pytest.mark.host
def test_service_command_runs_for_real_with_retention(control_inventory, tmp_path, is_root):
    """Run the installed ExecStart for real: trace_manual on this machine through ansible-runner, the run in the
    history store, and retention (keep 1) pruning an older run — a real capture laid out as a run and never
    ingested — only after its rows went into the history."""
    units, results = tmp_path / "units", tmp_path / "results"
    units.mkdir()
    older = results / "20250101T000000Z-trace_manual"
    shutil.copytree(ROOT / "tests" / "fixtures" / "host-6.18", older / "local")
    run([sys.executable, "-m", "collect", "summary", older, "--format", "json"])
    assert _schedule(control_inventory, units, results).returncode == 0
    workdir, env, argv = _service(units)
    proc = subprocess.run(
        argv, cwd=workdir, env={**os.environ, **env}, capture_output=True, text=True, timeout=1800, check=False
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    new = re.search(r"^run (\S+):", proc.stdout, re.M).group(1)
    assert "PLAY Collect the run and build the comparison report" in proc.stderr  # progress lines
    assert not older.exists() and f"retention: removed {older.name}" in proc.stdout
    events = list((results / new / "runner" / "artifacts" / "ansible" / "job_events").glob("*.json"))
    assert len(events) > 10
    assert json.loads((results / new / "run.json").read_text())["hosts"]["local"]["status"] == "ok"
    assert (results / new / "report.html").exists() and (results / new / "fleet.md").exists()
    hist = run([argv[0], "-m", "collect", "history", "--results", results, "--format", "json"])
    rows = json.loads(hist.stdout)
    assert [r["run"] for r in rows] == [older.name, new]
    assert rows[1]["host"] == "local" and rows[1]["kernel"] == os.uname().release
