"""gdb.Value -> JSON-able data, bounded so a bad pointer or a huge array cannot stall the stopped guest."""

from __future__ import annotations

import gdb

MAX_ELEMENTS = 32
MAX_STRING = 256


def _is_char(t) -> bool:
    t = t.strip_typedefs()
    return t.code == gdb.TYPE_CODE_INT and t.sizeof == 1


def to_json(value, depth: int = 1):
    """Convert ``value``: integers stay integers, enums become their names, pointers "0x…" strings,
    char arrays/pointers strings, structs dicts down to ``depth`` levels ("{…}" below that)."""
    try:
        if value.is_optimized_out:
            return "<optimized out>"
        t = value.type.strip_typedefs()
        code = t.code
        if code == gdb.TYPE_CODE_BOOL:
            return bool(value)
        if code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_CHAR):
            return int(value)
        if code == gdb.TYPE_CODE_ENUM:
            return str(value)
        if code == gdb.TYPE_CODE_FLT:
            return float(value)
        if code == gdb.TYPE_CODE_PTR:
            addr = int(value)
            if addr and depth > 0 and _is_char(t.target()):
                return value.string(length=MAX_STRING, errors="replace").split("\0", 1)[0]
            if t.target().strip_typedefs().code == gdb.TYPE_CODE_FUNC:
                return str(value)  # "0x… <function_name>"
            return f"{addr:#x}"
        if code == gdb.TYPE_CODE_ARRAY:
            low, high = t.range()
            if _is_char(t.target()):
                raw = bytes(int(value[i]) & 0xFF for i in range(low, min(high, low + MAX_STRING - 1) + 1))
                return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            return [to_json(value[i], depth) for i in range(low, min(high, low + MAX_ELEMENTS - 1) + 1)]
        if code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
            if depth <= 0:
                return "{…}"
            return fields(value, depth - 1)
        return str(value)
    except (gdb.error, gdb.MemoryError, RuntimeError, ValueError) as exc:
        return f"<error: {exc}>"


def fields(value, depth: int) -> dict:
    """Struct fields by name; members of anonymous structs/unions are lifted to the parent like C does."""
    out = {}
    for field in value.type.strip_typedefs().fields():
        if field.artificial:
            continue
        member = value[field]
        if field.name is None:
            inner = to_json(member, depth + 1)
            if isinstance(inner, dict):
                out.update(inner)
            continue
        out[field.name] = to_json(member, depth)
    return out
