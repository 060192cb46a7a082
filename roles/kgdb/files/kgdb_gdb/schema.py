"""Declarative gdb session: validation and normalisation.

Plain Python (no ``gdb`` import) so the role can check a session, and tests can exercise it, before anything
touches a guest. A session is JSON or YAML::

    name: manual-compaction            # file name of the JSON record: gdb/<name>.json
    deadline_s: 120                    # wall-clock budget from the first `continue`; the guest is released after
    max_hits: 3                        # optional: total hits over all breakpoints
    breakpoints:
      - location: compact_zone         # function, file:line, or *address
        condition: "cc->order == -1"   # optional gdb condition
        max_hits: 1                    # per-breakpoint limit (default 1); 0 = until the deadline
        capture:
          backtrace: 64                # frames to record (args always recorded); 0 = none
          locals: true                 # frame 0 locals
          expressions: ["cc->zone->name", "cc->order"]
          compact_control: auto        # auto = first `struct compact_control *` in the stack, or an expression
    trigger:                           # run in the guest (by the role, over the inventory connection) once armed
      command: "echo 1 > /proc/sys/vm/compact_memory"
      timeout_s: 120
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
LOCATION_RE = re.compile(r"^(\*0x[0-9a-fA-F]+|[A-Za-z_][A-Za-z0-9_.]*|[A-Za-z0-9_./+-]+\.[chS]:[0-9]+)$")

CAPTURE_DEFAULTS = {"backtrace": 64, "locals": False, "expressions": [], "compact_control": None}
TOP_KEYS = {"name", "deadline_s", "max_hits", "breakpoints", "trigger", "description"}
BP_KEYS = {"location", "condition", "max_hits", "capture"}
CAPTURE_KEYS = set(CAPTURE_DEFAULTS)
TRIGGER_KEYS = {"command", "timeout_s"}


class SessionError(ValueError):
    """The session is invalid; the message lists every problem and how to fix it."""


def _int(value, where, errors, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        errors.append(f"{where}: expected an integer >= {minimum}, got {value!r}")
        return minimum
    return value


def _unknown(keys, allowed, where, errors):
    for key in sorted(set(keys) - allowed):
        errors.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def normalize(session) -> dict:
    """Return the session with every default filled in, or raise SessionError naming each problem."""
    errors: list[str] = []
    if not isinstance(session, dict):
        raise SessionError(f"session: expected a mapping, got {type(session).__name__}")
    _unknown(session, TOP_KEYS, "session", errors)
    name = session.get("name", "session")
    if not isinstance(name, str) or not NAME_RE.match(name):
        errors.append(f"name: {name!r} must match [A-Za-z0-9._-]+ (it becomes the file gdb/<name>.json)")
    out = {
        "name": name,
        "description": str(session.get("description", "")),
        "deadline_s": _int(session.get("deadline_s", 120), "deadline_s", errors, 1),
        "max_hits": _int(session.get("max_hits", 0), "max_hits", errors),
        "breakpoints": [],
        "trigger": None,
    }
    bps = session.get("breakpoints")
    if not isinstance(bps, list) or not bps:
        errors.append("breakpoints: give at least one, e.g. [{location: compact_zone}]")
        bps = []
    for i, bp in enumerate(bps):
        where = f"breakpoints[{i}]"
        if isinstance(bp, str):
            bp = {"location": bp}
        if not isinstance(bp, dict):
            errors.append(f"{where}: expected a mapping or a location string, got {bp!r}")
            continue
        _unknown(bp, BP_KEYS, where, errors)
        loc = bp.get("location")
        if not isinstance(loc, str) or not LOCATION_RE.match(loc.strip()):
            errors.append(f"{where}.location: {loc!r} is not a function name, file.c:line or *0xaddress")
            loc = str(loc)
        capture = dict(CAPTURE_DEFAULTS)
        given = bp.get("capture") or {}
        if not isinstance(given, dict):
            errors.append(f"{where}.capture: expected a mapping")
            given = {}
        _unknown(given, CAPTURE_KEYS, f"{where}.capture", errors)
        capture.update(given)
        capture["backtrace"] = _int(capture["backtrace"], f"{where}.capture.backtrace", errors)
        if not isinstance(capture["locals"], bool):
            errors.append(f"{where}.capture.locals: expected true/false")
        exprs = capture["expressions"]
        if not isinstance(exprs, list) or not all(isinstance(e, str) and e.strip() for e in exprs):
            errors.append(f"{where}.capture.expressions: expected a list of gdb expressions")
            capture["expressions"] = []
        cc = capture["compact_control"]
        if cc is not None and not (isinstance(cc, str) and cc.strip()):
            errors.append(f"{where}.capture.compact_control: 'auto' or an expression of type struct compact_control *")
        cond = bp.get("condition")
        if cond is not None and not (isinstance(cond, str) and cond.strip()):
            errors.append(f"{where}.condition: expected a gdb expression string")
        out["breakpoints"].append(
            {
                "location": loc.strip(),
                "condition": cond,
                "max_hits": _int(bp.get("max_hits", 1), f"{where}.max_hits", errors),
                "capture": capture,
            }
        )
    trigger = session.get("trigger")
    if trigger is not None:
        if isinstance(trigger, str):
            trigger = {"command": trigger}
        if not isinstance(trigger, dict) or not isinstance(trigger.get("command"), str):
            errors.append("trigger: expected {command: '<shell command run in the guest>', timeout_s: N}")
        else:
            _unknown(trigger, TRIGGER_KEYS, "trigger", errors)
            out["trigger"] = {
                "command": trigger["command"],
                "timeout_s": _int(trigger.get("timeout_s", out["deadline_s"]), "trigger.timeout_s", errors, 1),
            }
    if errors:
        raise SessionError("invalid gdb session:\n  - " + "\n  - ".join(errors))
    return out


def banner_mismatch(guest_banner: str, vmlinux_banner: str) -> str | None:
    """Compare /proc/version of the guest with linux_banner of the vmlinux; return why they differ, or None."""
    guest, vml = guest_banner.strip(), vmlinux_banner.strip()
    if guest == vml:
        return None
    return (
        "vmlinux does not match the running guest kernel:\n"
        f"  guest /proc/version : {guest}\n"
        f"  vmlinux linux_banner: {vml}\n"
        "Use the vmlinux of exactly this build (kgdb_symbols: debian for the guest's linux-image-<release>-dbg, "
        "or kgdb_vmlinux: the kernel_build artifact the guest booted)."
    )
