"""How the ``anysmtp`` command line fails: exit statuses and one-line messages.

Every failure the command line reports is a :class:`CliError`, which carries
the exit status and a one-line message (plus optional detail lines, such as the
refused recipients).  The ``classify_*`` functions turn the library's
exceptions into those errors by the phase in which they happened: the same
:exc:`~smtplib.SMTPNotSupportedError` is a TLS problem while connecting and an
authentication problem while logging in.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Mapping, Sequence
from typing import NoReturn

from ._errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPNotSupportedError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)

__all__ = [
    "EXIT_STATUS_HELP",
    "CliError",
    "ExitCode",
    "classify_auth_error",
    "classify_connect_error",
    "classify_transaction_error",
    "describe_refusals",
    "describe_reply",
    "no_starttls",
    "raise_classified",
    "refused_connection",
]


class ExitCode(enum.IntEnum):
    """The exit status of ``anysmtp``: one value per class of failure."""

    OK = 0
    #: Another SMTP error: a reply the command line has no better name for.
    ERROR = 1
    #: Bad options, unreadable input, a missing optional dependency.
    USAGE = 2
    #: Cannot connect, TLS failed or not verified, timeout, connection lost.
    CONNECTION = 3
    #: The server refused the credentials, or offers no usable AUTH.
    AUTH = 4
    #: Nothing was delivered: the sender, every recipient or the message was
    #: refused.
    REFUSED = 5
    #: Delivered, but some recipients were refused.
    PARTIAL = 6
    #: Ctrl-C.
    INTERRUPTED = 130


EXIT_STATUS_HELP = """\
exit status:
  0    success
  1    another SMTP error (an unexpected reply)
  2    usage error: bad options, unreadable input, missing optional dependency
  3    connection or TLS error: cannot connect, certificate not verified,
       STARTTLS required but not offered, timeout, connection lost
  4    authentication failed: credentials refused, or no usable AUTH
  5    not sent: the sender, every recipient or the message was refused
  6    sent, but some recipients were refused (listed on stderr)
  130  interrupted (Ctrl-C)"""


class CliError(Exception):
    """A failure to report: a one-line message, detail lines, an exit status.

    :param status: the exit status.
    :param message: one line, without the ``anysmtp:`` prefix.
    :param details: more lines, printed indented under the message.
    """

    def __init__(
        self, status: ExitCode, message: str, details: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = list(details)


def describe_reply(code: int, message: bytes | str) -> str:
    """A server reply on one line: ``550 5.1.1 no such user``."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}".strip()


def _reply_of(exc: SMTPResponseException) -> str:
    return describe_reply(exc.smtp_code, exc.smtp_error)


def describe_refusals(refused: Mapping[str, tuple[int, bytes]]) -> list[str]:
    """One line per refused recipient: ``a@b: 550 5.1.1 no such user``."""
    return [
        f"{address}: {describe_reply(code, text)}"
        for address, (code, text) in refused.items()
    ]


def refused_connection(where: str, code: int, message: bytes | str) -> CliError:
    """The greeting was not 220."""
    return CliError(
        ExitCode.CONNECTION,
        f"{where} refused the connection: {describe_reply(code, message)}",
    )


def no_starttls(where: str) -> CliError:
    """``--starttls`` and a server that does not offer it."""
    return CliError(
        ExitCode.CONNECTION,
        f"{where} does not offer STARTTLS, and --starttls requires it",
    )


def raise_classified(exc: BaseException, error: CliError | None) -> NoReturn:
    """Raise what a ``classify_*`` function made of ``exc``, or ``exc`` itself
    when it is of no kind the command line reports (a bug: a traceback).

    Call it in the ``except`` clause that caught ``exc``.
    """
    if error is None:
        raise exc
    raise error from None


