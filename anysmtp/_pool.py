"""Sending many messages: a pool of connections and bulk sending with retries.

:class:`AsyncSMTPPool` keeps connections to one server open and lends them out;
:meth:`AsyncSMTPPool.send_many` sends an (async) iterable of messages through
it with bounded concurrency and retries, and :func:`send_many` does the same
with a temporary pool.  Everything here sits on top of the client
(:class:`AsyncSMTP`) and uses anyio primitives only, so it runs under asyncio,
uvloop and trio.

The rule that shapes the retries: a message whose final reply was 250 is never
sent again.  The one case no client can decide is a connection that fails
after the whole message went out and before the final reply arrived: the
server may have accepted it.  That is reported as
:exc:`SMTPFinalReplyLostError` and not retried unless asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import email.message
import inspect
import math
import os
import random
import ssl
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Sequence,
    Set,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, NoReturn, TypeAlias, TypedDict, Unpack

import anyio
import anyio.lowlevel

from ._client import DEFAULT_TIMEOUT, AsyncSMTP, SendErrors, TokenProvider
from ._envelope import Envelope, transaction
from ._errors import (
    SMTPConnectError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNoRecipientsError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from ._response import SMTPResponse

__all__ = [
    "AsyncSMTPPool",
    "ConnectionOptions",
    "Envelope",
    "SMTPFinalReplyLostError",
    "SMTPPoolClosedError",
    "SMTPServerUnreachableError",
    "SendResult",
    "send_many",
]

#: How long a polite QUIT may take when a connection is retired, seconds.
QUIT_TIMEOUT: Final = 5.0
#: The longest pause before reconnecting after the server said 421, seconds.
MAX_RECONNECT_BACKOFF: Final = 60.0
#: The longest delay between two tries of one message, seconds.
MAX_RETRY_BACKOFF: Final = 60.0
#: After a 421 shrank the pool, it grows back by one connection per this many
#: seconds without another 421.
RECOVERY_INTERVAL: Final = 30.0
#: The default of ``unreachable_timeout``, seconds.
UNREACHABLE_TIMEOUT: Final = 60.0


class ConnectionOptions(TypedDict, total=False):
    """The options of each pooled connection: :class:`AsyncSMTP`'s keyword
    options (see its documentation), except ``sock``, which cannot be shared."""

    local_hostname: str | None
    timeout: float | None
    source_address: tuple[str, int] | None
    socket_path: str | bytes | os.PathLike[str] | None
    use_tls: bool
    start_tls: bool | None
    validate_certs: bool
    client_cert: str | os.PathLike[str] | None
    client_key: str | os.PathLike[str] | None
    cert_bundle: str | os.PathLike[str] | None
    tls_context: ssl.SSLContext | None
    server_hostname: str | None
    username: str | None
    password: str | None
    oauth_token: str | TokenProvider | None
    pipelining: bool
    chunking: bool


#: What the health check does with a connection that was idle for a while.
HealthCheck: TypeAlias = Literal["noop", "reconnect"] | None
#: How a message ended: accepted for every recipient, for some, or not at all.
SendStatus: TypeAlias = Literal["sent", "partial", "failed"]
#: Seconds before retry number ``n`` (1, 2, ...): a base for exponential
#: backoff with jitter, or a function of ``n``.
Backoff: TypeAlias = float | Callable[[int], float]
#: Called with each message's result when it is final; may be a coroutine
#: function.
Progress: TypeAlias = Callable[["SendResult"], object]


class SMTPFinalReplyLostError(SMTPServerDisconnected):
    """The connection failed (or was cancelled) after the whole message had been
    sent and before the server's final reply arrived.

    The server may or may not have accepted the message: sending it again may
    deliver it twice, not sending it may lose it.  ``__cause__`` is the
    original error.
    """


class SMTPPoolClosedError(SMTPException, RuntimeError):
    """The pool is closed: it lends no connection and sends nothing."""


class SMTPServerUnreachableError(SMTPServerDisconnected):
    """Every connection attempt to the server failed for longer than the pool's
    ``unreachable_timeout``: the pool fails requests for a new connection at
    once instead of trying (and waiting) for each, until one of its paced
    attempts succeeds.  ``__cause__`` is the last attempt's error (without its
    traceback); :meth:`AsyncSMTPPool.send_many` does not retry it.
    """


#: What :meth:`AsyncSMTPPool.send_many` takes: message objects, or envelopes.
SendItem: TypeAlias = email.message.Message | Envelope


@dataclass(frozen=True)
class SendResult:
    """The outcome of one message of :meth:`AsyncSMTPPool.send_many`.

    :param index: the message's position in the input.
    :param status: ``"sent"`` (every recipient accepted), ``"partial"`` (some
        recipients refused, see ``refused``) or ``"failed"``.
    :param refused: the refused recipients and the server's replies.
    :param error: why the message failed (the last error when retried),
        without its traceback: that would keep the message and its connection
        in memory for as long as the result.
    :param attempts: how many times the message was tried; ``0`` when it never
        was (the pool closed first, or the item was invalid).
    :param response: the server's final reply to the message, when it was sent.
    """

    index: int
    status: SendStatus
    refused: dict[str, SMTPResponse] = field(default_factory=dict)
    error: Exception | None = None
    attempts: int = 0
    response: SMTPResponse | None = None


@dataclass(eq=False)
class _Connection:
    """A pooled connection and its bookkeeping."""

    client: AsyncSMTP
    last_used: float
    #: How many times it was lent.
    uses: int = 0
    #: The server's LIMITS MAILMAX (RFC 9422), if it announced one.
    server_mail_limit: int | None = None
    #: The server ended the session with a 421 to MAIL after earlier
    #: messages: its cap on messages per session, not a busy server.
    cap_reached: bool = False
    #: A new object for each loan (``None`` while idle): the limiter's token,
    #: and what :data:`_BORROWED` holds for a loan of :meth:`connection`.
    borrower: object = None


class _Tries:
    """How many times one message was tried."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class _Interrupted(Exception):
    """An in-flight transaction was cut short by a cancellation before the end
    of its message was sent: nothing was delivered, nothing to report."""


