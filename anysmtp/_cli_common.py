"""What the subcommands share: how a subcommand is added, the connection
options of ``send`` and ``probe`` (server, port, TLS mode, CA file, timeout,
backend), optional dependencies, and the password sources."""

from __future__ import annotations

import argparse
import getpass
import importlib
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._cli_errors import CliError, ExitCode
from ._client import DEFAULT_TIMEOUT, SUBMISSION_PORT, SUBMISSIONS_PORT, AsyncSMTP

__all__ = [
    "PASSWORD_ENV",
    "ConnectionOptions",
    "add_command",
    "add_connection_options",
    "check_backend",
    "connection_options",
    "format_address",
    "listening_port",
    "parse_server",
    "read_password",
    "read_secret_file",
    "require_module",
]

#: The environment variable ``anysmtp send`` takes the password from when no
#: other source is given.
PASSWORD_ENV = "ANYSMTP_PASSWORD"


def _is_port(text: str, lowest: int = 1) -> bool:
    """Whether ``text`` is a port number from ``lowest`` to 65535, in ASCII
    digits (``str.isdigit`` is true of ``²`` too, which ``int`` refuses)."""
    return text.isascii() and text.isdigit() and lowest <= int(text) < 65536


def parse_server(text: str) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``.

    A bare IPv6 address (more than one colon, no brackets) is a host.

    :returns: the host and the port, ``0`` when none is given.
    :raises CliError: an empty host or a port that is not a number in range.
    """
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise CliError(ExitCode.USAGE, f"missing ']' in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise CliError(ExitCode.USAGE, f"unexpected {rest!r} after ']' in {text!r}")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise CliError(ExitCode.USAGE, f"no host in {text!r}")
    if not port_text:
        return host, 0
    if not _is_port(port_text):
        raise CliError(ExitCode.USAGE, f"not a port number: {port_text!r}")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _port_number(text: str) -> int:
    """``--port``: 1 to 65535."""
    if not _is_port(text):
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def listening_port(text: str) -> int:
    """A port to listen on: 0 to 65535 (0 picks a free one)."""
    if not _is_port(text, lowest=0):
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def add_command(
    subparsers: Any,
    name: str,
    *,
    summary: str,
    description: str,
    epilog: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """Add a subcommand that runs ``run``; its help keeps the line breaks of
    ``description`` and ``epilog``, and it takes no abbreviated options.

    :param subparsers: what :meth:`argparse.ArgumentParser.add_subparsers`
        returned.
    :param summary: the one line ``anysmtp --help`` shows for it.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.set_defaults(run=run)
    return parser


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """The options ``send`` and ``probe`` share: port, TLS, timeout, backend."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--port",
        type=_port_number,
        help="the server's port (default: 465 with --tls, 587 with --starttls, "
        "else 25, unless the server is given as host:port)",
    )
    modes = group.add_mutually_exclusive_group()
    for option, mode, what in (
        ("--tls", "tls", "speak TLS from the start (implicit TLS, port 465)"),
        (
            "--starttls",
            "starttls",
            "require STARTTLS: fail if the server does not offer it",
        ),
        (
            "--no-tls",
            "none",
            "never use TLS (default: upgrade with STARTTLS when offered; "
            "without TLS, credentials go only to localhost unless --no-tls)",
        ),
    ):
        modes.add_argument(
            option, dest="tls_mode", action="store_const", const=mode, help=what
        )
    group.add_argument(
        "--cafile",
        metavar="PEM",
        help="trust the CA certificates in this file instead of the system's",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (testing only)",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="for connecting and for each command (default: %(default)g)",
    )
    group.add_argument(
        "--ehlo-name",
        metavar="NAME",
        help="the name to send with EHLO (default: this machine's name)",
    )
    group.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop to run on (trio needs the 'trio' extra)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="print the SMTP transcript on stderr, secrets redacted "
        "(-vv adds timestamps)",
    )


@dataclass(frozen=True)
class ConnectionOptions:
    """Where and how to connect, checked."""

    host: str
    port: int
    tls_mode: str  # "tls", "starttls", "none" or "auto"
    cafile: str | None
    insecure: bool
    timeout: float
    ehlo_name: str | None
    verbose: int

    @property
    def effective_port(self) -> int:
        """The port connected to (the default of the TLS mode when not given)."""
        if self.port:
            return self.port
        if self.tls_mode == "tls":
            return SUBMISSIONS_PORT
        if self.tls_mode == "starttls":
            return SUBMISSION_PORT
        return 25

    @property
    def where(self) -> str:
        """``host:port`` for messages."""
        return format_address(self.host, self.effective_port)

    def client(
        self, *, start_tls: bool | None = None, insecure: bool = False
    ) -> AsyncSMTP:
        """A client for these options (not connected, not logged in).

        :param start_tls: overrides the TLS mode's STARTTLS setting (``probe``
            upgrades on its own).
        :param insecure: do not verify the certificate, whatever the options say.
        """
        if start_tls is None:
            start_tls = {"starttls": True, "none": False}.get(self.tls_mode)
        client = AsyncSMTP(
            hostname=self.host,
            port=self.effective_port,
            local_hostname=self.ehlo_name,
            timeout=self.timeout,
            use_tls=self.tls_mode == "tls",
            start_tls=False if self.tls_mode == "tls" else start_tls,
            validate_certs=not (self.insecure or insecure),
            cert_bundle=self.cafile,
        )
        client.set_debuglevel(self.verbose)
        return client


def connection_options(args: argparse.Namespace, server: str) -> ConnectionOptions:
    """Check the connection options of a parsed command line.

    :param server: ``host[:port]`` as given.
    :raises CliError: a malformed server, conflicting ports, an unreadable CA file.
    """
    host, port = parse_server(server)
    if args.port is not None:
        if port and port != args.port:
            raise CliError(
                ExitCode.USAGE,
                f"two ports given: {server!r} and --port {args.port}",
            )
        port = args.port
    if args.cafile is not None and not os.path.isfile(args.cafile):
        raise CliError(ExitCode.USAGE, f"--cafile: no such file: {args.cafile}")
    if args.cafile is not None:
        try:
            ssl.create_default_context(cafile=args.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(
                ExitCode.USAGE, f"--cafile: not a PEM CA file: {args.cafile} ({exc})"
            ) from None
    if args.ehlo_name is not None and (
        not args.ehlo_name
        or not args.ehlo_name.isascii()
        or any(ch.isspace() or ord(ch) < 32 for ch in args.ehlo_name)
    ):
        raise CliError(
            ExitCode.USAGE, f"--ehlo-name: not a host name: {args.ehlo_name!r}"
        )
    return ConnectionOptions(
        host=host,
        port=port,
        tls_mode=args.tls_mode or "auto",
        cafile=args.cafile,
        insecure=args.insecure,
        timeout=args.timeout,
        ehlo_name=args.ehlo_name,
        verbose=args.verbose,
    )


def require_module(name: str, message: str) -> None:
    """Import an optional dependency, to fail early and clearly without it.

    :raises CliError: ``name`` cannot be imported (status 2, ``message``).
    """
    try:
        importlib.import_module(name)
    except ImportError:
        raise CliError(ExitCode.USAGE, message) from None


def check_backend(name: str) -> None:
    """:raises CliError: the backend's event loop library is not installed."""
    if name == "trio":
        require_module("trio", "--backend trio needs trio: pip install 'anysmtp[trio]'")


