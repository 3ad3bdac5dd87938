"""Test servers: aiosmtpd in a thread, and a scripted server for exact wire checks.

Both listen on a loopback socket bound before the server starts (port 0: no
race for a free port; or a Unix socket for the scripted server) and run in their
own thread, independent of the backend the test runs on.

The scripted server misbehaves on demand, from the script, with
:class:`ScriptedConnection`:

* disconnect: :meth:`~ScriptedConnection.disconnect` (an orderly FIN), or return
  from the script (a plain ``close()``, an RST if the client's bytes are unread);
* reset: :meth:`~ScriptedConnection.reset` (an RST, SO_LINGER 0);
* stall: :meth:`~ScriptedConnection.stall` (answer nothing until the client
  gives up; a script that waits on a :class:`threading.Event` instead of
  reading makes a client's large send block);
* trickle: :meth:`~ScriptedConnection.trickle` (one byte per ``send``);
* endless multi-line replies: :meth:`~ScriptedConnection.send_endless`;
* over-long lines, invalid UTF-8: :func:`long_line`, :data:`INVALID_UTF8`, any
  bytes through :meth:`~ScriptedConnection.send`;
* replies before the command: :meth:`~ScriptedConnection.send` before
  :meth:`~ScriptedConnection.expect`;
* extra bytes after the STARTTLS reply: send them with the reply, then
  :meth:`~ScriptedConnection.start_tls`;
* a fault in the middle of a TLS handshake:
  :meth:`~ScriptedConnection.read_tls_record` takes the ClientHello.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple

from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "INVALID_UTF8",
    "AiosmtpdServer",
    "ReceivedMessage",
    "RecordingHandler",
    "ScriptedConnection",
    "ScriptedServer",
    "drain",
    "exchange",
    "long_line",
]

#: A reply line whose text is not UTF-8 (a lone continuation byte, an overlong
#: encoding, a truncated sequence, a surrogate).
INVALID_UTF8 = b"250 caf\xe9 \x80 \xc0\xaf \xe2\x82 \xed\xa0\x80\r\n"


def long_line(length: int, code: bytes = b"250") -> bytes:
    """A single reply line of exactly ``length`` bytes, CRLF included."""
    if length < len(code) + 3:
        raise ValueError(f"a reply line of {length} bytes cannot hold a code")
    return code + b" " + b"x" * (length - len(code) - 3) + b"\r\n"


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


class AuthAttempt(NamedTuple):
    """One AUTH attempt an :class:`Authenticator` saw."""

    mechanism: str
    login: bytes
    over_tls: bool


@dataclass
class Authenticator:
    """aiosmtpd's ``authenticator=``: accepts one user name and password, and
    records every attempt."""

    user: str = "test"
    password: str = "test"
    attempts: list[AuthAttempt] = field(default_factory=list)

    def __call__(
        self,
        server: SMTPServerProtocol,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.attempts.append(
            AuthAttempt(mechanism, auth_data.login, session.ssl is not None)
        )
        expected = (self.user.encode(), self.password.encode())
        # handled=False: aiosmtpd itself answers a failure with its own 535.
        success = (auth_data.login, auth_data.password) == expected
        return AuthResult(success=success, handled=False)


def _listening_socket() -> socket.socket:
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off only
    # on connections whose socket says TCP, and aiosmtpd writes a multi-line
    # reply line by line (each EHLO otherwise waits for a delayed ACK, ~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
    """The server side of one connection, driven by a test's script.

    Every byte read from the client is recorded twice: in the server's shared
    ``transcript`` and in this connection's own :attr:`received`.
    """

    def __init__(self, sock: socket.socket, transcript: bytearray) -> None:
        self.sock = sock
        self._transcript = transcript
        #: What the client sent on this connection (decrypted, under TLS).
        self.received = bytearray()
        self._buffer = b""
        #: Set by read_tls_record(): what follows is TLS, not SMTP.
        self._in_handshake = False

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
            self._record(chunk)
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
        self._in_handshake = False

    def greet_and_ehlo(self, extensions: tuple[bytes, ...] = ()) -> None:
        """The usual opening: a greeting and a reply to EHLO."""
        self.send(b"220 scripted ESMTP\r\n")
        self.expect(b"ehlo ")
        lines = [b"scripted", *extensions]
        reply = b"".join(b"250-" + line + b"\r\n" for line in lines[:-1])
        self.send(reply + b"250 " + lines[-1] + b"\r\n")

    def close(self) -> None:
        self.sock.close()

    def _record(self, chunk: bytes) -> None:
        if self._in_handshake:
            return
        self._transcript += chunk
        self.received += chunk

    # Faults ------------------------------------------------------------------

    def reset(self) -> None:
        """Abort the connection with a TCP reset (SO_LINGER with a zero timeout):
        the client's next read or write fails with ``ECONNRESET``."""
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.sock.close()

    def disconnect(self) -> None:
        """Close the connection in good order: send a FIN at once (under TLS too,
        with no ``close_notify``), then read and record what the client still
        sends until it closes its side, so that the kernel never turns the
        close into a reset because of unread bytes."""
        try:
            # The base class's shutdown: SSLSocket.shutdown would drop the TLS
            # layer, and what follows could no longer be decrypted.
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
            while self.read_line():
                pass
        except OSError:
            pass  # the client reset the connection itself: it is gone too
        finally:
            self.sock.close()

    def stall(self) -> None:
        """Answer nothing more: read (and record) what the client sends until it
        gives up and closes the connection."""
        while self.read_line():
            pass

    def trickle(self, data: bytes, delay: float = 0.0) -> None:
        """Send ``data`` one byte per ``send``, ``delay`` seconds apart (Nagle's
        algorithm off, so each byte can travel in a segment of its own)."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in data:
            self.sock.sendall(bytes([byte]))
            if delay:
                time.sleep(delay)

    def send_endless(self, line: bytes = b"250-" + b"x" * 1018 + b"\r\n") -> int:
        """Send ``line`` over and over (an endless multi-line reply by default)
        until the client goes away.

        :returns: how many bytes were sent.
        """
        sent = 0
        try:
            while True:
                self.sock.sendall(line)
                sent += len(line)
        except OSError:
            return sent

    def read_tls_record(self) -> bytes:
        """Read one whole TLS record (the ClientHello, after a STARTTLS reply): a
        fault can then hit the handshake half-way, after the client's first
        flight and before the server's answer.

        Neither it nor anything read after it (a TLS alert, say) is recorded:
        it is not SMTP.  Only :meth:`start_tls` would start recording again.
        """
        self._in_handshake = True
        header = self.read_exactly(5)
        (length,) = struct.unpack("!H", header[3:5])
        return header + self.read_exactly(length)

    def read_exactly(self, size: int) -> bytes:
        """Read exactly ``size`` bytes (a BDAT chunk, say), recorded as lines
        are."""
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise AssertionError(f"connection closed after {data!r}")
            self._record(chunk)
            data += chunk
        return data


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

    :param script: run on each accepted connection, one after the other.
    :param connections: how many connections to accept.
    :param unix: listen on a Unix domain socket at :attr:`socket_path` (in a
        fresh temporary directory, removed when the server stops) instead of
        TCP; :attr:`port` is then 0.
    """

    host = "127.0.0.1"

    def __init__(
        self, script: Script, connections: int = 1, *, unix: bool = False
    ) -> None:
        self.script = script
        self.connections = connections
        #: Every byte received, all connections together.
        self.transcript = bytearray()
        #: What each connection received, in the order they were accepted.
        self.transcripts: list[bytes] = []
        self.errors: list[BaseException] = []
        self._socket_path: str | None = None
        self._unix_directory: str | None = None
        if unix:
            self._unix_directory = tempfile.mkdtemp(prefix="anysmtp-")
            self._socket_path = os.path.join(self._unix_directory, "smtp.sock")
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.bind(self._socket_path)
            self._sock.listen(64)
            self.port = 0
        else:
            self._sock = _listening_socket()
            self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def socket_path(self) -> str:
        """The Unix socket's path (a server made with ``unix=True``)."""
        if self._socket_path is None:
            raise AttributeError("this server listens on TCP, not a Unix socket")
        return self._socket_path

    def _serve(self) -> None:
        self._sock.settimeout(10)
        try:
            for _ in range(self.connections):
                conn, _address = self._sock.accept()
                conn.settimeout(10)
                if conn.family != socket.AF_UNIX:
                    # Each send leaves at once: with Nagle's algorithm, replies
                    # sent one after the other (to a pipelined batch) would
                    # wait for the client's delayed ACK, ~40 ms each time.
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                scripted = ScriptedConnection(conn, self.transcript)
                try:
                    self.script(scripted)
                except OSError:
                    pass  # the client went away: the test decides if that is ok
                finally:
                    scripted.sock.close()  # a TLS wrapper replaces the socket
                    conn.close()
                    self.transcripts.append(bytes(scripted.received))
        except BaseException as exc:
            self.errors.append(exc)

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._thread.join(15)
        self._close_listener()
        if self.errors:
            raise self.errors[0]

    def _close_listener(self) -> None:
        self._sock.close()
        if self._unix_directory is not None:
            shutil.rmtree(self._unix_directory, ignore_errors=True)

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
            self._close_listener()
