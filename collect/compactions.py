"""One row per compaction of one zone: mm_compaction_begin -> mm_compaction_end paired per task, or, when a
function_graph capture has no compaction events, one row per `compact_zone` call.

Trigger (see docs/collect.md and shared/notes/compaction-facts.md):
- kcompactd task, order -1 (cc.order of proactive_compact_node / compact_node(proactive)) -> proactive
- kcompactd task, order >= 0 (pgdat->kcompactd_max_order after a wakeup)                  -> kcompactd
- other task, order >= 0, or after mm_compaction_try_to_compact_pages, or under
  try_to_compact_pages / __alloc_pages_direct_compact in the call path                    -> direct
- other task, order -1 (compact_node from the sysctl or sysfs write, in the writer's context) -> manual
The call path decides when the order is unknown (no finished/suitable event and no events at all).
"""

from __future__ import annotations

DIRECT_FUNCS = {"try_to_compact_pages", "__alloc_pages_direct_compact", "compact_zone_order"}
MANUAL_FUNCS = {"sysctl_compaction_handler", "compact_nodes", "sysfs_compact_node", "compact_store"}
PROACTIVE_FUNCS = {"proactive_compact_node"}
KCOMPACTD_FUNCS = {"kcompactd_do_work"}
# The closings the pairing hears (on_close): a call's duration when the events give none, and the
# function_graph captures without compaction events.
CLOSE_FUNCS = frozenset({"compact_zone"})

COMPACTION_COLUMNS = (
    "task",
    "pid",
    "cpu",
    "zone",
    "node",
    "order",
    "mode",
    "status",
    "trigger",
    "trigger_evidence",
    "ts_begin",
    "ts_end",
    "duration_us",
    "zone_start",
    "zone_end",
    "migrate_pfn_end",
    "free_pfn_end",
    "source",
    "path",
)


def _base(fn):
    return fn.split(".", 1)[0] if fn else fn


def infer_trigger(task, order, path=(), direct_hint=False, wake_hint=False):
    """(trigger, evidence in words)."""
    names = {_base(f) for f in path}
    kcd = (task or "").startswith("kcompactd")
    if kcd:
        if names & PROACTIVE_FUNCS:
            return "proactive", "proactive_compact_node in the call path"
        if names & KCOMPACTD_FUNCS:
            return "kcompactd", "kcompactd_do_work in the call path"
        if order is not None:
            if order < 0:
                return "proactive", "kcompactd task, order -1 (proactive pass)"
            return "kcompactd", "kcompactd task, order %d (woken for an allocation)" % order
        if wake_hint:
            return "kcompactd", "kcompactd task after mm_compaction_kcompactd_wake"
        return "proactive", "kcompactd task without a wake event"
    if names & DIRECT_FUNCS:
        return "direct", "%s in the call path" % sorted(names & DIRECT_FUNCS)[0]
    if names & MANUAL_FUNCS:
        return "manual", "%s in the call path" % sorted(names & MANUAL_FUNCS)[0]
    if direct_hint:
        return "direct", "after mm_compaction_try_to_compact_pages in the same task"
    if order is not None:
        if order >= 0:
            return "direct", "order %d in an allocating task" % order
        return "manual", "order -1 outside kcompactd (compact_memory / node compact write)"
    if task is None:
        return "unknown", "no task, order or call path"
    if "compact_node" in names:
        return "manual", "compact_node outside kcompactd"
    return "unknown", "no order, wake event or call path to decide"


