"""aiosmtplib's user guide, ported: the examples that use TLS.

Each runs with ``aiosmtplib`` replaced by ``anysmtp`` and ``SMTP`` by
``AsyncSMTP``, against an aiosmtpd server with a trustme certificate instead of
Gmail; the only other change is ``tls_context=`` so that the private CA is
trusted (verification stays on).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

import anysmtp
from anysmtp import AsyncSMTP
from tests.conftest import Certificates
from tests.servers import AiosmtpdServer

pytestmark = pytest.mark.anyio


def hello_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "root@localhost"
    message["To"] = "somebody@example.com"
    message["Subject"] = "Hello World!"
    message.set_content("Sent via aiosmtplib")
    return message


@pytest.fixture
def implicit_tls(certs: Certificates) -> Iterator[AiosmtpdServer]:
    with AiosmtpdServer(implicit_tls=certs.server_context()) as server:
        yield server


@pytest.fixture
def starttls(certs: Certificates) -> Iterator[AiosmtpdServer]:
    with AiosmtpdServer(tls_context=certs.server_context(), require_starttls=True) as s:
        yield s


async def test_usage_connecting_over_tls(
    implicit_tls: AiosmtpdServer, certs: Certificates
) -> None:
    # await send(message, hostname="smtp.gmail.com", port=465, use_tls=True)
    message = hello_message()
    await anysmtp.send(
        message,
        hostname=implicit_tls.host,
        port=implicit_tls.port,
        use_tls=True,
        tls_context=certs.client_context(),
    )
    assert implicit_tls.messages[0].rcpt_tos == ["somebody@example.com"]


async def test_usage_starttls_connections(
    starttls: AiosmtpdServer, certs: Certificates
) -> None:
    # await send(message, hostname="smtp.gmail.com", port=587, start_tls=True)
    message = hello_message()
    await anysmtp.send(
        message,
        hostname=starttls.host,
        port=starttls.port,
        start_tls=True,
        tls_context=certs.client_context(),
    )
    assert starttls.messages[0].rcpt_tos == ["somebody@example.com"]


async def test_client_connecting_over_tls(
    implicit_tls: AiosmtpdServer, certs: Certificates
) -> None:
    smtp_client = AsyncSMTP(
        hostname=implicit_tls.host,
        port=implicit_tls.port,
        use_tls=True,
        tls_context=certs.client_context(),
    )
    await smtp_client.connect()
    assert isinstance(smtp_client.sock, ssl.SSLSocket)
    await smtp_client.send_message(hello_message())
    await smtp_client.quit()
    assert len(implicit_tls.messages) == 1


async def test_client_starttls_the_old_way(
    starttls: AiosmtpdServer, certs: Certificates
) -> None:
    # The older docs: connect with use_tls=False, then call starttls().
    smtp_client = AsyncSMTP(
        hostname=starttls.host,
        port=starttls.port,
        use_tls=False,
        tls_context=certs.client_context(),
    )
    await smtp_client.connect()
    code, _ = await smtp_client.starttls()
    assert code == 220
    assert isinstance(smtp_client.sock, ssl.SSLSocket)
    await smtp_client.send_message(hello_message())
    await smtp_client.quit()
    assert len(starttls.messages) == 1