def _network_error(exc: BaseException, where: str, connecting: bool) -> CliError | None:
    """The connection and TLS failures, whatever the phase; ``None`` for others."""
    status = ExitCode.CONNECTION
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CliError(
            status,
            f"the TLS certificate of {where} could not be verified: "
            f"{exc.verify_message or exc.reason} (--cafile trusts a private CA)",
        )
    if isinstance(exc, SMTPTLSError):
        return CliError(
            status,
            f"TLS with {where} failed: {exc} (here: --tls speaks TLS at once, "
            "--starttls upgrades a plain connection)",
        )
    if isinstance(exc, ssl.SSLError):
        return CliError(status, f"TLS with {where} failed: {exc.reason or exc}")
    if isinstance(exc, SMTPConnectTimeoutError):
        return CliError(status, f"timed out connecting to {where}")
    if isinstance(exc, SMTPTimeoutError):
        return CliError(status, f"timed out waiting for {where} to answer")
    if isinstance(exc, SMTPServerDisconnected):
        return CliError(status, f"{where} closed the connection ({exc})")
    if isinstance(exc, OSError) and not isinstance(exc, SMTPException):
        reason = exc.strerror or str(exc) or type(exc).__name__
        verb = "cannot connect to" if connecting else "connection to"
        suffix = "" if connecting else " failed"
        return CliError(status, f"{verb} {where}{suffix}: {reason}")
    return None


def classify_connect_error(exc: BaseException, where: str) -> CliError | None:
    """An error while connecting, upgrading to TLS or greeting: exit status 3.

    :returns: ``None`` for an exception that is not a connection failure.
    """
    return _network_error(exc, where, connecting=True) or _session_error(exc, where)


def _session_error(exc: BaseException, where: str) -> CliError | None:
    if isinstance(exc, SMTPNotSupportedError):
        return no_starttls(where)
    if isinstance(exc, SMTPConnectError):
        # The greeting, when an upgrade or a login was due.
        return refused_connection(where, exc.smtp_code, exc.smtp_error)
    if isinstance(exc, SMTPResponseException):
        return CliError(
            ExitCode.CONNECTION, f"{where} refused the session: {_reply_of(exc)}"
        )
    return None


def classify_auth_error(
    exc: BaseException, where: str, over_tls: bool
) -> CliError | None:
    """An error while logging in: exit status 4 (3 for a lost connection).

    :param over_tls: whether the connection was encrypted (for a hint).
    :returns: ``None`` for an exception of another kind.
    """
    return _network_error(exc, where, connecting=False) or _auth_error(
        exc, where, over_tls
    )


def _auth_error(exc: BaseException, where: str, over_tls: bool) -> CliError | None:
    if isinstance(exc, SMTPAuthenticationError):
        return CliError(ExitCode.AUTH, f"authentication failed: {_reply_of(exc)}")
    if isinstance(exc, SMTPNotSupportedError):
        hint = (
            ""
            if over_tls
            else " (servers often offer it only over TLS: try --starttls or --tls)"
        )
        return CliError(ExitCode.AUTH, f"{where} does not offer AUTH{hint}")
    if isinstance(exc, SMTPException) and not isinstance(exc, SMTPResponseException):
        return CliError(ExitCode.AUTH, f"authentication failed: {exc}")
    return None


def classify_transaction_error(exc: BaseException, where: str) -> CliError | None:
    """An error while sending a message: exit status 5 (3 for a lost
    connection, 1 for an unexpected reply).

    :returns: ``None`` for an exception of another kind.
    """
    return _network_error(exc, where, connecting=False) or _transaction_error(
        exc, where
    )


def _transaction_error(exc: BaseException, where: str) -> CliError | None:
    if isinstance(exc, SMTPRecipientsRefused):
        return CliError(
            ExitCode.REFUSED,
            "not sent: every recipient was refused",
            describe_refusals(exc.recipients),
        )
    if isinstance(exc, SMTPSenderRefused):
        # The null sender (bounces) is the empty address: name it as MAIL does.
        sender = exc.sender or "<>"
        return CliError(
            ExitCode.REFUSED,
            f"not sent: the sender {sender} was refused: {_reply_of(exc)}",
        )
    if isinstance(exc, SMTPDataError):
        return CliError(
            ExitCode.REFUSED, f"not sent: the message was refused: {_reply_of(exc)}"
        )
    if isinstance(exc, SMTPNotSupportedError):
        return CliError(ExitCode.REFUSED, f"not sent: {exc}")
    if isinstance(exc, SMTPResponseException):
        return CliError(
            ExitCode.ERROR, f"unexpected reply from {where}: {_reply_of(exc)}"
        )
    if isinstance(exc, SMTPException):
        return CliError(ExitCode.ERROR, f"{where}: {exc}")
    return None
