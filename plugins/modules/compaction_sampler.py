#!/usr/bin/python
"""Sample the per-node fragmentation score and compaction counters into scores.jsonl, on the trace clock."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compaction_sampler
short_description: Sample fragmentation scores and compaction counters every N ms into scores.jsonl
description:
  - Every I(interval_ms) reads C(/proc/buddyinfo) and C(/proc/vmstat) and writes one JSON line per node to
    I(dest) - the kernel-exact score (C(module_utils/fragmentation.py)), both watermarks at the live
    C(compaction_proactiveness), per-zone extfrag, whether kswapd runs, and the C(compact_*)/C(pgmigrate_*)
    counters. The format is the C(scores.jsonl) contract in docs/interfaces.md.
  - With I(trace_instance), samples are placed on that tracefs instance's clock. When its C(trace_clock) is
    C(mono), C(mono_raw) or C(boot) the sampler reads the same clock (C(ts_source=clock)); otherwise (C(local),
    C(global), ...) it writes C(compaction_lab_score seq=N node=N score=N) to the instance's C(trace_marker) at each
    sample, and the marker's timestamp is the sample's trace time (C(ts_source=marker)).
  - Runs until I(duration) seconds have passed or I(stop_file) appears; meant for C(async) + C(poll=0).
version_added: "0.1.0"
author: compaction-lab
options:
  dest:
    description: scores.jsonl path on the host (parent directory must exist). Overwritten.
    type: path
    required: true
  interval_ms:
    description: Sampling period.
    type: int
    default: 100
  duration:
    description: Seconds to sample.
    type: float
    required: true
  stop_file:
    description: Stop early as soon as this file exists.
    type: path
  trace_instance:
    description: Name of the tracefs instance (under C(instances/)) or its full path, to share its clock.
    type: str
  phase:
    description: Free-text label written into every sample.
    type: str
attributes:
  check_mode:
    support: none
notes:
  - Only reads procfs; writes only I(dest) and, with a C(local)-clock instance, that instance's C(trace_marker).
"""

EXAMPLES = r"""
- name: Sample scores for the experiment, on the capture's clock
  compaction_sampler:
    dest: /var/tmp/compaction-lab/scores.jsonl
    duration: 120
    interval_ms: 100
    trace_instance: compaction_lab
    stop_file: /var/tmp/compaction-lab/stop
  async: 300
  poll: 0
"""

RETURN = r"""
samples:
  description: Number of samples taken (lines written = samples x nodes).
  type: int
  returned: always
  sample: 1200
ts_source:
  description: clock, marker or none (see description).
  type: str
  returned: always
trace_clock:
  description: The instance's trace clock, when an instance was given.
  type: str
  returned: always
peak:
  description: Per node, the highest score seen and its watermarks.
  type: dict
  returned: always
  sample: {"0": {"score": 96, "wmark_low": 80, "wmark_high": 90}}
dest:
  description: Path written.
  type: str
  returned: always
"""

import json
import os
import platform
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.fragmentation import (
    hpage_order,
    node_scores,
    parse_buddyinfo,
    parse_vmstat,
    parse_zoneinfo,
    watermarks,
    would_trigger,
)
from ansible.module_utils.tracefs import kthread_pids, task_state

# The trace clocks user space can read directly, and the clock_gettime clock that matches each.
READABLE_CLOCKS = {"mono": time.CLOCK_MONOTONIC, "mono_raw": time.CLOCK_MONOTONIC_RAW, "boot": time.CLOCK_BOOTTIME}


def read(path):
    with open(path) as f:
        return f.read()


def instance_dir(name):
    if os.path.isabs(name):
        return name
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        path = os.path.join(root, "instances", name)
        if os.path.isdir(path):
            return path
    raise OSError("tracefs instance %r not found under /sys/kernel/tracing/instances" % name)


