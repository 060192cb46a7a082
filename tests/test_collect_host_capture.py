"""A fresh real capture on this host (tracefs tracepoints, one manual compaction) normalizes end to end, and the
recording leaves the host as found (no instance, global tracing state unchanged)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import run

from collect import summary as summary_mod

pytestmark = pytest.mark.host
ROOT = Path(__file__).resolve().parents[1]
TRACEFS = Path("/sys/kernel/tracing")


def tracing_state():
    return {name: (TRACEFS / name).read_text() for name in ("tracing_on", "current_tracer", "set_event")}


def test_record_and_normalize_a_manual_compaction(is_root, tmp_path):
    if not (TRACEFS / "instances").is_dir():
        pytest.fail("tracefs is not mounted at %s: mount -t tracefs nodev %s" % (TRACEFS, TRACEFS))
    before = tracing_state()
    host_dir = tmp_path / "20261125T230000Z-trace_manual" / "this-host"
    host_dir.mkdir(parents=True)
    run([ROOT / "tests/fixtures/host-6.18/record.sh", host_dir], timeout=600)
    assert not (TRACEFS / "instances/collect-fixture").exists()
    assert tracing_state() == before
    s = summary_mod.summarize(str(host_dir))["hosts"]["this-host"]
    assert s["kernel"] == os.uname().release and s["source"] == "trace.dat"
    # Whatever this compaction found to do, each zone it visited is one begin/end pair run by record.sh: manual.
    assert s["events"]["mm_compaction_begin"] == len(s["compactions"]) > 0
    assert {c["trigger"] for c in s["compactions"]} == {"manual"}
    assert all(c["task"] == "record.sh" for c in s["compactions"])
    assert s["integrity"]["lost_events"] == 0, s["integrity"]["why"]
