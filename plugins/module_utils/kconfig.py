"""Kconfig reading for config verification: .config/fragment parsing, a Kconfig tree index and the reasons why
``make olddefconfig`` dropped a requested option (unmet ``depends on``, a prompt hidden behind a condition, no
prompt and nobody selecting it, a choice, a selector forcing it on, a type mismatch, no such symbol).

Not a full Kconfig implementation: it follows ``source`` statements, ``if``/``menu`` dependencies, ``choice``
blocks and ``select``, and evaluates dependency expressions on the *final* .config with tristate logic, which is
what a user needs to see to fix a fragment. Stdlib only (runs on build hosts).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

_CONF_RE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET_RE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_TRI = {"n": 0, "m": 1, "y": 2}


def parse_config(text):
    """``{'CONFIG_X': 'y' | 'm' | 'n' | '<value>'}`` from a .config or fragment; ``# ... is not set`` is 'n'."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        m = _CONF_RE.match(line) or _UNSET_RE.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip() if m.re is _CONF_RE else "n"
    return out


@dataclass
class Symbol:
    name: str
    type: str = ""
    prompts: list = field(default_factory=list)  # prompt conditions ("" = always visible)
    depends: list = field(default_factory=list)  # own `depends on` + enclosing if/menu conditions
    selected_by: list = field(default_factory=list)  # (selector, condition)
    choice_members: list = field(default_factory=list)  # other symbols of the choice it belongs to
    where: list = field(default_factory=list)  # "path:line"


_ENTRY_RE = re.compile(r"^(config|menuconfig)\s+([A-Za-z0-9_]+)\s*$")
_TYPE_RE = re.compile(r"^(bool|tristate|int|hex|string|def_bool|def_tristate)\b\s*(.*)$")
_PROMPT_RE = re.compile(r"^prompt\s+(.*)$")
_STRING_COND_RE = re.compile(r'^("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')\s*(?:if\s+(.*))?$')


