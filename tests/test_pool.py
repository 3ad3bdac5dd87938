"""The connection pool and bulk sending: AsyncSMTPPool, SMTPPool, send_many.

Async tests run on asyncio, uvloop and trio.  Normal sending goes to aiosmtpd;
421s, drops, 4xx/5xx and held replies come from :class:`Mailer`, a small SMTP
responder driven by one :class:`Plan` per transaction and served by
:class:`ConcurrentServer` (tests/servers.py's ScriptedServer serves one
connection at a time, and a pool keeps several open).  Every test checks what
the server received, and the ones that open connections check that none of
the client's sockets is left open.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import math
import os
import re
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import Envelope, Session

import anysmtp
from anysmtp import _pool
from tests.child import run_python
from tests.conftest import ASYNCIO_BACKENDS, Certificates
from tests.servers import (
    AiosmtpdServer,
    Authenticator,
    RecordingHandler,
    ScriptedConnection,
    ScriptedServer,
    drain,
)

pytestmark = pytest.mark.anyio

#: A reply that closes the connection instead of answering.
DROP: Final = b"<drop>"
CRLF: Final = b"\r\n"
SUBJECT = re.compile(rb"^Subject: (.*?)\r$", re.MULTILINE)
#: Short enough that a hung test fails fast, long enough for a loaded machine.
TIMEOUT: Final = 10.0


def message(name: str, to: str = "bob@example.com") -> EmailMessage:
    """A message whose Subject the server-side records identify it by."""
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = to
    msg["Subject"] = name
    msg.set_content(f"This is {name}.\n")
    return msg


# The server ---------------------------------------------------------------------


@dataclass
class Plan:
    """How the server answers one transaction, from MAIL to the final reply."""

    mail: bytes = b"250 2.1.0 ok"
    #: Replies to RCPT by address; the others get 250.
    rcpt: dict[str, bytes] = field(default_factory=dict)
    data: bytes = b"354 go ahead"
    final: bytes = b"250 2.0.0 queued"
    #: Close the connection after the final reply (the client is idle then).
    close_after: bool = False


@dataclass
class Seen:
    """One transaction as the server saw it."""

    connection: int
    sender: str
    #: The recipients the server accepted.
    recipients: list[str] = field(default_factory=list)
    #: The message as sent (dot-stuffed, up to the final ``.`` line).
    data: bytes | None = None
    final: bytes | None = None

    @property
    def subject(self) -> str | None:
        found = SUBJECT.search(self.data or b"")
        return found.group(1).decode() if found else None

    @property
    def delivered(self) -> bool:
        return self.final is not None and self.final.startswith(b"250")


def _address(argument: bytes) -> str:
    return argument.split(b":", 1)[1].split(b">", 1)[0].strip(b" <").decode()


class Mailer:
    """The server's side of SMTP; plans are used in the order MAIL commands
    arrive (any connection), then every transaction gets the default plan.

    :param hold: called (in the server thread) before each final reply; it may
        block, to hold the reply back.
    :param caps: the most MAIL commands each connection takes, by connection
        index (``None``: no cap); the next one gets 421 and the connection
        closes, as Exim's ``smtp_accept_max_per_connection`` does.
    """

    def __init__(
        self,
        *plans: Plan,
        extensions: tuple[bytes, ...] = (b"PIPELINING", b"8BITMIME"),
        greeting: bytes = b"220 test ESMTP",
        hold: Callable[[Seen], None] | None = None,
        caps: Callable[[int], int | None] = lambda index: None,
    ) -> None:
        self.plans = deque(plans)
        self.extensions = extensions
        self.greeting = greeting
        self.hold = hold
        self.caps = caps
        self.seen: list[Seen] = []
        #: The verbs received on each connection, in order.
        self.commands: dict[int, list[str]] = {}
        self._lock = threading.Lock()

    def _plan(self) -> Plan:
        with self._lock:
            return self.plans.popleft() if self.plans else Plan()

    def sessions(self) -> list[list[str]]:
        """The verbs received, one list per connection in connection order."""
        with self._lock:
            return [self.commands[index] for index in sorted(self.commands)]

    def delivered(self) -> list[str]:
        """The subjects of the messages accepted with 250, in order."""
        with self._lock:
            return [seen.subject or "" for seen in self.seen if seen.delivered]

    def __call__(self, conn: ScriptedConnection, index: int) -> None:
        conn.send(self.greeting + CRLF)
        if not self.greeting.startswith(b"220"):
            drain(conn)
            return
        plan = Plan()
        current: Seen | None = None
        received = self.commands.setdefault(index, [])
        cap = self.caps(index)
        mails = 0
        while line := conn.read_line():
            verb, _, argument = line.rstrip(CRLF).partition(b" ")
            verb = verb.upper()
            received.append(verb.decode())
            reply: bytes
            if verb == b"EHLO":
                lines = [b"test", *self.extensions]
                reply = b"".join(b"250-" + each + CRLF for each in lines[:-1])
                reply += b"250 " + lines[-1]
            elif verb == b"HELO":
                reply = b"250 test"
            elif verb == b"MAIL" and current is not None:
                reply = b"503 5.5.1 nested MAIL command"
            elif verb == b"MAIL" and cap is not None and mails >= cap:
                reply = b"421 4.7.0 too many messages in this connection"
            elif verb == b"MAIL":
                mails += 1
                plan = self._plan()
                current = Seen(index, _address(argument))
                with self._lock:
                    self.seen.append(current)
                reply = plan.mail
                if not reply.startswith(b"250"):
                    current = None
            elif verb == b"RCPT":
                address = _address(argument)
                reply = b"503 5.5.1 need MAIL"
                if current is not None:
                    reply = plan.rcpt.get(address, b"250 2.1.5 ok")
                    if reply.startswith(b"25"):
                        current.recipients.append(address)
            elif verb == b"DATA":
                reply = b"554 5.5.1 no valid recipients"
                if current is not None and current.recipients:
                    reply = plan.data
                if reply.startswith(b"354"):
                    assert current is not None
                    conn.send(reply + CRLF)
                    current.data = conn.read_data()
                    if self.hold is not None:
                        self.hold(current)
                    reply = plan.final
                    if reply != DROP:
                        current.final = reply
                    current = None
            elif verb == b"BDAT":
                size, _, last = argument.partition(b" ")
                chunk = conn.read_exactly(int(size))
                reply = b"503 5.5.1 no valid recipients"
                if current is not None and current.recipients:
                    current.data = (current.data or b"") + chunk
                    reply = b"250 2.0.0 chunk received"
                    if last.strip().upper() == b"LAST":
                        if self.hold is not None:
                            self.hold(current)
                        reply = plan.final
                        if reply != DROP:
                            current.final = reply
                        current = None
            elif verb == b"RSET":
                current = None
                reply = b"250 2.0.0 reset"
            elif verb == b"NOOP":
                reply = b"250 2.0.0 ok"
            elif verb == b"QUIT":
                conn.send(b"221 2.0.0 bye\r\n")
                return
            else:
                reply = b"500 5.5.2 what?"
            if reply == DROP:
                return
            conn.send(reply + CRLF)
            if reply.startswith(b"421"):
                drain(conn)  # the client closes; nothing it sent is cut off
                return
            if verb in (b"DATA", b"BDAT") and plan.close_after:
                return


class ConcurrentServer:
    """A loopback server that serves each connection in its own thread with
    ``handler(conn, index)``, and counts connections.

    :param capacity: connections served at once; more are greeted with 421
        and closed.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        handler: Callable[[ScriptedConnection, int], None],
        *,
        capacity: int | None = None,
    ) -> None:
        self.handler = handler
        self.capacity = capacity
        #: What the client sent on each served connection.
        self.transcripts: list[bytearray] = []
        self.refused = 0
        self.active = 0
        self.max_active = 0
        self.closed = 0
        self.errors: list[BaseException] = []
        self._condition = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def connections(self) -> int:
        """How many connections were served (not refused with 421)."""
        return len(self.transcripts)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(TIMEOUT)
            with self._condition:
                busy = self.capacity is not None and self.active >= self.capacity
                if busy:
                    self.refused += 1
                else:
                    self.active += 1
                    self.max_active = max(self.max_active, self.active)
                    index = len(self.transcripts)
                    self.transcripts.append(bytearray())
            if busy:
                with contextlib.suppress(OSError):
                    sock.sendall(b"421 4.7.0 too many connections\r\n")
                sock.close()
                continue
            thread = threading.Thread(
                target=self._serve, args=(sock, index), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        conn = ScriptedConnection(sock, self.transcripts[index])
        try:
            self.handler(conn, index)
        except OSError:
            pass  # the client went away
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            sock.close()
            with self._condition:
                self.active -= 1
                self.closed += 1
                self._condition.notify_all()

    def wait_closed(self, count: int) -> None:
        """Block until ``count`` served connections have been closed."""
        with self._condition:
            assert self._condition.wait_for(lambda: self.closed >= count, TIMEOUT)

    def __enter__(self) -> ConcurrentServer:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._acceptor.join(TIMEOUT)
        for thread in self._threads:
            thread.join(TIMEOUT)
        self._sock.close()
        if exc is None and self.errors:
            raise self.errors[0]


# Sockets ---------------------------------------------------------------------------


def client_sockets(port: int) -> int:
    """How many of this process's file descriptors are TCP sockets connected to
    ``port`` on loopback (the client side of our connections)."""
    inodes: set[str] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name, encoding="ascii") as table:
            for row in list(table)[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
    return count


@contextlib.contextmanager
def no_leaked_sockets(port: int) -> Iterator[None]:
    """Fail if a client socket to ``port`` is still open at the end."""
    assert client_sockets(port) == 0
    yield
    assert client_sockets(port) == 0


def pool_for(
    server: ConcurrentServer | AiosmtpdServer, **options: Any
) -> anysmtp.AsyncSMTPPool:
    settings: dict[str, Any] = {
        "timeout": TIMEOUT,
        "local_hostname": "client",
        "start_tls": False,
        "reconnect_backoff": 0.01,
        **options,
    }
    return anysmtp.AsyncSMTPPool(server.host, server.port, **settings)


def no_backoff(retry: int) -> float:
    return 0.0


# Reuse and limits: aiosmtpd -------------------------------------------------------


@dataclass
class PeerRecorder(RecordingHandler):
    """Also records the client's address of each message: one per connection."""

    peers: list[object] = field(default_factory=list)

    async def handle_DATA(
        self, server: SMTPServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        self.peers.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def recorder() -> Iterator[AiosmtpdServer]:
    with AiosmtpdServer(PeerRecorder()) as server:
        yield server


def peers(server: AiosmtpdServer) -> set[object]:
    """The client addresses the messages came from: one per connection."""
    handler = server.handler
    assert isinstance(handler, PeerRecorder)
    return set(handler.peers)


async def test_send_many_delivers_everything_in_input_order(
    recorder: AiosmtpdServer,
) -> None:
    messages = [message(f"m{index}", to=f"r{index}@example.com") for index in range(25)]
    with no_leaked_sockets(recorder.port):
        async with pool_for(recorder, max_size=4) as pool:
            results = await pool.send_many(messages)
            assert pool.connections_opened <= 4
    assert [result.index for result in results] == list(range(25))
    assert {result.status for result in results} == {"sent"}
    assert {result.attempts for result in results} == {1}
    assert all(result.response == (250, b"OK: queued") for result in results)
    received = {each.rcpt_tos[0]: each.data for each in recorder.messages}
    assert len(recorder.messages) == 25
    for index, msg in enumerate(messages):
        assert received[f"r{index}@example.com"] == msg.as_bytes().replace(
            b"\n", b"\r\n"
        )
    assert len(peers(recorder)) == pool.connections_opened


async def test_connections_are_reused(recorder: AiosmtpdServer) -> None:
    with no_leaked_sockets(recorder.port):
        async with pool_for(recorder, max_size=5) as pool:
            for index in range(6):
                refused, reply = await pool.send(message(f"m{index}"))
                assert (refused, reply) == ({}, "OK: queued")
            async with pool.connection() as smtp:
                assert await smtp.noop() == (250, b"OK")
                assert await smtp.sendmail("a@example.com", "b@example.com", b"x") == {}
            assert pool.size == 1
            assert pool.idle == 1
    # One after the other: one connection did everything.
    assert pool.connections_opened == 1
    assert len(peers(recorder)) == 1
    assert len(recorder.messages) == 7
    assert pool.size == 0


async def test_str_and_bytes_messages_need_an_envelope(
    recorder: AiosmtpdServer,
) -> None:
    async with pool_for(recorder) as pool:
        with pytest.raises(ValueError, match="sender and recipients"):
            await pool.send(b"Subject: x\r\n\r\nhi\r\n")
        refused, _ = await pool.send(
            "Subject: x\r\n\r\nhi\r\n",
            sender="a@example.com",
            recipients=["b@example.com"],
            mail_options=["BODY=8BITMIME"],
        )
        assert refused == {}
    assert recorder.messages[0].mail_options == ["SIZE=18", "BODY=8BITMIME"]
    assert recorder.messages[0].data == b"Subject: x\r\n\r\nhi\r\n"


async def test_never_more_connections_than_max_size() -> None:
    # The first message of each connection waits until three connections have
    # one: a pool that opened fewer would stall here (and fail).
    barrier = threading.Barrier(3, timeout=TIMEOUT)
    firsts: set[int] = set()

    def hold(seen: Seen) -> None:
        if seen.connection not in firsts:
            firsts.add(seen.connection)
            barrier.wait()

    mailer = Mailer(hold=hold)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_size=3) as pool:
            results = await pool.send_many(
                [message(f"m{index}") for index in range(15)], concurrency=8
            )
    assert [result.status for result in results] == ["sent"] * 15
    assert server.connections == 3
    assert server.max_active == 3
    assert sorted(mailer.delivered()) == sorted(f"m{index}" for index in range(15))


async def test_max_messages_per_connection_retires_with_quit() -> None:
    mailer = Mailer()
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_messages_per_connection=2) as pool:
            for index in range(5):
                await pool.send(message(f"m{index}"))
    assert server.connections == 3
    assert [each.count("MAIL") for each in mailer.sessions()] == [2, 2, 1]
    assert all(each[-1] == "QUIT" for each in mailer.sessions())
    assert mailer.delivered() == [f"m{index}" for index in range(5)]


