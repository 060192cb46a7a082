"""A gdb hit's time on the trace clock of the run's ftrace buffer, read from guest memory at the stop.

The guest is frozen at a hit, so nothing can be asked of it; but every per-CPU ring buffer keeps the timestamp of
the last event written on that CPU (`ring_buffer_per_cpu.write_stamp`, in the buffer's trace clock). On the CPU
that hit, that is the trace time of the latest traced event before the stop: the hit lies at or just after it, on
the very clock the trace lines carry. Host wall time does not map: a gdbstub stop freezes the guest's clocks, so
wall - trace drifts by every second the guest stood still.

Types come from symbols (`global_trace`, `trace_clocks`), never from a type name lookup, which can expand most of a
vmlinux's DWARF (docs/kgdb.md).
"""

from __future__ import annotations

import gdb


def _scalar(value):
    """rb_time_t is {local64_t {local_t {atomic_long_t {counter}}}} on 64-bit: the first leaf integer."""
    while value.type.strip_typedefs().code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
        value = value[value.type.strip_typedefs().fields()[0]]
    return int(value)


def resolve(buffer: str) -> dict:
    """Before attaching: check that the vmlinux has what we read. ``buffer`` is a tracefs instance name or
    ``global`` (the top-level buffer). Returns {buffer} or {error}."""
    for name in ("global_trace", "trace_clocks"):
        if gdb.lookup_static_symbol(name) is None:
            return {"buffer": buffer, "error": f"{name} not in the vmlinux (kernel without CONFIG_TRACING?)"}
    if gdb.lookup_global_symbol("ftrace_trace_arrays") is None:
        return {"buffer": buffer, "error": "ftrace_trace_arrays not in the vmlinux"}
    return {"buffer": buffer}


def _trace_array(buffer: str):
    glob = gdb.lookup_static_symbol("global_trace").value()
    if buffer == "global":
        return glob
    head = gdb.lookup_global_symbol("ftrace_trace_arrays").value()
    ptr_t = glob.type.pointer()
    node, end = head["next"], int(head.address)
    while int(node) != end:  # `list` is trace_array's first member: the node is the trace_array
        tr = node.cast(ptr_t).dereference()
        if int(tr["name"]) and tr["name"].string() == buffer:
            return tr
        node = node["next"]
    return None


def stamp(info: dict, cpu: int | None) -> dict:
    """At a stop: {buffer, cpu, clock, stamp (raw), ts (seconds when the clock counts ns, else raw)}."""
    if "error" in info:
        return dict(info)
    if cpu is None:
        return {"buffer": info["buffer"], "error": "the hitting CPU is unknown"}
    try:
        tr = _trace_array(info["buffer"])
        if tr is None:
            return {"buffer": info["buffer"], "error": f"no tracefs instance {info['buffer']!r} in the guest"}
        clock = gdb.lookup_static_symbol("trace_clocks").value()[int(tr["clock_id"])]
        rb = tr["array_buffer"]["buffer"]["buffers"][cpu].dereference()
        raw = _scalar(rb["write_stamp"])
        in_ns = bool(int(clock["in_ns"]))
        return {
            "buffer": info["buffer"],
            "cpu": cpu,
            "clock": clock["name"].string(),
            "stamp": raw,
            "ts": raw / 1e9 if in_ns else raw,
        }
    except (gdb.error, gdb.MemoryError, RuntimeError) as exc:
        return {"buffer": info["buffer"], "error": f"ring buffer not readable: {exc}"}
