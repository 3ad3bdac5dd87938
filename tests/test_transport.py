"""Connecting, adopting sockets, transport details and cancellation, on every
backend, through AsyncSMTP's public API.

Besides the loopback :class:`~tests.servers.ScriptedServer` these tests use
:class:`~tests.servers.ScriptedServer` with ``unix=True`` (on a Unix domain
socket), a *black hole*
(an address whose TCP handshake never completes: a listener with a full accept
queue) and a fake resolver (``anyio.getaddrinfo`` patched for made-up names) to
drive happy eyeballs deterministically.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import anysmtp
from anysmtp._protocol import RawReply
from anysmtp._transport import Transport
from tests.conftest import ASYNCIO_BACKENDS
from tests.descriptors import is_open, lowest_free_descriptor
from tests.servers import (
    AiosmtpdServer,
    ScriptedConnection,
    ScriptedServer,
    drain,
    exchange,
)

pytestmark = pytest.mark.anyio

Script = Callable[[ScriptedConnection], None]

LOCAL = "client.example"
EHLO = b"ehlo client.example\r\n"
GREETING = (220, b"scripted ESMTP")


# Servers and helpers -----------------------------------------------------------


def greet_ehlo_noop_quit(conn: ScriptedConnection) -> None:
    """A short healthy session: greeting, EHLO, NOOP, QUIT."""
    conn.greet_and_ehlo()
    exchange(conn, (b"noop", b"250 fine\r\n"), (b"quit", b"221 bye\r\n"))


def greet_then_drain(conn: ScriptedConnection) -> None:
    """Greeting, then whatever the client sends goes unanswered."""
    conn.send(b"220 scripted ESMTP\r\n")
    drain(conn)


def greet_quit(conn: ScriptedConnection) -> None:
    """Greeting, then QUIT."""
    conn.send(b"220 scripted ESMTP\r\n")
    exchange(conn, (b"quit", b"221 bye\r\n"))


def sock_of(smtp: anysmtp.AsyncSMTP) -> socket.socket | None:
    """``smtp.sock``, read through a call so that mypy forgets earlier checks."""
    return smtp.sock


def free_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def black_hole() -> Iterator[tuple[str, int]]:
    """An address where connecting hangs: the listener's accept queue is full, so
    further SYNs are dropped and the handshake never completes."""
    listener = socket.socket()
    filler = socket.socket()
    probe = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address: tuple[str, int] = listener.getsockname()
        filler.connect(address)  # takes the only slot in the queue
        probe.setblocking(False)
        probe.connect_ex(address)
        time.sleep(0.05)
        if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            try:
                probe.getpeername()
            except OSError:
                pass  # still connecting: the black hole works
            else:
                pytest.skip("this network stack completes handshakes anyway")
        yield address
    finally:
        probe.close()
        filler.close()
        listener.close()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[str, int]]]:
    """Names the resolver should answer with fixed addresses, in order.

    The addresses carry their own ports, so one name can lead to several local
    servers.  Other names go to the real resolver.
    """
    table: dict[str, list[tuple[str, int]]] = {}
    real_getaddrinfo = anyio.getaddrinfo

    async def getaddrinfo(
        host: bytes | str | None, port: str | int | None, **kwargs: Any
    ) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]]:
        if isinstance(host, str) and host in table:
            await anyio.lowlevel.checkpoint()
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, p, 0, 0))
                if ":" in ip
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, p))
                for ip, p in table[host]
            ]
        return await real_getaddrinfo(host, port, **kwargs)

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    return table


@asynccontextmanager
async def no_fd_leak() -> AsyncIterator[None]:
    """Check that the block leaves no file descriptor open."""
    await anyio.lowlevel.checkpoint()
    before = open_fds()
    yield
    await anyio.lowlevel.checkpoint()
    assert open_fds() == before


# host:port, refused, resolution -------------------------------------------


@pytest.mark.parametrize("how", ["constructor", "hostname", "connect"])
async def test_host_port_string(how: str) -> None:
    with ScriptedServer(greet_quit) as server:
        target = f"{server.host}:{server.port}"
        if how == "constructor":
            smtp = anysmtp.AsyncSMTP(target, start_tls=False)
            greeting = await smtp.connect()
        elif how == "hostname":
            smtp = anysmtp.AsyncSMTP(hostname=target, start_tls=False)
            greeting = await smtp.connect()
        else:
            smtp = anysmtp.AsyncSMTP(start_tls=False)
            greeting = await smtp.connect(target)
        assert greeting == GREETING
        assert smtp.get_transport_info("peername") == (server.host, server.port)
        assert await smtp.quit() == (221, b"bye")


async def test_nonnumeric_port() -> None:
    smtp = anysmtp.AsyncSMTP(start_tls=False)
    with pytest.raises(OSError, match="nonnumeric port"):
        await smtp.connect("127.0.0.1:smtp")
    assert not smtp.is_connected


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_connection_refused(host: str) -> None:
    port = free_port()
    smtp = anysmtp.AsyncSMTP(host, port, timeout=5, start_tls=False)
    async with no_fd_leak():
        with pytest.raises(ConnectionRefusedError):
            await smtp.connect()
    assert not smtp.is_connected
    assert smtp.sock is None


async def test_localhost_by_name() -> None:
    with ScriptedServer(greet_quit) as server:
        async with anysmtp.AsyncSMTP(
            hostname="localhost", port=server.port, start_tls=False
        ) as smtp:
            assert smtp.get_transport_info("peername") == ("127.0.0.1", server.port)


async def test_happy_eyeballs_skips_a_refused_ipv6_address(
    fake_dns: dict[str, list[tuple[str, int]]],
) -> None:
    # (Server-side sockets count too: check around the server's whole life.)
    async with no_fd_leak():
        with ScriptedServer(greet_quit) as server:
            # ::1 first, as a dual-stack "localhost" resolves; nothing listens
            # there.
            fake_dns["dual.test"] = [("::1", server.port), (server.host, server.port)]
            smtp = anysmtp.AsyncSMTP("dual.test", 25, timeout=5, start_tls=False)
            assert await smtp.connect() == GREETING
            assert smtp.get_transport_info("peername") == (server.host, server.port)
            assert await smtp.quit() == (221, b"bye")


async def test_happy_eyeballs_races_past_a_hanging_address(
    fake_dns: dict[str, list[tuple[str, int]]],
) -> None:
    with black_hole() as hole:
        async with no_fd_leak():
            with ScriptedServer(greet_quit) as server:
                fake_dns["slow.test"] = [hole, (server.host, server.port)]
                smtp = anysmtp.AsyncSMTP("slow.test", 25, timeout=5, start_tls=False)
                start = time.monotonic()
                assert await smtp.connect() == GREETING
                elapsed = time.monotonic() - start
                peer = smtp.get_transport_info("peername")
                assert peer == (server.host, server.port)
                assert await smtp.quit() == (221, b"bye")
    # The second address is tried after the happy eyeballs delay (0.25 s), not
    # after the first attempt's TCP timeout.
    assert 0.2 <= elapsed < 2


async def test_connect_timeout_while_every_address_hangs(
    fake_dns: dict[str, list[tuple[str, int]]],
) -> None:
    with black_hole() as hole:
        fake_dns["nowhere.test"] = [hole, hole]
        smtp = anysmtp.AsyncSMTP("nowhere.test", 25, timeout=0.4, start_tls=False)
        async with no_fd_leak():
            start = time.monotonic()
            with pytest.raises(anysmtp.SMTPConnectTimeoutError) as caught:
                await smtp.connect()
            elapsed = time.monotonic() - start
        assert isinstance(caught.value, TimeoutError)
        assert 0.3 <= elapsed < 2
        assert not smtp.is_connected


async def test_connect_timeout_on_a_hanging_address() -> None:
    with black_hole() as (host, port):
        smtp = anysmtp.AsyncSMTP(host, port, timeout=0.2, start_tls=False)
        async with no_fd_leak():
            with pytest.raises(anysmtp.SMTPConnectTimeoutError):
                await smtp.connect()
        assert not smtp.is_connected


# Source address ----------------------------------------------------------------


def recording_peer(peers: list[tuple[str, int]]) -> Script:
    """A session that notes the client's address as the server sees it."""

    def script(conn: ScriptedConnection) -> None:
        peers.append(conn.sock.getpeername())
        greet_quit(conn)

    return script


