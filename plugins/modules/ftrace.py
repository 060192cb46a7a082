#!/usr/bin/python
"""Capture ftrace in a tracefs instance; the host's tracing state is restored on success, failure and interrupt."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ftrace
short_description: Capture kernel function/event traces in a tracefs instance, host state always restored
description:
  - Works in its own tracefs instance C(instances/<name>), so it cannot clobber anyone else's tracing, and removes
    it afterwards. Function tracers that the kernel offers only globally (function_graph before instance support)
    run in the global buffer; every global setting touched is snapshotted first and written back afterwards, and
    the module refuses when someone else is using the global tracer.
  - Everything is validated before the host is touched - tracer, events against C(available_events), function
    globs against C(available_filter_functions), pids alive, no shell/tracefs metacharacters - and each failure
    lists what is available.
  - Where the kernel refuses function tracing (EPERM on C(set_ftrace_filter), tracer not built), O(fallback=tracepoints)
    captures the events alone and records C(fallback_reason); O(fallback=fail) fails.
  - V(started) leaves tracing running between tasks and arms a watchdog (its own session, so it survives
    C(async) timeouts' SIGKILL and ansible-playbook being interrupted). The watchdog restores the host when the
    lease O(timeout) expires or, on a local connection, when the ansible process that started the capture is gone.
    O(state=captured) writes the capture to O(dest) and restores; O(state=absent) restores a left-over capture by
    O(name). SIGTERM/SIGINT/SIGHUP during the module itself restore before exiting.
version_added: "0.1.0"
author: compaction-lab
options:
  name:
    description: Name of the tracefs instance (and of the capture's lease under C(/run/compaction-lab/ftrace/)).
    type: str
    default: compaction_lab
  state:
    description:
      - V(started) validates, configures and turns tracing on (leaves it running).
      - V(stopped) turns tracing off and keeps the buffer for a later V(captured).
      - V(captured) stops a started capture, writes O(dest) and restores the host.
      - V(absent) restores the host (instance removed, global settings written back, lease removed).
    type: str
    choices: [started, stopped, captured, absent]
    default: captured
  tracer:
    description: V(nop) records only O(events).
    type: str
    choices: [function_graph, function, nop]
    default: nop
  functions:
    description: Globs for C(set_ftrace_filter) (function tracers). Each must match a traceable function.
    type: list
    elements: str
    default: []
  notrace:
    description: Globs for C(set_ftrace_notrace) (e.g. scheduler noise C(*migrate_task*)).
    type: list
    elements: str
    default: []
  graph_functions:
    description: Globs for C(set_graph_function) (function_graph only; global buffer only).
    type: list
    elements: str
    default: []
  events:
    description: >-
      Event globs C(system:event) (C(compaction:*), C(vmscan:mm_vmscan_kswapd_*)); a bare system means all its
      events.
    type: list
    elements: str
    default: []
  pids:
    description:
      - Function-tracer pid filter (C(set_ftrace_pid)). Integers or V(kcompactd) (every node's kcompactd thread)
        or V(kcompactdN). Events stay unfiltered unless O(event_pids) is given.
      - Manual compaction (C(compact_memory)) runs in the writing task, not in kcompactd.
    type: list
    elements: str
    default: []
  event_pids:
    description: Event pid filter (C(set_event_pid)); same forms as O(pids).
    type: list
    elements: str
    default: []
  buffer_size_kb:
    description: >-
      Per-CPU ring buffer size in KiB. 0 = sized from the CPU count, tracer and O(expected_seconds), all buffers
      together capped at a quarter of MemAvailable.
    type: int
    default: 0
  expected_seconds:
    description: Expected capture length, for the automatic buffer size.
    type: int
    default: 10
  trace_clock:
    description: >-
      Trace clock, one of the kernel's C(trace_clock) file. V(mono) lets user space read it (clock_gettime), so
      score samples and gdb hits join the trace without markers.
    type: str
    default: mono
  fallback:
    description: What to do when function tracing is refused.
    type: str
    choices: [tracepoints, fail]
    default: tracepoints
  dest:
    description: >-
      Host directory for trace.txt, trace.meta.json, formats/<system>/<event> and trace.dat (required by
      O(state=captured)).
    type: path
  trace_cmd:
    description: >-
      Also keep the buffer as C(trace.dat) with C(trace-cmd extract) (KernelShark) when trace-cmd is installed.
    type: bool
    default: false
  timeout:
    description: Lease in seconds of a V(started) capture; the watchdog restores the host when it expires.
    type: int
    default: 3600
attributes:
  check_mode:
    support: full
notes:
  - The global buffer's previous contents are not kept (the global fallback clears it); global settings are.
  - A function_graph capture also sets the options funcgraph-abstime and funcgraph-proc so lines carry time and task.
"""

