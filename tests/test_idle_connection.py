"""A connection between calls: what the server may do to an idle client, and
what the client's owner may do to it (drop it, take its socket, move it to
another event loop), on every backend.

On asyncio the connection's reader stays registered in the loop between calls
(it *parks*), so these are the moments when the loop, not a call, reads the
socket.  The outcomes must be those of a client that reads nothing between
calls; and a parked reader must never outlive its socket, or the loop would
keep an entry for a descriptor number that the next socket gets (asyncio
would then never see that socket ready).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import anyio
import pytest

import anysmtp
from tests.descriptors import is_open, lowest_free_descriptor, next_descriptor_is
from tests.servers import ScriptedConnection, ScriptedServer, drain, exchange

pytestmark = pytest.mark.anyio

T = TypeVar("T")

MESSAGE = b"Subject: idle\r\n\r\nbody\r\n"
#: What the server receives for it, after EHLO.
TRANSACTION = (
    b"mail FROM:<a@example.com>\r\nrcpt TO:<b@example.com>\r\ndata\r\n"
    + MESSAGE
    + b".\r\n"
)


def one_message(conn: ScriptedConnection) -> None:
    """Greeting, EHLO with PIPELINING, and one message accepted."""
    conn.greet_and_ehlo((b"PIPELINING",))
    conn.expect(b"mail from:")
    conn.expect(b"rcpt to:")
    conn.expect(b"data")
    conn.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
    conn.read_data()
    # The client waits for this reply: on asyncio its reader is registered
    # then, and parks.
    time.sleep(0.05)
    conn.send(b"250 queued\r\n")


def one_message_then_drain(conn: ScriptedConnection) -> None:
    one_message(conn)
    drain(conn)


def after_ehlo(transcripts: list[bytes]) -> list[bytes]:
    """What each connection received after its EHLO line."""
    return [each.partition(b"\r\n")[2] for each in transcripts]


def client_for(server: ScriptedServer) -> anysmtp.AsyncSMTP:
    return anysmtp.AsyncSMTP(
        hostname=server.host, port=server.port, start_tls=False, timeout=5
    )


async def send_one(smtp: anysmtp.AsyncSMTP) -> None:
    assert await smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}


async def idle(until: Callable[[], bool]) -> None:
    """Leave the client idle (the event loop running) until ``until()``."""

    def wait() -> None:
        deadline = time.monotonic() + 5
        while not until():
            assert time.monotonic() < deadline, "the server did not get there"
            time.sleep(0.01)

    await anyio.to_thread.run_sync(wait)
    # And a little longer: the loop runs the parked reader for what arrived.
    await anyio.sleep(0.05)


async def assert_number_reusable(server: ScriptedServer, number: int) -> None:
    """A new client whose socket gets descriptor ``number`` sends a message.

    Were the loop still polling an old entry for that number, it would never
    see the new socket ready, and the greeting would time out.
    """
    with next_descriptor_is(number):
        again = client_for(server)
        await again.connect()
    await send_one(again)
    assert again.sock is not None
    assert again.sock.fileno() == number
    again.close()


# What the server does to an idle connection -------------------------------------


@pytest.mark.parametrize("how", ["close", "421 then close", "421", "reset"])
async def test_the_server_ending_an_idle_connection(
    how: Literal["close", "421 then close", "421", "reset"],
) -> None:
    ended = threading.Event()

    def script(conn: ScriptedConnection) -> None:
        one_message(conn)
        if how.startswith("421"):
            conn.send(b"421 4.4.2 idle for too long\r\n")
        if how == "reset":
            conn.reset()
            ended.set()
            return
        if how.endswith("close"):
            socket.socket.shutdown(conn.sock, socket.SHUT_WR)
        ended.set()
        drain(conn)

    with ScriptedServer(script) as server:
        smtp = client_for(server)
        await smtp.connect()
        await send_one(smtp)
        await idle(ended.is_set)
        if how.startswith("421"):
            # As smtplib: the reply that is there is the answer to NOOP.
            assert await smtp.noop() == (421, b"4.4.2 idle for too long")
        if how != "421":
            with pytest.raises(anysmtp.SMTPServerDisconnected):
                await smtp.noop()
            assert not smtp.is_connected
        smtp.close()
    if how != "reset":
        noops = b"noop\r\n" * (2 if how == "421 then close" else 1)
        assert server.transcript.endswith(TRANSACTION + noops)


async def test_a_server_talking_to_an_idle_client_cannot_fill_our_memory() -> None:
    # The server floods the idle client.  It reads at most a little of it (on
    # asyncio a parked reader stops at its read-ahead limit): the rest stays in
    # the socket buffers and the server's sends block.
    flooded: list[int] = []

    def script(conn: ScriptedConnection) -> None:
        one_message(conn)
        flooded.append(conn.send_endless(b"250 out of turn\r\n" * 4096))

    with ScriptedServer(script) as server:
        smtp = client_for(server)
        await smtp.connect()
        await send_one(smtp)
        await anyio.sleep(0.5)
        # The first of them answers NOOP, as in smtplib.
        assert await smtp.noop() == (250, b"out of turn")
        smtp.close()
    [sent] = flooded
    assert sent < 64 * 1024 * 1024


# What the owner does to an idle client -------------------------------------------


@pytest.mark.usefixtures("no_cyclic_gc")
async def test_a_client_dropped_while_idle_frees_its_descriptor_number() -> None:
    with ScriptedServer(one_message_then_drain, connections=2) as server:
        number = lowest_free_descriptor()
        smtp = client_for(server)
        await smtp.connect()
        await send_one(smtp)
        with pytest.warns(ResourceWarning, match="unclosed"):
            del smtp
        assert lowest_free_descriptor() <= number  # its socket is closed
        await idle(lambda: len(server.transcripts) == 1)
        await assert_number_reusable(server, number)
    assert after_ehlo(server.transcripts) == [TRANSACTION] * 2


@pytest.mark.parametrize("how", ["sock", "get_transport_info"])
async def test_code_that_takes_the_socket_may_close_it(
    how: Literal["sock", "get_transport_info"],
) -> None:
    # smtplib code reaches for ``smtp.sock`` (to close it, say); from then on
    # the socket may close behind the client's back at any time.
    with ScriptedServer(one_message_then_drain, connections=2) as server:
        smtp = client_for(server)
        await smtp.connect()
        await send_one(smtp)
        sock = smtp.sock if how == "sock" else smtp.get_transport_info("socket")
        assert isinstance(sock, socket.socket)
        number = sock.fileno()
        sock.close()
        assert not smtp.is_connected
        await idle(lambda: len(server.transcripts) == 1)
        # Before the client is used again (which would tidy up).
        await assert_number_reusable(server, number)
        with pytest.raises(anysmtp.SMTPServerDisconnected):
            await smtp.noop()
    assert after_ehlo(server.transcripts) == [TRANSACTION] * 2


async def test_a_socket_from_a_replaced_get_socket_stays_its_makers() -> None:
    # smtplib's hook, replaced on the instance: the socket it makes may be
    # closed by the code that made it, without ever asking for ``sock``.
    made: list[socket.socket] = []
    with ScriptedServer(one_message_then_drain, connections=2) as server:
        smtp = client_for(server)
        own = smtp._get_socket

        async def get_socket(
            host: str, port: int, timeout: float | None
        ) -> socket.socket:
            sock = await own(host, port, timeout)
            made.append(sock)
            return sock

        smtp._get_socket = get_socket  # type: ignore[method-assign]
        await connect_and_send(smtp)
        [sock] = made
        number = sock.fileno()
        sock.close()
        await idle(lambda: len(server.transcripts) == 1)
        await assert_number_reusable(server, number)
    assert after_ehlo(server.transcripts) == [TRANSACTION] * 2


async def test_adopting_a_closed_socket_fails_cleanly() -> None:
    smtp = anysmtp.AsyncSMTP(start_tls=False)
    sock = socket.socket()
    sock.close()
    with pytest.raises(OSError, match="Bad file descriptor"):
        smtp.sock = sock
    assert not smtp.is_connected


# Other threads and other event loops (asyncio's own machinery) ----------------


class LoopThread:
    """An asyncio loop running in a thread of its own, as in a program that
    keeps its loop in a background thread and uses the client from others."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` in the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep the loop's thread busy (in a callback) for the block: what is
        handed to it waits."""
        busy, release = threading.Event(), threading.Event()

        def hold() -> None:
            busy.set()
            release.wait(10)

        self.loop.call_soon_threadsafe(hold)
        assert busy.wait(10)
        try:
            yield
        finally:
            release.set()
        self.run(asyncio.sleep(0))  # after what it was handed meanwhile


async def connect_and_send(smtp: anysmtp.AsyncSMTP) -> None:
    await smtp.connect()
    await send_one(smtp)


def server_saw_the_end(server: ScriptedServer) -> bool:
    """Wait until the server's first connection has ended."""
    deadline = time.monotonic() + 5
    while len(server.transcripts) < 1:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass
