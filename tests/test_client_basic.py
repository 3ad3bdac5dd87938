"""AsyncSMTP against aiosmtpd, on every backend: what the server received."""

from __future__ import annotations

from email.message import EmailMessage

import anyio
import pytest

import anysmtp
from tests.servers import AiosmtpdServer, ScriptedConnection, ScriptedServer, drain

pytestmark = pytest.mark.anyio


async def test_sendmail_delivers_exact_bytes(smtpd: AiosmtpdServer) -> None:
    async with anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port) as smtp:
        refused = await smtp.sendmail(
            "alice@example.com",
            ["bob@example.com", "carol@example.com"],
            b"Subject: test\r\n\r\n.leading dot\r\nline\r\n",
        )
    assert refused == {}
    [message] = smtpd.messages
    assert message.mail_from == "alice@example.com"
    assert message.rcpt_tos == ["bob@example.com", "carol@example.com"]
    assert message.data == b"Subject: test\r\n\r\n.leading dot\r\nline\r\n"


async def test_send_message_object(smtpd: AiosmtpdServer) -> None:
    message = EmailMessage()
    message["From"] = "root@localhost"
    message["To"] = "somebody@example.com"
    message["Bcc"] = "hidden@example.com"
    message["Subject"] = "Hello World!"
    message.set_content("Sent via anysmtp")
    refused, reply = await anysmtp.send(message, hostname=smtpd.host, port=smtpd.port)
    assert (refused, reply) == ({}, "OK: queued")
    [received] = smtpd.messages
    assert received.rcpt_tos == ["somebody@example.com", "hidden@example.com"]
    assert b"Bcc" not in received.data
    assert received.data.endswith(b"Sent via anysmtp\r\n")


async def test_tasks_sharing_a_client_take_turns(smtpd: AiosmtpdServer) -> None:
    async with (
        anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port) as smtp,
        anyio.create_task_group() as group,
    ):
        for index in range(5):
            message = EmailMessage()
            message["From"] = f"sender{index}@example.com"
            message["To"] = "rcpt@example.com"
            message.set_content(f"message {index}")
            group.start_soon(smtp.send_message, message)
    assert sorted(m.mail_from for m in smtpd.messages) == [
        f"sender{index}@example.com" for index in range(5)
    ]


async def test_last_data_response(smtpd: AiosmtpdServer) -> None:
    async with anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port) as smtp:
        before = smtp.last_data_response
        await smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\n")
        after = smtp.last_data_response
    assert (before, after) == (None, (250, b"OK: queued"))
    with anysmtp.SMTP(smtpd.host, smtpd.port) as sync_smtp:
        sync_smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: y\r\n\r\n")
        assert sync_smtp.last_data_response == (250, b"OK: queued")
    assert len(smtpd.messages) == 2


async def test_refused_greeting_stops_async_with_and_send() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"554 5.7.1 go away\r\n")
        drain(conn)

    with ScriptedServer(script, connections=2) as server:
        client = anysmtp.AsyncSMTP(hostname=server.host, port=server.port)
        with pytest.raises(anysmtp.SMTPConnectError) as caught:
            async with client:
                raise AssertionError("entered")
        assert (caught.value.smtp_code, caught.value.smtp_error) == (
            554,
            b"5.7.1 go away",
        )
        assert not client.is_connected
        with pytest.raises(anysmtp.SMTPConnectError):
            await anysmtp.send(
                b"Subject: x\r\n\r\n",
                sender="a@example.com",
                recipients=["b@example.com"],
                hostname=server.host,
                port=server.port,
            )
    # Nothing was sent after the refused greeting.
    assert server.transcript == b""
