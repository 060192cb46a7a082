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

    __slots__ = ("fields", "hex_keys", "keys", "name", "range_keys", "system", "text")

    def __init__(self, system, name, text):
        self.system, self.name, self.text = system, name, text
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


def sql_literal(text):
    """``text`` as a DuckDB string literal (the one quoting helper of collect's generated SQL)."""
    return "'" + text.replace("'", "''") + "'"


def _int_expr(v, hex_key):
    if hex_key:  # printed with %lx, with or without 0x: DuckDB casts '0x…' strings; > int64 stays text
        return "TRY_CAST(CASE WHEN %s LIKE '0x%%' THEN %s ELSE '0x' || %s END AS BIGINT)" % (v, v, v)
    return "TRY_CAST(%s AS BIGINT)" % v


def _pattern(fmt):
    return "^\\s*" + ",?\\s+".join(re.escape(k) + "=(.*?)" for k in fmt.keys) + ",?\\s*$"


def _let(name, value, expr):
    """``expr`` with ``name`` bound to ``value`` (evaluated once): DuckDB has no LET, a one-item lambda does it."""
    return "list_transform([%s], lambda %s: %s)[1]" % (value, name, expr)


def _values(fmt):
    """SQL list of the format's printed values (positional: a key may be printed twice), split from ``body``."""
    groups = ["f%d" % i for i in range(len(fmt.keys))]
    listed = "[%s]" % ", ".join("s.%s" % g for g in groups)
    return _let("p", _split(fmt), _let("s", _pieces(fmt, _pattern(fmt), groups), listed))


def _typed_maps(fmt):
    """(fields_int, fields_str) SQL of one event whose body matched its format, from the list ``v`` (_values)."""
    ints, strs, seen = [], [], set()
    for i, k in enumerate(fmt.keys, 1):
        if k in seen:
            continue
        seen.add(k)
        v = "trim(v[%d])" % i
        if k in fmt.range_keys:
            for n, suffix in ((1, "_start"), (2, "_end")):
                part = "regexp_extract(%s, '^\\((\\S+) ~ (\\S+)\\)$', %d)" % (v, n)
                ints.append("{'key': %s, 'value': %s}" % (sql_literal(k + suffix), _int_expr(part, True)))
            continue
        iv = _int_expr(v, k in fmt.hex_keys)
        ints.append("{'key': %s, 'value': %s}" % (sql_literal(k), iv))
        strs.append("{'key': %s, 'value': CASE WHEN %s IS NULL THEN %s END}" % (sql_literal(k), iv, v))
    return _map(ints), _map(strs)


def _split(fmt):
    """SQL for the list ``p`` of a body's pieces, cut at its separators `,? key=` (keys after the first).

    Extracting the lazy groups of the format's pattern costs RE2 ~4x a plain match, and this runs for every event.
    A body that matches the pattern and holds exactly one separator per key (every real kernel line) gives the
    same values from the pieces (_pieces); a body with a key-like text inside a value gets the pattern's groups.
    """
    if len(fmt.keys) == 1:
        return "[body]"
    return "regexp_split_to_array(body, %s)" % sql_literal(",?\\s+(?:%s)=" % "|".join(sorted(set(fmt.keys[1:]))))


def _pieces(fmt, pattern, groups):
    """Struct of ``groups`` from ``p``: the first piece minus its `key=`, the last minus `,?\\s*$` (what the
    pattern's lazy groups leave out), else the pattern's own extraction."""
    first = fmt.keys[0] + "="
    fields = []
    for i, g in enumerate(groups, 1):
        v = "p[%d]" % i
        if i == 1:  # the body matched `^\\s*key=`: the first `key=` ends the leading blanks
            v = "substr(%s, strpos(%s, %s) + %d)" % (v, v, sql_literal(first), len(first))
        if i == len(groups):
            v = "regexp_replace(%s, ',?\\s*$', '')" % v
        fields.append("%s := %s" % (g, v))
    return "CASE WHEN len(p) = %d THEN struct_pack(%s) ELSE regexp_extract(body, %s, [%s]) END" % (
        len(groups),
        ", ".join(fields),
        sql_literal(pattern),
        ", ".join(map(sql_literal, groups)),
    )


