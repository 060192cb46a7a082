"""Capture playbooks and the ftrace module against this machine's real tracefs (tracepoint fallback here).

Every test checks the host's tracing state and compaction sysctls byte for byte against a snapshot taken before it.
Instances of other users come and go on this shared machine, so the instance check is about ours: none of this
test's names exists afterwards and no instance appeared that was not there before except other users' ones.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import ROOT, _env, ansible_adhoc, ansible_playbook

pytestmark = pytest.mark.host

T = "/sys/kernel/tracing"
GLOBAL_FILES = ["current_tracer", "tracing_on", "trace_clock", "buffer_size_kb", "set_event_pid", "events/enable"]
SYSCTLS = [
    "/proc/sys/vm/compaction_proactiveness",
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/mm/transparent_hugepage/defrag",
]


def _read(path):
    try:
        return Path(path).read_bytes()
    except OSError as e:
        return ("<%s>" % e.strerror).encode()


def host_state():
    state = {f: _read(os.path.join(T, f)) for f in GLOBAL_FILES}
    state.update({p: _read(p) for p in glob.glob(T + "/events/*/enable")})
    state.update({p: _read(p) for p in SYSCTLS})
    state.update({p: _read(p) for p in glob.glob(T + "/options/funcgraph-*")})
    return state


def instances():
    return set(os.listdir(T + "/instances"))


@pytest.fixture
def unchanged_host(is_root, request):
    """Yields a unique instance name; afterwards the host must be exactly as before."""
    name = "pytest_%s_%d" % (re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40], os.getpid())
    before, inst_before = host_state(), instances()
    yield name
    after = {}
    for _ in range(60):  # the watchdog restores within ~0.5 s of the owner's death
        after = host_state()
        if name not in instances() and after == before:
            break
        time.sleep(0.5)
    assert name not in instances(), "instance %s left behind" % name
    assert not glob.glob("/run/compaction-lab/ftrace/%s.json*" % name), "lease left behind"
    changed = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert not changed, "host state changed: %s" % changed
    assert not {i for i in instances() - inst_before if i.startswith("pytest_")}


def run_dir(results):
    return results / os.readlink(results / "latest")


def test_trace_manual_local(unchanged_host, tmp_path):
    ansible_playbook(
        "trace_manual.yml", "-l", "local", "-e", "experiment_results_dir=%s" % tmp_path,
        "-e", "ftrace_capture_name=%s" % unchanged_host, timeout=900,
    )  # fmt: skip
    run = run_dir(tmp_path)
    status = json.loads((run / "run.json").read_text())
    assert status["hosts"]["local"]["status"] == "ok", status
    host = run / "local"
    meta = json.loads((host / "trace.meta.json").read_text())
    assert meta["requested_tracer"] == "function_graph"
    assert meta["tracer"] == "nop" and "function_graph" in meta["fallback_reason"]  # this kernel refuses it
    assert meta["instance"] == unchanged_host and meta["mode"] == "instance"
    assert meta["clock_offset_source"] == "trace_marker" and meta["clock_offset"] > 0
    assert set(meta["per_cpu"]) == {str(c) for c in range(os.cpu_count())}
    assert meta["entries_in_buffer"] > 0
    trace = (host / "trace.txt").read_text()
    assert trace.count("mm_compaction_begin:") > 0
    assert (host / "formats/compaction/mm_compaction_begin").read_text().startswith("name: mm_compaction_begin")
    for f in ("facts_before.json", "facts_after.json", "vmstat_delta.json"):
        assert (host / f).exists(), f
    delta = json.loads((host / "vmstat_delta.json").read_text())
    assert delta["compact_migrate_scanned"] >= 0
    assert json.loads((run / "summary.json").read_text())["hosts"]["local"]


def test_trace_memory_stress_local(unchanged_host, tmp_path):
    ansible_playbook(
        "trace_memory_stress.yml", "-l", "local", "-e", "experiment_results_dir=%s" % tmp_path,
        "-e", "ftrace_capture_name=%s" % unchanged_host, "-e", "trace_memory_stress_workers=2",
        "-e", "trace_memory_stress_vm_percent=3", "-e", "trace_memory_stress_seconds=8", timeout=1200,
    )  # fmt: skip
    run = run_dir(tmp_path)
    assert json.loads((run / "run.json").read_text())["hosts"]["local"]["status"] == "ok"
    host = run / "local"
    meta = json.loads((host / "trace.meta.json").read_text())
    assert [p["comm"] for p in meta["pids"]] == ["kcompactd0"]
    assert "vmscan:mm_vmscan_kswapd_wake" in meta["events"]
    # kcompactd sleeps twice a second at proactiveness > 0; the events of all tasks are in the same buffer.
    assert "mm_compaction_kcompactd_sleep:" in (host / "trace.txt").read_text()
    samples = (host / "scores.jsonl").read_text().splitlines()
    assert samples and json.loads(samples[0])["node"] == 0


def test_failing_task_after_start(unchanged_host, tmp_path):
    """Per-node compaction of a node that does not exist fails after tracing started: restored, marked failed."""
    proc = ansible_playbook(
        "trace_manual.yml", "-l", "local", "-e", "experiment_results_dir=%s" % tmp_path,
        "-e", "ftrace_capture_name=%s" % unchanged_host, "-e", '{"trace_manual_nodes": [97]}',
        check=False, timeout=900,
    )  # fmt: skip
    assert proc.returncode != 0
    status = json.loads((run_dir(tmp_path) / "run.json").read_text())["hosts"]["local"]
    assert status["status"] == "failed"
    assert "node97 has no compact file" in status["msg"]
    assert (run_dir(tmp_path) / "local" / "facts_before.json").exists()  # what there is still got fetched


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_playbook_killed_mid_capture(unchanged_host, tmp_path, sig):
    """Ctrl-C (SIGINT to the process group) or kill -9 of ansible-playbook while the instance is tracing."""
    cmd = [
        str(ROOT / ".venv/bin/ansible-playbook"), str(ROOT / "playbooks/trace_memory_stress.yml"), "-l", "local",
        "-e", "experiment_results_dir=%s" % tmp_path, "-e", "ftrace_capture_name=%s" % unchanged_host,
        "-e", "trace_memory_stress_workers=1", "-e", "trace_memory_stress_vm_percent=1",
        "-e", "trace_memory_stress_seconds=20",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 600
        while not os.path.isdir("%s/instances/%s" % (T, unchanged_host)):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "capture never started"
            time.sleep(0.05)
        time.sleep(2)
        assert os.path.isdir("%s/instances/%s" % (T, unchanged_host))  # still tracing when killed
        os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    # the async stress-ng job ends on its own --timeout (it is bounded); wait so it does not outlive the test
    for _ in range(120):
        if not subprocess.run(["pgrep", "-f", "stress-ng --vm 1 --vm-bytes"], capture_output=True).stdout:
            break
        time.sleep(1)


@pytest.mark.parametrize(
    "args, expect",
    [
        ("events=compaction:mm_compaction_nope", "no event matches 'mm_compaction_nope' in compaction; available: "),
        ("events=compactionz:*", "no event system matches 'compactionz'; systems: "),
        ("events=compaction:* pids=999999", "pid 999999 is not alive"),
        ("events=compaction:* pids=kcompactd7", "kcompactd7: no such kthread (running: kcompactd0"),
        ("events=compaction:* pids=bash", "'bash' is neither a pid nor kcompactd/kcompactdN"),
        ("tracer=function functions=*compact*;reboot events=compaction:*", "has characters other than"),
        ("events=compaction:*,migrate:*$(id)", "is not system:event glob"),
        ("tracer=function_graph functions=*compact* events=compaction:* fallback=fail", "fallback=tracepoints would"),
        ("events=compaction:* trace_clock=wallclock", "trace_clock 'wallclock' not offered; available: "),
    ],
)
def test_bad_input_refused_before_touching(unchanged_host, args, expect):
    res = ansible_adhoc("local", "ftrace", "state=started name=%s %s" % (unchanged_host, args), check=False)
    assert not res["local"]["changed"], res
    assert expect in res["local"]["msg"], res["local"]["msg"]


def test_absent_cleans_leftover_instance(unchanged_host):
    """A left-over instance (interrupted run on a kernel without our lease) is removed by name."""
    os.mkdir("%s/instances/%s" % (T, unchanged_host))
    Path("%s/instances/%s/events/compaction/enable" % (T, unchanged_host)).write_text("1")
    refused = ansible_adhoc(
        "local", "ftrace", "state=started name=%s events=compaction:*" % unchanged_host, check=False
    )
    assert "state=absent name=%s" % unchanged_host in refused["local"]["msg"]
    res = ansible_adhoc("local", "ftrace", "state=absent name=%s" % unchanged_host)
    assert res["local"]["changed"] and res["local"]["restored"] == ["removed %s/instances/%s" % (T, unchanged_host)]


def test_compaction_trigger_sets_and_restores(is_root):
    before = {p: _read(p) for p in SYSCTLS}
    cur = int(before[SYSCTLS[0]])
    res = ansible_adhoc(
        "local", "compaction_trigger", "proactiveness=%d thp_defrag=defer" % (cur + 1 if cur < 100 else 0)
    )
    try:
        assert res["local"]["changed"] and res["local"]["previous"]["proactiveness"] == cur
        assert res["local"]["current"]["thp_defrag"] == "defer"
    finally:
        prev = json.dumps(res["local"]["previous"])
        ansible_adhoc("local", "compaction_trigger", "restore='%s'" % prev)
    assert {p: _read(p) for p in SYSCTLS} == before


def test_check_mode_touches_nothing(unchanged_host, tmp_path):
    ansible_playbook(
        "trace_manual.yml", "-l", "local", "--check", "-e", "experiment_results_dir=%s" % tmp_path,
        "-e", "ftrace_capture_name=%s" % unchanged_host, timeout=900,
    )  # fmt: skip
    assert not list(tmp_path.iterdir())  # nothing written under results/ either