class Parked:
    """A client whose reader is parked in a loop running in another thread."""

    server: ScriptedServer
    background: LoopThread
    #: The client; set to ``None`` to drop it.
    client: anysmtp.AsyncSMTP | None
    #: Its socket's descriptor number.
    number: int


@contextmanager
def parked_in_a_loop_thread() -> Iterator[Parked]:
    """A client that has sent one message from a loop running in another
    thread; the server takes one more connection, and has received both
    messages by the end of the block."""
    with (
        ScriptedServer(one_message_then_drain, connections=2) as server,
        LoopThread() as background,
    ):
        number = lowest_free_descriptor()
        parked = Parked(server, background, client_for(server), number)
        assert parked.client is not None
        background.run(connect_and_send(parked.client))
        yield parked
    assert after_ehlo(server.transcripts) == [TRANSACTION] * 2


@pytest.mark.usefixtures("no_cyclic_gc")
def test_a_client_dropped_outside_its_loops_thread() -> None:
    # Only the loop's thread may change its selector: the parked reader is
    # removed there, and only then is the socket freed (closed first, its
    # number could go to a socket that the loop would never see ready).
    with parked_in_a_loop_thread() as parked:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with parked.background.held():
                parked.client = None
                # Until the loop's thread has removed the reader.
                assert is_open(parked.number)
        assert [str(each.message)[:15] for each in caught] == ["unclosed <socke"]
        assert not is_open(parked.number)
        parked.background.run(assert_number_reusable(parked.server, parked.number))


