"""The fragmentation workload and the score sampler, driven for real on this machine (small, capped amounts)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import ROOT, ansible_adhoc, run

pytestmark = pytest.mark.host

SOURCE = ROOT / "roles/fragmenter/files/fragmenter.c"


@pytest.fixture(scope="module")
def fragmenter(tmp_path_factory, is_root):
    """The program built from the role's source, exactly as the role's host build does."""
    out = tmp_path_factory.mktemp("fragmenter") / "fragmenter"
    run(["gcc", "-O2", "-Wall", "-Werror", "-o", out, SOURCE])
    return out


def no_fragmenter_left(binary):
    procs = subprocess.run(["pgrep", "-f", str(binary)], capture_output=True, text=True)
    return procs.stdout.strip() == ""


def test_refuses_below_the_floor_touching_nothing(fragmenter):
    res = ansible_adhoc("local", "fragmenter", f"binary={fragmenter} floor_mb=100000000", check=False)["local"]
    assert res["changed"] is False and "steps" not in res, res
    assert "below the floor" in res["msg"] and "nothing was allocated" in res["msg"]
    assert "ready" not in res
    # The program's own check, for callers that run it directly.
    proc = subprocess.run([fragmenter, "--floor-mb", "100000000"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    rec = json.loads(proc.stdout)
    assert rec["event"] == "refused" and "lower fragmenter_floor_mb" in rec["msg"]


def test_spreads_one_page_per_aligned_block_and_releases(fragmenter):
    """64 MiB capped: each step keeps at most one page per physical 2^K block, then everything is released."""
    cmds = "spread 1\nspread 4\nspread 9\nthp 8\nrelease\n"
    proc = subprocess.run(
        [fragmenter, "--floor-mb", "2048", "--max-mb", "64", "--deadline", "60"],
        input=cmds,
        capture_output=True,
        text=True,
        timeout=120,
    )
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, proc.stdout
    ready, *steps, thp, released = recs
    assert ready["event"] == "ready" and ready["pages"] == 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert ready["pfn_source"] == "pagemap" and ready["oom_score_adj"] == 1000
    held = [s["held_pages"] for s in steps]
    assert [s["order"] for s in steps] == [1, 4, 9]
    # Physical placement is the allocator's: at order 1 every page may sit alone in its pair (seen in a CI run:
    # 16384 of 16384 pages held), so a step never holds more than the one before, and at order 9 never more
    # than one page per 2 MiB block of the whole machine's memory.
    assert ready["pages"] >= held[0] >= held[1] >= held[2] > 0
    assert held[2] <= os.sysconf("SC_PHYS_PAGES") >> 9
    assert thp["event"] == "thp" and thp["faulted_kb"] == 8192
    assert released == {"event": "released", "reason": "release", "held_pages": held[2]}
    assert no_fragmenter_left(fragmenter)


def test_module_reports_steps_and_sampler_writes_scores(fragmenter, tmp_path):
    dest = tmp_path / "scores.jsonl"
    stop = tmp_path / "stop"
    stop.touch()  # the sampler takes its first sample, then sees the stop file
    sampled = ansible_adhoc("local", "compaction_sampler", f"dest={dest} duration=5 interval_ms=50 stop_file={stop}")
    assert sampled["local"]["samples"] >= 0
    stop.unlink()
    sampled = ansible_adhoc("local", "compaction_sampler", f"dest={dest} duration=1 interval_ms=100 phase=check")
    lines = [json.loads(line) for line in dest.read_text().splitlines()]
    assert 5 <= sampled["local"]["samples"] <= 11
    assert len(lines) >= sampled["local"]["samples"]
    first = lines[0]
    for key in (
        "seq",
        "node",
        "score",
        "wmark_low",
        "wmark_high",
        "proactiveness",
        "ts",
        "ts_source",
        "mono",
        "boot",
        "wall",
        "zones",
        "vmstat",
        "would_trigger",
        "kswapd_running",
    ):
        assert key in first, key
    assert first["ts_source"] == "none" and first["phase"] == "check"
    assert "compact_stall" in first["vmstat"] and all("extfrag" in z for z in first["zones"].values())

    res = ansible_adhoc("local", "fragmenter", f"binary={fragmenter} max_mb=64 floor_mb=2048 hold_seconds=1")["local"]
    assert res["changed"] and res["released"]["reason"] == "release"
    assert res["steps"][0]["order"] == res["hpage_order"] - 3
    assert res["target_score"] == min(res["wmark_high"] + 3, 100)
    assert no_fragmenter_left(fragmenter)
