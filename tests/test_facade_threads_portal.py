"""Threads sharing one sync client take turns on every path a call can take.

A call runs on the calling thread's own loop, or through a portal: the
process's (the calling thread already runs an event loop, or a subclass
overrides smtplib's hooks) or one the caller brought (``portal=``).  Whatever
the path, two threads sharing one object never have their commands on the wire
at the same time, and a subclass's hook, which runs in a worker thread and
calls back into the object, does not wait for the call it is part of.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

import pytest
import trio
from anyio.from_thread import BlockingPortal, start_blocking_portal

import anysmtp
from tests.child import run_python
from tests.servers import AiosmtpdServer, ScriptedConnection, ScriptedServer

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: How long the server thinks before each reply: long enough that a call from
#: one thread is still waiting for its reply when the other thread's starts.
_REPLY_DELAY = 0.001
_ROUNDS = 8
_RECIPIENT = "rcpt@example.com"
_NAME = "client.example"
_EHLO = b"ehlo client.example\r\n"

Runner = Literal["plain", "asyncio", "trio"]
PortalKind = Literal["process", "asyncio", "trio"]


def _answer_everything(conn: ScriptedConnection) -> None:
    """Answer each command as it comes, a little slowly: ``XECHO`` with its
    argument, a transaction as a server does, ``QUIT`` by ending."""
    conn.greet_and_ehlo()
    while line := conn.read_line():
        time.sleep(_REPLY_DELAY)
        verb, _, argument = line.rstrip(b"\r\n").partition(b" ")
        verb = verb.upper()
        if verb == b"XECHO":
            conn.send(b"250 " + argument + b"\r\n")
        elif verb == b"DATA":
            conn.send(b"354 go ahead\r\n")
            conn.read_data()
            conn.send(b"250 queued\r\n")
        elif verb == b"QUIT":
            conn.send(b"221 bye\r\n")
            conn.disconnect()
            return
        elif verb in (b"NOOP", b"MAIL", b"RCPT", b"RSET"):
            conn.send(b"250 ok\r\n")
        else:
            conn.send(b"500 unknown command\r\n")


def _message(tag: str, number: int) -> bytes:
    return f"Subject: {tag}-{number}\r\n\r\nbody of {tag}-{number}\r\n".encode()


def _workload(smtp: anysmtp.SMTP, tag: str) -> list[object]:
    """What one thread does with the shared client: a command with its own
    reply, one with the same reply as everybody's, a transaction."""
    results: list[object] = []
    for number in range(_ROUNDS):
        results.append(smtp.docmd("XECHO", f"{tag}-{number}"))
        results.append(smtp.noop())
        results.append(
            smtp.sendmail(
                f"{tag}-{number}@example.com", [_RECIPIENT], _message(tag, number)
            )
        )
    return results


def _expected_results(tag: str) -> list[object]:
    expected: list[object] = []
    for number in range(_ROUNDS):
        expected += [(250, f"{tag}-{number}".encode()), (250, b"ok"), {}]
    return expected


def _expected_calls(tag: str) -> list[bytes]:
    """What each call of :func:`_workload` sends, byte for byte (smtplib's
    lower-case verbs), one item per call."""
    calls: list[bytes] = []
    for number in range(_ROUNDS):
        sender = f"{tag}-{number}@example.com"
        calls += [
            f"XECHO {tag}-{number}\r\n".encode(),
            b"noop\r\n",
            f"mail FROM:<{sender}>\r\nrcpt TO:<{_RECIPIENT}>\r\ndata\r\n".encode()
            + _message(tag, number)
            + b".\r\n",
        ]
    return calls


def _interleaves(received: bytes, *calls: Sequence[bytes]) -> bool:
    """Whether ``received`` is the calls of every thread, each thread's in its
    order and each call whole: the threads took turns, call by call."""

    @functools.cache
    def rest_matches(positions: tuple[int, ...], offset: int) -> bool:
        if offset == len(received):
            return all(p == len(c) for p, c in zip(positions, calls, strict=True))
        for index, (position, sequence) in enumerate(
            zip(positions, calls, strict=True)
        ):
            if position < len(sequence) and received.startswith(
                sequence[position], offset
            ):
                moved = (*positions[:index], position + 1, *positions[index + 1 :])
                if rest_matches(moved, offset + len(sequence[position])):
                    return True
        return False

    return rest_matches(tuple(0 for _ in calls), 0)