@pytest.mark.parametrize("where", ["constructor", "connect"])
async def test_source_address_any_port(where: str) -> None:
    peers: list[tuple[str, int]] = []
    with ScriptedServer(recording_peer(peers)) as server:
        if where == "constructor":
            smtp = anysmtp.AsyncSMTP(
                server.host,
                server.port,
                source_address=("127.0.0.1", 0),
                start_tls=False,
            )
            await smtp.connect()
        else:
            smtp = anysmtp.AsyncSMTP(start_tls=False)
            await smtp.connect(server.host, server.port, ("127.0.0.1", 0))
        assert smtp.source_address == ("127.0.0.1", 0)
        sockname = smtp.get_transport_info("sockname")
        assert sockname[0] == "127.0.0.1"
        assert sockname[1] != 0
        await smtp.quit()
    assert peers == [sockname]


async def test_source_address_fixed_port() -> None:
    source = ("127.0.0.1", free_port())
    peers: list[tuple[str, int]] = []
    with ScriptedServer(recording_peer(peers)) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, source_address=source, start_tls=False
        )
        await smtp.connect()
        assert smtp.get_transport_info("sockname") == source
        await smtp.quit()
    assert peers == [source]


async def test_source_address_in_use() -> None:
    with socket.socket() as taken, ScriptedServer(greet_quit, connections=0) as server:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        smtp = anysmtp.AsyncSMTP(
            server.host,
            server.port,
            source_address=taken.getsockname(),
            start_tls=False,
        )
        async with no_fd_leak():
            with pytest.raises(OSError, match="in use"):
                await smtp.connect()
        assert not smtp.is_connected


