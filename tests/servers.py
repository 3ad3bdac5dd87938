"""Test servers: aiosmtpd in a thread, and a scripted server for exact wire checks.

Both listen on a loopback socket bound before the server starts (port 0: no
race for a free port) and run in their own thread, independent of the backend
the test runs on.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import Envelope, Session

__all__ = [
    "AiosmtpdServer",
    "ReceivedMessage",
    "RecordingHandler",
    "ScriptedConnection",
    "ScriptedServer",
    "drain",
    "exchange",
]


@dataclass
class ReceivedMessage:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    rcpt_options: list[str]
    #: The message after the server undid dot-stuffing, CRLF line endings.
    data: bytes


@dataclass
class RecordingHandler:
    """An aiosmtpd handler that keeps every message and can refuse addresses."""

    messages: list[ReceivedMessage] = field(default_factory=list)
    refused_senders: set[str] = field(default_factory=set)
    refused_recipients: set[str] = field(default_factory=set)
    data_reply: str = "250 OK: queued"

    async def handle_MAIL(
        self,
        server: SMTPServerProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if address in self.refused_senders:
            return "553 5.7.1 sender refused"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTPServerProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refused_recipients:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTPServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content
        assert isinstance(data, bytes)
        self.messages.append(
            ReceivedMessage(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                mail_options=list(envelope.mail_options),
                rcpt_options=list(envelope.rcpt_options),
                data=data,
            )
        )
        return self.data_reply


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


class AiosmtpdServer:
    """aiosmtpd serving on 127.0.0.1 in a thread with its own event loop.

    :param handler: the aiosmtpd handler (a :class:`RecordingHandler` by default).
    :param server_options: keyword arguments for :class:`aiosmtpd.smtp.SMTP`.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        handler: Any = None,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        **server_options: Any,
    ) -> None:
        self.handler = handler if handler is not None else RecordingHandler()
        self.implicit_tls = implicit_tls
        self.server_options: dict[str, Any] = {
            "hostname": "testserver",
            **server_options,
        }
        self._sock = _listening_socket()
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def messages(self) -> list[ReceivedMessage]:
        """What a :class:`RecordingHandler` received so far."""
        messages: list[ReceivedMessage] = self.handler.messages
        return messages

    def start(self) -> AiosmtpdServer:
        self._thread.start()

        async def serve() -> asyncio.Server:
            return await self._loop.create_server(
                lambda: SMTPServerProtocol(self.handler, **self.server_options),
                sock=self._sock,
                ssl=self.implicit_tls,
            )

        self._server = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
            tasks = [
                task
                for task in asyncio.all_tasks()
                if task is not asyncio.current_task()
            ]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> AiosmtpdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ScriptedConnection:
    """The server side of one connection, driven by a test's script."""

    def __init__(self, sock: socket.socket, transcript: bytearray) -> None:
        self.sock = sock
        self._transcript = transcript
        self._buffer = b""

    def send(self, data: bytes) -> None:
        """Send raw bytes to the client."""
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        """Read one line from the client, CRLF included (``b""`` at EOF)."""
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line
            self._transcript += chunk
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def expect(self, prefix: bytes) -> bytes:
        """Read one line and check that it starts with ``prefix`` (any case)."""
        line = self.read_line()
        if not line.lower().startswith(prefix.lower()):
            raise AssertionError(f"expected {prefix!r}, got {line!r}")
        return line

    def read_data(self) -> bytes:
        """Read DATA content up to and including the ``.`` line, as sent."""
        data = b""
        while not (data.endswith(b"\r\n.\r\n") or data == b".\r\n"):
            line = self.read_line()
            if not line:
                raise AssertionError(f"connection closed in DATA after {data!r}")
            data += line
        return data

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Do the server side of a TLS handshake on this connection."""
        if self._buffer:
            raise AssertionError(f"client sent {self._buffer!r} before the handshake")
        self.sock = context.wrap_socket(self.sock, server_side=True)

    def greet_and_ehlo(self, extensions: tuple[bytes, ...] = ()) -> None:
        """The usual opening: a greeting and a reply to EHLO."""
        self.send(b"220 scripted ESMTP\r\n")
        self.expect(b"ehlo ")
        lines = [b"scripted", *extensions]
        reply = b"".join(b"250-" + line + b"\r\n" for line in lines[:-1])
        self.send(reply + b"250 " + lines[-1] + b"\r\n")

    def close(self) -> None:
        self.sock.close()


Script = Callable[[ScriptedConnection], None]


def drain(conn: ScriptedConnection) -> None:
    """Read (and so record) whatever the client still sends until it closes."""
    while conn.read_line():
        pass


def exchange(conn: ScriptedConnection, *steps: tuple[bytes, bytes]) -> None:
    """For each step, expect a command starting with ``prefix`` and answer it."""
    for prefix, reply in steps:
        conn.expect(prefix)
        conn.send(reply)


class ScriptedServer:
    """A loopback server that runs ``script`` on each connection it accepts and
    records every byte the client sent.

    The script runs in a thread with blocking sockets and a 10 second timeout; an
    exception in it (a failed ``expect``) is re-raised by :meth:`stop`.
    """

    host = "127.0.0.1"

    def __init__(self, script: Script, connections: int = 1) -> None:
        self.script = script
        self.connections = connections
        self.transcript = bytearray()
        self.errors: list[BaseException] = []
        self._sock = _listening_socket()
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._sock.settimeout(10)
        try:
            for _ in range(self.connections):
                conn, _address = self._sock.accept()
                conn.settimeout(10)
                scripted = ScriptedConnection(conn, self.transcript)
                try:
                    self.script(scripted)
                except OSError:
                    pass  # the client went away: the test decides if that is ok
                finally:
                    scripted.sock.close()  # a TLS wrapper replaces the socket
                    conn.close()
        except BaseException as exc:
            self.errors.append(exc)

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._thread.join(15)
        self._sock.close()
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
        else:
            self._sock.close()
