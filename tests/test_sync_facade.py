"""The sync facade: smtplib's behaviour, run in the calling thread or through
the portal."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import smtplib
import socket
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import anyio
import pytest
import trio
from anyio.from_thread import start_blocking_portal

import anysmtp
from anysmtp import _portal
from tests.child import run_python
from tests.servers import (
    AiosmtpdServer,
    RecordingHandler,
    ScriptedConnection,
    ScriptedServer,
)

T = TypeVar("T")


def test_constructor_connects_and_sendmail_delivers(smtpd: AiosmtpdServer) -> None:
    server = anysmtp.SMTP(smtpd.host, smtpd.port)
    try:
        sock = server.sock
        assert isinstance(sock, socket.socket)
        assert sock.getpeername()[1] == smtpd.port
        refused = server.sendmail(
            "a@example.com", ["b@example.com"], "Subject: x\n\nhi\n"
        )
        assert refused == {}
        assert server.does_esmtp
        assert "size" in server.esmtp_features
        assert server.has_extn("SIZE")
    finally:
        assert server.quit()[0] == 221
    assert server.sock is None
    assert smtpd.messages[0].data == b"Subject: x\r\n\r\nhi\r\n"


def test_host_port_string(smtpd: AiosmtpdServer) -> None:
    with anysmtp.SMTP(f"{smtpd.host}:{smtpd.port}") as server:
        assert server.noop() == (250, b"OK")


def test_context_manager_sends_quit() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        conn.expect(b"noop")
        conn.send(b"250 fine\r\n")
        conn.expect(b"QUIT")
        conn.send(b"221 bye\r\n")

    with ScriptedServer(script) as scripted:
        with anysmtp.SMTP(scripted.host, scripted.port) as server:
            server.ehlo()
            server.noop()
        assert server.sock is None
    assert scripted.transcript.endswith(b"noop\r\nQUIT\r\n")


def test_context_manager_raises_on_refused_quit() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        conn.expect(b"QUIT")
        conn.send(b"500 no\r\n")

    with (
        ScriptedServer(script) as scripted,
        pytest.raises(anysmtp.SMTPResponseException) as caught,
        anysmtp.SMTP(scripted.host, scripted.port),
    ):
        pass
    assert (caught.value.smtp_code, caught.value.smtp_error) == (500, b"no")


def test_greeting_other_than_220_raises_connect_error() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"554 go away\r\n")
        conn.read_line()

    with (
        ScriptedServer(script) as scripted,
        pytest.raises(anysmtp.SMTPConnectError) as caught,
    ):
        anysmtp.SMTP(scripted.host, scripted.port)
    assert caught.value.args == (554, b"go away")


def test_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        anysmtp.SMTP("127.0.0.1", port)


def test_commands_before_connect_raise_disconnected() -> None:
    server = anysmtp.SMTP()
    with pytest.raises(anysmtp.SMTPServerDisconnected, match="please run connect"):
        server.noop()


def test_lmtp_is_an_smtp(smtpd: AiosmtpdServer) -> None:
    client = anysmtp.LMTP()
    assert isinstance(client, anysmtp.SMTP)
    assert client.ehlo_msg == "lhlo"
    assert client.default_port == anysmtp.LMTP_PORT


@pytest.fixture(params=["asyncio", "trio"])
def own_portal(
    request: pytest.FixtureRequest,
) -> Iterator[anyio.from_thread.BlockingPortal]:
    with start_blocking_portal(request.param) as portal:
        yield portal


def test_brings_its_own_portal(
    smtpd: AiosmtpdServer, own_portal: anyio.from_thread.BlockingPortal
) -> None:
    with anysmtp.SMTP(smtpd.host, smtpd.port, portal=own_portal) as server:
        server.sendmail("a@example.com", "b@example.com", b"hello")
    assert smtpd.messages[0].rcpt_tos == ["b@example.com"]


def run_in_asyncio(program: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(program())


@pytest.mark.parametrize("run", [run_in_asyncio, trio.run], ids=["asyncio", "trio"])
def test_brings_its_own_portal_into_a_running_loop(
    smtpd: AiosmtpdServer,
    own_portal: anyio.from_thread.BlockingPortal,
    run: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
) -> None:
    # Blocking calls from async code through the caller's portal.  trio
    # refuses any call into a trio loop from a thread that runs trio itself:
    # such calls used to fail with "this is a blocking function".
    async def program() -> None:
        with anysmtp.SMTP(smtpd.host, smtpd.port, portal=own_portal) as server:
            assert server.sendmail("a@example.com", ["b@example.com"], b"hi") == {}
        # A hook that leaves half-way: the connection is closed through the
        # portal too.
        smtp = _LeavingInGetreply(smtpd.host, smtpd.port, portal=own_portal)
        smtp.leaving = SystemExit(3)
        with pytest.raises(SystemExit):
            smtp.noop()
        assert smtp.sock is None

    run(program)
    assert [m.data for m in smtpd.messages] == [b"hi\r\n"]


@pytest.mark.parametrize("run", [run_in_asyncio, trio.run], ids=["asyncio", "trio"])
def test_a_portal_called_from_its_own_loop_refuses(
    smtpd: AiosmtpdServer,
    run: Callable[[Callable[[], Coroutine[Any, Any, None]]], None],
) -> None:
    # The call would wait for the loop it blocks: anyio says so at once (a
    # trio caller used to hang for ever instead).
    async def program() -> None:
        async with anyio.from_thread.BlockingPortal() as portal:
            smtp = anysmtp.SMTP(portal=portal)
            with pytest.raises(RuntimeError, match="from the event loop thread"):
                smtp.connect(smtpd.host, smtpd.port)

    run(program)


def test_a_watchdog_thread_may_close_a_waiting_client() -> None:
    # smtplib's idiom for a call that takes too long with no timeout (the
    # default): another thread closes the connection, and the call ends with
    # SMTPServerDisconnected.  (It used to wait for ever.)
    noticed = threading.Event()

    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 scripted\r\n")
        conn.expect(b"noop")
        noticed.set()
        while conn.read_line():
            pass

    with ScriptedServer(script) as server:
        smtp = anysmtp.SMTP(server.host, server.port)

        def watchdog() -> None:
            assert noticed.wait(10)
            time.sleep(0.05)  # the call is waiting now
            smtp.close()

        closer = threading.Thread(target=watchdog)
        closer.start()
        with pytest.raises(anysmtp.SMTPServerDisconnected):
            smtp.noop()
        closer.join(10)
        assert smtp.sock is None
    assert server.transcript == b"noop\r\n"


def test_close_through_a_portal_closes_the_socket_at_once(
    own_portal: anyio.from_thread.BlockingPortal,
) -> None:
    # The connection's loop runs in the portal's thread, and a timed wait
    # left its timer there: close() from this thread still closes at once.
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 scripted\r\n")
        conn.expect(b"noop")
        time.sleep(0.05)  # the client waits for it, with its timer set
        conn.send(b"250 ok\r\n")
        while conn.read_line():
            pass

    with ScriptedServer(script) as server:
        smtp = anysmtp.SMTP(server.host, server.port, portal=own_portal, timeout=60)
        assert smtp.noop() == (250, b"ok")
        sock = smtp.sock
        assert sock is not None
        smtp.close()
        assert sock.fileno() == -1
    assert server.transcript == b"noop\r\n"


def test_called_from_inside_a_running_asyncio_loop(smtpd: AiosmtpdServer) -> None:
    async def notebook_cell() -> tuple[int, bytes]:
        with anysmtp.SMTP(smtpd.host, smtpd.port) as server:
            return server.noop()

    assert asyncio.run(notebook_cell()) == (250, b"OK")


def test_called_from_inside_a_running_trio_loop(smtpd: AiosmtpdServer) -> None:
    async def trio_program() -> tuple[int, bytes]:
        with anysmtp.SMTP(smtpd.host, smtpd.port) as server:
            return server.noop()

    assert trio.run(trio_program) == (250, b"OK")


@pytest.mark.subprocess
def test_import_starts_no_thread() -> None:
    output = run_python(
        """
        import threading
        import anysmtp
        print(threading.active_count())
        """
    )
    assert output.strip() == "1"


@pytest.mark.subprocess
def test_works_where_python_cannot_fork_or_use_unix_sockets(
    smtpd: AiosmtpdServer,
) -> None:
    # Python on Windows has no os.fork, os.register_at_fork or socket.AF_UNIX:
    # importing anysmtp must not need the first two, and LMTP over a path
    # says why it cannot connect.  (AF_UNIX is taken from anysmtp alone here:
    # asyncio's loop on Linux needs it.)
    output = run_python(
        """
        import os, sys
        del os.fork, os.register_at_fork
        import anysmtp as smtplib
        from anysmtp import _transport
        _transport._AF_UNIX = None
        message = "Subject: x\\n\\nhi"
        with smtplib.SMTP(sys.argv[1], int(sys.argv[2])) as server:
            print(server.sendmail("a@example.com", "b@example.com", message))
        try:
            smtplib.LMTP("/tmp/no-such.sock")
        except OSError as exc:
            print(type(exc).__name__, exc)
        """,
        smtpd.host,
        str(smtpd.port),
    )
    assert output == (
        "{}\n"
        f"OSError [Errno {errno.EAFNOSUPPORT}] "
        "Unix domain sockets are not available on this platform\n"
    )
    [received] = smtpd.messages
    assert received.data == b"Subject: x\r\n\r\nhi\r\n"


@pytest.mark.subprocess
def test_script_that_never_quits_exits(smtpd: AiosmtpdServer) -> None:
    output = run_python(
        """
        import sys
        import anysmtp as smtplib
        server = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
        server.sendmail("a@example.com", ["b@example.com"], "Subject: x\\n\\nbye")
        print("sent")
        """,
        smtpd.host,
        str(smtpd.port),
        timeout=20,
    )
    assert output == "sent\n"
    assert len(smtpd.messages) == 1


@pytest.mark.subprocess
def test_fork_child_fails_fast_and_can_reconnect(smtpd: AiosmtpdServer) -> None:
    output = run_python(
        """
        import os, sys
        import anysmtp
        host, port = sys.argv[1], int(sys.argv[2])
        server = anysmtp.SMTP(host, port)
        server.ehlo()
        pid = os.fork()
        if pid == 0:
            try:
                server.noop()
            except anysmtp.SMTPServerDisconnected:
                code = 0
            else:
                code = 3
            server.connect(host, port)
            server.sendmail("child@example.com", ["x@example.com"], b"from child")
            server.quit()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        print(server.noop()[0])
        server.sendmail("parent@example.com", ["x@example.com"], b"from parent")
        server.quit()
        """,
        smtpd.host,
        str(smtpd.port),
    )
    assert output.split() == ["0", "250"]
    assert sorted(m.mail_from for m in smtpd.messages) == [
        "child@example.com",
        "parent@example.com",
    ]


@pytest.mark.subprocess
def test_ctrl_c_cancels_the_call_and_closes_the_connection() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        conn.expect(b"noop")
        # Never answer: the client is stuck until it is interrupted.
        conn.read_line()

    with ScriptedServer(script) as scripted:
        output = run_python(
            """
            import os, signal, sys, threading
            import anysmtp
            server = anysmtp.SMTP(sys.argv[1], int(sys.argv[2]))
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            try:
                server.noop()
            except KeyboardInterrupt:
                print("interrupted")
            print(server.sock is None)
            """,
            scripted.host,
            str(scripted.port),
            timeout=20,
        )
    assert output.split() == ["interrupted", "True"]


@pytest.mark.subprocess
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_plain_script_runs_in_its_own_thread(
    smtpd: AiosmtpdServer, host: str
) -> None:
    # No loop runs in the calling thread: each call runs there, on the
    # thread's own loop; no portal thread is started, and no thread is left
    # behind, as with smtplib: the EHLO name is looked up in the calling
    # thread, and a host name in a thread of its own, which may still be on
    # its way out when the call returns (it is waited for; a pool's idle
    # thread, or a portal thread, would never end).
    output = run_python(
        """
        import sys, threading
        import anysmtp
        server = anysmtp.SMTP(sys.argv[1], int(sys.argv[2]))
        server.sendmail("a@example.com", ["b@example.com"], b"Subject: x\\r\\n\\r\\n")
        server.quit()
        for thread in threading.enumerate():
            if thread is not threading.main_thread():
                thread.join(5)
        print(sorted(thread.name for thread in threading.enumerate()))
        """,
        host,
        str(smtpd.port),
    )
    assert output.strip() == "['MainThread']"
    assert len(smtpd.messages) == 1


@pytest.mark.subprocess
def test_script_that_never_quits_exits_with_the_portal(smtpd: AiosmtpdServer) -> None:
    # Called from trio code (a blocking call in a trio program): the portal
    # runs the call; its thread must not keep the process alive.
    output = run_python(
        """
        import sys, threading, trio
        import anysmtp as smtplib
        async def main():
            server = smtplib.SMTP(sys.argv[1], int(sys.argv[2]))
            server.sendmail("a@example.com", ["b@example.com"], "Subject: x\\n\\nbye")
            names = [thread.name for thread in threading.enumerate()]
            print(any(name.startswith("anysmtp-portal") for name in names))
        trio.run(main)
        """,
        smtpd.host,
        str(smtpd.port),
        timeout=20,
    )
    assert output == "True\n"
    assert len(smtpd.messages) == 1


@pytest.mark.subprocess
def test_ctrl_c_through_the_portal_cancels_and_closes() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        conn.expect(b"noop")
        conn.read_line()  # never answer

    with ScriptedServer(script) as scripted:
        output = run_python(
            """
            import asyncio, os, signal, sys, threading
            import anysmtp
            async def cell():
                # A running loop in this thread (as in Jupyter): the portal
                # runs the call.
                server = anysmtp.SMTP(sys.argv[1], int(sys.argv[2]))
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
                try:
                    server.noop()
                except KeyboardInterrupt:
                    print("interrupted")
                print(server.sock is None)
            asyncio.new_event_loop().run_until_complete(cell())
            """,
            scripted.host,
            str(scripted.port),
            timeout=20,
        )
    assert output.split() == ["interrupted", "True"]


def test_threads_run_their_calls_side_by_side(smtpd: AiosmtpdServer) -> None:
    import threading

    errors: list[BaseException] = []

    def sender(index: int) -> None:
        try:
            with anysmtp.SMTP(smtpd.host, smtpd.port) as server:
                for number in range(3):
                    server.sendmail(
                        f"t{index}@example.com", ["b@example.com"], b"n%d" % number
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert len(smtpd.messages) == 24
    # Each thread's loop was closed with the thread: no "unclosed event loop"
    # warning (warnings are errors here).
    gc.collect()


def test_threads_sharing_one_object_take_turns(smtpd: AiosmtpdServer) -> None:
    import threading

    errors: list[BaseException] = []
    with anysmtp.SMTP(smtpd.host, smtpd.port) as shared:

        def sender(index: int) -> None:
            try:
                for number in range(5):
                    refused = shared.sendmail(
                        f"t{index}@example.com", ["b@example.com"], b"n%d" % number
                    )
                    assert refused == {}
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sender, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
    assert errors == []
    assert sorted(m.mail_from for m in smtpd.messages) == sorted(
        f"t{index}@example.com" for index in range(4) for _ in range(5)
    )


class _HookedGetreply(anysmtp.SMTP):
    def getreply(self) -> tuple[int, bytes]:  # an smtplib-style override
        return super().getreply()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_reply_timeout_inside_a_bridged_hook(backend: str) -> None:
    # A sync hook's call back into the loop runs in another task than the
    # transaction: its wait must time out on its own, not move the deadline of
    # a scope it is not in (it would then wait for ever).
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        conn.expect(b"mail from:")
        conn.send(b"250 ok\r\n")
        conn.expect(b"rcpt to:")
        conn.stall()  # never answers RCPT

    with ScriptedServer(script) as server, start_blocking_portal(backend) as portal:
        smtp = _HookedGetreply(portal=portal, timeout=0.5)
        smtp.connect(server.host, server.port)
        smtp.ehlo()
        with pytest.raises(anysmtp.SMTPReadTimeoutError) as caught:
            smtp.sendmail("a@example.com", ["b@example.com"], b"x")
        assert str(caught.value) == (
            "Timed out waiting for the server's reply after 0.5 seconds"
        )
        smtp.close()


class _Stop(BaseException):
    """Control flow that is not an error (as gevent's Timeout is)."""


class _LeavingInGetreply(anysmtp.SMTP):
    """A hook that leaves the program (or the block) from inside a call."""

    leaving: BaseException | None = None

    def getreply(self) -> tuple[int, bytes]:
        reply = super().getreply()
        if self.leaving is not None:
            raise self.leaving
        return reply


@pytest.fixture(params=["process", "asyncio", "trio"])
def hook_portal(
    request: pytest.FixtureRequest,
) -> Iterator[anyio.from_thread.BlockingPortal | None]:
    """The portal a subclass's hooks run through: the process's own (None), or
    one the caller brings."""
    if request.param == "process":
        yield None
        return
    with start_blocking_portal(request.param) as portal:
        yield portal


@pytest.mark.parametrize(
    "leaving",
    [SystemExit(3), KeyboardInterrupt(), _Stop("out")],
    ids=["SystemExit", "KeyboardInterrupt", "BaseException"],
)
def test_a_hook_leaving_with_a_base_exception_leaves_the_portal_running(
    smtpd: AiosmtpdServer,
    hook_portal: anyio.from_thread.BlockingPortal | None,
    leaving: BaseException,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It reaches the caller as it is, the connection (stopped half-way) is
    # closed, and the portal, which other callers share, still runs their calls:
    # it used to end the process's portal loop, and every later call through it
    # waited for ever.
    smtp = _LeavingInGetreply(smtpd.host, smtpd.port, portal=hook_portal)
    smtp.leaving = leaving
    with pytest.raises(type(leaving)) as caught:
        smtp.noop()
    assert caught.value is leaving
    assert smtp.sock is None

    results: list[tuple[int, bytes]] = []

    def another_caller() -> None:
        with _LeavingInGetreply(smtpd.host, smtpd.port, portal=hook_portal) as other:
            results.append(other.noop())

    caller = threading.Thread(target=another_caller, daemon=True)
    caller.start()
    caller.join(timeout=20)  # a dead portal never answers: fail, do not hang
    assert results == [(250, b"OK")]
    smtp.leaving = None
    smtp.connect(smtpd.host, smtpd.port)
    assert smtp.noop() == (250, b"OK")
    smtp.quit()
    # asyncio's "Task exception was never retrieved" and the like.
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


def test_a_process_portal_whose_loop_ended_is_replaced(smtpd: AiosmtpdServer) -> None:
    # However its loop ends, the process's portal is not handed out again: the
    # next call starts a new one (a call into an ended loop would fail or wait
    # for ever).
    with _LeavingInGetreply(smtpd.host, smtpd.port) as smtp:
        assert smtp.noop() == (250, b"OK")
    ended = _portal._portals["asyncio"]
    ended.stop()  # its loop ends; it stays in the table, as after a crash
    with _LeavingInGetreply(smtpd.host, smtpd.port) as smtp:
        assert smtp.noop() == (250, b"OK")
    assert _portal._portals["asyncio"] is not ended


# Dropped unclosed ------------------------------------------------------------------


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize("module", [smtplib, anysmtp], ids=["smtplib", "anysmtp"])
def test_a_client_dropped_unclosed_closes_its_socket_at_once(
    smtpd: AiosmtpdServer, module: Any
) -> None:
    # A script that forgets quit() (or an error path, as in logging's
    # SMTPHandler) frees the connection when its last reference goes, not at
    # some later garbage collection.
    client = module.SMTP(smtpd.host, smtpd.port)
    client.ehlo()
    sock = weakref.ref(client.sock)
    with pytest.warns(ResourceWarning, match="unclosed"):
        del client
    assert sock() is None


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize(
    "base", [smtplib.SMTP, anysmtp.SMTP], ids=["smtplib", "anysmtp"]
)
def test_a_subclass_with_hooks_dropped_unclosed_closes_its_socket_at_once(
    smtpd: AiosmtpdServer, base: type[Any]
) -> None:
    # Overrides the facade bridges into the async client: a coroutine hook
    # (send) and a plain one (has_extn).
    sent: list[bytes | str] = []

    def send(self: Any, s: bytes | str) -> None:
        sent.append(s)
        base.send(self, s)

    def has_extn(self: Any, opt: str) -> bool:
        return bool(base.has_extn(self, opt))

    with_hooks = type("WithHooks", (base,), {"send": send, "has_extn": has_extn})
    client = with_hooks(smtpd.host, smtpd.port)
    client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nx\r\n")
    assert sent
    sock = weakref.ref(client.sock)
    with pytest.warns(ResourceWarning, match="unclosed"):
        del client
    assert sock() is None


@pytest.mark.usefixtures("no_cyclic_gc")
@pytest.mark.parametrize(
    "client_factory",
    [
        pytest.param(smtplib.SMTP, id="smtplib"),
        pytest.param(anysmtp.SMTP, id="anysmtp"),
        pytest.param("portal", id="anysmtp-portal"),
    ],
)
def test_a_client_dropped_after_an_error_closes_its_socket_at_once(
    client_factory: Any,
) -> None:
    # logging's SMTPHandler drops its client unclosed when sending fails.
    handler = RecordingHandler(refused_senders={"spammer@example.com"})
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(AiosmtpdServer(handler))
        if client_factory == "portal":
            portal = stack.enter_context(start_blocking_portal())
            client = anysmtp.SMTP(server.host, server.port, portal=portal)
        else:
            client = client_factory(server.host, server.port)
        try:
            client.sendmail("spammer@example.com", ["b@example.com"], b"x\r\n")
        except smtplib.SMTPSenderRefused:
            pass  # and the exception, with its traceback, is gone
        else:
            pytest.fail("the sender was not refused")
        sock = weakref.ref(client.sock)
        with pytest.warns(ResourceWarning, match="unclosed"):
            del client
        assert sock() is None


@pytest.mark.anyio
@pytest.mark.usefixtures("no_cyclic_gc")
async def test_an_async_client_dropped_unclosed_closes_its_socket_at_once(
    smtpd: AiosmtpdServer,
) -> None:
    client = anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port, start_tls=False)
    await client.connect()
    await client.ehlo()
    sock = weakref.ref(client.sock)
    with pytest.warns(ResourceWarning, match="unclosed"):
        del client
    assert sock() is None