# Unix sockets and adopted sockets -------------------------------------------


@pytest.mark.parametrize("where", ["constructor", "connect"])
async def test_unix_socket(where: str) -> None:
    with ScriptedServer(greet_ehlo_noop_quit, unix=True) as server:
        if where == "constructor":
            smtp = anysmtp.AsyncSMTP(
                socket_path=server.socket_path, local_hostname=LOCAL
            )
            greeting = await smtp.connect()
        else:
            smtp = anysmtp.AsyncSMTP(local_hostname=LOCAL, start_tls=False)
            greeting = await smtp.connect(socket_path=server.socket_path)
        assert greeting == GREETING
        sock = smtp.sock
        assert sock is not None
        assert sock.family == socket.AF_UNIX
        assert smtp.get_transport_info("peername") == server.socket_path
        assert (await smtp.ehlo())[0] == 250
        assert await smtp.noop() == (250, b"fine")
        assert await smtp.quit() == (221, b"bye")
        assert sock.fileno() == -1
    assert server.transcript == EHLO + b"noop\r\nquit\r\n"


async def test_unix_socket_missing() -> None:
    directory = tempfile.mkdtemp(prefix="anysmtp-")
    try:
        smtp = anysmtp.AsyncSMTP(socket_path=os.path.join(directory, "none.sock"))
        async with no_fd_leak():
            with pytest.raises(FileNotFoundError):
                await smtp.connect()
        assert not smtp.is_connected
    finally:
        shutil.rmtree(directory)