async def test_server_limits_mailmax_is_respected() -> None:
    mailer = Mailer(extensions=(b"PIPELINING", b"LIMITS MAILMAX=3"))
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server) as pool:
            results = await pool.send_many(
                [message(f"m{index}") for index in range(7)], concurrency=1
            )
    assert {result.status for result in results} == {"sent"}
    assert [each.count("MAIL") for each in mailer.sessions()] == [3, 3, 1]


async def test_messages_sent_through_a_borrowed_connection_count_too() -> None:
    mailer = Mailer()
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_messages_per_connection=2) as pool:
            async with pool.connection() as smtp:
                await smtp.send_message(message("m0"))
                await smtp.send_message(message("m1"))
            # The limit was reached inside the block: retired when given back.
            assert pool.size == 0
            await pool.send(message("m2"))
    transaction = ["MAIL", "RCPT", "DATA"]
    assert mailer.sessions() == [
        ["EHLO", *transaction, *transaction, "QUIT"],
        ["EHLO", *transaction, "QUIT"],
    ]
    assert mailer.delivered() == ["m0", "m1", "m2"]


@pytest.mark.parametrize(
    "send_mail",
    [
        pytest.param(
            lambda smtp: smtp.docmd("MAIL FROM:<alice@example.com>"), id="docmd-line"
        ),
        pytest.param(
            lambda smtp: smtp.docmd("mail", "FROM:<alice@example.com>"),
            id="docmd-verb",
        ),
        pytest.param(
            lambda smtp: smtp.putcmd("Mail", "FROM:<alice@example.com>"), id="putcmd"
        ),
    ],
)
async def test_a_mail_command_sent_by_hand_counts_too(
    send_mail: Callable[[anysmtp.AsyncSMTP], Any],
) -> None:
    # Servers count MAIL commands, however the client sends them.
    mailer = Mailer()
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_messages_per_connection=1) as pool:
            async with pool.connection() as smtp:
                assert await smtp.noop() == (250, b"2.0.0 ok")  # not a MAIL
                reply = await send_mail(smtp)
                if reply is None:  # putcmd: the reply is still to be read
                    reply = await smtp.getreply()
                assert reply == (250, b"2.1.0 ok")
                assert await smtp.rcpt("bob@example.com") == (250, b"2.1.5 ok")
                assert await smtp.data(message("m0").as_bytes()) == (
                    250,
                    b"2.0.0 queued",
                )
            # One MAIL, the limit: retired when given back.
            assert (pool.size, pool.idle) == (0, 0)
            await pool.send(message("m1"))
    assert mailer.sessions() == [
        ["EHLO", "NOOP", "MAIL", "RCPT", "DATA", "QUIT"],
        ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"],
    ]
    assert mailer.delivered() == ["m0", "m1"]
    assert server.connections == 2


# Health checks and idle connections ------------------------------------------------


SESSION: Final = ["EHLO", "MAIL", "RCPT", "DATA"]


@pytest.mark.parametrize(
    ("health_check", "expected"),
    [
        ("noop", [[*SESSION, "NOOP", *SESSION[1:], "QUIT"]]),
        (None, [[*SESSION, *SESSION[1:], "QUIT"]]),
        ("reconnect", [[*SESSION, "QUIT"], [*SESSION, "QUIT"]]),
    ],
)
async def test_health_check_of_an_idle_connection(
    health_check: _pool.HealthCheck, expected: list[list[str]]
) -> None:
    mailer = Mailer()
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        # health_check_after=0: every reuse counts as "after idle".
        async with pool_for(
            server, health_check=health_check, health_check_after=0
        ) as pool:
            await pool.send(message("first"))
            await pool.send(message("second"))
    assert mailer.sessions() == expected
    assert mailer.delivered() == ["first", "second"]


def one_message(conn: ScriptedConnection, answer_after: float = 0) -> None:
    """Greeting, EHLO with PIPELINING, and one message accepted, its final
    reply ``answer_after`` seconds late."""
    conn.greet_and_ehlo((b"PIPELINING",))
    conn.expect(b"MAIL")
    conn.expect(b"RCPT")
    conn.expect(b"DATA")
    conn.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.read_data()
    time.sleep(answer_after)
    conn.send(b"250 queued\r\n")


async def test_failed_noop_opens_another_connection() -> None:
    def script(conn: ScriptedConnection, index: int) -> None:
        if index == 0:
            one_message(conn)
            conn.expect(b"NOOP")
            conn.send(b"421 4.3.2 shutting down\r\n")
            drain(conn)
        else:
            Mailer()(conn, index)

    with ConcurrentServer(script) as server, no_leaked_sockets(server.port):
        async with pool_for(server, health_check_after=0) as pool:
            await pool.send(message("first"))
            assert await pool.send(message("second")) == ({}, "2.0.0 queued")
    assert server.connections == 2


async def test_idle_timeout_closes_old_connections_with_quit() -> None:
    mailer = Mailer()
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, idle_timeout=0) as pool:
            await pool.send(message("first"))
            await pool.send(message("second"))
            assert pool.connections_opened == 2
    assert mailer.sessions() == [[*SESSION, "QUIT"], [*SESSION, "QUIT"]]
    assert mailer.delivered() == ["first", "second"]


async def test_connection_closed_by_the_server_while_idle_is_replaced() -> None:
    mailer = Mailer(Plan(close_after=True))
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, health_check=None) as pool:
            await pool.send(message("first"))
            await anyio.to_thread.run_sync(server.wait_closed, 1)
            results = await pool.send_many([message("second")], backoff=no_backoff)
    # Noticed before use: nothing was sent on the dead connection.
    assert results[0].attempts == 1
    assert mailer.sessions() == [SESSION, [*SESSION, "QUIT"]]
    assert mailer.delivered() == ["first", "second"]


async def test_connection_its_server_is_closing_while_idle_is_replaced() -> None:
    # The server says 421 and waits for the client to close.  On asyncio the
    # connection's parked reader has read the 421 before the pool looks: the
    # socket itself has nothing more to read.
    said = threading.Event()

    def script(conn: ScriptedConnection, index: int) -> None:
        if index:
            Mailer()(conn, index)
            return
        # The client waits for the last reply: its reader is on.
        one_message(conn, answer_after=0.05)
        conn.send(b"421 4.3.2 shutting down\r\n")
        said.set()
        drain(conn)

    with ConcurrentServer(script) as server, no_leaked_sockets(server.port):
        async with pool_for(server, health_check=None) as pool:
            await pool.send(message("first"))
            await anyio.to_thread.run_sync(said.wait, 5)
            await anyio.sleep(0.05)  # the loop runs the reader for what came
            results = await pool.send_many([message("second")], backoff=no_backoff)
    # Noticed before use: nothing was sent on the closing connection.
    assert results[0].attempts == 1
    assert server.connections == 2
    assert server.transcripts[0].endswith(b"This is first.\r\n.\r\n")


