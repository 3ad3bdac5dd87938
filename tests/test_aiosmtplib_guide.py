"""aiosmtplib's user guide, ported: every example without TLS or authentication.

The examples of aiosmtplib's ``usage.rst`` and ``client.rst`` with
``aiosmtplib`` replaced by ``anysmtp`` and ``SMTP`` by ``AsyncSMTP``; the
server's address is the test server's instead of ``127.0.0.1:1025``, and
``event_loop.run_until_complete(...)`` becomes ``await``, so that each runs on
every backend.  Everything else, the messages included, is as the guide has it.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

import anysmtp
from anysmtp import AsyncSMTP
from tests.servers import AiosmtpdServer, ReceivedMessage, RecordingHandler

pytestmark = pytest.mark.anyio

#: What the server received for the guide's ``EmailMessage`` (usage.rst,
#: "Sending Message Objects", and client.rst's async context manager example).
EMAIL_MESSAGE_DATA = (
    b"From: root@localhost\r\n"
    b"To: somebody@example.com\r\n"
    b"Subject: Hello World!\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"MIME-Version: 1.0\r\n"
    b"\r\n"
    b"Sent via aiosmtplib\r\n"
)


def connected(client: AsyncSMTP) -> bool:
    # A function, not the property: mypy keeps a property narrowed by an
    # assert across the awaits that change it.
    return client.is_connected


def only_message(server: AiosmtpdServer) -> ReceivedMessage:
    """The one message the server received, with the guide's envelope."""
    [received] = server.messages
    assert received.mail_from == "root@localhost"
    assert received.rcpt_tos == ["somebody@example.com"]
    return received