@contextmanager
def full_unix_listener() -> Iterator[tuple[socket.socket, str]]:
    """A Unix listener that accepts nothing yet, its backlog full: a
    non-blocking connect() to it says EAGAIN."""
    directory = tempfile.mkdtemp(prefix="anysmtp-")
    path = os.path.join(directory, "full.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(path)
        listener.listen(0)
        while True:
            filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            if filler.connect_ex(path):
                break
        yield listener, path
    finally:
        for each in fillers:
            each.close()
        listener.close()
        shutil.rmtree(directory)


# Linux says EAGAIN when a Unix listener's backlog is full; BSD and macOS refuse.
full_backlog_is_eagain = pytest.mark.skipif(
    sys.platform != "linux", reason="a full Unix backlog refuses outside Linux"
)


@full_backlog_is_eagain
async def test_unix_socket_with_a_full_backlog_waits_for_room() -> None:
    # Before: the EAGAIN of a full backlog was taken for a connect in progress,
    # and an unconnected socket (which polls as writable) for a connected one.
    with full_unix_listener() as (listener, path):
        received: list[bytes] = []

        def serve() -> None:
            # Room comes as the waiting connections are accepted; the client's
            # is the last one in the queue.
            time.sleep(0.2)
            listener.settimeout(10)
            accepted: list[socket.socket] = []
            try:
                while True:
                    conn, _ = listener.accept()
                    accepted.append(conn)
                    conn.sendall(b"220 full.test ready\r\n")
                    conn.settimeout(0.2)
                    try:
                        data = conn.recv(1024)
                    except TimeoutError:
                        continue  # a filler: it never speaks
                    received.append(data)
                    conn.sendall(b"221 bye\r\n")
                    return
            finally:
                for each in accepted:
                    each.close()

        server = threading.Thread(target=serve)
        server.start()
        try:
            smtp = anysmtp.AsyncSMTP(socket_path=path, timeout=10)
            assert await smtp.connect() == (220, b"full.test ready")
            assert await smtp.quit() == (221, b"bye")
        finally:
            server.join()
    assert received == [b"quit\r\n"]


@full_backlog_is_eagain
async def test_unix_socket_with_a_full_backlog_times_out() -> None:
    with full_unix_listener() as (_listener, path):
        smtp = anysmtp.AsyncSMTP(socket_path=path, timeout=0.3)
        async with no_fd_leak():
            with pytest.raises(anysmtp.SMTPConnectTimeoutError):
                await smtp.connect()
        assert not smtp.is_connected


async def test_socket_path_and_host_are_exclusive() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        anysmtp.AsyncSMTP("127.0.0.1", socket_path="/tmp/x.sock")
    smtp = anysmtp.AsyncSMTP(start_tls=False)
    with pytest.raises(ValueError, match="mutually exclusive"):
        await smtp.connect("127.0.0.1", socket_path="/tmp/x.sock")


@pytest.mark.parametrize("how", ["constructor", "connect", "assignment"])
async def test_adopted_socket(how: str) -> None:
    with ScriptedServer(greet_ehlo_noop_quit) as server:
        sock = socket.create_connection((server.host, server.port), timeout=5)
        if how == "constructor":
            smtp = anysmtp.AsyncSMTP(sock=sock, local_hostname=LOCAL)
            assert await smtp.connect() == GREETING
        elif how == "connect":
            smtp = anysmtp.AsyncSMTP(local_hostname=LOCAL, start_tls=False)
            assert await smtp.connect(sock=sock) == GREETING
        else:
            # smtplib style: assign a connected socket, then read the greeting.
            smtp = anysmtp.AsyncSMTP(local_hostname=LOCAL, start_tls=False)
            smtp.sock = sock
            assert await smtp.getreply() == GREETING
        assert smtp.sock is sock
        assert smtp.is_connected
        assert (await smtp.ehlo())[0] == 250
        assert await smtp.noop() == (250, b"fine")
        assert await smtp.quit() == (221, b"bye")
        assert sock_of(smtp) is None
        assert sock.fileno() == -1
    assert server.transcript == EHLO + b"noop\r\nquit\r\n"


# Transport info, the sock property, async with, quit ---------------------------


async def test_get_transport_info() -> None:
    with ScriptedServer(greet_quit) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, start_tls=False)
        with pytest.raises(anysmtp.SMTPServerDisconnected):
            smtp.get_transport_info("peername")
        await smtp.connect()
        sock = smtp.sock
        assert sock is not None
        assert smtp.get_transport_info("socket") is sock
        assert smtp.get_transport_info("peername") == (server.host, server.port)
        assert smtp.get_transport_info("sockname") == sock.getsockname()
        for key in (
            "sslobject",
            "ssl_object",  # asyncio's (and aiosmtplib's) name
            "sslcontext",
            "cipher",
            "peercert",
            "compression",
            "tls_version",
        ):
            assert smtp.get_transport_info(key) is None, key
        with pytest.raises(KeyError):
            smtp.get_transport_info("no-such-key")
        await smtp.quit()
        with pytest.raises(anysmtp.SMTPServerDisconnected):
            smtp.get_transport_info("socket")


async def test_sock_property_lifecycle() -> None:
    with ScriptedServer(greet_quit) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, start_tls=False)
        assert (smtp.sock, smtp.is_connected) == (None, False)
        await smtp.connect()
        sock = smtp.sock
        assert type(sock) is socket.socket
        assert sock.type == socket.SOCK_STREAM
        assert sock.getpeername() == (server.host, server.port)
        assert smtp.is_connected
        await smtp.quit()
        assert (smtp.sock, smtp.is_connected) == (None, False)
        assert sock.fileno() == -1


async def test_async_with_sends_quit_and_closes() -> None:
    with ScriptedServer(greet_ehlo_noop_quit) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, start_tls=False
        ) as smtp:
            sock = smtp.sock
            assert sock is not None
            await smtp.ehlo()
            await smtp.noop()
        assert smtp.sock is None
        assert sock.fileno() == -1
    assert server.transcript == EHLO + b"noop\r\nQUIT\r\n"


async def test_async_with_default_options_says_ehlo_on_connect() -> None:
    # start_tls=None (the default): EHLO right after the greeting, to look for
    # STARTTLS; not offered here, so the session stays in plain text.
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"8BITMIME",))
        exchange(conn, (b"quit", b"221 bye\r\n"))

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5
        ) as smtp:
            assert smtp.does_esmtp
            assert smtp.esmtp_features == {"8bitmime": ""}
        assert not smtp.is_connected
    assert server.transcript == EHLO + b"QUIT\r\n"


async def test_commands_need_a_connection() -> None:
    smtp = anysmtp.AsyncSMTP(start_tls=False)
    for command in (smtp.noop, smtp.rset, smtp.quit, smtp.getreply):
        with pytest.raises(anysmtp.SMTPServerDisconnected, match="connect"):
            await command()
    with pytest.raises(anysmtp.SMTPServerDisconnected):
        await smtp.send(b"noop\r\n")


