"""The ftrace module in the global buffer, on a real 6.1 lab guest: every global setting it touches comes back
byte for byte, after a capture, after a capture that fails mid-way, and after a run that dies (watchdog lease).

Debian's 6.1 kernel offers function_graph only in the top-level buffer (an instance's available_tracers lacks it,
and set_graph_function is global everywhere), so there the module snapshots each global file before writing it.
The guest is first put in a non-default state - settings someone else left - so "restored" cannot mean "reset to
the kernel's defaults". The session's lab guest is reused and left exactly as found.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from helpers import ansible_adhoc

pytestmark = pytest.mark.lab

HOST = "lab-x86"  # Debian 6.1 (lab-x86-612 runs 6.12, where function_graph works inside an instance)
NAME = "pytest_global_restore"
# Run on the guest: write the given tracefs files (path=value, in order), then print every global setting the module
# may touch, as read back. per_cpu buffer sizes and all options/* are read too: a stray write shows up there.
GUEST_SCRIPT = r"""#!/usr/bin/python3
import glob, json, os, sys
T = next(l.split()[1] for l in open("/proc/mounts") if l.split()[2] == "tracefs")
for arg in sys.argv[1:]:
    rel, _, value = arg.partition("=")
    with open(os.path.join(T, rel), "w") as f:
        f.write(value)
files = ["current_tracer", "set_ftrace_filter", "set_ftrace_notrace", "set_graph_function", "set_graph_notrace",
         "set_ftrace_pid", "set_event_pid", "buffer_size_kb", "tracing_on", "trace_clock", "events/enable"]
files += glob.glob("per_cpu/cpu*/buffer_size_kb", root_dir=T) + glob.glob("options/*", root_dir=T)
files += glob.glob("events/*/enable", root_dir=T) + glob.glob("events/*/*/enable", root_dir=T)
state = {}
for rel in files:
    with open(os.path.join(T, rel), "rb") as f:
        state[rel] = f.read().decode("latin-1")
