"""The QEMU lab on real guests: Ansible reaches them as ordinary hosts, lab_up is idempotent, the resource guard
refuses before anything is built, and destroy after a failed molecule converge leaves no process, overlay or port."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from helpers import ROOT, ansible_adhoc, ansible_playbook, run

pytestmark = pytest.mark.lab
CACHE = Path(os.environ.get("COMPACTION_LAB_CACHE", Path.home() / ".cache" / "compaction-lab"))


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines as {host: {ok, changed, failed, ...}}."""
    return {
        m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        for m in re.finditer(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M)
    }


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def qemu_pids_of(run_dir: Path) -> list[int]:
    """QEMU processes whose argv names this guest's run dir, whatever their pidfile says."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].startswith(b"qemu-system") and any(str(run_dir).encode() in a for a in argv):
                pids.append(int(proc.name))
    return pids


def test_guests_are_ordinary_inventory_hosts(lab):
    facts = ansible_adhoc(",".join(lab), "ansible.builtin.setup", "gather_subset=min")
    arch = {h: r["ansible_facts"]["ansible_architecture"] for h, r in facts.items()}
    assert arch == {"lab-x86": "x86_64", "lab-arm": "aarch64"}
    for host, r in facts.items():
        assert r["ansible_facts"]["ansible_kernel"].startswith("6."), host
        assert r["ansible_facts"]["ansible_hostname"] == host
    # Groups work as on a fleet: -l arm reaches the arm64 guest only.
    assert set(ansible_adhoc("arm", "ansible.builtin.ping")) == {"lab-arm"}


def test_lab_up_again_changes_nothing(lab):
    proc = ansible_playbook("lab_up.yml", "-l", ",".join(lab), timeout=900)
    totals = recap(proc.stdout)
    assert set(lab) <= set(totals)
    assert all(totals[h]["changed"] == 0 and totals[h]["failed"] == 0 for h in lab), totals
    assert len(re.findall(r"already\s+running", proc.stdout)) == len(lab)


def test_a_guest_resumes_from_the_snapshot_of_its_cold_boot(tmp_path, is_root):
    """lab_up's second start of a guest resumes the snapshot its cold boot took: the same kernel and hostname, the
    clock set to now, nothing of the last run's overlay, the boot's console log kept. A snapshot that does not
    resume is deleted and the guest boots cold (and takes a new one)."""
    guest = "snap-test"
    inventory = tmp_path / "snap.yml"
    # Joins inventory/lab.yml's qemu group (its connection vars); a private name, so a private snapshot.
    inventory.write_text(
        f"all:\n  children:\n    qemu:\n      hosts:\n        {guest}:\n"
        "          lab_arch: x86_64\n          ansible_port: 10036\n          lab_memory_mb: 1024\n"
    )
    inv = ("-i", ROOT / "inventory" / "local.yml", "-i", ROOT / "inventory" / "lab.yml", "-i", inventory)
    snapshot, console = CACHE / "snapshots" / guest, CACHE / "run" / guest / "console.log"
    shutil.rmtree(snapshot, ignore_errors=True)
    try:
        cold = ansible_playbook("lab_up.yml", *inv, "-l", guest, timeout=1200).stdout
        assert re.search(r"boot-to-SSH\s+[\d.]+\s+s,\s+snapshot\s+taken\s+in\s+[\d.]+\s+s", cold), cold
        ansible_adhoc(guest, "ansible.builtin.file", "path=/root/after-snapshot state=touch", *inv)
        ansible_playbook("lab_down.yml", *inv, "-l", guest, timeout=600)

        resumed = ansible_playbook("lab_up.yml", *inv, "-l", guest, timeout=1200).stdout
        assert re.search(r"resume-to-SSH\s+[\d.]+\s+s", resumed), resumed
        facts = ansible_adhoc(guest, "ansible.builtin.setup", "gather_subset=min", *inv)[guest]["ansible_facts"]
        assert facts["ansible_hostname"] == guest and facts["ansible_kernel"].startswith("6.1.")
        assert abs(int(facts["ansible_date_time"]["epoch"]) - time.time()) < 60, facts["ansible_date_time"]
        marker = ansible_adhoc(guest, "ansible.builtin.stat", "path=/root/after-snapshot", *inv)[guest]
        assert not marker["stat"]["exists"], "the resumed guest sees the last run's overlay"
        log = console.read_text(errors="replace")
        assert "Linux version" in log and f"{guest} resumed here from its booted snapshot" in log

        ansible_playbook("lab_down.yml", *inv, "-l", guest, timeout=600)
        with open(snapshot / "ram.state", "r+b") as f:
            f.truncate(1 << 20)
        fallback = ansible_playbook("lab_up.yml", *inv, "-l", guest, timeout=1200).stdout
        assert re.search(r"did\s+not\s+resume.*?booted\s+cold;\s+taken\s+in", fallback, re.S), fallback
        assert ansible_adhoc(guest, "ansible.builtin.ping", "", *inv)[guest]["ping"] == "pong"
        assert (snapshot / "ram.state").stat().st_size > 1 << 20
    finally:
        ansible_playbook("lab_down.yml", *inv, "-l", guest, timeout=600)
    assert qemu_pids_of(CACHE / "run" / guest) == [] and not listening(10036)


def test_resource_guard_refuses_before_building_or_booting(tmp_path, is_root):
    inventory = tmp_path / "guard.yml"
    inventory.write_text(
        "all:\n  children:\n    qemu:\n      hosts:\n        guard-test:\n"
        "          lab_arch: x86_64\n          ansible_port: 10036\n"
        f"          lab_cache_dir: {tmp_path}/cache\n          lab_memory_mb: 2048\n"
    )
    proc = ansible_playbook(
        "lab_up.yml",
        "-i",
        ROOT / "inventory" / "local.yml",
        "-i",
        inventory,
        "-e",
        "qemu_guest_mem_floor_mb=100000000",
        check=False,
        timeout=300,
    )
    assert proc.returncode != 0
    assert re.search(r"below\s+the\s+floor\s+of\s+100000000\s+MiB", proc.stdout), proc.stdout
    assert not (tmp_path / "cache").exists(), "nothing may be built or started when the guard refuses"


def test_molecule_destroy_after_failed_converge_leaves_nothing(is_root):
    run_dir = CACHE / "run" / "mol-fail"
    proc = run([ROOT / ".venv" / "bin" / "molecule", "test", "-s", "destroy_after_failure"], check=False, timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "converge failed on purpose" in out
    assert "PLAY [Stop the QEMU lab guests]" in out, "destroy did not run after the failed converge"
    assert (run_dir / "console.log").stat().st_size > 0, "the guest never booted, so nothing was proven"
    assert qemu_pids_of(run_dir) == []
    leftovers = [p.name for p in run_dir.iterdir() if p.name != "console.log"]
    assert leftovers == [], leftovers
    assert not listening(10034) and not listening(10035)