class CompactionPairer:
    """Pairs compaction events per pid; ``emit(row)`` gets COMPACTION_COLUMNS tuples."""

    def __init__(self, emit, graph=None):
        self.emit = emit
        self.graph = graph
        self.open = {}
        self.direct_hint = {}
        self.wake_hint = {}
        self.frame_dur = {}  # compact_zone frame id -> duration (graph captures without timestamps)
        self.pending_frames = []
        self.begins = 0
        self.ends_without_begin = 0

    WANTS = frozenset(
        (
            "mm_compaction_begin",
            "mm_compaction_end",
            "mm_compaction_finished",
            "mm_compaction_suitable",
            "mm_compaction_try_to_compact_pages",
            "mm_compaction_kcompactd_wake",
            "mm_compaction_kcompactd_sleep",
        )
    )

    def wants(self, name, pid):
        """finished/suitable fire every pass: only the first one of an open compaction names its zone."""
        if name in ("mm_compaction_finished", "mm_compaction_suitable"):
            o = self.open.get(pid)
            return o is not None and o["zone"] is None
        return True

    def on_close(self, frame, dur, _status):
        if _base(frame.fn) in CLOSE_FUNCS:
            self.frame_dur[frame.id] = dur

    def event(self, cpu, task, pid, ts, name, ints, strs, frames):
        if name == "mm_compaction_begin":
            self.begins += 1
            zframe = next((f for f in reversed(frames) if _base(f.fn) == "compact_zone"), None)
            self.open[pid] = {
                "task": task,
                "pid": pid,
                "cpu": cpu,
                "ts": ts,
                "ints": ints,
                "mode": strs.get("mode"),
                "zone": None,
                "node": None,
                "order": None,
                "frame": zframe,
                "top": frames[-1] if frames else None,
            }
        elif name in ("mm_compaction_finished", "mm_compaction_suitable"):
            o = self.open.get(pid)
            if o is not None and o["zone"] is None:
                o["zone"], o["node"], o["order"] = strs.get("zone"), ints.get("node"), ints.get("order")
        elif name == "mm_compaction_try_to_compact_pages":
            self.direct_hint[pid] = True
        elif name == "mm_compaction_kcompactd_wake":
            self.wake_hint[pid] = True
        elif name == "mm_compaction_kcompactd_sleep":
            self.wake_hint.pop(pid, None)
        elif name == "mm_compaction_end":
            o = self.open.pop(pid, None)
            if o is None:
                self.ends_without_begin += 1
                o = {
                    "task": task,
                    "pid": pid,
                    "cpu": cpu,
                    "ts": None,
                    "ints": {},
                    "mode": strs.get("mode"),
                    "zone": None,
                    "node": None,
                    "order": None,
                    "frame": None,
                    "top": frames[-1] if frames else None,
                }
                status = "no_begin:" + strs.get("status", "?")
            else:
                status = strs.get("status", "?")
            self._emit(o, ts, status, ints)

    def _emit(self, o, ts_end, status, end_ints):
        path = o["top"].path() if o["top"] is not None else []
        trig, why = infer_trigger(
            o["task"], o["order"], path, self.direct_hint.pop(o["pid"], False), self.wake_hint.get(o["pid"], False)
        )
        dur = (ts_end - o["ts"]) * 1e6 if ts_end is not None and o["ts"] is not None else None
        b = o["ints"]
        zone = o["zone"] or ("pfn 0x%x-0x%x" % (b["zone_start"], b["zone_end"]) if "zone_start" in b else None)
        row = [
            o["task"],
            o["pid"],
            o["cpu"],
            zone,
            o["node"],
            o["order"],
            o["mode"],
            status,
            trig,
            why,
            o["ts"],
            ts_end,
            dur,
            b.get("zone_start"),
            b.get("zone_end"),
            end_ints.get("migrate_pfn"),
            end_ints.get("free_pfn"),
            "events",
            "/".join(path) or None,
        ]
        if dur is None and o["frame"] is not None:
            self.pending_frames.append((row, o["frame"].id))  # duration arrives when compact_zone closes
        else:
            self.emit(tuple(row))

    def finish(self):
        for o in list(self.open.values()):
            self._emit(o, None, "truncated", {})
        self.open.clear()
        for row, fid in self.pending_frames:
            row[12] = self.frame_dur.get(fid)
            self.emit(tuple(row))
        self.pending_frames.clear()


class ZoneCallCompactions:
    """Function_graph captures without compaction events: one row per compact_zone call (complete or orphan)."""

    def __init__(self):
        self.frames = []

    def on_close(self, frame, dur, status):
        if _base(frame.fn) in CLOSE_FUNCS:
            self.frames.append((frame, dur, status))

    def rows(self, first_switch):
        """After the trace: lost ancestors are named by now, so the call path can decide the trigger.
        ``first_switch``: cpu -> (seq, task, pid) of the CPU's first context-switch banner, whose outgoing task ran
        the closings before it (no task column); filled in before the trigger is inferred, which needs the task."""
        for f, dur, status in self.frames:
            path = f.path()
            task, pid = f.task, f.pid
            if task is None and f.cpu in first_switch:
                _, task, pid = first_switch[f.cpu]
            trig, why = infer_trigger(task, None, path)
            end = f.ts + dur / 1e6 if f.ts is not None and dur is not None else None
            yield (
                task,
                pid,
                f.cpu,
                None,
                None,
                None,
                None,
                "unknown (entry lost)" if status == "orphan" else "unknown (returned)",
                trig,
                why,
                f.ts,
                end,
                dur,
                None,
                None,
                None,
                None,
                "calls",
                "/".join(path),
            )
