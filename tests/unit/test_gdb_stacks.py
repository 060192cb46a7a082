"""collect.gdb_stacks on a real gdb session record (tests/fixtures/kgdb/PROVENANCE.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

from collect import cli, gdb_stacks

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kgdb" / "debian-6.1.0-56-amd64-compact_zone.json"


def _run_dir(tmp_path):
    gdb_dir = tmp_path / "20261125T000000Z-gdb" / "lab-x86" / "gdb"
    gdb_dir.mkdir(parents=True)
    shutil.copy(FIXTURE, gdb_dir / "manual.json")
    return gdb_dir.parent.parent


def test_call_path_of_compact_zone(tmp_path):
    run = _run_dir(tmp_path)
    (host,) = gdb_stacks.host_dirs(run)
    paths = gdb_stacks.call_paths(gdb_stacks.records(host), "compact_zone")
    (path,) = paths
    assert path[:4] == ("compact_zone", "compact_node", "compact_nodes", "sysctl_compaction_handler")
    assert path[-1] == "entry_SYSCALL_64" and paths[path] == 1


def test_text_shows_frames_and_compact_control(tmp_path):
    host = gdb_stacks.host_dirs(_run_dir(tmp_path))[0]
    out = gdb_stacks.text(host)
    assert "#0  compact_zone(cc=0x" in out and "mm/compaction.c:2291" in out
    assert "compact_control: zone DMA node 0 order -1 mode MIGRATE_SYNC" in out


def test_cli_function_query(tmp_path, capsys):
    assert cli.main(["gdb-stacks", str(_run_dir(tmp_path)), "--function", "vfs_write"]) == 0
    out = capsys.readouterr().out
    assert "vfs_write ← ksys_write" in out and "compact_zone" not in out.split("\n", 1)[1]


def test_no_records_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["gdb-stacks", str(tmp_path)]) == 2
    assert "playbooks/kgdb_session.yml" in capsys.readouterr().out
