"""Unwind through function_graph's return hooks (x86_64), so stacks taken while the run is traced stay whole.

function_graph replaces the return address of every traced function on the stack with `return_to_handler`; gdb's
DWARF unwinder then walks into that asm stub and the backtrace ends there (compact_zone ← compact_node ←
return_to_handler). The kernel keeps each original address in the task's `ret_stack[]` with `retp`, the stack
slot it replaced; like the kernel's own ftrace_graph_ret_addr(), this unwinder finds the entry whose `retp` is the
slot gdb just read and resumes at the original caller.
"""

from __future__ import annotations

import struct

import gdb
from gdb.unwinder import Unwinder, register_unwinder

CALLEE_SAVED = ("rbx", "rbp", "r12", "r13", "r14", "r15")


class FrameId:
    """What create_unwind_info() wants, with gdb.Value sp/pc (gdb 14 ships gdb.unwinder.FrameId; Debian 12 has
    gdb 13, which rejects plain ints)."""

    def __init__(self, sp, pc):
        self.sp, self.pc = sp, pc


class GraphReturnUnwinder(Unwinder):
    def __init__(self, task_t):
        super().__init__("compaction-lab ftrace graph return")
        self.task = None  # set per hit: the stopped task's task_struct address
        self.handler = int(gdb.parse_and_eval("(unsigned long)&return_to_handler"))
        self.off_stack = task_t["ret_stack"].bitpos // 8
        self.off_curr = task_t["curr_ret_stack"].bitpos // 8
        entry_t = task_t["ret_stack"].type.target().strip_typedefs()
        self.entry_size = entry_t.sizeof
        self.off_ret = entry_t["ret"].bitpos // 8
        self.off_retp = entry_t["retp"].bitpos // 8

    @classmethod
    def install(cls, task_t):
        """Register for every objfile; None when the kernel has no function_graph return hook."""
        try:
            unwinder = cls(task_t)
        except (gdb.error, KeyError):  # no ret_stack in task_struct or no return_to_handler
            return None
        register_unwinder(None, unwinder, replace=True)
        return unwinder

    def original_return(self, slot):
        mem = gdb.selected_inferior()
        (stack,) = struct.unpack("<Q", bytes(mem.read_memory(self.task + self.off_stack, 8)))
        (curr,) = struct.unpack("<i", bytes(mem.read_memory(self.task + self.off_curr, 4)))
        if not stack or curr < 0:
            return None
        raw = bytes(mem.read_memory(stack, (curr + 1) * self.entry_size))
        for i in range(curr + 1):
            base = i * self.entry_size
            (retp,) = struct.unpack_from("<Q", raw, base + self.off_retp)
            if retp == slot:
                return struct.unpack_from("<Q", raw, base + self.off_ret)[0]
        return None

    def __call__(self, pending):
        if self.task is None:
            return None
        pc = pending.read_register("rip")
        if int(pc) & (1 << 64) - 1 != self.handler:
            return None
        sp = int(pending.read_register("rsp")) & (1 << 64) - 1
        try:
            ret = self.original_return(sp - 8)  # the caller's `ret` popped the hooked slot just below sp
        except (gdb.error, gdb.MemoryError):
            return None
        if ret is None:
            return None
        info = pending.create_unwind_info(FrameId(pending.read_register("rsp"), pc))
        for reg in CALLEE_SAVED:
            info.add_saved_register(reg, pending.read_register(reg))
        info.add_saved_register("rsp", pending.read_register("rsp"))
        info.add_saved_register("rip", gdb.Value(ret).cast(pc.type))
        return info