async def test_dead_pooled_connection_is_replaced_once_by_send() -> None:
    # The second transaction finds its connection gone at MAIL (before the
    # message was sent): send() tries once more on a new connection.
    mailer = Mailer(Plan(), Plan(mail=DROP))
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, health_check=None) as pool:
            await pool.send(message("first"))
            assert await pool.send(message("second")) == ({}, "2.0.0 queued")
    assert server.connections == 2
    assert mailer.delivered() == ["first", "second"]


# 421: reconnecting and backing off ---------------------------------------------------


async def test_421_at_greeting_shrinks_the_pool_instead_of_hammering() -> None:
    mailer = Mailer()
    with (
        ConcurrentServer(mailer, capacity=2) as server,
        no_leaked_sockets(server.port),
    ):
        async with pool_for(server, max_size=4) as pool:
            results = await pool.send_many(
                [message(f"m{index}") for index in range(12)], backoff=no_backoff
            )
            assert 1 <= pool.effective_max_size <= 2
    assert {result.status for result in results} == {"sent"}
    # The first burst of four met two refusals; none came after it.
    assert server.refused == 2
    assert server.max_active <= 2
    assert sorted(mailer.delivered()) == sorted(f"m{index}" for index in range(12))


async def test_421_greeting_fails_send_and_later_the_pool_grows_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mailer = Mailer()
    with ConcurrentServer(mailer, capacity=0) as server:
        async with pool_for(server, max_size=3) as pool:
            with pytest.raises(anysmtp.SMTPConnectError) as caught:
                await pool.send(message("refused"))
            assert caught.value.smtp_code == 421
            assert pool.effective_max_size == 1
            server.capacity = None
            monkeypatch.setattr(_pool, "RECOVERY_INTERVAL", 0.0)
            await pool.send(message("accepted"))
            assert pool.effective_max_size == 2
    assert server.refused == 1
    assert mailer.delivered() == ["accepted"]


async def test_421_in_a_session_reconnects_and_retries_the_message() -> None:
    mailer = Mailer(Plan(), Plan(mail=b"421 4.7.0 too many messages, closing"))
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server) as pool:
            results = await pool.send_many(
                [message(f"m{index}") for index in range(3)],
                concurrency=1,
                backoff=no_backoff,
            )
    assert [result.status for result in results] == ["sent"] * 3
    assert [result.attempts for result in results] == [1, 2, 1]
    assert server.connections == 2
    assert mailer.delivered() == ["m0", "m1", "m2"]


def session(messages: int, end: str) -> list[str]:
    """The verbs of a pipelined session that carried ``messages`` messages and
    ended with ``end`` (QUIT, or a MAIL the server refused with 421)."""
    return ["EHLO", *["MAIL", "RCPT", "DATA"] * messages, end]


async def test_a_cap_on_messages_per_session_is_learnt_and_never_pauses() -> None:
    # Exim's smtp_accept_max_per_connection (1000 by default) answers the next
    # MAIL with 421 and closes; Exim before 4.97 does not announce it as
    # LIMITS MAILMAX.  Pausing and shrinking the pool at each would cut
    # throughput to one connection for good.
    mailer = Mailer(caps=lambda index: 3)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        # A pause after a 421 would outlast the test.
        async with pool_for(server, max_size=2, reconnect_backoff=3600) as pool:
            with anyio.fail_after(TIMEOUT):
                results = await pool.send_many(
                    [message(f"m{index}") for index in range(12)],
                    concurrency=1,
                    backoff=no_backoff,
                )
            assert pool.effective_max_size == 2
    assert [result.status for result in results] == ["sent"] * 12
    # The messages the two 421s met went on at once, within the same try.
    attempts = [result.attempts for result in results]
    assert attempts == [1, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1]
    # Two sessions ended after three messages: from then on each retires with
    # QUIT after three.
    assert mailer.sessions() == [
        session(3, "MAIL"),
        session(3, "MAIL"),
        session(3, "QUIT"),
        session(3, "QUIT"),
    ]
    assert mailer.delivered() == [f"m{index}" for index in range(12)]


async def test_sessions_ended_after_different_counts_teach_no_cap() -> None:
    caps = {0: 2, 1: 3}
    mailer = Mailer(caps=caps.get)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_size=1) as pool:
            results = await pool.send_many(
                [message(f"m{index}") for index in range(12)],
                concurrency=1,
                backoff=no_backoff,
            )
    assert [result.status for result in results] == ["sent"] * 12
    assert mailer.sessions() == [
        session(2, "MAIL"),
        session(3, "MAIL"),
        session(7, "QUIT"),
    ]
    assert mailer.delivered() == [f"m{index}" for index in range(12)]


async def test_a_421_to_the_first_mail_of_a_session_still_shrinks_the_pool() -> None:
    # Nothing says this is a cap per session: the server is busy.
    mailer = Mailer(Plan(mail=b"421 4.3.2 system overloaded, closing"))
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_size=3) as pool:
            results = await pool.send_many([message("m0")], backoff=no_backoff)
            assert pool.effective_max_size == 1
    assert [(result.status, result.attempts) for result in results] == [("sent", 2)]
    assert mailer.sessions() == [["EHLO", "MAIL"], session(1, "QUIT")]
    assert mailer.delivered() == ["m0"]


# Retry rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "status", "attempts", "code"),
    [
        (Plan(mail=b"451 4.3.0 try later"), "sent", 2, None),
        (Plan(mail=b"550 5.7.1 sender refused"), "failed", 1, 550),
        (Plan(data=b"451 4.3.0 not now"), "sent", 2, None),
        (Plan(final=b"452 4.3.1 queue full"), "sent", 2, None),
        (Plan(final=b"554 5.6.0 rejected"), "failed", 1, 554),
        (Plan(rcpt={"bob@example.com": b"450 4.2.1 greylisted"}), "sent", 2, None),
        (Plan(rcpt={"bob@example.com": b"550 5.1.1 unknown"}), "failed", 1, None),
    ],
    ids=[
        "mail-4xx",
        "mail-5xx",
        "data-4xx",
        "final-4xx",
        "final-5xx",
        "rcpt-4xx",
        "rcpt-5xx",
    ],
)
async def test_transient_failures_are_retried_permanent_ones_are_not(
    plan: Plan, status: str, attempts: int, code: int | None
) -> None:
    mailer = Mailer(plan)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server) as pool:
            [result] = await pool.send_many([message("m")], backoff=no_backoff)
    assert (result.status, result.attempts) == (status, attempts)
    assert len(mailer.seen) == attempts
    assert mailer.delivered() == (["m"] if status == "sent" else [])
    if code is not None:
        assert isinstance(result.error, anysmtp.SMTPResponseException)
        assert result.error.smtp_code == code
    # A refusal leaves the connection usable: one connection throughout.
    assert server.connections == 1


async def test_retries_stop_after_the_limit() -> None:
    mailer = Mailer(*[Plan(mail=b"451 4.3.0 try later")] * 10)
    with ConcurrentServer(mailer) as server:
        async with pool_for(server) as pool:
            [result] = await pool.send_many(
                [message("m")], retries=2, backoff=no_backoff
            )
    assert (result.status, result.attempts) == ("failed", 3)
    assert isinstance(result.error, anysmtp.SMTPSenderRefused)
    assert len(mailer.seen) == 3


async def test_backoff_function_gets_the_retry_number() -> None:
    asked: list[int] = []

    def backoff(retry: int) -> float:
        asked.append(retry)
        return 0.0

    mailer = Mailer(*[Plan(mail=b"451 4.3.0 try later")] * 3)
    with ConcurrentServer(mailer) as server:
        async with pool_for(server) as pool:
            [result] = await pool.send_many([message("m")], backoff=backoff)
    assert (result.status, result.attempts) == ("sent", 4)
    assert asked == [1, 2, 3]


async def test_all_refused_retries_only_the_recipients_refused_for_now() -> None:
    refusals = {
        "carol@example.com": b"450 4.2.1 greylisted",
        "dave@example.com": b"550 5.1.1 unknown",
    }
    mailer = Mailer(Plan(rcpt=refusals))
    envelope = anysmtp.Envelope(
        b"Subject: m\r\n\r\nhi\r\n",
        "alice@example.com",
        ["carol@example.com", "dave@example.com"],
    )
    with ConcurrentServer(mailer) as server:
        async with pool_for(server) as pool:
            [result] = await pool.send_many([envelope], backoff=no_backoff)
    assert (result.status, result.attempts) == ("partial", 2)
    assert result.refused == {"dave@example.com": (550, b"5.1.1 unknown")}
    assert [seen.recipients for seen in mailer.seen] == [[], ["carol@example.com"]]
    assert mailer.delivered() == ["m"]


async def test_recipients_refused_for_now_after_others_were_accepted_are_reported() -> (
    None
):
    mailer = Mailer(Plan(rcpt={"carol@example.com": b"450 4.2.1 greylisted"}))
    msg = message("m")
    msg["Cc"] = "carol@example.com"
    with ConcurrentServer(mailer) as server:
        async with pool_for(server) as pool:
            [result] = await pool.send_many([msg], backoff=no_backoff)
    assert (result.status, result.attempts) == ("partial", 1)
    assert result.refused == {"carol@example.com": (450, b"4.2.1 greylisted")}
    assert result.error is None
    assert [seen.recipients for seen in mailer.seen] == [["bob@example.com"]]


async def test_421_on_a_recipient_retries_every_recipient_not_refused_for_good() -> (
    None
):
    # 421 on the second RCPT closes the connection before the third was tried.
    plan = Plan(
        rcpt={
            "carol@example.com": b"550 5.1.1 unknown",
            "dave@example.com": b"421 4.7.0 closing",
        }
    )
    mailer = Mailer(plan)
    to = [
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
        "erin@example.com",
    ]
    envelope = anysmtp.Envelope(b"Subject: m\r\n\r\nhi\r\n", "alice@example.com", to)
    with ConcurrentServer(mailer) as server:
        async with pool_for(server) as pool:
            [result] = await pool.send_many([envelope], backoff=no_backoff)
    assert (result.status, result.attempts) == ("partial", 2)
    assert result.refused == {"carol@example.com": (550, b"5.1.1 unknown")}
    assert mailer.seen[-1].recipients == [
        "bob@example.com",
        "dave@example.com",
        "erin@example.com",
    ]
    assert server.connections == 2


async def test_disconnect_before_the_end_of_data_is_retried() -> None:
    mailer = Mailer(Plan(rcpt={"bob@example.com": DROP}))
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server) as pool:
            [result] = await pool.send_many([message("m")], backoff=no_backoff)
    assert (result.status, result.attempts) == ("sent", 2)
    assert server.connections == 2
    assert mailer.delivered() == ["m"]


