"""One-shot helpers on top of the client: :func:`send`."""

from __future__ import annotations

import email.message
import os
import socket
import ssl
from collections.abc import Sequence

from ._client import DEFAULT_TIMEOUT, AsyncSMTP, TokenProvider
from ._envelope import Envelope, transaction
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
    use_tls: bool = False,
    start_tls: bool | None = None,
    validate_certs: bool = True,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
    cert_bundle: str | os.PathLike[str] | None = None,
    tls_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    username: str | None = None,
    password: str | None = None,
    oauth_token: str | TokenProvider | None = None,
    pipelining: bool = True,
    chunking: bool = True,
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
    :param port: the server's port (default 465 with ``use_tls``, 587 with
        ``start_tls=True``, else 25).
    :param local_hostname: the name sent with EHLO.
    :param source_address: ``(host, port)`` to bind to before connecting.
    :param timeout: seconds for connecting and for each command.
    :param socket_path: connect to this Unix domain socket instead of TCP.
    :param sock: use this already-connected socket.
    :param use_tls: speak TLS from the start (port 465).
    :param start_tls: ``None`` upgrades with STARTTLS when offered, ``True``
        requires it, ``False`` never upgrades.
    :param validate_certs: verify the server's certificate and host name.
    :param client_cert: a PEM file with a client certificate (and its key).
    :param client_key: a PEM file with the client certificate's key.
    :param cert_bundle: a PEM file of CA certificates to trust.
    :param tls_context: an :class:`ssl.SSLContext` to use as it is.
    :param server_hostname: the name for SNI and certificate verification.
    :param username: log in as this user.
    :param password: the password for ``username``.
    :param oauth_token: an OAuth token, or a function returning one, instead of
        a password.
    :param pipelining: pipeline the transaction when the server offers
        PIPELINING (RFC 2920).
    :param chunking: send with BDAT when the server offers CHUNKING (RFC 3030).
    :returns: the refused recipients with the server's replies, and the text of
        the server's reply to the message.
    :raises ValueError: a ``str``/``bytes`` message without ``sender`` and
        ``recipients``, or conflicting connection options.
    :raises TypeError: ``message`` is of another type.
    :raises SMTPException: as :meth:`AsyncSMTP.sendmail`.
    """
    envelope = Envelope(
        message, sender, recipients, mail_options or (), rcpt_options or ()
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
        use_tls=use_tls,
        start_tls=start_tls,
        validate_certs=validate_certs,
        client_cert=client_cert,
        client_key=client_key,
        cert_bundle=cert_bundle,
        tls_context=tls_context,
        server_hostname=server_hostname,
        username=username,
        password=password,
        oauth_token=oauth_token,
        pipelining=pipelining,
        chunking=chunking,
    )
    async with client:
        refused = await transaction(client, envelope, None)
        final = client.last_data_response
    replies = {
        address: SMTPResponse(code, text) for address, (code, text) in refused.items()
    }
    return replies, final.text if final is not None else ""