def _logical_lines(path):
    """Lines of a Kconfig file with backslash continuations joined; help text dropped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            raw = f.read().splitlines()
    except OSError:
        return
    i, help_indent = 0, None
    while i < len(raw):
        lineno, line = i + 1, raw[i]
        while line.endswith("\\") and i + 1 < len(raw):
            i += 1
            line = line[:-1] + " " + raw[i].lstrip()
        i += 1
        expanded = line.expandtabs(8)
        if help_indent is not None:
            if not expanded.strip():
                continue
            indent = len(expanded) - len(expanded.lstrip())
            if help_indent == -1:
                help_indent = indent
            if indent >= help_indent:
                continue
            help_indent = None
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped in ("help", "---help---"):
            help_indent = -1
            continue
        yield lineno, stripped


class KconfigTree:
    """Index of every symbol of the Kconfig tree rooted at ``<srctree>/Kconfig`` for one ``SRCARCH``."""

    def __init__(self, srctree, srcarch):
        self.srctree, self.srcarch = srctree, srcarch
        self.symbols: dict[str, Symbol] = {}
        self._parse(os.path.join(srctree, "Kconfig"), [])

    def _sym(self, name):
        return self.symbols.setdefault(name, Symbol(name))

    def _expand(self, path):
        path = path.replace("$(SRCARCH)", self.srcarch).replace("$SRCARCH", self.srcarch)
        return path.replace("$(HEADER_ARCH)", self.srcarch)

    def _parse(self, path, outer):
        # stack entries: ("if"|"menu"|"choice", condition or None, choice members list or None)
        stack = [("file", c, None) for c in outer]
        cur = None  # Symbol being defined
        block_for_menu = False  # just after `menu`/`choice`: its `depends on` lines apply to the block
        rel = os.path.relpath(path, self.srctree)
        for lineno, line in _logical_lines(path):
            word = line.split(None, 1)[0]
            rest = line[len(word) :].strip()
            if word in ("source", "rsource", "osource", "orsource"):
                target = self._expand(rest.strip("\"'"))
                base = os.path.dirname(path) if word.startswith(("r", "or")) else self.srctree
                conds = [c for _, c, _ in stack if c]
                for sub in sorted(glob.glob(os.path.join(base, target))):
                    self._parse(sub, conds)
                cur, block_for_menu = None, False
            elif m := _ENTRY_RE.match(line):
                cur, block_for_menu = self._sym(m.group(2)), False
                cur.where.append(f"{rel}:{lineno}")
                cur.depends.extend(c for _, c, _ in stack if c)
                choice = next((members for kind, _, members in reversed(stack) if kind == "choice"), None)
                if choice is not None:
                    choice.append(cur.name)
                    cur.choice_members = choice
            elif word == "choice":
                stack.append(("choice", None, []))
                cur, block_for_menu = None, True
            elif word == "endchoice":
                self._pop(stack, "choice")
                cur, block_for_menu = None, False
            elif word in ("menu", "if"):
                stack.append((word, rest if word == "if" else None, None))
                cur, block_for_menu = None, word == "menu"
            elif word in ("endmenu", "endif"):
                self._pop(stack, word[3:])
                cur, block_for_menu = None, False
            elif word in ("comment", "mainmenu"):
                cur, block_for_menu = None, False
            elif word == "depends" and rest.startswith("on"):
                cond = rest[2:].strip()
                if cur is not None:
                    cur.depends.append(cond)
                elif block_for_menu:  # `depends on` right after menu/choice: applies to the whole block
                    kind, old, members = stack[-1]
                    stack[-1] = (kind, f"({old}) && ({cond})" if old else cond, members)
            elif cur is not None:
                self._entry_attr(cur, word, rest)

    @staticmethod
    def _pop(stack, kind):
        for i in range(len(stack) - 1, -1, -1):
            if stack[i][0] == kind:
                del stack[i]
                return

    def _entry_attr(self, cur, word, rest):
        if m := _TYPE_RE.match(f"{word} {rest}".strip()):
            kind, arg = m.groups()
            cur.type = cur.type or kind.replace("def_", "")
            if not kind.startswith("def_") and arg:
                self._add_prompt(cur, arg)
        elif m := _PROMPT_RE.match(f"{word} {rest}"):
            self._add_prompt(cur, m.group(1))
        elif word == "select":
            target, _, cond = rest.partition(" if ")
            self._sym(target.strip()).selected_by.append((cur.name, cond.strip()))

    @staticmethod
    def _add_prompt(cur, arg):
        m = _STRING_COND_RE.match(arg)
        if m:
            cur.prompts.append((m.group(2) or "").strip())


# --- expression evaluation -------------------------------------------------------------------------------------
_TOKEN_RE = re.compile(r'\s*(\$\([^)]*\)|&&|\|\||!=|<=|>=|[!()=<>]|"[^"]*"|\'[^\']*\'|[A-Za-z0-9_.-]+)')


def _tokens(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m:
            break
        out.append(m.group(1))
        pos = m.end()
    return out


def symbols_in(expr):
    """Symbol names referenced by a Kconfig expression (constants y/m/n, numbers and strings excluded)."""
    return [
        t
        for t in _tokens(expr)
        if re.fullmatch(r"[A-Z_][A-Za-z0-9_]*", t) and t not in ("y", "m", "n") and not t.startswith("$")
    ]


def evaluate(expr, config):
    """Tristate value 0/1/2 (n/m/y) of a Kconfig expression against ``config`` (``{'CONFIG_X': value}``)."""
    toks, pos = _tokens(expr), 0

    def raw(tok):
        if tok[:1] in "\"'":
            return tok[1:-1]
        if tok in _TRI:
            return tok
        if tok.startswith("$"):
            return "y"  # preprocessor macros already decided the symbols they feed; do not guess here
        return config.get("CONFIG_" + tok, tok if re.fullmatch(r"-?(0x)?[0-9a-fA-F]+", tok) else "n")

    def primary():
        nonlocal pos
        tok = toks[pos] if pos < len(toks) else ")"
        pos += 1
        if tok == "!":
            return 2 - primary()
        if tok == "(":
            value = disjunction()
            pos += 1  # ')'
            return value
        if pos < len(toks) and toks[pos] in ("=", "!=", "<", ">", "<=", ">="):
            op, other = toks[pos], toks[pos + 1] if pos + 1 < len(toks) else ""
            pos += 2
            a, b = raw(tok), raw(other)
            try:
                a_num, b_num = int(a, 0), int(b, 0)
            except ValueError:
                a_num = b_num = None
            if op in ("=", "!="):
                return 2 if (a == b) == (op == "=") else 0
            if a_num is None:
                return 0
            return 2 if {"<": a_num < b_num, ">": a_num > b_num, "<=": a_num <= b_num, ">=": a_num >= b_num}[op] else 0
        return _TRI.get(raw(tok), 0)

    def conjunction():
        nonlocal pos
        value = primary()
        while pos < len(toks) and toks[pos] == "&&":
            pos += 1
            value = min(value, primary())
        return value

    def disjunction():
        nonlocal pos
        value = conjunction()
        while pos < len(toks) and toks[pos] == "||":
            pos += 1
            value = max(value, conjunction())
        return value

    return disjunction() if toks else 2


def _show(expr, config):
    """``MODULES [=n] && HAVE_KPROBES [=y]``, the way menuconfig's help prints a dependency."""
    out = expr
    for sym in dict.fromkeys(symbols_in(expr)):
        out = re.sub(rf"\b{sym}\b", f"{sym} [={config.get('CONFIG_' + sym, 'n')}]", out)
    return out