@pytest.mark.parametrize(
    "extensions", [(b"PIPELINING",), ()], ids=["pipelining", "one-by-one"]
)
async def test_lost_final_reply_is_reported_not_retried(
    extensions: tuple[bytes, ...],
) -> None:
    mailer = Mailer(Plan(final=DROP), Plan(final=DROP), extensions=extensions)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server) as pool:
            [result] = await pool.send_many([message("m")], backoff=no_backoff)
            with pytest.raises(anysmtp.SMTPFinalReplyLostError) as caught:
                await pool.send(message("again"))
    assert (result.status, result.attempts) == ("failed", 1)
    assert isinstance(result.error, anysmtp.SMTPFinalReplyLostError)
    assert isinstance(result.error, anysmtp.SMTPServerDisconnected)
    assert isinstance(result.error.__cause__, anysmtp.SMTPServerDisconnected)
    # The whole message reached the server once and was never sent again.
    assert [seen.subject for seen in mailer.seen] == ["m", "again"]
    assert mailer.seen[0].data is not None
    assert isinstance(caught.value, anysmtp.SMTPServerDisconnected)


async def test_lost_final_reply_is_retried_when_asked() -> None:
    mailer = Mailer(Plan(final=DROP))
    with ConcurrentServer(mailer) as server:
        async with pool_for(server) as pool:
            [result] = await pool.send_many(
                [message("m")], backoff=no_backoff, retry_ambiguous=True
            )
    assert (result.status, result.attempts) == ("sent", 2)
    # The price: the server has the message twice (the first may be delivered).
    assert [seen.subject for seen in mailer.seen] == ["m", "m"]


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_a_drop_at_mail_is_retried_safely(chunking: bool) -> None:
    # The message goes only after the envelope's replies, with BDAT as with
    # DATA: a drop at MAIL comes before it, and the retry cannot duplicate it.
    mailer = Mailer(
        Plan(mail=DROP), extensions=(b"PIPELINING", b"CHUNKING", b"8BITMIME")
    )
    with ConcurrentServer(mailer) as server:
        async with pool_for(server, chunking=chunking) as pool:
            [result] = await pool.send_many([message("m")], backoff=no_backoff)
    assert (result.status, result.attempts) == ("sent", 2)
    assert server.connections == 2


CHUNKING_EXTENSIONS = [
    pytest.param((b"PIPELINING", b"CHUNKING"), id="bdat-pipelined"),
    pytest.param((b"CHUNKING",), id="bdat-one-by-one"),
]


@pytest.mark.parametrize("extensions", CHUNKING_EXTENSIONS)
async def test_bdat_messages_count_toward_the_message_limit(
    extensions: tuple[bytes, ...],
) -> None:
    mailer = Mailer(extensions=extensions)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_messages_per_connection=2) as pool:
            for index in range(3):
                assert await pool.send(message(f"m{index}")) == ({}, "2.0.0 queued")
    bdat = ["EHLO", "MAIL", "RCPT", "BDAT"]
    assert mailer.sessions() == [
        [*bdat, *bdat[1:], "QUIT"],
        [*bdat, "QUIT"],
    ]
    assert mailer.delivered() == ["m0", "m1", "m2"]


@pytest.mark.parametrize("extensions", CHUNKING_EXTENSIONS)
async def test_lost_final_reply_after_bdat_last(extensions: tuple[bytes, ...]) -> None:
    mailer = Mailer(Plan(final=DROP), extensions=extensions)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server) as pool:
            [result] = await pool.send_many([message("m")], backoff=no_backoff)
    assert (result.status, result.attempts) == ("failed", 1)
    assert isinstance(result.error, anysmtp.SMTPFinalReplyLostError)
    assert len(mailer.seen) == 1
    assert mailer.seen[0].data is not None


async def test_unreachable_server_fails_after_the_retries() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with anysmtp.AsyncSMTPPool("127.0.0.1", port, timeout=TIMEOUT) as pool:
        [result] = await pool.send_many([message("m")], retries=2, backoff=no_backoff)
    assert (result.status, result.attempts) == ("failed", 3)
    assert isinstance(result.error, ConnectionRefusedError)


class DownThenUp:
    """A server that closes its first ``down`` connections at once (before
    any greeting), then serves them with ``mailer``."""

    def __init__(self, mailer: Mailer, down: int) -> None:
        self.mailer = mailer
        self.down = down

    def __call__(self, conn: ScriptedConnection, index: int) -> None:
        if index >= self.down:
            self.mailer(conn, index)


async def test_a_server_unreachable_for_too_long_fails_the_rest_at_once() -> None:
    # One worker: the first try fails and opens the unreachable time (0
    # seconds allowed); the retry is the one paced attempt, which fails too;
    # everything after that fails without an attempt.
    with ConcurrentServer(DownThenUp(Mailer(), down=100)) as server:
        async with pool_for(
            server, unreachable_timeout=0, reconnect_backoff=TIMEOUT * 10
        ) as pool:
            results = await pool.send_many(
                [message(f"m{index}") for index in range(50)],
                concurrency=1,
                retries=3,
                backoff=no_backoff,
            )
            with pytest.raises(anysmtp.SMTPServerUnreachableError) as caught:
                await pool.send(message("one more"))
            with pytest.raises(anysmtp.SMTPServerUnreachableError):
                async with pool.connection():
                    pass
    assert server.connections == 2
    assert [(each.status, each.attempts) for each in results] == [("failed", 2)] + [
        ("failed", 0)
    ] * 49
    assert all(
        isinstance(each.error, anysmtp.SMTPServerUnreachableError) for each in results
    )
    # It says why, and keeps the last attempt's error as its cause: each
    # error its own copy, without a traceback.
    assert "unreachable" in str(caught.value)
    assert results[1].error is not None
    assert results[2].error is not None
    assert results[1].error.__cause__ is not results[2].error.__cause__
    cause = caught.value.__cause__
    assert isinstance(cause, anysmtp.SMTPServerDisconnected)
    assert "Connection unexpectedly closed" in str(cause)
    assert cause.__traceback__ is None


async def test_a_paced_attempt_finds_the_server_back() -> None:
    mailer = Mailer()
    with ConcurrentServer(DownThenUp(mailer, down=2)) as server:
        async with pool_for(
            server, unreachable_timeout=0, reconnect_backoff=0.2
        ) as pool:
            [down] = await pool.send_many(
                [message("down")], retries=2, backoff=no_backoff
            )
            assert isinstance(down.error, anysmtp.SMTPServerUnreachableError)
            # The server is back (it serves the third connection); the next
            # attempt may go once reconnect_backoff has passed.
            await anyio.sleep(0.25)
            assert await pool.send(message("back")) == ({}, "2.0.0 queued")
            results = await pool.send_many(
                [message("m1"), message("m2")], concurrency=1
            )
    assert [each.status for each in results] == ["sent", "sent"]
    assert mailer.delivered() == ["back", "m1", "m2"]
    assert server.connections == 3


def greet_then_close(conn: ScriptedConnection, index: int) -> None:
    conn.send(b"220 test ESMTP" + CRLF)
    conn.read_line()


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        pytest.param(
            Mailer(greeting=b"554 5.3.2 not now"), anysmtp.SMTPConnectError, id="554"
        ),
        pytest.param(
            greet_then_close, anysmtp.SMTPServerDisconnected, id="closed-after-220"
        ),
    ],
)
async def test_a_server_that_answers_is_never_failed_at_once(
    handler: Callable[[ScriptedConnection, int], None], error: type[Exception]
) -> None:
    # A server that greets is reachable, whatever it does then: every send
    # tries, however long it goes on.
    with ConcurrentServer(handler) as server:
        async with pool_for(server, unreachable_timeout=0) as pool:
            for _ in range(3):
                with pytest.raises(error) as caught:
                    await pool.send(message("m"))
                assert not isinstance(caught.value, anysmtp.SMTPServerUnreachableError)
    assert server.connections == 3


