"""Server replies: :class:`SMTPResponse` and the :class:`SMTPStatus` codes."""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["SMTPResponse", "SMTPStatus"]


class SMTPResponse(NamedTuple):
    """A server reply: the 3-digit code and the message.

    It is a tuple, so it compares equal to and unpacks like the ``(code, message)``
    tuples smtplib returns; ``message`` is ``bytes`` as in smtplib, with the lines of
    a multi-line reply joined by ``b"\\n"``.  ``code`` is ``-1`` when the server sent
    a line that does not start with a number (smtplib's convention).
    """

    code: int
    message: bytes

    @property
    def text(self) -> str:
        """The message decoded as UTF-8 (invalid bytes replaced)."""
        return self.message.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """Whether the code is a positive completion (2xx)."""
        return 200 <= self.code <= 299

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class SMTPStatus(enum.IntEnum):
    """Reply codes defined by RFC 5321 and its extensions."""

    invalid_response = -1
    system_status_ok = 211
    help_message = 214
    ready = 220
    closing = 221
    auth_successful = 235
    completed = 250
    will_forward = 251
    cannot_vrfy = 252
    auth_continue = 334
    start_input = 354
    domain_unavailable = 421
    mailbox_unavailable = 450
    error_processing = 451
    insufficient_storage = 452
    tls_not_available = 454
    unrecognized_command = 500
    unrecognized_parameters = 501
    command_not_implemented = 502
    bad_command_sequence = 503
    parameter_not_implemented = 504
    domain_does_not_accept_mail = 521
    access_denied = 530
    auth_failed = 535
    mailbox_does_not_exist = 550
    user_not_local = 551
    storage_exceeded = 552
    mailbox_name_invalid = 553
    transaction_failed = 554
    syntax_error = 555
