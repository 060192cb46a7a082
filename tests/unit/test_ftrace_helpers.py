"""The ftrace module's pure helpers (module_utils/tracefs.py) on this host's real tracefs and procfs content."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
from compaction_module_utils import tracefs

pytestmark = pytest.mark.host

T = "/sys/kernel/tracing"


@pytest.fixture(scope="module")
def systems():
    return tracefs.parse_available_events(Path(T, "available_events").read_text())


def test_available_events(systems):
    assert "mm_compaction_begin" in systems["compaction"]
    assert {"kcompactd_wake", "kcompactd_sleep"} <= {e.removeprefix("mm_compaction_") for e in systems["compaction"]}


def test_match_events_expands_globs_and_names_what_exists(systems):
    found, bad = tracefs.match_events(["compaction:*", "vmscan:mm_vmscan_kswapd_*", "migrate"], systems)
    assert not bad
    assert "vmscan:mm_vmscan_kswapd_wake" in found and "vmscan:mm_vmscan_kswapd_sleep" in found
    assert "compaction:mm_compaction_end" in found and "migrate:mm_migrate_pages" in found
    assert not [f for f in found if f.startswith("vmscan:") and "kswapd" not in f]
    found, bad = tracefs.match_events(["compaction:mm_compaction_nope", "nosuch:*"], systems)
    assert not found
    assert "mm_compaction_begin" in bad["compaction:mm_compaction_nope"]  # lists what is available
    assert "compaction" in bad["nosuch:*"]


def test_safe_patterns_reject_tracefs_commands():
    import re

    for ok in ("*compact*", "compact_zone", "isolate_*_block", "[ab]*"):
        assert re.match(tracefs.SAFE_GLOB, ok)
    # a space or newline adds a filter, ':' a command (func:traceoff), the rest would matter to a shell
    for bad in ("a b", "x\n!y", "compact_zone:traceoff", "*;reboot", "$(id)", ":mod:ext4"):
        assert not re.match(tracefs.SAFE_GLOB, bad)
    assert re.match(tracefs.SAFE_EVENT, "kmem:mm_page_alloc_extfrag")
    assert not re.match(tracefs.SAFE_EVENT, "compaction:*:enable_event")


def test_per_cpu_stats():
    for path in glob.glob(T + "/per_cpu/cpu*/stats"):
        stats = tracefs.parse_cpu_stats(Path(path).read_text())
        assert {"entries", "overrun", "commit_overrun", "bytes", "dropped_events", "read_events"} <= set(stats)
        assert all(isinstance(v, int) for k, v in stats.items() if not k.endswith("_ts"))
        assert isinstance(stats["now_ts"], float)


def test_trace_clocks():
    clocks, current = tracefs.trace_clocks(Path(T, "trace_clock").read_text())
    assert current in clocks and {"local", "global", "mono", "boot"} <= set(clocks)


def test_kcompactd_per_node():
    pids = tracefs.kthread_pids("kcompactd")
    nodes = sorted(Path(p).name for p in glob.glob("/sys/devices/system/node/node[0-9]*"))
    assert sorted(pids) == ["kcompactd%s" % n.removeprefix("node") for n in nodes]
    for comm, pid in pids.items():
        assert Path("/proc/%d/comm" % pid).read_text().strip() == comm


def test_match_functions_on_this_kernels_symbols():
    names = {
        parts[2]
        for parts in (line.split() for line in Path("/proc/kallsyms").read_text().splitlines())
        if len(parts) >= 3 and parts[1] in "tT"
    }
    matched, missing = tracefs.match_functions(["*compact*", "compact_nod"], names)
    assert {"compact_node", "sysctl_compaction_handler"} <= set(matched["*compact*"])
    assert "compact_node" in missing["compact_nod"]  # near misses name the fix


def test_auto_buffer_kb():
    # the measured burst: 40 MiB per CPU for a function_graph manual compaction, whichever CPU does it
    size, why = tracefs.auto_buffer_kb("function_graph", 2, 0, 24 << 20)
    assert size == 40960 and "capped" not in why
    size, why = tracefs.auto_buffer_kb("function_graph", 8, 60, 2 << 20)  # 2 GiB guest: a quarter over 8 CPUs
    assert size == (2 << 20) // 4 // 8 and "capped" in why
    assert tracefs.auto_buffer_kb("nop", 64, 0, 100 << 10)[0] == 1410  # never below the kernel's default


def test_marker_timestamp():
    tag = "compaction_lab_clock"
    # the two layouts of trace_marker lines: tracepoint text and function_graph with funcgraph-abstime
    ev = "  python3-17410   [001] ...1.  5864.995346: tracing_mark_write: compaction_lab_clock start wall=1.5"
    graph = " 5864.995346 |   1)  python3-17410  |               |  /* compaction_lab_clock start wall=1.5 */"
    assert tracefs.marker_timestamp(ev, tag) == 5864.995346
    assert tracefs.marker_timestamp(graph, tag) == 5864.995346
    assert tracefs.marker_timestamp(ev.replace(tag, "other"), tag) is None


def test_marker_offset_on_a_real_function_graph_capture():
    """The lab-x86-612 capture (PROVENANCE.md): its clock_offset is wall - trace time of its last marker."""
    import json
    import re

    fixture = Path(__file__).resolve().parent.parent / "fixtures/lab-x86-612-6.12"
    meta = json.loads((fixture / "trace.meta.json").read_text())
    markers = [ln for ln in (fixture / "trace.txt").read_text().splitlines() if "compaction_lab_clock" in ln]
    assert len(markers) == 2 and meta["tracer"] == "function_graph"
    ts = tracefs.marker_timestamp(markers[-1], "compaction_lab_clock")
    wall = float(re.search(r"wall=(\d+\.\d+)", markers[-1]).group(1))
    assert meta["clock_offset"] == pytest.approx(wall - ts, abs=1e-5)