class StallFirst:
    """Holds its first connection without a greeting until ``release`` is
    set, then closes it; serves the others with ``mailer``."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: ScriptedConnection, index: int) -> None:
        if index == 0:
            self.holding.set()
            assert self.release.wait(TIMEOUT)
        else:
            self.mailer(conn, index)


async def test_an_attempt_that_began_before_a_success_does_not_count() -> None:
    mailer = Mailer()
    handler = StallFirst(mailer)
    with ConcurrentServer(handler) as server:
        async with pool_for(server, max_size=4, unreachable_timeout=0) as pool:

            async def stalled() -> None:
                with pytest.raises(anysmtp.SMTPServerDisconnected):
                    await pool.send(message("stalled"))

            async with anyio.create_task_group() as group:
                group.start_soon(stalled)
                assert await anyio.to_thread.run_sync(handler.holding.wait, TIMEOUT)
                # While the first attempt waits, another reaches the server;
                # then the first fails.
                assert await pool.send(message("m1")) == ({}, "2.0.0 queued")
                handler.release.set()
            async with pool.connection(), anyio.create_task_group() as group:
                # Both need a new connection: neither may fail at once.
                group.start_soon(pool.send, message("m2"))
                group.start_soon(pool.send, message("m3"))
    assert sorted(mailer.delivered()) == ["m1", "m2", "m3"]
    assert server.connections == 4


def test_the_sync_pool_fails_an_unreachable_server_at_once() -> None:
    with ConcurrentServer(DownThenUp(Mailer(), down=100)) as server:
        pool = anysmtp.SMTPPool(
            server.host,
            server.port,
            start_tls=False,
            timeout=TIMEOUT,
            unreachable_timeout=0,
            reconnect_backoff=TIMEOUT * 10,
        )
        with pool:
            results = pool.send_many(
                [message("m0"), message("m1"), message("m2")],
                concurrency=1,
                backoff=no_backoff,
            )
    assert [(each.status, each.attempts) for each in results] == [
        ("failed", 2),
        ("failed", 0),
        ("failed", 0),
    ]
    assert server.connections == 2


async def test_configuration_errors_are_not_retried() -> None:
    # start_tls=True and no STARTTLS offered: every try would fail the same way.
    mailer = Mailer()
    with ConcurrentServer(mailer) as server:
        async with pool_for(server, start_tls=True) as pool:
            results = await pool.send_many(
                [message("m1"), message("m2")], backoff=no_backoff
            )
    assert [(result.status, result.attempts) for result in results] == [
        ("failed", 1),
        ("failed", 1),
    ]
    assert all(isinstance(r.error, anysmtp.SMTPNotSupportedError) for r in results)
    assert mailer.seen == []


async def test_invalid_items_fail_alone() -> None:
    mailer = Mailer()
    nobody = message("m4")
    del nobody["To"]
    items: list[Any] = [
        message("m0"),
        "Subject: no envelope\r\n\r\n",
        anysmtp.Envelope(b"Subject: m2\r\n\r\nx\r\n", "a@example.com", "b@example.com"),
        42,
        nobody,
    ]
    with ConcurrentServer(mailer) as server:
        async with pool_for(server) as pool:
            results = await pool.send_many(items)
    assert [result.status for result in results] == [
        "sent",
        "failed",
        "sent",
        "failed",
        "failed",
    ]
    assert isinstance(results[1].error, ValueError)
    assert isinstance(results[3].error, TypeError)
    assert [results[1].attempts, results[3].attempts] == [0, 0]
    assert isinstance(results[4].error, anysmtp.SMTPNoRecipientsError)
    assert sorted(mailer.delivered()) == ["m0", "m2"]


def test_envelope_refuses_what_cannot_be_sent_again() -> None:
    with pytest.raises(TypeError, match="BufferedReader"), open(__file__, "rb") as file:
        anysmtp.Envelope(file, "a@example.com", "b@example.com")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sender and recipients"):
        anysmtp.Envelope(b"x", sender="a@example.com")


async def test_send_many_refuses_a_single_message() -> None:
    pool = anysmtp.AsyncSMTPPool("127.0.0.1", 9)
    with pytest.raises(TypeError, match="use send"):
        await pool.send_many(message("m"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency"):
        await pool.send_many([], concurrency=0)
    assert await pool.send_many([]) == []
    await pool.aclose()


# Result order, progress, input forms ----------------------------------------------


async def test_results_in_input_order_progress_in_completion_order() -> None:
    # The first message's final reply is held until every other one is done.
    others_done = threading.Event()

    def hold(seen: Seen) -> None:
        if seen.subject == "m0":
            assert others_done.wait(TIMEOUT)

    reported: list[int] = []

    async def progress(result: anysmtp.SendResult) -> None:
        await anyio.lowlevel.checkpoint()
        reported.append(result.index)
        if len(reported) == 5:
            others_done.set()

    mailer = Mailer(hold=hold)
    with ConcurrentServer(mailer) as server:
        async with pool_for(server, max_size=3) as pool:
            results = await pool.send_many(
                [message(f"m{index}") for index in range(6)], progress=progress
            )
    assert [result.index for result in results] == list(range(6))
    assert reported[-1] == 0
    assert sorted(reported) == list(range(6))


async def test_async_iterable_is_read_as_workers_get_free(
    recorder: AiosmtpdServer,
) -> None:
    pulled = 0

    async def generate() -> AsyncIterator[anysmtp.Envelope]:
        nonlocal pulled
        for index in range(8):
            pulled += 1
            yield anysmtp.Envelope(
                f"Subject: m{index}\r\n\r\nhi\r\n",
                "a@example.com",
                f"r{index}@example.com",
            )

    seen_pulled: list[int] = []
    async with pool_for(recorder, max_size=2) as pool:
        results = await pool.send_many(
            generate(), progress=lambda result: seen_pulled.append(pulled)
        )
    assert [result.status for result in results] == ["sent"] * 8
    # Two workers: never more than two messages taken beyond the finished ones.
    assert all(count <= done + 2 for done, count in enumerate(seen_pulled, start=1))
    assert sorted(each.rcpt_tos[0] for each in recorder.messages) == sorted(
        f"r{index}@example.com" for index in range(8)
    )


async def test_errors_of_the_iterable_and_of_progress_propagate(
    recorder: AiosmtpdServer,
) -> None:
    def broken() -> Iterator[EmailMessage]:
        yield message("m0")
        raise LookupError("no more")

    def failing(result: anysmtp.SendResult) -> None:
        raise KeyError("progress")

    with no_leaked_sockets(recorder.port):
        async with pool_for(recorder) as pool:
            with pytest.raises(LookupError, match="no more"):
                await pool.send_many(broken(), concurrency=1)
            with pytest.raises(KeyError, match="progress"):
                await pool.send_many([message("m1")], progress=failing)
            # The pool is still fine.
            assert await pool.send(message("m2")) == ({}, "OK: queued")
    assert len(recorder.messages) == 3


async def test_module_send_many_uses_a_temporary_pool(recorder: AiosmtpdServer) -> None:
    with no_leaked_sockets(recorder.port):
        results = await anysmtp.send_many(
            [message(f"m{index}") for index in range(5)],
            hostname=recorder.host,
            port=recorder.port,
            concurrency=2,
            start_tls=False,
            timeout=TIMEOUT,
        )
    assert [result.status for result in results] == ["sent"] * 5
    assert len(recorder.messages) == 5
    assert len(peers(recorder)) <= 2


# TLS and AUTH ----------------------------------------------------------------------


async def test_connections_use_starttls_and_log_in(certs: Certificates) -> None:
    authenticator = Authenticator()
    with AiosmtpdServer(
        authenticator=authenticator, tls_context=certs.server_context()
    ) as server:
        async with anysmtp.AsyncSMTPPool(
            server.host,
            server.port,
            max_size=2,
            start_tls=True,
            tls_context=certs.client_context(),
            username="test",
            password="test",
            timeout=TIMEOUT,
        ) as pool:
            results = await pool.send_many([message(f"m{i}") for i in range(6)])
            async with pool.connection() as smtp:
                assert smtp.get_transport_info("sslobject") is not None
            opened = pool.connections_opened
        async with anysmtp.AsyncSMTPPool(
            server.host,
            server.port,
            start_tls=True,
            tls_context=certs.client_context(),
            username="test",
            password="wrong",
            timeout=TIMEOUT,
        ) as pool:
            [refused] = await pool.send_many([message("x")], backoff=no_backoff)
    assert {result.status for result in results} == {"sent"}
    assert len(server.messages) == 6
    assert opened <= 2  # TLS connections are reused too
    # One login per connection, each over TLS; 535 is not retried.
    assert authenticator.attempts == [("PLAIN", b"test", True)] * (opened + 1)
    assert isinstance(refused.error, anysmtp.SMTPAuthenticationError)
    assert refused.attempts == 1


def test_pool_options_are_the_clients_options() -> None:
    parameters = inspect.signature(anysmtp.AsyncSMTP.__init__).parameters
    client_options = set(parameters) - {"self", "host", "port", "hostname", "sock"}
    assert set(anysmtp.ConnectionOptions.__annotations__) == client_options
    with pytest.raises(ValueError, match="mutually exclusive"):
        anysmtp.AsyncSMTPPool("localhost", use_tls=True, start_tls=True)
    with pytest.raises(ValueError, match="max_size"):
        anysmtp.AsyncSMTPPool("localhost", max_size=0)
    for wrong in (-1.0, math.nan):
        with pytest.raises(ValueError, match="unreachable_timeout"):
            anysmtp.AsyncSMTPPool("localhost", unreachable_timeout=wrong)
        with pytest.raises(ValueError, match="unreachable_timeout"):
            anysmtp.SMTPPool("localhost", unreachable_timeout=wrong)


# Cancellation and closing --------------------------------------------------------


class Gate:
    """Holds final replies until opened; counts the replies held."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.held = threading.Semaphore(0)

    def __call__(self, seen: Seen) -> None:
        self.held.release()
        self.open.wait(TIMEOUT)

    async def wait_held(self, count: int) -> None:
        for _ in range(count):
            assert await anyio.to_thread.run_sync(self.held.acquire, True, TIMEOUT)


async def test_cancelling_send_many_lets_transactions_in_flight_finish() -> None:
    gate = Gate()
    mailer = Mailer(hold=gate)
    reported: list[anysmtp.SendResult] = []
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_size=2) as pool:
            scope = anyio.CancelScope()

            async def run() -> None:
                with scope:
                    await pool.send_many(
                        [message(f"m{index}") for index in range(10)],
                        progress=reported.append,
                    )

            async with anyio.create_task_group() as group:
                group.start_soon(run)
                await gate.wait_held(2)
                scope.cancel()
                gate.open.set()
            assert scope.cancelled_caught
            # Both connections went back to the pool, in step.
            assert pool.idle == 2
            assert await pool.send(message("after")) == ({}, "2.0.0 queued")
    assert sorted(result.status for result in reported) == ["sent", "sent"]
    assert sorted(mailer.delivered()) == sorted(
        [f"m{result.index}" for result in reported] + ["after"]
    )
    # Nothing new was started after the cancellation.
    assert len(mailer.seen) == 3


async def test_cancel_grace_expiry_closes_connections_and_reports_the_doubt() -> None:
    gate = Gate()
    mailer = Mailer(hold=gate)
    reported: list[anysmtp.SendResult] = []
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_size=2) as pool:
            with anyio.CancelScope() as scope:

                async def cancel_when_held() -> None:
                    await gate.wait_held(2)
                    scope.cancel()

                async with anyio.create_task_group() as group:
                    group.start_soon(cancel_when_held)
                    await pool.send_many(
                        [message(f"m{index}") for index in range(10)],
                        progress=reported.append,
                        cancel_grace=0.05,
                    )
            gate.open.set()
            assert pool.size == 0
    assert [result.status for result in reported] == ["failed", "failed"]
    assert all(
        isinstance(result.error, anysmtp.SMTPFinalReplyLostError) for result in reported
    )
    assert len(mailer.seen) == 2


async def test_cancelled_wait_for_a_connection_leaks_no_token(
    recorder: AiosmtpdServer,
) -> None:
    async with pool_for(recorder, max_size=1) as pool:
        held, release = anyio.Event(), anyio.Event()

        async def hold() -> None:
            # Another task's loan: this one's send waits for it.
            async with pool.connection():
                held.set()
                await release.wait()

        async with anyio.create_task_group() as group:
            group.start_soon(hold)
            await held.wait()
            with anyio.move_on_after(0.05) as scope:
                await pool.send(message("waits"))
            assert scope.cancelled_caught
            release.set()
        assert await pool.send(message("m")) == ({}, "OK: queued")
        assert pool.connections_opened == 1
    assert len(recorder.messages) == 1


async def test_connection_that_raised_is_discarded(recorder: AiosmtpdServer) -> None:
    with no_leaked_sockets(recorder.port):
        async with pool_for(recorder) as pool:
            with pytest.raises(RuntimeError):
                async with pool.connection():
                    raise RuntimeError("oops")
            assert pool.size == 0
            await pool.send(message("m"))
            assert pool.connections_opened == 2