class _Shields:
    """The shielded scopes of in-flight transactions in one ``send_many``.

    When ``send_many`` is cancelled they get ``grace`` more seconds to finish.
    """

    def __init__(self, grace: float | None) -> None:
        self.grace = grace
        self.cancelling = False
        self.scopes: set[anyio.CancelScope] = set()

    def add(self, scope: anyio.CancelScope) -> None:
        self.scopes.add(scope)
        if self.cancelling:
            self._limit(scope)

    def _limit(self, scope: anyio.CancelScope) -> None:
        if self.grace is not None:
            scope.deadline = min(scope.deadline, anyio.current_time() + self.grace)

    async def watch(self, finished: anyio.Event) -> None:
        """Wait until the workers are done; if cancelled first, start the grace
        period of every transaction still in flight."""
        try:
            await finished.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelling = True
            for scope in self.scopes:
                self._limit(scope)
            raise


class _Items:
    """The messages of ``send_many``, pulled one at a time by the workers."""

    def __init__(self, messages: Iterable[SendItem] | AsyncIterable[SendItem]) -> None:
        if isinstance(messages, str | bytes | email.message.Message):
            raise TypeError(
                "send_many takes an iterable of messages; use send() for one"
            )
        self._sync: Iterator[SendItem] | None = None
        self._async: AsyncIterator[SendItem] | None = None
        if isinstance(messages, AsyncIterable):
            self._async = aiter(messages)
        else:
            self._sync = iter(messages)
        self._lock = anyio.Lock()
        self._index = 0
        self.exhausted = False

    async def next(self) -> tuple[int, SendItem] | None:
        """The next message and its index, or ``None`` at the end."""
        if self._sync is not None:
            if self.exhausted:
                return None
            try:
                item = next(self._sync)
            except StopIteration:
                self.exhausted = True
                return None
        else:
            assert self._async is not None
            # An async generator may not be resumed by two tasks at once.
            async with self._lock:
                if self.exhausted:
                    return None
                try:
                    item = await anext(self._async)
                except StopAsyncIteration:
                    self.exhausted = True
                    return None
        index = self._index
        self._index += 1
        return index, item

    async def aclose(self) -> None:
        """Close an async generator that was not run to its end."""
        closing = getattr(self._async, "aclose", None)
        if not self.exhausted and closing is not None:
            with anyio.CancelScope(shield=True):
                await closing()


