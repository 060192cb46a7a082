"""Tracefs discovery, read-only capability probes and the ftrace module's pure parsers (stdlib only: runs on hosts).

Nothing here changes tracing state: probes open files without truncating or writing.
"""

from __future__ import annotations

import difflib
import errno
import fnmatch
import os
import re

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
# Event systems the experiments use; each is reported present or absent.
EVENT_SYSTEMS = ("compaction", "migrate", "vmscan", "kmem")


def mount_points(fstype, mounts_text=None):
    """Mount points of ``fstype`` in /proc/mounts order."""
    if mounts_text is None:
        mounts_text = read("/proc/mounts", "")
    return [p[1] for p in (line.split() for line in mounts_text.splitlines()) if len(p) >= 3 and p[2] == fstype]


def find_tracefs(mounts_text=None):
    """Return the tracefs mount point, or None when tracefs is not mounted anywhere we can use."""
    mounted = mount_points("tracefs", mounts_text)
    for cand in TRACEFS_CANDIDATES:
        if cand in mounted:
            return cand
    return mounted[0] if mounted else None


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def write_probe(path):
    """Can ``path`` be opened for writing? Opens O_WRONLY|O_APPEND and closes without writing.

    For set_ftrace_filter this is the kernel's "append nothing" path: the filter is left unchanged.
    Returns (ok, reason).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as e:
        return False, "%s (%s)" % (errno.errorcode.get(e.errno, str(e.errno)), e.strerror)
    os.close(fd)
    return True, ""


def capabilities(root):
    """Capabilities of the tracefs mounted at ``root`` (None: not mounted)."""
    caps = {
        "mount": root,
        "available_tracers": [],
        "function_filter_writable": False,
        "function_filter_error": "",
        "events": {s: False for s in EVENT_SYSTEMS},
        "instances": False,
    }
    if not root:
        caps["function_filter_error"] = "tracefs is not mounted"
        return caps
    caps["available_tracers"] = (read(os.path.join(root, "available_tracers"), "") or "").split()
    ok, why = write_probe(os.path.join(root, "set_ftrace_filter"))
    caps["function_filter_writable"] = ok
    caps["function_filter_error"] = why
    for system in EVENT_SYSTEMS:
        caps["events"][system] = os.path.isdir(os.path.join(root, "events", system))
    caps["instances"] = os.path.isdir(os.path.join(root, "instances"))
    return caps


# --- Pure helpers of the ftrace module (parsers and checks on tracefs text; no I/O) ---

# Globs and event patterns are written into tracefs control files, where a space, newline or ':' command
# (`func:traceoff`, `:mod:`) would add filters or triggers nobody asked for. Only glob characters pass.
SAFE_GLOB = r"^[A-Za-z0-9_.*?\[\]-]+$"
SAFE_EVENT = r"^[A-Za-z0-9_*?\[\]-]+(:[A-Za-z0-9_.*?\[\]-]+)?$"


def parse_cpu_stats(text):
    """One per_cpu/cpuN/stats file -> {key_with_underscores: int|float} (``oldest event ts`` is seconds)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        key = key.strip().replace(" ", "_")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                continue
    return out


def parse_available_events(text):
    """available_events text -> {system: [event, ...]} in file order."""
    systems = {}
    for line in text.splitlines():
        system, sep, event = line.strip().partition(":")
        if sep:
            systems.setdefault(system, []).append(event)
    return systems