def explain(tree, name, wanted, config):
    """Reasons, as sentences, why CONFIG_<name> is not ``wanted`` in the final ``config``."""
    sym = tree.symbols.get(name)
    if sym is None or not sym.where:
        return [f"no symbol {name} in this kernel's Kconfig for SRCARCH={tree.srcarch} (renamed or removed?)"]
    reasons = []
    if sym.type in ("int", "hex", "string") and wanted in ("y", "m", "n"):
        reasons.append(f"{name} is of type {sym.type}: '{wanted}' is not a valid value")
    if sym.type == "bool" and wanted == "m":
        reasons.append(f"{name} is bool: it cannot be a module")
    want = _TRI.get(wanted, 2)
    if wanted == "n":
        forcing = [
            f"{s} [=y]" + (f" if {c}" if c else "")
            for s, c in sym.selected_by
            if evaluate(f"{s}", config) and (not c or evaluate(c, config))
        ]
        if forcing:
            reasons.append("selected by " + ", ".join(forcing))
        elif not any(evaluate(c, config) for c in sym.prompts or ["n"]) and sym.prompts:
            reasons.append(
                "its prompt is hidden, so it keeps its default: "
                + "; ".join(_show(c, config) for c in sym.prompts if c)
            )
        elif not sym.prompts:
            reasons.append("it has no prompt: its value is computed (default/select), a fragment cannot unset it")
        return reasons or [f"set to {config.get('CONFIG_' + name, 'n')} by its default"]
    unmet = [d for d in sym.depends if evaluate(d, config) < want]
    if unmet:
        reasons.append("unmet dependency: depends on " + " && ".join(f"({_show(d, config)})" for d in unmet))
    elif sym.prompts and not any(not c or evaluate(c, config) for c in sym.prompts):
        reasons.append("prompt hidden: only settable if " + " || ".join(_show(c, config) for c in sym.prompts))
    elif not sym.prompts:
        selectors = [s + (f" if {c}" if c else "") for s, c in sym.selected_by]
        reasons.append(
            "it has no prompt: only set when selected by " + ", ".join(selectors[:8])
            if selectors
            else "it has no prompt and nothing selects it: its value comes from its defaults"
        )
    if sym.choice_members:
        chosen = [m for m in sym.choice_members if m != name and config.get("CONFIG_" + m) == "y"]
        if chosen:
            reasons.append(f"member of a choice where {', '.join(chosen)} was chosen instead")
    return reasons or ["the kernel's defaults overrode it (no unmet dependency found: check `make menuconfig`)"]
