"""The floor: the least work an asyncio client can do to send the benchmark's
small messages, with no SMTP library.

It puts the same bytes on the wire as ``anysmtp.AsyncSMTP.sendmail()`` does on
a server that offers PIPELINING and no SIZE (smtp-sink): per message one write
of ``MAIL``, ``RCPT`` and ``DATA``, then one write of the message and its
end-of-data line, and it still checks every reply code.  Those bytes are built
once, before anything is timed, with anysmtp's own functions (so they are the
same by construction).  What it leaves out per message is everything that
makes a library: no address or option checks, no body checks, no parsed
replies or reply-size limits, no timeouts, no locks, no hooks.  Its rate is
what asyncio itself allows on the machine, so the distance to it is what an
asyncio SMTP client could still gain.

Used by ``worker.py`` for the client ``floor-asyncio`` in the scenarios
``small`` and ``concurrent`` only, through the same loops as the async clients
(:class:`FloorClient` offers the methods they call).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Final

from anysmtp._client import default_local_hostname
from anysmtp._protocol import DataEncoder, format_command, mail_path

#: The fourth byte of a reply line that another line of the same reply follows.
_HYPHEN: Final = ord("-")
_RECEIVE_SIZE: Final = 65536


class ReplyError(Exception):
    """The server answered with another code than the one expected."""


class Connection:
    """One connection: a non-blocking socket, the reader that fills its buffer,
    and the wait for replies.

    The reader stays registered for the connection's lifetime, as anysmtp's
    asyncio fast path keeps its reader while a reply is awaited.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.chunk = bytearray(_RECEIVE_SIZE)
        self.view = memoryview(self.chunk)
        #: What arrived and is not yet taken as a reply.
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        #: End of file or a socket error: raised by the next wait.
        self.failure: Exception | None = None
        loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # As anysmtp does: no write of ours waits for an earlier one's ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return cls(loop, sock)

    def _read(self) -> bool:
        """One ``recv_into``: whether it found anything (data, EOF, an error)."""
        try:
            received = self.sock.recv_into(self.chunk)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._fail(exc)
            return True
        if received:
            self.buffer += self.view[:received]
        else:
            self._fail(ConnectionError("the server closed the connection"))
        return True

    def _fail(self, failure: Exception) -> None:
        self.failure = failure
        # A socket at EOF stays readable: the reader would run for ever.
        self.loop.remove_reader(self.sock.fileno())

    def _on_readable(self) -> None:
        if self._read():
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def send(self, data: bytes) -> None:
        """Write ``data``: one ``send()``, which takes all of a small write."""
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            await self.loop.sock_sendall(self.sock, memoryview(data)[sent:])

    async def expect(self, *codes: bytes) -> bytes:
        """Wait for one reply per code in ``codes``, in order.

        A reply ends at a line whose fourth byte is not ``-``.  The socket is
        read first and the reader waited for only when nothing is there (on one
        CPU the server has often answered already).

        :returns: the replies' text.
        :raises ReplyError: a reply does not start with its code.
        """
        buffer = self.buffer
        start = 0
        index = 0
        while True:
            while index < len(codes):
                end = buffer.find(b"\n", start)
                if end < 0:
                    break
                if not (end > start + 3 and buffer[start + 3] == _HYPHEN):
                    if not buffer.startswith(codes[index], start):
                        line = bytes(buffer[start:end]).decode("ascii", "replace")
                        raise ReplyError(
                            f"expected {codes[index].decode()}, got {line.strip()!r}"
                        )
                    index += 1
                start = end + 1
            if index == len(codes):
                text = bytes(buffer[:start])
                del buffer[:start]
                return text
            if self.failure is not None:
                raise self.failure
            if not self._read():
                waiter = self.waiter = self.loop.create_future()
                try:
                    await waiter
                finally:
                    self.waiter = None

    def close(self) -> None:
        if self.failure is None:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class Floor:
    """What one message from one sender to a few recipients puts on the wire,
    built once for every connection of a run: the EHLO line, the envelope, the
    payload and the codes to expect.

    :param sender: the envelope sender.
    :param recipients: the envelope recipients.
    :param message: the message, as ``sendmail()`` takes it in bytes.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        message: bytes,
    ) -> None:
        self.host = host
        self.port = port
        self.ehlo = format_command("ehlo", default_local_hostname()).encode("ascii")
        # anysmtp's pipelined envelope in one write: MAIL, every RCPT, DATA.
        lines = [format_command("mail", f"FROM:{mail_path(sender)}")]
        lines += [
            format_command("rcpt", f"TO:{mail_path(each)}") for each in recipients
        ]
        lines.append(format_command("data"))
        self.envelope = "".join(lines).encode("ascii")
        self.envelope_codes = (b"250",) * (1 + len(recipients)) + (b"354",)
        self.payload = DataEncoder.encode_all(message)

    def client(self) -> FloorClient:
        """A new, unconnected client that sends what was built here."""
        return FloorClient(self)


class FloorClient:
    """One connection of the floor, with the methods the benchmark's async
    loops call on an ``anysmtp.AsyncSMTP`` (``connect``, ``ehlo``,
    ``sendmail``, ``quit``), so that it runs in those same loops.

    These methods are the floor itself, not wrappers around it: a message
    costs the loop one call, as it does for a library client.
    """

    #: Set by :meth:`connect`.
    connection: Connection

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        # On the instance, so that sendmail() finds them in one lookup each.
        self.envelope = floor.envelope
        self.envelope_codes = floor.envelope_codes
        self.payload = floor.payload

    async def connect(self) -> None:
        """Connect and read the greeting."""
        connection = await Connection.open(self.floor.host, self.floor.port)
        try:
            await connection.expect(b"220")
        except BaseException:
            connection.close()
            raise
        self.connection = connection

    async def ehlo(self) -> None:
        """Say EHLO.

        :raises ReplyError: the server does not offer PIPELINING.
        """
        connection = self.connection
        try:
            await connection.send(self.floor.ehlo)
            features = await connection.expect(b"250")
            # Pipelining without the server's leave would not be the same client.
            if b"PIPELINING" not in features.upper():
                raise ReplyError("the server does not offer PIPELINING")
        except BaseException:
            connection.close()
            raise

    async def sendmail(
        self, sender: str, recipients: Sequence[str], message: bytes, /
    ) -> None:
        """One message: the envelope in one write, its replies, the payload in
        one write, its reply.

        The arguments are not read (reading them is the work a library does):
        what goes is what :class:`Floor` built, from the same sender,
        recipients and message as the caller passes.

        :raises ReplyError: a reply has another code than expected (a refused
            recipient among them), so no refusal goes unnoticed.
        """
        connection = self.connection
        await connection.send(self.envelope)
        await connection.expect(*self.envelope_codes)
        await connection.send(self.payload)
        await connection.expect(b"250")

    async def quit(self) -> None:
        connection = self.connection
        try:
            await connection.send(b"quit\r\n")
            await connection.expect(b"221")
        finally:
            connection.close()
