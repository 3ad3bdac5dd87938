"""A message with its envelope, and the one mail transaction that sends it:
shared by :func:`anysmtp.send` and the pool."""

from __future__ import annotations

import email.message
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from ._client import AsyncSMTP, SendErrors
from ._message import prepare_message

__all__ = ["Envelope", "transaction"]


@dataclass(frozen=True)
class Envelope:
    """A message with its envelope, for :meth:`AsyncSMTPPool.send_many`.

    A message object gives its own envelope (``Sender``/``From``, ``To``,
    ``Cc``, ``Bcc``) unless ``sender`` or ``recipients`` are given; a ``str``
    or ``bytes`` message needs both.  Files and iterators are not accepted: a
    retry must be able to send the message again.

    :param message: the message.
    :param sender: the envelope sender.
    :param recipients: the envelope recipients; a ``str`` is one recipient.
    :param mail_options: ESMTP parameters for MAIL.
    :param rcpt_options: ESMTP parameters for every RCPT.
    :raises TypeError: ``message`` is of another type.
    :raises ValueError: a ``str``/``bytes`` message without ``sender`` and
        ``recipients``.
    """

    message: email.message.Message | str | bytes
    sender: str | None = None
    recipients: str | Sequence[str] | None = None
    mail_options: Sequence[str] = ()
    rcpt_options: Sequence[str] = ()

    def __post_init__(self) -> None:
        if isinstance(self.message, email.message.Message):
            return
        if not isinstance(self.message, str | bytes):
            raise TypeError(
                "message must be an email.message.Message, str or bytes, "
                f"not {type(self.message).__name__}"
            )
        if self.sender is None or self.recipients is None:
            raise ValueError(
                "a str or bytes message needs the sender and recipients arguments"
            )

    def envelope_recipients(self) -> list[str]:
        """The recipients the message goes to (from its headers if not given)."""
        if isinstance(self.recipients, str):
            return [self.recipients]
        if self.recipients is not None:
            return list(self.recipients)
        assert isinstance(self.message, email.message.Message)
        # The flattening is wasted, but this runs only before a retry, and one
        # place decides what the headers' recipients are.
        prepared = prepare_message(
            self.message, self.sender, None, (), smtputf8_supported=lambda: True
        )
        return prepared.recipients


def transaction(
    client: AsyncSMTP, envelope: Envelope, recipients: list[str] | None
) -> Awaitable[SendErrors]:
    """One mail transaction for ``envelope`` (to ``recipients`` if given)."""
    to_addrs = recipients if recipients is not None else envelope.recipients
    if isinstance(envelope.message, email.message.Message):
        return client.send_message(
            envelope.message,
            envelope.sender,
            to_addrs,
            envelope.mail_options,
            envelope.rcpt_options,
        )
    assert envelope.sender is not None
    assert to_addrs is not None
    return client.sendmail(
        envelope.sender,
        to_addrs,
        envelope.message,
        envelope.mail_options,
        envelope.rcpt_options,
    )
