"""roles/kgdb against the real lab-x86 guest: a real gdb over QEMU's gdbstub, real Debian dbg symbols.

One dbg download (cached in lab_cache_dir/kgdb), the session-wide lab guest; every test ends by proving the guest
still runs (its uptime advances over SSH) — the role must continue the guest and detach on every path.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import textwrap

import pytest
from helpers import ansible_adhoc, ansible_playbook

pytestmark = pytest.mark.lab
# An x86 guest of the lab fixture (COMPACTION_LAB_HOSTS); another one only to debug against a private guest.
HOST = os.environ.get("KGDB_LAB_HOST", "lab-x86")


def uptime() -> float:
    res = ansible_adhoc(HOST, "ansible.builtin.slurp", "src=/proc/uptime", timeout=300)[HOST]
    return float(base64.b64decode(res["content"]).split()[0])


def session(tmp_path, results, *extra, **kw):
    """Run playbooks/kgdb_session.yml on lab-x86; return (process, the session's JSON record or None)."""
    proc = ansible_playbook(
        "kgdb_session.yml",
        "-l",
        HOST,
        "-e",
        f"experiment_results_dir={results}",
        "-e",
        "experiment_run_id=kgdb-test",
        *extra,
        timeout=1800,
        **kw,
    )
    records = sorted((results / "kgdb-test" / HOST / "gdb").glob("*.json"))
    return proc, (json.loads(records[-1].read_text()) if records else None)


def session_file(tmp_path, text):
    path = tmp_path / "session.yml"
    path.write_text(textwrap.dedent(text))
    return f"kgdb_session_file={path}"


def assert_alive(before: float):
    after = uptime()
    assert after > before, f"guest uptime did not advance ({before} -> {after}): left stopped?"


def test_manual_compaction_stack_and_compact_control(lab, tmp_path):
    before = uptime()
    proc, rec = session(tmp_path, tmp_path / "results")
    assert rec["status"] == "ok" and rec["released"], rec["message"]
    assert rec["guest_banner"] == rec["vmlinux_banner"]
    (hit,) = rec["hits"]
    names = [f["function"] for f in hit["frames"]]
    # compact_zone <- ... <- sysctl_compaction_handler <- ... <- entry_SYSCALL_64, in this order.
    assert names[0] == "compact_zone" and names[-1] == "entry_SYSCALL_64", names
    assert names.index("compact_node") < names.index("sysctl_compaction_handler") < names.index("vfs_write"), names
    top = hit["frames"][0]
    assert top["file"] == "mm/compaction.c" and top["line"] and set(top["args"]) == {"cc", "capc"}
    cc = hit["compact_control"]
    assert cc["from"] == "compact_zone:cc" and cc["address"] == top["args"]["cc"]
    assert cc["zone"] in ("DMA", "DMA32", "Normal", "Movable") and cc["order"] == -1 and cc["mode"] == "MIGRATE_SYNC"
    assert cc["fields"]["whole_zone"] is True and cc["fields"]["order"] == -1
    assert hit["values"]["cc->zone->name"] == cc["zone"]
    assert hit["task"]["pid"] > 1 and hit["task"]["comm"]  # the shell that wrote compact_memory
    assert "nr_succeeded" in hit["locals"]
    assert "ok: 1 hit(s) captured" in proc.stdout
    assert_alive(before)
    # collect answers "call path of compact_zone" from this record.
    out = subprocess.run(
        [
            ".venv/bin/python",
            "-m",
            "collect",
            "gdb-stacks",
            str(tmp_path / "results" / "kgdb-test"),
            "--function",
            "compact_zone",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "compact_zone ← compact_node ← compact_nodes ← sysctl_compaction_handler" in out


def test_bogus_symbol_is_refused_before_attaching(lab, tmp_path):
    before = uptime()
    spec = session_file(
        tmp_path,
        """
        name: bogus
        breakpoints: [compact_zone_does_not_exist]
        trigger: echo 1 > /proc/sys/vm/compact_memory
    """,
    )
    proc, rec = session(tmp_path, tmp_path / "results", "-e", spec, check=False)
    assert proc.returncode != 0
    assert "'compact_zone_does_not_exist': no such function or source line" in proc.stdout
    assert rec["status"] == "refused" and not rec["hits"]
    assert_alive(before)


def test_mismatched_vmlinux_is_refused(lab, tmp_path):
    """A vmlinux of another build (same release string, other build): refused naming both banners."""
    src = tmp_path / "banner.c"
    src.write_text(
        'const char linux_banner[] = "Linux version 6.1.0-56-amd64 (someone@elsewhere) (gcc-12) '
        '#1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1 (2030-01-01)\\n";\n'
    )
    vmlinux = tmp_path / "vmlinux"
    subprocess.run(["gcc", "-g", "-c", "-o", vmlinux, src], check=True)
    before = uptime()
    proc, rec = session(tmp_path, tmp_path / "results", "-e", f"kgdb_vmlinux={vmlinux}", check=False)
    assert proc.returncode != 0
    assert "vmlinux does not match the running guest kernel" in proc.stdout and "6.1.999-1" in proc.stdout
    assert rec["status"] == "refused" and rec["released"] is False and not rec["armed"]
    assert_alive(before)


def test_breakpoint_never_hit_ends_at_the_deadline(lab, tmp_path):
    before = uptime()
    spec = session_file(
        tmp_path,
        """
        name: never-hit
        deadline_s: 15
        breakpoints: [__x64_sys_kexec_load]
    """,
    )
    proc, rec = session(tmp_path, tmp_path / "results", "-e", spec, check=False)
    assert proc.returncode != 0
    assert "no breakpoint hit within deadline_s=15 (__x64_sys_kexec_load)" in proc.stdout
    assert rec["status"] == "no_hits" and rec["released"] and rec["armed"]
    assert_alive(before)