async def test_async_with_refused_quit_raises() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        exchange(conn, (b"quit", b"500 not now\r\n"))

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, start_tls=False)
        with pytest.raises(anysmtp.SMTPResponseException) as caught:
            async with smtp:
                pass
        assert (caught.value.smtp_code, caught.value.smtp_error) == (
            500,
            b"not now",
        )
        assert not smtp.is_connected
    assert server.transcript == b"QUIT\r\n"


async def test_async_with_unanswered_quit_just_closes() -> None:
    with ScriptedServer(greet_then_drain) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, timeout=0.2, start_tls=False)
        try:
            async with smtp:
                pass
        finally:
            assert not smtp.is_connected
    assert server.transcript == b"QUIT\r\n"


async def test_async_with_body_error_still_quits() -> None:
    with ScriptedServer(greet_quit) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, start_tls=False)
        with pytest.raises(LookupError, match="body"):
            async with smtp:
                raise LookupError("body")
        assert not smtp.is_connected
    assert server.transcript == b"QUIT\r\n"


async def test_async_with_server_gone_before_quit() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        exchange(conn, (b"noop", b"421 closing\r\n"))

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, timeout=5, start_tls=False
        ) as smtp:
            assert await smtp.noop() == (421, b"closing")
            await anyio.sleep(0.05)  # the server has closed by now
        assert not smtp.is_connected


async def test_quit_resets_session_state() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"SIZE 1000", b"8BITMIME"))
        exchange(conn, (b"quit", b"221 bye\r\n"))

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, start_tls=False
        )
        await smtp.connect()
        await smtp.ehlo()
        before = (smtp.ehlo_resp, smtp.does_esmtp, smtp.esmtp_features)
        assert before == (
            b"scripted\nSIZE 1000\n8BITMIME",
            True,
            {"size": "1000", "8bitmime": ""},
        )
        assert await smtp.quit() == (221, b"bye")
        after = (smtp.ehlo_resp, smtp.helo_resp, smtp.does_esmtp, smtp.esmtp_features)
        assert after == (None, None, False, {})
        assert smtp.sock is None


async def test_connect_again_closes_the_old_connection() -> None:
    sessions = iter([greet_then_drain, greet_quit])

    def script(conn: ScriptedConnection) -> None:
        next(sessions)(conn)

    with ScriptedServer(script, connections=2) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, timeout=5, start_tls=False)
        await smtp.connect()
        first = smtp.sock
        assert first is not None
        await smtp.connect()
        assert first.fileno() == -1
        assert smtp.sock is not first
        assert await smtp.quit() == (221, b"bye")
    # The first connection got no QUIT: it was just closed.
    assert server.transcript == b"quit\r\n"


# Cancellation ------------------------------------------------------------------


def silent_then_healthy(noticed: threading.Event) -> Script:
    """First connection: greet, take a command and never answer it.  Second
    connection: a healthy session."""
    sessions = iter(["silent", "healthy"])

    def script(conn: ScriptedConnection) -> None:
        if next(sessions) == "silent":
            conn.send(b"220 scripted ESMTP\r\n")
            conn.read_line()
            noticed.set()
            drain(conn)
        else:
            greet_ehlo_noop_quit(conn)

    return script


async def check_reconnect(smtp: anysmtp.AsyncSMTP) -> None:
    """After a cancelled call the same object connects and works again."""
    assert await smtp.connect() == GREETING
    assert (await smtp.ehlo())[0] == 250
    assert await smtp.noop() == (250, b"fine")
    assert await smtp.quit() == (221, b"bye")


async def test_move_on_after_while_waiting_for_a_reply() -> None:
    noticed = threading.Event()
    async with no_fd_leak():
        with ScriptedServer(silent_then_healthy(noticed), connections=2) as server:
            smtp = anysmtp.AsyncSMTP(
                server.host,
                server.port,
                local_hostname=LOCAL,
                timeout=5,
                start_tls=False,
            )
            await smtp.connect()
            sock = smtp.sock
            assert sock is not None
            with anyio.move_on_after(0.1) as scope:
                await smtp.noop()
            assert scope.cancelled_caught
            assert (smtp.is_connected, smtp.sock) == (False, None)
            assert sock.fileno() == -1
            await check_reconnect(smtp)
    assert server.transcript == b"noop\r\n" + EHLO + b"noop\r\nquit\r\n"


