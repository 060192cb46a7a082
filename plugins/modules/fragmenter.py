#!/usr/bin/python
"""Drive the fragmenter program until the node's fragmentation score reaches a target, hold, release."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fragmenter
short_description: Fragment free memory page by page until the fragmentation score reaches a target
description:
  - Runs the C(fragmenter) program (installed by the C(fragmenter) role). It takes free memory down to a
    C(MemAvailable) floor in base pages (C(MADV_NOHUGEPAGE)), then keeps one page per physically aligned 2^K
    block (PFNs from C(/proc/self/pagemap)) and frees the rest, for K = I(min_order), I(min_order)+1, ... up to
    the huge-page order, until the node score reaches I(target_score). Every freed block is then smaller than a
    huge page, so nearly all free memory counts as fragmented while the memory held is only 1/2^K of it.
  - The score is read after every step through C(module_utils/fragmentation.py), exactly as the kernel computes
    it, with the watermarks of the running kernel at the live C(compaction_proactiveness).
  - Holds the memory for I(hold_seconds) (kcompactd checks every 500 ms; a pass that does not lower the score
    defers the next one by 32 s), then releases it. The program also releases on SIGTERM/SIGINT, on its own
    deadline, and when this module dies (its stdin closes).
  - Refuses to start, touching nothing, when C(MemAvailable) is already below I(floor_mb). The program sets its
    own C(oom_score_adj) to 1000 so the OOM killer would pick it before anything else.
version_added: "0.1.0"
author: compaction-lab
options:
  binary:
    description: Path of the fragmenter program on the host.
    type: path
    required: true
  floor_mb:
    description:
      - C(MemAvailable) never goes below this while allocating (checked every 4 MiB).
      - Default is the larger of 64 MiB and 3% of C(MemTotal). Free memory left above the floor stays in large
        blocks and caps the score that can be reached (a 2 GiB guest at 64 MiB reaches about 93).
    type: int
  max_mb:
    description: Allocate at most this much (0 = down to the floor).
    type: int
    default: 0
  target_score:
    description:
      - Stop spreading once the score of the most fragmented node reaches this.
      - Default I(wmark_high) + I(margin).
    type: int
  margin:
    description: Points above C(wmark_high) for the default target (kcompactd needs score > wmark_high).
    type: int
    default: 3
  min_order:
    description:
      - First K (1 = free every other physical page, 2 = three of every four, ...).
      - Default the huge-page order minus 3 (6 for 4 KiB pages with 2 MiB huge pages). Each step costs one madvise
        call per freed run, and under TCG the low orders (one call per page) take seconds; starting at 6 reaches
        the score of K=1..6 in one step.
    type: int
  max_order:
    description: Last K. Default the huge-page order, the largest K that leaves every freed block unusable.
    type: int
  settle_ms:
    description: Pause after each step before reading the score (freed pages pass through per-CPU lists).
    type: int
    default: 300
  hold_seconds:
    description: Seconds to hold the fragmented state after the last step before releasing.
    type: int
    default: 60
  thp_mb:
    description:
      - After spreading, fault this many MiB of C(MADV_HUGEPAGE) memory into the fragmented free memory. With THP
        C(enabled) not C(never) and C(defrag) C(madvise) (Debian's default), C(always), C(defer+madvise), each
        fault compacts directly in this process (C(compact_stall), C(mm_compaction_try_to_compact_pages)).
      - 0 = no direct-compaction phase.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    details: Check mode only verifies the floor and the program, allocating nothing.
notes:
  - Proactive compaction also needs C(compaction_proactiveness) > 0 and kswapd asleep on the node; this module
    never changes sysctls (see C(compaction_trigger)).
"""

EXAMPLES = r"""
- name: Fragment memory past wmark_high and hold for 45 s
  fragmenter:
    binary: /usr/local/libexec/compaction-lab/fragmenter
    hold_seconds: 45
  async: 300
  poll: 0
  register: fragmenter_job
"""

