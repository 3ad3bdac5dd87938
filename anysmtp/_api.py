"""One-shot helpers on top of the client: :func:`send`."""

from __future__ import annotations

import email.message
import os
import socket
from collections.abc import Awaitable, Callable, Sequence

from ._client import DEFAULT_TIMEOUT, AsyncSMTP, SendErrors
from ._response import SMTPResponse

__all__ = ["send"]


async def send(
    message: email.message.Message | str | bytes,
    /,
    *,
    sender: str | None = None,
    recipients: str | Sequence[str] | None = None,
    mail_options: Sequence[str] | None = None,
    rcpt_options: Sequence[str] | None = None,
    hostname: str | None = "localhost",
    port: int | None = None,
    local_hostname: str | None = None,
    source_address: tuple[str, int] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    socket_path: str | bytes | os.PathLike[str] | None = None,
    sock: socket.socket | None = None,
) -> tuple[dict[str, SMTPResponse], str]:
    """Connect, send one message, and disconnect.

    A message object (:class:`email.message.EmailMessage` or the legacy
    :class:`email.message.Message`) gives its own envelope unless ``sender`` or
    ``recipients`` are given; a ``str`` or ``bytes`` message needs both.

    :param message: the message.
    :param sender: the envelope sender.
    :param recipients: the envelope recipients; a ``str`` is one recipient.
    :param mail_options: ESMTP parameters for MAIL.
    :param rcpt_options: ESMTP parameters for every RCPT.
    :param hostname: the server (default ``"localhost"``).
    :param port: the server's port (default 25).
    :param local_hostname: the name sent with EHLO.
    :param source_address: ``(host, port)`` to bind to before connecting.
    :param timeout: seconds for connecting and for each command.
    :param socket_path: connect to this Unix domain socket instead of TCP.
    :param sock: use this already-connected socket.
    :returns: the refused recipients with the server's replies, and the text of
        the server's reply to the message.
    :raises ValueError: a ``str``/``bytes`` message without ``sender`` and
        ``recipients``, or conflicting connection options.
    :raises TypeError: ``message`` is of another type.
    :raises SMTPException: as :meth:`AsyncSMTP.sendmail`.
    """
    transaction: Callable[[AsyncSMTP], Awaitable[SendErrors]]
    if isinstance(message, email.message.Message):
        email_message = message

        def transaction(client: AsyncSMTP) -> Awaitable[SendErrors]:
            return client.send_message(
                email_message,
                sender,
                recipients,
                mail_options or (),
                rcpt_options or (),
            )

    elif isinstance(message, str | bytes):
        if sender is None or recipients is None:
            raise ValueError(
                "a str or bytes message needs the sender and recipients arguments"
            )
        raw_message, from_addr, to_addrs = message, sender, recipients

        def transaction(client: AsyncSMTP) -> Awaitable[SendErrors]:
            return client.sendmail(
                from_addr, to_addrs, raw_message, mail_options or (), rcpt_options or ()
            )

    else:
        raise TypeError(
            "message must be an email.message.Message, str or bytes, "
            f"not {type(message).__name__}"
        )
    if socket_path is not None or sock is not None:
        hostname = None
    client = AsyncSMTP(
        port=port or 0,
        local_hostname=local_hostname,
        timeout=timeout,
        source_address=source_address,
        hostname=hostname,
        socket_path=socket_path,
        sock=sock,
    )
    async with client:
        refused = await transaction(client)
        final = client._last_data_response
    replies = {
        address: SMTPResponse(code, text) for address, (code, text) in refused.items()
    }
    return replies, final.text if final is not None else ""