def _raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one error of a task group as itself (the progress callback's
    or the iterator's), not wrapped in a group."""
    errors = group.exceptions
    if len(errors) == 1 and not isinstance(errors[0], BaseExceptionGroup):
        raise errors[0] from None
    raise group


def _is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection failed or timed out (rather than
    being a reply or a local refusal: smtplib's exceptions are OSErrors too)."""
    return isinstance(exc, SMTPServerDisconnected | SMTPTimeoutError) or (
        isinstance(exc, OSError) and not isinstance(exc, SMTPException)
    )


def _is_retryable_failure(exc: BaseException) -> bool:
    """A connection failure that another try may not meet: not TLS (a
    handshake or certificate error is configuration, not chance)."""
    return _is_connection_failure(exc) and not isinstance(exc, ssl.SSLError)


def _is_transient(code: int) -> bool:
    return 400 <= code <= 499


def _reply_codes(exc: SMTPResponseException | SMTPRecipientsRefused) -> list[int]:
    if isinstance(exc, SMTPRecipientsRefused):
        return [code for code, _ in exc.recipients.values()]
    return [exc.smtp_code]


def _responses(refused: SendErrors) -> dict[str, SMTPResponse]:
    return {
        address: SMTPResponse(code, text) for address, (code, text) in refused.items()
    }


def _looks_alive(client: AsyncSMTP) -> bool:
    """Whether an idle connection is still open (see
    :meth:`Transport.open_when_idle`)."""
    transport = client._transport
    return transport is not None and transport.open_when_idle()


#: The loans (:attr:`_Connection.borrower`) of the :meth:`AsyncSMTPPool.connection`
#: blocks (and :meth:`SMTPPool.connection` blocks) the current context runs in.
#: Every task started inside a block (an anyio task group, a trio nursery,
#: ``asyncio.create_task``, ``asyncio.wait_for``) copies the context, so it
#: sees them too: those connections can only come back after such a task's
#: :meth:`AsyncSMTPPool.aclose` returns, and it does not wait for them.  A
#: loan ends when its connection is given back (``borrower`` changes), so a
#: task that outlives the block holds a loan that matches nothing.
_BORROWED: contextvars.ContextVar[frozenset[object]] = contextvars.ContextVar(
    "anysmtp_pool_borrowed", default=frozenset()
)


@contextlib.contextmanager
def _borrowing(conn: _Connection) -> Iterator[None]:
    """Record ``conn``'s loan in the current context for the ``with`` block."""
    loan = conn.borrower
    _BORROWED.set(_BORROWED.get() | {loan})
    try:
        yield
    finally:
        # Not ``reset(token)``: a block left in another context (an async
        # generator finalised elsewhere) must not fail here.  A loan left over
        # in a context matches no connection once given back.
        _BORROWED.set(_BORROWED.get() - {loan})


def _server_mail_limit(client: AsyncSMTP) -> int | None:
    """The LIMITS extension's MAILMAX (RFC 9422): transactions per session."""
    for word in client.esmtp_features.get("limits", "").split():
        name, _, value = word.partition("=")
        if name.upper() == "MAILMAX" and value.isdigit() and int(value) > 0:
            return int(value)
    return None


def _unwound(exc: Exception) -> Exception:
    """``exc`` without its traceback, nor those of its cause and context: a
    result may live as long as the whole run, and a traceback's frames hold
    the message, its envelope and the connection's client (hundreds of KiB
    per failure with a large message)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        each = stack.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        each.__traceback__ = None
        stack += (each.__cause__, each.__context__)
    return exc


def _still_runs(token: anyio.lowlevel.EventLoopToken) -> bool:
    """Whether the event loop of ``token`` is running (in another thread)."""
    native: Any = token.native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return native.is_running()
    try:
        # A trio token refuses (trio.RunFinishedError) once its run has ended.
        native.run_sync_soon(_nothing_to_do)
    except Exception:
        return False
    return True


def _nothing_to_do() -> None:
    """What :func:`_still_runs` asks a trio run to do."""


def _detached(exc: Exception) -> Exception:
    """A copy of ``exc`` without its traceback, cause or context, for the pool
    to keep (the error itself goes on to its caller, traceback and all)."""
    try:
        return copy.copy(exc)
    except Exception:  # an exception class that its args cannot rebuild
        return SMTPServerDisconnected(f"{type(exc).__name__}: {exc}")


async def _reset(client: AsyncSMTP) -> None:
    """RSET, or close the connection if that fails."""
    try:
        code, _ = await client.rset()
    except Exception:
        code = -1
    if code != 250:
        client.close()


def backoff_delay(backoff: Backoff, retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1, 2, ...).

    A number is the base of an exponential backoff (``base * 2 ** (retry - 1)``,
    at most a minute) with jitter: a random delay between half of it and all of
    it, so that messages refused together do not come back together.
    """
    if callable(backoff):
        return max(0.0, backoff(retry))
    delay = min(MAX_RETRY_BACKOFF, backoff * 2.0 ** (retry - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class AsyncSMTPPool:
    """A pool of connections to one SMTP server.

    Connections are opened when needed (up to ``max_size`` at once), reused
    most recently used first, checked before reuse, and closed with QUIT when
    they sent ``max_messages_per_connection`` messages (or the server's LIMITS
    MAILMAX), when the pool closes, or, once idle for ``idle_timeout``
    seconds, the next time a connection is asked for (the pool runs no task of
    its own between calls).  A 421 reply (the server is busy, or has too many
    connections) shrinks the pool to the connections the server accepts and
    pauses new connections for ``reconnect_backoff`` seconds (doubling each
    time, at most a minute); the pool grows back by one connection every 30
    seconds without a 421.  A 421 to MAIL on a connection that carried
    messages before is the server's cap on messages per session instead: the
    message goes on at once on another connection, and once two sessions
    ended after the same number of messages, connections retire at it.

    Use it as an async context manager (or call :meth:`aclose`).  A pool
    belongs to one event loop at a time: used from another one (a later
    ``anyio.run``, ``asyncio.run`` or ``trio.run``) once the previous loop
    has stopped, it closes that loop's idle connections with QUIT and goes on
    in the new one; used from another loop while the previous one still runs,
    it raises :exc:`RuntimeError`.

    :param hostname: the server (default ``localhost``).
    :param port: the server's port (default 465 with ``use_tls``, 587 with
        ``start_tls=True``, else 25).
    :param max_size: the most connections open at once.
    :param max_messages_per_connection: retire a connection after this many
        messages (mail transactions started, as LIMITS MAILMAX counts them:
        an envelope refused at MAIL or RCPT counts too); ``None``: no limit
        of our own.
    :param idle_timeout: close connections unused for this many seconds (when
        a connection is next asked for); ``None`` keeps them open.
    :param health_check: what to do with a connection idle for at least
        ``health_check_after`` seconds before lending it: ``"noop"`` sends NOOP
        (and opens another connection if that fails), ``"reconnect"`` replaces
        it, ``None`` lends it as it is.  A connection the server closed while
        idle is noticed without any of these.
    :param health_check_after: seconds of idleness after which ``health_check``
        applies.
    :param reconnect_backoff: the first pause, in seconds, before opening a
        connection after a 421.
    :param unreachable_timeout: seconds during which every connection attempt
        may fail (refused, no route, a name that does not resolve, a connect
        timeout, a connection closed before the greeting) before the pool
        stops trying for each request: from then on, asking for a new
        connection raises :exc:`SMTPServerUnreachableError` at once, except
        for one attempt at a time, the first at once, the next
        ``reconnect_backoff`` seconds later, then ever less often (doubling,
        at most a minute apart), until one reaches the server.  ``None``
        tries for every request, however long the server has been
        unreachable.
    :param options: the options of each connection, as for :class:`AsyncSMTP`
        (``timeout``, ``use_tls``, ``start_tls``, ``username``, ...).
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
        **options: Unpack[ConnectionOptions],
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_messages_per_connection is not None and max_messages_per_connection < 1:
            raise ValueError("max_messages_per_connection must be at least 1")
        if unreachable_timeout is not None and not unreachable_timeout >= 0:
            raise ValueError(
                "unreachable_timeout must be a number of seconds (0 or more) or "
                f"None, not {unreachable_timeout!r}"
            )
        if health_check not in ("noop", "reconnect", None):
            raise ValueError(
                "health_check must be 'noop', 'reconnect' or None, "
                f"not {health_check!r}"
            )
        self.hostname = hostname
        self.port = port
        self.max_size = max_size
        self.max_messages_per_connection = max_messages_per_connection
        self.idle_timeout = idle_timeout
        self.health_check = health_check
        self.health_check_after = health_check_after
        self.reconnect_backoff = reconnect_backoff
        self.unreachable_timeout = unreachable_timeout
        self._options = options
        #: Whether the connections' readers may park between calls (see
        #: ``AsyncSMTP._reader_parks``); the sync pool turns it off.
        self._readers_park = True
        # Conflicting options are a usage error: raise now, not on first use.
        self._new_client()
        self._limit = max_size
        #: Created on first use, inside the event loop.
        self._limiter: anyio.CapacityLimiter | None = None
        #: Open connections (idle or lent).
        self._connections: set[_Connection] = set()
        #: Idle connections, least recently used first.
        self._idle: list[_Connection] = []
        #: Tasks holding a token (opening or using a connection).
        self._busy = 0
        self._opened = 0
        self._closed = False
        self._drained: anyio.Event | None = None
        #: The connections :meth:`aclose` does not wait for: lent to
        #: :meth:`connection` blocks the closing task runs in.
        self._not_waited_for: frozenset[_Connection] = frozenset()
        self._close_done: anyio.Event | None = None
        self._pause_until = -math.inf
        self._busy_streak = 0
        #: How many messages the last session the server ended with a 421 to
        #: MAIL had carried, and the cap learnt once two ended alike.
        self._session_ended_after: int | None = None
        self._learned_mail_limit: int | None = None
        self._shrunk_at = -math.inf
        #: Set by :meth:`aclose`: wakes tasks in the pause after a 421.
        self._closing: anyio.Event | None = None
        #: When the first of the connection attempts that have all failed
        #: since began (``None`` while the last one succeeded), and the last
        #: one's error, without its traceback.
        self._unreachable_since: float | None = None
        self._last_failure: Exception | None = None
        #: Once unreachable for ``unreachable_timeout``: the attempt under way,
        #: and the time and number of the next one.
        self._probing = False
        self._probe_at = -math.inf
        self._probes = 0
        #: When a connection attempt last reached the server: a failed one
        #: that began before does not make it unreachable.
        self._reached_at = -math.inf
        #: The event loop the limiter, the events and the clock readings
        #: belong to (``None`` before the first use), and its clock's distance
        #: from :func:`time.monotonic`.
        self._loop_token: anyio.lowlevel.EventLoopToken | None = None
        self._clock_offset = 0.0

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._connections)} open"
        where = self.hostname or self._options.get("socket_path") or "localhost"
        return f"<{type(self).__name__} {where!r} {state}>"

    async def __aenter__(self) -> AsyncSMTPPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # The state, for monitoring ---------------------------------------------------

    @property
    def size(self) -> int:
        """How many connections are open (idle or in use)."""
        return len(self._connections)

    @property
    def idle(self) -> int:
        """How many open connections wait to be used."""
        return len(self._idle)

    @property
    def effective_max_size(self) -> int:
        """``max_size``, or less while the server pushes back with 421."""
        return self._limit

    @property
    def connections_opened(self) -> int:
        """How many connections the pool opened so far."""
        return self._opened

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    # Lending connections -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncSMTP]:
        """Borrow a connected client (EHLO done, logged in if configured).

        Leave it between transactions; do not close it, keep it after the
        block or change its settings.  If the block raises, the connection is
        closed instead of going back to the pool.

        :raises SMTPPoolClosedError: the pool is closed.
        :raises SMTPServerUnreachableError: every connection attempt has failed
            for longer than ``unreachable_timeout`` (see there).
        :raises OSError: connecting failed (and the errors of
            :meth:`AsyncSMTP.connect`).
        :raises SMTPConnectError: the server's greeting was not 220.
        :raises RuntimeError: called inside ``connection()`` blocks that hold
            every connection the pool may open (it would wait for ever), or
            while another event loop that used the pool still runs.
        """
        conn = await self._acquire()
        try:
            with _borrowing(conn):
                yield conn.client
        except BaseException:
            await self._release(conn, discard=True)
            raise
        await self._release(conn, discard=False)

    def _new_client(self) -> AsyncSMTP:
        client = AsyncSMTP(hostname=self.hostname, port=self.port or 0, **self._options)
        client._reader_parks = self._readers_park
        return client

    def _check_open(self) -> None:
        if self._closed:
            raise SMTPPoolClosedError("the connection pool is closed")

    def _get_limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._limit)
        return self._limiter

    def _follow_running_loop(self) -> list[_Connection]:
        """Make the running event loop the pool's, if another one had it.

        What belongs to the previous loop is left behind: the limiter and the
        events (anyio's primitives are made for one backend and loop), the
        clock readings (each loop has its own clock: trio's starts at a
        random offset) and the idle connections (their readers may be
        registered in that loop), which the caller closes.

        :returns: the idle connections of the previous loop.
        :raises RuntimeError: the other loop still runs, or a connection is
            in use there (or being opened, or the pool being closed there).
        """
        known = self._loop_token
        if known is not None and known.native_token is asyncio._get_running_loop():
            # The common case, without anyio's backend lookup (about 1.4 us).
            return []
        token = anyio.lowlevel.current_token()
        if token == known:
            return []
        clock_offset = anyio.current_time() - time.monotonic()
        if known is None:
            self._loop_token = token
            self._clock_offset = clock_offset
            return []
        closing = self._close_done is not None and not self._close_done.is_set()
        # A loop that still runs may have a task on its way to the limiter,
        # which it must find where it was.
        if self._busy or closing or _still_runs(known):
            raise RuntimeError(
                "this pool is in use in another event loop that is still "
                "running: a pool belongs to one event loop at a time"
            )
        self._loop_token = token
        self._limiter = None
        self._closing = None
        self._drained = None
        self._close_done = None  # a finished close: nothing to wait for
        # The times read from the previous loop's clock (the 421 pause, the
        # time unreachable...), on this one's.
        shift = clock_offset - self._clock_offset
        self._clock_offset = clock_offset
        self._pause_until += shift
        self._shrunk_at += shift
        self._reached_at += shift
        self._probe_at += shift
        if self._unreachable_since is not None:
            self._unreachable_since += shift
        stale, self._idle = self._idle, []
        self._connections.difference_update(stale)
        return stale

    async def _acquire(self) -> _Connection:
        """A connection for the caller alone, until :meth:`_release`."""
        self._check_open()
        stale = self._follow_running_loop()
        if stale:
            await self._dispose_all(stale)
            self._check_open()
        self._check_not_waiting_for_itself(_BORROWED.get())
        limiter = self._get_limiter()
        borrower = object()
        await limiter.acquire_on_behalf_of(borrower)
        self._busy += 1
        try:
            self._check_open()
            conn = await self._reuse()
            if conn is None:
                conn = await self._open()
            if self._closed:
                # Closed while this one was being opened.
                await self._dispose(conn)
                self._check_open()
        except BaseException:
            self._give_back(borrower)
            raise
        conn.borrower = borrower
        return conn

    def _give_back(self, borrower: object) -> None:
        self._get_limiter().release_on_behalf_of(borrower)
        self._busy -= 1
        self._wake_closer_if_drained()

    def _wake_closer_if_drained(self) -> None:
        """Wake the closing task if only connections it does not wait for are
        still lent out."""
        if self._drained is not None and self._busy == len(self._kept_for_closer()):
            self._drained.set()

    def _kept_for_closer(self) -> set[_Connection]:
        """The connections still lent to the tasks closing the pool (neither
        waited for nor closed under them)."""
        return {conn for conn in self._not_waited_for if conn.borrower is not None}

    def _check_not_waiting_for_itself(self, held: Set[object]) -> None:
        """Refuse to wait for a connection when the caller's own loans (a
        ``connection()`` block it is inside) hold every one the pool may
        open: none would ever come back.

        :raises RuntimeError: so.
        """
        if held and len(self._lent_under(held)) >= self._limit:
            raise RuntimeError(
                "every connection of the pool is lent to this caller already "
                "(inside pool.connection()): waiting for another would wait for "
                "ever; use the borrowed client, or a larger max_size"
            )

    def _lent_under(self, held: Set[object]) -> frozenset[_Connection]:
        """The connections lent out under the loans in ``held``."""
        return frozenset(conn for conn in self._connections if conn.borrower in held)

    async def _reuse(self) -> _Connection | None:
        """The most recently used idle connection that is fit for use."""
        now = anyio.current_time()
        if self.idle_timeout is not None:
            expired: list[_Connection] = []
            while self._idle and now - self._idle[0].last_used >= self.idle_timeout:
                expired.append(self._idle.pop(0))
            await self._dispose_all(expired)
        while self._idle:
            conn = self._idle.pop()
            if not _looks_alive(conn.client):
                self._drop(conn)
                continue
            if (
                self.health_check is None
                or now - conn.last_used < self.health_check_after
            ):
                return conn
            if self.health_check == "reconnect":
                await self._dispose(conn)
                continue
            try:
                code, _ = await conn.client.noop()
            except Exception:
                code = -1
            except BaseException:
                self._drop(conn)
                raise
            if code == 250:
                return conn
            if code == 421:
                self._server_busy(conn)
            await self._dispose(conn)
        return None

    async def _open(self) -> _Connection:
        """Connect, say EHLO (STARTTLS and AUTH as configured)."""
        delay = self._pause_until - anyio.current_time()
        if delay > 0:
            if self._closing is None:
                self._closing = anyio.Event()
            with anyio.move_on_after(delay):
                await self._closing.wait()  # aclose() ends the pause
        self._check_open()
        probing = self._check_reachable()
        client = self._new_client()
        started = anyio.current_time()
        greeted = False
        try:
            greeting = await client.connect()
            greeted = True
            if greeting.code != 220:
                raise SMTPConnectError(greeting.code, greeting.message)
            await self._hello(client)
        except BaseException as exc:
            client.close()
            if isinstance(exc, SMTPResponseException) and exc.smtp_code == 421:
                self._server_busy(None)
            if isinstance(exc, Exception):
                self._attempt_failed(started, exc, greeted)
            raise
        finally:
            if probing:
                self._probing = False
        self._reachable()
        self._busy_streak = 0
        self._opened += 1
        conn = _Connection(
            client,
            last_used=anyio.current_time(),
            server_mail_limit=_server_mail_limit(client),
        )
        self._connections.add(conn)
        if len(self._connections) > self._limit:
            # Opened while others of the same burst were refused: the server
            # takes at least this many.
            self._limit = min(self.max_size, len(self._connections))
            self._get_limiter().total_tokens = self._limit
        return conn

    def _check_reachable(self) -> bool:
        """Whether this connection attempt may go ahead, once every attempt
        has failed for ``unreachable_timeout``: one at a time, paced.

        :returns: whether it is such a paced attempt.
        :raises SMTPServerUnreachableError: it may not.
        """
        since = self._unreachable_since
        limit = self.unreachable_timeout
        if since is None or limit is None:
            return False
        now = anyio.current_time()
        if now - since < limit:
            return False
        if self._probing or now < self._probe_at:
            failure = self._last_failure
            # Each error gets its own copy as its cause: a caller may raise
            # the cause again, which would give the pool's a traceback.
            raise SMTPServerUnreachableError(
                f"the server has been unreachable for {now - since:.0f} seconds; "
                "the pool tries again later"
                + (f" (last error: {failure})" if failure is not None else "")
            ) from (_detached(failure) if failure is not None else None)
        self._probing = True
        self._probe_at = now + min(
            MAX_RECONNECT_BACKOFF, self.reconnect_backoff * 2**self._probes
        )
        self._probes += 1
        return True

    def _reachable(self) -> None:
        """A connection attempt reached the server (it answered)."""
        self._unreachable_since = None
        self._reached_at = anyio.current_time()

    def _attempt_failed(self, started: float, exc: Exception, greeted: bool) -> None:
        """Note a failed connection attempt that began at ``started``: a
        failure to reach the server extends the time it has been unreachable;
        a greeting, a refusal or a TLS error shows it reachable.

        :param greeted: the server's greeting had arrived.
        """
        if greeted or not _is_retryable_failure(exc):
            self._reachable()
            return
        if started < self._reached_at:
            return  # another attempt reached the server after this one began
        if self._unreachable_since is None:
            self._unreachable_since = started
            self._probes = 0
            self._probe_at = -math.inf
        self._last_failure = _detached(exc)

    async def _hello(self, client: AsyncSMTP) -> None:
        """EHLO (or HELO) unless connecting did it; a 421 is reported as such
        (``ehlo_or_helo_if_needed`` would try HELO on the closed connection)."""
        if client.ehlo_resp is not None or client.helo_resp is not None:
            return
        code, message = await client.ehlo()
        if code == 421:
            raise SMTPHeloError(code, message)
        if not 200 <= code <= 299:
            code, message = await client.helo()
            if not 200 <= code <= 299:
                raise SMTPHeloError(code, message)

    def _server_busy(self, conn: _Connection | None) -> None:
        """A 421: keep only the connections the server accepts, and pause."""
        if self._closed:
            return
        now = anyio.current_time()
        if now < self._pause_until:
            # Another refusal of the same burst (connections opened together,
            # refused together): the pause and the shrinking are done.
            return
        others = len(self._connections - {conn}) if conn else len(self._connections)
        self._limit = max(1, min(self._limit, others))
        self._get_limiter().total_tokens = self._limit
        self._busy_streak += 1
        pause = self.reconnect_backoff * 2 ** (self._busy_streak - 1)
        self._pause_until = now + min(MAX_RECONNECT_BACKOFF, pause)
        self._shrunk_at = now

    def _session_ended(self, conn: _Connection, carried: int) -> None:
        """The server answered MAIL with 421 on a session that had carried
        ``carried`` messages: its cap on messages per session (Exim's
        ``smtp_accept_max_per_connection``, which Exim before 4.97 does not
        announce as LIMITS MAILMAX), not a busy server, which would refuse
        the next connection too.  Once two sessions ended after the same
        number, connections retire at that number."""
        conn.cap_reached = True
        if carried == self._session_ended_after:
            self._learned_mail_limit = carried
        self._session_ended_after = carried

    def _maybe_grow(self) -> None:
        now = anyio.current_time()
        if (
            not self._closed
            and self._limit < self.max_size
            and now - self._shrunk_at >= RECOVERY_INTERVAL
            and now >= self._pause_until
        ):
            self._limit += 1
            self._shrunk_at = now
            self._get_limiter().total_tokens = self._limit

    def _mail_limit(self, conn: _Connection) -> float:
        limits = [
            limit
            for limit in (
                self.max_messages_per_connection,
                conn.server_mail_limit,
                self._learned_mail_limit,
            )
            if limit is not None
        ]
        return min(limits) if limits else math.inf

    async def _release(self, conn: _Connection, *, discard: bool) -> None:
        """Take a lent connection back: pool it, or close it."""
        borrower, conn.borrower = conn.borrower, None
        try:
            client = conn.client
            if not discard and client._in_transaction and client.is_connected:
                # A borrower left a transaction open (it caught a refused DATA,
                # which smtplib's API ends without RSET): the next MAIL on this
                # connection would get "503 nested MAIL".
                await _reset(client)
            if (
                discard
                or self._closed
                or not client.is_connected
                # Every MAIL sent counts, refused or not, through a connection
                # lent by connection() too: servers count MAIL commands
                # against LIMITS MAILMAX (RFC 9422).
                or client._mail_transactions >= self._mail_limit(conn)
                or len(self._connections) > self._limit
            ):
                await self._dispose(conn)
            else:
                # A borrower may have changed the timeout (``smtp.timeout``, or
                # through the sync API's ``sock``): the next one gets the pool's.
                client.timeout = self._options.get("timeout", DEFAULT_TIMEOUT)
                conn.last_used = anyio.current_time()
                conn.uses += 1
                self._idle.append(conn)
                self._maybe_grow()
        finally:
            self._give_back(borrower)

    def _drop(self, conn: _Connection) -> None:
        """Forget a connection that is dead already."""
        self._connections.discard(conn)
        conn.client.close()

    async def _dispose(self, conn: _Connection) -> None:
        """Close a connection politely: QUIT (briefly), then close."""
        self._connections.discard(conn)
        client = conn.client
        try:
            if client.is_connected:
                limit = min(client.timeout or QUIT_TIMEOUT, QUIT_TIMEOUT)
                # Shielded: a task cancelled while giving a connection back
                # still closes it (the QUIT is bounded).
                with (
                    anyio.CancelScope(shield=True),
                    anyio.move_on_after(limit),
                    contextlib.suppress(Exception),
                ):
                    await client.quit()
        finally:
            client.close()

    async def _dispose_all(self, connections: list[_Connection]) -> None:
        if len(connections) == 1:
            await self._dispose(connections[0])
        elif connections:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as group:
                    for conn in connections:
                        group.start_soon(self._dispose, conn)

    async def aclose(self, *, grace: float | None = 10.0) -> None:
        """Close the pool: no new connections or sends, then close every
        connection.

        Connections in use get ``grace`` seconds to come back (their
        transactions finish); those still out then are closed under their
        users, whose current command fails with :exc:`SMTPServerDisconnected`.
        Idle connections are closed with QUIT.  Closing again waits for the
        first close to finish.

        :meth:`aclose` called inside an ``async with`` :meth:`connection`
        block, or in a task started inside it (a task group's or a nursery's
        child, ``asyncio.create_task``, ``asyncio.wait_for``: any task that
        copies the block's context), does not wait for that block's
        connection, which can only come back after :meth:`aclose` returns,
        nor closes it under its user.  It stays usable until the end of the
        block and is closed with QUIT then, like any connection given back to
        a closed pool.

        :param grace: seconds to wait for connections in use; ``None`` waits
            as long as they take.
        """
        await self._aclose(grace, _BORROWED.get())

    async def _aclose(self, grace: float | None, held: Set[object]) -> None:
        """:meth:`aclose`, not waiting for the connections whose loans are in
        ``held`` (the caller's own)."""
        stale = self._follow_running_loop()
        if stale:
            await self._dispose_all(stale)
        if self._closed:
            # Another task is closing (or has closed) the pool: it must not
            # wait for this caller's own connections either, which only come
            # back after this call returns.
            mine = self._lent_under(held)
            if not mine <= self._not_waited_for:
                self._not_waited_for |= mine
                self._wake_closer_if_drained()
            if self._close_done is not None:
                with anyio.CancelScope(shield=True):
                    await self._close_done.wait()
            return
        self._not_waited_for = self._lent_under(held)
        self._closed = True
        self._close_done = anyio.Event()
        if self._closing is not None:
            self._closing.set()
        if self._limiter is not None:
            # Wake whoever waits for a connection: they find the pool closed.
            self._limiter.total_tokens = math.inf
        with anyio.CancelScope(shield=True):
            if self._busy > len(self._kept_for_closer()):
                self._drained = anyio.Event()
                with anyio.move_on_after(grace):
                    await self._drained.wait()
            idle, self._idle = self._idle, []
            for conn in self._connections - set(idle) - self._kept_for_closer():
                # Still lent out after the grace period.
                self._drop(conn)
            await self._dispose_all(idle)
            self._close_done.set()

    # Sending -------------------------------------------------------------------------

    async def send(
        self,
        message: email.message.Message | str | bytes,
        /,
        *,
        sender: str | None = None,
        recipients: str | Sequence[str] | None = None,
        mail_options: Sequence[str] | None = None,
        rcpt_options: Sequence[str] | None = None,
    ) -> tuple[dict[str, SMTPResponse], str]:
        """Send one message through any free connection, like :func:`anysmtp.send`.

        A connection that turns out dead as the transaction starts is replaced
        once; nothing else is retried (see :meth:`send_many`).

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
            message was sent and before the final reply: it may have been
            delivered.
        :raises SMTPPoolClosedError: the pool is closed.
        :raises SMTPServerUnreachableError: every connection attempt has failed
            for longer than ``unreachable_timeout`` (see there).
        :raises SMTPException: as :meth:`AsyncSMTP.sendmail`.
        """
        envelope = Envelope(
            message,
            sender,
            recipients,
            tuple(mail_options or ()),
            tuple(rcpt_options or ()),
        )
        refused, reply = await self._attempt(envelope, None, _Tries(), None)
        return _responses(refused), reply.text if reply is not None else ""

    async def _attempt(
        self,
        envelope: Envelope,
        recipients: list[str] | None,
        tries: _Tries,
        shields: _Shields | None,
    ) -> tuple[SendErrors, SMTPResponse | None]:
        """One try: a connection and a transaction (a second connection if the
        first was a pooled one that had died)."""
        replaced = False
        while True:
            try:
                conn = await self._acquire()
            except (RuntimeError, SMTPServerUnreachableError):
                raise  # no try: the pool is closed or refused it at once
            except BaseException:
                tries.count += 1  # a failed connection attempt is a try
                raise
            tries.count += 1
            reused = conn.uses > 0
            try:
                return await self._transact(conn, envelope, recipients, shields)
            except Exception as exc:
                if conn.cap_reached:
                    # The message was not refused: it goes on at once on
                    # another connection, within this try.  Each time retires
                    # a connection that carried messages, so this ends.
                    continue
                if (
                    not _is_retryable_failure(exc)
                    or not reused
                    or replaced
                    or isinstance(exc, SMTPFinalReplyLostError)
                ):
                    raise
                replaced = True

    async def _transact(
        self,
        conn: _Connection,
        envelope: Envelope,
        recipients: list[str] | None,
        shields: _Shields | None,
    ) -> tuple[SendErrors, SMTPResponse | None]:
        client = conn.client
        # Each final reply is a new object: still this one after a refusal
        # means DATA itself was refused.
        final_reply = client.last_data_response
        # The MAIL commands this session carried before (closing resets it).
        carried = client._mail_transactions
        try:
            with anyio.CancelScope(shield=shields is not None) as scope:
                if shields is not None:
                    shields.add(scope)
                try:
                    refused = await transaction(client, envelope, recipients)
                    return refused, client.last_data_response
                except (SMTPResponseException, SMTPRecipientsRefused) as exc:
                    if (
                        type(exc) is SMTPResponseException
                        and not client.is_connected
                        and client.final_reply_pending
                    ):
                        # An unreadable final reply (over the size limits): as
                        # good as lost.
                        raise SMTPFinalReplyLostError(str(exc)) from exc
                    if 421 in _reply_codes(exc):
                        # The server is closing this session (the client
                        # closes after a 421 to MAIL, RCPT or the message,
                        # not to DATA itself): never pool it again.
                        client.close()
                        if carried and isinstance(exc, SMTPSenderRefused):
                            self._session_ended(conn, carried)
                        else:
                            self._server_busy(conn)
                    elif (
                        isinstance(exc, SMTPDataError)
                        and client.last_data_response is final_reply
                        and client.is_connected
                    ):
                        # DATA itself was refused: like smtplib, the client
                        # leaves the transaction open.  Close it before reuse.
                        await _reset(client)
                    raise
                except Exception as exc:
                    if _is_connection_failure(exc) and client.final_reply_pending:
                        raise SMTPFinalReplyLostError(
                            "the connection failed after the message was sent and "
                            f"before the server's final reply ({exc}): it may or "
                            "may not have been accepted"
                        ) from exc
                    raise
                finally:
                    if shields is not None:
                        shields.scopes.discard(scope)
            # Here only when send_many's grace period after a cancellation ran
            # out in the middle of this transaction.
            if client.final_reply_pending:
                raise SMTPFinalReplyLostError(
                    "cancelled after the message was sent and before the server's "
                    "final reply: it may or may not have been accepted"
                )
            raise _Interrupted
        finally:
            await self._release(conn, discard=not client.is_connected)

    async def send_many(
        self,
        messages: Iterable[SendItem] | AsyncIterable[SendItem],
        *,
        concurrency: int | None = None,
        retries: int = 3,
        backoff: Backoff = 1.0,
        retry_ambiguous: bool = False,
        progress: Progress | None = None,
        cancel_grace: float | None = 10.0,
    ) -> list[SendResult]:
        """Send many messages, ``concurrency`` at a time, with retries.

        Messages are taken from ``messages`` as workers become free (an
        iterator is not read ahead).  Transient failures are retried up to
        ``retries`` times with ``backoff``: 4xx replies, and connections that
        failed or timed out before the end of the message was sent.  Permanent
        failures (5xx, TLS and certificate errors, invalid messages) are not.
        When every recipient was refused and some only for now (4xx), the retry
        goes to those only.  Recipients refused with 4xx while others were
        accepted are reported in ``refused`` and not retried: the message was
        delivered, and a second transaction would be a second message.

        A message whose final reply was 250 is never sent again.  If the
        connection fails after the end of the message was sent and before the
        final reply, the server may have accepted it: the result is
        ``"failed"`` with :exc:`SMTPFinalReplyLostError`, retried only with
        ``retry_ambiguous=True`` (which risks a duplicate instead of a loss).

        Cancelling stops new sends at once; transactions in flight get
        ``cancel_grace`` seconds to finish (then their connections are closed)
        and their results still go to ``progress``: a message that never
        reached ``progress`` was not delivered (unless ``retry_ambiguous``).

        :param messages: message objects or :class:`Envelope` objects, as an
            iterable or an async iterable.
        :param concurrency: how many messages are in flight at once (default
            ``max_size``).
        :param retries: how many times a transient failure is retried.
        :param backoff: seconds before the first retry, doubled for each next one
            (with jitter, at most a minute), or a function of the retry number
            returning the delay.
        :param retry_ambiguous: retry after a lost final reply too.
        :param progress: called with each :class:`SendResult` as soon as it is
            final, in completion order; may be a coroutine function (it runs
            shielded from cancellation: keep it short).  An exception it
            raises stops ``send_many`` and propagates.
        :param cancel_grace: seconds transactions in flight may take to finish
            after a cancellation; ``None`` lets them finish.
        :returns: one result per message, in input order.
        :raises TypeError: ``messages`` is a single message.
        :raises ValueError: ``concurrency`` below 1 or ``retries`` below 0.
        """
        if concurrency is None:
            concurrency = self.max_size
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if retries < 0:
            raise ValueError("retries must be at least 0")
        items = _Items(messages)
        results: dict[int, SendResult] = {}
        shields = _Shields(cancel_grace)
        finished = anyio.Event()
        running = concurrency

        async def worker() -> None:
            nonlocal running
            try:
                while (pulled := await items.next()) is not None:
                    index, item = pulled
                    result = await self._deliver(
                        index, item, retries, backoff, retry_ambiguous, shields
                    )
                    if result is None:
                        continue
                    # What finished is reported even while being cancelled.
                    with anyio.CancelScope(shield=True):
                        results[index] = result
                        if progress is not None:
                            outcome = progress(result)
                            if inspect.isawaitable(outcome):
                                await outcome
            finally:
                running -= 1
                if running == 0:
                    finished.set()

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(shields.watch, finished)
                for _ in range(concurrency):
                    group.start_soon(worker)
        except BaseExceptionGroup as group_error:
            _raise_single(group_error)
        finally:
            await items.aclose()
        return [results[index] for index in sorted(results)]

    async def _deliver(
        self,
        index: int,
        item: SendItem,
        retries: int,
        backoff: Backoff,
        retry_ambiguous: bool,
        shields: _Shields,
    ) -> SendResult | None:
        """Send one message with retries; ``None`` if a cancellation cut it
        short before anything was delivered."""
        try:
            envelope = item if isinstance(item, Envelope) else Envelope(item)
        except (TypeError, ValueError) as exc:
            return SendResult(index, "failed", error=_unwound(exc))
        recipients: list[str] | None = None
        refused: dict[str, SMTPResponse] = {}
        tries = _Tries()
        rounds = 0

        def failed(exc: Exception) -> SendResult:
            return SendResult(index, "failed", refused, _unwound(exc), tries.count)

        while True:
            if rounds:
                await anyio.sleep(backoff_delay(backoff, rounds))
            rounds += 1
            may_retry = rounds <= retries
            try:
                accepted, reply = await self._attempt(
                    envelope, recipients, tries, shields
                )
            except _Interrupted:
                return None
            except SMTPFinalReplyLostError as exc:
                if retry_ambiguous and may_retry:
                    continue
                return failed(exc)
            except (SMTPPoolClosedError, SMTPServerUnreachableError) as exc:
                return failed(exc)
            except SMTPRecipientsRefused as exc:
                if isinstance(exc, SMTPNoRecipientsError):
                    return failed(exc)
                replies = _responses(exc.recipients)
                permanent = {
                    address: reply
                    for address, reply in replies.items()
                    if not _is_transient(reply.code)
                }
                refused.update(permanent)
                if may_retry and len(permanent) < len(replies):
                    try:
                        current = recipients or envelope.envelope_recipients()
                    except Exception as error:
                        return failed(error)
                    remaining = [each for each in current if each not in refused]
                    if remaining:
                        recipients = remaining
                        continue
                refused.update(replies)
                return failed(exc)
            except SMTPResponseException as exc:
                if may_retry and _is_transient(exc.smtp_code):
                    continue
                return failed(exc)
            except Exception as exc:
                # A failed connection is retried; an error that every try would
                # meet again (SMTPNotSupportedError, an invalid address, a TLS
                # or certificate error...) is not.
                if may_retry and _is_retryable_failure(exc):
                    continue
                return failed(exc)
            refused.update(_responses(accepted))
            return SendResult(
                index,
                "partial" if refused else "sent",
                refused,
                None,
                tries.count,
                reply,
            )


async def send_many(
    messages: Iterable[SendItem] | AsyncIterable[SendItem],
    /,
    *,
    hostname: str | None = "localhost",
    port: int | None = None,
    concurrency: int = 10,
    retries: int = 3,
    backoff: Backoff = 1.0,
    retry_ambiguous: bool = False,
    progress: Progress | None = None,
    cancel_grace: float | None = 10.0,
    max_messages_per_connection: int | None = None,
    **options: Unpack[ConnectionOptions],
) -> list[SendResult]:
    """Send many messages through a temporary :class:`AsyncSMTPPool` of
    ``concurrency`` connections, then close it.

    See :meth:`AsyncSMTPPool.send_many` for the retry rules and the results.

    :param messages: message objects or :class:`Envelope` objects, as an
        iterable or an async iterable.
    :param hostname: the server.
    :param port: the server's port (default 465 with ``use_tls``, 587 with
        ``start_tls=True``, else 25).
    :param concurrency: how many connections (and messages in flight).
    :param retries: how many times a transient failure is retried.
    :param backoff: the first retry's delay in seconds, or a function of the
        retry number.
    :param retry_ambiguous: retry after a lost final reply too.
    :param progress: called with each result as soon as it is final.
    :param cancel_grace: seconds transactions in flight may take to finish
        after a cancellation.
    :param max_messages_per_connection: retire a connection after this many
        messages.
    :param options: the connection options of :class:`AsyncSMTP`.
    :returns: one result per message, in input order.
    """
    if options.get("socket_path") is not None:
        hostname = None  # the default "localhost" does not apply
    async with AsyncSMTPPool(
        hostname,
        port,
        max_size=concurrency,
        max_messages_per_connection=max_messages_per_connection,
        **options,
    ) as pool:
        return await pool.send_many(
            messages,
            concurrency=concurrency,
            retries=retries,
            backoff=backoff,
            retry_ambiguous=retry_ambiguous,
            progress=progress,
            cancel_grace=cancel_grace,
        )