async def test_cancel_scope_from_another_task() -> None:
    noticed = threading.Event()
    with ScriptedServer(silent_then_healthy(noticed), connections=2) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        )
        await smtp.connect()
        sock = smtp.sock
        assert sock is not None
        scope = anyio.CancelScope()
        finished = False

        async def waiting_call() -> None:
            nonlocal finished
            with scope:
                await smtp.noop()
                finished = True

        async with anyio.create_task_group() as group:
            group.start_soon(waiting_call)
            assert await anyio.to_thread.run_sync(noticed.wait, 5)
            await anyio.sleep(0.02)  # the task is now waiting for the reply
            scope.cancel()
        assert scope.cancelled_caught
        assert not finished
        assert not smtp.is_connected
        assert sock.fileno() == -1
        await check_reconnect(smtp)


async def test_close_from_another_task_wakes_the_waiting_one() -> None:
    noticed = threading.Event()
    with ScriptedServer(silent_then_healthy(noticed), connections=2) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        )
        await smtp.connect()
        raised: list[BaseException] = []

        async def waiting_call() -> None:
            try:
                await smtp.noop()
            except Exception as exc:
                raised.append(exc)

        async with anyio.create_task_group() as group:
            group.start_soon(waiting_call)
            assert await anyio.to_thread.run_sync(noticed.wait, 5)
            await anyio.sleep(0.02)
            smtp.close()
        # smtplib's exception, not one of anyio's.
        [exc] = raised
        assert type(exc) is anysmtp.SMTPServerDisconnected
        assert not smtp.is_connected
        await check_reconnect(smtp)


def stalled_handshake_then_healthy(noticed: threading.Event) -> Script:
    """First connection: STARTTLS accepted, then the server takes the
    client's first TLS record and never answers.  Second connection: a
    healthy session."""
    sessions = iter(["stalled", "healthy"])

    def script(conn: ScriptedConnection) -> None:
        if next(sessions) == "stalled":
            conn.greet_and_ehlo((b"STARTTLS",))
            exchange(conn, (b"starttls", b"220 go ahead\r\n"))
            conn.read_tls_record()
            noticed.set()
            drain(conn)
        else:
            greet_ehlo_noop_quit(conn)

    return script


@pytest.mark.parametrize("timeout", [None, 60], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize("stage", ["reply", "handshake"])
def test_close_from_another_thread_wakes_the_waiting_call(
    anyio_backend: tuple[str, dict[str, Any]], timeout: float | None, stage: str
) -> None:
    # A watchdog thread closes a connection whose call waits in an event loop
    # running in another thread: the call ends at once with smtplib's error,
    # and the server sees the connection end.  (It used to hang: the wake-up
    # went to a loop asleep in select(), or close() raised anyio's
    # NoEventLoopError; a first fix let the TLS handshake go on with a
    # dropped TLS object, an AttributeError.)
    backend, options = anyio_backend
    noticed = threading.Event()
    raised: list[BaseException] = []
    script = (
        silent_then_healthy if stage == "reply" else stalled_handshake_then_healthy
    )(noticed)
    with ScriptedServer(script, connections=2) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=timeout
        )
        numbers: list[int] = []

        async def waiting_call() -> None:
            numbers.append(lowest_free_descriptor())  # the socket's, next
            await smtp.connect(start_tls=False)
            try:
                if stage == "reply":
                    await smtp.noop()
                else:
                    await smtp.ehlo()
                    await smtp.starttls(context=ssl.create_default_context())
            except Exception as exc:
                raised.append(exc)

        loop_thread = threading.Thread(
            target=anyio.run,
            args=(waiting_call,),
            kwargs={"backend": backend, "backend_options": options},
        )
        loop_thread.start()
        assert noticed.wait(10)
        time.sleep(0.05)  # the call is waiting now
        smtp.close()
        loop_thread.join(10)
        assert not loop_thread.is_alive()
        [exc] = raised
        assert type(exc) is anysmtp.SMTPServerDisconnected
        assert not smtp.is_connected
        # Closed by the time the loop is gone, however the loop ended.
        assert not is_open(numbers[0])
        anyio.run(check_reconnect, smtp, backend=backend, backend_options=options)
    assert server.transcripts[0] == (
        b"noop\r\n" if stage == "reply" else EHLO + b"STARTTLS\r\n"
    )


async def test_fail_after_while_waiting_for_the_greeting() -> None:
    def script(conn: ScriptedConnection) -> None:
        drain(conn)

    async with no_fd_leak():
        with ScriptedServer(script) as server:
            smtp = anysmtp.AsyncSMTP(
                server.host, server.port, timeout=5, start_tls=False
            )
            with pytest.raises(TimeoutError), anyio.fail_after(0.1):
                await smtp.connect()
            assert not smtp.is_connected


