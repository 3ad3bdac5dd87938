"""The ``anysmtp`` command line: ``send``, ``probe`` and ``server``.

``main`` builds the parser, runs the subcommand and turns every expected
failure (a :class:`~anysmtp._cli_common.CliError`) into one line on stderr and
its exit status; see ``anysmtp --help`` for the list.  Only a bug shows a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__, _cli_probe, _cli_send, _cli_server
from ._cli_errors import EXIT_STATUS_HELP, CliError, ExitCode

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
Send mail, probe SMTP servers and run a local debugging server, with anysmtp.
Run 'anysmtp COMMAND --help' for the options of each command."""


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="anysmtp",
        description=_DESCRIPTION,
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", required=True
    )
    _cli_send.add_parser(subparsers)
    _cli_probe.add_parser(subparsers)
    _cli_server.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    :param argv: the arguments, ``sys.argv[1:]`` when ``None``.
    :returns: the exit status.
    """
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except CliError as exc:
        lines = [f"anysmtp: {exc.message}", *(f"  {line}" for line in exc.details)]
        print("\n".join(lines), file=sys.stderr, flush=True)
        return int(exc.status)
    except KeyboardInterrupt:
        print("anysmtp: interrupted", file=sys.stderr, flush=True)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`anysmtp probe ... | head -1`): not an error worth
        # a traceback, and flushing stdout again at exit would raise once more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return int(ExitCode.ERROR)
    return int(status)