def read_secret_file(path: str, what: str) -> str:
    """The first line of a file holding a password or a token.

    :raises CliError: the file cannot be read or its first line is empty.
    """
    try:
        with open(path, encoding="utf-8") as file:
            line = file.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(ExitCode.USAGE, f"cannot read the {what} file: {exc}") from None
    secret = line.rstrip("\r\n")
    if not secret:
        raise CliError(ExitCode.USAGE, f"the {what} file {path} is empty")
    return secret


def read_password(
    password_file: str | None, password_env: str | None, user: str
) -> str:
    """The password from the first source given: ``--password-file``,
    ``--password-env``, ``$ANYSMTP_PASSWORD``, else a prompt on the terminal.

    :raises CliError: the source is missing, or there is no terminal to ask on.
    """
    if password_file is not None:
        return read_secret_file(password_file, "password")
    if password_env is not None:
        value = os.environ.get(password_env)
        if not value:
            raise CliError(
                ExitCode.USAGE,
                f"--password-env: the environment variable {password_env} is not set",
            )
        return value
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            return getpass.getpass(f"Password for {user}: ")
        except EOFError:
            raise CliError(ExitCode.USAGE, "no password given") from None
    raise CliError(
        ExitCode.USAGE,
        f"--user {user} needs a password: use --password-env NAME, --password-file "
        f"PATH or ${PASSWORD_ENV}, or run on a terminal to be asked",
    )
