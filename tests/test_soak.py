"""Soak: thousands of messages over reused and fresh connections, with refusals
and disconnections mixed in, and nothing left behind.

Each client (the async API on every backend, and the sync facade) sends
``ANYSMTP_SOAK_MESSAGES`` messages (1,000 by default, 20,000 with
``make soak``) to :class:`SoakServer`, a small asyncio SMTP server in a thread
(aiosmtpd is too slow for this).  What happens to message ``i`` is fixed by
:data:`PLAN`: delivered, one recipient refused, every recipient refused, the
sender refused, or the server hanging up in the middle of the envelope; every
:data:`FRESH_EVERY`-th message goes over a connection of its own, the others over
one connection that is reused (and reopened after each hang-up).

The test counts every outcome and compares with the plan, checks that the server
received exactly the messages that were accepted (each once, byte for byte), and
that open file descriptors, threads (the facade's portal thread included) and
traced memory are back to where they were after a warm-up.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import gc
import os
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import pytest

import anysmtp

pytestmark = pytest.mark.soak

#: Messages per client; ``make soak`` sets 20000.
MESSAGES: Final = int(os.environ.get("ANYSMTP_SOAK_MESSAGES", "1000"))
#: Messages sent first, to reach a steady state before the baseline is taken.
WARM_UP: Final = 60
#: Every FRESH_EVERY-th message has a connection of its own.
FRESH_EVERY: Final = 7
#: How much traced memory may grow over the run: far less than any per-message
#: leak adds up to over 20,000 messages, far more than the allocator's noise.
MEMORY_TOLERANCE: Final = 512 * 1024
TIMEOUT: Final = 10.0

LOCAL: Final = "client.example"
SENDER: Final = "alice@soak.test"
REFUSED_SENDER: Final = "refused@soak.test"
GOOD: Final = "bob@soak.test"
NOBODY: Final = "nobody@soak.test"
#: A recipient the server hangs up on.
HANG_UP: Final = "hang-up@soak.test"


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    ONE_REFUSED = "one recipient refused"
    ALL_REFUSED = "every recipient refused"
    SENDER_REFUSED = "sender refused"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    outcome: Outcome


#: What happens to message i: PLAN[i % len(PLAN)].
PLAN: Final = (
    Envelope(SENDER, (GOOD,), Outcome.DELIVERED),
    Envelope(SENDER, (GOOD, NOBODY), Outcome.ONE_REFUSED),
    Envelope(SENDER, (GOOD, GOOD), Outcome.DELIVERED),
    Envelope(REFUSED_SENDER, (GOOD,), Outcome.SENDER_REFUSED),
    Envelope(SENDER, (NOBODY,), Outcome.ALL_REFUSED),
    Envelope(SENDER, (GOOD,), Outcome.DELIVERED),
    Envelope(SENDER, (GOOD, HANG_UP), Outcome.DISCONNECTED),
    Envelope(SENDER, (NOBODY, GOOD), Outcome.ONE_REFUSED),
    Envelope(SENDER, (GOOD,), Outcome.DELIVERED),
)
DELIVERING: Final = (Outcome.DELIVERED, Outcome.ONE_REFUSED)


def message(number: int) -> bytes:
    """Message ``number``: its id in a header, and a body of varying size."""
    lines = [b"line %d of message %d" % (n, number) for n in range(number % 13)]
    return (
        b"Message-ID: <%d@soak.test>\r\nSubject: soak %d\r\n\r\n" % (number, number)
        + b"".join(line + b"\r\n" for line in lines)
        + b"end\r\n"
    )


def expected_outcomes(first: int, count: int) -> collections.Counter[Outcome]:
    return collections.Counter(
        PLAN[number % len(PLAN)].outcome for number in range(first, first + count)
    )


# The server -------------------------------------------------------------------------

_MESSAGE_ID: Final = re.compile(rb"\AMessage-ID: <(\d+)@soak\.test>\r\n")


class SoakServer:
    """A fast SMTP server on loopback, in a thread with its own asyncio loop.

    It refuses :data:`REFUSED_SENDER` (553) and :data:`NOBODY` (550), hangs up
    when it reads a RCPT for :data:`HANG_UP`, offers PIPELINING, and counts
    each message it accepts in :attr:`received` (by the number in its
    Message-ID), after checking it byte for byte.

    :param messages: how many message numbers to count.
    """

    host = "127.0.0.1"

    def __init__(self, messages: int) -> None:
        #: How many times each message was accepted.
        self.received = bytearray(messages)
        #: What went wrong on the server's side.
        self.errors: list[str] = []
        self._open = 0
        self._sock = socket.socket()
        self._sock.bind((self.host, 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def open_connections(self) -> int:
        return self._open

    def _record(self, data: bytes) -> None:
        found = _MESSAGE_ID.match(data)
        if found is None:
            self.errors.append(f"no Message-ID: {data[:60]!r}")
            return
        number = int(found.group(1))
        if data != message(number) + b".\r\n":
            self.errors.append(f"message {number} differs: {data[:60]!r}")
            return
        self.received[number] += 1

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._open += 1
        # Each reply leaves at once: with Nagle's algorithm the replies to a
        # pipelined batch would wait for the client's delayed ACK.
        writer.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except Exception as exc:
            self.errors.append(repr(exc))
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
            self._open -= 1

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"220 soak ESMTP\r\n")
        in_transaction = False
        recipients = 0
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                reply = b"250-soak\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            elif verb == b"MAIL":
                in_transaction = REFUSED_SENDER.encode() not in line
                recipients = 0
                reply = b"250 ok\r\n" if in_transaction else b"553 5.7.1 no\r\n"
            elif verb == b"RCPT":
                if HANG_UP.encode() in line:
                    return
                if not in_transaction:
                    reply = b"503 5.5.1 MAIL first\r\n"
                elif NOBODY.encode() in line:
                    reply = b"550 5.1.1 no such user\r\n"
                else:
                    recipients += 1
                    reply = b"250 ok\r\n"
            elif verb == b"DATA":
                if not (in_transaction and recipients):
                    reply = b"554 5.5.1 no valid recipients\r\n"
                else:
                    writer.write(b"354 go ahead\r\n")
                    self._record(await reader.readuntil(b"\r\n.\r\n"))
                    in_transaction = False
                    reply = b"250 2.0.0 queued\r\n"
            elif verb == b"RSET":
                in_transaction = False
                reply = b"250 ok\r\n"
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                reply = b"500 5.5.2 what?\r\n"
            writer.write(reply)
            await writer.drain()

    def wait_idle(self) -> None:
        """Wait until every connection is closed on the server's side too."""
        deadline = time.monotonic() + 10
        while self._open:
            assert time.monotonic() < deadline, "the server kept connections open"
            time.sleep(0.005)

    def __enter__(self) -> SoakServer:
        self._thread.start()

        async def serve() -> asyncio.Server:
            return await asyncio.start_server(self._handle, sock=self._sock)

        future = asyncio.run_coroutine_threadsafe(serve(), self._loop)
        self._server = future.result(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            # Connections a failed test left open.
            current = asyncio.current_task()
            tasks = [each for each in asyncio.all_tasks() if each is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# What is measured -------------------------------------------------------------------


def open_files() -> collections.Counter[str]:
    """What this process's file descriptors point to: sockets and pipes by
    inode, so that one closed by someone else's finalizer (in the middle of a
    whole test run) and one opened and leaked never cancel out."""
    found: collections.Counter[str] = collections.Counter()
    for name in os.listdir("/proc/self/fd"):
        try:
            found[os.readlink(f"/proc/self/fd/{name}")] += 1
        except FileNotFoundError:
            pass  # the listing's own descriptor, closed by now
    return found


@dataclass(frozen=True)
class Resources:
    files: collections.Counter[str]
    threads: frozenset[threading.Thread]
    memory: int

    @classmethod
    def now(cls) -> Resources:
        gc.collect()
        return cls(
            open_files(),
            frozenset(threading.enumerate()),
            tracemalloc.get_traced_memory()[0],
        )

    def leaked_since(self, before: Resources) -> list[str]:
        """What was opened or started since ``before`` and is still there (a
        thread that ended meanwhile, trio's idle worker say, is no leak)."""
        leaks = [f"file {name}" for name in (self.files - before.files).elements()]
        leaks += [f"thread {thread.name}" for thread in self.threads - before.threads]
        return leaks


@contextmanager
def traced_memory() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def check_run(
    server: SoakServer,
    outcomes: collections.Counter[Outcome],
    first: int,
    count: int,
) -> None:
    """The outcomes are the plan's, and the server got exactly the accepted
    messages, each once."""
    assert outcomes == expected_outcomes(first, count)
    assert server.errors == []
    for number in range(first, first + count):
        delivered = PLAN[number % len(PLAN)].outcome in DELIVERING
        assert server.received[number] == delivered, number


def portals(threads: frozenset[threading.Thread]) -> set[threading.Thread]:
    return {each for each in threads if each.name.startswith("anysmtp-portal-")}


def check_resources(before: Resources, after: Resources) -> None:
    assert after.leaked_since(before) == []
    # The facade's portal threads are the very ones they were: none died,
    # none was started again.
    assert portals(after.threads) == portals(before.threads)
    growth = after.memory - before.memory
    assert growth < MEMORY_TOLERANCE, f"traced memory grew by {growth} bytes"


def classify(result: object, envelope: Envelope) -> Outcome:
    """The outcome of one sendmail() (its result or exception), checked."""
    if isinstance(result, anysmtp.SMTPServerDisconnected):
        return Outcome.DISCONNECTED
    if isinstance(result, anysmtp.SMTPSenderRefused):
        assert (result.smtp_code, result.sender) == (553, REFUSED_SENDER)
        return Outcome.SENDER_REFUSED
    if isinstance(result, anysmtp.SMTPRecipientsRefused):
        assert result.recipients == {NOBODY: (550, b"5.1.1 no such user")}
        return Outcome.ALL_REFUSED
    if result == {}:
        return Outcome.DELIVERED
    assert result == {NOBODY: (550, b"5.1.1 no such user")}, result
    return Outcome.ONE_REFUSED


# The async API ----------------------------------------------------------------------


async def attempt(call: Awaitable[object]) -> object:
    try:
        return await call
    except (
        anysmtp.SMTPServerDisconnected,
        anysmtp.SMTPSenderRefused,
        anysmtp.SMTPRecipientsRefused,
    ) as exc:
        if isinstance(exc, anysmtp.SMTPTimeoutError):
            raise
        return exc


async def soak_async(
    server: SoakServer, first: int, count: int
) -> collections.Counter[Outcome]:
    """Send messages ``first`` to ``first + count - 1``; count the outcomes."""

    def client(pipelining: bool) -> anysmtp.AsyncSMTP:
        return anysmtp.AsyncSMTP(
            server.host,
            server.port,
            local_hostname=LOCAL,
            timeout=TIMEOUT,
            start_tls=False,
            pipelining=pipelining,
        )

    outcomes: collections.Counter[Outcome] = collections.Counter()
    reused = client(pipelining=True)
    try:
        for number in range(first, first + count):
            envelope = PLAN[number % len(PLAN)]
            send = (envelope.sender, list(envelope.recipients), message(number))
            if number % FRESH_EVERY == 0:
                # A connection of its own, without pipelining.
                async with client(pipelining=False) as fresh:
                    result = await attempt(fresh.sendmail(*send))
            else:
                if not reused.is_connected:
                    await reused.connect()
                result = await attempt(reused.sendmail(*send))
            outcomes[classify(result, envelope)] += 1
        if reused.is_connected:
            await reused.quit()
    finally:
        reused.close()
    return outcomes


@pytest.mark.anyio
async def test_async_api() -> None:
    with SoakServer(WARM_UP + MESSAGES) as server, traced_memory():
        check_run(server, await soak_async(server, 0, WARM_UP), 0, WARM_UP)
        server.wait_idle()
        before = Resources.now()
        check_run(
            server, await soak_async(server, WARM_UP, MESSAGES), WARM_UP, MESSAGES
        )
        server.wait_idle()
        after = Resources.now()
    check_resources(before, after)


# The sync facade ----------------------------------------------------------------------


def attempt_sync(
    send: Callable[[str, list[str], bytes], object],
    sender: str,
    recipients: list[str],
    body: bytes,
) -> object:
    try:
        return send(sender, recipients, body)
    except (
        anysmtp.SMTPServerDisconnected,
        anysmtp.SMTPSenderRefused,
        anysmtp.SMTPRecipientsRefused,
    ) as exc:
        if isinstance(exc, anysmtp.SMTPTimeoutError):
            raise
        return exc


def soak_facade(
    server: SoakServer, first: int, count: int
) -> collections.Counter[Outcome]:
    outcomes: collections.Counter[Outcome] = collections.Counter()
    reused = anysmtp.SMTP(local_hostname=LOCAL, timeout=TIMEOUT)
    try:
        for number in range(first, first + count):
            envelope = PLAN[number % len(PLAN)]
            sender, recipients = envelope.sender, list(envelope.recipients)
            body = message(number)
            if number % FRESH_EVERY == 0:
                with anysmtp.SMTP(
                    server.host, server.port, local_hostname=LOCAL, timeout=TIMEOUT
                ) as fresh:
                    result = attempt_sync(fresh.sendmail, sender, recipients, body)
            else:
                if not reused.is_connected:
                    reused.connect(server.host, server.port)
                result = attempt_sync(reused.sendmail, sender, recipients, body)
            outcomes[classify(result, envelope)] += 1
        if reused.is_connected:
            reused.quit()
    finally:
        reused.close()
    return outcomes


def test_facade() -> None:
    with SoakServer(WARM_UP + MESSAGES) as server, traced_memory():
        check_run(server, soak_facade(server, 0, WARM_UP), 0, WARM_UP)
        server.wait_idle()
        before = Resources.now()
        check_run(server, soak_facade(server, WARM_UP, MESSAGES), WARM_UP, MESSAGES)
        server.wait_idle()
        after = Resources.now()
    check_resources(before, after)