async def test_closing_the_pool_finishes_sends_in_flight_and_stops_the_rest() -> None:
    gate = Gate()
    mailer = Mailer(hold=gate)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        pool = pool_for(server)
        results: list[anysmtp.SendResult] = []

        async def run() -> None:
            results.extend(
                await pool.send_many(
                    [message(f"m{index}") for index in range(4)], concurrency=1
                )
            )

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            await gate.wait_held(1)
            group.start_soon(pool.aclose)
            await anyio.wait_all_tasks_blocked()
            assert pool.closed
            gate.open.set()
        with pytest.raises(anysmtp.SMTPPoolClosedError):
            await pool.send(message("late"))
        with pytest.raises(anysmtp.SMTPPoolClosedError):
            async with pool.connection():
                pass
    assert [(result.status, result.attempts) for result in results] == [
        ("sent", 1),
        ("failed", 0),
        ("failed", 0),
        ("failed", 0),
    ]
    assert all(isinstance(r.error, anysmtp.SMTPPoolClosedError) for r in results[1:])
    assert mailer.delivered() == ["m0"]
    assert mailer.commands[0][-1] == "QUIT"


#: What the server receives on a connection lent for one message, or for two,
#: and then closed with QUIT.
ONE_MESSAGE: Final = [*SESSION, "QUIT"]
TWO_MESSAGES: Final = [*SESSION, *SESSION[1:], "QUIT"]


class Closing:
    """A pool on a :class:`Mailer` for the tests of closing, and another task's
    loan of one of its connections on demand (:meth:`lend`).

    :param options: for :func:`pool_for`.
    """

    #: The test's tasks, while :meth:`serving`.
    group: anyio.abc.TaskGroup

    def __init__(self, **options: Any) -> None:
        self.mailer = Mailer()
        self._server = ConcurrentServer(self.mailer)
        self.pool = pool_for(self._server, **options)
        #: Set once the other task holds its connection, ...
        self.holding = anyio.Event()
        #: ... which it gives back (having sent "other" through it) once set.
        self.released = anyio.Event()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Closing]:
        """Run the server and :attr:`group`; on the way out, wait for the
        group's tasks, check that no client socket is left open and stop the
        server (the mailer's records are complete then)."""
        with self._server, no_leaked_sockets(self._server.port):
            async with anyio.create_task_group() as self.group:
                yield self

    async def lend(self) -> None:
        """Start the other task in :attr:`group`; return once it holds its
        connection."""
        self.group.start_soon(self._hold)
        await self.holding.wait()

    async def _hold(self) -> None:
        async with self.pool.connection() as smtp:
            self.holding.set()
            await self.released.wait()
            # Still usable: a close waits for this connection to come back.
            await smtp.send_message(message("other"))

    def release_when_the_close_waits(self) -> None:
        """Release the other task's connection once every task waits (the
        close among them, for that connection)."""

        async def release() -> None:
            await anyio.wait_all_tasks_blocked()
            self.released.set()

        self.group.start_soon(release)

    async def close_pool(self) -> None:
        """``aclose(grace=None)``, which returns only once the other task gave
        its connection back."""
        await self.pool.aclose(grace=None)
        assert self.released.is_set()


async def test_closing_wakes_tasks_waiting_for_a_connection() -> None:
    scene = Closing(max_size=1)
    outcome: list[BaseException] = []

    async def wait_for_one() -> None:
        try:
            await scene.pool.send(message("never"))
        except anysmtp.SMTPPoolClosedError as exc:
            outcome.append(exc)

    async with scene.serving():
        await scene.lend()
        scene.group.start_soon(wait_for_one)
        await anyio.wait_all_tasks_blocked()
        scene.group.start_soon(scene.pool.aclose)
        await anyio.wait_all_tasks_blocked()
        # The waiter gave up at once; the holder still has its connection.
        assert len(outcome) == 1
        scene.released.set()
    await scene.pool.aclose()  # again: nothing more to do
    assert scene.pool.size == 0
    # Only the holder's message; its connection was closed with QUIT.
    assert scene.mailer.delivered() == ["other"]
    assert scene.mailer.sessions() == [ONE_MESSAGE]


async def test_close_grace_expiry_closes_connections_in_use() -> None:
    gate = Gate()
    mailer = Mailer(hold=gate)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        pool = pool_for(server)
        outcome: list[BaseException] = []

        async def send() -> None:
            try:
                await pool.send(message("m"))
            except anysmtp.SMTPException as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(send)
            await gate.wait_held(1)
            await pool.aclose(grace=0.05)
        gate.open.set()
    assert len(outcome) == 1
    assert isinstance(outcome[0], anysmtp.SMTPFinalReplyLostError)


# The sync pool ---------------------------------------------------------------------


def test_sync_pool_send_many_and_connection(recorder: AiosmtpdServer) -> None:
    # Start the portal's loop (and its own sockets) before counting.
    anysmtp.SMTPPool("127.0.0.1", 9).close()
    reported: list[int] = []
    with no_leaked_sockets(recorder.port):
        with anysmtp.SMTPPool(
            recorder.host, recorder.port, max_size=3, start_tls=False, timeout=TIMEOUT
        ) as pool:
            results = pool.send_many(
                [message(f"m{index}") for index in range(12)],
                progress=lambda result: reported.append(result.index),
            )
            assert [result.status for result in results] == ["sent"] * 12
            assert sorted(reported) == list(range(12))
            assert pool.send(message("one")) == ({}, "OK: queued")
            with pool.connection() as smtp:
                assert isinstance(smtp, anysmtp.SMTP)
                assert smtp.noop() == (250, b"OK")
                assert smtp.sendmail("a@example.com", ["b@example.com"], "x") == {}
                lent = smtp
            # After the block it no longer reaches the pooled connection.
            with pytest.raises(anysmtp.SMTPServerDisconnected):
                lent.noop()
            assert pool.connections_opened <= 3
            with pytest.raises(ZeroDivisionError), pool.connection():
                raise ZeroDivisionError
            assert pool.size < pool.connections_opened
        assert pool.closed
        with pytest.raises(anysmtp.SMTPPoolClosedError):
            pool.send(message("late"))
    assert len(recorder.messages) == 14


def test_sync_pool_reuses_one_connection_for_sequential_use(
    recorder: AiosmtpdServer,
) -> None:
    with anysmtp.SMTPPool(recorder.host, recorder.port, start_tls=False) as pool:
        for index in range(3):
            with pool.connection() as smtp:
                smtp.send_message(message(f"m{index}"))
        assert pool.connections_opened == 1
        assert pool.idle == 1
    assert len(peers(recorder)) == 1


def test_sync_pool_reports_failures_like_the_async_one() -> None:
    mailer = Mailer(Plan(mail=b"550 5.7.1 no"), Plan(final=b"451 4.3.0 later"))
    with (
        ConcurrentServer(mailer) as server,
        anysmtp.SMTPPool(
            server.host, server.port, start_tls=False, timeout=TIMEOUT
        ) as pool,
    ):
        results = pool.send_many(
            [message("m0"), message("m1")], concurrency=1, backoff=no_backoff
        )
    assert [(r.status, r.attempts) for r in results] == [("failed", 1), ("sent", 2)]
    assert mailer.delivered() == ["m1"]


# Found in review -------------------------------------------------------------------


@pytest.mark.parametrize("extensions", [(b"8BITMIME",), (b"PIPELINING", b"8BITMIME")])
async def test_a_421_to_data_is_never_pooled(extensions: tuple[bytes, ...]) -> None:
    mailer = Mailer(Plan(data=b"421 4.3.2 shutting down"), extensions=extensions)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server, max_size=1) as pool:
            with pytest.raises(anysmtp.SMTPDataError) as caught:
                await pool.send(message("first"))
            assert caught.value.smtp_code == 421
            assert (pool.size, pool.idle) == (0, 0)
            assert await pool.send(message("second")) == ({}, "2.0.0 queued")
    assert mailer.delivered() == ["second"]
    assert server.connections == 2


async def test_aclose_ends_the_pause_after_a_421() -> None:
    mailer = Mailer()
    with ConcurrentServer(mailer, capacity=0) as server:
        pool = pool_for(server, reconnect_backoff=30.0)
        with pytest.raises(anysmtp.SMTPConnectError):
            await pool.send(message("refused"))
        server.capacity = None
        outcome: list[BaseException] = []

        async def sender() -> None:
            try:
                await pool.send(message("paused"))
            except Exception as exc:
                outcome.append(exc)

        with anyio.fail_after(10):  # not the 30 s pause
            async with anyio.create_task_group() as group:
                group.start_soon(sender)
                await anyio.sleep(0.2)
                await pool.aclose(grace=5)
        assert [type(exc) for exc in outcome] == [anysmtp.SMTPPoolClosedError]
    assert mailer.delivered() == []


async def test_a_burst_of_421_greetings_is_one_event() -> None:
    mailer = Mailer()
    with ConcurrentServer(mailer, capacity=2) as server:
        async with pool_for(server, max_size=8, reconnect_backoff=0.2) as pool:
            results = await pool.send_many(
                [message(f"m{index}") for index in range(8)], backoff=no_backoff
            )
            # The server takes two connections: the pool keeps two.
            assert pool.effective_max_size == 2
    assert [result.status for result in results] == ["sent"] * 8
    assert sorted(mailer.delivered()) == sorted(f"m{index}" for index in range(8))


async def test_refused_envelopes_count_toward_mailmax() -> None:
    grey = {"bob@example.com": b"450 4.2.1 greylisted"}
    mailer = Mailer(
        Plan(rcpt=grey),
        Plan(rcpt=grey),
        Plan(rcpt=grey),
        extensions=(b"PIPELINING", b"LIMITS MAILMAX=2"),
    )
    with ConcurrentServer(mailer) as server:
        async with pool_for(server) as pool:
            [result] = await pool.send_many([message("m")], backoff=no_backoff)
    assert (result.status, result.attempts) == ("sent", 4)
    assert all(session.count("MAIL") <= 2 for session in mailer.sessions())


UNKNOWN_BOB: Final = {"bob@example.com": b"550 5.1.1 unknown"}


