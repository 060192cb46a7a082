"""The 3-guest lab comparison end to end, time split per phase (goal: <= 10 min on this 2-core machine).

  bring-up    lab_up.yml for lab-x86, lab-arm, lab-x86-612 (cached images: boot to SSH)
  experiment  compare.yml's experiment plays (trace_manual on all three, in parallel)
  collect     fetch every host's capture, normalize it, summary.json and run.json (roles/experiment_run finish)
  report      side-by-side comparison + HTML/Markdown report
  teardown    lab_down.yml (printed, not counted against the goal)

Also printed (not counted): pulling that run back from a guest acting as control node, `collect fetch` (pyinfra)
against the ansible-core equivalent playbook (tar + fetch + unarchive), side by side — docs/decisions.md.

Phases inside the ansible run are cut at ansible-runner's event timestamps (job_events/*.json), so the split is
what ansible saw, not a guess. Run: .venv/bin/python benchmarks/bench_fleet.py [--keep-up]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from collect.fetch import fetch  # noqa: E402
from collect.runner import run_experiment  # noqa: E402

HOSTS = "lab-x86,lab-arm,lab-x86-612"
GOAL_S = 600
# Collect starts where roles/experiment_run's finish packs the host's capture (fetch, unpack, normalize, run.json);
# the compare play's first task starts the report.
COLLECT_TASK = "Pack the capture folder"
CONTROL, REMOTE = "lab-x86", "/opt/compaction-lab/results"
# What a playbook needs for the same pull with ansible-core alone (fetch is file-only, no synchronize/archive).
ANSIBLE_FETCH = """
- hosts: {host}
  gather_facts: false
  tasks:
    - ansible.builtin.command: tar -czf /tmp/bench-fetch.tgz -C {remote} {run}
    - ansible.builtin.fetch: {{src: /tmp/bench-fetch.tgz, dest: {dest}/, flat: true}}
    - ansible.builtin.file: {{path: /tmp/bench-fetch.tgz, state: absent}}
    - ansible.builtin.unarchive: {{src: {dest}/bench-fetch.tgz, dest: {dest}}}
      delegate_to: localhost
"""


def loadavg() -> str:
    """1/5/15-min load: the machine is shared, so every figure is printed beside it."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def playbook(name: str, *args: str) -> float:
    start = time.monotonic()
    subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), str(ROOT / "playbooks" / name), *args],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        # The caller's environment stays (HOME locates the lab cache and its SSH key).
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        },
    )
    return time.monotonic() - start


def fetch_side_by_side(run_dir: Path) -> tuple[float, float]:
    """Put the run on CONTROL as a scheduled run would leave it, then pull it back both ways (seconds)."""
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        # One archive, one transfer: ansible.builtin.copy of a directory is a round trip per file, which took
        # over 6 min for a run dir to a TCG guest.
        with tarfile.open(Path(tmp) / "run.tgz", "w:gz") as tar:
            tar.add(run_dir, arcname=run_dir.name)
        (Path(tmp) / "put.yml").write_text(f"""
- hosts: {CONTROL}
  gather_facts: false
  tasks:
    - ansible.builtin.file: {{path: {REMOTE}, state: directory, mode: "0755"}}
    - ansible.builtin.unarchive: {{src: {tmp}/run.tgz, dest: {REMOTE}}}
""")
        (Path(tmp) / "get.yml").write_text(
            ANSIBLE_FETCH.format(host=CONTROL, remote=REMOTE, run=run_dir.name, dest=tmp + "/a")
        )
        playbook(str(Path(tmp) / "put.yml"))
        start = time.monotonic()
        report = fetch(None, CONTROL, Path(tmp) / "p", REMOTE)
        pyinfra_s = time.monotonic() - start
        assert report[0].get("fetched") == [run_dir.name], report
        (Path(tmp) / "a").mkdir()
        ansible_s = playbook(str(Path(tmp) / "get.yml"))
        assert (Path(tmp) / "a" / run_dir.name / "summary.json").exists()
    return pyinfra_s, ansible_s


def phase_marks(events_dir: Path) -> dict[str, float]:
    """Epoch seconds of: start, first capture packed (collect), compare task start (report), end."""
    marks = {}
    for path in sorted(events_dir.glob("*.json")):
        e = json.loads(path.read_text())
        t = datetime.fromisoformat(e["created"]).timestamp()
        data = e.get("event_data", {})
        marks.setdefault("start", t)
        if e["event"] == "playbook_on_task_start" and data.get("task") == COLLECT_TASK:
            marks.setdefault("collect", t)
        if e["event"] == "playbook_on_task_start" and data.get("task") == "Compare the hosts side by side":
            marks["report"] = t
        marks["end"] = max(marks.get("end", t), t)
    return marks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-up", action="store_true", help="leave the guests running afterwards")
    args = ap.parse_args()
    load = {"start": loadavg()}
    try:
        phases = {"bring-up": playbook("lab_up.yml", "-l", HOSTS)}
        load["bring-up"] = loadavg()
        print(f"bring-up {phases['bring-up']:.1f} s (load {load['bring-up']})", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as results:
            outcome = run_experiment("trace_manual", limit=HOSTS, results_dir=Path(results))
            load["experiment"] = load["collect"] = load["report"] = loadavg()
            hosts = {h: s["status"] for h, s in outcome.hosts.items()}
            m = phase_marks(outcome.run_dir / "runner" / "artifacts" / "ansible" / "job_events")
            if "collect" not in m or "report" not in m:
                sys.exit(f"the run never reached the report play: {outcome.hosts}")
            phases["experiment"] = m["collect"] - m["start"]
            phases["collect"] = m["report"] - m["collect"]
            phases["report"] = m["end"] - m["report"]
            pyinfra_s, ansible_s = fetch_side_by_side(outcome.run_dir)
            load["fetch"] = loadavg()
    finally:
        teardown = None if args.keep_up else playbook("lab_down.yml", "-l", HOSTS)
    total = sum(phases.values())
    print(f"fleet comparison on {HOSTS} (hosts: {hosts})")
    print(f"load at start: {load['start']} (machine shared with other engineers; /proc/loadavg 1/5/15 min)")
    print(f"{'phase':12} {'seconds':>8} {'share':>6}   load at phase end")
    for name, secs in phases.items():
        print(f"{name:12} {secs:8.1f} {secs / total:6.0%}   {load[name]}")
    print(f"{'total':12} {total:8.1f}   goal {GOAL_S} s  ratio {total / GOAL_S:.2f} (<= 1.0 meets the goal)")
    print(
        f"fetch one run from {CONTROL}: collect fetch (pyinfra) {pyinfra_s:.1f} s, ansible-core playbook "
        f"{ansible_s:.1f} s, ratio {pyinfra_s / ansible_s:.2f}   load {load['fetch']}"
    )
    if teardown is not None:
        print(f"{'teardown':12} {teardown:8.1f}   (not counted)   load {loadavg()}")
    return 0 if all(s == "ok" for s in hosts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
