"""Evaluate capture expressions without gdb's C parser where possible.

gdb's C expression lexer looks every identifier up as a symbol to classify it — including member names after
`->` — and on a kernel vmlinux without a DWARF index a common name (`name`, `pid`) expands hundreds of compile
units: `p cc->zone->name` took 34 s and 1.2 GB while the guest stood stopped (measured, 2 loaded cores).
Plain member chains (`cc->zone->name`, `pgdat->node_zones[1].name`) are walked with gdb.Value instead: the
root is a frame variable, every step a field or index access, no symbol search at all.
"""

from __future__ import annotations

import re

import gdb

CHAIN = re.compile(r"^\s*([A-Za-z_]\w*)((?:\s*(?:->|\.)\s*[A-Za-z_]\w*|\s*\[\s*\d+\s*\])*)\s*$")
STEP = re.compile(r"(->|\.)\s*([A-Za-z_]\w*)|\[\s*(\d+)\s*\]")


def evaluate(expr: str, frame):
    """gdb.Value of ``expr`` in ``frame``; member chains rooted at a frame variable skip the C parser."""
    m = CHAIN.match(expr)
    if m is None:
        return gdb.parse_and_eval(expr)
    try:
        value = frame.read_var(m.group(1))
    except ValueError:  # not a variable of this frame: a global, let the parser resolve it
        return gdb.parse_and_eval(expr)
    for step in STEP.finditer(m.group(2)):
        arrow, field, index = step.groups()
        if index is not None:
            value = value[int(index)]
        else:
            if arrow == "->":
                value = value.dereference()
            value = value[field]
    return value
