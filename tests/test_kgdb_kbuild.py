"""KGDB against the session's real kernel_build artifact (CONFIG_KGDB=y): the refusals (preflight, no guest), and
one real KGDB-over-serial session in a private guest booted with that kernel (tests/inventory/kgdb_lab.yml),
traced by ftrace in the same run, so the stack joins the trace on the trace clock."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import BIN, ansible_adhoc, ansible_playbook, run

pytestmark = pytest.mark.kbuild
CLI = Path(__file__).resolve().parents[1] / "roles" / "kgdb" / "files" / "kgdb_session.py"
INVENTORY = ("-i", "inventory/local.yml", "-i", "inventory/lab.yml", "-i", "tests/inventory/kgdb_lab.yml")
GUEST = "kgdb-x86"


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


def guest_uptime() -> float:
    res = ansible_adhoc(GUEST, "ansible.builtin.slurp", "src=/proc/uptime", *INVENTORY, timeout=300)[GUEST]
    return float(base64.b64decode(res["content"]).split()[0])


@pytest.fixture
def kgdb_guest(kernel_artifact):
    """kgdb-x86 booted with the artifact, kgdboc=ttyS1 on 127.0.0.1:1251; always brought down."""
    try:
        ansible_playbook("lab_up.yml", *INVENTORY, "-l", GUEST, "-e", f"lab_kernel={kernel_artifact}", timeout=1800)
        yield GUEST
    finally:
        ansible_playbook("lab_down.yml", *INVENTORY, "-l", GUEST, timeout=600)


@pytest.mark.lab
def test_kgdb_serial_session_traced_and_joined_on_the_trace_clock(kernel_artifact, kgdb_guest, tmp_path):
    # In compact_zone's body (not the ftrace-patched entry): KGDB's int3 coexists with function_graph there.
    session = tmp_path / "serial.yml"
    session.write_text(
        textwrap.dedent(
            """
            name: kgdb-serial
            deadline_s: 300
            breakpoints:
              - location: mm/compaction.c:2304
                capture: {backtrace: 32, expressions: [cc->order], compact_control: auto}
            trigger: {command: echo 1 > /proc/sys/vm/compact_memory, timeout_s: 300}
            """
        )
    )
    results = tmp_path / "results"
    before = guest_uptime()
    proc = ansible_playbook(
        "kgdb_session.yml", *INVENTORY, "-l", GUEST,
        "-e", f"kgdb_vmlinux={kernel_artifact}", "-e", "kgdb_transport=kgdb", "-e", f"kgdb_session_file={session}",
        "-e", "kgdb_session_trace=true", "-e", f"experiment_results_dir={results}",
        # Lean: the compaction path only (the default *migrate* adds ~0.5 M scheduler lines under TCG).
        "-e", '{"ftrace_capture_functions": ["compact_*"]}',
        "-e", "experiment_run_id=kgdb-serial",
        timeout=2400,
    )  # fmt: skip
    run_dir = results / "kgdb-serial"
    rec = json.loads((run_dir / GUEST / "gdb" / "kgdb-serial.json").read_text())
    assert rec["status"] == "ok" and rec["released"], rec["message"]
    assert rec["transport"] == "kgdb" and rec["target"] == "127.0.0.1:1251"
    (hit,) = rec["hits"]
    names = [f["function"] for f in hit["frames"]]
    # Whole through function_graph's return hooks: compact_zone <- compact_node <- ... <- entry_SYSCALL_64.
    assert names[0] == "compact_zone" and names[-1] == "entry_SYSCALL_64", names
    assert "return_to_handler" not in names
    assert names.index("compact_node") < names.index("sysctl_compaction_handler"), names
    assert any(f.get("ftrace_graph_return") for f in hit["frames"])
    assert hit["frames"][0]["line"] == 2304 and hit["compact_control"]["order"] == -1
    assert hit["task"]["pid"] > 1 and hit["task"]["cpu"] in (0, 1)
    clock = hit["trace_clock"]
    assert clock["clock"] == "mono" and clock["cpu"] == hit["task"]["cpu"] and clock["ts"] > 0, clock
    assert "ok: 1 hit(s) captured" in proc.stdout
    assert guest_uptime() > before, "guest left stopped"
    # A run like the other experiments: run.json, summary.json, results/latest, the trace beside the record.
    assert json.loads((run_dir / "run.json").read_text())["hosts"][GUEST]["status"] == "ok"
    assert GUEST in json.loads((run_dir / "summary.json").read_text())["hosts"]
    assert (results / "latest").resolve() == run_dir and (run_dir / GUEST / "trace.txt").stat().st_size > 0
    # Joined on the trace clock: the hit lies inside the traced compact_zone call of the same pid.
    out = run([BIN / "python", "-m", "collect", "gdb-stacks", run_dir, "--json"]).stdout
    match = json.loads(out)["records"][0]["hits"][0]["ftrace"]
    assert match["function"] == "compact_zone" and match["by_time"] and match["distance_us"] == 0, match
    paths = run([BIN / "python", "-m", "collect", "gdb-stacks", run_dir, "--function", "compact_zone"]).stdout
    assert "compact_zone ← compact_node ← compact_nodes ← sysctl_compaction_handler" in paths
    run([BIN / "python", "-m", "collect", "report", run_dir])
    report = (run_dir / "report.html").read_text()
    assert "gdb stacks" in report and "call path of compact_zone" in report and "inside the call at" in report
