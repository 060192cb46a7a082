"""Proactive compaction on demand, for real: trace_proactive.yml in both lab guests at their default proactiveness.

One playbook run covers both guests (they run in parallel forks); each test then checks one guest's results:
kcompactd compacted proactively (captured and classified by collect), the sampled score really passed wmark_high,
and the guest was left as found. Then the `direct` workload on the x86 guest (THP faults into fragmented memory
compact in the faulting task), with THP modes set for the run and written back byte for byte; and the fragmenter
refusing to start below its MemAvailable floor on both guests.
"""

from __future__ import annotations

import json
import time

import duckdb
import pytest
from helpers import ansible_adhoc, ansible_playbook

pytestmark = pytest.mark.lab

# One guest of each architecture from the session lab (lab-x86 and lab-arm unless COMPACTION_LAB_HOSTS names others).
ARCHES = ("x86_64", "aarch64")


# The settings an experiment may change for its run, compared by the checksum of the bytes the kernel prints.
SETTINGS = (
    "paths=/sys/kernel/mm/transparent_hugepage,/proc/sys/vm get_checksum=true "
    "patterns=enabled,defrag,compaction_proactiveness,nr_hugepages"
)
FRAGMENTER = "/usr/local/libexec/compaction-lab/fragmenter"


def state(host):
    """What the experiment must leave as it found it."""
    facts = ansible_adhoc(host, "compaction_facts")[host]["ansible_facts"]["compaction"]
    tracing = facts["ftrace"]["mount"] or "/sys/kernel/tracing"
    instances = ansible_adhoc(host, "ansible.builtin.find", f"paths={tracing}/instances file_type=directory")[host]
    procs = ansible_adhoc(host, "ansible.builtin.command", "pgrep -x fragmenter", check=False)[host]
    settings = ansible_adhoc(host, "ansible.builtin.find", SETTINGS)[host]
    return {
        "arch": facts["arch"],
        "proactiveness": facts["proactiveness"],
        "thp": facts["thp"],
        "settings": sorted((f["path"], f["checksum"]) for f in settings["files"]),
        "instances": sorted(f["path"] for f in instances["files"]),
        "fragmenters": procs.get("stdout", ""),
    }


def run_trace_proactive(results, name, limit, *extra, timeout):
    """One trace_proactive.yml run into `results`; returns its run directory."""
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-test-{name}"
    ansible_playbook(
        "trace_proactive.yml",
        "-l",
        limit,
        "-e",
        f"experiment_run_id={run_id}",
        "-e",
        f"experiment_results_dir={results}",
        # Events decide the trigger; kcompactd's call graph over a pass of tens of seconds is millions of lines that
        # a TCG guest would spend minutes writing out. The function_graph capture itself is trace_manual's test.
        "-e",
        "ftrace_capture_tracer=nop",
        *extra,
        timeout=timeout,
    )
    return results / run_id


@pytest.fixture(scope="module")
def proactive_run(lab, tmp_path_factory):
    before = {}
    for host in lab:
        found = state(host)
        if found["arch"] in ARCHES and found["arch"] not in {b["arch"] for b in before.values()}:
            before[host] = found
        if len(before) == len(ARCHES):
            break
    hosts = {b["arch"]: h for h, b in before.items()}
    assert set(hosts) == set(ARCHES), f"the lab {lab} needs one guest per architecture {ARCHES}, has {hosts}"
    run_dir = run_trace_proactive(
        tmp_path_factory.mktemp("results"), "proactive", ",".join(hosts.values()), timeout=2400
    )
    return run_dir, before, hosts


