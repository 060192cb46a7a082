#!/usr/bin/python
"""Trigger manual compaction and set/restore the compaction sysctl and THP settings, returning previous values."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compaction_trigger
short_description: Trigger manual compaction; set or restore compaction_proactiveness and THP enabled/defrag
description:
  - O(compact=true) writes C(1) to C(/proc/sys/vm/compact_memory) (all nodes) or to
    C(/sys/devices/system/node/nodeN/compact) for each of O(nodes). Compaction runs synchronously in this module's
    process, so it is finished when the task returns (and a kcompactd pid filter never sees it).
  - O(proactiveness), O(thp_enabled) and O(thp_defrag) are set only when given; the values they had are returned in
    C(previous), which can be passed back as O(restore) (an C(always:) section) to put the host back.
  - Values are validated against the running kernel before anything is written - proactiveness needs 5.9+
    (C(compaction_proactiveness) exists), THP modes must be among those the kernel lists, per-node compaction needs
    the node's C(compact) file (CONFIG_NUMA). Since 6.12 C(compact_memory) accepts only C(1), the one value written.
version_added: "0.1.0"
author: compaction-lab
options:
  compact:
    description: Run a manual compaction.
    type: bool
    default: false
  nodes:
    description: NUMA nodes to compact one by one; empty = all nodes through C(compact_memory).
    type: list
    elements: int
    default: []
  proactiveness:
    description: Value for C(/proc/sys/vm/compaction_proactiveness) (0-100).
    type: int
  thp_enabled:
    description: THP C(enabled) mode (always, madvise, never).
    type: str
  thp_defrag:
    description: THP C(defrag) mode (always, defer, defer+madvise, madvise, never).
    type: str
  restore:
    description: A C(previous) dict returned by an earlier run; its values are written back (keys missing = untouched).
    type: dict
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Raise proactiveness and make THP faults compact directly
  compaction_trigger:
    proactiveness: 100
    thp_enabled: always
    thp_defrag: always
  register: compaction_trigger_set

- name: Compact node 0 only
  compaction_trigger:
    compact: true
    nodes: [0]

- name: Put the settings back
  compaction_trigger:
    restore: "{{ compaction_trigger_set.previous }}"
"""

RETURN = r"""
previous:
  description: Values before this run of every setting it was asked to set (proactiveness int, thp_* str).
  returned: always
  type: dict
  sample: {proactiveness: 20, thp_enabled: madvise, thp_defrag: madvise}
current:
  description: Values after this run of the settings it manages and could read.
  returned: always
  type: dict
compacted:
  description: What was compacted (C(all) or C(node0) ...), in order.
  returned: always
  type: list
  elements: str
seconds:
  description: Wall time the compaction writes took (compaction is synchronous).
  returned: always
  type: float
"""

import contextlib
import os
import platform
import time

from ansible.module_utils.basic import AnsibleModule

PROACTIVENESS = "/proc/sys/vm/compaction_proactiveness"
COMPACT_MEMORY = "/proc/sys/vm/compact_memory"
THP = "/sys/kernel/mm/transparent_hugepage"


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def thp_modes(text):
    """'always [madvise] never' -> (['always', 'madvise', 'never'], 'madvise')."""
    words = (text or "").split()
    current = next((w[1:-1] for w in words if w.startswith("[")), None)
    return [w.strip("[]") for w in words], current


def settings(sys_root="/sys", proc_root="/proc"):
    """{name: (path, current value or None, allowed values or None)} of the settings this module manages."""
    out = {}
    p = read(proc_root + PROACTIVENESS[5:])
    out["proactiveness"] = (proc_root + PROACTIVENESS[5:], int(p) if p is not None else None, None)
    for key, fname in (("thp_enabled", "enabled"), ("thp_defrag", "defrag")):
        path = "%s%s/%s" % (sys_root, THP[4:], fname)
        allowed, cur = thp_modes(read(path))
        out[key] = (path, cur, allowed)
    return out


def validate(wanted, current, nodes, compact, sys_root="/sys"):
    """Error messages, each naming the fix, for values this kernel would refuse."""
    errors = []
    for key, value in wanted.items():
        path, cur, allowed = current[key]
        if cur is None:
            why = "kernel %s has no %s" % (platform.release(), path)
            if key == "proactiveness":
                why += " (compaction_proactiveness appeared in 5.9; CONFIG_COMPACTION needed)"
            else:
                why += " (CONFIG_TRANSPARENT_HUGEPAGE off)"
            errors.append("%s: %s" % (key, why))
        elif key == "proactiveness" and not 0 <= int(value) <= 100:
            errors.append("proactiveness %s: must be 0..100" % value)
        elif allowed is not None and value not in allowed:
            errors.append("%s %r: this kernel accepts %s" % (key, value, ", ".join(allowed)))
    if compact:
        if not nodes and not os.path.exists(COMPACT_MEMORY):
            errors.append("%s missing: kernel built without CONFIG_COMPACTION" % COMPACT_MEMORY)
        for n in nodes:
            if not os.path.exists("%s/devices/system/node/node%d/compact" % (sys_root, n)):
                online = sorted(d for d in os.listdir(sys_root + "/devices/system/node") if d.startswith("node"))
                errors.append(
                    "node%d has no compact file (nodes: %s; per-node compaction needs CONFIG_NUMA): use nodes: [] "
                    "for all nodes" % (n, ", ".join(online) or "none")
                )
    return errors


def write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def main():
    module = AnsibleModule(
        argument_spec={
            "compact": {"type": "bool", "default": False},
            "nodes": {"type": "list", "elements": "int", "default": []},
            "proactiveness": {"type": "int"},
            "thp_enabled": {"type": "str"},
            "thp_defrag": {"type": "str"},
            "restore": {"type": "dict"},
        },
        mutually_exclusive=[("restore", "proactiveness"), ("restore", "thp_enabled"), ("restore", "thp_defrag")],
        supports_check_mode=True,
    )
    p = module.params
    current = settings()
    wanted = {k: p[k] for k in ("proactiveness", "thp_enabled", "thp_defrag") if p[k] is not None}
    if p["restore"]:
        unknown = set(p["restore"]) - set(current)
        if unknown:
            module.fail_json(msg="restore: unknown keys %s (expected %s)" % (sorted(unknown), sorted(current)))
        wanted = {k: v for k, v in p["restore"].items() if v is not None}
    errors = validate(wanted, current, p["nodes"], p["compact"])
    if errors:
        module.fail_json(msg="; ".join(errors))
    changes = {k: v for k, v in wanted.items() if str(current[k][1]) != str(v)}
    previous = {k: current[k][1] for k in wanted}
    result = {"changed": bool(changes) or p["compact"], "previous": previous, "compacted": [], "seconds": 0.0}
    if not module.check_mode:
        try:
            for key, value in changes.items():
                write(current[key][0], value)
            started = time.monotonic()
            if p["compact"]:
                for target in ["node%d" % n for n in p["nodes"]] or ["all"]:
                    path = COMPACT_MEMORY if target == "all" else "/sys/devices/system/node/%s/compact" % target
                    write(path, 1)
                    result["compacted"].append(target)
            result["seconds"] = round(time.monotonic() - started, 3)
        except OSError as e:
            # Put back what was already changed before reporting: never leave the host half set.
            for key in changes:
                with contextlib.suppress(OSError):
                    write(current[key][0], previous[key])
            module.fail_json(msg="%s: %s (settings put back: %s)" % (e.filename, e.strerror, previous), **result)
    result["current"] = {k: v[1] for k, v in settings().items()}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