RETURN = r"""
target_score:
  description: Score aimed at.
  type: int
  returned: success
  sample: 93
target_reached:
  description: Whether some node reached I(target_score).
  type: bool
  returned: success
peak_score:
  description: Highest node score read during the run.
  type: int
  returned: success
  sample: 96
seconds_to_target:
  description: Seconds from start to the first step whose score reached the target (null when never).
  type: float
  returned: success
wmark_low:
  description: Low watermark at the start.
  type: int
  returned: success
wmark_high:
  description: High watermark at the start.
  type: int
  returned: success
thp:
  description: The program's thp record (requested_kb, faulted_kb, anon_huge_kb, seconds) when I(thp_mb) > 0.
  type: dict
  returned: when thp_mb > 0
thp_modes:
  description: THP C(enabled) and C(defrag) modes in force for the faults.
  type: dict
  returned: when thp_mb > 0
  sample: {enabled: madvise, defrag: madvise}
ready:
  description: The program's ready record (pages, page_size, allocated_kb, alloc_seconds, pfn_source, oom_score_adj).
  type: dict
  returned: success
compacted_while_spreading:
  description: >-
    Pages were migrated during a step (kcompactd started once the score passed wmark_high mid-step), so spreading
    stopped: the score read after the step is already lowered by compaction; the sampler has the peak.
  type: bool
  returned: when it happened
started_mono:
  description: CLOCK_MONOTONIC seconds when the workload started (the sampler's C(mono) clock).
  type: float
  returned: success
started_wall:
  description: Wall-clock seconds when the workload started.
  type: float
  returned: success
t_ready:
  description: Seconds from start until the memory was allocated and its PFNs read.
  type: float
  returned: success
steps:
  description: >-
    One record per step (order, held_pages, freed_pages, madvise_calls, seconds, t, scores per node,
    compaction_delta = compact_*/pgmigrate_success counters that moved since the start).
  type: list
  elements: dict
  returned: success
released:
  description: The program's release record (reason, held_pages).
  type: dict
  returned: success
"""

import json
import os
import platform
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.fragmentation import (
    hpage_order,
    node_scores,
    parse_buddyinfo,
    parse_vmstat,
    parse_zoneinfo,
    vmstat_delta,
    watermarks,
)


def read(path):
    with open(path) as f:
        return f.read()


def meminfo_kb(key):
    for line in read("/proc/meminfo").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise ValueError("%s missing from /proc/meminfo" % key)


def compaction_counters():
    return parse_vmstat(read("/proc/vmstat"), ("compact_", "pgmigrate_success"))


def live_scores(order):
    """{node: score} of the running kernel, read now."""
    nodes = node_scores(parse_buddyinfo(read("/proc/buddyinfo")), parse_zoneinfo(read("/proc/zoneinfo")), order)
    return {node: n["score"] for node, n in nodes.items()}


