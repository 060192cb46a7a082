"""`python -m collect SUBCOMMAND ...` — one entry point; each subcommand lives in the module that does the work.

Extension point: a module exposing ``register(subparsers)`` adds its subcommand(s) there, setting
``func=callable(args) -> exit code`` with ``set_defaults``. Add the module to SUBCOMMAND_MODULES (one line).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from collect.normalize import NormalizeError

SUBCOMMAND_MODULES = [
    "collect.summary",
    "collect.compare",
    "collect.report",
    "collect.perfetto",
    "collect.fleet_cli",
    "collect.gdb_stacks",
]


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m collect", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except NormalizeError as e:
        print("collect: error: %s" % e, file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head`
        return 0
