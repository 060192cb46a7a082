"""collect on real captures: the seed's x86 function_graph trace and a tracepoint capture of this host (6.18).

Fixtures: tests/fixtures/seed/ and tests/fixtures/host-6.18/ (see their PROVENANCE.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from collect import summary as summary_mod
from collect import tables
from collect.normalize import NormalizeError

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "tests/fixtures/seed/trace.txt"
HOST = ROOT / "tests/fixtures/host-6.18"


def cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "collect", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError("collect %s exited %d\n%s\n%s" % (args, proc.returncode, proc.stdout, proc.stderr))
    return proc


@pytest.fixture(scope="module")
def seed_summary():
    out = json.loads(cli("summary", SEED, "--format", "json").stdout)
    assert out["run"] == "-" and len(out["hosts"]) == 1
    return next(iter(out["hosts"].values()))


@pytest.fixture
def host_copy(tmp_path):
    """A writable copy of the host fixture laid out as results/<run>/<host>/."""
    dst = tmp_path / "20261125T222900Z-fixture" / "host-6.18"
    shutil.copytree(HOST, dst, ignore=shutil.ignore_patterns("record.sh", "PROVENANCE.md", "normalized"))
    return dst


def test_seed_contract_numbers(seed_summary):
    fns = seed_summary["functions"]
    assert fns["compact_unlock_should_abort.isra.0"]["calls"] == 39914
    assert fns["compact_unlock_should_abort.isra.0"]["orphan_exits"] == 1
    assert seed_summary["integrity"]["orphan_exits"] == 12
    # compact_zone's entries were overwritten: its time comes from its two closings only.
    assert fns["compact_zone"] == {"calls": 0, "total_us": pytest.approx(158712.7 + 133383.8), "orphan_exits": 2}
    assert fns["sysctl_compaction_handler"]["total_us"] == pytest.approx(334634.1 + 291846.1)
    assert set(seed_summary) >= {
        "kernel", "arch", "tracer", "events", "functions", "compactions", "integrity", "vmstat_delta", "score",
    }  # fmt: skip
    assert seed_summary["tracer"] == "function_graph"


def test_seed_is_reported_incomplete(seed_summary):
    integ = seed_summary["integrity"]
    assert integ["complete"] is False
    assert integ["lost_events"] is None  # no per-CPU stats were kept with the seed: unknown, not 0
    assert any("12 closings" in w for w in integ["why"])


def test_seed_compactions_from_orphan_call_paths(seed_summary):
    comps = seed_summary["compactions"]
    assert [c["duration_us"] for c in comps] == [pytest.approx(158712.7), pytest.approx(133383.8)]
    # The lost frames above compact_zone are named by their own closings: sysctl_compaction_handler -> manual.
    assert {c["trigger"] for c in comps} == {"manual"}
    # CPU 7's first banner `sh-405524 => <idle>-0` names the task that ran the first compaction.
    assert comps[0]["task"] == "sh"


def test_task_from_the_first_banner_decides_the_trigger(tmp_path):
    """Derived from the seed (real capture) by dropping its two `} /* sysctl_compaction_handler */` closings, as a
    smaller buffer would have lost them: the call path then ends at compact_node, and only the task says manual."""
    kept = [ln for ln in SEED.read_text().splitlines(True) if "} /* sysctl_compaction_handler */" not in ln]
    host = tmp_path / "seed-no-handler"
    host.mkdir()
    (host / "trace.txt").write_text("".join(kept))
    comps = summary_mod.summarize(str(host))["hosts"]["seed-no-handler"]["compactions"]
    # CPU 7's first banner `sh-405524 => <idle>-0` gives the task before the trigger is inferred; CPU 10 has no
    # banner before its closings, so neither task nor trigger can be known there.
    assert [(c["task"], c["trigger"]) for c in comps] == [("sh", "manual"), (None, "unknown")]


def test_seed_tables(tmp_path):
    host = tmp_path / "run" / "seed-x86"
    host.mkdir(parents=True)
    shutil.copy(SEED, host / "trace.txt")
    summary_mod.summarize(str(host))
    con = duckdb.connect()
    calls = str(host / "normalized/calls.parquet")
    parents = dict(
        con.execute(f"SELECT function, parent FROM '{calls}' WHERE status = 'orphan' AND parent IS NOT NULL").fetchall()
    )
    assert parents["compact_zone"] == "compact_node"
    assert parents["compact_node"] == "sysctl_compaction_handler"
    assert con.execute(f"SELECT count(*) FROM '{calls}' WHERE status = 'truncated'").fetchone()[0] == 0
    switches = con.execute(f"SELECT count(*) FROM '{host}/normalized/switches.parquet'").fetchone()[0]
    assert switches == 59


def test_host_capture_txt(host_copy):
    s = summary_mod.summarize(str(host_copy), prefer="txt")["hosts"]["host-6.18"]
    assert s["kernel"].startswith("6.18") and s["arch"] == "x86_64" and s["tracer"] == "nop"
    assert s["integrity"]["lost_events"] == 0 and s["integrity"]["complete"] is True
    assert s["events"]["mm_compaction_begin"] == s["events"]["mm_compaction_end"] == len(s["compactions"])
    assert {c["zone"] for c in s["compactions"]} == {"DMA", "DMA32", "Normal"}
    assert {c["trigger"] for c in s["compactions"]} == {"manual"}  # echo 1 > compact_memory, in record.sh
    assert all(c["task"] == "record.sh" and c["duration_us"] > 0 for c in s["compactions"])
    delta = json.loads((host_copy / "vmstat_delta.json").read_text())
    assert s["vmstat_delta"] == delta
    assert s["score"]["before"] is not None and s["score"]["wmark_high"] is not None


def test_host_capture_fields_typed_from_format(host_copy):
    summary_mod.summarize(str(host_copy), prefer="txt")
    con = tables.connect([str(host_copy / "normalized")])  # the events view types fields from the host's formats
    ev = "events"
    bad = con.execute(f"SELECT count(*) FROM {ev} WHERE parse_status <> 'ok'").fetchone()[0]
    assert bad == 0
    fin = f"FROM {ev} WHERE event = 'mm_compaction_finished'"
    zones = {z for (z,) in con.execute(f"SELECT DISTINCT fields_str['zone'] {fin}").fetchall()}
    assert zones == {"DMA", "DMA32", "Normal"}
    orders = {o for (o,) in con.execute(f"SELECT DISTINCT fields_int['order'] {fin}").fetchall()}
    assert orders == {-1}  # manual compaction: cc.order = -1
    # range=(0x1 ~ 0x200): one printed field, two typed pfns.
    lo, hi = con.execute(
        f"SELECT fields_int['range_start'], fields_int['range_end'] FROM {ev} "
        "WHERE event = 'mm_compaction_isolate_migratepages' ORDER BY seq LIMIT 1"
    ).fetchone()
    assert lo < hi


def test_trace_dat_matches_text(host_copy):
    txt = summary_mod.summarize(str(host_copy), prefer="txt", force=True)["hosts"]["host-6.18"]
    dat = summary_mod.summarize(str(host_copy), prefer="dat", force=True)["hosts"]["host-6.18"]
    assert dat["source"] == "trace.dat" and txt["source"] == "trace.txt"
    assert dat["events"] == txt["events"]
    assert [(c["zone"], c["status"]) for c in dat["compactions"]] == [
        (c["zone"], c["status"]) for c in txt["compactions"]
    ]
    for a, b in zip(dat["compactions"], txt["compactions"], strict=True):
        assert a["duration_us"] == pytest.approx(b["duration_us"], abs=1.0)  # text has µs resolution
    assert dat["integrity"]["lost_events"] == 0


# -- malformed input: a clear error or a counted skip, never a crash or a silent drop --------------------------


def test_truncated_last_line_is_counted(tmp_path):
    data = SEED.read_bytes()
    cut = data.index(b"compact_unlock_should_abort", 500_000) + 10  # mid-symbol, as a killed `cat` leaves it
    (tmp_path / "trace.txt").write_bytes(data[:cut])
    s = summary_mod.summarize(str(tmp_path))["hosts"][tmp_path.name]
    assert s["integrity"]["skipped_lines"] == 1
    assert any("unparsable" in w for w in s["integrity"]["why"])


def test_binary_junk_is_counted_and_the_rest_kept(host_copy):
    clean = summary_mod.summarize(str(host_copy), prefer="txt")["hosts"]["host-6.18"]["events"]
    text = (host_copy / "trace.txt").read_bytes()
    mid = text.index(b"\n", len(text) // 2) + 1
    (host_copy / "trace.txt").write_bytes(text[:mid] + bytes(range(256)) * 8 + b"\n" + text[mid:])
    s = summary_mod.summarize(str(host_copy), prefer="txt", force=True)["hosts"]["host-6.18"]
    assert s["events"] == clean
    assert s["integrity"]["skipped_lines"] > 0 and s["integrity"]["complete"] is False


def test_unknown_event_is_kept_and_counted(host_copy):
    (host_copy / "formats/compaction/mm_compaction_kcompactd_sleep").unlink()
    s = summary_mod.summarize(str(host_copy), prefer="txt")["hosts"]["host-6.18"]
    n = s["events"]["mm_compaction_kcompactd_sleep"]
    assert n > 0
    assert any(w.startswith("%d events with no format file" % n) for w in s["integrity"]["why"])


def test_empty_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "trace.txt"
    empty.write_text("")
    with pytest.raises(NormalizeError, match="is empty"):
        summary_mod.summarize(str(empty))
    proc = cli("summary", empty, check=False)
    assert proc.returncode == 2 and "is empty" in proc.stderr and "Traceback" not in proc.stderr


def test_trace_dat_is_recognised_by_content(tmp_path):
    shutil.copy(HOST / "trace.dat", tmp_path / "capture.bin")
    s = summary_mod.summarize(str(tmp_path / "capture.bin"))["hosts"]["capture"]
    assert s["source"] == "trace.dat" and s["events"]["mm_compaction_begin"] > 0


def test_trace_dat_named_trace_txt_is_a_clear_error(host_copy):
    shutil.copy(HOST / "trace.dat", host_copy / "trace.txt")
    proc = cli("summary", host_copy, "--source", "txt", check=False)
    assert proc.returncode == 2 and "trace-cmd" in proc.stderr and "Traceback" not in proc.stderr


# Lab guests' captures (function_graph, x86 and arm64) land in tests/fixtures/lab-*/ as results host folders;
# every one of them must normalize cleanly and agree with itself, whichever kernel or arch recorded it.
LAB = sorted(p for p in (ROOT / "tests/fixtures").glob("lab-*") if (p / "trace.meta.json").exists())


@pytest.mark.parametrize("fixture", LAB, ids=[p.name for p in LAB])
def test_lab_capture_normalizes(fixture, tmp_path):
    host = tmp_path / "run" / fixture.name
    shutil.copytree(fixture, host, ignore=shutil.ignore_patterns("*.md", "*.sh", "normalized"))
    s = summary_mod.summarize(str(host))["hosts"][fixture.name]
    meta = json.loads((fixture / "trace.meta.json").read_text())
    assert s["tracer"] == meta["tracer"] and s["integrity"]["skipped_lines"] == 0
    con = duckdb.connect()
    calls = str(host / "normalized/calls.parquet")
    orphans = con.execute(f"SELECT count(*) FROM '{calls}' WHERE status = 'orphan'").fetchone()[0]
    assert orphans == s["integrity"]["orphan_exits"]
    assert s["integrity"]["complete"] == (not s["integrity"]["why"])
    if meta["tracer"] == "function_graph":
        assert s["functions"], "a function_graph capture without calls"
        assert any(f.startswith("compact_zone") for f in s["functions"])


def test_graph_trace_dat_matches_text(tmp_path):
    """lab-x86-612 6.12: trace.txt (tracefs text, read by the compiled graph-line parser) and trace.dat of the same
    buffer (trace-cmd's funcgraph_entry/exit lines, read through the tracepoint lexer) give the same calls. What the
    two renderings print differently is compared as such: trace-cmd has ns timestamps, full task names and more
    duration digits, and prints some leaves as an entry + exit pair."""
    fixture = ROOT / "tests/fixtures/lab-x86-612-6.12"
    host = tmp_path / "run" / fixture.name
    shutil.copytree(fixture, host, ignore=shutil.ignore_patterns("*.md", "*.sh", "normalized"))
    con = duckdb.connect()
    us = "CAST(floor(round(ts * 1e9) / 1000) AS BIGINT)"
    calls = {}
    for source in ("txt", "dat"):
        s = summary_mod.summarize(str(host), prefer=source, force=True)["hosts"][fixture.name]
        assert s["source"] == "trace." + source and s["integrity"]["skipped_lines"] == 0
        calls[source] = con.execute(
            f"SELECT cpu, pid, depth, function, parent, {us}, status, duration_us, task "
            f"FROM '{host}/normalized/calls.parquet' ORDER BY ALL"
        ).fetchall()
    assert len(calls["txt"]) > 19_000
    assert [r[:7] for r in calls["dat"]] == [r[:7] for r in calls["txt"]]
    for dat, txt in zip(calls["dat"], calls["txt"], strict=True):
        assert dat[7] == pytest.approx(txt[7], rel=1e-6) and dat[8].startswith(txt[8])


def test_global_buffer_capture_on_6_1_agrees_with_the_kernel_counters(tmp_path):
    """lab-x86 6.1: function_graph in the global buffer (the module's fallback there), automatic buffer, nothing lost.

    The parsed graph must agree with the kernel's own vmstat: compaction_alloc (the migration target allocator) is
    called once per page migrated, so its call count equals pgmigrate_success of the same compaction.
    """
    fixture = ROOT / "tests/fixtures/lab-x86-6.1"
    host = tmp_path / "run" / fixture.name
    shutil.copytree(fixture, host, ignore=shutil.ignore_patterns("*.md"))
    s = summary_mod.summarize(str(host))["hosts"][fixture.name]
    meta = json.loads((fixture / "trace.meta.json").read_text())
    assert meta["mode"] == "global" and meta["instance"] is None
    assert s["integrity"]["lost_events"] == 0 and s["integrity"]["complete"], s["integrity"]
    assert [(c["zone"], c["trigger"], c["status"]) for c in s["compactions"]] == [
        ("DMA", "manual", "complete"),
        ("DMA32", "manual", "complete"),
    ]
    assert s["events"]["mm_compaction_begin"] == s["events"]["mm_compaction_end"] == len(s["compactions"])
    migrated = json.loads((fixture / "vmstat_delta.json").read_text())["pgmigrate_success"]
    assert s["functions"]["compaction_alloc"]["calls"] == migrated > 0