class Program:
    """The fragmenter process and its one-line JSON protocol."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def record(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fragmenter exited (rc %s) without a record" % self.proc.wait())
        return json.loads(line)

    def command(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.record()

    def release(self):
        rec = self.command("release")
        self.proc.wait(timeout=60)
        return rec


def main():
    module = AnsibleModule(
        argument_spec={
            "binary": {"type": "path", "required": True},
            "floor_mb": {"type": "int"},
            "max_mb": {"type": "int", "default": 0},
            "target_score": {"type": "int"},
            "margin": {"type": "int", "default": 3},
            "min_order": {"type": "int"},
            "max_order": {"type": "int"},
            "settle_ms": {"type": "int", "default": 300},
            "hold_seconds": {"type": "int", "default": 60},
            "thp_mb": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not os.access(p["binary"], os.X_OK):
        module.fail_json(msg="%s is not an executable: install it with the fragmenter role" % p["binary"])
    page_size = os.sysconf("SC_PAGE_SIZE")
    try:
        order = hpage_order(int(read("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")), page_size)
    except OSError as e:
        module.fail_json(msg="cannot read the huge page size (%s): a kernel without THP is not supported" % e)
    max_order = p["max_order"] or order
    min_order = p["min_order"] if p["min_order"] is not None else max(1, order - 3)
    if not 1 <= min_order <= max_order <= order:
        module.fail_json(
            msg="need 1 <= min_order (%d) <= max_order (%d) <= huge-page order (%d): a larger K leaves free "
            "blocks of huge-page size, which do not count as fragmented" % (min_order, max_order, order)
        )
    thp = None
    if p["thp_mb"] > 0:
        thp = {k: read("/sys/kernel/mm/transparent_hugepage/" + k) for k in ("enabled", "defrag")}
        thp = {k: v[v.find("[") + 1 : v.find("]")] for k, v in thp.items()}
        if thp["enabled"] == "never" or thp["defrag"] not in ("always", "madvise", "defer+madvise"):
            module.fail_json(
                msg="THP enabled=%(enabled)s defrag=%(defrag)s: MADV_HUGEPAGE faults would not compact directly. "
                "Set enabled to madvise/always and defrag to madvise/always/defer+madvise (compaction_trigger), "
                "or leave thp_mb at 0." % thp
            )
    floor_mb = p["floor_mb"] if p["floor_mb"] is not None else max(64, meminfo_kb("MemTotal") * 3 // 100 // 1024)
    available_mb = meminfo_kb("MemAvailable") // 1024
    if available_mb < floor_mb + 4:
        module.fail_json(
            msg="MemAvailable %d MiB is below the floor %d MiB (+4 MiB step): refusing to start, nothing was "
            "allocated. Free memory on the host or lower floor_mb." % (available_mb, floor_mb),
            mem_available_mb=available_mb,
            floor_mb=floor_mb,
        )
    proactiveness = int(read("/proc/sys/vm/compaction_proactiveness"))
    low, high, formula = watermarks(proactiveness, platform.release())
    target = p["target_score"] if p["target_score"] is not None else min(high + p["margin"], 100)
    result = {
        "changed": False,
        "floor_mb": floor_mb,
        "hpage_order": order,
        "page_size": page_size,
        "proactiveness": proactiveness,
        "wmark_low": low,
        "wmark_high": high,
        "wmark_formula": formula,
        "target_score": target,
    }
    if thp:
        result["thp_modes"] = thp
    if module.check_mode:
        module.exit_json(**result)

    t0 = time.monotonic()
    # Start on the clocks the sampler records, so the time to the watermark is measured from the workload's start.
    result.update(started_mono=time.clock_gettime(time.CLOCK_MONOTONIC), started_wall=time.time())
    # The program's own deadline backs up this module's: it releases even if we are SIGKILLed mid-hold.
    deadline = p["hold_seconds"] + 600
    prog = Program(
        [p["binary"], "--floor-mb", str(floor_mb), "--max-mb", str(p["max_mb"]), "--deadline", str(deadline)]
    )
    try:
        ready = prog.record()
        if ready["event"] == "refused":
            prog.proc.wait(timeout=30)
            module.fail_json(msg=ready["msg"], **result)
        if ready["event"] != "ready":
            module.fail_json(msg="fragmenter: %s" % ready.get("msg", ready), **result)
        result.update(
            changed=True, ready=ready, steps=[], seconds_to_target=None, t_ready=round(time.monotonic() - t0, 3)
        )
        peak = max(live_scores(order).values())
        counters = compaction_counters()
        for k in range(min_order, max_order + 1):
            step = prog.command("spread %d" % k)
            if step["event"] != "spread":
                module.fail_json(msg="fragmenter: %s" % step.get("msg", step), **result)
            time.sleep(p["settle_ms"] / 1000.0)
            scores = live_scores(order)
            delta = vmstat_delta(counters, compaction_counters())
            step.update(
                t=round(time.monotonic() - t0, 3),
                scores={str(n): s for n, s in scores.items()},
                compaction_delta={k: v for k, v in delta.items() if v},
            )
            result["steps"].append(step)
            peak = max(peak, *scores.values())
            if max(scores.values()) >= target:
                result["seconds_to_target"] = step["t"]
                break
            # Pages migrated while spreading: compaction (kcompactd, once the score passed wmark_high mid-step)
            # is already undoing the pattern and has moved held pages, so the PFNs the next step would use are
            # stale. Stop here; the sampler saw the peak.
            if delta.get("pgmigrate_success"):
                result["compacted_while_spreading"] = True
                break
        if p["thp_mb"] > 0:
            result["thp"] = prog.command("thp %d" % p["thp_mb"])
            if result["thp"]["event"] != "thp":
                module.fail_json(msg="fragmenter: %s" % result["thp"].get("msg", result["thp"]), **result)
        hold_until = time.monotonic() + p["hold_seconds"]
        while time.monotonic() < hold_until and prog.proc.poll() is None:
            peak = max(peak, *live_scores(order).values())
            time.sleep(min(1.0, max(0.0, hold_until - time.monotonic())))
        result["released"] = prog.release() if prog.proc.poll() is None else {"reason": "exited early"}
        result.update(peak_score=peak, target_reached=result["seconds_to_target"] is not None)
    finally:
        if prog.proc.poll() is None:
            prog.proc.terminate()
            prog.proc.wait(timeout=60)
    if not result["target_reached"]:
        module.warn(
            "score %d never reached the target %d: memory outside the fragmenter's reach (page cache, the floor) "
            "still holds large free blocks; lower floor_mb or drop caches first" % (peak, target)
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
