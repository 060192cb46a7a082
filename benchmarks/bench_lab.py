"""QEMU lab targets (issue 4), measured on this machine and printed beside the targets:

  fresh   empty cache -> lab_up (debootstrap both arches, kernels, initrds, images, boot) -> first trace   <= 300 s
  cached  warm cache  -> lab_up (boot to SSH)                                          -> first trace   <=  45 s
  boot-to-SSH per guest (from qemu_vm's boot_seconds, the QEMU start to the guest's SSH banner)

"First trace" = playbooks/trace_manual.yml on both guests in parallel (function_graph on *compact*/*migrate* +
compaction/migrate events around one manual compaction), results in a throwaway folder. The fresh run uses a
throwaway COMPACTION_LAB_CACHE, so the real cache is untouched; it takes minutes: skip it with --cached-only.
Run: .venv/bin/python benchmarks/bench_lab.py [--cached-only]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOSTS = "lab-x86,lab-arm"
TARGETS = {"fresh": 300, "cached": 45}
# lab_up's per-guest line, which the yaml callback may fold: "<host>: <arch> <kernel> (tcg), ... boot-to-SSH 18.2 s"
BOOT_LINE = re.compile(r"([\w.-]+): \S+ \S+ \((?:tcg|kvm)\),[^']*?boot-to-SSH\s+([\d.]+)\s+s")


def ansible(tool: str, *args: str, cache: Path | None = None) -> str:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
    if cache:
        env["COMPACTION_LAB_CACHE"] = str(cache)
    proc = subprocess.run([str(BIN / tool), *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{tool} {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def lab_to_first_trace(cache: Path | None) -> tuple[float, dict[str, float], dict[str, int]]:
    """Seconds from nothing running to a trace on every guest; boot-to-SSH and event counts per guest."""
    started = time.monotonic()
    try:
        up = ansible("ansible-playbook", "playbooks/lab_up.yml", "-l", HOSTS, cache=cache)
        with tempfile.TemporaryDirectory(prefix="bench-lab-results-") as results:
            ansible(
                "ansible-playbook",
                "playbooks/trace_manual.yml",
                "-l",
                HOSTS,
                "-e",
                f"experiment_results_dir={results}",
                cache=cache,
            )
            elapsed = time.monotonic() - started
            events = {
                trace.parent.name: sum("mm_compaction_" in line for line in trace.open(errors="replace"))
                for trace in Path(results).glob("*/*/trace.txt")
            }
    finally:
        ansible("ansible-playbook", "playbooks/lab_down.yml", "-l", HOSTS, cache=cache)
    boots = {h: float(s) for h, s in BOOT_LINE.findall(up)}
    return elapsed, boots, events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached-only", action="store_true", help="skip the fresh-cache run (minutes)")
    args = parser.parse_args()

    rows = []
    ansible("ansible-playbook", "playbooks/lab_down.yml", "-l", HOSTS)  # start from nothing running
    # Warm the cache first so "cached" is what it says, whatever state the machine was in.
    ansible("ansible-playbook", "playbooks/lab_up.yml", "-l", HOSTS)
    ansible("ansible-playbook", "playbooks/lab_down.yml", "-l", HOSTS)
    cached, boots, events = lab_to_first_trace(None)
    rows.append(("cached images -> first lab trace", TARGETS["cached"], cached))
    if not args.cached_only:
        with tempfile.TemporaryDirectory(prefix="bench-lab-cache-") as tmp:
            fresh, fresh_boots, _ = lab_to_first_trace(Path(tmp))
        rows.insert(0, ("fresh cache -> first lab trace", TARGETS["fresh"], fresh))
        rows += [(f"boot-to-SSH {h} (fresh images)", None, s) for h, s in sorted(fresh_boots.items())]
    rows += [(f"boot-to-SSH {h} (cached)", None, s) for h, s in sorted(boots.items())]

    print(f"{'measure':42} {'target':>8} {'measured':>9} {'ratio':>6}")
    for name, target, seconds in rows:
        ratio = f"{seconds / target:.2f}" if target else "-"
        print(f"{name:42} {(str(target) + ' s') if target else '-':>8} {seconds:8.1f}s {ratio:>6}")
    print(f"compaction events in the first trace: {events}")


if __name__ == "__main__":
    main()
