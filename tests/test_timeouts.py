"""Timeouts inside a transaction: one cancel scope per ``sendmail`` whose deadline
moves with every wait keeps the per-command meaning of ``timeout``.

* a reply that does not come within ``timeout`` ends the transaction with
  ``SMTPReadTimeoutError`` (an ``SMTPServerDisconnected``), the connection closed;
* a slow server that answers every command within ``timeout`` succeeds, however
  long the whole transaction takes;
* ``total_timeout`` bounds the whole transaction.
"""

from __future__ import annotations

import threading
import time

import anyio
import pytest

import anysmtp
from tests.servers import ScriptedConnection, ScriptedServer, drain

pytestmark = pytest.mark.anyio

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"
MESSAGE = b"Subject: slow\r\n\r\nbody\r\n"
RECEIVED = b"Subject: slow\r\n\r\nbody\r\n.\r\n"

STEPS = ["mail", "rcpt", "data", "final"]


def stalling_script(
    stall_at: str, pipelining: bool, release: threading.Event
) -> ScriptedServer:
    """Answer normally up to ``stall_at``, then send nothing until released."""

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"PIPELINING",) if pipelining else ())
        for step, reply in (
            ("mail", b"250 ok\r\n"),
            ("rcpt", b"250 ok\r\n"),
            ("data", b"354 go ahead\r\n"),
        ):
            conn.read_line()
            if step == stall_at:
                release.wait(10)
                drain(conn)
                return
            conn.send(reply)
        conn.read_data()
        release.wait(10)
        drain(conn)

    return ScriptedServer(script)


@pytest.mark.parametrize(
    ("stall_at", "pipelining"),
    [(step, False) for step in STEPS]
    # Pipelined, the MAIL reply is the first one waited for.
    + [("mail", True), ("final", True)],
    ids=[f"{step}-serial" for step in STEPS] + ["mail-pipelined", "final-pipelined"],
)
async def test_stalled_reply_times_out_and_closes(
    anyio_backend: str, stall_at: str, pipelining: bool
) -> None:
    release = threading.Event()
    server = stalling_script(stall_at, pipelining, release)
    with server:
        smtp = anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, timeout=0.3, start_tls=False
        )
        try:
            await smtp.connect()
            with pytest.raises(anysmtp.SMTPReadTimeoutError) as caught:
                await smtp.sendmail(ALICE, [BOB], MESSAGE)
            assert isinstance(caught.value, anysmtp.SMTPServerDisconnected)
            assert str(caught.value) == (
                "Timed out waiting for the server's reply after 0.3 seconds"
            )
            assert not smtp.is_connected
            assert smtp.sock is None
            # Only a stall after the whole message leaves its fate unknown.
            assert smtp.final_reply_pending is (stall_at == "final")
        finally:
            release.set()
            smtp.close()


def slow_script(delay: float, received: list[bytes]) -> ScriptedServer:
    """Every reply comes ``delay`` seconds after its command."""

    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 slow\r\n")
        while line := conn.read_line():
            time.sleep(delay)
            verb = line[:4].lower()
            if verb == b"ehlo":
                conn.send(b"250 slow\r\n")
            elif verb == b"data":
                conn.send(b"354 go ahead\r\n")
                received.append(conn.read_data())
                time.sleep(delay)
                conn.send(b"250 queued\r\n")
            elif verb == b"quit":
                conn.send(b"221 bye\r\n")
                return
            else:
                conn.send(b"250 ok\r\n")

    return ScriptedServer(script)


async def test_timeout_is_per_command_not_per_transaction(anyio_backend: str) -> None:
    # Seven replies of 0.1 s each: far longer in all than the 0.4 s timeout.
    received: list[bytes] = []
    with slow_script(0.1, received) as server:
        async with anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, timeout=0.4, start_tls=False
        ) as smtp:
            assert await smtp.sendmail(ALICE, [BOB, CAROL, ALICE], MESSAGE) == {}
            # The scope of the transaction is gone: later commands time out on
            # their own terms.
            assert await smtp.noop() == (250, b"ok")
    assert received == [RECEIVED]


