"""Filters of the experiment_run role: run.json bookkeeping and the vmstat delta (controller side)."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

UNREPORTED = {"status": "unreachable", "msg": "no result: unreachable, or the run was interrupted"}


def sanitize(host):
    """inventory_hostname -> results folder name ([A-Za-z0-9._-], docs/interfaces.md)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(host))


def vmstat_delta(after, before):
    """after - before of /proc/vmstat counters; the formula lives once, in module_utils/fragmentation.py."""
    try:
        from compaction_module_utils.fragmentation import vmstat_delta as delta
    except ImportError as e:
        raise AnsibleFilterError("vmstat_delta needs the project installed in the venv (make setup): %s" % e) from e
    return delta(before, after)


def run_hosts(hosts):
    """Initial run.json hosts: every targeted host unreported until it finishes."""
    return {sanitize(h): dict(UNREPORTED) for h in hosts}


def run_merge(run, hosts, hostvars, finished):
    """run.json with the status of every host in ``hosts`` that reported (experiment_run_status ok|failed)."""
    out = dict(run)
    merged = dict(out.get("hosts") or {})
    for h in hosts:
        hv = hostvars[h]
        status = hv.get("experiment_run_status")
        if status in ("ok", "failed"):
            merged[sanitize(h)] = {"status": status, "msg": hv.get("experiment_run_msg") or ""}
        else:
            merged.setdefault(sanitize(h), dict(UNREPORTED))
    out["hosts"] = merged
    out["finished"] = finished
    return out


class FilterModule:
    def filters(self):
        return {
            "experiment_run_sanitize": sanitize,
            "experiment_run_hosts": run_hosts,
            "experiment_run_merge": run_merge,
            "vmstat_delta": vmstat_delta,
        }