def _map(entries):
    if not entries:
        return "MAP {}"
    return "map_from_entries(list_filter([%s], lambda e: e.value IS NOT NULL))" % ", ".join(entries)


# Events without a usable format: key=value pairs split on whitespace/commas (a parenthesised value kept whole).
_GENERIC_KV = "(\\w+)=(\\([^)]*\\)|[^\\s,]+)"
_GENERIC_INT = (
    "map_from_entries(list_filter(list_transform(range(1, len(ks) + 1), "
    "lambda i: {'key': ks[i], 'value': TRY_CAST(vs[i] AS BIGINT)}), lambda e: e.value IS NOT NULL))"
)
_GENERIC_STR = (
    "map_from_entries(list_filter(list_transform(range(1, len(ks) + 1), "
    "lambda i: {'key': ks[i], 'value': CASE WHEN TRY_CAST(vs[i] AS BIGINT) IS NULL THEN vs[i] END}), "
    "lambda e: e.value IS NOT NULL))"
)


def _typed(formats):
    return [f for f in formats.values() if f.keys]


def status_sql(formats):
    """(parse_status, system) SQL of a stored event row: the status over its ``event`` and ``body``, decided once at
    normalize time (ok when the body matches its format's pattern, else the generic split's status); the system
    over ``event`` and that ``parse_status``."""
    typed = _typed(formats)
    known = "(" + ", ".join(sql_literal(f.name) for f in typed) + ")" if typed else "('')"
    ok = (
        "CASE event %s ELSE false END"
        % " ".join(
            "WHEN %s THEN regexp_full_match(body, %s)" % (sql_literal(f.name), sql_literal(_pattern(f))) for f in typed
        )
        if typed
        else "false"
    )
    status = (
        "CASE WHEN %s THEN 'ok' WHEN event IN ('print', 'tracing_mark_write') THEN 'print' "
        "WHEN NOT regexp_matches(body, %s) THEN 'unparsed' WHEN event IN %s THEN 'mismatch' "
        "WHEN %s THEN 'unknown_event' ELSE 'no_format' END"
        % (ok, sql_literal(_GENERIC_KV), known, "true" if formats else "false")
    )
    if not typed:
        return status, "NULL::VARCHAR"
    cases = " ".join("WHEN %s THEN %s" % (sql_literal(f.name), sql_literal(f.system)) for f in typed)
    return status, "CASE WHEN parse_status = 'ok' THEN CASE event %s END END" % cases


def dump_formats(formats):
    """JSON-able {name: [system, format text]} of ``formats`` (kept with the tables: fields are typed from it)."""
    return {n: [f.system, f.text] for n, f in formats.items()}


def formats_from_dump(dump):
    return {n: EventFormat(system, n, text) for n, (system, text) in (dump or {}).items()}


def fields_sql(formats, rel):
    """SELECT over the stored events relation ``rel`` adding the typed ``fields_int``/``fields_str`` maps.

    Typed at query time from ``body``: DuckDB computes the two columns only for queries that read them (the maps
    cost more to build than the rest of normalizing), for the rows those queries keep."""
    typed = _typed(formats)
    ints, strs = [], []
    for f in typed:
        i, s = _typed_maps(f)
        ints.append("WHEN %s THEN %s" % (sql_literal(f.name), i))
        strs.append("WHEN %s THEN %s" % (sql_literal(f.name), s))

    def pick(cases, generic):
        if not cases:
            return generic
        values = "CASE event %s END" % " ".join("WHEN %s THEN %s" % (sql_literal(f.name), _values(f)) for f in typed)
        return "CASE WHEN parse_status = 'ok' THEN %s ELSE %s END" % (
            _let("v", values, "CASE event %s END" % " ".join(cases)),
            generic,
        )

    def generic(expr):
        kv = sql_literal(_GENERIC_KV)
        return _let(
            "ks", "regexp_extract_all(body, %s, 1)" % kv, _let("vs", "regexp_extract_all(body, %s, 2)" % kv, expr)
        )

    return "SELECT *, %s::MAP(VARCHAR, BIGINT) AS fields_int, %s::MAP(VARCHAR, VARCHAR) AS fields_str FROM %s" % (
        pick(ints, generic(_GENERIC_INT)),
        pick(strs, generic(_GENERIC_STR)),
        rel,
    )
