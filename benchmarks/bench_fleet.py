"""The 3-guest lab comparison end to end, time split per phase (goal: <= 10 min on this 2-core machine).

  bring-up    lab_up.yml for lab-x86, lab-arm, lab-x86-612 (cached images: boot to SSH)
  experiment  compare.yml's experiment plays (trace_manual on all three, in parallel)
  collect     summary.json for the run (normalize every host's trace)
  report      side-by-side comparison + HTML/Markdown report
  teardown    lab_down.yml (printed, not counted against the goal)

Phases inside the ansible run are cut at ansible-runner's event timestamps (job_events/*.json), so the split is
what ansible saw, not a guess. Run: .venv/bin/python benchmarks/bench_fleet.py [--keep-up]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from collect.runner import run_experiment  # noqa: E402

HOSTS = "lab-x86,lab-arm,lab-x86-612"
GOAL_S = 600
COLLECT_PLAY = "Collect the run and build the comparison report"


def playbook(name: str, *args: str) -> float:
    start = time.monotonic()
    subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), f"playbooks/{name}", *args],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    return time.monotonic() - start


def phase_marks(events_dir: Path) -> dict[str, float]:
    """Epoch seconds of: start, collect play start, compare task start, end."""
    marks = {}
    for path in sorted(events_dir.glob("*.json")):
        e = json.loads(path.read_text())
        t = datetime.fromisoformat(e["created"]).timestamp()
        data = e.get("event_data", {})
        marks.setdefault("start", t)
        if e["event"] == "playbook_on_play_start" and data.get("play") == COLLECT_PLAY:
            marks["collect"] = t
        if e["event"] == "playbook_on_task_start" and data.get("task") == "Compare the hosts side by side":
            marks["report"] = t
        marks["end"] = max(marks.get("end", t), t)
    return marks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-up", action="store_true", help="leave the guests running afterwards")
    args = ap.parse_args()
    phases = {"bring-up": playbook("lab_up.yml", "-l", HOSTS)}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as results:
        outcome = run_experiment("trace_manual", limit=HOSTS, results_dir=Path(results))
        m = phase_marks(outcome.run_dir / "runner" / "artifacts" / "ansible" / "job_events")
        phases["experiment"] = m["collect"] - m["start"]
        phases["collect"] = m["report"] - m["collect"]
        phases["report"] = m["end"] - m["report"]
        hosts = {h: s["status"] for h, s in outcome.hosts.items()}
    teardown = None if args.keep_up else playbook("lab_down.yml", "-l", HOSTS)
    total = sum(phases.values())
    print(f"fleet comparison on {HOSTS} (hosts: {hosts})")
    print(f"{'phase':12} {'seconds':>8} {'share':>6}")
    for name, secs in phases.items():
        print(f"{name:12} {secs:8.1f} {secs / total:6.0%}")
    print(f"{'total':12} {total:8.1f}   goal {GOAL_S} s  ratio {total / GOAL_S:.2f} (<= 1.0 meets the goal)")
    if teardown is not None:
        print(f"{'teardown':12} {teardown:8.1f}   (not counted)")
    return 0 if all(s == "ok" for s in hosts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
