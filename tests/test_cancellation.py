"""Cancelling a transaction at each of its waits, on every backend: the
connection is closed (nothing half-read is ever taken for a later reply), no
descriptor leaks, the cancellation is not mistaken for a timeout, and the same
object connects and sends again.
"""

from __future__ import annotations

import os
import threading

import anyio
import pytest

import anysmtp
from tests.servers import ScriptedConnection, ScriptedServer, drain

pytestmark = pytest.mark.anyio

ALICE = "alice@example.com"
BOB = "bob@example.com"
MESSAGE = b"Subject: cancelled\r\n\r\nbody\r\n"
#: Larger than a chunk: the upload itself has waits.
BIG = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"

STEPS = ["mail", "rcpt", "data", "body", "final"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def script_for(
    stall_at: str,
    extensions: tuple[bytes, ...],
    stalled: threading.Event,
    release: threading.Event | None = None,
) -> ScriptedServer:
    """First connection: answer up to ``stall_at``, then wait for the client to
    give up.  Second connection: a healthy transaction."""
    sessions = iter(["stalling", "healthy"])

    def stall(conn: ScriptedConnection) -> None:
        stalled.set()
        drain(conn)

    def script(conn: ScriptedConnection) -> None:
        healthy = next(sessions) == "healthy"
        conn.greet_and_ehlo(extensions)
        for step, reply in (
            ("mail", b"250 ok\r\n"),
            ("rcpt", b"250 ok\r\n"),
            ("data", b"354 go ahead\r\n"),
        ):
            conn.read_line()
            if step == stall_at and not healthy:
                return stall(conn)
            conn.send(reply)
        if stall_at == "body" and not healthy:
            # Read nothing more: the client blocks on a full socket buffer.
            stalled.set()
            (release or threading.Event()).wait(5)
            return None
        conn.read_data()
        if stall_at == "final" and not healthy:
            return stall(conn)
        conn.send(b"250 queued\r\n")
        conn.expect(b"quit")
        conn.send(b"221 bye\r\n")
        return None

    return ScriptedServer(script, connections=2)


@pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])
@pytest.mark.parametrize("stall_at", STEPS)
async def test_cancel_at_each_wait(
    anyio_backend: str, stall_at: str, pipelining: bool
) -> None:
    stalled, release = threading.Event(), threading.Event()
    extensions = (b"PIPELINING",) if pipelining else ()
    message = BIG * 16 * 1024 if stall_at == "body" else MESSAGE  # 16 MiB
    before = open_fds()
    with script_for(stall_at, extensions, stalled, release) as server:
        smtp = anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, timeout=10, start_tls=False
        )
        await smtp.connect()
        sock = smtp.sock
        assert sock is not None
        with anyio.move_on_after(0.3) as scope:
            await smtp.sendmail(ALICE, [BOB], message)
        release.set()
        assert scope.cancelled_caught  # cancelled, not timed out
        assert stalled.is_set()
        assert (smtp.is_connected, smtp.sock) == (False, None)
        assert sock.fileno() == -1
        await smtp.connect()
        assert await smtp.sendmail(ALICE, [BOB], MESSAGE) == {}
        assert await smtp.quit() == (221, b"bye")
    assert open_fds() == before
    second = server.transcripts[1]
    assert second.endswith(
        b"mail FROM:<alice@example.com>\r\nrcpt TO:<bob@example.com>\r\ndata\r\n"
        + MESSAGE
        + b".\r\nquit\r\n"
    )


async def test_cancel_from_another_task_during_sendmail(anyio_backend: str) -> None:
    stalled = threading.Event()
    with script_for("final", (b"PIPELINING",), stalled) as server:
        smtp = anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, timeout=10, start_tls=False
        )
        await smtp.connect()
        outcome: list[str] = []

        async def send() -> None:
            with anyio.CancelScope() as scope:
                cancel_scopes.append(scope)
                await smtp.sendmail(ALICE, [BOB], MESSAGE)
                outcome.append("sent")
            if scope.cancelled_caught:
                outcome.append("cancelled")

        cancel_scopes: list[anyio.CancelScope] = []
        async with anyio.create_task_group() as group:
            group.start_soon(send)
            await anyio.to_thread.run_sync(stalled.wait, 5)
            cancel_scopes[0].cancel()
        assert outcome == ["cancelled"]
        assert not smtp.is_connected
        # The message was sent and its reply never read: the caller can tell.
        assert smtp.final_reply_pending
        await smtp.connect()
        assert await smtp.sendmail(ALICE, [BOB], MESSAGE) == {}
        await smtp.quit()