def test_interleaves_accepts_turns_and_refuses_mixed_calls() -> None:
    # The check the tests below rely on: whole calls in any order between the
    # threads pass; a call cut by another thread's, or one out of its
    # thread's order, does not.
    first = [b"XECHO a-0\r\n", b"noop\r\n"]
    second = [b"noop\r\n", b"XECHO b-0\r\n"]
    assert _interleaves(b"noop\r\nXECHO a-0\r\nXECHO b-0\r\nnoop\r\n", first, second)
    assert _interleaves(b"XECHO a-0\r\nnoop\r\nnoop\r\nXECHO b-0\r\n", first, second)
    assert not _interleaves(
        b"XECHO anoop\r\n-0\r\nnoop\r\nXECHO b-0\r\n", first, second
    )
    assert not _interleaves(b"noop\r\nXECHO a-0\r\nnoop\r\nXECHO b-0\r\n", first, [])
    assert not _interleaves(b"XECHO a-0\r\n", first, second)


def _run_as(runner: Runner, work: Callable[[], list[object]]) -> list[object]:
    """Run ``work`` (blocking calls) in this thread, plainly or from inside a
    running event loop (as in Jupyter, or a trio program calling blocking
    code): then the calls cannot run on the thread's own loop and go through
    the process's portal."""
    if runner == "plain":
        return work()

    async def inside_a_loop() -> list[object]:
        return work()

    if runner == "asyncio":
        return asyncio.run(inside_a_loop())
    return trio.run(inside_a_loop)


@contextlib.contextmanager
def _portal_of(kind: PortalKind) -> Iterator[BlockingPortal | None]:
    if kind == "process":
        yield None
        return
    with start_blocking_portal(kind) as portal:
        yield portal


def _in_threads(*jobs: Callable[[], list[object]]) -> list[list[object]]:
    """Run each job in a thread of its own, all starting together; return
    their results, or raise the first error one of them raised."""
    barrier = threading.Barrier(len(jobs))
    results: list[list[object] | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int, job: Callable[[], list[object]]) -> None:
        try:
            barrier.wait(5)
            results[index] = job()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(index, job), daemon=True)
        for index, job in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"
    if errors:
        raise errors[0]
    return [result for result in results if result is not None]


# Each pair: the two threads sharing the client, and the portal it was given.
SHARING = [
    pytest.param("process", "asyncio", "plain", id="asyncio-loop+plain"),
    pytest.param("process", "trio", "plain", id="trio-loop+plain"),
    pytest.param("process", "asyncio", "trio", id="asyncio-loop+trio-loop"),
    pytest.param("asyncio", "plain", "plain", id="own-asyncio-portal"),
    pytest.param("trio", "plain", "asyncio", id="own-trio-portal+asyncio-loop"),
]


_Client = TypeVar("_Client", bound=anysmtp.SMTP)


@contextlib.contextmanager
def _greeted(
    client_class: type[_Client], portal_kind: PortalKind
) -> Iterator[tuple[_Client, ScriptedServer]]:
    """A client of ``client_class`` through a portal of ``portal_kind``, past
    EHLO with a server that answers everything."""
    with (
        ScriptedServer(_answer_everything) as server,
        _portal_of(portal_kind) as portal,
    ):
        smtp = client_class(
            server.host, server.port, portal=portal, timeout=5, local_hostname=_NAME
        )
        assert smtp.ehlo() == (250, b"scripted")
        yield smtp, server


def _share(
    client_class: type[_Client], portal_kind: PortalKind, first: Runner, second: Runner
) -> tuple[_Client, bytes]:
    """Two threads, run as ``first`` and ``second``, share one client through
    a portal of ``portal_kind``: each call must have had its own reply, with
    nothing raised, and the server must have received exactly the two threads'
    calls, each whole and in its thread's order.

    :returns: the client (closed) and what the server received.
    """
    with _greeted(client_class, portal_kind) as (smtp, server):
        results = _in_threads(
            lambda: _run_as(first, lambda: _workload(smtp, "a")),
            lambda: _run_as(second, lambda: _workload(smtp, "b")),
        )
        assert smtp.quit() == (221, b"bye")
    assert results == [_expected_results("a"), _expected_results("b")]
    received = bytes(server.transcript)
    assert received.startswith(_EHLO)
    assert received.endswith(b"quit\r\n")
    assert _interleaves(
        received[len(_EHLO) : -len(b"quit\r\n")],
        _expected_calls("a"),
        _expected_calls("b"),
    ), received
    return smtp, received


