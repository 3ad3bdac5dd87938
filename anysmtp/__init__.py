"""anysmtp: a drop-in, smtplib-compatible SMTP client with one async core.

``import anysmtp as smtplib`` gives smtplib's names with smtplib's behaviour
(the sync facade); :class:`AsyncSMTP`, :class:`AsyncLMTP` and :func:`send` are
the async API, which runs under asyncio, uvloop and trio.
"""

from __future__ import annotations

import smtplib as _smtplib
from collections.abc import Callable as _Callable
from smtplib import LMTP_PORT, OLDSTYLE_AUTH, SMTP_PORT, SMTP_SSL_PORT, quotedata

from ._api import send
from ._client import DEFAULT_TIMEOUT, AsyncLMTP, AsyncSMTP, AsyncSMTP_SSL, TokenProvider
from ._errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPGreetingTimeoutError,
    SMTPHeloError,
    SMTPMessageTooLarge,
    SMTPNoRecipientsError,
    SMTPNotSupportedError,
    SMTPReadTimeoutError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from ._pool import (
    AsyncSMTPPool,
    ConnectionOptions,
    Envelope,
    SendResult,
    SMTPFinalReplyLostError,
    SMTPPoolClosedError,
    SMTPServerUnreachableError,
    send_many,
)
from ._protocol import _MAXLINE as _MAXLINE
from ._protocol import CRLF, bCRLF, quoteaddr
from ._response import SMTPResponse, SMTPStatus
from ._sync import LMTP, SMTP, SMTP_SSL
from ._sync_pool import SMTPPool

__version__ = "0.1.0.dev0"

_MAXCHALLENGE = 5
# smtplib's private helpers that code in the wild imports, by identity (typeshed
# does not declare them).
_have_ssl: bool = _smtplib._have_ssl  # type: ignore[attr-defined]
_fix_eols: _Callable[[str], str] = _smtplib._fix_eols  # type: ignore[attr-defined]
_quote_periods: _Callable[[bytes], bytes] = _smtplib._quote_periods  # type: ignore[attr-defined]
_addr_only: _Callable[[str], str] = _smtplib._addr_only  # type: ignore[attr-defined]

__all__ = [
    "CRLF",
    "DEFAULT_TIMEOUT",
    "LMTP",
    "LMTP_PORT",
    "OLDSTYLE_AUTH",
    "SMTP",
    "SMTPAuthenticationError",
    "SMTPConnectError",
    "SMTPConnectTimeoutError",
    "SMTPDataError",
    "SMTPException",
    "SMTPFinalReplyLostError",
    "SMTPGreetingTimeoutError",
    "SMTPHeloError",
    "SMTPMessageTooLarge",
    "SMTPNoRecipientsError",
    "SMTPNotSupportedError",
    "SMTPPool",
    "SMTPPoolClosedError",
    "SMTPServerUnreachableError",
    "SMTPReadTimeoutError",
    "SMTPRecipientsRefused",
    "SMTPResponse",
    "SMTPResponseException",
    "SMTPSenderRefused",
    "SMTPServerDisconnected",
    "SMTPStatus",
    "SMTPTLSError",
    "SMTPTimeoutError",
    "SMTP_PORT",
    "SMTP_SSL",
    "SMTP_SSL_PORT",
    "AsyncLMTP",
    "AsyncSMTP",
    "AsyncSMTP_SSL",
    "AsyncSMTPPool",
    "ConnectionOptions",
    "Envelope",
    "SendResult",
    "TokenProvider",
    "bCRLF",
    "quoteaddr",
    "quotedata",
    "send",
    "send_many",
]
