"""The exception hierarchy: smtplib's own classes, plus the additions.

Every smtplib exception is re-exported *by identity*, so ``except smtplib.X`` in
existing code catches what anysmtp raises.  The additions subclass them (and a
builtin where one fits), never replace them.
"""

from __future__ import annotations

import ssl
from smtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupportedError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

__all__ = [
    "SMTPAuthenticationError",
    "SMTPConnectError",
    "SMTPConnectTimeoutError",
    "SMTPDataError",
    "SMTPException",
    "SMTPGreetingTimeoutError",
    "SMTPHeloError",
    "SMTPMessageTooLarge",
    "SMTPNoRecipientsError",
    "SMTPNotSupportedError",
    "SMTPReadTimeoutError",
    "SMTPRecipientsRefused",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPTLSError",
    "SMTPTimeoutError",
]


class SMTPTimeoutError(SMTPException, TimeoutError):
    """An operation did not finish within its timeout.

    It is both an :exc:`smtplib.SMTPException` and a builtin :exc:`TimeoutError`,
    so either ``except`` clause catches it.  The connection is closed when it is
    raised: a late reply can never be mistaken for the answer to a later command.
    """


class SMTPConnectTimeoutError(SMTPTimeoutError):
    """Connecting (TCP, TLS handshake or the server's greeting) timed out."""


class SMTPReadTimeoutError(SMTPTimeoutError, SMTPServerDisconnected):
    """The server did not answer a command (or accept data) within the timeout.

    It is also an :exc:`smtplib.SMTPServerDisconnected`, which is what smtplib
    raises for a read timeout: ``except SMTPServerDisconnected`` keeps working.
    """


class SMTPGreetingTimeoutError(SMTPConnectTimeoutError, SMTPReadTimeoutError):
    """The server accepted the connection but sent no greeting in time.

    A connect timeout for aiosmtplib's users, a disconnection for smtplib's.
    """


class SMTPTLSError(SMTPException, ssl.SSLError):
    """TLS could not be set up, for a reason the message explains.

    It is an :exc:`ssl.SSLError` too, so code written for smtplib still catches
    it.  Certificate verification failures are raised as the standard library's
    :exc:`ssl.SSLCertVerificationError`, unchanged.
    """

    def __str__(self) -> str:
        # ssl.SSLError shows a lone message as a tuple: ('...',).
        if len(self.args) == 1 and isinstance(self.args[0], str):
            return self.args[0]
        return super().__str__()


class SMTPMessageTooLarge(SMTPSenderRefused):
    """The message is larger than the server's SIZE limit (RFC 1870).

    A message whose size is known is refused before anything is sent.  One
    whose size is not known in advance (a stream) stops short of the limit:
    no BDAT chunk goes past it, and the transaction is reset (a server that
    finds a chunk too large half-way may read the rest of it as commands).

    It is an :exc:`smtplib.SMTPSenderRefused` with code 552, what the server
    would have answered to MAIL, so existing ``except`` clauses still apply.
    ``size`` is the message's size, or for a stream the octets it had reached.
    """

    def __init__(
        self, size: int, limit: int, sender: str, *, streamed: bool = False
    ) -> None:
        how = "stopped before the limit" if streamed else "checked before sending"
        message = (
            f"5.3.4 Message size {'of at least ' if streamed else ''}{size} exceeds "
            f"the server's limit of {limit} bytes ({how})"
        ).encode("ascii")
        super().__init__(552, message, sender)
        self.size = size
        self.limit = limit


class SMTPNoRecipientsError(SMTPRecipientsRefused, ValueError):
    """``sendmail`` was given no recipient; nothing was sent.

    smtplib sends MAIL and RSET and raises :exc:`smtplib.SMTPRecipientsRefused`
    with an empty dict; this is that exception (and a :exc:`ValueError`), raised
    before anything reaches the server.
    """

    def __init__(self) -> None:
        super().__init__({})

    def __str__(self) -> str:
        return "no recipients given: nothing was sent"
