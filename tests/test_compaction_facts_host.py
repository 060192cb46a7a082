"""compaction_facts and the doctor against this machine's real procfs/tracefs, through Ansible."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from compaction_module_utils import fragmentation as frag
from helpers import ROOT, ansible_adhoc, ansible_playbook, run

pytestmark = pytest.mark.host

SNAPSHOTS = Path(__file__).parent / "fixtures" / "compaction-snapshots"


def debugfs_scores(order):
    """Node scores computed from debugfs unusable_index and zoneinfo: a path independent of buddyinfo."""
    unusable = frag.parse_unusable_index(Path("/sys/kernel/debug/extfrag/unusable_index").read_text())
    zoneinfo = frag.parse_zoneinfo(Path("/proc/zoneinfo").read_text())
    scores = {}
    for node in {n for n, _ in zoneinfo}:
        node_present = sum(v["present"] for (n, _), v in zoneinfo.items() if n == node)
        scores[node] = sum(
            zoneinfo[(n, z)]["present"] * (p[order] // 10 if p[order] < 1000 else 0) // (node_present + 1)
            for (n, z), p in unusable.items()
            if n == node and zoneinfo[(n, z)]["present"]
        )
    return scores


def test_module_score_matches_independent_debugfs_computation(is_root):
    if not os.path.exists("/sys/kernel/debug/extfrag/unusable_index"):
        run(["mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug"])
    # Free lists move under load: a round counts when the independent reads on both sides of the module agree
    # with each other and with it. A module that is off by one would never get there.
    seen = []
    for _ in range(30):
        before = debugfs_scores(9)
        facts = ansible_adhoc("local", "compaction_facts")["local"]["ansible_facts"]["compaction"]
        after = debugfs_scores(9)
        got = {n["node"]: n["score"] for n in facts["nodes"]}
        seen.append((before, got, after))
        if before == got == after:
            break
    else:
        pytest.fail(f"module and debugfs never agreed on a still host: {seen}")
    # And the arithmetic itself, recomputed here from the counts the module read.
    for n in facts["nodes"]:
        recomputed = 0
        for z in n["zones"]:
            free = sum(c << o for o, c in enumerate(z["free_by_order"]))
            big = sum(c << o for o, c in enumerate(z["free_by_order"]) if o >= 9)
            ext = 0 if free == 0 else (free - big) * 100 // free
            assert z["extfrag"] == ext
            recomputed += z["present"] * ext // (n["node_present"] + 1)
        assert n["score"] == recomputed
    assert facts["hpage_order"] == 9 and facts["page_size"] == os.sysconf("SC_PAGE_SIZE")
    assert facts["proactiveness"] == int(Path("/proc/sys/vm/compaction_proactiveness").read_text())
    low, high, formula = frag.watermarks(facts["proactiveness"], os.uname().release)
    assert (facts["nodes"][0]["wmark_low"], facts["nodes"][0]["wmark_high"], facts["wmark_formula"]) == (
        low,
        high,
        formula,
    )
    assert {"compact_stall", "compact_success", "pgmigrate_success"} <= set(facts["vmstat"])
    assert facts["nodes"][0]["kcompactd_pid"] > 0
    # This kernel lists function tracers but refuses set_ftrace_filter: the probe must say so, unchanged.
    assert facts["ftrace"]["events"]["compaction"] is True
    assert facts["ftrace"]["instances"] is True


def test_function_filter_probe_leaves_the_filter_untouched(is_root):
    notrace = Path(
        ansible_adhoc("local", "compaction_facts")["local"]["ansible_facts"]["compaction"]["ftrace"]["mount"]
    )
    before = {p: (notrace / p).stat().st_mtime_ns for p in ("set_ftrace_filter", "current_tracer", "tracing_on")}
    facts = ansible_adhoc("local", "compaction_facts", "", "--check")["local"]["ansible_facts"]["compaction"]
    after = {p: (notrace / p).stat().st_mtime_ns for p in before}
    assert before == after
    if not facts["ftrace"]["function_filter_writable"]:
        assert "EPERM" in facts["ftrace"]["function_filter_error"]


@pytest.mark.parametrize("snap", sorted(p.name for p in SNAPSHOTS.iterdir() if (p / "proc").is_dir()))
def test_module_reads_a_saved_snapshot(snap):
    base = SNAPSHOTS / snap
    facts = ansible_adhoc("local", "compaction_facts", f"proc_root={base / 'proc'} sys_root={base / 'sys'}")["local"][
        "ansible_facts"
    ]["compaction"]
    expected = frag.node_scores(
        frag.parse_buddyinfo((base / "proc/buddyinfo").read_text()),
        frag.parse_zoneinfo((base / "proc/zoneinfo").read_text()),
        9,
    )
    assert facts["kernel"] == (base / "proc/sys/kernel/osrelease").read_text().strip()
    assert [n["score"] for n in facts["nodes"]] == [n["score"] for n in expected.values()]
    assert facts["debugfs_extfrag"]["available"] is True


def test_without_root_it_returns_what_it_can_and_names_what_is_missing():
    tmp_path = Path(tempfile.mkdtemp(prefix="nonroot-"))
    tmp_path.chmod(0o777)
    env = {"HOME": str(tmp_path), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "l"), "ANSIBLE_REMOTE_TMP": str(tmp_path / "r")}
    proc = run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            ROOT / ".venv/bin/ansible",
            "local",
            "-m",
            "compaction_facts",
            "-o",
        ],
        env=env,
    )
    assert "SUCCESS" in proc.stdout
    assert "not root" in proc.stdout
    facts = json.loads(proc.stdout.split(" => ", 1)[1])["ansible_facts"]["compaction"]
    # buddyinfo/zoneinfo are world-readable: the score is still there; debugfs and tracefs are not.
    assert facts["nodes"] and facts["debugfs_extfrag"]["available"] is False
    assert any("/sys/kernel/debug/extfrag" in m for m in facts["missing"])
    shutil.rmtree(tmp_path)


def test_doctor_prints_a_table_per_node():
    out = ansible_playbook("doctor.yml", "-l", "local").stdout
    assert "local: kernel " + os.uname().release in out
    assert "node score  low high compact? why" in out
    assert "wmark_high" in out and "zone Normal" in out
    assert "events: compaction" in out


def test_tracefs_role_names_the_fix_when_function_tracing_is_refused(is_root, tmp_path):
    facts = ansible_adhoc("local", "compaction_facts")["local"]["ansible_facts"]["compaction"]["ftrace"]
    if facts["function_filter_writable"]:
        pytest.skip("this kernel allows function tracing")
    book = tmp_path / "need_graph.yml"
    book.write_text(
        "- hosts: local\n  gather_facts: false\n  roles:\n"
        "    - role: tracefs\n      tracefs_require: [function_graph, events:compaction]\n"
    )
    proc = run([ROOT / ".venv/bin/ansible-playbook", book], check=False)
    assert proc.returncode != 0
    assert "use tracer=tracepoints or a lab guest" in proc.stdout


def test_tracefs_role_mounts_what_is_missing_then_is_idempotent(is_root, tmp_path):
    """In a private mount namespace (the host's mounts stay as they are) with tracefs and debugfs unmounted."""
    book = tmp_path / "mount.yml"
    book.write_text(
        "- hosts: local\n  gather_facts: false\n  roles:\n"
        "    - role: tracefs\n      tracefs_require: [events:compaction, instances]\n"
    )
    script = (
        'set -e; for m in $(awk \'$3=="tracefs"||$3=="debugfs"{print $2}\' /proc/mounts | sort -r); '
        "do umount -l $m; done; "
        f"{ROOT}/.venv/bin/ansible-playbook {book}; {ROOT}/.venv/bin/ansible-playbook {book}; "
        'awk \'$3=="tracefs"||$3=="debugfs"\' /proc/mounts'
    )
    proc = run(["unshare", "-m", "--propagation", "private", "bash", "-c", script])
    recaps = [line for line in proc.stdout.splitlines() if line.startswith("local ")]
    assert "changed=2" in recaps[0], proc.stdout
    assert "changed=0" in recaps[1], proc.stdout
    assert "tracefs" in proc.stdout.splitlines()[-1] or "tracefs" in proc.stdout.splitlines()[-2]


def test_ansible_doc_renders_the_module():
    proc = run([ROOT / ".venv/bin/ansible-doc", "-M", ROOT / "plugins/modules", "compaction_facts"])
    assert "kernel's integer arithmetic" in proc.stdout
    assert shutil.which("setpriv")
