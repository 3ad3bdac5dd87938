"""The main job, end to end: send mail with the sync and the async API.

Starts an aiosmtpd server on a free loopback port, then sends

1. a multipart message with the sync facade, written as unchanged smtplib code
   (``import anysmtp as smtplib``),
2. a message with ``await anysmtp.send(...)`` under asyncio,
3. a message with ``AsyncSMTP`` under trio,

prints what the server received each time, and stops the server.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import anyio
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import Envelope, Session

import anysmtp
import anysmtp as smtplib


class PrintingHandler:
    """Prints each message the server receives."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(
        self, server: SMTPServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        self.count += 1
        content = envelope.original_content or b""
        print(f"  [server] MAIL FROM {envelope.mail_from}  RCPT TO {envelope.rcpt_tos}")
        print(f"  [server] {len(content)} bytes; headers:")
        headers = content.split(b"\r\n\r\n", 1)[0].decode()
        for line in headers.splitlines():
            print(f"  [server]   {line}")
        return "250 OK: message accepted"


class DemoServer:
    """aiosmtpd on 127.0.0.1 in its own thread and event loop."""

    def __init__(self) -> None:
        self.handler = PrintingHandler()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

        async def serve() -> asyncio.Server:
            return await self.loop.create_server(
                lambda: SMTPServerProtocol(self.handler, hostname="demo-server"),
                sock=self.sock,
            )

        self.server = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def send_with_smtplib_code(port: int) -> None:
    """Plain smtplib code; only the import line says anysmtp."""
    msg = MIMEMultipart("alternative")
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg["Subject"] = "Hello from smtplib code"
    msg.attach(MIMEText("Hello, Bob.", "plain", "utf-8"))
    msg.attach(MIMEText("<p>Hello, <b>Bob</b>.</p>", "html", "utf-8"))

    with smtplib.SMTP("127.0.0.1", port) as server:
        server.ehlo()
        refused = server.sendmail(
            "alice@example.com", ["bob@example.com"], msg.as_string()
        )
    print(f"  [client] sendmail() returned {refused!r}")


async def send_with_send_coroutine(port: int) -> None:
    message = EmailMessage()
    message["From"] = "root@localhost"
    message["To"] = "somebody@example.com"
    message["Subject"] = "Hello from anysmtp.send() on asyncio"
    message.set_content("Sent via anysmtp")
    refused, reply = await anysmtp.send(message, hostname="127.0.0.1", port=port)
    print(f"  [client] send() returned {(refused, reply)!r}")


async def send_with_async_client(port: int) -> None:
    message = EmailMessage()
    message["From"] = "carol@example.com"
    message["To"] = "dave@example.com, erin@example.com"
    message["Subject"] = "Hello from AsyncSMTP on trio"
    message.set_content(".a line that starts with a dot survives\nand so does this one")
    async with anysmtp.AsyncSMTP(hostname="127.0.0.1", port=port) as smtp:
        refused = await smtp.send_message(message)
        print(f"  [client] the server offers: {sorted(smtp.esmtp_features)}")
    print(f"  [client] send_message() returned {refused!r}")


def main() -> int:
    server = DemoServer()
    server.start()
    print(f"aiosmtpd listening on 127.0.0.1:{server.port}\n")
    try:
        print("1. sync facade, unchanged smtplib code (import anysmtp as smtplib):")
        send_with_smtplib_code(server.port)
        print("\n2. await anysmtp.send(...) under asyncio:")
        anyio.run(send_with_send_coroutine, server.port, backend="asyncio")
        print("\n3. AsyncSMTP under trio:")
        anyio.run(send_with_async_client, server.port, backend="trio")
    finally:
        server.stop()
    print(f"\nThe server received {server.handler.count} messages; it is stopped.")
    return 0 if server.handler.count == 3 else 1


if __name__ == "__main__":
    sys.exit(main())
