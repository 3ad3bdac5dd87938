"""Tasks sharing one client take turns: the lock's order and cancellations."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest

import anysmtp
from anysmtp._turns import Turns
from tests.conftest import ASYNCIO_BACKENDS
from tests.servers import AiosmtpdServer, ScriptedConnection, ScriptedServer

pytestmark = pytest.mark.anyio


def _transaction(
    conn: ScriptedConnection, stall: Callable[[], object] | None = None
) -> None:
    """One message accepted, one command at a time; ``stall()`` runs before
    the reply to MAIL (the client holds its turn meanwhile)."""
    conn.expect(b"mail from:")
    if stall is not None:
        stall()
    conn.send(b"250 ok\r\n")
    conn.expect(b"rcpt to:")
    conn.send(b"250 ok\r\n")
    conn.expect(b"data")
    conn.send(b"354 go\r\n")
    conn.read_data()
    conn.send(b"250 queued\r\n")


async def test_free_lock_is_taken_without_waiting() -> None:
    turns = Turns()
    await turns.acquire()
    assert turns.held
    turns.release()
    assert not turns.held


async def test_first_come_first_served() -> None:
    turns = Turns()
    order: list[int] = []

    async def take(index: int) -> None:
        await turns.acquire()
        order.append(index)
        await anyio.lowlevel.checkpoint()
        turns.release()

    await turns.acquire()
    async with anyio.create_task_group() as group:
        for index in range(5):
            group.start_soon(take, index)
            # Each task queues before the next starts.
            await anyio.wait_all_tasks_blocked()
        turns.release()
    assert order == [0, 1, 2, 3, 4]
    assert not turns.held


async def test_a_cancelled_waiter_leaves_its_place() -> None:
    turns = Turns()
    order: list[str] = []
    doomed = anyio.CancelScope()

    async def take(name: str) -> None:
        await turns.acquire()
        order.append(name)
        turns.release()

    async def cancelled() -> None:
        with doomed:
            await turns.acquire()
        order.append("cancelled")  # reached after the cancellation

    await turns.acquire()
    async with anyio.create_task_group() as group:
        group.start_soon(take, "first")
        await anyio.wait_all_tasks_blocked()
        group.start_soon(cancelled)
        await anyio.wait_all_tasks_blocked()
        group.start_soon(take, "third")
        await anyio.wait_all_tasks_blocked()
        doomed.cancel()
        await anyio.wait_all_tasks_blocked()
        turns.release()
    assert order == ["cancelled", "first", "third"]
    assert not turns.held


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
async def test_a_waiter_cancelled_as_its_turn_comes_passes_it_on() -> None:
    # asyncio's own cancellation can reach a task after the lock was handed
    # to it and before it ran: the lock must go on to the next task.
    turns = Turns()
    got: list[str] = []

    async def take(name: str) -> None:
        await turns.acquire()
        got.append(name)
        turns.release()

    await turns.acquire()
    unlucky = asyncio.ensure_future(take("unlucky"))
    await anyio.wait_all_tasks_blocked()
    following = asyncio.ensure_future(take("next"))
    await anyio.wait_all_tasks_blocked()
    turns.release()  # hands the lock to "unlucky"...
    unlucky.cancel()  # ...which is cancelled before it runs
    await following
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    assert got == ["next"]
    assert not turns.held


async def test_a_task_cancelled_waiting_for_a_shared_client() -> None:
    # Of three tasks sharing a client, the one cancelled while it waits for
    # its turn sends nothing; the others deliver and the client stays usable.
    gate = threading.Event()

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        # "one" holds the client until the test says.
        _transaction(conn, stall=lambda: gate.wait(10))
        _transaction(conn)
        conn.expect(b"noop")
        conn.send(b"250 still here\r\n")
        conn.expect(b"quit")
        conn.send(b"221 bye\r\n")

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, start_tls=False
        ) as smtp:
            async with anyio.create_task_group() as group:
                doomed = anyio.CancelScope()

                async def cancelled() -> None:
                    with doomed:
                        await smtp.sendmail("two@b.example", ["x@b.example"], b"2")

                group.start_soon(smtp.sendmail, "one@b.example", ["x@b.example"], b"1")
                await anyio.wait_all_tasks_blocked()  # "one" waits for its reply
                group.start_soon(cancelled)
                await anyio.wait_all_tasks_blocked()
                group.start_soon(
                    smtp.sendmail, "three@b.example", ["x@b.example"], b"3"
                )
                await anyio.wait_all_tasks_blocked()
                doomed.cancel()
                await anyio.wait_all_tasks_blocked()
                gate.set()
            assert await smtp.noop() == (250, b"still here")
    senders = [
        line for line in bytes(server.transcript).split(b"\r\n") if b"FROM:" in line
    ]
    assert senders == [b"mail FROM:<one@b.example>", b"mail FROM:<three@b.example>"]


async def test_a_cancelled_task_starts_no_transaction(smtpd: AiosmtpdServer) -> None:
    # Even when every reply would be waiting (no checkpoint on the way), a task
    # whose scope is cancelled sends nothing, and the connection is intact.
    async with anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port) as smtp:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await smtp.sendmail("a@example.com", ["b@example.com"], b"never")
        assert scope.cancelled_caught
        assert await smtp.sendmail("c@example.com", ["d@example.com"], b"sent") == {}
    assert [m.data for m in smtpd.messages] == [b"sent\r\n"]


async def _one_then_another(
    script: Callable[[ScriptedConnection], None],
    first: Callable[[anysmtp.AsyncSMTP], Awaitable[object]],
    second: Callable[[anysmtp.AsyncSMTP], Awaitable[object]],
) -> list[object]:
    """Run ``first`` and, once it waits for the server, ``second``, in two
    tasks sharing one greeted client; return their results in that order."""
    results: dict[int, object] = {}
    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=5
        ) as smtp:
            await smtp.ehlo()

            async def run(
                index: int, call: Callable[[anysmtp.AsyncSMTP], Awaitable[object]]
            ) -> None:
                results[index] = await call(smtp)

            async with anyio.create_task_group() as group:
                group.start_soon(run, 0, first)
                await anyio.wait_all_tasks_blocked()
                group.start_soon(run, 1, second)
    return [results[0], results[1]]


def _quit(conn: ScriptedConnection) -> None:
    conn.expect(b"quit")
    conn.send(b"221 bye\r\n")


async def test_commands_of_tasks_sharing_a_client_take_turns() -> None:
    # aiosmtplib serialises every command: a task must never read another's
    # reply, even when the server is slow to answer the first command.
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        conn.expect(b"noop")
        time.sleep(0.2)  # the other task's HELP would go out now, unlocked
        conn.send(b"250 reply to NOOP\r\n")
        conn.expect(b"help")
        conn.send(b"214 reply to HELP\r\n")
        _quit(conn)

    results = await _one_then_another(
        script, lambda smtp: smtp.noop(), lambda smtp: smtp.help()
    )
    assert results == [(250, b"reply to NOOP"), b"reply to HELP"]


async def test_a_command_waits_for_the_transaction_in_progress() -> None:
    # A keep-alive NOOP from another task goes after the whole transaction,
    # not between its commands.
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        _transaction(conn, stall=lambda: time.sleep(0.2))
        conn.expect(b"noop")
        conn.send(b"250 alive\r\n")
        _quit(conn)

    results = await _one_then_another(
        script,
        lambda smtp: smtp.sendmail(
            "a@b.example", ["c@d.example"], b"Subject: x\r\n\r\nbody\r\n"
        ),
        lambda smtp: smtp.noop(),
    )
    assert results == [{}, (250, b"alive")]


@pytest.mark.parametrize("timeout", [5, None])
async def test_a_wait_beside_another_tasks_wait_is_refused_and_wakes_it(
    timeout: float | None,
) -> None:
    # Raw getreply() calls of two tasks (no turn is taken for them): the
    # second is refused and the connection closed, and the first wakes at
    # once with an error, not at its timeout (or never, without one).
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        conn.expect(b"noop")
        conn.read_line()  # until the client closes

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=timeout
        )
        await smtp.connect()
        await smtp.ehlo()
        errors: dict[str, str] = {}

        async def first() -> None:
            await smtp.putcmd("noop")
            try:
                await smtp.getreply()
            except anysmtp.SMTPServerDisconnected as exc:
                errors["first"] = str(exc)

        async def second() -> None:
            try:
                await smtp.getreply()
            except anysmtp.SMTPServerDisconnected as exc:
                errors["second"] = str(exc)

        with anyio.fail_after(3):
            async with anyio.create_task_group() as group:
                group.start_soon(first)
                await anyio.wait_all_tasks_blocked()
                group.start_soon(second)
        assert errors["second"] == "Another task is already using this connection"
        assert "first" in errors
        assert not smtp.is_connected


async def test_a_task_started_within_a_command_takes_turns_once_it_is_over() -> None:
    # A task started during a command (from a hook, here) carries a copy of
    # the command's context, which says the turn is held; once the command
    # is over, that copy must not let the task past another task's command.
    rset_sent = threading.Event()

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        conn.expect(b"mail from:")
        conn.send(b"250 ok\r\n")
        conn.expect(b"rset")
        rset_sent.set()
        time.sleep(0.2)  # the started task's NOOP would go out now, unlocked
        conn.send(b"250 reset\r\n")
        conn.expect(b"noop")
        conn.send(b"250 alive\r\n")
        _quit(conn)

    results: dict[str, object] = {}

    class Spawning(anysmtp.AsyncSMTP):
        group: anyio.abc.TaskGroup

        async def putcmd(self, cmd: str, args: str = "") -> None:
            if cmd == "mail":
                self.group.start_soon(self.keep_alive)
            await super().putcmd(cmd, args)

        async def keep_alive(self) -> None:
            await anyio.to_thread.run_sync(rset_sent.wait, 10)
            results["noop"] = await self.noop()

    with ScriptedServer(script) as server:
        async with (
            Spawning(
                hostname=server.host, port=server.port, start_tls=False, timeout=5
            ) as smtp,
            anyio.create_task_group() as group,
        ):
            smtp.group = group
            await smtp.ehlo()
            assert await smtp.mail("a@b.example") == (250, b"ok")
            results["rset"] = await smtp.rset()
    assert results == {"rset": (250, b"reset"), "noop": (250, b"alive")}
