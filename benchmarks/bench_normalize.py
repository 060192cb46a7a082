"""Normalize speed and memory vs `trace-cmd report`, printed side by side (make bench; root, this host's tracefs).

Captures compared (all real; nothing is synthesized field by field):
  tracepoints  recorded now on this host: compaction + migrate + kmem page alloc/free events in a throwaway tracefs
               instance until >= 1 M entries, saved as text (`trace`) AND as trace.dat (`trace-cmd extract`) from the
               same buffer. Compared: `trace-cmd report trace.dat` vs `collect` normalizing trace.txt, and `collect`
               reading trace.dat (which includes running trace-cmd report).
  graph        function_graph + events, >= 1 M lines, recorded in a lab guest (this host refuses function tracers)
               and cached outside git in <lab cache>/bench/graph-1m/ (trace.txt and trace.dat of the same buffer,
               PROVENANCE.md says how; docs/collect.md has the command to re-create it). Compared as the issue
               defines it: `trace-cmd report trace.dat` vs `collect` normalizing trace.txt of that capture.
               Without the cache, the seed's real x86 function_graph text is replayed (concatenated) to >= 1 M
               lines and compared against trace-cmd's lines/s on the tracepoint capture; the rows say "seed replay".
Memory: peak RSS of each child (wait4); "flat" compares the peak for a quarter of the input with the full input.
`--baseline REV` also runs collect/ as committed at REV on the same captures (rows "… @REV"): before/after figures
measured in one run, so a loaded machine slows both alike.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACEFS = "/sys/kernel/tracing"
INSTANCE = os.path.join(TRACEFS, "instances", "collect-bench")
LAB_CACHE = os.environ.get("COMPACTION_LAB_CACHE") or os.path.expanduser("~/.cache/compaction-lab")
GRAPH_CAPTURE = os.path.join(LAB_CACHE, "bench", "graph-1m")
TARGET = 1_000_000
CPU = []  # CPU seconds of each measured child, in order: a loaded machine stretches wall time, not these


def measure(argv, stdout=subprocess.DEVNULL):
    """(wall seconds, peak RSS MiB) of one child process; its CPU seconds (user + sys) go to CPU[-1]."""
    t = time.monotonic()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("%s failed: %s" % (" ".join(argv), err[-800:]))
    CPU.append(usage.ru_utime + usage.ru_stime)
    return wall, usage.ru_maxrss / 1024


def normalize_cmd(host_dir, source, out_root, tree=None):
    """Normalize in a child into a new folder under ``out_root`` (removed with it); ``tree``: a directory holding
    another collect/ to import instead of this one."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[4]) if sys.argv[4] else None; "
        "from collect.normalize import normalize_host; "
        "normalize_host(sys.argv[1], 'bench', 'h', prefer=sys.argv[2], out_dir=sys.argv[3])"
    )
    return [sys.executable, "-c", code, host_dir, source, tempfile.mkdtemp(prefix="out-", dir=out_root), tree or ""]


def export_tree(rev, dest):
    """A folder to import collect/ as committed at ``rev`` from (git archive: the work tree is not touched). A
    collect/ with compiled parts (funcgraph.pyx) is built and installed there by pip, as `make setup` builds it."""
    src = os.path.join(dest, "src")
    os.makedirs(src)
    paths = ["collect", "pyproject.toml", "plugins/module_utils"]
    archive = subprocess.run(["git", "archive", rev, *paths], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
    if not glob.glob(os.path.join(src, "collect", "*.pyx")):
        return src
    site = os.path.join(dest, "site")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--target", site]
    subprocess.run([*pip, src], check=True, capture_output=True)
    return site


def count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for line in f if not line.startswith(b"#"))


def _write(path, value):
    with open(path, "w") as f:
        f.write(value)


def entries():
    total = 0
    for path in glob.glob(os.path.join(INSTANCE, "per_cpu", "cpu*", "stats")):
        with open(path) as f:
            total += int(f.read().split("entries:")[1].split()[0])
    return total


