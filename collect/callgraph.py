"""Pair function_graph entries and exits into calls, per task, using the depth the kernel printed.

The kernel indents each line by the task's own call depth, so the depth is authoritative: a call printed at depth d
whose parent (depth d-1) was never seen sits under a *lost frame* placeholder. A later closing at depth d-1,
`} /* fn */`, names that placeholder: it is an orphan exit (its entry was overwritten in the ring buffer) and its
duration still counts. Entries never closed before the trace ends are `truncated`.

Stacks are kept per task: from funcgraph-proc columns or trace-cmd when present, else from the context-switch
banners (`N) a-1 => b-2`); before a CPU's first banner its stack is keyed by the CPU and handed to the banner's
`a-1` when it appears. Rows whose task is only learnt from a later banner are filled in by tables.finalize().
"""

from __future__ import annotations


class Frame:
    __slots__ = ("cpu", "depth", "fn", "id", "parent", "pid", "seq", "task", "ts")

    def __init__(self, fid, fn, parent, depth, seq, cpu, task, pid, ts):
        self.id, self.fn, self.parent, self.depth = fid, fn, parent, depth
        self.seq, self.cpu, self.task, self.pid, self.ts = seq, cpu, task, pid, ts

    def path(self):
        """Names from the root down to this frame; lost frames not (yet) named show as '?'."""
        names = []
        f = self
        while f is not None:
            names.append(f.fn or "?")
            f = f.parent
        return names[::-1]


class CallGraph:
    """Feed lexer tuples; completed call rows go to ``emit(row)`` in CALL_COLUMNS order."""

    def __init__(self, emit, on_close=None):
        self.emit = emit
        self.on_close = on_close
        self.stacks = {}
        self.current = {}  # cpu -> (task, pid) running there, from banners or task columns
        self.next_id = 1
        self.orphan_exits = 0
        self.truncated = 0
        self.mismatched_exits = 0

    # -- keys -------------------------------------------------------------------------------------------------
    @staticmethod
    def _key(cpu, pid):
        return ("idle", cpu) if pid == 0 else pid

    def key_for(self, cpu, task, pid):
        if pid is not None:
            self.current[cpu] = (task, pid)
            return self._key(cpu, pid), task, pid
        cur = self.current.get(cpu)
        if cur is None:
            return ("cpu", cpu), None, None
        return self._key(cpu, cur[1]), cur[0], cur[1]

    def switch(self, cpu, prev_task, prev_pid, next_task, next_pid):
        if cpu not in self.current:
            anon = self.stacks.pop(("cpu", cpu), None)
            pkey = self._key(cpu, prev_pid)
            if anon is not None and pkey not in self.stacks:
                for f in anon:
                    if f is not None:
                        f.task, f.pid = prev_task, prev_pid
                self.stacks[pkey] = anon
        self.current[cpu] = (next_task, next_pid)

    def stack(self, cpu, task=None, pid=None):
        key, _, _ = self.key_for(cpu, task, pid) if pid is not None else self.key_for(cpu, None, None)
        return self.stacks.get(key, [])

    # -- calls ------------------------------------------------------------------------------------------------
    def _new_id(self):
        fid = self.next_id
        self.next_id += 1
        return fid

    def _fit(self, stack, depth, seq, cpu, task, pid):
        """Make ``stack`` exactly ``depth`` deep: close deeper frames as truncated, pad with lost frames."""
        while len(stack) > depth:
            f = stack.pop()
            if f is not None and f.fn is not None:
                self._row(f, None, "truncated")
        while len(stack) < depth:
            parent = stack[-1] if stack else None
            stack.append(Frame(self._new_id(), None, parent, len(stack), seq, cpu, task, pid, None))

    def _row(self, f, dur, status, kind="nested"):
        if status == "truncated":
            self.truncated += 1
        elif status == "orphan":
            self.orphan_exits += 1
        p = f.parent
        self.emit(
            (
                f.id,
                p.id if p is not None else None,
                f.seq,
                f.cpu,
                f.task,
                f.pid,
                f.depth,
                f.fn,
                p.fn if p is not None else None,
                f.ts,
                dur,
                status,
                kind,
            )
        )
        if self.on_close is not None and status != "truncated":
            self.on_close(f, dur, status)

    def feed(self, seq, cpu, task, pid, ts, depth, op, fn, dur):
        key, task, pid = self.key_for(cpu, task, pid)
        stack = self.stacks.get(key)
        if stack is None:
            stack = self.stacks[key] = []
        if op == "leaf":
            if len(stack) != depth:
                self._fit(stack, depth, seq, cpu, task, pid)
            parent = stack[-1] if stack else None
            self.emit(
                (
                    self._new_id(),
                    parent.id if parent is not None else None,
                    seq,
                    cpu,
                    task,
                    pid,
                    depth,
                    fn,
                    parent.fn if parent is not None else None,
                    ts,
                    dur,
                    "complete",
                    "leaf",
                )
            )
        elif op == "enter":
            self._fit(stack, depth, seq, cpu, task, pid)
            stack.append(Frame(self._new_id(), fn, stack[-1] if stack else None, depth, seq, cpu, task, pid, ts))
        else:  # exit
            top = stack[depth] if len(stack) > depth else None
            if top is not None and top.fn is not None and fn is not None and top.fn != fn:
                # A closing naming another function than the open entry at that depth: the entry we hold
                # lost its own exit; treat the closing as an orphan of a lost frame.
                self.mismatched_exits += 1
                self._fit(stack, depth, seq, cpu, task, pid)
                top = None
            self._fit(stack, depth + 1, seq, cpu, task, pid)
            f = stack.pop()
            if f.fn is None:  # lost frame named by its closing
                f.fn = fn or "?"
                f.ts = ts - dur / 1e6 if ts is not None and dur is not None else None
                f.seq, f.task, f.pid = seq, task, pid
                self._row(f, dur, "orphan")
            else:
                self._row(f, dur, "complete")

    def finish(self):
        """Close every open entry as truncated (its exit is after the end of the trace)."""
        for stack in self.stacks.values():
            while stack:
                f = stack.pop()
                if f is not None and f.fn is not None:
                    self._row(f, None, "truncated")
        self.stacks.clear()


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