async def test_cancel_while_sending_a_large_message() -> None:
    stop = threading.Event()

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        stop.wait(10)  # read nothing more until the client gave up

    big = (b"x" * 998 + b"\r\n") * (64 * 1024)  # 64 MiB
    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        )
        await smtp.connect()
        sock = smtp.sock
        assert sock is not None
        try:
            with anyio.move_on_after(0.3) as scope:
                await smtp.sendmail("a@example.com", ["b@example.com"], big)
        finally:
            stop.set()
        assert scope.cancelled_caught
        assert not smtp.is_connected
        assert sock.fileno() == -1


async def test_cancel_while_connecting() -> None:
    with black_hole() as (host, port):
        smtp = anysmtp.AsyncSMTP(host, port, timeout=5, start_tls=False)
        async with no_fd_leak():
            with anyio.move_on_after(0.1) as scope:
                await smtp.connect()
        assert scope.cancelled_caught
        assert not smtp.is_connected


async def test_cancel_during_happy_eyeballs(
    fake_dns: dict[str, list[tuple[str, int]]],
) -> None:
    with black_hole() as hole:
        fake_dns["holes.test"] = [hole, hole, hole]
        smtp = anysmtp.AsyncSMTP("holes.test", 25, timeout=5, start_tls=False)
        async with no_fd_leak():
            # Cancelled while two attempts are in flight.
            with anyio.move_on_after(0.4) as scope:
                await smtp.connect()
        assert scope.cancelled_caught
        assert not smtp.is_connected


# asyncio's reader ---------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
async def test_no_reader_stays_in_the_loop_once_the_socket_is_handed_out(
    smtpd: AiosmtpdServer,
) -> None:
    # On asyncio the reader stays registered through a transaction's waits,
    # and between calls too (it parks) until code outside anysmtp takes the
    # socket: that code may close it, and the loop must not keep polling the
    # number.  From then on a call that returns (or fails) leaves none behind.
    # (tests/test_idle_connection.py checks what parking must not change.)
    import asyncio

    loop = asyncio.get_running_loop()
    async with anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port) as smtp:
        assert smtp.sock is not None
        fd = smtp.sock.fileno()
        assert await smtp.sendmail("a@example.com", ["b@example.com"], b"one") == {}
        assert not loop.remove_reader(fd)
        await smtp.noop()
        assert not loop.remove_reader(fd)
        with pytest.raises(anysmtp.SMTPRecipientsRefused):
            await smtp.sendmail("a@example.com", ["bad@"], b"two")
        assert not loop.remove_reader(fd)
        assert await smtp.sendmail("a@example.com", ["c@example.com"], b"three") == {}
        assert not loop.remove_reader(fd)
    assert [m.data for m in smtpd.messages] == [b"one\r\n", b"three\r\n"]


async def test_a_server_talking_out_of_turn_cannot_fill_our_memory() -> None:
    # While the body goes out slowly, the server floods replies nobody asked
    # for.  The client reads at most a little of it: the rest stays in the
    # socket buffers and the server's sends block.  (Without that bound it
    # would take in hundreds of MiB in half a second.)
    flooded: list[int] = []

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"PIPELINING",))
        conn.expect(b"mail from:")
        conn.expect(b"rcpt to:")
        conn.expect(b"data")
        time.sleep(0.05)  # the client waits for these replies (the reader is on)
        conn.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        flooded.append(conn.send_endless(b"250 out of turn\r\n" * 4096))

    async def slow_body() -> AsyncIterator[bytes]:
        for _ in range(10):
            await anyio.sleep(0.05)
            yield b"line\r\n" * 100

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=5
        ) as smtp:
            # The first reply after the body counts as the answer to it, as
            # in smtplib.
            assert (
                await smtp.sendmail("a@b.example", ["c@d.example"], slow_body()) == {}
            )
            smtp.close()
    [sent] = flooded
    assert sent < 64 * 1024 * 1024


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS[:1])
async def test_a_socket_closed_by_other_code_mid_transaction() -> None:
    # Code that closes ``sock`` itself while a transaction waits (smtplib users
    # do): the wait ends with the timeout, and asyncio's selector keeps no
    # stale entry for the old descriptor, which the next connection most likely
    # reuses.  (Not on uvloop: libuv aborts the process when a descriptor it
    # polls is closed under it, whoever registered it.)
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"PIPELINING",))
        conn.expect(b"mail from:")
        conn.stall()

    def second(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"PIPELINING",))
        exchange(
            conn,
            (b"mail from:", b"250 ok\r\n250 ok\r\n354 go\r\n"),
        )
        conn.expect(b"rcpt to:")
        conn.expect(b"data")
        conn.read_data()
        conn.send(b"250 queued\r\n")
        drain(conn)

    scripts = iter([script, second])
    with ScriptedServer(lambda conn: next(scripts)(conn), connections=2) as server:
        smtp = anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, start_tls=False, timeout=0.5
        )
        await smtp.connect()
        # EHLO first: the task below must be waiting inside the transaction
        # (for the replies to MAIL), not for EHLO's reply.
        await smtp.ehlo()
        async with anyio.create_task_group() as group:

            async def send() -> None:
                with pytest.raises(anysmtp.SMTPServerDisconnected):
                    await smtp.sendmail("a@b.example", ["c@d.example"], b"one")

            group.start_soon(send)
            await anyio.wait_all_tasks_blocked()
            assert smtp.sock is not None
            smtp.sock.close()
        smtp.timeout = 10
        await smtp.connect()
        assert await smtp.sendmail("a@b.example", ["c@d.example"], b"two") == {}
        smtp.close()