def main():
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "interval_ms": {"type": "int", "default": 100},
            "duration": {"type": "float", "required": True},
            "stop_file": {"type": "path"},
            "trace_instance": {"type": "str"},
            "phase": {"type": "str"},
        },
        supports_check_mode=False,
    )
    p = module.params
    if p["interval_ms"] < 10:
        module.fail_json(
            msg="interval_ms %d is below 10: reading buddyinfo that often perturbs what it measures" % p["interval_ms"]
        )
    try:
        order = hpage_order(int(read("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")), os.sysconf("SC_PAGE_SIZE"))
        zoneinfo = parse_zoneinfo(read("/proc/zoneinfo"))  # present pages do not change while sampling
        marker, clock_name, clock_id = None, None, None
        if p["trace_instance"]:
            inst = instance_dir(p["trace_instance"])
            clock_name = re.search(r"\[(\S+)\]", read(os.path.join(inst, "trace_clock"))).group(1)
            clock_id = READABLE_CLOCKS.get(clock_name)
            if clock_id is None:
                marker = open(os.path.join(inst, "trace_marker"), "w")  # noqa: SIM115 - held for the whole run
    except (OSError, ValueError, AttributeError) as e:
        module.fail_json(msg="cannot start sampling: %s" % e)
    ts_source = "clock" if clock_id is not None else "marker" if marker else "none"
    # Kernel threads keep their pids: look them up once.
    kswapd = {int(comm[len("kswapd") :]): pid for comm, pid in kthread_pids("kswapd").items()}
    release = platform.release()
    peak = {}
    seq = 0
    end = time.monotonic() + p["duration"]
    try:
        with open(p["dest"], "w") as out:
            while time.monotonic() < end and not (p["stop_file"] and os.path.exists(p["stop_file"])):
                tick = time.monotonic()
                proactiveness = int(read("/proc/sys/vm/compaction_proactiveness"))
                low, high, _ = watermarks(proactiveness, release)
                stamp = {
                    "ts": time.clock_gettime(clock_id) if clock_id is not None else None,
                    "mono": time.clock_gettime(time.CLOCK_MONOTONIC),
                    "boot": time.clock_gettime(time.CLOCK_BOOTTIME),
                    "wall": time.time(),
                }
                nodes = node_scores(parse_buddyinfo(read("/proc/buddyinfo")), zoneinfo, order)
                vmstat = parse_vmstat(read("/proc/vmstat"), ("compact_", "pgmigrate_"))
                for node, n in nodes.items():
                    kswapd_running = task_state(kswapd.get(node)) == "R"
                    if marker:
                        marker.write("compaction_lab_score seq=%d node=%d score=%d\n" % (seq, node, n["score"]))
                        marker.flush()
                    rec = {
                        "seq": seq,
                        "node": node,
                        "score": n["score"],
                        "wmark_low": low,
                        "wmark_high": high,
                        "proactiveness": proactiveness,
                        "would_trigger": would_trigger(n["score"], high, proactiveness, kswapd_running)[0],
                        "kswapd_running": kswapd_running,
                        "ts_source": ts_source,
                        **stamp,
                        "zones": {
                            z["name"]: {"extfrag": z["extfrag"], "free_pages": z["free_pages"]} for z in n["zones"]
                        },
                        "vmstat": vmstat,
                    }
                    if p["phase"]:
                        rec["phase"] = p["phase"]
                    out.write(json.dumps(rec, separators=(",", ":")) + "\n")
                    best = peak.get(str(node))
                    if best is None or n["score"] > best["score"]:
                        peak[str(node)] = {"score": n["score"], "wmark_low": low, "wmark_high": high}
                out.flush()
                seq += 1
                time.sleep(max(0.0, p["interval_ms"] / 1000.0 - (time.monotonic() - tick)))
    finally:
        if marker:
            marker.close()
    module.exit_json(changed=True, samples=seq, ts_source=ts_source, trace_clock=clock_name, peak=peak, dest=p["dest"])


if __name__ == "__main__":
    main()
