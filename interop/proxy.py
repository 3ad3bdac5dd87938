"""A recording TCP relay between a client and a server.

The relay records every chunk it reads from either side, in one list, *before*
forwarding it.  So the order of the record is causal: a command recorded
before the server's reply to the previous command was written by a client
that had not seen that reply: that is pipelining (RFC 2920), whatever the
timing.  On a cleartext session the record also shows which commands the
client used (``BDAT`` instead of ``DATA``) and that nothing was sent at all.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal

__all__ = ["Exchange", "RecordingProxy", "Session"]

Side = Literal["client", "server"]
_BDAT: Final = re.compile(rb"BDAT\s+(\d+)(\s+LAST)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Exchange:
    """One client command and the server's final reply to it.

    ``sent_at`` and ``replied_at`` are positions in :attr:`Session.events`:
    comparing them says what the client had seen when it sent a command.
    """

    line: bytes
    #: The event that completed the command line.
    sent_at: int
    #: The final reply's code (after 354 for DATA), or ``None`` if none came.
    code: int | None
    #: The event that completed the final reply, or ``None``.
    replied_at: int | None

    @property
    def verb(self) -> str:
        word = self.line.split(b" ", 1)[0].split(b":", 1)[0]
        return word.decode("ascii", "replace").upper()


@dataclass
class Session:
    """What went over one connection, in the order the relay handled it."""

    #: Each chunk read, by the side that sent it.
    events: list[tuple[Side, bytes]] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)

    def data(self, side: Side) -> bytes:
        """Everything one side sent."""
        return b"".join(chunk for who, chunk in self.events if who == side)

    def _replies(self) -> list[tuple[int, int]]:
        """The server's replies: (code, the event that completed it)."""
        replies: list[tuple[int, int]] = []
        buffer = b""
        for index, (side, chunk) in enumerate(self.events):
            if side != "server":
                continue
            buffer += chunk
            while True:
                line, newline, buffer = buffer.partition(b"\r\n")
                if not newline:
                    buffer = line
                    break
                if line[3:4] != b"-":  # the last line of a reply
                    code = int(line[:3]) if line[:3].isdigit() else 0
                    replies.append((code, index))
        return replies

    def exchanges(self) -> list[Exchange]:
        """The client's commands with the replies, in order, the message
        contents skipped (DATA's up to the final dot, BDAT's counted octets).
        Parsing stops at a STARTTLS the server accepted: the rest is TLS."""
        replies = self._replies()
        client = bytearray()
        #: (end offset in ``client``, event index) of each client chunk.
        chunk_ends: list[tuple[int, int]] = []
        for index, (side, chunk) in enumerate(self.events):
            if side == "client":
                client += chunk
                chunk_ends.append((len(client), index))

        def event_at(offset: int) -> int:
            return next(index for end, index in chunk_ends if end >= offset)

        exchanges: list[Exchange] = []
        position = 0
        next_reply = 1  # replies[0] is the greeting
        while (end := client.find(b"\r\n", position)) >= 0:
            line = bytes(client[position:end])
            position = end + 2
            sent_at = event_at(position)
            reply = replies[next_reply] if next_reply < len(replies) else None
            next_reply += 1
            exchange = Exchange(line, sent_at, *(reply or (None, None)))
            if exchange.verb == "DATA" and exchange.code == 354:
                # The content ends with CRLF . CRLF (the DATA line's CRLF
                # counts for an empty message).
                final = client.find(b"\r\n.\r\n", position - 2)
                if final < 0:
                    exchanges.append(exchange)
                    break
                position = final + 5
                reply = replies[next_reply] if next_reply < len(replies) else None
                next_reply += 1
                exchange = Exchange(line, sent_at, *(reply or (None, None)))
            elif (match := _BDAT.match(line)) is not None:
                position += int(match.group(1))
            exchanges.append(exchange)
            if exchange.verb == "STARTTLS" and exchange.code == 220:
                break
        return exchanges

    def verbs(self) -> list[str]:
        """The client's command verbs, in order."""
        return [exchange.verb for exchange in self.exchanges()]


class RecordingProxy:
    """Listens on 127.0.0.1 and relays each connection to ``upstream``,
    recording a :class:`Session` per connection.

    :param upstream: the server's ``(host, port)``.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sessions: list[Session] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._closing = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            session = Session()
            with self._lock:
                if self._closing:
                    client.close()
                    server.close()
                    return
                self.sessions.append(session)
                self._sockets += [client, server]
            done = threading.Barrier(2, action=session.closed.set)
            for source, sink, side in (
                (client, server, "client"),
                (server, client, "server"),
            ):
                thread = threading.Thread(
                    target=self._relay,
                    args=(source, sink, side, session, done),
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()

    def _relay(
        self,
        source: socket.socket,
        sink: socket.socket,
        side: Side,
        session: Session,
        done: threading.Barrier,
    ) -> None:
        try:
            while True:
                try:
                    chunk = source.recv(1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                # Recorded before it is forwarded: see the module's docstring.
                with self._lock:
                    session.events.append((side, chunk))
                try:
                    sink.sendall(chunk)
                except OSError:
                    break
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait(timeout=30)

    def only_session(self, timeout: float = 10.0) -> Session:
        """The one session relayed so far, once both sides have closed it.

        :raises AssertionError: there was not exactly one, or it stayed open.
        """
        with self._lock:
            sessions = list(self.sessions)
        assert len(sessions) == 1, f"{len(sessions)} sessions through the proxy"
        assert sessions[0].closed.wait(timeout), "the session was not closed"
        return sessions[0]

    def close(self) -> None:
        with self._lock:
            self._closing = True
            sockets = list(self._sockets)
        # shutdown() wakes the thread blocked in accept(); close() alone does not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in sockets:
            # shutdown() also wakes a relay thread blocked in recv().
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)
        self._acceptor.join(5)

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