@pytest.mark.parametrize(("portal_kind", "first", "second"), SHARING)
def test_threads_sharing_a_client_through_a_portal_take_turns(
    portal_kind: PortalKind, first: Runner, second: Runner
) -> None:
    _share(anysmtp.SMTP, portal_kind, first, second)


def _as_bytes(data: ReadableBuffer | str) -> bytes:
    return data.encode("ascii") if isinstance(data, str) else bytes(data)


class _RecordingHooks(anysmtp.SMTP):
    """smtplib-style overrides that call back into the client: each runs in a
    worker thread, within the call that reached it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.sent: list[bytes] = []
        self.replies: list[tuple[int, bytes]] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def send(self, s: ReadableBuffer | str) -> None:
        self.sent.append(_as_bytes(s))
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        reply = super().getreply()
        self.replies.append(reply)
        return reply


@pytest.mark.parametrize(("portal_kind", "first", "second"), SHARING)
def test_threads_sharing_a_client_with_hooks_take_turns(
    portal_kind: PortalKind, first: Runner, second: Runner
) -> None:
    # A hook's call back into the client does not wait for the call it is
    # part of (that would never end), and the other thread's calls still wait
    # for theirs.
    smtp, received = _share(_RecordingHooks, portal_kind, first, second)
    # Every byte went through the hook, in the order it went out, and the
    # hook saw every reply.
    assert b"".join(smtp.sent) == received
    # Greeting, EHLO, 3 replies for a transaction, 1 for each other command,
    # QUIT: in all, 1 + 1 + 2 * _ROUNDS * (1 + 1 + 4) + 1.
    assert len(smtp.replies) == 3 + 2 * _ROUNDS * 6


class _PausingSend(anysmtp.SMTP):
    """A ``send`` hook that stops half-way through one command until told to
    go on: the call holds the connection all that time."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.pause_on = b""
        self.paused = threading.Event()
        self.resume = threading.Event()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def send(self, s: ReadableBuffer | str) -> None:
        data = _as_bytes(s)
        if data != self.pause_on:
            super().send(s)
            return
        super().send(data[:4])
        self.paused.set()
        assert self.resume.wait(10)
        super().send(data[4:])


@pytest.mark.parametrize(
    ("portal_kind", "holder", "other"),
    [
        pytest.param("process", "asyncio", "plain", id="asyncio-loop-holds"),
        pytest.param("process", "plain", "trio", id="trio-loop-waits"),
        pytest.param("asyncio", "plain", "plain", id="own-asyncio-portal"),
        pytest.param("trio", "asyncio", "plain", id="own-trio-portal"),
    ],
)
def test_another_thread_waits_while_a_hook_holds_the_call(
    portal_kind: PortalKind, holder: Runner, other: Runner
) -> None:
    with _greeted(_PausingSend, portal_kind) as (smtp, server):
        smtp.pause_on = b"XECHO held\r\n"
        held: list[object] = []
        waited: list[object] = []
        errors: list[BaseException] = []

        def hold() -> None:
            try:
                held.extend(_run_as(holder, lambda: [smtp.docmd("XECHO", "held")]))
            except BaseException as exc:
                errors.append(exc)

        def wait() -> None:
            try:
                waited.extend(_run_as(other, lambda: [smtp.noop()]))
            except BaseException as exc:
                errors.append(exc)

        holding = threading.Thread(target=hold, daemon=True)
        holding.start()
        assert smtp.paused.wait(10)
        waiting = threading.Thread(target=wait, daemon=True)
        waiting.start()
        # Time for the other thread's NOOP to go out in the middle of the held
        # command, if it could: it must not.
        waiting.join(0.2)
        smtp.resume.set()
        holding.join(10)
        waiting.join(10)
        assert not holding.is_alive()
        assert not waiting.is_alive()
        assert errors == []
        smtp.quit()
    assert held == [(250, b"held")]
    assert waited == [(250, b"ok")]
    assert bytes(server.transcript) == (_EHLO + b"XECHO held\r\nnoop\r\nquit\r\n")


class _CallingBackFromTheLoop(anysmtp.SMTP):
    """``has_extn`` runs in the event loop, where ``sendmail`` calls it: a
    blocking call from there would wait for a loop that it stops."""

    def has_extn(self, opt: str) -> bool:
        self.noop()
        return super().has_extn(opt)


