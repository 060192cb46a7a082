# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The per-line hot path of ftrace text, compiled: the line dispatch of ftrace_text.lex, the function_graph line
parser and the per-task pairing of entries and exits into calls, written as Arrow columns.

A function_graph line is parsed character by character (the grammar below is exactly what the regex it replaces
accepted, Unicode digits and blanks included) and fed to CallGraph without a Python object per line beyond the
function name; only the other records (headers, tracepoint lines, events, switch banners, lost markers, skips) and
the closings of CallGraph's ``close_funcs`` reach Python.

Graph line: [abstime |] cpu) [task-pid |] [marker] [duration us] | text — `\\s`/`\\d` as in Python's re.

Pairing: the kernel indents each line by the task's own call depth, so the depth is authoritative: a call printed at
depth d whose parent (depth d-1) was never seen sits under a *lost frame* placeholder. A later closing at depth d-1,
`} /* fn */`, names that placeholder: it is an orphan exit (its entry was overwritten in the ring buffer) and its
duration still counts. Entries never closed before the trace ends are `truncated`.

Stacks are kept per task: from funcgraph-proc columns or trace-cmd when present, else from the context-switch
banners (`N) a-1 => b-2`); before a CPU's first banner its stack is keyed by the CPU and handed to the banner's
`a-1` when it appears. Rows whose task is only learnt from a later banner are filled in by tables.finalize_calls().
"""

import array
import re

import pyarrow as pa

from cpython cimport array
from libc.string cimport memchr, memcpy
from cpython.unicode cimport Py_UNICODE_ISALNUM, Py_UNICODE_ISDECIMAL, Py_UNICODE_ISSPACE


cdef extern from "Python.h":
    ctypedef struct PyObject
    int PyUnicode_KIND(object s)
    const void *PyUnicode_DATA(object s)
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    # one character of a str whose kind and data are read once per line, not per character
    Py_UCS4 RD "PyUnicode_READ"(int kind, const void *data, Py_ssize_t i)
    double PyOS_string_to_double(const char *s, char **endptr, PyObject *overflow_exception) except? -1.0


CALL_COLUMNS = (
    "id",
    "parent_id",
    "seq",
    "cpu",
    "task",
    "pid",
    "depth",
    "function",
    "parent",
    "ts",
    "duration_us",
    "status",
    "kind",
)

_SWITCH = re.compile(r"^\s*(?P<cpu>\d+)\)\s*(?P<pt>.+?)-(?P<pp>\d+)\s+=>\s+(?P<nt>.+?)-(?P<np>\d+)\s*$")
_LOST = re.compile(r"CPU:(\d+) \[LOST (\d+) EVENTS\]")
_ENTRIES = re.compile(r"entries-in-buffer/entries-written:\s*(\d+)/(\d+)\s+#P:(\d+)")
_STARTED = re.compile(r"#+ CPU (\d+) buffer started #+")
# `trace-cmd report` prefixes every line of an instance buffer with "<instance>:"; padding follows it.
_TC_BUFFER = re.compile(r"^[\w.-]+: {2,}")

cdef enum:
    NO_MATCH = 0
    CALL = 1  # enter / leaf / exit: fields in the _Line
    RECORD = 2  # any other record: _Line.rec
    OP_ENTER = 0
    OP_LEAF = 1
    OP_EXIT = 2

cdef str ENTER = "enter", LEAF = "leaf", EXIT = "exit"
cdef str COMPLETE = "complete", ORPHAN = "orphan", TRUNCATED = "truncated", NESTED = "nested", FUNCTION = "function"
cdef tuple OPS = (ENTER, LEAF, EXIT)


cdef inline bint _space(Py_UCS4 c):
    return <unsigned int> c == 32 or Py_UNICODE_ISSPACE(c)


cdef inline bint _digit(Py_UCS4 c):
    cdef unsigned int u = c
    return (48 <= u <= 57) or (u > 127 and Py_UNICODE_ISDECIMAL(c))


cdef object _int(str s, Py_ssize_t a, Py_ssize_t b):
    cdef int uk = PyUnicode_KIND(s)
    cdef const void *ud = PyUnicode_DATA(s)
    cdef long long v = 0
    cdef Py_ssize_t i
    cdef Py_UCS4 c
    if b - a > 18:
        return int(s[a:b])
    for i in range(a, b):
        c = RD(uk, ud, i)
        if <unsigned int> c > 57:  # a Unicode digit: int() reads it as re matched it
            return int(s[a:b])
        v = v * 10 + (<unsigned int> c - 48)
    return v


cdef double _POW10[16]
for _i in range(16):
    _POW10[_i] = 10.0 ** _i


cdef double _float(str s, Py_ssize_t a, Py_ssize_t b) except? -1.0:
    """float(s[a:b]) of digits[.digits], without the str object: the same correctly rounded result (up to 15
    digits, both integer and power of ten are exact doubles, so one IEEE division rounds correctly)."""
    cdef int uk = PyUnicode_KIND(s)
    cdef const void *ud = PyUnicode_DATA(s)
    cdef char buf[64]
    cdef Py_ssize_t i, digits = 0, frac = -1
    cdef long long m = 0
    cdef Py_UCS4 c
    if b - a > 63:
        return float(s[a:b])
    for i in range(a, b):
        c = RD(uk, ud, i)
        if <unsigned int> c > 127:
            return float(s[a:b])
        buf[i - a] = <char> c
        if c == ".":
            frac = 0
        else:
            m = m * 10 + (<unsigned int> c - 48)
            digits += 1
            if frac >= 0:
                frac += 1
    if digits <= 15:
        return m / _POW10[frac if frac > 0 else 0]
    buf[b - a] = 0
    return PyOS_string_to_double(buf, NULL, NULL)


cdef inline Py_ssize_t _find(int uk, const void *ud, Py_ssize_t a, Py_ssize_t b, Py_UCS4 ch):
    """Index of ch in [a, b), or -1."""
    cdef const char *hit
    if a >= b:
        return -1
    if uk == 1:
        hit = <const char *> memchr(<const char *> ud + a, ch, b - a)
        return hit - <const char *> ud if hit != NULL else -1
    while a < b:
        if RD(uk, ud, a) == ch:
            return a
        a += 1
    return -1


cdef class _Line:
    """One parsed function_graph line (reused: no allocation per line)."""
    cdef int cpu, op, depth
    cdef long long pid
    cdef bint has_pid, has_ts, has_dur
    cdef double ts, dur
    cdef object task, fn, rec
    cdef str last_task  # the previous line's task: reused when the same characters come again


cdef inline Py_ssize_t _skip_space(str s, Py_ssize_t p, Py_ssize_t n):
    cdef int uk = PyUnicode_KIND(s)
    cdef const void *ud = PyUnicode_DATA(s)
    while p < n and _space(RD(uk, ud, p)):
        p += 1
    return p


cdef Py_ssize_t _tail(str s, Py_ssize_t p, Py_ssize_t n, Py_ssize_t *mark, Py_ssize_t *dur) except -2:
    """`[marker] \\s* [duration \\s* us \\s*] |` from p: position of the '|', or -1. mark/dur: [start, end)."""
    cdef int uk = PyUnicode_KIND(s)
    cdef const void *ud = PyUnicode_DATA(s)
    cdef Py_UCS4 c
    mark[0] = p
    while p < n:
        c = RD(uk, ud, p)
        if c == "-" or c == "+" or c == "!" or c == "#" or c == "*" or c == "@" or c == "$" or c == "=" \
                or c == "<" or c == ">":
            p += 1
        else:
            break
    mark[1] = p
    p = _skip_space(s, p, n)
    dur[0] = dur[1] = -1
    if p < n and _digit(RD(uk, ud, p)):
        dur[0] = p
        while p < n and _digit(RD(uk, ud, p)):
            p += 1
        if p + 1 < n and RD(uk, ud, p) == "." and _digit(RD(uk, ud, p + 1)):
            p += 1
            while p < n and _digit(RD(uk, ud, p)):
                p += 1
        dur[1] = p
        p = _skip_space(s, p, n)
        if p + 1 >= n or RD(uk, ud, p) != "u" or RD(uk, ud, p + 1) != "s":
            return -1
        p = _skip_space(s, p + 2, n)
    if p < n and RD(uk, ud, p) == "|":
        return p
    return -1


cdef Py_ssize_t _task(str s, Py_ssize_t q, Py_ssize_t n, Py_ssize_t *task, Py_ssize_t *pid) except -2:
    """`task-pid \\s+ | \\s*` from q (task = [^|\\s][^|]*?): position after it, or -1."""
    cdef int uk = PyUnicode_KIND(s)
    cdef const void *ud = PyUnicode_DATA(s)
    cdef Py_ssize_t bar, e, d
    if q >= n or RD(uk, ud, q) == "|" or _space(RD(uk, ud, q)):
        return -1
    bar = q + 1
    while bar < n and RD(uk, ud, bar) != "|":
        bar += 1
    if bar >= n:
        return -1
    e = bar
    while e > q + 1 and _space(RD(uk, ud, e - 1)):
        e -= 1
    if e == bar:
        return -1
    d = e
    while d > q + 1 and _digit(RD(uk, ud, d - 1)):
        d -= 1
    if d == e or d < q + 2 or RD(uk, ud, d - 1) != "-":
        return -1
    task[0], task[1], pid[0], pid[1] = q, d - 1, d, e
    return _skip_space(s, bar + 1, n)


cdef object _comment(str s, Py_ssize_t p, Py_ssize_t n):
    """`/* name: body */` from p -> (name, body), else None."""
    cdef int uk = PyUnicode_KIND(s)
    cdef const void *ud = PyUnicode_DATA(s)
    cdef Py_ssize_t w, t, e
    cdef Py_UCS4 c
    if p + 1 >= n or RD(uk, ud, p) != "/" or RD(uk, ud, p + 1) != "*":
        return None
    p = _skip_space(s, p + 2, n)
    w = p
    while p < n:
        c = RD(uk, ud, p)
        if c == "_" or Py_UNICODE_ISALNUM(c):
            p += 1
        else:
            break
    if p == w or p >= n or RD(uk, ud, p) != ":":
        return None
    name = s[w:p]
    p += 1
    if p < n and _space(RD(uk, ud, p)):
        p += 1
    t = n
    while t > p and _space(RD(uk, ud, t - 1)):
        t -= 1
    if t - 2 < p or RD(uk, ud, t - 2) != "*" or RD(uk, ud, t - 1) != "/":
        return None
    e = t - 2
    while e > p and _space(RD(uk, ud, e - 1)):
        e -= 1
    return name, s[p:e]


cdef object _exit_fn(str s, Py_ssize_t p, Py_ssize_t n):
    """First `/* name` in s[p:] (name = [^\\s=*]+), else None."""
    cdef int uk = PyUnicode_KIND(s)
    cdef const void *ud = PyUnicode_DATA(s)
    cdef Py_ssize_t j, st
    cdef Py_UCS4 c
    while p + 1 < n:
        if RD(uk, ud, p) == "/" and RD(uk, ud, p + 1) == "*":
            j = _skip_space(s, p + 2, n)
            st = j
            while j < n:
                c = RD(uk, ud, j)
                if c == "=" or c == "*" or _space(c):
                    break
                j += 1
            if j > st:
                return s[st:j]
        p += 1
    return None


cdef int _parse(_Line L, long long seq, str s, Py_ssize_t n) except -1:
    """Parse the function_graph line s[:n] into L: CALL, RECORD (L.rec) or NO_MATCH."""
    cdef int uk = PyUnicode_KIND(s)
    cdef const void *ud = PyUnicode_DATA(s)
    cdef Py_ssize_t p, a, q, r, bar, bs, i, ta, tb
    cdef Py_ssize_t ts_ab[2]
    cdef Py_ssize_t mark[2]
    cdef Py_ssize_t dur[2]
    cdef Py_ssize_t task[2]
    cdef Py_ssize_t pid[2]
    ts_ab[0] = ts_ab[1] = task[0] = task[1] = pid[0] = pid[1] = 0
    cdef bint has_task = False, irq_in = False, irq = False
    cdef Py_UCS4 c
    cdef str last
    p = _skip_space(s, 0, n)
    a = p
    while p < n and _digit(RD(uk, ud, p)):
        p += 1
    if p == a:
        return _switch(L, seq, s, n)
    L.has_ts = False
    if p < n and RD(uk, ud, p) == ".":
        ts_ab[0] = a
        p += 1
        q = p
        while p < n and _digit(RD(uk, ud, p)):
            p += 1
        if p == q:
            return _switch(L, seq, s, n)
        ts_ab[1] = p
        p = _skip_space(s, p, n)
        if p >= n or RD(uk, ud, p) != "|":
            return _switch(L, seq, s, n)
        a = p = _skip_space(s, p + 1, n)
        while p < n and _digit(RD(uk, ud, p)):
            p += 1
        if p == a:
            return _switch(L, seq, s, n)
        L.has_ts = True
    if p >= n or RD(uk, ud, p) != ")":
        return _switch(L, seq, s, n)
    cpu = _int(s, a, p)
    q = _skip_space(s, p + 1, n)
    r = _task(s, q, n, task, pid)
    bar = -1
    if r >= 0:
        bar = _tail(s, r, n, mark, dur)
        has_task = bar >= 0
    if bar < 0:
        bar = _tail(s, q, n, mark, dur)
        if bar < 0:
            return _switch(L, seq, s, n)
    i = _find(uk, ud, bar + 1, n, "\n")  # `.*$`: no line break inside, but one may end the string
    if i >= 0:
        if i != n - 1:
            return _switch(L, seq, s, n)
        n = i
    for i in range(mark[0], mark[1]):
        if RD(uk, ud, i) == "=":
            irq = True
        elif RD(uk, ud, i) == ">":
            irq_in = True
    if irq:
        L.rec = ("irq", seq, cpu, "enter" if irq_in else "exit")
        return RECORD
    L.cpu = cpu
    L.has_pid = has_task
    if has_task:
        ta, tb = task[0], task[1]
        while ta < tb and _space(RD(uk, ud, ta)):
            ta += 1
        while tb > ta and _space(RD(uk, ud, tb - 1)):
            tb -= 1
        last = L.last_task
        if last is None or len(last) != tb - ta:
            L.last_task = s[ta:tb]
        else:
            for i in range(tb - ta):
                if RD(uk, ud, ta + i) != RD(PyUnicode_KIND(last), PyUnicode_DATA(last), i):
                    L.last_task = s[ta:tb]
                    break
        L.task = L.last_task
        L.pid = _int(s, pid[0], pid[1])
    else:
        L.task = None
    if L.has_ts:
        L.ts = _float(s, ts_ab[0], ts_ab[1])
    L.has_dur = dur[0] >= 0
    if L.has_dur:
        L.dur = _float(s, dur[0], dur[1])
    bs = bar + 1
    while bs < n and RD(uk, ud, bs) == " ":
        bs += 1
    L.depth = (bs - bar - 3) // 2 if bs - bar - 3 > 0 else 0
    c = RD(uk, ud, bs) if bs < n else u"\0"
    if c == "}":
        L.op, L.fn = OP_EXIT, _exit_fn(s, bs, n)
        return CALL
    if c == "/":
        ev = _comment(s, bs, n)
        if ev is None:
            ev = ("print", s[bs:n].strip("/* "))
        L.rec = ("event", seq, cpu, L.task, L.pid if has_task else None, L.ts if L.has_ts else None, *ev)
        return RECORD
    i = _find(uk, ud, bs, n, "(")
    if i > bs:  # a name, then '('
        if RD(uk, ud, n - 1) == "{":
            L.op, L.fn = OP_ENTER, s[bs:i]
            L.has_dur = False
            return CALL
        if _find(uk, ud, bs, n, ";") >= 0:
            L.op, L.fn = OP_LEAF, s[bs:i]
            return CALL
    L.rec = ("skip", seq, "function_graph line without a call", s[bar + 1 : min(n, bar + 121)])
    return RECORD


cdef int _switch(_Line L, long long seq, str s, Py_ssize_t n) except -1:
    """Not a graph line: a context-switch banner `N) a-1 => b-2`, or NO_MATCH."""
    if "=>" in s:
        if n != len(s):
            s = s[:n]
        m = _SWITCH.match(s)
        if m is not None:
            cpu, pt, pp, nt, np_ = m.groups()
            L.rec = ("switch", seq, int(cpu), pt.strip(), int(pp), nt.strip(), int(np_))
            return RECORD
    return NO_MATCH


cdef _Line _shared = _Line()


def graph_line(seq, str line):
    """One function_graph line -> a lexer tuple (ftrace_text's module docstring), or None when it is not one."""
    cdef int kind = _parse(_shared, seq, line, len(line))
    L = _shared
    if kind == NO_MATCH:
        return None
    if kind == RECORD:
        return L.rec
    return (
        "graph",
        seq,
        L.cpu,
        L.task,
        L.pid if L.has_pid else None,
        L.ts if L.has_ts else None,
        L.depth,
        OPS[L.op],
        L.fn,
        L.dur if L.has_dur else None,
    )


cdef inline bint _has_lost(str s, int uk, const void *ud, Py_ssize_t n):
    """`"[LOST" in s` (a marker can only be in the first n characters: the rest are line breaks)"""
    cdef Py_ssize_t i
    if uk != 1:
        return "[LOST" in s
    i = _find(uk, ud, 0, n, "[")
    while i >= 0:
        if i + 5 <= n and RD(uk, ud, i + 1) == "L" and RD(uk, ud, i + 2) == "O" and RD(uk, ud, i + 3) == "S" \
                and RD(uk, ud, i + 4) == "T":
            return True
        i = _find(uk, ud, i + 1, n, "[")
    return False


cdef inline bint _has_close_paren(str s, Py_ssize_t n):
    """`")" in s[:8]`"""
    cdef int uk = PyUnicode_KIND(s)
    cdef const void *ud = PyUnicode_DATA(s)
    cdef Py_ssize_t i
    for i in range(min(n, 8)):
        if RD(uk, ud, i) == ")":
            return True
    return False


def lex(lines, bint trace_cmd, bint numbered, tp_line, CallGraph graph, emit):
    """Read ``lines`` (str, or (line number, str) when ``numbered``): function_graph calls go to ``graph``, every
    other record (tuples of ftrace_text's module docstring) to ``emit``; ``tp_line(seq, line)`` reads tracepoint
    and function tracer lines."""
    cdef _Line L = _Line()
    cdef bint graph_first = False, tried
    cdef long long n_seq = 0, seq
    cdef Py_ssize_t n, i
    cdef int uk
    cdef const void *ud
    cdef Py_UCS4 first
    cdef str line
    for item in lines:
        if numbered:
            seq, line = item
        else:
            n_seq += 1
            seq, line = n_seq, item
        uk, ud = PyUnicode_KIND(line), PyUnicode_DATA(line)
        n = len(line)
        while n and RD(uk, ud, n - 1) == "\n":  # line endings: the graph parser reads the first n characters
            n -= 1
        i = _skip_space(line, 0, n)
        if i == n:
            continue
        first = RD(uk, ud, i)
        # A line is parsed as a graph line at most once: _parse of the same characters gives the same answer.
        tried = False
        if first != "#" and first != "-" and not trace_cmd and not _has_lost(line, uk, ud, n):
            if graph_first or _has_close_paren(line, n):  # the common case: a graph line, no str copied
                tried = True
                if _graph(L, seq, line, n, graph, emit):
                    graph_first = True
                    continue
        if n != len(line):
            line = line[:n]
        if first == "#":
            _header(seq, line, emit)
            continue
        if first == "-" and line.strip("- ") == "":
            continue
        if "[LOST" in line:  # substring test first: a search per line costs
            m = _LOST.search(line)
            if m is not None:
                emit(("lost", seq, int(m.group(1)), int(m.group(2))))
                continue
        if trace_cmd:
            if line.startswith(("cpus=", "version =")):
                continue
            if line[0] != " ":
                m = _TC_BUFFER.match(line)
                if m is not None:
                    line = line[m.end() :]
        if not tried and (graph_first or _has_close_paren(line, len(line))):
            tried = True
            if _graph(L, seq, line, len(line), graph, emit):
                graph_first = True
                continue
        out = tp_line(seq, line)
        if out is not None:
            graph_first = False
            if out[0] == "graph":
                graph.feed(*out[1:])
            else:
                emit(out)
            continue
        if not tried and _graph(L, seq, line, len(line), graph, emit):
            graph_first = True
            continue
        binary = "\x00" in line or "\ufffd" in line or not line.replace("\t", " ").isprintable()
        emit(("skip", seq, "binary or control characters" if binary else "not an ftrace line", line[:120]))


cdef int _graph(_Line L, long long seq, str line, Py_ssize_t n, CallGraph graph, emit) except -1:
    """Parse line[:n] as a function_graph line and deliver it (a call to ``graph``, a record to ``emit``); 0 when it
    is not one."""
    cdef int kind = _parse(L, seq, line, n)
    if kind == NO_MATCH:
        return 0
    if kind == RECORD:
        emit(L.rec)
    else:
        graph._feed(seq, L.cpu, L.task, L.pid, L.has_pid, L.ts, L.has_ts, L.depth, L.op, L.fn, L.dur, L.has_dur)
    return 1


cdef int _header(long long seq, str line, emit) except -1:
    if line.startswith("# tracer:"):
        emit(("header", seq, "tracer", line.split(":", 1)[1].strip()))
        return 0
    m = _ENTRIES.search(line)
    if m is not None:
        emit(("header", seq, "entries_in_buffer", int(m.group(1))))
        emit(("header", seq, "entries_written", int(m.group(2))))
        emit(("header", seq, "ncpus", int(m.group(3))))
        return 0
    m = _STARTED.search(line)
    if m is not None:
        emit(("header", seq, "cpu_buffer_started", int(m.group(1))))
    return 0


cdef class Frame:
    """An open (or closed) call: what the compaction pairing reads at an event or a closing."""
    cdef readonly long long id, seq
    cdef readonly int cpu, depth
    cdef public object fn, task
    cdef readonly Frame parent
    cdef long long _pid
    cdef bint has_pid, has_ts
    cdef double _ts

    @property
    def pid(self):
        return self._pid if self.has_pid else None

    @property
    def ts(self):
        return self._ts if self.has_ts else None

    def path(self):
        """Names from the root down to this frame; lost frames not (yet) named show as '?'."""
        names = []
        f = self
        while f is not None:
            names.append(f.fn or "?")
            f = f.parent
        return names[::-1]


cdef Frame _frame(long long fid, fn, Frame parent, int depth, long long seq, int cpu, task, long long pid,
                  bint has_pid, double ts, bint has_ts):
    cdef Frame f = Frame.__new__(Frame)
    f.id, f.fn, f.parent, f.depth, f.seq, f.cpu = fid, fn, parent, depth, seq, cpu
    f.task, f._pid, f.has_pid, f._ts, f.has_ts = task, pid, has_pid, ts, has_ts
    return f


cdef array.array _I64 = array.array("q"), _I32 = array.array("i"), _F64 = array.array("d"), _U8 = array.array("B")


cdef class _StrCol:
    """A string column being built: UTF-8 bytes, offsets and validity, handed to Arrow without a converter pass."""
    cdef bytearray data
    cdef Py_ssize_t size
    cdef array.array offsets, valid
    cdef int n

    def __cinit__(self, int batch):
        self.data, self.size, self.n = bytearray(1 << 16), 0, 0
        self.offsets, self.valid = array.clone(_I32, batch + 1, False), array.clone(_U8, batch, False)
        self.offsets.data.as_ints[0] = 0

    cdef int put(self, s) except -1:
        cdef const char *utf8
        cdef Py_ssize_t k = 0
        if s is None:
            self.valid.data.as_uchars[self.n] = 0
        else:
            utf8 = PyUnicode_AsUTF8AndSize(s, &k)  # ASCII: the str's own bytes, nothing encoded
            if self.size + k > len(self.data):
                self.data.extend(bytes(len(self.data) + k))
            memcpy(<char *> self.data + self.size, utf8, k)
            self.size += k
            self.valid.data.as_uchars[self.n] = 1
        self.n += 1
        self.offsets.data.as_ints[self.n] = <int> self.size
        return 0

    cdef array(self):
        return _column(pa.string(), self.n, self.offsets, self.valid, pa.py_buffer(self.data))


cdef class _Rows:
    """Call rows collected column by column, written as Arrow arrays (CALL_COLUMNS order) every ``batch`` rows."""
    cdef object write
    cdef int batch, n
    cdef long long count
    cdef array.array c_id, c_parent_id, c_seq, c_cpu, c_pid, c_depth, c_ts, c_dur
    cdef array.array v_parent_id, v_pid, v_depth, v_ts, v_dur  # 1 = not NULL
    cdef _StrCol c_task, c_fn, c_parent, c_status, c_kind

    def __init__(self, write, int batch):
        self.write, self.batch, self.count = write, batch, 0
        self._new_batch()

    cdef _new_batch(self):
        self.n = 0
        self.c_id, self.c_parent_id, self.c_seq = [array.clone(_I64, self.batch, False) for _ in range(3)]
        self.c_cpu, self.c_pid, self.c_depth = [array.clone(_I32, self.batch, False) for _ in range(3)]
        self.c_ts, self.c_dur = [array.clone(_F64, self.batch, False) for _ in range(2)]
        self.v_parent_id, self.v_pid, self.v_depth, self.v_ts, self.v_dur = [
            array.clone(_U8, self.batch, False) for _ in range(5)
        ]
        self.c_task, self.c_fn, self.c_parent, self.c_status, self.c_kind = [_StrCol(self.batch) for _ in range(5)]

    cdef int put(self, long long fid, Frame parent, parent_fn, long long seq, int cpu, task, long long pid,
                 bint has_pid, int depth, bint has_depth, fn, double ts, bint has_ts, double dur, bint has_dur,
                 str status, str kind) except -1:
        cdef int i = self.n
        self.c_id.data.as_longlongs[i] = fid
        self.v_parent_id.data.as_uchars[i] = parent is not None
        self.c_parent_id.data.as_longlongs[i] = parent.id if parent is not None else 0
        self.c_seq.data.as_longlongs[i] = seq
        self.c_cpu.data.as_ints[i] = cpu
        self.c_pid.data.as_ints[i] = <int> pid
        self.v_pid.data.as_uchars[i] = has_pid
        self.c_depth.data.as_ints[i] = depth
        self.v_depth.data.as_uchars[i] = has_depth
        self.c_ts.data.as_doubles[i] = ts
        self.v_ts.data.as_uchars[i] = has_ts
        self.c_dur.data.as_doubles[i] = dur
        self.v_dur.data.as_uchars[i] = has_dur
        self.c_task.put(task)
        self.c_fn.put(fn)
        self.c_parent.put(parent.fn if parent is not None else parent_fn)
        self.c_status.put(status)
        self.c_kind.put(kind)
        self.n = i + 1
        if self.n >= self.batch:
            self.flush()
        return 0

    cdef flush(self):
        cdef int n = self.n
        if not n:
            return
        cols = [
            _column(pa.int64(), n, self.c_id, None),
            _column(pa.int64(), n, self.c_parent_id, self.v_parent_id),
            _column(pa.int64(), n, self.c_seq, None),
            _column(pa.int32(), n, self.c_cpu, None),
            self.c_task.array(),
            _column(pa.int32(), n, self.c_pid, self.v_pid),
            _column(pa.int32(), n, self.c_depth, self.v_depth),
            self.c_fn.array(),
            self.c_parent.array(),
            _column(pa.float64(), n, self.c_ts, self.v_ts),
            _column(pa.float64(), n, self.c_dur, self.v_dur),
            self.c_status.array(),
            self.c_kind.array(),
        ]
        self.count += n
        self._new_batch()
        self.write(cols)


cdef class CallGraph:
    """Pairs graph lines per task into call rows (CALL_COLUMNS order), written as Arrow arrays in batches of
    ``batch`` rows: to ``write(columns)`` when final, to ``write_pending(columns)`` when a row still lacks what a
    later line tells — its task (no task columns, before the CPU's first switch banner) or its parent's name (a lost
    frame not named yet): tables.finalize_calls fills those in from ``first_switch`` and ``lost_names()``.
    ``on_close(frame, dur, status)`` hears the complete and orphan closings (of the functions whose base name,
    before any '.', is in ``close_funcs`` when given)."""

    cdef public dict stacks, current  # task key -> [Frame]; cpu -> (task, pid) running there
    cdef public long long next_id, orphan_exits, truncated, mismatched_exits
    cdef object on_close
    cdef frozenset close_funcs
    cdef _Rows done, pending
    cdef dict lost_parents  # id -> lost Frame that a pending row names as parent
    # the stack of the previous line's task, while the stacks dict is not changed otherwise
    cdef list _stack
    cdef long long _stack_pid
    cdef int _stack_cpu

    def __init__(self, write, write_pending, on_close=None, close_funcs=None, int batch=65536):
        self.done, self.pending = _Rows(write, batch), _Rows(write_pending, batch)
        self.on_close = on_close
        self.close_funcs = frozenset(close_funcs) if close_funcs is not None else None
        self.stacks, self.current, self.lost_parents = {}, {}, {}
        self.next_id = 1
        self.orphan_exits = self.truncated = self.mismatched_exits = 0
        self._stack = None

    @property
    def rows(self):
        return self.done.count + self.pending.count

    def lost_names(self):
        """{id: name} of the lost frames pending rows have as parent, as their orphan closings named them."""
        return {fid: f.fn for fid, f in self.lost_parents.items() if f.fn is not None}

    cdef int _put(self, long long fid, Frame parent, parent_fn, long long seq, int cpu, task, long long pid,
                  bint has_pid, int depth, bint has_depth, fn, double ts, bint has_ts, double dur, bint has_dur,
                  str status, str kind) except -1:
        cdef _Rows rows = self.done
        if task is None:
            rows = self.pending
        if parent is not None and parent.fn is None:
            self.lost_parents[parent.id] = parent
            rows = self.pending
        return rows.put(fid, parent, parent_fn, seq, cpu, task, pid, has_pid, depth, has_depth, fn, ts, has_ts, dur,
                        has_dur, status, kind)

    # -- keys -------------------------------------------------------------------------------------------------
    @staticmethod
    def key(cpu, pid):
        return ("idle", cpu) if pid == 0 else pid

    def key_for(self, cpu, task, pid):
        """(stack key, task, pid) of a line on ``cpu``; a line with task columns also says who runs there."""
        if pid is not None:
            self.current[cpu] = (task, pid)
            return CallGraph.key(cpu, pid), task, pid
        cur = self.current.get(cpu)
        if cur is None:
            return ("cpu", cpu), None, None
        return CallGraph.key(cpu, cur[1]), cur[0], cur[1]

    def switch(self, cpu, prev_task, prev_pid, next_task, next_pid):
        cdef Frame f
        self._stack = None
        if cpu not in self.current:
            anon = self.stacks.pop(("cpu", cpu), None)
            pkey = CallGraph.key(cpu, prev_pid)
            if anon is not None and pkey not in self.stacks:
                for f in anon:
                    if f is not None:
                        f.task, f._pid, f.has_pid = prev_task, prev_pid, True
                self.stacks[pkey] = anon
        self.current[cpu] = (next_task, next_pid)

    # -- calls ------------------------------------------------------------------------------------------------
    cdef list _stack_of(self, int cpu, long long pid):
        """The stack of task ``pid`` (0: the idle task of ``cpu``), created when new."""
        if self._stack is not None and self._stack_pid == pid and (pid != 0 or self._stack_cpu == cpu):
            return self._stack
        key = ("idle", cpu) if pid == 0 else pid
        stack = self.stacks.get(key)
        if stack is None:
            stack = self.stacks[key] = []
        self._stack, self._stack_pid, self._stack_cpu = stack, pid, cpu
        return stack

    cdef int _fit(self, list stack, int depth, long long seq, int cpu, task, long long pid, bint has_pid) except -1:
        """Make ``stack`` exactly ``depth`` deep: close deeper frames as truncated, pad with lost frames."""
        cdef Frame f, parent
        while len(stack) > depth:
            f = stack.pop()
            if f is not None and f.fn is not None:
                self._row(f, 0, False, TRUNCATED)
        while len(stack) < depth:
            parent = stack[len(stack) - 1] if stack else None
            stack.append(_frame(self.next_id, None, parent, len(stack), seq, cpu, task, pid, has_pid, 0, False))
            self.next_id += 1
        return 0

    cdef int _row(self, Frame f, double dur, bint has_dur, str status) except -1:
        if status is TRUNCATED:
            self.truncated += 1
        elif status is ORPHAN:
            self.orphan_exits += 1
        self._put(f.id, f.parent, None, f.seq, f.cpu, f.task, f._pid, f.has_pid, f.depth, True, f.fn, f._ts, f.has_ts,
                  dur, has_dur, status, NESTED)
        if self.on_close is not None and status is not TRUNCATED:
            if self.close_funcs is not None:
                fn = f.fn
                dot = fn.find(".")
                if (fn if dot < 0 else fn[:dot]) not in self.close_funcs:
                    return 0
            self.on_close(f, dur if has_dur else None, status)
        return 0

    def feed(self, seq, cpu, task, pid, ts, depth, op, fn, dur):
        """One ("graph", …) lexer tuple's fields (a trace-cmd funcgraph_entry/exit line)."""
        self._feed(seq, cpu, task, pid if pid is not None else 0, pid is not None, ts if ts is not None else 0,
                   ts is not None, depth, OPS.index(op), fn, dur if dur is not None else 0, dur is not None)

    cdef int _feed(self, long long seq, int cpu, task, long long pid, bint has_pid, double ts, bint has_ts, int depth,
                   int op, fn, double dur, bint has_dur) except -1:
        cdef list stack
        cdef Frame top, f, parent
        cdef tuple cur
        if has_pid:
            cur = self.current.get(cpu)
            if cur is None or <long long> cur[1] != pid or cur[0] != task:
                self.current[cpu] = (task, pid)
            stack = self._stack_of(cpu, pid)
        else:
            cur = self.current.get(cpu)
            if cur is None:
                self._stack = None
                key = ("cpu", cpu)
                stack = self.stacks.get(key)
                if stack is None:
                    stack = self.stacks[key] = []
                task = None
            else:
                task, pid_obj = cur
                pid, has_pid = pid_obj, True
                stack = self._stack_of(cpu, pid)
        if op == OP_LEAF:
            if len(stack) != depth:
                self._fit(stack, depth, seq, cpu, task, pid, has_pid)
            parent = stack[len(stack) - 1] if stack else None
            self._put(self.next_id, parent, None, seq, cpu, task, pid, has_pid, depth, True, fn, ts, has_ts, dur, has_dur,
                      COMPLETE, LEAF)
            self.next_id += 1
        elif op == OP_ENTER:
            self._fit(stack, depth, seq, cpu, task, pid, has_pid)
            stack.append(_frame(self.next_id, fn, stack[len(stack) - 1] if stack else None, depth, seq, cpu, task, pid, has_pid,
                                ts, has_ts))
            self.next_id += 1
        else:
            top = stack[depth] if len(stack) > depth else None
            if top is not None and top.fn is not None and fn is not None and top.fn != fn:
                # A closing naming another function than the open entry at that depth: the entry we hold
                # lost its own exit; treat the closing as an orphan of a lost frame.
                self.mismatched_exits += 1
                self._fit(stack, depth, seq, cpu, task, pid, has_pid)
            self._fit(stack, depth + 1, seq, cpu, task, pid, has_pid)
            f = stack.pop()
            if f.fn is None:  # lost frame named by its closing
                f.fn = fn or "?"
                f.has_ts = has_ts and has_dur
                f._ts = ts - dur / 1e6 if f.has_ts else 0
                f.seq, f.task, f._pid, f.has_pid = seq, task, pid, has_pid
                self._row(f, dur, has_dur, ORPHAN)
            else:
                self._row(f, dur, has_dur, COMPLETE)
        return 0

    def function_call(self, seq, cpu, task, pid, ts, fn, parent):
        """A function tracer line: one call row of its own."""
        fid = self.next_id
        self.next_id += 1
        self._put(fid, None, parent, seq, cpu, task, pid if pid is not None else 0, pid is not None, 0, False, fn,
                  ts if ts is not None else 0, ts is not None, 0, False, COMPLETE, FUNCTION)

    def finish(self):
        """Close every open entry as truncated (its exit is after the end of the trace), write the last rows."""
        cdef Frame f
        self._stack = None
        for stack in self.stacks.values():
            while stack:
                f = stack.pop()
                if f is not None and f.fn is not None:
                    self._row(f, 0, False, TRUNCATED)
        self.stacks.clear()
        self.done.flush()
        self.pending.flush()


cdef object _column(object typ, int n, array.array data, array.array valid, strings=None):
    """An Arrow array over ``data``'s first n values (the offsets into ``strings`` for a string array); ``valid``
    (one byte per row) becomes its validity bitmap."""
    cdef int i, nulls = 0
    cdef bytearray bits
    cdef unsigned char *b
    cdef unsigned char *v
    extra = [strings] if strings is not None else []
    if valid is None:
        return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(data), *extra])
    bits = bytearray((n + 7) // 8)
    b = bits
    v = valid.data.as_uchars
    for i in range(n):
        if v[i]:
            b[i >> 3] |= 1 << (i & 7)
        else:
            nulls += 1
    buffers = [pa.py_buffer(bits) if nulls else None, pa.py_buffer(data), *extra]
    return pa.Array.from_buffers(typ, n, buffers, null_count=nulls)
