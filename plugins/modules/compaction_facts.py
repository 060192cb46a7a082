#!/usr/bin/python
"""Gather a host's memory compaction state exactly as the kernel computes it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compaction_facts
short_description: Gather memory compaction state the way the kernel computes it
description:
  - Reads C(/proc/buddyinfo), C(/proc/zoneinfo), C(/proc/vmstat), the vm sysctls, THP settings, debugfs
    C(extfrag/) and tracefs, and returns C(ansible_facts.compaction).
  - The per-node fragmentation score, watermarks and per-zone extfrag follow the kernel's integer arithmetic
    (mm/compaction.c fragmentation_score_node, mm/vmstat.c extfrag_for_order); the watermark formula is chosen
    by kernel version and reported in C(wmark_formula).
  - Never changes the host. Tracefs capabilities are probed without writing (set_ftrace_filter is opened for
    append and closed untouched).
  - Where something cannot be read (no root, no buddyinfo, no debugfs, no tracefs) it returns what it can and lists
    what is missing, and why, in C(missing).
version_added: "0.1.0"
author: compaction-lab
options:
  proc_root:
    description: Root of procfs; change only to read a saved snapshot.
    type: path
    default: /proc
  sys_root:
    description: Root of sysfs; change only to read a saved snapshot.
    type: path
    default: /sys
attributes:
  check_mode:
    support: full
  facts:
    support: full
notes:
  - Mounting debugfs/tracefs is the C(tracefs) role's job; this module only reports whether they are mounted.
"""

EXAMPLES = r"""
- name: Gather compaction facts
  compaction_facts:

- name: Show node 0's score against its watermarks
  ansible.builtin.debug:
    msg: "{{ ansible_facts.compaction.nodes[0].score }} vs {{ ansible_facts.compaction.nodes[0].wmark_high }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts under the C(compaction) key.
  returned: always
  type: dict
  contains:
    compaction:
      description: >-
        kernel, arch, page_size, hpage_pmd_size, hpage_order, proactiveness, extfrag_threshold, thp, wmark_formula,
        mounts (debugfs, tracefs mount points or null),
        nodes (score, wmark_low, wmark_high, would_trigger, why, kswapd_running, kcompactd_pid, node_present, zones
        with present/managed/free_pages/free_by_order/extfrag), vmstat, debugfs_extfrag, ftrace, missing.
      type: dict
      returned: always
      sample:
        kernel: 6.1.0-56-amd64
        arch: x86_64
        page_size: 4096
        hpage_order: 9
        proactiveness: 20
        wmark_formula: "pre-6.16: low=max(100-p,5); high=min(low+10,100)"
        nodes:
          - node: 0
            score: 3
            wmark_low: 80
            wmark_high: 90
            would_trigger: false
            why: "score 3 <= wmark_high 90: free memory is not fragmented enough"
"""

import os
import platform
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.fragmentation import (
    hpage_order,
    node_scores,
    parse_buddyinfo,
    parse_unusable_index,
    parse_vmstat,
    parse_zoneinfo,
    watermarks,
    would_trigger,
)
from ansible.module_utils.tracefs import capabilities, find_tracefs, kthread_pids, mount_points, task_state


class Reader:
    """Reads files under the proc/sys roots, recording what is missing instead of failing."""

    def __init__(self, proc_root, sys_root):
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.missing = []

    def _read(self, root, rel, why):
        path = os.path.join(root, rel)
        try:
            with open(path) as f:
                return f.read()
        except OSError as e:
            self.missing.append("%s: %s (%s)" % (path, e.strerror, why))
            return None

    def proc(self, rel, why):
        return self._read(self.proc_root, rel, why)

    def sys(self, rel, why):
        return self._read(self.sys_root, rel, why)


def bracketed(text):
    """'always [madvise] never' -> 'madvise'."""
    m = re.search(r"\[([^\]]+)\]", text or "")
    return m.group(1) if m else (text or "").strip() or None


def debugfs_extfrag(reader, sys_root):
    out = {"available": False, "unusable_index": {}, "extfrag_index": {}}
    base = os.path.join(sys_root, "kernel/debug/extfrag")
    if not os.path.isdir(base):
        reader.missing.append("%s: not present (debugfs not mounted, or no root)" % base)
        return out
    for name in ("unusable_index", "extfrag_index"):
        text = reader.sys("kernel/debug/extfrag/" + name, "debugfs cross-check")
        if text is not None:
            out[name] = {"%d/%s" % k: v for k, v in parse_unusable_index(text).items()}
            out["available"] = True
    return out