def check_multipart(received: ReceivedMessage) -> None:
    """The guide's multipart/alternative message, as the server received it."""
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["From"] == "root@localhost"
    assert parsed["To"] == "somebody@example.com"
    assert parsed["Subject"] == "Hello World!"
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed.is_multipart()
    parts = list(parsed.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert [part.get_content_charset() for part in parts] == ["utf-8", "utf-8"]
    assert [part.get_payload(decode=True) for part in parts] == [
        b"hello",
        b"<html><body><h1>Hello</h1></body></html>",
    ]
    assert b"\r\n" in received.data
    assert b"\n" not in received.data.replace(b"\r\n", b"")


# usage.rst ---------------------------------------------------------------------


async def test_usage_sending_message_objects(smtpd: AiosmtpdServer) -> None:
    async def send_hello_world() -> tuple[dict[str, anysmtp.SMTPResponse], str]:
        message = EmailMessage()
        message["From"] = "root@localhost"
        message["To"] = "somebody@example.com"
        message["Subject"] = "Hello World!"
        message.set_content("Sent via aiosmtplib")

        return await anysmtp.send(message, hostname=smtpd.host, port=smtpd.port)

    result = await send_hello_world()

    # aiosmtplib's send() returns (refused recipients, the final reply's text).
    assert result == ({}, "OK: queued")
    refused: object = result[0]
    final: object = result[1]
    assert type(refused) is dict
    assert type(final) is str
    assert only_message(smtpd).data == EMAIL_MESSAGE_DATA


async def test_usage_multipart_messages(smtpd: AiosmtpdServer) -> None:
    message = MIMEMultipart("alternative")
    message["From"] = "root@localhost"
    message["To"] = "somebody@example.com"
    message["Subject"] = "Hello World!"

    plain_text_message = MIMEText("hello", "plain", "utf-8")
    html_message = MIMEText("<html><body><h1>Hello</h1></body></html>", "html", "utf-8")
    message.attach(plain_text_message)
    message.attach(html_message)

    # The guide builds the message for send(); this sends it.
    result = await anysmtp.send(message, hostname=smtpd.host, port=smtpd.port)

    assert result == ({}, "OK: queued")
    check_multipart(only_message(smtpd))


async def test_usage_sending_raw_messages(smtpd: AiosmtpdServer) -> None:
    async def send_hello_world() -> tuple[dict[str, anysmtp.SMTPResponse], str]:
        message = """To: somebody@example.com
    From: root@localhost
    Subject: Hello World!

    Sent via aiosmtplib
    """

        return await anysmtp.send(
            message,
            sender="root@localhost",
            recipients=["somebody@example.com"],
            hostname=smtpd.host,
            port=smtpd.port,
        )

    result = await send_hello_world()

    assert result == ({}, "OK: queued")
    # The guide's indentation is kept: the lines after the first are sent
    # indented, line endings made CRLF, and a CRLF added after the last one.
    data = only_message(smtpd).data
    assert data == (
        b"To: somebody@example.com\r\n"
        b"    From: root@localhost\r\n"
        b"    Subject: Hello World!\r\n"
        b"\r\n"
        b"    Sent via aiosmtplib\r\n"
        b"    \r\n"
    )
    # So a mail reader sees one folded To header: the envelope is what counts.
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed.keys() == ["To"]


async def test_send_returns_the_final_reply_text() -> None:
    handler = RecordingHandler(data_reply="250 2.0.0 Ok: queued as 4BX1Y2")
    with AiosmtpdServer(handler) as server:
        message = EmailMessage()
        message["From"] = "root@localhost"
        message["To"] = "somebody@example.com"
        message["Subject"] = "Hello World!"
        message.set_content("Sent via aiosmtplib")
        result = await anysmtp.send(message, hostname=server.host, port=server.port)
    assert result == ({}, "2.0.0 Ok: queued as 4BX1Y2")
    assert only_message(server).data == EMAIL_MESSAGE_DATA


async def test_send_returns_refused_recipients_and_final_reply_text() -> None:
    handler = RecordingHandler(refused_recipients={"nobody@example.com"})
    with AiosmtpdServer(handler) as server:
        refused, final = await anysmtp.send(
            "Subject: partly refused\r\n\r\nhello\r\n",
            sender="root@localhost",
            recipients=["somebody@example.com", "nobody@example.com"],
            hostname=server.host,
            port=server.port,
        )
    assert refused == {"nobody@example.com": (550, b"5.1.1 no such user")}
    assert final == "OK: queued"
    assert only_message(server).data == b"Subject: partly refused\r\n\r\nhello\r\n"


# client.rst --------------------------------------------------------------------


async def test_client_connecting_to_an_smtp_server(smtpd: AiosmtpdServer) -> None:
    client = AsyncSMTP()
    response = await client.connect(hostname=smtpd.host, port=smtpd.port)

    try:
        assert connected(client)
        assert response.code == 220
        assert response.message.startswith(b"testserver ")
        assert client.get_transport_info("peername")[:2] == (smtpd.host, smtpd.port)
    finally:
        # The guide leaves the connection open; a test must not.
        assert (await client.quit()).code == 221
    assert not connected(client)
    assert smtpd.messages == []


async def test_client_async_context_manager(smtpd: AiosmtpdServer) -> None:
    async def say_hello() -> AsyncSMTP:
        message = EmailMessage()
        message["From"] = "root@localhost"
        message["To"] = "somebody@example.com"
        message["Subject"] = "Hello World!"
        message.set_content("Sent via aiosmtplib")

        smtp_client = AsyncSMTP(hostname=smtpd.host, port=smtpd.port)
        async with smtp_client:
            assert smtp_client.is_connected
            await smtp_client.send_message(message)
        return smtp_client

    smtp_client = await say_hello()

    assert not smtp_client.is_connected
    assert only_message(smtpd).data == EMAIL_MESSAGE_DATA


async def test_client_send_message(smtpd: AiosmtpdServer) -> None:
    mime_message = MIMEText("Sent via aiosmtplib")
    mime_message["From"] = "root@localhost"
    mime_message["To"] = "somebody@example.com"
    mime_message["Subject"] = "Hello World!"

    async def send_with_send_message(message: MIMEText) -> None:
        smtp_client = AsyncSMTP(hostname=smtpd.host, port=smtpd.port)
        await smtp_client.connect()
        await smtp_client.send_message(message)
        await smtp_client.quit()
        assert not smtp_client.is_connected

    await send_with_send_message(mime_message)

    assert only_message(smtpd).data == (
        b'Content-Type: text/plain; charset="us-ascii"\r\n'
        b"MIME-Version: 1.0\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"From: root@localhost\r\n"
        b"To: somebody@example.com\r\n"
        b"Subject: Hello World!\r\n"
        b"\r\n"
        b"Sent via aiosmtplib\r\n"
    )


async def test_client_send_message_multipart(smtpd: AiosmtpdServer) -> None:
    message = MIMEMultipart("alternative")
    message["From"] = "root@localhost"
    message["To"] = "somebody@example.com"
    message["Subject"] = "Hello World!"

    message.attach(MIMEText("hello", "plain", "utf-8"))
    message.attach(
        MIMEText("<html><body><h1>Hello</h1></body></html>", "html", "utf-8")
    )

    smtp_client = AsyncSMTP(hostname=smtpd.host, port=smtpd.port)
    await smtp_client.connect()
    await smtp_client.send_message(message)
    await smtp_client.quit()

    assert not smtp_client.is_connected
    check_multipart(only_message(smtpd))


sender = "root@localhost"
recipients = ["somebody@example.com"]
message = """To: somebody@example.com
From: root@localhost
Subject: Hello World!

Sent via aiosmtplib
"""


async def test_client_sendmail(smtpd: AiosmtpdServer) -> None:
    async def send_with_sendmail() -> None:
        smtp_client = AsyncSMTP(hostname=smtpd.host, port=smtpd.port)
        await smtp_client.connect()
        await smtp_client.sendmail(sender, recipients, message)
        await smtp_client.quit()

    await send_with_sendmail()

    assert only_message(smtpd).data == (
        b"To: somebody@example.com\r\n"
        b"From: root@localhost\r\n"
        b"Subject: Hello World!\r\n"
        b"\r\n"
        b"Sent via aiosmtplib\r\n"
    )