EXAMPLES = r"""
- name: Trace manual compaction with function_graph (tracepoints where function tracing is refused)
  ftrace:
    state: started
    tracer: function_graph
    functions: ["*compact*", "*migrate*"]
    events: ["compaction:*", "migrate:*"]

- name: Compact
  compaction_trigger:
    compact: true

- name: Stop, write the capture and restore the host
  ftrace:
    state: captured
    dest: /var/tmp/compaction-lab/capture

- name: Clean a capture left over by an interrupted run
  ftrace:
    state: absent
"""

RETURN = r"""
meta:
  description: >-
    Capture metadata (also written as <dest>/trace.meta.json): kernel, arch, tracer, requested_tracer,
    fallback_reason, mode (instance|global), instance, functions (matched), function_globs, events (enabled), pids,
    event_pids, buffer_size_kb, buffer_sizing, cpus, per_cpu {cpu: stats}, entries_in_buffer, entries_written,
    lost_events, trace_clock, clock_offset (wall - trace seconds), clock_offset_source, started, stopped.
  returned: always
  type: dict
trace:
  description: Path of trace.txt on the host.
  returned: state=captured
  type: str
restored:
  description: What was written back or removed.
  returned: state=captured or state=absent
  type: list
  elements: str
"""

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.tracefs import (
    SAFE_EVENT,
    SAFE_GLOB,
    auto_buffer_kb,
    find_tracefs,
    function_names,
    kthread_pids,
    marker_timestamp,
    match_events,
    match_functions,
    parse_available_events,
    parse_cpu_stats,
    read,
    trace_clocks,
    write_probe,
)

LEASE_DIR = "/run/compaction-lab/ftrace"
MARKER = "compaction_lab_clock"
FUNCTION_TRACERS = ("function", "function_graph")
GRAPH_OPTIONS = ("funcgraph-abstime", "funcgraph-proc")


class Interrupted(Exception):
    pass


class Refused(Exception):
    """Input or host state that makes the capture impossible; the message names the fix."""


def _raise_interrupted(signum, _frame):
    raise Interrupted("interrupted by signal %d" % signum)


def write(path, text, append=False):
    try:
        fd = os.open(path, os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, "writing %r: %s" % (text.strip(), e.strerror), path) from None


def meminfo_kb(key, text=None):
    for line in (text or read("/proc/meminfo", "")).splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def resolve_pids(specs, proc_root="/proc"):
    """[{spec, pid, comm}] for ints and kcompactd/kcompactdN; Refused naming live alternatives otherwise."""
    out, bad = [], []
    kcompactd = None
    for spec in specs:
        spec = str(spec).strip()
        if spec.isdigit():
            comm = read(os.path.join(proc_root, spec, "comm"))
            if comm is None:
                bad.append("pid %s is not alive" % spec)
            else:
                out.append({"spec": spec, "pid": int(spec), "comm": comm.strip()})
        elif re.match(r"^kcompactd\d*$", spec):
            kcompactd = kthread_pids("kcompactd", proc_root) if kcompactd is None else kcompactd
            hits = {c: p for c, p in kcompactd.items() if spec in (c, "kcompactd")}
            if not hits:
                bad.append("%s: no such kthread (running: %s)" % (spec, ", ".join(kcompactd) or "none"))
            out += [{"spec": spec, "pid": p, "comm": c} for c, p in hits.items()]
        else:
            bad.append("%r is neither a pid nor kcompactd/kcompactdN" % spec)
    if bad:
        raise Refused("; ".join(bad))
    return out


