"""The only module that does I/O: sockets driven by anyio's readiness waits.

anysmtp drives a plain non-blocking :class:`socket.socket` (an
:class:`ssl.SSLSocket` once TLS is on) with :func:`anyio.wait_readable` and
:func:`anyio.wait_writable` instead of wrapping it in an anyio stream.  That keeps
``sock`` a real socket object as smtplib users expect, lets ``close()`` be
synchronous (it is in smtplib and aiosmtplib), and reads go straight into one
reused buffer with ``recv_into``.  It works the same under asyncio, uvloop and
trio.  Every socket and TLS error is mapped here, once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import ipaddress
import math
import os
import select
import socket
import ssl
import threading
import weakref
from typing import Any, Final

import anyio

from ._errors import (
    SMTPConnectTimeoutError,
    SMTPReadTimeoutError,
    SMTPServerDisconnected,
)
from ._protocol import RawReply, ReplyParser

__all__ = ["HAPPY_EYEBALLS_DELAY", "Transport", "open_tcp_socket", "open_unix_socket"]

#: RFC 8305's recommended delay before racing the next address.
HAPPY_EYEBALLS_DELAY = 0.25
_RECEIVE_SIZE = 65536

SocketAddress = tuple[Any, ...]


#: What a non-blocking ``connect()`` returns while the connection is being made
#: (Windows says EWOULDBLOCK).
_IN_PROGRESS: Final = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK})
#: What a Unix socket's ``connect()`` says while the listener's backlog is full
#: (Linux; BSD and macOS refuse the connection instead).
_BACKLOG_FULL: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
#: The first and the longest pause between the tries of a Unix socket's connect
#: while the listener's backlog is full (seconds).
_UNIX_RETRY_FIRST: Final = 0.001
_UNIX_RETRY_MAX: Final = 0.05
#: ``None`` where Python has no Unix sockets (Windows).
_AF_UNIX: Final = getattr(socket, "AF_UNIX", None)


async def _connect_socket(
    family: int,
    address: SocketAddress | str,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    """Open one non-blocking stream socket connected to ``address``."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if source_address is not None:
                sock.bind(source_address)
        result = sock.connect_ex(address)
        if family == _AF_UNIX:
            # A Unix socket connects at once, or says EAGAIN when the listener's
            # backlog is full.  Nothing tells when there is room (a blocking
            # connect() waits for it in the kernel; the socket, unconnected,
            # polls as writable at once), so the connect is tried again, ever
            # less often, until the caller's timeout.
            delay = _UNIX_RETRY_FIRST
            while result in _BACKLOG_FULL:
                await anyio.sleep(delay)
                delay = min(delay * 2, _UNIX_RETRY_MAX)
                result = sock.connect_ex(address)
        if result in _IN_PROGRESS:
            # A second look costs one system call: on loopback the handshake
            # is over by now (0, or EISCONN on some systems), which spares a
            # wait through the event loop.
            result = sock.connect_ex(address)
            if result == errno.EISCONN:
                result = 0
            elif result in _IN_PROGRESS or result == errno.EALREADY:
                await anyio.wait_writable(sock)
                result = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if result:
            raise OSError(result, os.strerror(result))
    except BaseException:
        sock.close()
        raise
    return sock


async def _resolve(host: str, port: int) -> list[tuple[int, SocketAddress]]:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        # A literal needs no resolver round trip (which would run in a thread).
        if literal.version == 6:
            return [(socket.AF_INET6, (host, port, 0, 0))]
        return [(socket.AF_INET, (host, port))]
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # Alternate the families, the first one first (RFC 8305 section 4).
    by_family: dict[int, list[tuple[int, SocketAddress]]] = {}
    for family, _type, _proto, _name, address in infos:
        by_family.setdefault(family, []).append((family, address))
    ordered: list[tuple[int, SocketAddress]] = []
    queues = list(by_family.values())
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


