"""python -m collect — subcommands are added by the collect modules (summary, compare, report, ...)."""

import sys


def main(argv=None):
    from collect.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