class Lease:
    """/run/compaction-lab/ftrace/<name>.json: what a started capture changed, for whoever restores it."""

    def __init__(self, name):
        self.path = os.path.join(LEASE_DIR, name + ".json")
        self.lock_path = self.path + ".lock"
        self._lock = None

    def __enter__(self):
        os.makedirs(LEASE_DIR, exist_ok=True)
        self._lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        # No capture left under this name: the lock file goes too, so a restored host keeps nothing of it.
        if not os.path.exists(self.path):
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)
        os.close(self._lock)

    def load(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def save(self, state):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.path)

    def drop(self):
        if os.path.exists(self.path):
            os.unlink(self.path)


class Capture:
    def __init__(self, params, root):
        self.p = params
        self.root = root
        self.name = params["name"]
        self.inst = os.path.join(root, "instances", self.name)

    # ---- validation: reads only ----
    def plan(self):
        p, root = self.p, self.root
        plan = {
            "requested_tracer": p["tracer"],
            "tracer": p["tracer"],
            "fallback_reason": None,
            "instance": self.name,
            "root": root,
        }
        bad = []
        for key, rx in (("functions", SAFE_GLOB), ("notrace", SAFE_GLOB), ("graph_functions", SAFE_GLOB)):
            bad += [
                "%s: %r has characters other than [A-Za-z0-9_.*?[]-]" % (key, g) for g in p[key] if not re.match(rx, g)
            ]
        bad += ["events: %r is not system:event glob" % e for e in p["events"] if not re.match(SAFE_EVENT, e)]
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.name):
            bad.append("name %r: use [A-Za-z0-9_.-]" % self.name)
        if bad:
            raise Refused("; ".join(bad))
        if p["tracer"] == "nop" and (p["functions"] or p["notrace"] or p["graph_functions"]):
            raise Refused("functions/notrace/graph_functions need tracer function or function_graph")
        if p["tracer"] not in FUNCTION_TRACERS and p["graph_functions"]:
            raise Refused("graph_functions needs tracer function_graph")

        systems = parse_available_events(read(os.path.join(root, "available_events"), "") or "")
        plan["events"], missing = match_events(p["events"], systems)
        if missing:
            raise Refused("events matching nothing: " + "; ".join("%s: %s" % kv for kv in missing.items()))
        if not plan["events"] and p["tracer"] == "nop":
            raise Refused("nothing to trace: give events (e.g. compaction:*) or a function tracer")

        clocks, _ = trace_clocks(read(os.path.join(root, "trace_clock"), "") or "")
        if p["trace_clock"] not in clocks:
            raise Refused("trace_clock %r not offered; available: %s" % (p["trace_clock"], " ".join(clocks)))
        plan["trace_clock"] = p["trace_clock"]
        plan["pids"] = resolve_pids(p["pids"])
        plan["event_pids"] = resolve_pids(p["event_pids"])
        if not os.path.isdir(os.path.join(root, "instances")):
            raise Refused("%s/instances missing: this kernel has no tracefs instances (needs >= 3.10)" % root)
        if os.path.exists(self.inst):
            raise Refused(
                "tracefs instance %s exists: another capture is using it, or one was interrupted before it could "
                "clean up - run ftrace with state=absent name=%s, or pick another name" % (self.inst, self.name)
            )

        plan["functions"], plan["function_globs"] = [], list(p["functions"])
        if p["tracer"] in FUNCTION_TRACERS:
            why, available = self._function_refusal(p["tracer"])
            if why and p["fallback"] == "fail":
                raise Refused(why + " (fallback=tracepoints would capture the events alone)")
            if why:
                plan.update(tracer="nop", fallback_reason=why)
                if not plan["events"]:
                    raise Refused(why + "; and no events were given to fall back to")
            else:
                names = function_names(available)
                for key in ("functions", "notrace", "graph_functions"):
                    matched, miss = match_functions(p[key], names)
                    if miss:
                        raise Refused(
                            "%s globs matching no traceable function: %s"
                            % (key, "; ".join("%s (close: %s)" % (g, ", ".join(c) or "none") for g, c in miss.items()))
                        )
                    if key == "functions":
                        plan["functions"] = sorted({f for fs in matched.values() for f in fs})
        cpus = len([d for d in os.listdir(os.path.join(root, "per_cpu")) if d.startswith("cpu")]) or os.cpu_count()
        plan["cpus"] = cpus
        if p["buffer_size_kb"]:
            plan["buffer_size_kb"] = p["buffer_size_kb"]
            plan["buffer_sizing"] = "given"
        else:
            plan["buffer_size_kb"], plan["buffer_sizing"] = auto_buffer_kb(
                plan["tracer"], cpus, p["expected_seconds"], meminfo_kb("MemAvailable")
            )
        return plan

    def _function_refusal(self, tracer):
        """(why function tracing is refused or None, available_filter_functions text): the file is read once."""
        tracers = (read(os.path.join(self.root, "available_tracers"), "") or "").split()
        if tracer not in tracers:
            return "tracer %s is not in available_tracers (%s)" % (tracer, " ".join(tracers)), ""
        ok, err = write_probe(os.path.join(self.root, "set_ftrace_filter"))
        if not ok:
            return "the kernel refuses function tracing: set_ftrace_filter %s" % err, ""
        available = read(os.path.join(self.root, "available_filter_functions"))
        if available is None:
            return "available_filter_functions is not readable", ""
        return None, available

    # ---- setup: every change is recorded in the lease before it is made ----
    def start(self, plan, lease):
        state = dict(plan, mode="instance", saved={}, dir=self.inst, wall_started=time.time())
        lease.save(state)
        os.mkdir(self.inst)
        tdir = self.inst
        if plan["tracer"] in FUNCTION_TRACERS:
            inst_tracers = (read(os.path.join(self.inst, "available_tracers"), "") or "").split()
            if plan["tracer"] not in inst_tracers or self.p["graph_functions"]:
                # This kernel runs the tracer only in the top-level buffer.
                os.rmdir(self.inst)
                state.update(mode="global", dir=self.root)
                tdir = self.root
                self._claim_global(state, lease)
        set_ = self._setter(state, lease)
        set_("tracing_on", "0")
        set_("trace_clock", plan["trace_clock"])
        set_("buffer_size_kb", str(plan["buffer_size_kb"]))
        write(os.path.join(tdir, "trace"), "")
        if plan["tracer"] in FUNCTION_TRACERS:
            for key, fname in (("functions", "set_ftrace_filter"), ("notrace", "set_ftrace_notrace")):
                for i, g in enumerate(self.p[key]):
                    set_(fname, g, append=i > 0)
            for i, g in enumerate(self.p["graph_functions"]):
                set_("set_graph_function", g, append=i > 0)
            if plan["pids"]:
                set_("set_ftrace_pid", " ".join(str(x["pid"]) for x in plan["pids"]))
            if plan["tracer"] == "function_graph":
                for opt in GRAPH_OPTIONS:
                    set_("options/" + opt, "1")
        if plan["event_pids"]:
            set_("set_event_pid", " ".join(str(x["pid"]) for x in plan["event_pids"]))
        for ev in plan["events"]:
            set_("events/%s/enable" % ev.replace(":", "/"), "1")
        if plan["tracer"] != "nop":
            set_("current_tracer", plan["tracer"])
        state["functions"] = plan["functions"]
        if plan["tracer"] in FUNCTION_TRACERS:
            got = (read(os.path.join(tdir, "set_ftrace_filter"), "") or "").split("\n")
            state["functions"] = sorted({ln.split()[0] for ln in got if ln.strip() and not ln.startswith("#")})
        state["buffer_size_kb"] = int((read(os.path.join(tdir, "buffer_size_kb"), "0") or "0").split()[0])
        write(os.path.join(tdir, "tracing_on"), "1")
        state["markers"] = [self._mark(tdir, "start")]
        lease.save(state)
        return state

    def _claim_global(self, state, lease):
        """Refuse when someone else uses the global tracer; the lease then records what the capture changes."""
        busy = []
        cur = (read(os.path.join(self.root, "current_tracer"), "nop") or "nop").strip()
        if cur != "nop":
            busy.append("current_tracer is %s" % cur)
        for f in ("set_ftrace_filter", "set_ftrace_notrace", "set_ftrace_pid", "set_graph_function"):
            text = read(os.path.join(self.root, f), "") or ""
            # An empty set_ftrace_pid reads "no pid" (6.1 and earlier), not "".
            if [ln for ln in text.splitlines() if ln.strip() not in ("", "no pid") and not ln.startswith("#")]:
                busy.append("%s is set" % f)
        if busy:
            raise Refused(
                "%s needs the global buffer on this kernel, and it is in use (%s): stop that tracing first "
                "(or use tracer=nop)" % (state["tracer"], "; ".join(busy))
            )
        lease.save(state)

    def _setter(self, state, lease):
        tdir = state["dir"]

        def set_(rel, value, append=False):
            path = os.path.join(tdir, rel)
            if state["mode"] == "global" and rel not in state["saved"]:
                state["saved"][rel] = _snapshot(path, rel)
                lease.save(state)
            write(path, value + ("\n" if append else ""), append=append)

        return set_

    def _mark(self, tdir, what):
        w0 = time.time()
        write(os.path.join(tdir, "trace_marker"), "%s %s wall=%.6f" % (MARKER, what, w0))
        w1 = time.time()
        return {"what": what, "wall": (w0 + w1) / 2, "mono": time.monotonic()}

    # ---- capture ----
    def capture(self, state, dest):
        tdir = state["dir"]
        state["markers"].append(self._mark(tdir, "stop"))
        write(os.path.join(tdir, "tracing_on"), "0")
        state["wall_stopped"] = time.time()
        per_cpu = {}
        for d in sorted(os.listdir(os.path.join(tdir, "per_cpu")), key=lambda c: int(c[3:])):
            per_cpu[d[3:]] = parse_cpu_stats(read(os.path.join(tdir, "per_cpu", d, "stats"), "") or "")
        os.makedirs(dest, exist_ok=True)
        trace_path = os.path.join(dest, "trace.txt")
        offsets = []
        header = {}
        with open(os.path.join(tdir, "trace"), errors="replace") as src, open(trace_path, "w") as out:
            for line in src:
                out.write(line)
                if line.startswith("# entries-in-buffer"):
                    m = re.search(r"(\d+)/(\d+)", line)
                    header = {"entries_in_buffer": int(m.group(1)), "entries_written": int(m.group(2))}
                elif MARKER in line:
                    ts = marker_timestamp(line, MARKER)
                    wall = re.search(r"wall=(\d+\.\d+)", line)
                    if ts is not None and wall:
                        offsets.append(float(wall.group(1)) - ts)
        for ev in state["events"]:
            system, event = ev.split(":")
            fmt = read(os.path.join(self.root, "events", system, event, "format"))
            if fmt is not None:
                os.makedirs(os.path.join(dest, "formats", system), exist_ok=True)
                with open(os.path.join(dest, "formats", system, event), "w") as f:
                    f.write(fmt)
        meta = self.meta(state, per_cpu, header, offsets)
        if self.p["trace_cmd"]:
            meta["trace_dat"], meta["trace_cmd_error"] = self._trace_cmd(state, dest)
        with open(os.path.join(dest, "trace.meta.json"), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        return meta, trace_path

    def meta(self, state, per_cpu, header, offsets):
        entries = sum(s.get("entries", 0) for s in per_cpu.values())
        overrun = sum(s.get("overrun", 0) for s in per_cpu.values())
        dropped = sum(s.get("dropped_events", 0) for s in per_cpu.values())
        clock = state["trace_clock"]
        meta = {
            "kernel": platform.release(),
            "arch": platform.machine(),
            "hostname": platform.node(),
            **{k: state[k] for k in ("tracer", "requested_tracer", "fallback_reason", "mode", "functions")},
            **{k: state[k] for k in ("function_globs", "events", "pids", "event_pids", "cpus", "buffer_size_kb")},
            "instance": state["instance"] if state["mode"] == "instance" else None,
            "notrace": self.p["notrace"],
            "graph_functions": self.p["graph_functions"],
            "event_patterns": self.p["events"],
            "buffer_sizing": state["buffer_sizing"],
            "per_cpu": per_cpu,
            "entries_in_buffer": header.get("entries_in_buffer", entries),
            "entries_written": header.get("entries_written", entries + overrun),
            "lost_events": overrun + dropped,
            "trace_clock": clock,
            "started": state["wall_started"],
            "stopped": state.get("wall_stopped"),
            "clock_offset": None,
            "clock_offset_source": None,
        }
        if offsets:
            meta.update(clock_offset=round(offsets[-1], 6), clock_offset_source="trace_marker")
        elif clock in ("mono", "mono_raw", "boot"):
            m = state["markers"][-1]
            meta.update(clock_offset=round(m["wall"] - m["mono"], 6), clock_offset_source="clock_gettime")
        return meta

    def _trace_cmd(self, state, dest):
        exe = shutil.which("trace-cmd")
        if not exe:
            return False, "trace-cmd is not installed on the host"
        argv = [exe, "extract", "-o", os.path.join(dest, "trace.dat")]
        if state["mode"] == "instance":
            argv[2:2] = ["-B", self.name]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        ok = proc.returncode == 0 and os.path.exists(os.path.join(dest, "trace.dat"))
        return ok, None if ok else (proc.stderr.strip()[-400:] or "trace-cmd extract exited %d" % proc.returncode)


def _snapshot(path, rel):
    """The value to write back for a global setting (filter files: their entries; others: the selected value)."""
    text = read(path, "") or ""
    if rel == "trace_clock":
        return trace_clocks(text)[1]
    if rel in ("set_ftrace_filter", "set_ftrace_notrace", "set_ftrace_pid", "set_graph_function", "set_event_pid"):
        return " ".join(ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))
    if rel == "buffer_size_kb":
        # Never traced since boot: "7 (expanded: 1410)" - the buffer is still minimal and the kernel expands it to
        # 1410 at the first use; writing back 7 would leave the next user a 7 KiB buffer.
        m = re.search(r"expanded:\s*(\d+)", text)
        return m.group(1) if m else text.split()[0] if text.split() else "1410"
    return text.strip()


