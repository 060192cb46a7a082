"""Read-only tracefs discovery and capability probes (stdlib only: runs on managed hosts).

Nothing here changes tracing state: probes open files without truncating or writing.
"""

from __future__ import annotations

import errno
import os

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