# A reply taken without waiting (Transport.arrived_reply) ----------------------
#
# getreply() and the pipelined transaction first ask the transport for a reply
# that has arrived; only when none has do they wait.  These tests put the
# socket in each state first (data there, nothing, a reset, the end) and check
# that the reply, or smtplib's exception, comes out of either path the same.


@contextmanager
def connected_transport() -> Iterator[tuple[Transport, socket.socket]]:
    """A Transport on one end of a loopback TCP connection, and the other end."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    ours.setblocking(False)
    transport = Transport(ours)
    try:
        yield transport, theirs
    finally:
        transport.close()
        theirs.close()


def arrived(sock: socket.socket, size: int) -> None:
    """Wait until ``size`` bytes (or the end, or an error) can be read."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if len(sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)) >= size:
                return
        except BlockingIOError:
            pass
        time.sleep(0.001)
    raise AssertionError("nothing arrived")


async def receive_while_sent(
    transport: Transport, theirs: socket.socket, data: bytes
) -> RawReply:
    """``receive_reply()``, with ``data`` sent while it waits."""

    async def send_later() -> None:
        await anyio.sleep(0.05)
        theirs.sendall(data)

    async with anyio.create_task_group() as group:
        group.start_soon(send_later)
        reply = await transport.receive_reply(5)
    return reply


def reply_of(reply: RawReply | None) -> tuple[int, bytes] | None:
    return None if reply is None else (reply.code, reply.message)


def reset(sock: socket.socket) -> None:
    """Close with a reset (RST) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_arrived_reply_takes_what_is_there_in_order() -> None:
    with connected_transport() as (transport, theirs):
        theirs.sendall(b"250 one\r\n250-two\r\n250 three\r\n354 go")
        arrived(transport.sock, 34)
        assert reply_of(transport.arrived_reply()) == (250, b"one")
        assert reply_of(transport.arrived_reply()) == (250, b"two\nthree")
        # Half a reply: nothing yet; the rest comes while receive_reply waits.
        assert transport.arrived_reply() is None
        third = await receive_while_sent(transport, theirs, b" ahead\r\n")
        assert reply_of(third) == (354, b"go ahead")


async def test_arrived_reply_when_nothing_came_then_waits() -> None:
    with connected_transport() as (transport, theirs):
        assert transport.arrived_reply() is None
        assert transport.arrived_reply() is None  # asking again changes nothing
        reply = await receive_while_sent(transport, theirs, b"250 late\r\n")
        assert reply_of(reply) == (250, b"late")


async def test_arrived_reply_after_a_reset_raises_what_smtplib_does() -> None:
    with connected_transport() as (transport, theirs):
        reset(theirs)
        # Readable, without a read that would take the error.
        assert select.select([transport.sock], [], [], 5)[0]
        assert transport.arrived_reply() is None
        with pytest.raises(anysmtp.SMTPServerDisconnected) as caught:
            await transport.receive_reply(5)
        # smtplib's getreply() on a reset: the OSError's text is kept.
        assert caught.value.args == (
            "Connection unexpectedly closed: [Errno 104] Connection reset by peer",
        )


async def test_arrived_reply_at_the_end_raises_what_smtplib_does() -> None:
    with connected_transport() as (transport, theirs):
        theirs.sendall(b"250 last\r\n")
        theirs.close()
        arrived(transport.sock, 10)
        assert reply_of(transport.arrived_reply()) == (250, b"last")
        assert transport.arrived_reply() is None
        with pytest.raises(anysmtp.SMTPServerDisconnected) as caught:
            await transport.receive_reply(5)
        assert caught.value.args == ("Connection unexpectedly closed",)