def record_tracepoints(out):
    """>= TARGET entries of real events in a throwaway instance; the instance is removed whatever happens."""
    if os.path.exists(INSTANCE):
        raise SystemExit("%s exists: another benchmark is running (or remove it by hand)" % INSTANCE)
    os.mkdir(INSTANCE)
    try:
        _write(os.path.join(INSTANCE, "buffer_size_kb"), "98304")
        for ev in ("compaction", "migrate", "kmem/mm_page_alloc", "kmem/mm_page_free"):
            _write(os.path.join(INSTANCE, "events", ev, "enable"), "1")
        _write(os.path.join(INSTANCE, "tracing_on"), "1")
        deadline = time.monotonic() + 120
        # Page allocations and frees (kmem events) in a child, so this process's peak RSS (inherited by the
        # measured children through fork) stays small.
        churn = [sys.executable, "-c", "for _ in range(4): b = [bytearray(64 << 20) for _ in range(4)]; del b"]
        while time.monotonic() < deadline:
            subprocess.run(churn, check=True)
            _write("/proc/sys/vm/compact_memory", "1")
            if entries() >= TARGET * 1.05:
                break
        _write(os.path.join(INSTANCE, "tracing_on"), "0")
        with open(os.path.join(INSTANCE, "trace")) as src, open(os.path.join(out, "trace.txt"), "w") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        fmt_dir = os.path.join(out, "formats")
        for system in ("compaction", "migrate", "kmem"):
            for fmt in glob.glob(os.path.join(INSTANCE, "events", system, "*", "format")):
                os.makedirs(os.path.join(fmt_dir, system), exist_ok=True)
                shutil.copy(fmt, os.path.join(fmt_dir, system, os.path.basename(os.path.dirname(fmt))))
        subprocess.run(
            ["trace-cmd", "extract", "-B", "collect-bench", "-o", os.path.join(out, "trace.dat")],
            check=True, capture_output=True,
        )  # fmt: skip
    finally:
        if os.path.isdir(INSTANCE):
            _write(os.path.join(INSTANCE, "tracing_on"), "0")
            _write(os.path.join(INSTANCE, "events", "enable"), "0")
            os.rmdir(INSTANCE)


def replay_seed(out, target):
    """The seed's real function_graph lines, concatenated until >= target (header once)."""
    with open(os.path.join(ROOT, "tests/fixtures/seed/trace.txt")) as f:
        lines = f.readlines()
    head = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")]
    n = 0
    with open(os.path.join(out, "trace.txt"), "w") as f:
        f.writelines(head)
        while n < target:
            f.writelines(body)
            n += len(body)
    return n