async def test_total_timeout_bounds_the_transaction(anyio_backend: str) -> None:
    received: list[bytes] = []
    with slow_script(0.1, received) as server:
        async with anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, timeout=0.4, start_tls=False
        ) as smtp:
            with pytest.raises(anysmtp.SMTPTimeoutError) as caught:
                await smtp.sendmail(
                    ALICE, [BOB, CAROL, ALICE], MESSAGE, total_timeout=0.35
                )
            assert not isinstance(caught.value, anysmtp.SMTPReadTimeoutError)
            assert "within 0.35 seconds" in str(caught.value)
            assert not smtp.is_connected


async def test_reconnect_after_a_timeout(anyio_backend: str) -> None:
    release = threading.Event()
    server = stalling_script("final", False, release)
    received: list[bytes] = []
    with server, slow_script(0, received) as healthy:
        smtp = anysmtp.AsyncSMTP(timeout=0.3, start_tls=False)
        try:
            await smtp.connect(hostname=server.host, port=server.port)
            with pytest.raises(anysmtp.SMTPReadTimeoutError):
                await smtp.sendmail(ALICE, [BOB], MESSAGE)
            await smtp.connect(hostname=healthy.host, port=healthy.port)
            assert await smtp.sendmail(ALICE, [BOB], MESSAGE) == {}
            await smtp.quit()
        finally:
            release.set()
            smtp.close()
    assert received == [RECEIVED]


def test_facade_timeout_inside_sendmail() -> None:
    release = threading.Event()
    server = stalling_script("mail", True, release)
    with server:
        smtp = anysmtp.SMTP(server.host, server.port, timeout=0.3)
        try:
            with pytest.raises(anysmtp.SMTPServerDisconnected) as caught:
                smtp.sendmail(ALICE, [BOB], MESSAGE)
            assert isinstance(caught.value, TimeoutError)
            assert smtp.sock is None
        finally:
            release.set()
            smtp.close()


# timeout=None (smtplib's default): waits as long as it takes ----------------------


def noop_script(delays: list[float], release: threading.Event) -> ScriptedServer:
    """Greeting, then one NOOP per delay, each answered that many seconds late;
    then nothing until released."""

    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 scripted\r\n")
        for delay in delays:
            conn.expect(b"noop")
            time.sleep(delay)
            conn.send(b"250 ok\r\n")
        release.wait(10)
        drain(conn)

    return ScriptedServer(script)


async def test_no_timeout_outlasts_an_earlier_timeout(anyio_backend: str) -> None:
    # The first NOOP waits under a 0.3 s timeout (on asyncio that sets the
    # connection's timer); the second, with no timeout, outlasts that timer.
    release = threading.Event()
    with noop_script([0.05, 0.6], release) as server:
        smtp = anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, timeout=0.3, start_tls=False
        )
        try:
            await smtp.connect()
            assert await smtp.noop() == (250, b"ok")
            smtp.timeout = None
            assert await smtp.noop() == (250, b"ok")
        finally:
            release.set()
            smtp.close()
    assert server.transcript.endswith(b"noop\r\nnoop\r\n")


@pytest.mark.parametrize("how", ["cancelled", "closed"])
async def test_a_wait_with_no_timeout_ends_when_cancelled_or_closed(
    anyio_backend: str, how: str
) -> None:
    release = threading.Event()
    with noop_script([], release) as server:
        smtp = anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, timeout=None, start_tls=False
        )
        try:
            await smtp.connect()
            if how == "cancelled":
                with anyio.move_on_after(0.3) as scope:
                    await smtp.noop()
                assert scope.cancelled_caught
            else:
                async with anyio.create_task_group() as group:

                    async def wait_for_noop() -> None:
                        with pytest.raises(anysmtp.SMTPServerDisconnected):
                            await smtp.noop()

                    group.start_soon(wait_for_noop)
                    await anyio.wait_all_tasks_blocked()
                    smtp.close()
            # Out of step with the server: the connection is not used again.
            assert not smtp.is_connected
        finally:
            release.set()
            smtp.close()
