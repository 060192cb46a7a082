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

    __slots__ = ("fields", "hex_keys", "keys", "name", "range_keys", "system")

    def __init__(self, system, name, text):
        self.system, self.name = system, name
        m = _PRINT_FMT.search(text)
        fmt = m.group(1) if m else ""
        # key=%lx / key=0x%lx / key=%p print as hex; the rest as written.
        self.keys = []
        self.hex_keys = set()
        self.range_keys = set()  # key=(0x%lx ~ 0x%lx): one printed value, two pfns
        for km in re.finditer(r"(\w+)=(\()?(0x)?%(?:[-0-9.]*)(l{0,2}[xXpdiusc]|[a-z]+)( ~ )?", fmt):
            self.keys.append(km.group(1))
            if km.group(3) or km.group(4).endswith(("x", "X", "p")):
                self.hex_keys.add(km.group(1))
            if km.group(2) and km.group(5):
                self.range_keys.add(km.group(1))
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


def _q(text):
    return "'" + text.replace("'", "''") + "'"


def _int_expr(v, hex_key):
    if hex_key:  # printed with %lx, with or without 0x: DuckDB casts '0x…' strings; > int64 stays text
        return "TRY_CAST(CASE WHEN %s LIKE '0x%%' THEN %s ELSE '0x' || %s END AS BIGINT)" % (v, v, v)
    return "TRY_CAST(%s AS BIGINT)" % v


def _pattern(fmt):
    return "^\\s*" + ",?\\s+".join(re.escape(k) + "=(.*?)" for k in fmt.keys) + ",?\\s*$"


def _typed_branch(fmt):
    """SELECT for one event: split the body with the format's keys in print order, type each value."""
    pattern = _pattern(fmt)
    groups = ["f%d" % i for i in range(len(fmt.keys))]  # positional: a key may be printed twice
    ints, strs, seen = [], [], set()
    for k, g in zip(fmt.keys, groups, strict=True):
        if k in seen:
            continue
        seen.add(k)
        v = "trim(s.%s)" % g
        if k in fmt.range_keys:
            for i, suffix in ((1, "_start"), (2, "_end")):
                part = "regexp_extract(%s, '^\\((\\S+) ~ (\\S+)\\)$', %d)" % (v, i)
                ints.append("{'key': %s, 'value': %s}" % (_q(k + suffix), _int_expr(part, True)))
            continue
        iv = _int_expr(v, k in fmt.hex_keys)
        ints.append("{'key': %s, 'value': %s}" % (_q(k), iv))
        strs.append("{'key': %s, 'value': CASE WHEN %s IS NULL THEN %s END}" % (_q(k), iv, v))
    return (
        "SELECT run, host, seq, ts, cpu, task, pid, event, %s AS system, %s AS fields_int, %s AS fields_str, "
        "'ok' AS parse_status, NULL AS body "
        "FROM (SELECT *, %s AS s FROM (SELECT *, %s AS p FROM t WHERE event = %s AND ok))"
        % (_q(fmt.system), _map(ints), _map(strs), _pieces(fmt, pattern, groups), _split(fmt), _q(fmt.name))
    )


def _split(fmt):
    """SQL for the list ``p`` of a body's pieces, cut at its separators `,? key=` (keys after the first).

    Extracting the lazy groups of the format's pattern costs RE2 ~4x a plain match, and this runs for every event.
    A body that matches the pattern and holds exactly one separator per key (every real kernel line) gives the
    same values from the pieces (_pieces); a body with a key-like text inside a value gets the pattern's groups.
    """
    if len(fmt.keys) == 1:
        return "[body]"
    return "regexp_split_to_array(body, %s)" % _q(",?\\s+(?:%s)=" % "|".join(sorted(set(fmt.keys[1:]))))


def _pieces(fmt, pattern, groups):
    """Struct of ``groups`` from ``p``: the first piece minus its `key=`, the last minus `,?\\s*$` (what the
    pattern's lazy groups leave out), else the pattern's own extraction."""
    first = fmt.keys[0] + "="
    fields = []
    for i, g in enumerate(groups, 1):
        v = "p[%d]" % i
        if i == 1:  # the body matched `^\\s*key=`: the first `key=` ends the leading blanks
            v = "substr(%s, strpos(%s, %s) + %d)" % (v, v, _q(first), len(first))
        if i == len(groups):
            v = "regexp_replace(%s, ',?\\s*$', '')" % v
        fields.append("%s := %s" % (g, v))
    return "CASE WHEN len(p) = %d THEN struct_pack(%s) ELSE regexp_extract(body, %s, [%s]) END" % (
        len(groups),
        ", ".join(fields),
        _q(pattern),
        ", ".join(map(_q, groups)),
    )


def _map(entries):
    if not entries:
        return "MAP {}"
    return "map_from_entries(list_filter([%s], lambda e: e.value IS NOT NULL))" % ", ".join(entries)


# Events without a usable format: key=value pairs split on whitespace/commas (a parenthesised value kept whole).
_GENERIC = (
    "SELECT run, host, seq, ts, cpu, task, pid, event, NULL AS system, "
    "map_from_entries(list_filter(list_transform(range(1, len(ks) + 1), "
    "lambda i: {'key': ks[i], 'value': TRY_CAST(vs[i] AS BIGINT)}), lambda e: e.value IS NOT NULL)) AS fields_int, "
    "map_from_entries(list_filter(list_transform(range(1, len(ks) + 1), "
    "lambda i: {'key': ks[i], 'value': CASE WHEN TRY_CAST(vs[i] AS BIGINT) IS NULL THEN vs[i] END}), "
    "lambda e: e.value IS NOT NULL)) AS fields_str, "
    "CASE WHEN event IN ('print', 'tracing_mark_write') THEN 'print' WHEN len(ks) = 0 THEN 'unparsed' "
    "WHEN %s THEN 'mismatch' "
    "WHEN %s THEN 'unknown_event' ELSE 'no_format' END AS parse_status, body "
    "FROM (SELECT *, regexp_extract_all(body, '(\\w+)=(\\([^)]*\\)|[^\\s,]+)', 1) AS ks, "
    "regexp_extract_all(body, '(\\w+)=(\\([^)]*\\)|[^\\s,]+)', 2) AS vs FROM t WHERE NOT ok)"
)


def typed_events_sql(formats):
    """(setup, query) typing every event of the `raw` relation: the format's split where it matches the body, the
    generic split (status mismatch / no_format / unknown_event) where it does not."""
    typed = [f for f in formats.values() if f.keys]
    branches = [_typed_branch(f) for f in typed]
    known = "(" + ", ".join(_q(f.name) for f in typed) + ")" if typed else "('')"
    # Does the body match its format? Decided once per row (materialised as t), then every branch filters on it.
    ok = (
        "CASE event %s ELSE false END"
        % " ".join("WHEN %s THEN regexp_full_match(body, %s)" % (_q(f.name), _q(_pattern(f))) for f in typed)
        if typed
        else "false"
    )
    unknown = "%s AND event NOT IN %s" % ("true" if formats else "false", known)
    branches.append(_GENERIC % ("event IN %s" % known, unknown))
    return (
        "CREATE TEMP TABLE t AS SELECT *, %s AS ok FROM raw" % ok,
        "SELECT run, host, seq, ts, cpu, task, pid, event, system::VARCHAR AS system, "
        "fields_int::MAP(VARCHAR, BIGINT) AS fields_int, fields_str::MAP(VARCHAR, VARCHAR) AS fields_str, "
        "parse_status, body::VARCHAR AS body FROM (%s)" % " UNION ALL ".join(branches),
    )
