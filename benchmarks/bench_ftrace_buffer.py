"""Lost events of a manual compaction capture: the ftrace module's automatic buffer vs the kernel's default size.

Runs playbooks/trace_manual.yml on one host twice per round - ftrace_capture_buffer_size_kb=0 (automatic: sized
from CPUs, tracer and expected duration, capped by MemAvailable) and the kernel's default (1410 KiB per CPU,
what the seed had) - and prints, side by side, what each kept: entries written, entries in the buffer, overrun
+ dropped events (per-CPU stats of trace.meta.json), and the share lost.

  .venv/bin/python benchmarks/bench_ftrace_buffer.py                    # this machine: tracepoints only
  .venv/bin/python benchmarks/bench_ftrace_buffer.py --host lab-x86     # a lab guest: function_graph (lab up)

On this machine function tracing is refused, so the capture is the compaction events only (a few thousand
entries): both sizes keep everything and the comparison shows it. On a guest with function_graph one compaction
writes ~820k entries (compaction-facts.md) and the default buffer loses most of them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL_DEFAULT_KB = 1410


def capture(host, buffer_kb, results):
    argv = [
        str(ROOT / ".venv/bin/ansible-playbook"), str(ROOT / "playbooks/trace_manual.yml"), "-l", host,
        "-e", "experiment_results_dir=%s" % results, "-e", "ftrace_capture_buffer_size_kb=%d" % buffer_kb,
        "-e", "ftrace_capture_name=bench_ftrace_buffer",
    ]  # fmt: skip
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    run = results / os.readlink(results / "latest")
    meta_path = run / re.sub(r"[^A-Za-z0-9._-]", "_", host) / "trace.meta.json"
    if not meta_path.exists():
        sys.exit("capture on %s failed (rc %d):\n%s" % (host, proc.returncode, proc.stdout[-3000:]))
    return json.loads(meta_path.read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="local", help="inventory host (default: local)")
    ap.add_argument("--rounds", type=int, default=2, help="capture pairs (default 2)")
    ap.add_argument("--keep", type=Path, help="keep the runs' results under this folder (default: thrown away)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_ftrace_buffer.") as tmp:
        tmp = args.keep or tmp
        for r in range(args.rounds):
            for label, kb in (("auto", 0), ("kernel default", KERNEL_DEFAULT_KB)):
                meta = capture(args.host, kb, Path(tmp) / ("%d-%d" % (r, kb)))
                rows.append((label, meta, " ".join(Path("/proc/loadavg").read_text().split()[:3])))
    print("host %s  kernel %s  tracer %s (%s buffer)%s" % (
        args.host, rows[0][1]["kernel"], rows[0][1]["tracer"], rows[0][1]["mode"],
        "  (fallback: %s)" % rows[0][1]["fallback_reason"] if rows[0][1]["fallback_reason"] else ""))  # fmt: skip
    print("machine shared with other engineers: load = /proc/loadavg (1/5/15 min) after each capture")
    print(
        "%-15s %12s %12s %12s %12s %8s   %s" % ("buffer", "KiB/CPU", "written", "in buffer", "lost", "lost %", "load")
    )
    totals = {}
    for label, m, load in rows:
        written, lost = m["entries_written"], m["lost_events"]
        totals.setdefault(label, [0, 0])
        totals[label][0] += written
        totals[label][1] += lost
        share = 100.0 * lost / written if written else 0.0
        print("%-15s %12d %12d %12d %12d %7.2f%%   %s" % (
            label, m["buffer_size_kb"], written, m["entries_in_buffer"], lost, share, load))  # fmt: skip
    (aw, al), (dw, dl) = totals["auto"], totals["kernel default"]
    print("lost share, auto vs kernel default: %.2f%% vs %.2f%%" % (100.0 * al / max(aw, 1), 100.0 * dl / max(dw, 1)))


if __name__ == "__main__":
    main()
