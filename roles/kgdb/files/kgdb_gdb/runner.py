"""The session runner, executed inside ``gdb -batch``.

Order matters for the guest's safety: everything that can be refused (session, symbols, banner, breakpoint
locations, KGDB/ftrace clashes) is checked against the vmlinux file *before* connecting, so a bad session never
stops the guest. Once connected, every exit path deletes the breakpoints and detaches, which resumes the guest
(QEMU's gdbstub and KGDB both continue on detach). gdb's own `quit` on a `target remote` could send a kill
packet, which makes QEMU exit: never quit while attached.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import threading
import time

import gdb

from . import schema, traceclock
from .evaluate import evaluate
from .graph_unwind import GraphReturnUnwinder
from .values import fields, to_json

# Debian's DWARF names assembler files by absolute build path; C files are relative to the tree.
BUILD_PREFIX = re.compile(r"^/.*?/linux-[^/]+/")

# Exit codes, shared with the CLI and the role.
RC_OK, RC_REFUSED, RC_NO_HITS, RC_ERROR, RC_UNREACHABLE = 0, 2, 3, 4, 5


class Refused(Exception):
    """Refused with a reason naming the fix (before connecting, except the live banner check)."""


class Unreachable(Exception):
    """The debug transport could not be connected."""


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def _ev(expr: str):
    return gdb.parse_and_eval(expr)


class Session:
    def __init__(self, args: dict):
        self.args = args
        self.record = {
            "schema": 1,
            "session": None,
            "vmlinux": args["vmlinux"],
            "transport": args["transport"],
            "target": args["target"],
            "guest_banner": None,
            "vmlinux_banner": None,
            "started": _utc(time.time()),
            "armed": None,
            "finished": None,
            "status": "error",
            "message": "",
            "released": False,
            "hits": [],
        }
        self.connected = False
        self.running = False
        self.deadline_hit = threading.Event()
        self.last_stop = None
        self.trace_buffer = None
        self.unwinder = None
        self.bps: list[tuple[gdb.Breakpoint, dict]] = []
        self.counts: dict[int, int] = {}

    # -- output ---------------------------------------------------------------------------------------------
    def write(self):
        out = self.args["out"]
        tmp = out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.record, fh, indent=1, default=str)
        os.replace(tmp, out)

    def state(self, phase: str):
        """One line for whoever waits on us (the role starts the guest-side trigger on `armed`)."""
        if self.args.get("state_file"):
            with open(self.args["state_file"], "w") as fh:
                fh.write(f"{phase} {_utc(time.time())}\n")

    # -- before attach --------------------------------------------------------------------------------------
    def load(self):
        try:
            self.session = schema.normalize(self.args["session"])
        except schema.SessionError as exc:
            raise Refused(str(exc)) from None
        self.record["session"] = self.session
        for cmd in ("set pagination off", "set confirm off", "set breakpoint pending off", "set print pretty off"):
            gdb.execute(cmd)
        for old, new in self.args.get("substitute_paths", []):
            gdb.execute(f"set substitute-path {old} {new}")
        try:
            gdb.execute(f"file {self.args['vmlinux']}", to_string=True)
            banner = _ev("(const char *)&linux_banner").string()
        except gdb.error as exc:
            raise Refused(f"cannot read linux_banner from {self.args['vmlinux']}: {exc} (is it a vmlinux?)") from None
        self.record["vmlinux_banner"] = banner.strip()
        guest = self.args.get("guest_banner")
        if guest is None:
            raise Refused("no guest banner given: the role passes the guest's /proc/version (--guest-banner-file)")
        self.record["guest_banner"] = guest.strip()
        why = schema.banner_mismatch(guest, banner)
        if why:
            raise Refused(why)
        for spec in self.session["breakpoints"]:
            try:
                bp = gdb.Breakpoint(spec["location"], internal=False)
            except (gdb.error, RuntimeError) as exc:
                raise Refused(f"breakpoint {spec['location']!r}: {exc}") from None
            if bp.pending or not bp.locations:
                name = os.path.basename(self.args["vmlinux"])
                raise Refused(
                    f"breakpoint {spec['location']!r}: no such function or source line in {name}. Check it with: "
                    f"gdb -batch -ex 'info functions ^{spec['location'].split(':')[0]}$' {self.args['vmlinux']}"
                )
            if spec["condition"]:
                try:
                    bp.condition = spec["condition"]
                except gdb.error as exc:
                    raise Refused(
                        f"breakpoint {spec['location']!r}: bad condition {spec['condition']!r}: {exc}"
                    ) from None
            self.bps.append((bp, spec))
            self.counts[bp.number] = 0
        if self.args["transport"] == "kgdb":
            self.refuse_ftrace_sites()
        self.layout = self.task_layout()
        if "error" not in self.layout and self.layout["current_task"] is not None:
            self.unwinder = GraphReturnUnwinder.install(self.task_type)
        buffer = self.args.get("trace_buffer")
        self.trace_buffer = traceclock.resolve(buffer) if buffer else None

    def refuse_ftrace_sites(self):
        """KGDB plants int3 in guest text; on an ftrace patch site (__mcount_loc) ftrace later finds the int3
        instead of its nop/call and the guest hangs (measured). The gdbstub does not patch memory: no clash."""
        try:
            start = int(_ev("(unsigned long)&__start_mcount_loc"))
            stop = int(_ev("(unsigned long)&__stop_mcount_loc"))
        except gdb.error:
            return  # kernel without ftrace sites: nothing to clash with
        raw = bytes(gdb.selected_inferior().read_memory(start, stop - start))
        sites = set(struct.unpack(f"<{len(raw) // 8}Q", raw))
        for bp, spec in self.bps:
            for loc in bp.locations:
                if any(loc.address - off in sites for off in range(5)):  # a 5-byte call/nop at the site
                    raise Refused(
                        f"breakpoint {spec['location']!r} at {loc.address:#x} sits on an ftrace patch site: a KGDB "
                        "software breakpoint there hangs the guest as soon as ftrace touches the function. Use "
                        "kgdb_transport: gdbstub, or a file:line breakpoint inside the function body."
                    )

    # -- attached -------------------------------------------------------------------------------------------
    def connect(self):
        gdb.execute("set remotetimeout 10")
        # KGDB answers only once sysrq-g (sent by the role just before) has the kernel in the debugger.
        attempts = 10 if self.args["transport"] == "kgdb" else 1
        for attempt in range(attempts):
            try:
                gdb.execute(f"target remote {self.args['target']}", to_string=True)
                break
            except gdb.error as exc:
                if attempt + 1 < attempts:
                    time.sleep(1)
                    continue
                raise Unreachable(
                    f"cannot connect to {self.args['transport']} at {self.args['target']}: {exc}. Is the guest "
                    "running with its gdb port (lab_gdb_port) or KGDB serial (lab_kgdb_port), no other gdb attached?"
                ) from None
        self.connected = True
        # The live banner at the vmlinux's address proves the symbols line up with this guest's memory
        # (catches a KASLR-randomised guest or a port pointing at another guest).
        size = len(self.record["vmlinux_banner"]) + 1
        live = _ev("(const char *)&linux_banner").string(length=size, errors="replace")
        if live.strip() != self.record["vmlinux_banner"]:
            raise Refused(
                "guest memory at &linux_banner does not hold the vmlinux banner (KASLR on? boot the guest with "
                f"nokaslr) — read {live.strip()[:80]!r}"
            )

    def on_stop(self, event):
        self.last_stop = event

    def watchdog(self):
        self.deadline_hit.set()
        if self.args["transport"] == "kgdb":
            # kgdboc drops gdb's ^C while the kernel runs: the role enters the debugger with sysrq-g on `deadline`.
            self.state("deadline")
            return
        gdb.post_event(lambda: gdb.execute("interrupt") if self.running else None)

    def run(self):
        gdb.events.stop.connect(self.on_stop)
        deadline = self.session["deadline_s"]
        timer = threading.Timer(deadline, self.watchdog)
        timer.daemon = True
        self.record["armed"] = _utc(time.time())
        self.state("armed")
        timer.start()
        try:
            while not self.deadline_hit.is_set():
                self.last_stop = None
                self.running = True
                gdb.execute("continue", to_string=True)
                self.running = False
                event = self.last_stop
                if isinstance(event, gdb.BreakpointEvent):
                    for bp in event.breakpoints:
                        self.capture(bp)
                    if self.done():
                        break
                elif not self.deadline_hit.is_set():
                    raise RuntimeError(f"guest stopped unexpectedly: {getattr(event, 'stop_signal', event)}")
        finally:
            timer.cancel()
            self.running = False
        hits = self.record["hits"]
        if not hits:
            locs = ", ".join(s["location"] for _, s in self.bps)
            self.record["status"] = "no_hits"
            trig = self.session["trigger"]
            ran = f"after trigger {trig['command']!r}" if trig else "without a trigger"
            self.record["message"] = (
                f"no breakpoint hit within deadline_s={deadline} ({locs}) {ran}; "
                "the guest was released and keeps running"
            )
            return RC_NO_HITS
        self.record["status"] = "ok"
        why = "deadline" if self.deadline_hit.is_set() else "hit limits reached"
        self.record["message"] = f"{len(hits)} hit(s) captured; stopped on {why}"
        return RC_OK

    def done(self) -> bool:
        total = self.session["max_hits"]
        if total and len(self.record["hits"]) >= total:
            return True
        return all(spec["max_hits"] and self.counts[bp.number] >= spec["max_hits"] for bp, spec in self.bps)

    # -- capture --------------------------------------------------------------------------------------------
    def capture(self, bp):
        spec = next((s for b, s in self.bps if b.number == bp.number), None)
        if spec is None or (spec["max_hits"] and self.counts[bp.number] >= spec["max_hits"]):
            return
        self.counts[bp.number] += 1
        if spec["max_hits"] and self.counts[bp.number] >= spec["max_hits"]:
            bp.enabled = False
        now = time.time()
        cap = spec["capture"]
        task, task_addr = self.current_task()
        if self.unwinder is not None:  # see through function_graph's return hooks of this task
            self.unwinder.task = task_addr
            gdb.invalidate_cached_frames()
        frame0 = gdb.newest_frame()
        hit = {
            "n": len(self.record["hits"]) + 1,
            "breakpoint": spec["location"],
            "hit_of_breakpoint": self.counts[bp.number],
            "time": _utc(now),
            "epoch": now,
            "thread": gdb.selected_thread().num,
            "task": task,
            "jiffies": self.safe_int("jiffies_64"),
            "trace_clock": None,
            "frames": self.frames(frame0, cap["backtrace"]) if cap["backtrace"] else [],
            "values": {},
        }
        if self.trace_buffer is not None:
            hit["trace_clock"] = traceclock.stamp(self.trace_buffer, hit["task"].get("cpu"))
        if cap["locals"]:
            hit["locals"] = self.locals(frame0)
        for expr in cap["expressions"]:
            try:
                hit["values"][expr] = to_json(evaluate(expr, frame0), depth=2)
            except (gdb.error, gdb.MemoryError) as exc:
                hit["values"][expr] = f"<error: {exc}>"
        if cap["compact_control"]:
            hit["compact_control"] = self.compact_control(frame0, cap["compact_control"])
        # How long the guest stood still for this capture (it is stopped for all of it).
        hit["capture_s"] = round(time.time() - now, 3)
        self.record["hits"].append(hit)
        self.write()

    @staticmethod
    def safe_int(expr):
        try:
            return int(_ev(expr))
        except gdb.error:
            return None

    def task_layout(self):
        """Where `current` lives and where pid/comm sit in task_struct, resolved once before attaching:
        looking up `struct task_struct` or `pid` by name expands most of the vmlinux's DWARF (~80 s, 2 GB
        measured), while init_task's type and current_task's address are found in a fraction of a second."""

        def offset(t, name, base=0):
            for f in t.fields():
                ft = f.type.strip_typedefs()
                if f.name == name:
                    return base + f.bitpos // 8
                if f.name is None and ft.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
                    found = offset(ft, name, base + f.bitpos // 8)
                    if found is not None:
                        return found
            return None

        try:
            task_t = self.task_type = gdb.lookup_global_symbol("init_task").type.strip_typedefs()
            layout = {"pid": offset(task_t, "pid"), "comm": offset(task_t, "comm"), "cpu": offset(task_t, "cpu")}
            if layout["cpu"] is None and offset(task_t, "thread_info") is not None:  # THREAD_INFO_IN_TASK
                info_t = task_t["thread_info"].type.strip_typedefs()
                inner = offset(info_t, "cpu")
                layout["cpu"] = None if inner is None else offset(task_t, "thread_info") + inner
            sym = gdb.lookup_global_symbol("current_task")  # x86 per-cpu; arm64 keeps current in sp_el0
            layout["current_task"] = int(sym.value().address) if sym else None
        except (AttributeError, gdb.error) as exc:
            return {"error": str(exc)}
        return layout

    def percpu_base(self, frame):
        if self.args["transport"] == "kgdb":  # KGDB's x86_64 registers have no gs_base
            cpu = int(_ev("kgdb_active.counter"))  # the CPU that entered the debugger
            return int(_ev(f"__per_cpu_offset[{cpu}]")) & (1 << 64) - 1
        return int(frame.read_register("gs_base")) & (1 << 64) - 1  # gdb reads it as signed

    def current_task(self):
        """(pid/comm/cpu of the task that hit, for joining with ftrace lines; its task_struct address)."""
        lay = self.layout
        if "error" in lay or lay["pid"] is None or lay["comm"] is None:
            return {"error": f"task_struct layout unknown: {lay}"}, None
        frame, mem = gdb.newest_frame(), gdb.selected_inferior()
        try:
            if lay["current_task"] is not None:
                base = self.percpu_base(frame)
                task = struct.unpack("<Q", bytes(mem.read_memory(base + lay["current_task"], 8)))[0]
            else:
                task = int(frame.read_register("sp_el0"))
            pid = struct.unpack("<i", bytes(mem.read_memory(task + lay["pid"], 4)))[0]
            comm = bytes(mem.read_memory(task + lay["comm"], 16)).split(b"\0", 1)[0].decode("utf-8", "replace")
            cpu = None
            if lay["cpu"] is not None:  # the running task's cpu is the CPU that hit
                cpu = struct.unpack("<I", bytes(mem.read_memory(task + lay["cpu"], 4)))[0]
        except (ValueError, OverflowError, gdb.error, gdb.MemoryError) as exc:
            return {"error": f"current task not readable: {exc}"}, None
        return {"pid": pid, "comm": comm, "cpu": cpu}, task

    @staticmethod
    def _function_block(frame):
        block = frame.block()
        while block is not None and block.function is None:
            block = block.superblock
        return block

    def frames(self, frame, limit):
        out = []
        # Past the entry code (entry_SYSCALL_64, irq entries) the unwinder walks user/garbage stack: stop at the
        # first frame without a symbol.
        hooked = False
        while frame is not None and len(out) < limit:
            # By pc: gdb names a caller frame by pc - 1, which for the hook's first byte is the preceding symbol.
            if self.unwinder is not None and frame.pc() == self.unwinder.handler:
                hooked = True  # function_graph's hook: the unwinder resumes at the original caller
                frame = frame.older()
                continue
            if not frame.name():
                break
            sal = frame.find_sal()
            entry = {
                "level": len(out),
                "function": frame.name(),
                "file": BUILD_PREFIX.sub("", sal.symtab.filename) if sal.symtab else None,
                "line": sal.line or None,
                "pc": f"{frame.pc():#x}",
                "inlined": frame.type() == gdb.INLINE_FRAME,
                "args": {},
            }
            if hooked:
                entry["ftrace_graph_return"] = True  # return address restored from the task's ret_stack
                hooked = False
            try:
                block = self._function_block(frame)
                for sym in block or []:
                    if sym.is_argument:
                        entry["args"][sym.name] = to_json(frame.read_var(sym), depth=0)
            except RuntimeError:  # no debug info for this frame (entry code, asm)
                pass
            out.append(entry)
            frame = frame.older()
        return out

    def locals(self, frame):
        out = {}
        try:
            block = frame.block()
        except RuntimeError:
            return out
        while block is not None:
            for sym in block:
                if (sym.is_variable or sym.is_constant) and not sym.is_argument and sym.name not in out:
                    out[sym.name] = to_json(frame.read_var(sym, block), depth=1)
            if block.function is not None:
                break
            block = block.superblock
        return out

    def compact_control(self, frame, how):
        """`struct compact_control` fields plus the zone's name/node and order/mode in plain words."""
        cc = None
        if how == "auto":
            f = frame
            while f is not None and cc is None:
                try:
                    for sym in self._function_block(f) or []:
                        if sym.is_argument and str(sym.type.strip_typedefs()) == "struct compact_control *":
                            cc, found_in = f.read_var(sym), f"{f.name()}:{sym.name}"
                            break
                except RuntimeError:
                    pass
                f = f.older()
            if cc is None:
                return {"error": "no struct compact_control * argument in the stack"}
        else:
            try:
                cc, found_in = evaluate(how, frame), how
            except (gdb.error, gdb.MemoryError) as exc:
                return {"error": f"{how}: {exc}"}
        try:
            c = cc.dereference()
            zone = c["zone"]
            summary = {
                "from": found_in,
                "address": f"{int(cc):#x}",
                "zone": zone["name"].string() if int(zone) else None,
                "node": int(zone["zone_pgdat"]["node_id"]) if int(zone) else None,
                "order": int(c["order"]),
                "mode": str(c["mode"]),
                "fields": fields(c, 0),
            }
        except (gdb.error, gdb.MemoryError) as exc:
            return {"error": f"reading compact_control at {found_in}: {exc}"}
        return summary

    # -- always ---------------------------------------------------------------------------------------------
    def release(self):
        """Delete our breakpoints and detach: the guest runs on. Safe to call in any state."""
        for bp, _ in self.bps:
            with contextlib.suppress(gdb.error, RuntimeError):
                bp.delete()
        if self.connected:
            try:
                gdb.execute("detach", to_string=True)
                self.record["released"] = True
            except gdb.error as exc:
                self.record["message"] += f" | detach failed: {exc} (run the role's release step)"
            self.connected = False


def main(args: dict) -> int:
    s = Session(args)
    rc = RC_ERROR
    try:
        s.load()
        if args.get("preflight"):
            s.record.update(status="preflight_ok", message="session, symbols and breakpoints accepted")
            return RC_OK
        s.connect()
        rc = s.run()
    except Refused as exc:
        s.record.update(status="refused", message=str(exc))
        rc = RC_REFUSED
    except Unreachable as exc:
        s.record.update(status="unreachable", message=str(exc))
        rc = RC_UNREACHABLE
    except BaseException as exc:  # whatever broke, the guest must be released below
        s.record.update(status="error", message=f"{type(exc).__name__}: {exc}")
        rc = RC_ERROR
    finally:
        s.release()
        s.record["finished"] = _utc(time.time())
        s.write()
        s.state(f"finished {s.record['status']}")
    return rc