async def open_tcp_socket(
    host: str,
    port: int | str,
    *,
    source_address: tuple[str, int] | None = None,
    happy_eyeballs_delay: float = HAPPY_EYEBALLS_DELAY,
) -> socket.socket:
    """Connect to ``host:port`` over TCP, racing its addresses (happy eyeballs).

    :param source_address: ``(host, port)`` to bind to before connecting.
    :raises OSError: as :func:`socket.create_connection` would (the error of the
        last failed attempt, e.g. :exc:`ConnectionRefusedError`).
    """
    if isinstance(port, str):
        # smtplib passes the port to socket.create_connection, which takes
        # "2525" and service names such as "submission" too.
        port = int(port) if port.isdigit() else socket.getservbyname(port, "tcp")
    targets = await _resolve(host, port)
    if len(targets) == 1:
        family, address = targets[0]
        return await _connect_socket(family, address, source_address)
    winner: socket.socket | None = None
    errors: list[OSError] = []

    async def attempt(
        family: int, address: SocketAddress, done: anyio.Event, scope: anyio.CancelScope
    ) -> None:
        nonlocal winner
        try:
            sock = await _connect_socket(family, address, source_address)
        except OSError as exc:
            errors.append(exc)
            return
        finally:
            done.set()
        if winner is None:
            winner = sock
            scope.cancel()
        else:
            sock.close()

    try:
        async with anyio.create_task_group() as group:
            for family, address in targets:
                done = anyio.Event()
                group.start_soon(attempt, family, address, done, group.cancel_scope)
                with anyio.move_on_after(happy_eyeballs_delay):
                    await done.wait()
    except BaseException:
        if winner is not None:
            winner.close()
        raise
    if winner is None:
        raise errors[-1] if errors else OSError(f"no address found for {host!r}")
    return winner


async def open_unix_socket(path: str | bytes | os.PathLike[str]) -> socket.socket:
    """Connect to a Unix domain socket at ``path``.

    :raises OSError: the platform has no Unix domain sockets (Python on
        Windows).
    """
    if _AF_UNIX is None:
        raise OSError(
            errno.EAFNOSUPPORT, "Unix domain sockets are not available on this platform"
        )
    return await _connect_socket(_AF_UNIX, os.fsdecode(path))


_CLOSED_WHILE_WAITING = "Connection closed while waiting for the server"
_BUSY = "Another task is already using this connection"
#: A timer may run this much before its time (the loop's clock resolution).
_TIMER_SLACK = 1e-3
#: While no task waits for a reply, asyncio's reader stops reading (and the
#: socket fills up) once this much is buffered: a server cannot make us hold
#: more by talking out of turn.
_READ_AHEAD = 65536
#: How long taking the socket from another thread waits for the loop's thread
#: to remove a parked reader (seconds).
_HAND_OVER_WAIT = 5.0


