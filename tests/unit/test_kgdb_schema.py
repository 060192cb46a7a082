"""The gdb session schema: the shipped sessions validate, bad sessions are refused naming every problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "roles" / "kgdb" / "files"
sys.path.insert(0, str(FILES))

from kgdb_gdb import schema  # noqa: E402

SESSIONS = sorted((ROOT / "playbooks" / "gdb_sessions").glob("*.yml"))


@pytest.mark.parametrize("path", SESSIONS, ids=lambda p: p.name)
def test_shipped_sessions_are_valid(path):
    s = schema.normalize(yaml.safe_load(path.read_text()))
    assert s["breakpoints"] and all(bp["location"] for bp in s["breakpoints"])


def test_defaults_filled():
    s = schema.normalize({"breakpoints": ["compact_zone", {"location": "mm/compaction.c:2291", "max_hits": 0}]})
    assert s["name"] == "session" and s["deadline_s"] == 120 and s["trigger"] is None
    assert s["breakpoints"][0] == {
        "location": "compact_zone",
        "condition": None,
        "max_hits": 1,
        "capture": {"backtrace": 64, "locals": False, "expressions": [], "compact_control": None},
    }
    assert s["breakpoints"][1]["max_hits"] == 0


def test_every_problem_is_named():
    bad = {
        "name": "a b",
        "deadline_s": 0,
        "breakpoints": [{"location": "compact_zone; shell rm", "capture": {"stack": 3}}, 7],
        "trigger": {"cmd": "x"},
        "extra": 1,
    }
    with pytest.raises(schema.SessionError) as err:
        schema.normalize(bad)
    msg = str(err.value)
    for needle in (
        "unknown key 'extra'",
        "name: 'a b'",
        "deadline_s: expected an integer >= 1",
        "breakpoints[0].location",
        "breakpoints[0].capture: unknown key 'stack'",
        "breakpoints[1]",
        "trigger: expected {command",
    ):
        assert needle in msg, needle


def test_banner_mismatch_names_both_banners():
    guest = "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2\n"
    assert schema.banner_mismatch(guest, guest.strip()) is None
    other = guest.replace("6.1.192-2", "6.1.191-1")
    msg = schema.banner_mismatch(guest, other)
    assert "6.1.192-2" in msg and "6.1.191-1" in msg and "kgdb_vmlinux" in msg


def test_cli_check_refuses_before_gdb(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"breakpoints": []}))
    proc = subprocess.run(
        [sys.executable, FILES / "kgdb_session.py", "check", "--session", bad], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "give at least one" in proc.stderr
    proc = subprocess.run(
        [sys.executable, FILES / "kgdb_session.py", "check", "--session", SESSIONS[0]], capture_output=True, text=True
    )
    assert proc.returncode == 0 and json.loads(proc.stdout)["breakpoints"]


def test_cli_refuses_non_loopback_target(tmp_path):
    (tmp_path / "b").write_text("Linux version x\n")
    proc = subprocess.run(
        [
            sys.executable,
            FILES / "kgdb_session.py",
            "run",
            "--session",
            SESSIONS[0],
            "--vmlinux",
            "/nonexistent",
            "--target",
            "10.0.0.1:1234",
            "--guest-banner-file",
            tmp_path / "b",
            "--out",
            tmp_path / "o.json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "127.0.0.1 only" in proc.stderr