@pytest.mark.parametrize("via", ["connection", "send"])
@pytest.mark.parametrize(
    ("extensions", "plan", "error", "refused", "sent"),
    [
        pytest.param(
            (b"LIMITS MAILMAX=2",),
            Plan(rcpt=UNKNOWN_BOB),
            anysmtp.SMTPRecipientsRefused,
            ["MAIL", "RCPT", "RSET"],
            ["MAIL", "RCPT", "DATA"],
            id="rcpt-one-by-one",
        ),
        pytest.param(
            (b"PIPELINING", b"LIMITS MAILMAX=2"),
            Plan(rcpt=UNKNOWN_BOB),
            anysmtp.SMTPRecipientsRefused,
            ["MAIL", "RCPT", "DATA", "RSET"],
            ["MAIL", "RCPT", "DATA"],
            id="rcpt-pipelined",
        ),
        pytest.param(
            (b"PIPELINING", b"CHUNKING", b"LIMITS MAILMAX=2"),
            Plan(rcpt=UNKNOWN_BOB),
            anysmtp.SMTPRecipientsRefused,
            ["MAIL", "RCPT", "RSET"],  # no message without a recipient
            ["MAIL", "RCPT", "BDAT"],
            id="rcpt-bdat-pipelined",
        ),
        pytest.param(
            (b"LIMITS MAILMAX=2",),
            Plan(mail=b"550 5.7.1 sender refused"),
            anysmtp.SMTPSenderRefused,
            ["MAIL", "RSET"],
            ["MAIL", "RCPT", "DATA"],
            id="sender-one-by-one",
        ),
        pytest.param(
            (b"PIPELINING", b"LIMITS MAILMAX=2"),
            Plan(mail=b"550 5.7.1 sender refused"),
            anysmtp.SMTPSenderRefused,
            ["MAIL", "RCPT", "DATA", "RSET"],
            ["MAIL", "RCPT", "DATA"],
            id="sender-pipelined",
        ),
        pytest.param(
            (b"PIPELINING", b"CHUNKING", b"LIMITS MAILMAX=2"),
            Plan(mail=b"550 5.7.1 sender refused"),
            anysmtp.SMTPSenderRefused,
            ["MAIL", "RCPT", "RSET"],  # no message without a recipient
            ["MAIL", "RCPT", "BDAT"],
            id="sender-bdat-pipelined",
        ),
    ],
)
async def test_every_mail_command_counts_toward_mailmax(
    via: str,
    extensions: tuple[bytes, ...],
    plan: Plan,
    error: type[Exception],
    refused: list[str],
    sent: list[str],
) -> None:
    # RFC 9422 counts MAIL commands, not messages: an envelope refused at MAIL
    # or at RCPT (no final reply) counts too, through a borrowed connection
    # as through the pool's own sends.
    mailer = Mailer(plan, plan, extensions=extensions)
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        async with pool_for(server) as pool:
            if via == "connection":
                async with pool.connection() as smtp:
                    for name in ("r0", "r1"):
                        with pytest.raises(error):
                            await smtp.send_message(message(name))
            else:
                for name in ("r0", "r1"):
                    with pytest.raises(error):
                        await pool.send(message(name))
            # MAILMAX was reached: the connection was retired when given back.
            assert (pool.size, pool.idle) == (0, 0)
            assert await pool.send(message("m")) == ({}, "2.0.0 queued")
    assert mailer.sessions() == [
        ["EHLO", *refused, *refused, "QUIT"],
        ["EHLO", *sent, "QUIT"],
    ]
    assert mailer.delivered() == ["m"]
    assert server.connections == 2


@pytest.mark.subprocess
def test_sync_ctrl_c_while_waiting_for_a_connection_loses_no_token(
    smtpd: AiosmtpdServer,
) -> None:
    source = """
        import os, signal, sys, threading
        import anysmtp
        pool = anysmtp.SMTPPool(sys.argv[1], int(sys.argv[2]), max_size=1,
                                start_tls=False)
        taken = threading.Event()
        release = threading.Event()
        def holder():
            with pool.connection():
                taken.set()
                release.wait(10)
        thread = threading.Thread(target=holder)
        thread.start()
        taken.wait(10)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            with pool.connection():
                print("got a connection while it was taken")
        except KeyboardInterrupt:
            print("interrupted")
        release.set()
        thread.join(10)
        # The one token is back: the pool lends its connection again.
        with pool.connection() as smtp:
            print(smtp.noop()[0])
        print(pool.size)
        pool.close()
    """
    output = run_python(source, smtpd.host, str(smtpd.port))
    assert output.split() == ["interrupted", "250", "1"]


# Closing from inside a borrowed connection -----------------------------------------


CLOSES = [
    pytest.param({}, id="default-grace"),
    pytest.param({"grace": None}, id="grace-none"),
]


async def aclose_inside_a_borrowed_connection(
    aclose: Callable[[anysmtp.AsyncSMTPPool], Awaitable[object]],
) -> None:
    """Close the pool with ``aclose`` inside a :meth:`connection` block: the
    block's connection can only come back after that returns, so it is
    neither waited for nor closed under its user."""
    async with Closing().serving() as scene:
        pool = scene.pool
        async with pool.connection() as smtp:
            await smtp.send_message(message("before"))
            with anyio.fail_after(TIMEOUT / 2):
                await aclose(pool)
            assert pool.closed
            assert smtp.is_connected
            await smtp.send_message(message("after"))
            with pytest.raises(anysmtp.SMTPPoolClosedError):
                await pool.send(message("late"))
            with pytest.raises(anysmtp.SMTPPoolClosedError):
                async with pool.connection():
                    pass
            assert (pool.size, pool.idle) == (1, 0)
        # Given back to a closed pool: closed with QUIT.
        assert pool.size == 0
        await pool.aclose()  # again: nothing left to do
    assert scene.mailer.delivered() == ["before", "after"]
    assert scene.mailer.sessions() == [TWO_MESSAGES]


@pytest.mark.parametrize("close", CLOSES)
async def test_aclose_inside_a_borrowed_connection_does_not_wait_for_it(
    close: dict[str, Any],
) -> None:
    await aclose_inside_a_borrowed_connection(lambda pool: pool.aclose(**close))


async def test_aclose_from_progress_inside_a_borrowed_connection() -> None:
    # progress runs in a worker task of send_many, which runs inside the block:
    # the block's connection cannot come back before that aclose returns.
    scene = Closing()

    async def stop(result: anysmtp.SendResult) -> None:
        await scene.pool.aclose(grace=None)

    async with scene.serving():
        async with scene.pool.connection() as smtp:
            results = await scene.pool.send_many(
                [message("first"), message("second")], concurrency=1, progress=stop
            )
            assert smtp.is_connected
            await smtp.send_message(message("mine"))
        assert scene.pool.size == 0
    assert [(result.status, result.attempts) for result in results] == [
        ("sent", 1),
        ("failed", 0),
    ]
    assert isinstance(results[1].error, anysmtp.SMTPPoolClosedError)
    assert scene.mailer.delivered() == ["first", "mine"]
    # The block's connection and send_many's, each closed with QUIT.
    assert scene.mailer.sessions() == [ONE_MESSAGE] * 2


async def test_aclose_inside_a_borrowed_connection_waits_for_other_tasks() -> None:
    async with Closing().serving() as scene:
        await scene.lend()
        async with scene.pool.connection() as smtp:
            scene.release_when_the_close_waits()
            await scene.close_pool()
            assert scene.pool.size == 1
            await smtp.send_message(message("mine"))
        assert scene.pool.size == 0
    assert scene.mailer.delivered() == ["other", "mine"]
    assert scene.mailer.sessions() == [ONE_MESSAGE] * 2


#: For tests of asyncio's own ways to start a task (``asyncio.create_task``,
#: ``asyncio.wait_for``), which trio does not have.
ASYNCIO_ONLY: Final = pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)


@ASYNCIO_ONLY
@pytest.mark.parametrize("close", CLOSES)
@pytest.mark.parametrize("start", ["create_task", "wait_for"])
async def test_aclose_in_an_asyncio_task_started_inside_a_borrowed_connection(
    close: dict[str, Any], start: str
) -> None:
    # A task started inside the block (a plain asyncio task: anyio knows no
    # parent of it) can only finish closing the pool before the block ends.
    import asyncio

    async def aclose(pool: anysmtp.AsyncSMTPPool) -> None:
        if start == "create_task":
            await asyncio.create_task(pool.aclose(**close))
        else:
            await asyncio.wait_for(pool.aclose(**close), TIMEOUT)

    await aclose_inside_a_borrowed_connection(aclose)


@pytest.mark.parametrize(
    "anyio_backend",
    # trio's own nursery, which anyio does not manage.
    [pytest.param(("trio", {}), id="trio")],
)
@pytest.mark.parametrize("close", CLOSES)
async def test_aclose_in_a_trio_nursery_child_inside_a_borrowed_connection(
    close: dict[str, Any],
) -> None:
    import trio

    async def aclose(pool: anysmtp.AsyncSMTPPool) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: pool.aclose(**close))

    await aclose_inside_a_borrowed_connection(aclose)


async def test_a_task_started_inside_a_borrowed_connection_waits_for_the_others() -> (
    None
):
    # Only the block's own connections are the closer's: another task's
    # connection is waited for, from a task started inside the block too.
    async with Closing().serving() as scene:
        await scene.lend()
        async with scene.pool.connection() as smtp:
            scene.release_when_the_close_waits()
            async with anyio.create_task_group() as inner:
                inner.start_soon(scene.close_pool)
            assert scene.pool.size == 1
            await smtp.send_message(message("mine"))
        assert scene.pool.size == 0
    assert scene.mailer.delivered() == ["other", "mine"]
    assert scene.mailer.sessions() == [ONE_MESSAGE] * 2


async def test_a_task_that_outlives_its_block_does_not_own_the_next_loan() -> None:
    # The closer was started inside a block; by the time it closes the pool,
    # that block gave its connection back and another task borrowed the same
    # connection: that loan is not the closer's, so aclose waits for it.
    scene = Closing(max_size=1)
    block_done = anyio.Event()

    async def closer() -> None:
        await block_done.wait()
        await scene.holding.wait()
        await scene.close_pool()

    async with scene.serving():
        async with scene.pool.connection() as smtp:
            scene.group.start_soon(closer)  # copies this block's context
            await smtp.send_message(message("mine"))
        block_done.set()
        await scene.lend()
        scene.release_when_the_close_waits()
    assert (scene.pool.closed, scene.pool.size) == (True, 0)
    assert scene.mailer.delivered() == ["mine", "other"]
    # One connection, lent twice, closed with QUIT once.
    assert scene.mailer.sessions() == [TWO_MESSAGES]


@pytest.mark.parametrize("grace", [2.0, None])
@pytest.mark.parametrize("first_closer_started", ["by the block's task", "by another"])
async def test_a_second_aclose_inside_a_block_does_not_wait_for_it(
    grace: float | None, first_closer_started: str
) -> None:
    # Another task is already closing the pool and waits for every connection
    # lent out; aclose() inside a block must not wait for that first close to
    # wait for the block's own connection (with grace=None: for ever).
    scene = Closing()
    borrowed = anyio.Event()
    first_closing = anyio.Event()

    async def first_closer() -> None:
        await borrowed.wait()
        first_closing.set()
        await scene.pool.aclose(grace=grace)

    async def block() -> None:
        async with scene.pool.connection() as smtp:
            borrowed.set()
            await first_closing.wait()
            await anyio.wait_all_tasks_blocked()  # the first close waits
            await scene.pool.aclose()
            # Neither close took the block's connection from under it.
            await smtp.send_message(message("mine"))

    with anyio.fail_after(TIMEOUT):
        async with scene.serving():
            scene.group.start_soon(first_closer)
            if first_closer_started == "by the block's task":
                await block()
            else:
                scene.group.start_soon(block)
    assert (scene.pool.closed, scene.pool.size) == (True, 0)
    assert scene.mailer.delivered() == ["mine"]
    assert scene.mailer.sessions() == [ONE_MESSAGE]


