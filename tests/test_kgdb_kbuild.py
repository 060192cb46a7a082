"""KGDB transport checks against the session's real kernel_build artifact (CONFIG_KGDB=y): preflight only, no
guest — every refusal happens before the guest would be frozen with sysrq-g."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kbuild
CLI = Path(__file__).resolve().parents[1] / "roles" / "kgdb" / "files" / "kgdb_session.py"


def preflight(artifact, tmp_path, location, transport):
    banner = subprocess.run(
        [
            "gdb",
            "-batch",
            "-nx",
            "-iex",
            "set auto-load python-scripts off",
            "-ex",
            'printf "%s", (const char *)&linux_banner',
            artifact / "vmlinux",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tmp_path / "banner").write_text(banner)
    (tmp_path / "s.json").write_text(json.dumps({"name": "pre", "breakpoints": [location]}))
    proc = subprocess.run(
        [
            sys.executable,
            CLI,
            "run",
            "--preflight",
            "--transport",
            transport,
            "--session",
            tmp_path / "s.json",
            "--vmlinux",
            artifact / "vmlinux",
            "--auto-load-dir",
            artifact,
            "--target",
            "127.0.0.1:1259",
            "--guest-banner-file",
            tmp_path / "banner",
            "--out",
            tmp_path / "pre.json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, json.loads((tmp_path / "pre.json").read_text())


def test_kgdb_breakpoint_on_ftrace_site_is_refused(kernel_artifact, tmp_path):
    # gdb's `break compact_zone` lands on the function's `call __fentry__` (an __mcount_loc entry).
    proc, rec = preflight(kernel_artifact, tmp_path, "compact_zone", "kgdb")
    assert proc.returncode == 2 and rec["status"] == "refused"
    assert "sits on an ftrace patch site" in rec["message"] and "gdbstub" in rec["message"]


def test_gdbstub_and_in_body_line_are_accepted(kernel_artifact, tmp_path):
    proc, rec = preflight(kernel_artifact, tmp_path, "compact_zone", "gdbstub")
    assert proc.returncode == 0 and rec["status"] == "preflight_ok", rec["message"]
    proc, rec = preflight(kernel_artifact, tmp_path, "mm/compaction.c:2304", "kgdb")
    assert proc.returncode == 0 and rec["status"] == "preflight_ok", rec["message"]