def _settle(future: asyncio.Future[bool | None], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _on_readable(transport: weakref.ref[Transport]) -> None:
    # A parked reader (see Transport.hand_out_sock) stays in the loop between
    # calls: held weakly, a client dropped unclosed is still freed at once.
    alive = transport()
    if alive is not None:
        alive._on_readable()


def _remove_reader(
    loop: asyncio.AbstractEventLoop,
    fd: int,
    dropped: socket.socket | None,
    done: concurrent.futures.Future[None] | None,
) -> None:
    """A parked reader's removal, run in its loop's thread for another one."""
    loop.remove_reader(fd)
    # Only now may a dropped connection's socket be freed (with a
    # ResourceWarning, as anywhere else), and its number go to another one.
    del dropped
    if done is not None:
        done.set_result(None)


def _runs_elsewhere(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is running in another thread than this one."""
    return loop.is_running() and loop is not asyncio._get_running_loop()


def _on_timer(transport: weakref.ref[Transport]) -> None:
    # The loop holds the connection's timer until it fires, which may be long
    # after the last wait: held weakly, a client dropped unclosed still frees
    # its socket at once.
    alive = transport()
    if alive is not None:
        alive._on_timer()


class Transport:
    """A connected socket plus the reply parser that reads from it.

    Every method that fails half-way closes the socket first: after an error, a
    timeout or a cancellation the session is out of step with the server and must
    never be used again.
    """

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_closed",
        "_deadline",
        "_drained",
        "_fd",
        "_loop",
        "_parks",
        "_parser",
        "_pending",
        "_pid",
        "_read_error",
        "_reader_held",
        "_reader_on",
        "_ref",
        "_sock",
        "_timer",
        "_timer_at",
        "_waiting",
        "_waiting_read",
    )

    def __init__(self, sock: socket.socket, *, parks: bool = False) -> None:
        # First: __del__ reads them, even when setblocking() fails.
        self._reader_on = False
        self._closed = False
        #: The process that made it: a forked child's copy shares the socket,
        #: the loop's selector and its wake-up pipe with the parent.
        self._pid = os.getpid()
        sock.setblocking(False)
        self._ref = weakref.ref(self)
        self._sock = sock
        #: The descriptor's number, for the loop's registrations: it stays the
        #: same under TLS, and removing by it still works after other code has
        #: closed the socket (``smtp.sock.close()``: ``fileno()`` is -1 then,
        #: and a stale entry would break the next socket given that number).
        self._fd = sock.fileno()
        self._parser = ReplyParser()
        self._buffer = bytearray(_RECEIVE_SIZE)
        #: The thread whose loop anyio's wait (not the fast path's) runs in,
        #: while there is one: close() from another thread cannot reach it.
        self._waiting = 0
        #: The asyncio loop the socket was connected in: its timed waits are a
        #: future, a reader (or writer) and a timer, without a cancel scope,
        #: which costs a third of a round trip on loopback.  ``None`` under trio.
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # not in an asyncio loop: trio
            self._loop = asyncio.get_running_loop()
        #: That fast path's future while it waits: close() resolves it.
        self._pending: asyncio.Future[bool | None] | None = None
        #: One timer for all the waits, not one per command: it is set for the
        #: earliest deadline and, when it fires before the current wait's
        #: deadline (a later wait moved it), sets itself again for that one.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        #: The fast path's reads are done by a reader callback as data arrives
        #: (no failed ``recv`` before each wait).  It is registered for one wait,
        #: or held from the first wait to the end of a transaction, which spares
        #: the two ``epoll_ctl`` calls and the selector's work of every other
        #: wait.  It only reads plain sockets: TLS keeps data the poller cannot
        #: see.
        self._reader_held = False
        #: Whether the reader stays registered between calls too (parked), as
        #: long as the socket's loop keeps using the connection; see
        #: :meth:`hand_out_sock`.
        self._parks = parks and isinstance(
            self._loop, asyncio.selector_events.BaseSelectorEventLoop
        )
        self._waiting_read = False
        #: What the reader's ``recv`` raised, for the task that reads next.
        self._read_error: OSError | None = None
        #: The last read found nothing: the next one waits first.
        self._drained = False

    @property
    def times_waits_itself(self) -> bool:
        """Whether each wait carries its own deadline without a cancel scope
        (asyncio's fast path, in the loop the socket was connected in)."""
        if self._reader_held:
            # Only a transaction on this fast path holds the reader: the
            # waits within it need not ask asyncio again (its running-loop
            # check makes a getpid() system call each time).
            return True
        loop = self._loop
        return loop is not None and loop is asyncio._get_running_loop()

    @property
    def sock(self) -> socket.socket:
        """The socket (an :class:`ssl.SSLSocket` once TLS is on)."""
        return self._sock

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called or the socket was closed."""
        return self._closed or self._sock.fileno() < 0

    def close(self) -> None:
        """Close the socket now; a task waiting on it is woken with an error.

        From a thread other than the one whose event loop polls the socket (a
        watchdog's), the connection is shut down at once, so the server sees
        the end and a waiting task wakes, and the socket is closed in that
        loop's thread: only it may change what the loop polls, and the
        socket's number must not go to another socket before.
        """
        if self._closed:
            return
        self._closed = True
        if self._pid != os.getpid():
            self._let_go_in_child()
            return
        if self._waiting and self._waiting != threading.get_ident():
            # anyio's wait, in another thread's loop: the shutdown wakes it,
            # and it closes the socket once it has stopped waiting.
            self._shut_down()
            return
        loop = self._loop
        if loop is not None and _runs_elsewhere(loop):
            if self._reader_on or self._pending is not None:
                try:
                    # Queued before the shutdown can wake anything: a loop
                    # that stops right after the woken call still runs it.
                    loop.call_soon_threadsafe(self._close_here)
                except RuntimeError:
                    pass  # the loop has closed meanwhile: it polls nothing now
                else:
                    self._shut_down()
                    return
            else:
                # Nothing of it in the loop but perhaps its timer, which only
                # that loop's thread may cancel: it holds the connection
                # weakly and, when it fires, finds nothing to time out.
                self._timer = None
        self._close_here()

    def _let_go_in_child(self) -> None:
        """Close a forked child's copy of the socket, and only that: a
        shutdown would end the parent's connection, and the selector (an
        epoll instance) and the loop's wake-up pipe are the parent's too."""
        self._closed = True
        self._reader_on = False
        self._parks = False
        self._sock.close()

    def _shut_down(self) -> None:
        # The plain socket's shutdown, also under TLS: SSLSocket.shutdown()
        # drops the TLS object first, and a send in the loop's thread could
        # then go out in plaintext.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def _close_here(self) -> None:
        """The rest of :meth:`close`, in the thread of the loop that polls the
        socket (or where no loop polls it)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = self._pending
        if self._reader_on:
            self._stop_reading()
        if pending is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            if not pending.done():
                pending.set_result(None)
        elif self._waiting and self._sock.fileno() >= 0:
            anyio.notify_closing(self._sock)
        self._sock.close()

    async def _wait_until(
        self, loop: asyncio.AbstractEventLoop, readable: bool, deadline: float | None
    ) -> bool:
        """asyncio's wait: a future that resolves to True (ready), False (the
        deadline passed) or None (closed); a cancellation cancels it.  With no
        deadline (``timeout=None``, smtplib's default) it waits as long as it
        takes, the same way.

        A wait to read a plain socket uses the connection's reader, which reads
        what arrives itself (see :meth:`_on_readable`); other waits (to write,
        or to read TLS, whose buffered bytes the poller cannot see) only learn
        that the socket is ready.

        :returns: whether the reader has read what arrived.
        """
        if self._pending is not None:
            raise SMTPServerDisconnected(_BUSY)
        if self._closed:
            raise SMTPServerDisconnected(_CLOSED_WHILE_WAITING)
        fd = self._fd
        future: asyncio.Future[bool | None] = loop.create_future()
        reads = readable and not isinstance(self._sock, ssl.SSLSocket)
        if reads:
            if not self._reader_on:
                loop.add_reader(fd, _on_readable, self._ref)
                self._reader_on = True
        elif readable:
            loop.add_reader(fd, _settle, future, True)
        else:
            loop.add_writer(fd, _settle, future, True)
        if deadline is None:
            # A timer left by an earlier wait finds nothing to time out.
            self._deadline = math.inf
        else:
            self._deadline = deadline
            if self._timer is None or self._timer_at > deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer_at = deadline
                self._timer = loop.call_at(deadline, _on_timer, self._ref)
        self._pending = future
        self._waiting_read = reads
        try:
            ready = await future
        finally:
            self._pending = None
            self._waiting_read = False
            if reads:
                if self._reader_on and not (self._reader_held or self._parks):
                    self._stop_reading()
            elif not self._closed:
                if readable:
                    loop.remove_reader(fd)
                else:
                    loop.remove_writer(fd)
        if ready is None or self._closed:
            # Closed, maybe from another thread, whose shutdown can wake the
            # wait as "ready" first: the rest of the close, handed to this
            # loop, is done here and now (the loop may stop before it runs).
            if self._sock.fileno() >= 0:
                self._close_here()
            raise SMTPServerDisconnected(_CLOSED_WHILE_WAITING)
        if not ready:
            raise TimeoutError
        return reads

    def _on_timer(self) -> None:
        self._timer = None
        pending, loop = self._pending, self._loop
        if pending is None or pending.done() or loop is None:
            return  # no wait now: the next one sets the timer again
        if loop.time() >= self._deadline - _TIMER_SLACK:
            pending.set_result(False)
        elif self._deadline != math.inf:
            self._timer_at = self._deadline
            self._timer = loop.call_at(self._deadline, _on_timer, self._ref)

    def hold_reader(self) -> None:
        """Keep asyncio's reader registered from the next wait until
        :meth:`release_reader`: the waits of one transaction, in one task of
        the loop the socket was connected in (see :attr:`times_waits_itself`).
        """
        self._reader_held = True

    def release_reader(self) -> None:
        """End :meth:`hold_reader`: the reader is removed, unless it parks."""
        self._reader_held = False
        if self._reader_on and not self._parks:
            self._stop_reading()

    def hand_out_sock(self) -> socket.socket:
        """The socket, for code outside anysmtp, which may close it: from now
        on the reader no longer parks (asyncio would keep polling a closed
        descriptor's number, and a socket that later gets that number would
        never be seen ready), and a parked reader is removed.

        Parking (``parks=True``) keeps the reader registered between calls, as
        long as the socket's loop keeps using the connection: a wait for a
        reply then costs no ``add_reader``/``remove_reader`` (two ``epoll_ctl``
        calls and the selector's work, about 6 us on asyncio), which every
        transaction with a remote server pays.  Only a client that opened its
        socket itself, in an asyncio selector loop, outside the sync facade
        parks: the facade uses a connection from several threads' loops, and
        uvloop aborts the process when code closes a socket it polls.
        """
        self._parks = False
        if self._pid != os.getpid():
            # A forked child's copy: the reader (if any) is the parent's.
            self._reader_on = False
        if self._reader_on and self._pending is None and not self._reader_held:
            # The caller may close the socket at once: the loop must have let
            # go of its number first.
            removed: concurrent.futures.Future[None] = concurrent.futures.Future()
            if self._remove_parked_reader(None, done=removed):
                # Bounded: a loop that never turns again (its thread blocked
                # on this one) must not hang the caller for ever.
                with contextlib.suppress(TimeoutError):
                    removed.result(_HAND_OVER_WAIT)
        return self._sock

    def __del__(self) -> None:
        if self._pid != os.getpid():
            sock = getattr(self, "_sock", None)  # unset if __init__ failed
            if sock is not None and sock.fileno() >= 0:
                self._let_go_in_child()
            return
        # A client dropped unclosed while its reader is parked: the loop's
        # entry for the descriptor must go before the socket is freed.
        if self._reader_on and not self._closed:
            self._remove_parked_reader(self._sock)
        elif self._closed and self._sock.fileno() >= 0:
            # The rest of a close() handed to a loop that closed before it
            # ran it: nothing polls the socket now.
            self._sock.close()

    def _remove_parked_reader(
        self,
        dropped: socket.socket | None,
        *,
        done: concurrent.futures.Future[None] | None = None,
    ) -> bool:
        """Remove the reader, from any thread: the loop may be running in
        another one, and only its own thread may change its selector.

        :param dropped: the socket of a dropped connection: if the removal
            must wait for the loop's thread, so does the socket's end (freed
            first, its number could go to a new socket, and the removal meant
            for it would remove that socket's reader).
        :param done: set by the loop's thread once it has removed it.
        :returns: whether the loop's thread does it.
        """
        self._reader_on = False
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        if _runs_elsewhere(loop):
            try:
                loop.call_soon_threadsafe(_remove_reader, loop, self._fd, dropped, done)
            except RuntimeError:  # the loop closed meanwhile
                return False
            return True
        loop.remove_reader(self._fd)
        return False

    def _stop_reading(self) -> None:
        self._reader_on = False
        if self._loop is not None:
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        """asyncio's reader: read what arrived into the parser and wake the task
        waiting for a reply."""
        if self._closed:
            # By another thread, whose shutdown woke this reader: the rest of
            # the close, handed to this loop, is done now.
            self._close_here()
            return
        try:
            received = self._sock.recv_into(self._buffer)
        except (BlockingIOError, InterruptedError):
            return  # readiness that another read already used
        except OSError as exc:
            self._read_error = exc
            self._stop_reading()
        else:
            self._drained = False
            if received:
                self._parser.feed(memoryview(self._buffer)[:received])
                if not self._waiting_read and self._parser.buffered > _READ_AHEAD:
                    self._stop_reading()
            else:
                self._parser.feed_eof()
                self._stop_reading()
        pending = self._pending
        if self._waiting_read and pending is not None and not pending.done():
            pending.set_result(True)

    async def _wait(self, readable: bool, deadline: float | None = None) -> bool:
        """Wait until the socket is readable (or writable), until ``deadline``
        (on the clock of the running loop) if given.

        Only a wait that really waits pays for a deadline: on asyncio's fast
        path the connection's timer, otherwise (trio) a cancel scope of its own.
        Every read or send is tried before it waits, so on a fast server most
        replies need neither.

        :returns: whether asyncio's reader has read what arrived (then there is
            nothing left to read).
        :raises TimeoutError: the deadline passed.
        """
        loop = self._loop
        if loop is not None and self.times_waits_itself:
            return await self._wait_until(loop, readable, deadline)
        if deadline is None:
            await self._wait_ready(readable)
        else:
            with anyio.CancelScope(deadline=deadline) as scope:
                await self._wait_ready(readable)
            if scope.cancelled_caught:
                raise TimeoutError
        return False

    async def _wait_ready(self, readable: bool) -> None:
        if self._reader_on:
            # The fast path's reader, left by a wait in another mode or parked
            # (maybe in another loop): anyio would replace it.
            self._remove_parked_reader(None)
        if self._waiting:
            # Another task's wait (anyio would say BusyResourceError): its
            # marker stays, so that the close that follows wakes it.
            raise SMTPServerDisconnected(_BUSY)
        self._waiting = threading.get_ident()
        try:
            if self._closed:
                # close() from another thread came first; it reads _waiting
                # after setting _closed, so one of the two sees the other.
                raise SMTPServerDisconnected(_CLOSED_WHILE_WAITING)
            if readable:
                await anyio.wait_readable(self._sock)
            else:
                await anyio.wait_writable(self._sock)
        except (anyio.ClosedResourceError, anyio.BusyResourceError) as exc:
            # close() from another task, or two tasks using one connection at
            # once: anyio's exceptions never reach the caller.
            raise SMTPServerDisconnected(
                _CLOSED_WHILE_WAITING
                if isinstance(exc, anyio.ClosedResourceError)
                else _BUSY
            ) from None
        finally:
            self._waiting = 0
            if self._closed and self._sock.fileno() >= 0:
                # close() from another thread shut the connection down (which
                # woke this wait) and left the socket to be closed here, now
                # that nothing polls it.
                self._sock.close()
        if self._closed:
            raise SMTPServerDisconnected(_CLOSED_WHILE_WAITING)

    def _deadline_after(self, timeout: float) -> float:
        """``timeout`` seconds from now on the running loop's clock."""
        loop = self._loop
        if loop is not None and self.times_waits_itself:
            return loop.time() + timeout
        return anyio.current_time() + timeout

    async def _receive(self, deadline: float | None = None) -> None:
        """Read what the socket has into the parser, waiting if it has nothing
        (until ``deadline``)."""
        sock = self._sock
        while True:
            error = self._read_error
            if error is not None:
                self._read_error = None
                raise error
            if self._drained:
                # arrived_reply() has just found the socket empty.
                self._drained = False
                if await self._wait(True, deadline):
                    return
                continue
            try:
                received = sock.recv_into(self._buffer)
            except (BlockingIOError, ssl.SSLWantReadError):
                # On one CPU the server has often answered by now: the read
                # above finds the reply and costs no trip through the loop.
                if await self._wait(True, deadline):
                    return
                continue
            except ssl.SSLWantWriteError:
                await self._wait(False, deadline)
                continue
            if received:
                self._parser.feed(memoryview(self._buffer)[:received])
            else:
                self._parser.feed_eof()
            return

    def arrived_reply(self) -> RawReply | None:
        """The next complete reply if it has arrived, else ``None``: one already
        read, or one that a single non-blocking read finds (on one CPU the
        server has often answered by now).  It never waits, so it needs no
        deadline and no trip through the event loop; when it finds nothing,
        :meth:`receive_reply` waits without reading again first.

        :raises ReplyLimitError: the reply exceeded a limit.
        """
        parser = self._parser
        reply = parser.next_reply()
        if (
            reply is not None
            or self._drained
            or self._closed
            or self._read_error is not None
        ):
            return reply
        try:
            received = self._sock.recv_into(self._buffer)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            self._drained = True
            return None
        except ssl.SSLWantWriteError:
            return None  # receive_reply() reads again and waits to write
        except OSError as exc:
            # receive_reply() raises it, as it does its own reads' errors.
            self._read_error = exc
            return None
        if received:
            parser.feed(memoryview(self._buffer)[:received])
        else:
            parser.feed_eof()
        return parser.next_reply()

    async def receive_reply(self, timeout: float | None) -> RawReply:
        """Return the next complete reply.

        :param timeout: seconds to wait for it; ``None`` waits for ever.
        :raises SMTPServerDisconnected: the connection was closed or reset.
        :raises SMTPReadTimeoutError: no complete reply within ``timeout``.
        :raises ReplyLimitError: the reply exceeded a limit.
        """
        reply = self._parser.next_reply()
        if reply is not None:
            return reply
        if self._closed:
            raise SMTPServerDisconnected("Connection unexpectedly closed")
        try:
            if timeout is None:
                return await self._next_reply()
            return await self._next_reply(self._deadline_after(timeout))
        except TimeoutError:
            self.close()
            raise SMTPReadTimeoutError(
                f"Timed out waiting for the server's reply after {timeout} seconds"
            ) from None
        except OSError as exc:
            self.close()
            if isinstance(exc, SMTPServerDisconnected):
                raise
            raise SMTPServerDisconnected(
                "Connection unexpectedly closed: " + str(exc)
            ) from exc
        except BaseException:
            self.close()
            raise

    async def _next_reply(self, deadline: float | None = None) -> RawReply:
        parser = self._parser
        while True:
            if parser.at_eof:
                raise SMTPServerDisconnected("Connection unexpectedly closed")
            await self._receive(deadline)
            reply = parser.next_reply()
            if reply is not None:
                return reply

    async def _send_rest(self, view: memoryview, deadline: float | None = None) -> None:
        sock = self._sock
        while view:
            try:
                sent = sock.send(view)
            except (BlockingIOError, ssl.SSLWantWriteError):
                await self._wait(False, deadline)
                continue
            except ssl.SSLWantReadError:
                await self._wait(True, deadline)
                continue
            view = view[sent:]

    def send_now(self, data: bytes) -> memoryview | None:
        """Send what the socket takes of ``data`` at once, without waiting: the
        common case, a command or a chunk that fits the socket buffer, needs no
        wait, so no deadline and no coroutine.

        :returns: ``None`` when all of it went, else the rest, for
            :meth:`send_rest`.
        :raises OSError: the socket failed (the caller maps it, as smtplib does;
            the connection is closed).
        """
        # A reply to what goes out now is worth a read before any wait.
        self._drained = False
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except BaseException:
            self.close()
            raise
        if sent == len(data):
            return None
        return memoryview(data)[sent:]

    async def send_rest(self, rest: memoryview, timeout: float | None) -> None:
        """Send what :meth:`send_now` left, waiting for the socket as needed.

        :raises OSError: the socket failed (the caller maps it, as smtplib does).
        :raises SMTPReadTimeoutError: the server did not accept it within
            ``timeout``.
        """
        try:
            deadline = None
            if timeout is not None:
                deadline = self._deadline_after(timeout)
            await self._send_rest(rest, deadline)
        except TimeoutError:
            self.close()
            raise SMTPReadTimeoutError(
                f"Timed out sending to the server after {timeout} seconds"
            ) from None
        except BaseException:
            self.close()
            raise

    async def start_tls(
        self,
        context: ssl.SSLContext,
        server_hostname: str | None,
        timeout: float | None,
    ) -> None:
        """Wrap the socket in TLS and do the handshake.

        Bytes the server sent after its last reply and before the handshake are
        dropped, never read as replies (STARTTLS response injection).

        :raises ssl.SSLError: the handshake failed.
        :raises SMTPConnectTimeoutError: the handshake did not finish in time.
        """
        if self._reader_on:
            self._remove_parked_reader(None)
        self._parser.clear()
        self._drained = False
        try:
            tls_sock = context.wrap_socket(
                self._sock,
                server_hostname=server_hostname,
                do_handshake_on_connect=False,
            )
        except BaseException:
            self.close()
            raise
        self._sock = tls_sock
        try:
            with anyio.fail_after(timeout):
                while True:
                    try:
                        tls_sock.do_handshake()
                    except ssl.SSLWantReadError:
                        await self._wait(readable=True)
                    except ssl.SSLWantWriteError:
                        await self._wait(readable=False)
                    else:
                        return
        except TimeoutError:
            self.close()
            raise SMTPConnectTimeoutError(
                f"Timed out during the TLS handshake after {timeout} seconds"
            ) from None
        except BaseException:
            self.close()
            raise

    def open_when_idle(self) -> bool:
        """Whether an idle connection is still open, at the cost of one system
        call.

        An idle SMTP connection has nothing to read: anything there (read by a
        parked reader, or in the socket) means the server closed it (EOF, a
        reset) or is closing it (an unsolicited 421).
        """
        sock = self._sock
        if (
            self.closed
            or self._parser.buffered
            or self._parser.at_eof
            or self._read_error is not None
        ):
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self._fd, select.POLLIN)
                return not poller.poll(0)
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def peer_is_local(self) -> bool:
        """Whether the other end is on this machine: a Unix socket, or a
        loopback address (IPv4-mapped ones too)."""
        sock = self._sock
        if sock.family == getattr(socket, "AF_UNIX", None):
            return True
        try:
            host = sock.getpeername()[0]
            address = ipaddress.ip_address(host.split("%")[0])
        except (OSError, ValueError, IndexError, TypeError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            return address.ipv4_mapped.is_loopback
        return address.is_loopback

    def extra_info(self, key: str) -> Any:
        """Connection details by name, as :meth:`AsyncSMTP.get_transport_info`."""
        sock = self._sock
        if key == "socket":
            return self.hand_out_sock()
        if key == "peername":
            return sock.getpeername()
        if key == "sockname":
            return sock.getsockname()
        tls = sock if isinstance(sock, ssl.SSLSocket) else None
        if key in ("sslobject", "ssl_object"):
            return tls
        if key == "sslcontext":
            return tls.context if tls is not None else None
        if key == "cipher":
            return tls.cipher() if tls is not None else None
        if key == "peercert":
            return tls.getpeercert() if tls is not None else None
        if key == "compression":
            return tls.compression() if tls is not None else None
        if key == "tls_version":
            return tls.version() if tls is not None else None
        raise KeyError(key)