def test_close_outside_the_loops_thread() -> None:
    # The server sees the connection end at once; the descriptor is closed by
    # the loop's thread, once its reader is gone.
    with parked_in_a_loop_thread() as parked:
        smtp = parked.client
        assert smtp is not None
        with parked.background.held():
            smtp.close()
            assert not smtp.is_connected
            assert server_saw_the_end(parked.server)
            assert is_open(parked.number)
        assert not is_open(parked.number)
        parked.background.run(assert_number_reusable(parked.server, parked.number))


@pytest.mark.usefixtures("no_cyclic_gc")
def test_a_close_left_queued_in_a_loop_that_stopped_still_closes_the_socket() -> None:
    # The loop stops in the very turn in which another thread's close() hands
    # it the rest of the close: closing the loop drops that unrun, and with
    # it the last reference to the connection, whose socket must then close
    # quietly (the selector is gone), not be left to warn.
    with ScriptedServer(one_message_then_drain) as server:
        number = lowest_free_descriptor()
        smtp = client_for(server)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with LoopThread() as background:
                background.run(connect_and_send(smtp))

                def close_then_stop() -> None:
                    closer = threading.Thread(target=smtp.close)
                    closer.start()
                    closer.join(10)
                    background.loop.stop()

                background.loop.call_soon_threadsafe(close_then_stop)
                assert server_saw_the_end(server)
            assert not is_open(number)
        assert caught == []
    assert after_ehlo(server.transcripts) == [TRANSACTION]


def test_taking_the_socket_outside_the_loops_thread() -> None:
    # The caller may close the socket as soon as it has it: it gets it once
    # the loop's thread has removed the parked reader.
    taken: list[socket.socket | None] = []
    with parked_in_a_loop_thread() as parked:
        smtp = parked.client
        assert smtp is not None
        taker = threading.Thread(target=lambda: taken.append(smtp.sock))
        with parked.background.held():
            taker.start()
            taker.join(0.2)
            assert taker.is_alive()  # waiting for the loop's thread
        taker.join(10)
        [sock] = taken
        assert sock is not None
        assert sock.fileno() == parked.number
        sock.close()
        assert server_saw_the_end(parked.server)
        parked.background.run(assert_number_reusable(parked.server, parked.number))


@pytest.mark.parametrize("first_loop", ["closed", "open"])
def test_a_client_used_again_in_another_event_loop(
    first_loop: Literal["closed", "open"],
) -> None:
    # A script that runs asyncio.run() more than once with one client (or
    # keeps its first loop open but no longer runs it).
    def script(conn: ScriptedConnection) -> None:
        one_message(conn)
        conn.expect(b"mail from:")
        conn.expect(b"rcpt to:")
        conn.expect(b"data")
        conn.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        conn.read_data()
        conn.send(b"250 queued\r\n")
        exchange(conn, (b"quit", b"221 bye\r\n"))

    async def send_and_quit(smtp: anysmtp.AsyncSMTP) -> None:
        await send_one(smtp)
        await smtp.quit()

    with ScriptedServer(script) as server:
        smtp = client_for(server)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(connect_and_send(smtp))
            if first_loop == "closed":
                loop.close()
            asyncio.run(send_and_quit(smtp))
        finally:
            loop.close()
    assert server.transcript.endswith(TRANSACTION * 2 + b"quit\r\n")