def sync_pool_for(server: ConcurrentServer) -> anysmtp.SMTPPool:
    return anysmtp.SMTPPool(server.host, server.port, start_tls=False, timeout=TIMEOUT)


@pytest.mark.parametrize("close", CLOSES)
def test_sync_close_inside_a_borrowed_connection_does_not_wait_for_it(
    close: dict[str, Any],
) -> None:
    mailer = Mailer()
    with ConcurrentServer(mailer) as server:
        pool = sync_pool_for(server)
        with pool.connection() as smtp:
            smtp.send_message(message("before"))
            pool.close(**close)
            assert pool.closed
            smtp.send_message(message("after"))
            with pytest.raises(anysmtp.SMTPPoolClosedError):
                pool.send(message("late"))
            with pytest.raises(anysmtp.SMTPPoolClosedError), pool.connection():
                pass
            assert pool.size == 1
        assert pool.size == 0
        pool.close()
    assert mailer.delivered() == ["before", "after"]
    assert mailer.sessions() == [TWO_MESSAGES]


def test_sync_close_inside_a_borrowed_connection_waits_for_other_threads() -> None:
    mailer = Mailer()
    holding = threading.Event()
    errors: list[BaseException] = []

    def other(pool: anysmtp.SMTPPool) -> None:
        try:
            with pool.connection() as smtp:
                holding.set()
                for _ in range(int(TIMEOUT / 0.01)):
                    if pool.closed:
                        break
                    time.sleep(0.01)
                # Still usable: close() waits for this connection to come back.
                smtp.send_message(message("other"))
        except BaseException as exc:
            errors.append(exc)

    with ConcurrentServer(mailer) as server:
        pool = sync_pool_for(server)
        thread = threading.Thread(target=other, args=(pool,))
        thread.start()
        try:
            assert holding.wait(TIMEOUT)
            with pool.connection() as smtp:
                pool.close(grace=None)
                assert pool.size == 1
                smtp.send_message(message("mine"))
        finally:
            thread.join(TIMEOUT)
    assert errors == []
    assert pool.size == 0
    assert mailer.delivered() == ["other", "mine"]
    assert mailer.sessions() == [ONE_MESSAGE] * 2


async def test_a_borrowers_timeout_does_not_stay_with_the_pooled_connection(
    smtpd: AiosmtpdServer,
) -> None:
    async with anysmtp.AsyncSMTPPool(
        smtpd.host, smtpd.port, start_tls=False, timeout=30
    ) as pool:
        async with pool.connection() as smtp:
            smtp.timeout = 0.5
        async with pool.connection() as again:
            assert again is smtp  # the same pooled connection
            assert again.timeout == 30


def _data_refused_then_one_message(conn: ScriptedConnection) -> None:
    """One transaction whose DATA is refused (left open, as smtplib leaves it),
    then RSET and one message accepted."""
    conn.greet_and_ehlo()
    for expected, reply in (
        (b"mail from:", b"250 ok\r\n"),
        (b"rcpt to:", b"250 ok\r\n"),
        (b"data", b"451 4.3.0 try later\r\n"),
        (b"rset", b"250 reset\r\n"),
        (b"mail from:", b"250 ok\r\n"),
        (b"rcpt to:", b"250 ok\r\n"),
        (b"data", b"354 go\r\n"),
    ):
        conn.expect(expected)
        conn.send(reply)
    conn.read_data()
    conn.send(b"250 queued\r\n")
    conn.expect(b"quit")
    conn.send(b"221 bye\r\n")


async def test_a_transaction_a_borrower_left_open_is_reset_before_the_next() -> None:
    # A refused DATA leaves the transaction open (smtplib's data() sends no
    # RSET); a borrower that catches it and leaves the block normally must
    # not hand the next message a "503 nested MAIL".
    with ScriptedServer(_data_refused_then_one_message) as server:
        async with anysmtp.AsyncSMTPPool(
            server.host, server.port, start_tls=False, max_size=1, timeout=TIMEOUT
        ) as pool:
            async with pool.connection() as smtp:
                with pytest.raises(anysmtp.SMTPDataError):
                    await smtp.sendmail("a@example.com", ["b@example.com"], b"x")
            errors, _ = await pool.send(
                b"Subject: y\r\n\r\ny\r\n",
                sender="a@example.com",
                recipients=["b@example.com"],
            )
            assert errors == {}
        assert pool.connections_opened == 1


async def test_a_failed_result_does_not_keep_its_message() -> None:
    # The error's traceback held the frames of the attempt, and with them the
    # message, its envelope and the connection's client, for as long as the
    # result lived (the whole run, for every failure).
    mailer = Mailer(Plan(mail=b"550 5.7.1 sender refused"))
    with ConcurrentServer(mailer) as server:
        async with pool_for(server) as pool:
            item = message("m")
            kept = weakref.ref(item)
            [result] = await pool.send_many([item])
            del item
    gc.collect()
    assert result.status == "failed"
    assert isinstance(result.error, anysmtp.SMTPSenderRefused)
    assert result.error.__traceback__ is None
    assert kept() is None


async def test_borrowing_again_inside_the_only_connection_fails_at_once(
    recorder: AiosmtpdServer,
) -> None:
    # A task inside pool.connection() that asks the pool for another
    # connection, when it already holds every one, would wait for ever.
    async with anysmtp.AsyncSMTPPool(
        recorder.host, recorder.port, start_tls=False, max_size=1, timeout=TIMEOUT
    ) as pool:
        async with pool.connection() as smtp:
            with pytest.raises(RuntimeError, match="wait for ever"):
                await pool.send(message("nested"))
            assert await smtp.noop() == (250, b"OK")
        assert await pool.send(message("after")) == ({}, "OK: queued")


def test_the_sync_pool_refuses_a_nested_borrow_it_could_never_serve(
    recorder: AiosmtpdServer,
) -> None:
    with anysmtp.SMTPPool(
        recorder.host, recorder.port, start_tls=False, max_size=1, timeout=TIMEOUT
    ) as pool:
        with pool.connection() as smtp:
            with pytest.raises(RuntimeError, match="wait for ever"), pool.connection():
                pass
            assert smtp.noop() == (250, b"OK")
        assert pool.send(message("after")) == ({}, "OK: queued")


# Event loops -----------------------------------------------------------------------

Backend = tuple[str, dict[str, Any]]
#: A later run on another backend, and on the same one (a new loop).
LOOP_CHANGES: Final = [
    pytest.param(("asyncio", {}), ("trio", {}), id="asyncio-then-trio"),
    pytest.param(
        ("trio", {}), ("asyncio", {"use_uvloop": True}), id="trio-then-uvloop"
    ),
    pytest.param(("asyncio", {}), ("asyncio", {}), id="asyncio-then-asyncio"),
]


def run_in(backend: Backend, func: Callable[[], Awaitable[object]]) -> None:
    name, options = backend
    anyio.run(func, backend=name, backend_options=options)


@pytest.mark.parametrize(("first", "then"), LOOP_CHANGES)
def test_a_pool_moves_to_the_event_loop_that_uses_it_next(
    first: Backend, then: Backend
) -> None:
    mailer = Mailer()
    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        pool = pool_for(server)
        run_in(first, lambda: pool.send(message("in the first loop")))
        run_in(then, lambda: pool.send(message("in the next loop")))
        # And the run after that closes it.
        run_in(first, pool.aclose)
        server.wait_closed(2)
    assert mailer.delivered() == ["in the first loop", "in the next loop"]
    # The first loop's idle connection was closed with QUIT when the next
    # loop came, and that loop's own one when the pool was closed.
    assert mailer.sessions() == [[*SESSION, "QUIT"], [*SESSION, "QUIT"]]
    assert pool.connections_opened == 2


def test_a_421_pause_carries_over_to_the_next_event_loop() -> None:
    mailer = Mailer(greeting=b"421 4.7.0 too busy")

    async def refused() -> None:
        with pytest.raises(anysmtp.SMTPConnectError):
            await pool.send(message("refused"))

    async def paused() -> None:
        # Still in the pause: no connection is opened before it ends.
        with anyio.move_on_after(0.3) as scope:
            await pool.send(message("paused"))
        assert scope.cancelled_caught

    with ConcurrentServer(mailer) as server:
        pool = pool_for(server, reconnect_backoff=TIMEOUT * 10)
        run_in(("asyncio", {}), refused)
        run_in(("trio", {}), paused)
        run_in(("asyncio", {}), pool.aclose)
    assert server.connections == 1


def test_a_pool_in_use_in_one_event_loop_refuses_another() -> None:
    mailer = Mailer()
    lent, give_back = threading.Event(), threading.Event()
    given_back, finish = threading.Event(), threading.Event()

    async def hold_a_connection() -> None:
        async with pool.connection() as smtp:
            await smtp.noop()
            lent.set()
            await anyio.to_thread.run_sync(give_back.wait, TIMEOUT)
        given_back.set()
        # The loop still runs, with nothing lent.
        await anyio.to_thread.run_sync(finish.wait, TIMEOUT)

    async def send_here() -> None:
        with pytest.raises(RuntimeError, match="in use in another event loop"):
            await pool.send(message("refused"))

    with ConcurrentServer(mailer) as server, no_leaked_sockets(server.port):
        pool = pool_for(server)
        holder = threading.Thread(target=run_in, args=(("trio", {}), hold_a_connection))
        holder.start()
        try:
            assert lent.wait(TIMEOUT)
            run_in(("asyncio", {}), send_here)
            give_back.set()
            assert given_back.wait(TIMEOUT)
            run_in(("asyncio", {}), send_here)
        finally:
            give_back.set()
            finish.set()
            holder.join(TIMEOUT)
        # Once the other loop is done with it, this one may have it.
        run_in(("asyncio", {}), lambda: pool.send(message("later")))
        run_in(("asyncio", {}), pool.aclose)
        server.wait_closed(2)
    assert mailer.delivered() == ["later"]
    assert mailer.sessions() == [["EHLO", "NOOP", "QUIT"], [*SESSION, "QUIT"]]
