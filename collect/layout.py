"""Where things are: a raw trace file, one host's results directory, or a run directory (docs/interfaces.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass

from collect import tables
from collect.ftrace_text import TRACE_DAT_MAGIC
from collect.normalize import OUT_DIR, NormalizeError, normalize_host

RAW_NAMES = ("trace.txt", "trace.dat", "trace.meta.json", "facts_before.json", "scores.jsonl")


@dataclass
class Host:
    run: str
    host: str
    raw_dir: str  # the host's raw results
    out_dir: str  # its normalized/ tables


def _is_host_dir(d):
    return any(os.path.exists(os.path.join(d, n)) for n in RAW_NAMES)


def sanitize(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def run_id(run_dir):
    """The run's id from its run.json, else the directory's name (results/<run-id>/ by construction)."""
    try:
        with open(os.path.join(run_dir, "run.json")) as f:
            return json.load(f).get("run") or os.path.basename(run_dir)
    except (OSError, ValueError, AttributeError):
        return os.path.basename(run_dir)


def resolve(path, workdir=None):
    """(run id, [Host]) for ``path``. A lone trace file is copied into ``workdir`` (a temp dir) as a host."""
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise NormalizeError("%s does not exist: pass a trace file, a results/<run>/<host> or results/<run> dir" % path)
    if os.path.isfile(path):
        workdir = workdir or tempfile.mkdtemp(prefix="collect-")
        stem = sanitize(os.path.splitext(os.path.basename(path))[0])
        hdir = os.path.join(workdir, stem)
        os.makedirs(hdir, exist_ok=True)
        with open(path, "rb") as f:
            is_dat = f.read(len(TRACE_DAT_MAGIC)) == TRACE_DAT_MAGIC
        name = "trace.dat" if is_dat else "trace.txt"
        target = os.path.join(hdir, name)
        if not os.path.exists(target):
            os.symlink(path, target)
        return "-", [Host("-", stem, hdir, os.path.join(hdir, OUT_DIR))]
    if _is_host_dir(path):
        run = run_id(os.path.dirname(path))
        return run, [Host(run, os.path.basename(path), path, os.path.join(path, OUT_DIR))]
    run = run_id(path)
    hosts = [
        Host(run, name, os.path.join(path, name), os.path.join(path, name, OUT_DIR))
        for name in sorted(os.listdir(path))
        if os.path.isdir(os.path.join(path, name)) and _is_host_dir(os.path.join(path, name))
    ]
    if not hosts:
        raise NormalizeError("%s holds no host results (<host>/trace.txt, trace.dat, trace.meta.json)" % path)
    return run, hosts


def ensure_normalized(h, force=False, prefer="auto"):
    """Normalize a host unless its tables are newer than every raw input; returns host.json's content."""
    info_path = os.path.join(h.out_dir, "host.json")
    # formats.json marks tables whose events view types fields at query time (older ones stored the maps)
    current = os.path.exists(os.path.join(h.out_dir, tables.FORMATS_FILE))
    if not force and current and os.path.exists(info_path):
        stamp = os.path.getmtime(info_path)
        raws = [os.path.join(h.raw_dir, n) for n in (*RAW_NAMES, "vmstat_delta.json", "facts_after.json")]
        if all(not os.path.exists(r) or os.path.getmtime(r) <= stamp for r in raws):
            with open(info_path) as f:
                return json.load(f)
    if os.path.isdir(h.out_dir):
        shutil.rmtree(h.out_dir)
    return normalize_host(h.raw_dir, h.run, h.host, prefer=prefer, out_dir=h.out_dir)
