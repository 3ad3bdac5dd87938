"""AsyncSMTP against aiosmtpd, on every backend: what the server received."""

from __future__ import annotations

from email.message import EmailMessage

import anyio
import pytest

import anysmtp
from tests.servers import AiosmtpdServer

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
