"""``anysmtp server``: a local SMTP server that shows what it receives.

It is for trying the library and the command line without a real server:
every message is printed (envelope and message) on stdout, or saved into a
Maildir.  It needs aiosmtpd (``pip install 'anysmtp[server]'``), which is not a
dependency of the library, so it is imported only when the command runs.
Status lines (the address it listens on, "stopped") go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import os
import signal
import socket
import sys
import weakref
from typing import Any, BinaryIO

from ._cli_common import (
    add_command,
    format_address,
    listening_port,
    require_module,
)
from ._cli_errors import CliError, ExitCode

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
A local SMTP server for trying anysmtp: it accepts every message and prints
it with its envelope on stdout, or saves it into a Maildir (--maildir).  It
prints the address it listens on to stderr when it is ready (--port 0 picks a
free port) and stops cleanly on Ctrl-C or SIGTERM.  It needs aiosmtpd:
pip install 'anysmtp[server]'."""

_EPILOG = """\
Messages saved into a Maildir get two header lines in front: Return-Path
(the envelope sender) and X-Envelope-To (the envelope recipients, Bcc
included).

exit status:
  0    stopped by Ctrl-C or SIGTERM
  2    usage error, or aiosmtpd is not installed
  3    cannot listen on the address"""


def add_parser(subparsers: Any) -> None:
    """Add ``server`` to the command line's subcommands.

    :param subparsers: what :meth:`argparse.ArgumentParser.add_subparsers`
        returned.
    """
    parser = add_command(
        subparsers,
        "server",
        summary="run a local debugging server that prints what it receives",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        run=run,
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (%(default)s)"
    )
    parser.add_argument(
        "--port",
        type=listening_port,
        default=8025,
        help="the port to listen on (%(default)s; 0 picks a free one)",
    )
    parser.add_argument(
        "--maildir",
        metavar="DIR",
        help="save each message into this Maildir (created if missing) "
        "instead of printing it",
    )
    parser.add_argument(
        "--hostname",
        default=socket.gethostname(),
        help="the name the server greets with (default: this machine's name)",
    )


class _Handler:
    """The aiosmtpd handler: print or save each message."""

    def __init__(self, out: BinaryIO, maildir: mailbox.Maildir | None) -> None:
        self.out = out
        self.maildir = maildir
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or b""
        sender = str(envelope.mail_from)
        recipients = [str(each) for each in envelope.rcpt_tos]
        self.count += 1  # taken back below if the message cannot be saved
        # Maildir files and terminals both use LF line endings.
        text = data.replace(b"\r\n", b"\n")
        if self.maildir is not None:
            envelope_lines = (
                f"Return-Path: <{sender}>\nX-Envelope-To: {', '.join(recipients)}\n"
            ).encode("utf-8", "surrogateescape")
            try:
                key = self.maildir.add(envelope_lines + text)
            except OSError as exc:
                self.count -= 1
                return f"451 4.3.0 cannot save the message: {exc.strerror or exc}"
            self._write(
                f"saved message {self.count} as {key}: from {sender} to "
                f"{', '.join(recipients)} ({len(data)} bytes)\n".encode()
            )
            return f"250 OK: saved as {key}"
        peer = session.peer
        source = (
            format_address(str(peer[0]), int(peer[1]))
            if isinstance(peer, tuple)
            else str(peer)
        )
        head = (
            f"---------- message {self.count} from {source} ----------\n"
            f"MAIL FROM: {sender}\n"
            f"RCPT TO: {', '.join(recipients)}\n"
            f"SIZE: {len(data)} bytes\n\n"
        ).encode("utf-8", "surrogateescape")
        tail = b"" if text.endswith(b"\n") or not text else b"\n"
        tail += f"---------- end of message {self.count} ----------\n".encode()
        self._write(head + text + tail)
        return "250 OK: message printed"

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()


async def _serve(args: argparse.Namespace, handler: _Handler) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # Windows: Ctrl-C arrives as KeyboardInterrupt instead
    sessions: weakref.WeakSet[asyncio.Protocol] = weakref.WeakSet()

    def new_session() -> asyncio.Protocol:
        protocol: asyncio.Protocol = SMTP(
            handler,
            hostname=args.hostname,
            ident="anysmtp debugging server",
            enable_SMTPUTF8=True,
        )
        sessions.add(protocol)
        return protocol

    try:
        server = await loop.create_server(new_session, host=args.host, port=args.port)
    except OSError as exc:
        raise CliError(
            ExitCode.CONNECTION,
            f"cannot listen on {format_address(args.host, args.port)}: "
            f"{exc.strerror or exc}",
        ) from None
    addresses = ", ".join(
        format_address(*each.getsockname()[:2]) for each in server.sockets
    )
    print(
        f"anysmtp server: listening on {addresses} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        server.close()
        # Connected clients would keep wait_closed() waiting (Python 3.12+).
        for protocol in list(sessions):
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.close()
        await server.wait_closed()


def run(args: argparse.Namespace) -> int:
    """Run ``anysmtp server`` until Ctrl-C or SIGTERM.

    :returns: the exit status.
    :raises CliError: aiosmtpd is missing, the Maildir or the address is unusable.
    """
    require_module(
        "aiosmtpd.smtp", "anysmtp server needs aiosmtpd: pip install 'anysmtp[server]'"
    )
    maildir = None
    if args.maildir is not None:
        try:
            if os.path.exists(args.maildir) and not os.path.isdir(args.maildir):
                raise NotADirectoryError(20, "not a directory")
            # mailbox.Maildir makes tmp/new/cur only for a path that does not
            # exist yet: an existing empty directory (mkdir mail) needs them.
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(args.maildir, sub), exist_ok=True)
            maildir = mailbox.Maildir(args.maildir, create=False)
        except OSError as exc:
            raise CliError(
                ExitCode.USAGE,
                f"--maildir: cannot use {args.maildir}: {exc.strerror or exc}",
            ) from None
    handler = _Handler(sys.stdout.buffer, maildir)
    try:
        asyncio.run(_serve(args, handler))
    except KeyboardInterrupt:
        pass
    plural = "" if handler.count == 1 else "s"
    print(
        f"anysmtp server: stopped ({handler.count} message{plural})",
        file=sys.stderr,
        flush=True,
    )
    return ExitCode.OK