@pytest.mark.parametrize("portal_kind", ["process", "asyncio", "trio"])
def test_a_hook_in_the_loop_calling_back_fails_and_the_portal_goes_on(
    portal_kind: PortalKind,
) -> None:
    with _greeted(_CallingBackFromTheLoop, portal_kind) as (smtp, server):
        with pytest.raises(RuntimeError, match="cannot make a blocking call"):
            smtp.sendmail("a@example.com", ["b@example.com"], b"x")
        # The portal's loop was not stopped: the client, and any other, still
        # works (a blocking call outside the hook).
        assert smtp.noop() == (250, b"ok")
        assert smtp.docmd("XECHO", "still here") == (250, b"still here")
        assert smtp.quit() == (221, b"bye")
    assert bytes(server.transcript) == (_EHLO + b"noop\r\nXECHO still here\r\nquit\r\n")


class _UsingAnother(anysmtp.SMTP):
    """A ``send`` hook that, on NOOP, first makes a call on another client
    (once)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.other: anysmtp.SMTP | None = None
        self.seen: list[tuple[int, bytes]] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def send(self, s: ReadableBuffer | str) -> None:
        if _as_bytes(s) == b"noop\r\n" and self.other is not None:
            other, self.other = self.other, None
            self.seen.append(other.noop())
        super().send(s)


@pytest.mark.parametrize("portal_kind", ["process", "asyncio", "trio"])
def test_a_hook_using_a_client_whose_hook_calls_back(
    smtpd: AiosmtpdServer, portal_kind: PortalKind
) -> None:
    # first.noop() -> first's hook -> second.noop() -> second's hook ->
    # first.noop() again: still part of first's call, which waits for it.
    with _portal_of(portal_kind) as portal:
        first = _UsingAnother(
            smtpd.host, smtpd.port, portal=portal, timeout=5, local_hostname=_NAME
        )
        second = _UsingAnother(
            smtpd.host, smtpd.port, portal=portal, timeout=5, local_hostname=_NAME
        )
        first.other, second.other = second, first
        assert first.noop() == (250, b"OK")
        assert second.seen == [(250, b"OK")]
        assert first.seen == [(250, b"OK")]
        first.quit()
        second.quit()


#: Two ways to stop a thread in the middle of a call: a hook (the call goes
#: through the portal), or smtplib's debug output, written in the calling thread
#: (the call runs on the thread's own loop).  Either stops once, on NOOP.
_PAUSES = {
    "hook": """
        class Client(anysmtp.SMTP):
            def send(self, s):
                if s == "noop\\r\\n" and not paused.is_set():
                    paused.set()
                    resume.wait(10)
                super().send(s)
    """,
    "debug_output": """
        class Client(anysmtp.SMTP):
            pass

        class Stderr:
            def write(self, text):
                if "noop" in text and not paused.is_set():
                    paused.set()
                    resume.wait(10)
                return len(text)

            def flush(self):
                pass

        sys.stderr = Stderr()
    """,
}


@pytest.mark.subprocess
@pytest.mark.parametrize("pause", sorted(_PAUSES))
def test_a_forked_child_does_not_wait_for_a_call_of_the_parent(
    smtpd: AiosmtpdServer, pause: str
) -> None:
    # The parent forks while another of its threads is in the middle of a call:
    # the child has no such thread, and no call of its own may wait for that
    # one to end.
    source = (
        """
        import os, signal, sys, threading
        import anysmtp

        paused, resume = threading.Event(), threading.Event()
        """
        + _PAUSES[pause]
        + """
        host, port = sys.argv[1], int(sys.argv[2])
        smtp = Client(host, port)
        smtp.set_debuglevel(1)
        replies = []
        caller = threading.Thread(target=lambda: replies.append(smtp.noop()))
        caller.start()
        assert paused.wait(10)
        pid = os.fork()
        if pid == 0:
            signal.alarm(5)  # a child that waits for ever ends, and says so
            try:
                smtp.noop()
            except anysmtp.SMTPServerDisconnected:
                smtp.connect(host, port)
                print("child", smtp.noop()[0], flush=True)
                smtp.quit()
            os._exit(0)
        resume.set()
        caller.join(10)
        _, status = os.waitpid(pid, 0)
        print("parent", replies[0][0], os.waitstatus_to_exitcode(status))
        smtp.quit()
        """
    )
    output = run_python(source, smtpd.host, str(smtpd.port), timeout=20)
    assert output.split("\n") == ["child 250", "parent 250 0", ""]