def head_copy(src, dest, fraction):
    """``src`` capture's header and the first ``fraction`` of its trace.txt lines (+ meta, formats) in ``dest``."""
    total = count_lines(os.path.join(src, "trace.txt"))
    keep, n = int(total * fraction), 0
    shutil.copytree(os.path.join(src, "formats"), os.path.join(dest, "formats"))
    shutil.copy(os.path.join(src, "trace.meta.json"), dest)
    with open(os.path.join(src, "trace.txt"), "rb") as f, open(os.path.join(dest, "trace.txt"), "wb") as out:
        for line in f:
            if not line.startswith(b"#"):
                if n >= keep:
                    break
                n += 1
            out.write(line)
    return n


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def row(name, lines, wall, rss, ref=None):
    ratio = "%.2f" % (wall / ref) if ref else "-"
    print("%-52s %10d %8.2f %7.2f %11.0f %9.0f %8s" % (name, lines, wall, CPU[-1], lines / wall, rss, ratio))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", metavar="REV", help="also run collect/ as committed at REV (before/after)")
    args = ap.parse_args()
    if os.geteuid() != 0 or not os.path.isdir(os.path.join(TRACEFS, "instances")):
        raise SystemExit("bench_normalize records a real capture: run it as root on a host with tracefs")
    if shutil.which("trace-cmd") is None:
        raise SystemExit("trace-cmd is not installed: make setup")
    work = tempfile.mkdtemp(prefix="bench-normalize-")
    try:
        base = export_tree(args.baseline, work) if args.baseline else None

        def collect_rows(name, host_dir, source, lines, ref):
            """This tree's row, then the baseline's on the same input."""
            w, r = measure(normalize_cmd(host_dir, source, work))
            row(name, lines, w, r, ref)
            if base:
                bw, br = measure(normalize_cmd(host_dir, source, work, base))
                row("  same, collect @%s" % args.baseline, lines, bw, br, ref)
            return w, r

        tp = os.path.join(work, "tracepoints")
        os.makedirs(tp)
        record_tracepoints(tp)
        tp_lines = count_lines(os.path.join(tp, "trace.txt"))
        print("load average before: %s" % loadavg())
        cols = ("workload", "lines", "wall s", "cpu s", "lines/s", "peak MiB", "ratio")
        print("%-52s %10s %8s %7s %11s %9s %8s" % cols)
        tc_wall, tc_rss = measure(["trace-cmd", "report", "-t", "-i", os.path.join(tp, "trace.dat")])
        row("trace-cmd report trace.dat (tracepoints, reference)", tp_lines, tc_wall, tc_rss)
        collect_rows("collect normalize trace.txt (same capture)", tp, "txt", tp_lines, tc_wall)
        collect_rows("collect normalize trace.dat (runs trace-cmd too)", tp, "dat", tp_lines, tc_wall)

        lab = sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/lab-*/trace.dat")))
        if lab:
            ldir = os.path.dirname(lab[0])
            n = count_lines(os.path.join(ldir, "trace.txt")) if os.path.exists(os.path.join(ldir, "trace.txt")) else 0
            lw, lr = measure(["trace-cmd", "report", "-t", "-i", lab[0]])
            row("trace-cmd report %s" % os.path.relpath(lab[0], ROOT), n, lw, lr)
            collect_rows("collect normalize (same trace.dat)", ldir, "dat", n, lw)
        if os.path.exists(os.path.join(GRAPH_CAPTURE, "trace.dat")):
            # The comparison: one real >= 1 M-line function_graph capture, both renderings of it.
            gdir, label = GRAPH_CAPTURE, "lab function_graph"
            g_lines = count_lines(os.path.join(gdir, "trace.txt"))
            g_ref, g_rss = measure(["trace-cmd", "report", "-t", "-i", os.path.join(gdir, "trace.dat")])
            row("trace-cmd report trace.dat (graph, reference)", g_lines, g_ref, g_rss)
            g_ref_cpu = CPU[-1]
            _, r_full = collect_rows("collect normalize trace.txt (same capture)", gdir, "txt", g_lines, g_ref)
            # A loaded shared machine stretches both walls unevenly: the CPU-seconds ratio is printed beside.
            g_cpu_ratio = CPU[-2 if base else -1] / g_ref_cpu
            qdir = os.path.join(work, "graph-quarter")
            os.makedirs(qdir)
            q_lines = head_copy(gdir, qdir, 0.25)
            q_ref = g_ref * q_lines / g_lines
        else:
            gdir, label = os.path.join(work, "graph"), "seed replay"
            os.makedirs(gdir)
            g_lines = replay_seed(gdir, TARGET)
            per_line_tc = tc_wall / tp_lines
            _, r_full = collect_rows(
                "collect normalize seed replay (no lab capture)", gdir, "txt", g_lines, per_line_tc * g_lines
            )
            qdir = os.path.join(work, "graph-quarter")
            os.makedirs(qdir)
            q_lines = replay_seed(qdir, TARGET // 4)
            q_ref = per_line_tc * q_lines
        w_q, r_q = measure(normalize_cmd(qdir, "txt", work))
        row("collect normalize %s, 1/4 of it" % label, q_lines, w_q, r_q, q_ref)
        print("load average after: %s" % loadavg())
        print()
        print("ratio = collect wall / trace-cmd wall on the same capture (<= 1.0: faster than trace-cmd prints it).")
        if label == "seed replay":
            print(
                "function_graph rows: seed replay, no lab capture in %s (docs/collect.md: how to record it);\n"
                "  their ratio is against trace-cmd's lines/s on the tracepoint capture above." % GRAPH_CAPTURE
            )
        else:
            print("function_graph rows: %s (PROVENANCE.md there); ratio against trace-cmd on the same capture;\n"
                  "  the 1/4 row is its first quarter, ratio against the same share of trace-cmd's time;\n"
                  "  in CPU seconds (user + sys) collect / trace-cmd = %.2f."
                  % (GRAPH_CAPTURE, g_cpu_ratio))  # fmt: skip
        print("memory: peak %.0f MiB for %d lines vs %.0f MiB for %d lines (x%.2f for x%.1f input)"
              % (r_full, g_lines, r_q, q_lines, r_full / r_q, g_lines / q_lines))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