@pytest.mark.parametrize("arch", ARCHES)
def test_kcompactd_compacts_proactively_at_default_proactiveness(proactive_run, arch):
    run_dir, before, hosts = proactive_run
    host = hosts[arch]
    host_dir = run_dir / host
    scores = [json.loads(line) for line in (host_dir / "scores.jsonl").read_text().splitlines()]
    # The guest's own proactiveness was used, not a lowered one.
    assert {s["proactiveness"] for s in scores} == {before[host]["proactiveness"]}
    assert before[host]["proactiveness"] > 0
    wmark_high = scores[0]["wmark_high"]
    peak = max(s["score"] for s in scores)
    assert peak > wmark_high, f"score peaked at {peak}, not above wmark_high {wmark_high}"
    assert any(s["would_trigger"] for s in scores)

    summary = json.loads((run_dir / "summary.json").read_text())["hosts"][host]
    assert summary["arch"] == arch
    proactive = [c for c in summary["compactions"] if c["trigger"] == "proactive"]
    assert proactive, f"no proactive compaction classified: {summary['compactions'][:5]}"
    assert all(c["task"].startswith("kcompactd") for c in proactive)
    assert summary["score"]["peak"] >= peak and summary["score"]["wmark_high"] == wmark_high

    workload = json.loads((host_dir / "workload.json").read_text())
    assert workload["result"]["released"]["reason"] == "release"
    assert workload["result"]["ready"]["pfn_source"] == "pagemap"


@pytest.mark.parametrize("arch", ARCHES)
def test_guest_left_as_found(proactive_run, arch):
    _, before, hosts = proactive_run
    assert state(hosts[arch]) == before[hosts[arch]]


@pytest.fixture(scope="module")
def direct_run(proactive_run, tmp_path_factory):
    """The direct workload on the x86 guest, after the proactive run (the same booted guest, one at a time)."""
    host = proactive_run[2]["x86_64"]
    before = state(host)
    run_dir = run_trace_proactive(
        tmp_path_factory.mktemp("results"),
        "direct",
        host,
        "-e",
        "workload=direct",
        # The faults compact while they happen; nothing to wait for afterwards.
        "-e",
        "compaction_workload_hold_seconds=3",
        "-e",
        "compaction_workload_thp_mb=256",
        timeout=1800,
    )
    return run_dir / host, before, host


def test_thp_faults_compact_directly(direct_run):
    host_dir, _, host = direct_run
    summary = json.loads((host_dir.parent / "summary.json").read_text())["hosts"][host]
    result = json.loads((host_dir / "workload.json").read_text())["result"]
    assert result["thp"]["faulted_kb"] > 0, result["thp"]
    assert result["thp_modes"] == {"enabled": "madvise", "defrag": "madvise"}
    assert summary["events"].get("mm_compaction_try_to_compact_pages", 0) > 0, summary["events"]
    assert summary["vmstat_delta"].get("compact_stall", 0) > 0, summary["vmstat_delta"]
    # The faulting task compacted, for a huge page (order 9 with 4 KiB pages).
    table = host_dir / "normalized" / "compactions.parquet"
    query = f"""SELECT task, "order" FROM read_parquet('{table}') WHERE trigger = 'direct'"""
    direct = duckdb.connect().execute(query).fetchall()
    assert direct, f"no direct compaction classified: {summary['compactions'][:5]}"
    facts = json.loads((host_dir / "facts_before.json").read_text())
    assert {task for task, _ in direct} == {"fragmenter"}, direct
    orders = {order for _, order in direct}
    assert facts["hpage_order"] in orders and orders <= {facts["hpage_order"], None}, direct


def test_direct_run_restores_thp_byte_for_byte(direct_run):
    _, before, host = direct_run
    assert state(host) == before
    # Debian's THP enabled is `always`: the run really changed it (to madvise) and wrote it back.
    assert before["thp"]["enabled"] != "madvise" or before["thp"]["defrag"] != "madvise", before["thp"]


@pytest.mark.parametrize("arch", ARCHES)
def test_fragmenter_refuses_below_the_floor(proactive_run, arch):
    """On both arches, with the program the proactive run installed."""
    host = proactive_run[2][arch]
    res = ansible_adhoc(host, "fragmenter", f"binary={FRAGMENTER} floor_mb=1000000", check=False)[host]
    assert res["changed"] is False and "steps" not in res and "ready" not in res, res
    assert "below the floor 1000000 MiB" in res["msg"] and "nothing was allocated" in res["msg"], res["msg"]
    assert "lower floor_mb" in res["msg"]
