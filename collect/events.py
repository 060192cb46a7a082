"""Tracepoint fields, typed from the host's own `events/<system>/<event>/format` files.

The print fmt of each event says which `name=` keys appear in the text and in which order, so values that
contain spaces (`range=(0x1 ~ 0x200)`) or padding (`zone=DMA      order=-1`) split correctly. Events without a
format file fall back to the generic `key=value` split and are counted (`events_without_format`), never dropped.
"""

from __future__ import annotations

import os
import re

_PRINT_FMT = re.compile(r'^print fmt:\s*"((?:[^"\\]|\\.)*)"', re.M)
_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]+);\s*offset:\d+;\s*size:(?P<size>\d+);\s*signed:(?P<signed>\d);", re.M)
_KEY = re.compile(r"(?:^|(?<=[\s,(]))(\w+)=")
_INT = re.compile(r"^-?\d+$")
_HEX = re.compile(r"^(?:0x)?[0-9a-fA-F]+$")
_RANGE = re.compile(r"^\((0x[0-9a-fA-F]+|\d+) ~ (0x[0-9a-fA-F]+|\d+)\)$")
_INT64_MAX = (1 << 63) - 1


class EventFormat:
    """One event's format file: the printed keys in order, and which of them print as hex."""

    __slots__ = ("fields", "hex_keys", "keys", "name", "system")

    def __init__(self, system, name, text):
        self.system, self.name = system, name
        m = _PRINT_FMT.search(text)
        fmt = m.group(1) if m else ""
        # key=%lx / key=0x%lx / key=%p print as hex; the rest as written.
        self.keys = []
        self.hex_keys = set()
        for km in re.finditer(r"(\w+)=\(?(0x)?%(?:[-0-9.]*)(l{0,2}[xXpdiusc]|[a-z]+)", fmt):
            self.keys.append(km.group(1))
            if km.group(2) or km.group(3).endswith(("x", "X", "p")):
                self.hex_keys.add(km.group(1))
        self.fields = {
            f.group("decl").split()[-1].split("[")[0]: f.group("decl").rsplit(" ", 1)[0].strip()
            for f in _FIELD.finditer(text)
        }


def load_formats(root):
    """{event name: EventFormat} from a `formats/<system>/<event>` tree (a missing tree gives {})."""
    out = {}
    if not root or not os.path.isdir(root):
        return out
    for system in sorted(os.listdir(root)):
        sdir = os.path.join(root, system)
        if not os.path.isdir(sdir):
            continue
        for name in sorted(os.listdir(sdir)):
            path = os.path.join(sdir, name)
            if os.path.isdir(path):  # tolerate formats/<system>/<event>/format too
                path = os.path.join(path, "format")
            try:
                with open(path) as f:
                    out[name] = EventFormat(system, name, f.read())
            except OSError:
                continue
    return out


def _value(key, raw, hex_keys):
    v = raw.strip().rstrip(",")
    if _INT.match(v) and key not in hex_keys:
        return int(v)
    if (key in hex_keys and _HEX.match(v)) or (v.startswith("0x") and _HEX.match(v)):
        return int(v, 16)
    return v


def split_fields(body, keys=None):
    """Positions of `key=` in ``body`` -> {key: raw text}; ``keys`` (in print order) restricts the split."""
    spans = []
    if keys:
        pos = 0
        for k in keys:
            i = body.find(k + "=", pos)
            while i > 0 and body[i - 1] not in " ,(":
                i = body.find(k + "=", i + 1)
            if i < 0:
                continue
            spans.append((k, i, i + len(k) + 1))
            pos = i + len(k) + 1
    else:
        spans = [(m.group(1), m.start(1), m.end()) for m in _KEY.finditer(body)]
    out = {}
    for n, (k, _start, vstart) in enumerate(spans):
        end = spans[n + 1][1] if n + 1 < len(spans) else len(body)
        out[k] = body[vstart:end]
    return out


def parse_fields(name, body, formats):
    """(ints {key: int}, strs {key: str}, status) where status is ok | no_format | mismatch | unparsed."""
    fmt = formats.get(name)
    raw = split_fields(body, fmt.keys if fmt else None)
    hex_keys = fmt.hex_keys if fmt else ()
    ints, strs = {}, {}
    for k, v in raw.items():
        val = _value(k, v, hex_keys)
        if isinstance(val, str) and (r := _RANGE.match(val)):  # range=(0x1 ~ 0x200): pfn range
            ints[k + "_start"], ints[k + "_end"] = (int(x, 0) for x in r.groups())
        elif isinstance(val, int) and -_INT64_MAX <= val <= _INT64_MAX:
            ints[k] = val
        else:  # text, or a 64-bit pattern (pte) that does not fit int64: kept as printed
            strs[k] = val if isinstance(val, str) else v.strip().rstrip(",")
    status = ("no_format" if raw else "unparsed") if fmt is None else "ok" if len(raw) == len(fmt.keys) else "mismatch"
    return ints, strs, status
