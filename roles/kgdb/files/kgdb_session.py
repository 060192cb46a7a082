#!/usr/bin/env python3
"""Run a declarative gdb session against a guest kernel and write its hits as JSON.

    kgdb_session.py check   --session s.yml                       validate only (no gdb, no guest)
    kgdb_session.py run     --session s.json --vmlinux V --target 127.0.0.1:1234 --guest-banner-file F --out O
    kgdb_session.py release --target 127.0.0.1:1234               detach a guest left stopped by a killed gdb

`run` re-executes itself inside `gdb -batch -nx` (the runner needs gdb's Python) and exits with the runner's code:
0 hits captured, 2 refused (bad session/symbol/mismatched vmlinux: guest untouched), 3 no hit before the
deadline, 4 error during the session, 5 transport unreachable. The guest is continued and gdb detached on every
path after connecting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ENV_ARGS = "KGDB_SESSION_ARGS"


def load_session(path):
    with open(path) as fh:
        text = fh.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        import yaml  # YAML sessions for hand use; the role always passes JSON

        return yaml.safe_load(text)


def gdb_command(args, payload_path) -> list[str]:
    cmd = [args.gdb, "-batch", "-nx"]
    for d in args.auto_load_dir:
        # Must precede loading the vmlinux, or gdb declines vmlinux-gdb.py and the lx-* helpers are missing.
        cmd += ["-iex", f"add-auto-load-safe-path {d}"]
    cmd += ["-iex", "set auto-load python-scripts on" if args.auto_load_dir else "set auto-load python-scripts off"]
    cmd += ["-ex", f"python import os; os.environ['{ENV_ARGS}'] = {payload_path!r}", "-x", os.path.abspath(__file__)]
    return cmd


def cli(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    chk = sub.add_parser("check", help="validate a session file and print it normalised")
    chk.add_argument("--session", required=True)
    run = sub.add_parser("run", help="run a session in gdb -batch")
    run.add_argument("--session", required=True)
    run.add_argument("--vmlinux", required=True)
    run.add_argument("--target", required=True, help="host:port of the gdbstub or the KGDB serial (127.0.0.1 only)")
    run.add_argument("--transport", choices=("gdbstub", "kgdb"), default="gdbstub")
    run.add_argument("--guest-banner-file", required=True, help="the guest's /proc/version")
    run.add_argument("--out", required=True, help="JSON record to write")
    run.add_argument("--state-file", help="one line: 'armed …' once the guest runs with breakpoints, 'finished …'")
    run.add_argument("--auto-load-dir", action="append", default=[], help="trusted dir with vmlinux-gdb.py")
    run.add_argument("--substitute-path", nargs=2, action="append", default=[], metavar=("FROM", "TO"))
    run.add_argument("--gdb", default="gdb")
    run.add_argument(
        "--trace-buffer",
        help="tracefs instance (or 'global') being traced: each hit records its time on that buffer's trace clock",
    )
    run.add_argument("--preflight", action="store_true", help="all refusal checks, never connect")
    rel = sub.add_parser("release", help="connect and detach: resumes a guest a killed gdb left stopped")
    rel.add_argument("--target", required=True)
    rel.add_argument("--gdb", default="gdb")
    args = ap.parse_args(argv)

    sys.path.insert(0, HERE)
    from kgdb_gdb import schema

    if args.cmd == "check":
        try:
            print(json.dumps(schema.normalize(load_session(args.session)), indent=1))
        except (schema.SessionError, OSError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 2
        return 0
    if args.cmd == "release":
        detach = ["-ex", "set confirm off", "-ex", f"target remote {args.target}", "-ex", "detach"]
        proc = subprocess.run(
            [args.gdb, "-batch", "-nx", *detach],
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(proc.stdout + proc.stderr, end="")
        return proc.returncode
    if not args.target.startswith(("127.0.0.1:", "localhost:", "[::1]:")):
        print(f"--target {args.target}: debug listeners are bound to 127.0.0.1 only", file=sys.stderr)
        return 2
    try:
        with open(args.guest_banner_file) as fh:
            banner = fh.read()
        payload = {
            "session": load_session(args.session),
            "vmlinux": os.path.abspath(args.vmlinux),
            "target": args.target,
            "transport": args.transport,
            "guest_banner": banner,
            "out": os.path.abspath(args.out),
            "state_file": args.state_file and os.path.abspath(args.state_file),
            "substitute_paths": args.substitute_path,
            "preflight": args.preflight,
            "trace_buffer": args.trace_buffer,
        }
    except (OSError, ValueError) as exc:
        print(f"kgdb_session: {exc}", file=sys.stderr)
        return 2
    payload_path = os.path.abspath(args.out) + ".args.json"
    with open(payload_path, "w") as fh:
        json.dump(payload, fh)
    try:
        proc = subprocess.run(gdb_command(args, payload_path), check=False)
    finally:
        os.unlink(payload_path)
    try:
        with open(args.out) as fh:
            record = json.load(fh)
        print(f"{record['status']}: {record['message']}", file=sys.stderr if proc.returncode else sys.stdout)
    except (OSError, ValueError):
        print(f"gdb exited {proc.returncode} without writing {args.out}", file=sys.stderr)
        return proc.returncode or 4
    return proc.returncode


def in_gdb() -> None:
    sys.path.insert(0, HERE)
    import gdb
    from kgdb_gdb import runner

    with open(os.environ[ENV_ARGS]) as fh:
        rc = runner.main(json.load(fh))
    # Safe: runner.main has detached already, so quit cannot kill the target.
    gdb.execute(f"quit {rc}")


if __name__ == "__main__":
    if "gdb" in sys.modules or ENV_ARGS in os.environ:
        in_gdb()
    else:
        sys.exit(cli())