def restore(root, name, lease):
    """Undo a capture named ``name`` from its lease (or, without one, remove its instance). Idempotent.

    Signals are blocked meanwhile: a second Ctrl-C must not leave the host half restored.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
    try:
        return _restore(root, name, lease)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _restore(root, name, lease):
    done = []
    state = lease.load() or {"mode": "instance", "dir": os.path.join(root, "instances", name), "saved": {}}
    inst = os.path.join(root, "instances", name)
    if state["mode"] == "global":
        g = state["dir"]
        _quiet(write, os.path.join(g, "tracing_on"), "0")
        saved = state.get("saved", {})
        # current_tracer first (filters are cleared once no tracer uses them), tracing_on last.
        for rel in sorted(saved, key=lambda r: (r == "tracing_on") - (r == "current_tracer")):
            value = saved[rel] or ""
            path = os.path.join(g, rel)
            if rel in ("set_ftrace_filter", "set_ftrace_notrace", "set_graph_function") and value:
                _quiet(write, path, "")
                for i, fn in enumerate(value.split()):
                    _quiet(write, path, fn + "\n", append=i > 0)
            else:
                _quiet(write, path, value)
            done.append("%s/%s = %r" % (g, rel, value))
    if os.path.isdir(inst):
        for rel, value in (("tracing_on", "0"), ("current_tracer", "nop"), ("events/enable", "0")):
            _quiet(write, os.path.join(inst, rel), value)
        for _attempt in range(50):
            try:
                os.rmdir(inst)
                done.append("removed %s" % inst)
                break
            except OSError:
                time.sleep(0.1)  # a reader (trace-cmd) still holds a file of the instance
        else:
            raise Refused("could not remove %s: a process holds its files open (fuser -v %s/*)" % (inst, inst))
    lease.drop()
    return done


def _quiet(fn, *args, **kw):
    with contextlib.suppress(OSError):
        fn(*args, **kw)


def _owner_pid():
    """The outermost ansible process above us (local connection), or None (remote host: nobody to watch)."""
    pid, owner = os.getppid(), None
    while pid > 1:
        cmd = (read("/proc/%d/cmdline" % pid, "") or "").replace("\0", " ")
        if re.search(r"ansible(-playbook|-runner)?(\s|$)", cmd):
            owner = pid
        stat = read("/proc/%d/stat" % pid, "") or ""
        try:
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (IndexError, ValueError):
            break
    return owner


def arm_watchdog(root, name, deadline, owner):
    """Detached process restoring the host when the lease expires or the owning ansible process is gone."""
    if os.fork():
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 1024)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    lease = Lease(name)
    token = (lease.load() or {}).get("wall_started")
    try:
        while True:
            time.sleep(0.5)
            st = lease.load()
            if not st or st.get("wall_started") != token:
                os._exit(0)  # captured, restored or replaced by a newer capture
            if time.time() > deadline or (owner and not os.path.exists("/proc/%d" % owner)):
                break
    except Interrupted:
        pass  # SIGTERM (shutdown, kill): restore now rather than leave tracing on
    try:
        with lease:
            if (lease.load() or {}).get("wall_started") == token:
                restore(root, name, lease)
    finally:
        os._exit(0)


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "default": "compaction_lab"},
            "state": {"type": "str", "default": "captured", "choices": ["started", "stopped", "captured", "absent"]},
            "tracer": {"type": "str", "default": "nop", "choices": ["function_graph", "function", "nop"]},
            "functions": {"type": "list", "elements": "str", "default": []},
            "notrace": {"type": "list", "elements": "str", "default": []},
            "graph_functions": {"type": "list", "elements": "str", "default": []},
            "events": {"type": "list", "elements": "str", "default": []},
            "pids": {"type": "list", "elements": "str", "default": []},
            "event_pids": {"type": "list", "elements": "str", "default": []},
            "buffer_size_kb": {"type": "int", "default": 0},
            "expected_seconds": {"type": "int", "default": 10},
            "trace_clock": {"type": "str", "default": "mono"},
            "fallback": {"type": "str", "default": "tracepoints", "choices": ["tracepoints", "fail"]},
            "dest": {"type": "path"},
            "trace_cmd": {"type": "bool", "default": False},
            "timeout": {"type": "int", "default": 3600},
        },
        required_if=[("state", "captured", ("dest",))],
        supports_check_mode=True,
    )
    p = module.params
    root = find_tracefs()
    if not root:
        module.fail_json(msg="tracefs is not mounted: run the tracefs role (roles/tracefs) or mount -t tracefs")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _raise_interrupted)
    cap = Capture(p, root)
    try:
        with Lease(p["name"]) as lease:
            result = run_state(module, cap, lease, root)
    except Refused as e:
        module.fail_json(msg=str(e))
    except Interrupted as e:
        module.fail_json(msg="%s; the host was restored" % e)
    except OSError as e:
        module.fail_json(
            msg="%s: %s; the host was restored (state=absent name=%s cleans up otherwise)"
            % (e.filename, e.strerror, p["name"])
        )
    module.exit_json(**result)


def run_state(module, cap, lease, root):
    p = module.params
    state = lease.load()
    if p["state"] == "absent":
        if module.check_mode:
            return {"changed": bool(state or os.path.isdir(cap.inst)), "meta": state or {}}
        done = restore(root, p["name"], lease)
        return {"changed": bool(done), "restored": done, "meta": state or {}}
    if module.check_mode and state is None and p["state"] in ("stopped", "captured"):
        return {"changed": True, "meta": {}, "msg": "check mode: nothing was started, so nothing to %s" % p["state"]}
    if p["state"] == "stopped":
        if not state:
            raise Refused("no started capture named %s (state=started first)" % p["name"])
        if not module.check_mode:
            write(os.path.join(state["dir"], "tracing_on"), "0")
        return {"changed": True, "meta": state}
    if state is None and p["state"] == "captured":
        raise Refused(
            "no started capture named %s: run state=started first (a watchdog restores a capture whose lease "
            "expired or whose ansible run died, so a late capture finds nothing)" % p["name"]
        )
    if state is None:
        plan = cap.plan()
        if module.check_mode:
            return {"changed": True, "meta": plan}
        try:
            state = cap.start(plan, lease)
        except BaseException:
            restore(root, p["name"], lease)
            raise
        arm_watchdog(root, p["name"], time.time() + p["timeout"], _owner_pid())
        return {"changed": True, "meta": state}
    if p["state"] == "started":
        return {"changed": False, "meta": state}
    if module.check_mode:
        return {"changed": True, "meta": state}
    try:
        meta, trace = cap.capture(state, p["dest"])
    finally:
        done = restore(root, p["name"], lease)
    return {"changed": True, "meta": meta, "trace": trace, "restored": done}


if __name__ == "__main__":
    main()