def match_events(patterns, systems):
    """Expand ``system:event`` globs (``compaction:*``, bare ``compaction`` = whole system).

    Returns (sorted list of "system:event", {pattern: why it matched nothing}).
    """
    found, bad = set(), {}
    for pat in patterns:
        sys_pat, _, ev_pat = pat.partition(":")
        ev_pat = ev_pat or "*"
        hits = [
            "%s:%s" % (s, e)
            for s in systems
            if fnmatch.fnmatchcase(s, sys_pat)
            for e in systems[s]
            if fnmatch.fnmatchcase(e, ev_pat)
        ]
        if hits:
            found.update(hits)
        elif not any(fnmatch.fnmatchcase(s, sys_pat) for s in systems):
            bad[pat] = "no event system matches %r; systems: %s" % (sys_pat, " ".join(sorted(systems)))
        else:
            names = sorted(e for s in systems if fnmatch.fnmatchcase(s, sys_pat) for e in systems[s])
            bad[pat] = "no event matches %r in %s; available: %s" % (ev_pat, sys_pat, " ".join(names))
    return sorted(found), bad


def function_names(available_filter_functions):
    """available_filter_functions text -> set of names (the ``[module]`` suffix dropped)."""
    return {line.split()[0] for line in available_filter_functions.splitlines() if line.strip()}


def match_functions(globs, names):
    """{glob: sorted matches} and {glob: near misses} for globs matching nothing."""
    matched, missing = {}, {}
    for g in globs:
        # One compiled pattern per glob (fnmatchcase looks it up again per name: 40k+ names, seconds under TCG).
        hits = sorted(filter(re.compile(fnmatch.translate(g)).match, names))
        if hits:
            matched[g] = hits
        else:
            missing[g] = difflib.get_close_matches(g.strip("*?"), sorted(names), n=5, cutoff=0.6)
    return matched, missing


def trace_clocks(text):
    """trace_clock text -> (available clocks, selected clock)."""
    clocks, current = [], None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            word = word[1:-1]
            current = word
        clocks.append(word)
    return clocks, current


def kthread_pids(prefix, proc_root="/proc"):
    """{comm: pid} of processes whose comm is ``prefix`` followed by a node number (kcompactd0, kcompactd1...)."""
    out = {}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        comm = (read(os.path.join(proc_root, entry, "comm"), "") or "").strip()
        if comm.startswith(prefix) and comm[len(prefix) :].isdigit():
            out[comm] = int(entry)
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][len(prefix) :])))


def task_state(pid, proc_root="/proc"):
    """One-letter scheduler state of ``pid`` from /proc/PID/stat ('R' running, 'S' sleeping...), None if gone."""
    stat = read(os.path.join(proc_root, str(pid), "stat")) if pid else None
    return stat[stat.rfind(")") + 2 :].split()[0] if stat else None


def auto_buffer_kb(tracer, cpus, seconds, mem_available_kb, share=0.25):
    """Per-CPU ring buffer size (KiB) for a capture, and why.

    Measured (docs: compaction-facts.md): one manual compaction traced with function_graph on *compact*+*migrate*
    wrote ~820k entries, nearly all on the CPU doing the work; 40 MiB per CPU kept all of it, the kernel's default
    (1.4 MiB) kept 5 %. Any CPU can be that CPU, so every CPU gets the burst size, plus a rate for longer captures.
    All buffers together stay below ``share`` of MemAvailable.
    """
    burst_kb, rate_kb_s = {"function_graph": (40960, 2048), "function": (20480, 1024)}.get(tracer, (4096, 64))
    want = burst_kb + int(rate_kb_s * max(0, seconds))
    cap = int(mem_available_kb * share / max(1, cpus))
    size = max(1410, min(want, cap))
    why = "%s: %d KiB burst + %d KiB/s x %ds = %d KiB per CPU" % (tracer, burst_kb, rate_kb_s, seconds, want)
    if size < want:
        why += "; capped to %d KiB (%d%% of MemAvailable %d KiB over %d CPUs)" % (
            size,
            share * 100,
            mem_available_kb,
            cpus,
        )
    return size, why


def marker_timestamp(line, tag):
    """Trace-clock seconds of a trace_marker line carrying ``tag`` (tracepoint or function_graph abstime layout)."""
    if tag not in line:
        return None
    m = re.search(r"(\d+\.\d+)(?::\s+tracing_mark_write|\s+\|)", line)
    return float(m.group(1)) if m else None
