"""QEMU lab targets (issue 4), measured on this machine and printed beside the targets:

  fresh   empty cache -> per guest, side by side: lab_up -l <guest> (rootfs, kernel, initrd, image, boot)
          -> trace_manual -l <guest>; the first guest's trace                                  <= 300 s
          (each guest's time is printed: the x86_64 one does not wait for the arm64 build under qemu-user)
  cached  warm cache  -> lab_up (each guest resumes from its booted snapshot)         -> first trace   <=  45 s
          and the same with -e lab_snapshots=false (a cold boot of the cached image), side by side
  boot-to-SSH / resume-to-SSH per guest (qemu_vm's boot_seconds: QEMU start to the guest's SSH banner)

"First trace" = playbooks/trace_manual.yml on both guests in parallel (function_graph on *compact*/*migrate* +
compaction/migrate events around one manual compaction), results in a throwaway folder. The fresh run uses a
throwaway COMPACTION_LAB_CACHE, so the real cache is untouched; it takes minutes: skip it with --cached-only.
Run: .venv/bin/python benchmarks/bench_lab.py [--cached-only] [-i INVENTORY... -l GUESTS]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
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
# -l HOSTS, plus -i INVENTORY... when the benchmark runs on private guests (--inventory/--limit).
TARGET = ["-l", HOSTS]
TARGETS = {"fresh": 300, "cached": 45}
# A measurement, not a test of the deadline: on the shared 2-core machine (load 20) an arm64 boot took > 600 s,
# lab_up's default wait.
BOOT_DEADLINE = ["-e", "qemu_guest_wait_timeout=1800"]
# lab_up's per-guest line, which the yaml callback may fold: "<host>: <arch> <kernel> (tcg), ... boot-to-SSH 18.2 s"
# (or resume-to-SSH)
BOOT_LINE = re.compile(r"([\w.-]+): \S+ \S+ \((?:tcg|kvm)\),[^']*?((?:boot|resume)-to-SSH)\s+([\d.]+)\s+s")


# The second target: the capture in each 2 GiB guest (function_graph *compact* + *migrate* + compaction and
# migrate events, automatic buffer) loses nothing. Filled from each run's trace.meta.json per guest.
CAPTURES: dict[str, dict] = {}
CAPTURE_KEYS = ("kernel", "tracer", "mode", "buffer_size_kb", "entries_written", "entries_in_buffer", "lost_events")


def loadavg() -> str:
    """1/5/15-min load: the machine is shared, so every figure is printed beside it."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ansible(tool: str, *args: str, cache: Path | None = None) -> str:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
    if cache:
        env["COMPACTION_LAB_CACHE"] = str(cache)
    proc = subprocess.run([str(BIN / tool), *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{tool} {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def lab_to_first_trace(
    cache: Path | None, label: str, target: list[str] = TARGET, up_args: tuple[str, ...] = ()
) -> tuple[float, float, dict[str, float], dict[str, int]]:
    """Seconds from nothing running to a trace on every guest of target, of which lab_up; boot-to-SSH (or
    resume-to-SSH) and event counts per guest."""
    started = time.monotonic()
    try:
        up = ansible("ansible-playbook", "playbooks/lab_up.yml", *target, *BOOT_DEADLINE, *up_args, cache=cache)
        up_seconds = time.monotonic() - started
        with tempfile.TemporaryDirectory(prefix="bench-lab-results-") as results:
            ansible(
                "ansible-playbook",
                "playbooks/trace_manual.yml",
                *target,
                "-e",
                f"experiment_results_dir={results}",
                cache=cache,
            )
            elapsed = time.monotonic() - started
            events = {
                trace.parent.name: sum("mm_compaction_" in line for line in trace.open(errors="replace"))
                for trace in Path(results).glob("*/*/trace.txt")
            }
            for meta_path in Path(results).glob("*/*/trace.meta.json"):
                meta = json.loads(meta_path.read_text())
                CAPTURES[f"{meta_path.parent.name} ({label})"] = {k: meta.get(k) for k in CAPTURE_KEYS}
    finally:
        ansible("ansible-playbook", "playbooks/lab_down.yml", *target, cache=cache)
    boots = {f"{how} {h}": float(s) for h, how, s in BOOT_LINE.findall(up)}
    return elapsed, up_seconds, boots, events


def fresh_side_by_side(cache: Path) -> dict[str, tuple[float, float, dict[str, float], dict[str, int]]]:
    """Each guest on its own, as `lab_up -l <guest> && trace_manual -l <guest>`, all started together on one empty
    cache (shared builds are built once: guest_image locks each artifact). {guest: lab_to_first_trace's result}."""
    hosts, rest = TARGET[1].split(","), TARGET[2:]
    with concurrent.futures.ThreadPoolExecutor(len(hosts)) as pool:
        runs = {h: pool.submit(lab_to_first_trace, cache, "fresh", ["-l", h, *rest]) for h in hosts}
        return {h: run.result() for h, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cached-only", action="store_true", help="skip the fresh-cache run (minutes)")
    parser.add_argument(
        "--no-warmup", action="store_true", help="the images are known to be cached (the lab just ran): skip the "
        "warm-up boot",
    )  # fmt: skip
    parser.add_argument(
        "-i", "--inventory", action="append", default=[], help="inventories (default: ansible.cfg's), e.g. a private "
        "one naming your own guests on your own ports; give inventory/local.yml and inventory/lab.yml too",
    )  # fmt: skip
    parser.add_argument("-l", "--limit", default=HOSTS, help="one x86_64 and one arm64 guest (default %(default)s)")
    args = parser.parse_args()
    TARGET[:] = ["-l", args.limit] + [a for inv in args.inventory for a in ("-i", inv)]

    ansible("ansible-playbook", "playbooks/lab_down.yml", *TARGET)  # start from nothing running
    if not args.no_warmup:
        # Warm the cache first so "cached" is what it says, whatever state the machine was in.
        try:
            ansible("ansible-playbook", "playbooks/lab_up.yml", *TARGET, *BOOT_DEADLINE)
        finally:
            ansible("ansible-playbook", "playbooks/lab_down.yml", *TARGET)
    # Rows are printed as they are measured: the fresh run takes many minutes on a loaded machine.
    print("machine shared with other engineers: load = /proc/loadavg (1/5/15 min) when the figure was taken")
    print(f"{'measure':42} {'target':>8} {'measured':>9} {'ratio':>6}   load", flush=True)
    report("cached images -> first lab trace", "cached", *lab_to_first_trace(None, "cached"))
    cold = lab_to_first_trace(None, "cold", up_args=("-e", "lab_snapshots=false"))
    report("cached, cold boot -> first lab trace", None, *cold)
    if not args.cached_only:
        # A throwaway COMPACTION_LAB_CACHE; the real cache stays untouched.
        with tempfile.TemporaryDirectory(prefix="bench-lab-cache-") as tmp:
            per_guest = fresh_side_by_side(Path(tmp))
        load = loadavg()
        first = min(per_guest, key=lambda h: per_guest[h][0])
        row(f"fresh cache -> first lab trace ({first})", TARGETS["fresh"], per_guest[first][0], load)
        for host, result in sorted(per_guest.items()):
            report(f"fresh cache, {host} -> its trace", None, *result)
    print("lost events at the automatic buffer (target 0):")
    for host, c in sorted(CAPTURES.items()):
        print(f"  {host:20} " + "  ".join(f"{k} {c[k]}" for k in CAPTURE_KEYS))


def report(
    name: str, target: str | None, seconds: float, up_seconds: float, boots: dict[str, float], events: dict[str, int]
) -> None:
    load = loadavg()
    label = name.split(" -> ")[0]
    row(name, TARGETS[target] if target else None, seconds, load)
    row(f"  of which lab_up ({label})", None, up_seconds, load)
    row(f"  of which trace_manual ({label})", None, seconds - up_seconds, load)
    for what, boot in sorted(boots.items()):
        row(f"{what} ({label})", None, boot, load)
    print(f"compaction events in the {label} run's trace: {events}")


def row(name: str, target: int | None, seconds: float, load: str) -> None:
    ratio = f"{seconds / target:.2f}" if target else "-"
    print(f"{name:42} {(str(target) + ' s') if target else '-':>8} {seconds:8.1f}s {ratio:>6}   {load}", flush=True)


if __name__ == "__main__":
    main()