state["instances"] = sorted(os.listdir(os.path.join(T, "instances")))
state["leases"] = sorted(glob.glob("/run/compaction-lab/ftrace/@NAME@*"))
print(json.dumps(state))
"""
# What someone else left on the guest: none of it is a kernel default, none of it a busy function tracer.
LEFT_BY_OTHERS = [
    "tracing_on=0",
    "trace_clock=global",
    "buffer_size_kb=777",
    "options/funcgraph-abstime=0",
    "options/funcgraph-proc=0",
    "options/funcgraph-duration=0",
    "events/compaction/mm_compaction_begin/enable=1",
    "events/kmem/mm_page_alloc_extfrag/enable=1",
]
LEFT_BY_OTHERS_KEYS = [w.split("=", 1)[0] for w in LEFT_BY_OTHERS]
CAPTURE = (
    "name=%s tracer=function_graph functions=*compact*,*migrate* graph_functions=compact_zone* "
    "pids=kcompactd events=compaction:*,migrate:* fallback=fail" % NAME
)


@pytest.fixture(scope="module")
def guest(lab, tmp_path_factory):
    """Run GUEST_SCRIPT with writes; returns the settings read back. Puts the guest back as found at the end."""
    if HOST not in lab:
        pytest.skip("%s is not in this session's lab (COMPACTION_LAB_HOSTS)" % HOST)
    script = tmp_path_factory.mktemp("guest") / "tracefs_state.py"
    script.write_text(GUEST_SCRIPT.replace("@NAME@", NAME))

    def state(*writes):
        res = ansible_adhoc(HOST, "ansible.builtin.script", " ".join([str(script), *writes]))[HOST]
        return json.loads(res["stdout"])

    pristine = state()
    assert pristine["current_tracer"] == "nop\n", "the guest's global tracer is in use: %s" % pristine
    try:
        yield state
    finally:
        # Write back what differs from before the test (the pre-seeded values; per-system enables follow).
        now = state()
        keys = LEFT_BY_OTHERS_KEYS + sorted(changed(pristine, now))
        undo = ["%s=%s" % (k, _value(k, pristine[k])) for k in keys if k in pristine and _writable(k)]
        after = state(*undo)
        # A buffer unused since boot ("7 (expanded: 1408)"; per CPU "7") stays expanded once used - writing 1408
        # reads back 1410 (whole pages): the one difference the kernel allows.
        if "expanded:" in pristine["buffer_size_kb"]:
            size = int(_value("buffer_size_kb", pristine["buffer_size_kb"]))
            for k in [k for k in pristine if k.endswith("buffer_size_kb")]:
                assert size <= int(after.pop(k)) < size + 8, k
                del pristine[k]
        assert changed(pristine, after) == {}


def _writable(rel):
    """Single-value files; events/enable, events/<system>/enable and per_cpu sizes follow the files they sum up."""
    if rel.startswith("events/"):
        return rel.count("/") == 3
    return rel not in ("instances", "leases") and not rel.startswith(("set_", "per_cpu/"))


def _value(rel, text):
    """What to write to get ``text`` read back (trace_clock reads as the list with the current one bracketed)."""
    if rel == "trace_clock":
        return re.search(r"\[(\S+)\]", text).group(1)
    # A buffer never used since boot reads "7 (expanded: 1410)"; once used it cannot shrink back to unexpanded.
    expanded = re.search(r"expanded: (\d+)", text)
    return expanded.group(1) if expanded else text.strip()


def module(*args, check=True):
    return ansible_adhoc(HOST, "ftrace", " ".join(args), check=check)[HOST]


def changed(before, after):
    return {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}


def test_capture_restores_every_global_setting(guest, tmp_path):
    before = guest(*LEFT_BY_OTHERS)
    started = module("state=started", CAPTURE)
    assert started["meta"]["mode"] == "global", started["meta"]
    during = guest()
    # The module really changed the global files it restores (else the comparison below proves nothing).
    assert during["current_tracer"] == "function_graph\n"
    assert during["tracing_on"] == "1\n" and "[mono]" in during["trace_clock"]
    assert "compact_zone" in during["set_graph_function"] and during["set_ftrace_pid"].strip() != "no pid"
    assert during["buffer_size_kb"] != before["buffer_size_kb"] and during["options/funcgraph-proc"] == "1\n"
    assert during["events/migrate/mm_migrate_pages/enable"] == "1\n"
    dest = "/var/tmp/%s" % NAME
    captured = module("state=captured name=%s dest=%s" % (NAME, dest))
    assert captured["meta"]["tracer"] == "function_graph" and captured["meta"]["functions"]
    assert any("current_tracer" in r for r in captured["restored"]), captured["restored"]
    assert changed(before, guest()) == {}
    ansible_adhoc(HOST, "ansible.builtin.file", "path=%s state=absent" % dest)


def test_failure_mid_capture_restores(guest):
    """The capture step itself fails (dest is a file) after tracing stopped and the buffer stats were read."""
    before = guest(*LEFT_BY_OTHERS)
    assert module("state=started", CAPTURE)["meta"]["mode"] == "global"
    failed = module("state=captured name=%s dest=/etc/hostname" % NAME, check=False)
    assert failed["msg"].startswith("/etc/hostname: File exists; the host was restored"), failed
    assert changed(before, guest()) == {}


def test_run_that_dies_is_restored_by_the_watchdog(guest):
    """Nobody captures (the ansible run died): the lease expires and the detached watchdog restores the guest."""
    before = guest(*LEFT_BY_OTHERS)
    assert module("state=started timeout=5", CAPTURE)["meta"]["mode"] == "global"
    deadline = time.monotonic() + 300
    while (diff := changed(before, guest())) and time.monotonic() < deadline:
        time.sleep(2)
    assert diff == {}