def gather(proc_root="/proc", sys_root="/sys"):
    r = Reader(proc_root, sys_root)
    uname = platform.uname()
    facts = {"kernel": uname.release, "arch": uname.machine, "page_size": os.sysconf("SC_PAGE_SIZE")}
    osrelease = r.proc("sys/kernel/osrelease", "kernel release")
    if osrelease:
        facts["kernel"] = osrelease.strip()

    hpmd = r.sys("kernel/mm/transparent_hugepage/hpage_pmd_size", "huge page order (no THP support?)")
    facts["hpage_pmd_size"] = int(hpmd) if hpmd else None
    facts["hpage_order"] = hpage_order(facts["hpage_pmd_size"], facts["page_size"]) if hpmd else None
    if facts["hpage_order"] is None:
        # COMPACTION_HPAGE_ORDER falls back to HUGETLB_PAGE_ORDER or PMD_SHIFT - PAGE_SHIFT; without THP the
        # PMD size cannot be read here, so the score is not computed rather than guessed.
        r.missing.append("score: hpage_order unknown, fragmentation score not computed")

    proact = r.proc("sys/vm/compaction_proactiveness", "kernel without proactive compaction (< 5.9)?")
    facts["proactiveness"] = int(proact) if proact else None
    thresh = r.proc("sys/vm/extfrag_threshold", "extfrag_threshold")
    facts["extfrag_threshold"] = int(thresh) if thresh else None
    facts["thp"] = {
        k: bracketed(r.sys("kernel/mm/transparent_hugepage/" + k, "THP setting")) for k in ("enabled", "defrag")
    }

    buddy = r.proc("buddyinfo", "free block counts per order")
    zoneinfo = r.proc("zoneinfo", "zone present/managed pages")
    procs = {**kthread_pids("kcompactd", proc_root), **kthread_pids("kswapd", proc_root)}
    facts["nodes"] = []
    facts["wmark_formula"] = None
    if buddy is not None and zoneinfo is not None and facts["hpage_order"] is not None:
        p = facts["proactiveness"] if facts["proactiveness"] is not None else 0
        low, high, formula = watermarks(p, facts["kernel"])
        facts["wmark_formula"] = formula
        for node, n in node_scores(parse_buddyinfo(buddy), parse_zoneinfo(zoneinfo), facts["hpage_order"]).items():
            # kswapd_is_running(): the kswapd thread is on a run queue (TASK_RUNNING).
            kswapd_running = task_state(procs.get("kswapd%d" % node), proc_root) == "R"
            trig, why = would_trigger(n["score"], high, p, kswapd_running)
            facts["nodes"].append(
                {
                    "node": node,
                    "score": n["score"],
                    "wmark_low": low,
                    "wmark_high": high,
                    "would_trigger": trig,
                    "why": why,
                    "kswapd_running": kswapd_running,
                    "kcompactd_pid": procs.get("kcompactd%d" % node),
                    "node_present": n["node_present"],
                    "zones": n["zones"],
                }
            )

    vmstat = r.proc("vmstat", "compaction counters")
    facts["vmstat"] = parse_vmstat(vmstat) if vmstat else {}
    facts["debugfs_extfrag"] = debugfs_extfrag(r, sys_root)

    live = proc_root == "/proc"
    facts["mounts"] = {fs: (mount_points(fs) or [None])[0] if live else None for fs in ("debugfs", "tracefs")}
    root = find_tracefs() if live else None
    if not root:
        r.missing.append("tracefs: not mounted (the tracefs role mounts it)")
    facts["ftrace"] = capabilities(root)
    if os.geteuid() != 0:
        r.missing.append("not root: tracefs, debugfs and some /proc files need root")
    facts["missing"] = r.missing
    return facts


def main():
    module = AnsibleModule(
        argument_spec={
            "proc_root": {"type": "path", "default": "/proc"},
            "sys_root": {"type": "path", "default": "/sys"},
        },
        supports_check_mode=True,
    )
    try:
        facts = gather(module.params["proc_root"], module.params["sys_root"])
    except ValueError as e:
        module.fail_json(msg="cannot parse compaction state: %s" % e)
    for m in facts["missing"]:
        module.warn(m)
    module.exit_json(changed=False, ansible_facts={"compaction": facts})


if __name__ == "__main__":
    main()
