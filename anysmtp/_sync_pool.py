"""The blocking counterpart of :class:`AsyncSMTPPool`: :class:`SMTPPool`.

It holds an :class:`AsyncSMTPPool` and runs each call in the portal the sync
facade uses (one event loop thread for the process), so its connections live
in that loop.  :meth:`SMTPPool.connection` lends an :class:`anysmtp.SMTP` that
drives the pooled connection (like any facade object: in the calling thread
when no loop runs there, else through the portal).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email.message
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Final, TypeVar, Unpack

from anyio.from_thread import BlockingPortal

from ._client import AsyncSMTP
from ._pool import (
    _BORROWED,
    UNREACHABLE_TIMEOUT,
    AsyncSMTPPool,
    Backoff,
    ConnectionOptions,
    HealthCheck,
    Progress,
    SendItem,
    SendResult,
    _borrowing,
    _Connection,
)
from ._portal import LoopPortal, Portal, get_portal, run_in_portal
from ._response import SMTPResponse
from ._sync import SMTP

__all__ = ["SMTPPool"]

T = TypeVar("T")

#: Seconds for the QUITs after the grace period of an interrupted send_many.
_QUIT_TIME: Final = 10.0


def _nothing() -> None:
    """Nothing to close after an interrupted call: the cancelled coroutine
    gives its connection back (or closes it) itself."""


class SMTPPool:
    """A pool of connections to one SMTP server, for blocking code.

    The same pool as :class:`AsyncSMTPPool`, with the same options, run in
    anysmtp's event loop thread (or in ``portal``).  It is safe to use from
    several threads at once.  Unlike the smtplib-compatible classes, the pool
    follows the async API's defaults: a 60 second ``timeout``, and STARTTLS
    when the server offers it (``start_tls=None``).

    :param hostname: the server (default ``localhost``).
    :param port: the server's port.
    :param max_size: the most connections open at once.
    :param max_messages_per_connection: retire a connection after this many
        messages (envelopes refused at MAIL or RCPT included).
    :param idle_timeout: close connections unused for this many seconds.
    :param health_check: ``"noop"``, ``"reconnect"`` or ``None``, for
        connections idle for ``health_check_after`` seconds.
    :param health_check_after: seconds of idleness after which
        ``health_check`` applies.
    :param reconnect_backoff: the first pause before reconnecting after a 421.
    :param unreachable_timeout: seconds of failed connection attempts after
        which new connections are refused at once with
        :exc:`anysmtp.SMTPServerUnreachableError` (one paced attempt at a
        time goes on); ``None`` tries for every request.
    :param portal: run in this :class:`anyio.from_thread.BlockingPortal`
        instead of the process-wide one.
    :param options: the options of each connection, as for
        :class:`anysmtp.AsyncSMTP`.
    :raises ValueError: invalid sizes, a negative ``unreachable_timeout`` or
        conflicting connection options.
    """

    def __init__(
        self,
        hostname: str | None = None,
        port: int | None = None,
        *,
        max_size: int = 10,
        max_messages_per_connection: int | None = None,
        idle_timeout: float | None = 60.0,
        health_check: HealthCheck = "noop",
        health_check_after: float = 10.0,
        reconnect_backoff: float = 1.0,
        unreachable_timeout: float | None = UNREACHABLE_TIMEOUT,
        portal: BlockingPortal | None = None,
        **options: Unpack[ConnectionOptions],
    ) -> None:
        self._portal = portal
        self._pool = AsyncSMTPPool(
            hostname,
            port,
            max_size=max_size,
            max_messages_per_connection=max_messages_per_connection,
            idle_timeout=idle_timeout,
            health_check=health_check,
            health_check_after=health_check_after,
            reconnect_backoff=reconnect_backoff,
            unreachable_timeout=unreachable_timeout,
            **options,
        )
        # Its connections are used from the calling threads' loops too.
        self._pool._readers_park = False

    def __repr__(self) -> str:
        return repr(self._pool).replace("AsyncSMTPPool", type(self).__name__)

    def __enter__(self) -> SMTPPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run_to_the_end(
        self, func: Callable[[], Awaitable[T]], *, grace: float | None
    ) -> T:
        """:meth:`_run`, but Ctrl-C waits (``grace`` seconds, and a little for
        the QUITs) for the cancelled coroutine to finish: the transactions in
        flight end, and ``progress`` hears of them, before the caller's
        ``except`` runs.  A second Ctrl-C stops waiting."""
        portal = self._portal if self._portal is not None else get_portal()
        if not isinstance(portal, LoopPortal):
            return run_in_portal(portal, func, _nothing)
        future = portal.submit(func)
        try:
            return future.result()
        except BaseException:
            if future.done():
                raise
            portal.cancel(future)
            with contextlib.suppress(BaseException):
                concurrent.futures.wait(
                    [future], timeout=None if grace is None else grace + _QUIT_TIME
                )
            raise

    def _run(self, func: Callable[[], Awaitable[T]]) -> T:
        portal: Portal = self._portal if self._portal is not None else get_portal()
        return run_in_portal(portal, func, _nothing)

    @property
    def size(self) -> int:
        """How many connections are open (idle or in use)."""
        return self._pool.size

    @property
    def idle(self) -> int:
        """How many open connections wait to be used."""
        return self._pool.idle

    @property
    def effective_max_size(self) -> int:
        """``max_size``, or less while the server pushes back with 421."""
        return self._pool.effective_max_size

    @property
    def connections_opened(self) -> int:
        """How many connections the pool opened so far."""
        return self._pool.connections_opened

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._pool.closed

    @contextlib.contextmanager
    def connection(self) -> Iterator[SMTP]:
        """Borrow a connected :class:`anysmtp.SMTP` (EHLO done, logged in if
        configured).

        Leave it between transactions; do not close it or keep it after the
        block (it is disconnected from the pooled connection then).  If the
        block raises, the connection is closed instead of going back to the
        pool.

        :raises SMTPPoolClosedError: the pool is closed.
        :raises SMTPServerUnreachableError: every connection attempt has failed
            for longer than ``unreachable_timeout``.
        :raises OSError: connecting failed.
        :raises SMTPConnectError: the server's greeting was not 220.
        """
        conn = self._acquire()
        facade = _lend(conn, self._portal)
        try:
            # Recorded in the calling thread's context, where close() reads it.
            with _borrowing(conn):
                yield facade
        except BaseException:
            self._give_back(conn, facade, discard=True)
            raise
        self._give_back(conn, facade, discard=False)

    def _give_back(self, conn: _Connection, facade: SMTP, *, discard: bool) -> None:
        client = conn.client
        if facade._turns.lent is not None:
            # ``sock`` was taken in the block: the pool's own calls need the
            # socket non-blocking, as the facade's next call would have.
            facade._take_back_sock()
        # The facade stays usable as an object, but no longer reaches the
        # pooled connection, which may be lent to someone else next.
        facade._attach(self._portal, AsyncSMTP())
        client._facade = None
        # Even under Ctrl-C: a connection never taken back is a token lost.
        self._run_to_completion(lambda: self._pool._release(conn, discard=discard))

    def _acquire(self) -> _Connection:
        """A connection from the pool; Ctrl-C while waiting for it gives back
        whatever the cancelled request got."""
        # Read here: the coroutine runs in the loop thread, in another context.
        self._pool._check_not_waiting_for_itself(_BORROWED.get())
        portal = self._portal if self._portal is not None else get_portal()
        if not isinstance(portal, LoopPortal):
            return run_in_portal(portal, self._pool._acquire, _nothing)
        future = portal.submit(self._pool._acquire)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                portal.cancel(future)
                with contextlib.suppress(BaseException):
                    concurrent.futures.wait([future])
            if future.done() and not future.cancelled() and not future.exception():
                conn = future.result()
                self._run_to_completion(lambda: self._pool._release(conn, discard=True))
            raise

    def _run_to_completion(self, func: Callable[[], Awaitable[T]]) -> T:
        """:meth:`_run`, but Ctrl-C does not cancel ``func``: it runs to its end
        and the interruption is raised after."""
        portal = self._portal if self._portal is not None else get_portal()
        if not isinstance(portal, LoopPortal):
            return run_in_portal(portal, func, _nothing)
        future = portal.submit(func)
        interrupted: BaseException | None = None
        while True:
            try:
                result = future.result()
            except BaseException as exc:
                if not future.done():
                    interrupted = exc
                    continue
                if interrupted is not None:
                    raise interrupted from exc
                raise
            break
        if interrupted is not None:
            raise interrupted
        return result

    def send(
        self,
        message: email.message.Message | str | bytes,
        /,
        *,
        sender: str | None = None,
        recipients: str | Sequence[str] | None = None,
        mail_options: Sequence[str] | None = None,
        rcpt_options: Sequence[str] | None = None,
    ) -> tuple[dict[str, SMTPResponse], str]:
        """Send one message through any free connection (see
        :meth:`AsyncSMTPPool.send`).

        :param message: the message; a message object gives its own envelope
            unless ``sender`` or ``recipients`` are given, a ``str`` or
            ``bytes`` message needs both.
        :param sender: the envelope sender.
        :param recipients: the envelope recipients; a ``str`` is one recipient.
        :param mail_options: ESMTP parameters for MAIL.
        :param rcpt_options: ESMTP parameters for every RCPT.
        :returns: the refused recipients with the server's replies, and the text
            of the server's reply to the message.
        :raises SMTPFinalReplyLostError: the connection failed after the whole
            message was sent and before the final reply.
        :raises SMTPPoolClosedError: the pool is closed.
        :raises SMTPException: as :meth:`anysmtp.SMTP.sendmail`.
        """
        return self._run(
            lambda: self._pool.send(
                message,
                sender=sender,
                recipients=recipients,
                mail_options=mail_options,
                rcpt_options=rcpt_options,
            )
        )

    def send_many(
        self,
        messages: Iterable[SendItem],
        *,
        concurrency: int | None = None,
        retries: int = 3,
        backoff: Backoff = 1.0,
        retry_ambiguous: bool = False,
        progress: Progress | None = None,
        cancel_grace: float | None = 10.0,
    ) -> list[SendResult]:
        """Send many messages, ``concurrency`` at a time, with retries (see
        :meth:`AsyncSMTPPool.send_many` for the rules).

        ``messages`` is read, and ``progress`` is called, in the pool's event
        loop thread: keep both quick, and do not call the pool from them.
        Ctrl-C stops new sends; transactions in flight get ``cancel_grace``
        seconds to finish.

        :param messages: message objects or :class:`anysmtp.Envelope` objects.
        :param concurrency: how many messages are in flight at once (default
            ``max_size``).
        :param retries: how many times a transient failure is retried.
        :param backoff: the first retry's delay in seconds, or a function of the
            retry number.
        :param retry_ambiguous: retry after a lost final reply too.
        :param progress: called with each result as soon as it is final.
        :param cancel_grace: seconds transactions in flight may take to finish
            after an interruption.
        :returns: one result per message, in input order.
        """
        return self._run_to_the_end(
            lambda: self._pool.send_many(
                messages,
                concurrency=concurrency,
                retries=retries,
                backoff=backoff,
                retry_ambiguous=retry_ambiguous,
                progress=progress,
                cancel_grace=cancel_grace,
            ),
            grace=cancel_grace,
        )

    def close(self, *, grace: float | None = 10.0) -> None:
        """Close the pool and its connections (see :meth:`AsyncSMTPPool.aclose`).

        Connections that :meth:`connection` lent to the calling thread can only
        come back after :meth:`close` returns: they are neither waited for nor
        closed under their user, and are closed with QUIT at the end of their
        ``with`` block.

        :param grace: seconds to wait for connections in use (lent to other
            threads); ``None`` waits as long as they take.
        """
        # Read here: the coroutine runs in the loop thread, in another context.
        held = _BORROWED.get()
        self._run(lambda: self._pool._aclose(grace, held))


def _lend(conn: _Connection, portal: BlockingPortal | None) -> SMTP:
    """An :class:`anysmtp.SMTP` driving the pooled connection."""
    facade = SMTP.__new__(SMTP)
    client = conn.client
    facade._attach(portal, client)
    # The pool's own TLS options stay in force (``_attach`` sets smtplib's).
    client._stdlib_tls_defaults = False
    return facade
