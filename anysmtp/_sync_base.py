"""Hand-written machinery of the sync facade.

The generated classes in ``_sync.py`` inherit from these: the constructors that
connect as smtplib's do, the context manager with smtplib's QUIT rules, and the
bridge that runs each coroutine of the wrapped async client in a portal.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import socket
import ssl
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable
from smtplib import LMTP_PORT
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Final,
    NoReturn,
    Self,
    SupportsIndex,
    TypeVar,
)

import anyio
from anyio.from_thread import BlockingPortal

from ._client import AsyncLMTP, AsyncSMTP, AsyncSMTP_SSL
from ._errors import SMTPConnectError, SMTPResponseException, SMTPServerDisconnected
from ._portal import (
    Portal,
    can_run_here,
    carry_context_variable,
    get_portal,
    run_here,
    run_in_portal,
)
from ._tls import (
    check_legacy_arguments,
    smtplib_default_context,
    warn_legacy_arguments,
)
from ._turns import HELD_TRANSACTIONS, Turns

__all__ = ["SyncClient", "SyncLMTPInit", "SyncSMTPSSLInit"]

T = TypeVar("T")

#: smtplib's "no timeout given" marker: use :func:`socket.getdefaulttimeout`.
_GLOBAL_DEFAULT_TIMEOUT: Final[Any] = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


def _resolve_timeout(timeout: float | None) -> float | None:
    if timeout is _GLOBAL_DEFAULT_TIMEOUT:
        return socket.getdefaulttimeout()
    return timeout


carry_context_variable(HELD_TRANSACTIONS)

#: The calls (their tokens, see :class:`_Turns`) whose hooks the
#: current context runs: a hook's call back into its own client must not wait
#: for the call it is part of.  Carried into the portal, so that a hook that
#: uses another client whose hooks call back into the first one waits for
#: nothing either.
_HOOK_TURNS: contextvars.ContextVar[frozenset[object]] = contextvars.ContextVar(
    "anysmtp_hook_turns", default=frozenset()
)
carry_context_variable(_HOOK_TURNS)
#: The turn whose coroutine the current task runs, for a client with bridged
#: hooks.  A plain hook (``has_extn``, ``_print_debug``...) runs in that task, in
#: the loop's thread: a blocking call it made on its client would stop the loop
#: that the call it is part of needs.
_TASK_TURN: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "anysmtp_task_turn", default=None
)

#: Generated functions by name: what is *not* one of these is an override.
_GENERATED_FUNCTIONS: dict[str, set[object]] = {}
#: smtplib reads these through ``self``, so a subclass's or an instance's value
#: counts: each client copies them into its async client with its hooks.
#: (``debuglevel`` set on a class is kept as ``_debuglevel_default``.)
_CLASS_VALUES: Final = frozenset({"default_port", "ehlo_msg", "_debuglevel_default"})
#: Bumped whenever a hookable name (or one of ``_CLASS_VALUES``) is assigned on
#: a facade class or instance, so each client re-checks its overrides only when
#: something changed.
_hook_epoch = 0


def _bump_hook_epoch() -> None:
    global _hook_epoch
    _hook_epoch += 1


def _watched(name: str) -> bool:
    return name in _GENERATED_FUNCTIONS or name in _CLASS_VALUES


class _FacadeMeta(type):
    """Notices class-level monkeypatches of hookable methods and of the class
    values smtplib reads through ``self`` (``default_port``, ``ehlo_msg``,
    ``debuglevel``).

    ``debuglevel`` set on a class (``smtplib.SMTP.debuglevel = 1``, or
    ``debuglevel = 1`` in a subclass's body) is the default level of its
    clients, as in smtplib; it is kept as ``_debuglevel_default``, so the
    instances' ``debuglevel`` property (their own level, which wins) stays.
    """

    _debuglevel_default: int

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kw: Any
    ) -> _FacadeMeta:
        if "debuglevel" in namespace and not isinstance(
            namespace["debuglevel"], property
        ):
            namespace = dict(namespace)
            namespace["_debuglevel_default"] = namespace.pop("debuglevel")
        return super().__new__(mcs, name, bases, namespace, **kw)

    @property
    def debuglevel(cls) -> int:
        """The default debug level of the class's clients (smtplib's class
        attribute)."""
        return cls._debuglevel_default

    def __setattr__(cls, name: str, value: object) -> None:
        if name == "debuglevel":
            name = "_debuglevel_default"
        super().__setattr__(name, value)
        if _watched(name):
            _bump_hook_epoch()

    def __delattr__(cls, name: str) -> None:
        if name == "debuglevel":
            # What ``mock.patch.object(SMTP, "debuglevel", 1)`` does on exit.
            name = "_debuglevel_default"
        super().__delattr__(name)
        if _watched(name):
            _bump_hook_epoch()


class _InheritedLevel(int):
    """The debug level of a client that never set its own: its class's
    ``debuglevel``, copied in with its hooks (a plain ``int``, set by
    ``set_debuglevel()`` or ``debuglevel = ...``, is the client's own)."""

    __slots__ = ()


class _EarlyAttributes:
    """What a subclass's ``__init__`` assigns before it calls the facade's
    constructor (``self.timeout = 7``, ``self.debuglevel = 1``...), which
    smtplib allows: kept here, then given to the async client when the
    constructor makes it (see :meth:`SyncClient._attach`).  Reads find what was
    assigned, else smtplib's class attributes."""

    sock = None
    helo_resp = None
    ehlo_resp = None
    does_esmtp = False


class _BeforeInit:
    """``_async`` until the constructor has run: an :class:`_EarlyAttributes`
    made on first use (a non-data descriptor: the instance's own ``_async``
    hides it, at no cost, once set)."""

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        early = _EarlyAttributes()
        instance.__dict__["_async"] = early
        return early


def _function_of(attribute: object) -> object:
    return getattr(attribute, "__func__", attribute)


class _Turns:
    """How threads sharing one client take turns: the lock, and a token of the
    call that holds it (``None`` between calls), whose hooks call back in
    without waiting for it.  (Slots: this is on every call's path, where the
    facade's own ``__setattr__`` would cost more than the rest.)"""

    __slots__ = ("current", "lent", "lent_timeout", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: object | None = None
        #: The socket ``sock`` handed out in blocking mode (smtplib's), which
        #: the next call puts back in non-blocking mode for the core; and the
        #: timeout it was handed out with.
        self.lent: socket.socket | None = None
        self.lent_timeout: float | None = None


class SyncClient(metaclass=_FacadeMeta):
    """The base of the sync clients: an async client driven through a portal.

    **Hooks.**  smtplib code overrides methods (``send``, ``putcmd``, ``data``,
    ``_get_socket``...) in subclasses or patches them on instances, and expects
    smtplib's composite methods to call the override.  Before each call the
    client compares its methods with the generated ones (only when a hookable
    name was assigned somewhere since the last check); for every override it
    gives the async client a *bridge* under that name, which runs the override
    (in a worker thread for coroutines, so it can call back into the portal).
    Without overrides nothing is bridged and each call is one portal hop.
    """

    _async_class: ClassVar[type[AsyncSMTP]] = AsyncSMTP
    _async: AsyncSMTP
    if not TYPE_CHECKING:
        # Attributes a subclass assigns before calling the constructor.
        _async = _BeforeInit()
    #: What smtplib's constructor assigns itself: a value a subclass assigned
    #: before calling it does not survive it.
    _constructor_sets: ClassVar[frozenset[str]] = frozenset(
        {
            "timeout",
            "source_address",
            "local_hostname",
            "esmtp_features",
            "command_encoding",
            "_host",
        }
    )
    #: ``debuglevel`` set on the class (see :class:`_FacadeMeta`).
    _debuglevel_default: ClassVar[int] = 0
    #: smtplib's reply file; anysmtp reads through its own buffer, so it stays
    #: ``None`` (code that resets it to ``None`` keeps working).
    file: Any = None
    _hooks_seen: int = -1
    _bridged: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_generated"):
            for name, value in cls.__dict__.items():
                if inspect.isfunction(value) and not name.startswith("__"):
                    _GENERATED_FUNCTIONS.setdefault(name, set()).add(value)
            _GENERATED_FUNCTIONS.setdefault("_get_socket", set()).add(
                SyncClient.__dict__["_get_socket"]
            )
        elif any(_watched(name) for name in cls.__dict__):
            _bump_hook_epoch()

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        if _watched(name):
            _bump_hook_epoch()

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        local_hostname: str | None = None,
        timeout: float | None = _GLOBAL_DEFAULT_TIMEOUT,
        source_address: tuple[str, int] | None = None,
        *,
        portal: BlockingPortal | None = None,
    ) -> None:
        """Create a client; connect when ``host`` is given.

        :param host: the server; ``"host:port"`` is accepted.
        :param port: the server's port; ``0`` means the default.
        :param local_hostname: the name sent with HELO/EHLO.
        :param timeout: seconds for connecting and for each command; by default
            :func:`socket.getdefaulttimeout` (no timeout unless set), as smtplib.
        :param source_address: ``(host, port)`` to bind to before connecting.
        :param portal: run in this :class:`anyio.from_thread.BlockingPortal`
            instead of the process-wide one.
        :raises SMTPConnectError: the server's greeting was not 220.
        :raises OSError: the connection failed.
        """
        self._attach(
            portal,
            self._async_class(
                local_hostname=local_hostname,
                timeout=_resolve_timeout(timeout),
                source_address=source_address,
                start_tls=False,
            ),
        )
        self._connect_on_init(host, port)

    def _attach(self, portal: BlockingPortal | None, client: AsyncSMTP) -> None:
        early = self.__dict__.get("_async")
        self._portal = portal
        self._pid = os.getpid()
        self._async = client
        # Threads sharing one object take turns, on every path a call takes
        # (the thread's own loop, a portal): one connection, one call at a time.
        self._turns = _Turns()
        client._facade = weakref.ref(self)
        # Its calls run in the calling thread's loop or a portal's: a reader
        # parked in one of them would race with a read in another.
        client._reader_parks = False
        client._warnings_for_caller = []
        # smtplib's TLS defaults: no upgrade on its own, an unverified context
        # when none is given.
        client._stdlib_tls_defaults = True
        # Its class's level until it sets its own (copied in _refresh_hooks).
        client.debuglevel = _InheritedLevel(type(self)._debuglevel_default)
        if isinstance(early, _EarlyAttributes):
            # Assigned by a subclass before it called the constructor: kept as
            # in smtplib, unless smtplib's constructor assigns it too.
            for name, value in vars(early).items():
                if name not in self._constructor_sets:
                    setattr(client, name, value)

    def _connect_on_init(self, host: str, port: int) -> None:
        if host:
            code, msg = self.connect(host, port)
            if code != 220:
                self.close()
                raise SMTPConnectError(code, msg)

    def __repr__(self) -> str:
        return repr(self._async).replace(
            type(self._async).__name__, type(self).__name__
        )

    def __copy__(self) -> Self:
        # A shallow copy shares the connection, as smtplib's does.
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        # Said at once: copying the parts (the event loop's, the connection's)
        # one by one would fail half-way, leaving broken copies to be freed.
        raise TypeError(f"cannot deep-copy {type(self).__name__!r} object")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(f"cannot pickle {type(self).__name__!r} object")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            code, message = self.docmd("QUIT")
            if code != 221:
                raise SMTPResponseException(code, message)
        except SMTPServerDisconnected:
            pass
        finally:
            self.close()

    if TYPE_CHECKING:
        # The generated subclasses define these; smtplib's constructor and
        # ``__exit__`` call them through ``self``, so overrides are honoured.
        def connect(
            self, host: str | None = None, port: int = 0
        ) -> tuple[int, bytes]: ...

        def docmd(self, cmd: str, args: str = "") -> tuple[int, bytes]: ...

        def close(self) -> None: ...

    def _missing(self, name: str) -> AttributeError:
        return AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}"
        )

    def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run one coroutine of the async client and return its result.

        Threads sharing this object take turns: a call waits until the one in
        progress is over, except a call that one of this object's hooks makes
        from its worker thread for the call in progress (see :meth:`_bridge`),
        which that call waits for.  A loop's thread never waits for a turn that
        needs its loop: a hook that runs in the loop and calls back in fails.

        :raises RuntimeError: called from a plain hook (one that runs in the
            event loop) of the call in progress.
        """
        if self._pid != os.getpid():
            self._adopt_process()
        turns = self._turns
        turn = turns.current
        if turn is not None and self._called_back(turn):
            try:
                if turns.lent is not None:
                    self._take_back_sock()
                return self._run(func)
            finally:
                self._warn_caller(self._async._warnings_for_caller)
        left: list[Warning] | None = None
        try:
            with turns.lock:
                turns.current = object()
                try:
                    if turns.lent is not None:
                        self._take_back_sock()
                    if (
                        self._hooks_seen == _hook_epoch
                        and self._portal is None
                        and not self._bridged
                        and can_run_here()
                    ):
                        return run_here(func, self._async.close)  # as in _run()
                    return self._run(func)
                finally:
                    turns.current = None
                    # Taken while the turn is still this call's: the warnings
                    # of the next thread's call are that thread's.
                    kept = self._async._warnings_for_caller
                    if kept:
                        left = kept[:]
                        kept.clear()
        finally:
            self._warn_caller(left)

    @property
    def sock(self) -> socket.socket | None:
        """The connected socket, or ``None``.

        As smtplib's: in blocking mode, with the client's ``timeout`` (``None``:
        no timeout), so code may read and write on it, or wrap it in TLS
        (``s.sock = context.wrap_socket(s.sock, ...)``); a timeout set on it
        with ``settimeout()`` becomes the client's ``timeout``.  The client's
        next call puts it back in non-blocking mode, which it needs: take it
        again after each call.  It is an :class:`ssl.SSLSocket` once TLS is on.
        Assigning a connected socket makes the client use it.
        """
        sock = self._async.sock
        turns: _Turns | None = self.__dict__.get("_turns")
        if (
            sock is None
            or turns is None
            or turns.lent is sock
            or self._pid != os.getpid()
        ):
            # (A forked child's copy shares the parent's blocking mode: made
            # blocking here, it would stall the parent's calls.)
            return sock
        if turns.lock.acquire(blocking=False):
            try:
                self._lend_sock(turns, sock)
            finally:
                turns.lock.release()
        else:
            # A call is in progress: only its own hooks may have the socket
            # blocking, since the call waits for them (another thread's, a
            # watchdog's about to shut it down, must not stall the call).
            turn = turns.current
            if turn is not None and (
                turn in _HOOK_TURNS.get() or _TASK_TURN.get() is turn
            ):
                self._lend_sock(turns, sock)
        return sock

    @sock.setter
    def sock(self, value: socket.socket | None) -> None:
        turns: _Turns | None = self.__dict__.get("_turns")
        if turns is not None and value is not turns.lent:
            # Another socket (or None: the old one is the caller's now).
            turns.lent = None
        self._async.sock = value

    def _lend_sock(self, turns: _Turns, sock: socket.socket) -> None:
        timeout = self._async.timeout
        try:
            sock.settimeout(timeout)
        except OSError:
            return  # closed meanwhile: the next call finds out
        turns.lent = sock
        turns.lent_timeout = timeout

    def _take_back_sock(self) -> None:
        """Put the socket ``sock`` handed out back in non-blocking mode before
        the core uses it (its reads must never block), and make a timeout the
        caller set on it the client's, as smtplib's reads would use it."""
        turns = self._turns
        sock = turns.lent
        turns.lent = None
        if sock is None:
            return
        timeout = sock.gettimeout()
        try:
            sock.setblocking(False)
        except OSError:
            return  # closed by the caller: the core finds out itself
        if timeout != turns.lent_timeout and timeout != 0.0:
            self._async.timeout = timeout

    @property
    def debuglevel(self) -> int:
        try:
            level = self._async.debuglevel
        except AttributeError:  # before the constructor
            return type(self)._debuglevel_default
        if type(level) is _InheritedLevel:
            return type(self)._debuglevel_default
        return level

    @debuglevel.setter
    def debuglevel(self, value: int) -> None:
        self._async.debuglevel = value

    @property
    def _host(self) -> str:
        """smtplib's: the host connected to, the name TLS verifies (a
        subclass's ``_get_socket`` passes it as ``server_hostname``)."""
        try:
            return self._async._host
        except AttributeError:  # before the constructor
            raise self._missing("_host") from None

    @_host.setter
    def _host(self, value: str) -> None:
        self._async._host = value

    def _called_back(self, turn: object) -> bool:
        """Whether this call comes from a hook of the call holding ``turn``, in
        the worker thread that runs it: it must not wait for that call.

        :raises RuntimeError: it comes from a hook that runs in the event loop,
            which the call holding the turn needs (it would never end).
        """
        if _TASK_TURN.get() is turn:
            raise RuntimeError(
                f"{type(self).__name__}: a hook that runs in the event loop "
                "cannot make a blocking call on its own client (it would wait "
                "for the call it is part of)"
            )
        return turn in _HOOK_TURNS.get()

    def _run(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func()`` where it can run: on the calling thread's own loop, or
        through a portal.  The caller holds the turn."""
        if self._hooks_seen != _hook_epoch:
            self._refresh_hooks()
        if self._portal is None and not self._bridged and can_run_here():
            # The common case: the calling thread runs the coroutine on its own
            # loop, with no hand-off.  Bridged hooks run in worker threads that
            # call back in: they need the one loop of the portal.
            return run_here(func, self._async.close)
        portal: Portal = self._portal if self._portal is not None else get_portal()
        if self._bridged:
            # The task knows whose turn it runs for: a plain hook that calls
            # back in from it fails instead of stopping the loop (_called_back).
            turn = self._turns.current
            return run_in_portal(
                portal, lambda: _in_turn(turn, func), self._async.close
            )
        return run_in_portal(portal, func, self._async.close)

    @staticmethod
    def _warn_caller(kept: list[Warning] | None) -> None:
        """Raise the warnings a call left (``kept``) where smtplib raises them."""
        while kept:
            # Counted from here: _call, the facade's method, its caller.
            warnings.warn(kept.pop(0), stacklevel=4)

    # ``timeout: float`` as in typeshed's smtplib, so that typed subclasses
    # written for smtplib override it without a type error.
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """Open the TCP connection (smtplib's hook: override it for a proxy).

        :returns: a connected socket in blocking mode with ``timeout``.
        """
        sock = self._call(
            lambda: AsyncSMTP._get_socket(self._async, host, port, timeout)
        )
        sock.settimeout(timeout)
        return sock

    def _refresh_hooks(self) -> None:
        """Bridge the async client's methods to this object's overrides."""
        self._hooks_seen = _hook_epoch
        client = self._async
        overridden: set[str] = set()
        for name, generated in _GENERATED_FUNCTIONS.items():
            current = _function_of(getattr(self, name, None))
            if current is not None and current not in generated:
                overridden.add(name)
        for name in self._bridged - overridden:
            client.__dict__.pop(name, None)
        for name in overridden:
            client.__dict__[name] = self._bridge(name)
        self._bridged = frozenset(overridden)
        # The values smtplib reads through ``self``: the subclass's or the
        # instance's count, where the async client reads its own.
        for name in ("default_port", "ehlo_msg"):
            value = getattr(self, name)
            if value == getattr(type(client), name):
                client.__dict__.pop(name, None)
            else:
                client.__dict__[name] = value
        if type(client.debuglevel) is _InheritedLevel:
            client.debuglevel = _InheritedLevel(type(self)._debuglevel_default)

    def _bridge(self, name: str) -> Callable[..., Any]:
        # The async client keeps its bridges: holding this object weakly, they
        # make no cycle (a subclass dropped unclosed frees its socket at once).
        facade = weakref.ref(self)
        target = getattr(type(self._async), name, None)
        if not inspect.iscoroutinefunction(target):
            # A plain method (``_print_debug``, ``has_extn``...): the override
            # runs where the async client calls it.
            def plain(*args: Any, **kwargs: Any) -> Any:
                client = facade()
                try:
                    return getattr(client, name)(*args, **kwargs)
                finally:
                    # The hook may have taken ``sock``: the core goes on with it.
                    if client is not None and client._turns.lent is not None:
                        client._take_back_sock()

            return plain

        async def bridge(*args: Any, **kwargs: Any) -> Any:
            # Looked up at each call, so a later patch is what runs.
            client = facade()
            # This runs within the call that holds the client's turn: the
            # worker thread runs the hook as part of it.
            turn = client._turns.current if client is not None else None
            # Handed over in a list that the worker empties: anyio's worker
            # thread keeps what it ran until after the caller may have resumed,
            # and the override holds the client (dropped unclosed, it must
            # close its socket at once).
            hook: list[Callable[[], Any]] = [
                functools.partial(getattr(client, name), *args, **kwargs)
            ]
            del client
            try:
                return await anyio.to_thread.run_sync(_run_hook, turn, hook)
            finally:
                # The hook may have taken ``sock``: the core goes on with it.
                owner = facade()
                if owner is not None and owner._turns.lent is not None:
                    owner._take_back_sock()

        return bridge

    def _adopt_process(self) -> None:
        # A forked child shares the parent's socket: using it would interleave
        # two sessions on one connection.  Drop the child's copy and say so.
        self._pid = os.getpid()
        # The locks may have been held by a parent's thread that the child does
        # not have (in a call, or in a transaction of the async client): nobody
        # would ever release the child's copies.
        self._turns = _Turns()
        self._async._transaction_turns = Turns()
        if self._async.is_connected:
            self._async.close()
            raise SMTPServerDisconnected(
                "this connection was opened in another process; connect() again "
                "in this one"
            )


async def _in_turn(turn: object | None, func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func()`` in a task that knows the turn it runs for."""
    token = _TASK_TURN.set(turn)
    try:
        return await func()
    finally:
        _TASK_TURN.reset(token)


def _run_hook(turn: object | None, hook: list[Callable[[], Any]]) -> Any:
    """Run ``hook.pop()()`` in its worker thread, as part of the call that
    holds ``turn``: what it calls on its client goes ahead without waiting for
    the turn, which the call waiting for the hook holds.  Other threads still
    wait.
    """
    hooks = _HOOK_TURNS.set(_HOOK_TURNS.get() | {turn}) if turn is not None else None
    # Not the loop's thread, whatever the task this context was copied from.
    task = _TASK_TURN.set(None)
    try:
        return hook.pop()()
    finally:
        _TASK_TURN.reset(task)
        if hooks is not None:
            _HOOK_TURNS.reset(hooks)


class SyncLMTPInit(SyncClient):
    """smtplib's LMTP constructor: a different default port and argument order."""

    _async_class: ClassVar[type[AsyncSMTP]] = AsyncLMTP

    def __init__(
        self,
        host: str = "",
        port: int = LMTP_PORT,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float | None = _GLOBAL_DEFAULT_TIMEOUT,
        *,
        portal: BlockingPortal | None = None,
    ) -> None:
        """Create an LMTP client; connect when ``host`` is given.

        :param host: the server, or the absolute path of a Unix socket.
        :param port: the server's port (2003 by default).
        :param local_hostname: the name sent with LHLO.
        :param source_address: ``(host, port)`` to bind to before connecting.
        :param timeout: seconds for connecting and for each command.
        :param portal: run in this portal instead of the process-wide one.
        """
        super().__init__(
            host, port, local_hostname, timeout, source_address, portal=portal
        )


class SyncSMTPSSLInit(SyncClient):
    """smtplib's SMTP_SSL constructor (Python 3.11's, with the deprecated
    ``keyfile`` and ``certfile``)."""

    _async_class: ClassVar[type[AsyncSMTP]] = AsyncSMTP_SSL
    _async: AsyncSMTP_SSL
    _constructor_sets: ClassVar[frozenset[str]] = SyncClient._constructor_sets | {
        "keyfile",
        "certfile",
        "context",
    }

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        local_hostname: str | None = None,
        keyfile: str | None = None,
        certfile: str | None = None,
        timeout: float | None = _GLOBAL_DEFAULT_TIMEOUT,
        source_address: tuple[str, int] | None = None,
        context: ssl.SSLContext | None = None,
        *,
        portal: BlockingPortal | None = None,
    ) -> None:
        """Create a client that speaks TLS from the start; connect when ``host``
        is given.

        :param host: the server; ``"host:port"`` is accepted.
        :param port: the server's port (465 by default).
        :param local_hostname: the name sent with EHLO.
        :param keyfile: deprecated: a client key file.
        :param certfile: deprecated: a client certificate file.
        :param timeout: seconds for connecting and for each command.
        :param source_address: ``(host, port)`` to bind to before connecting.
        :param context: the :class:`ssl.SSLContext`; by default smtplib's, which
            does not verify the server.
        :param portal: run in this portal instead of the process-wide one.
        :raises ValueError: ``context`` together with ``keyfile`` or ``certfile``,
            or ``keyfile`` without ``certfile`` (before connecting).
        :raises OSError: ``keyfile`` or ``certfile`` cannot be read.
        :raises ssl.SSLError: the server does not speak TLS.
        """
        check_legacy_arguments(context, keyfile, certfile)
        warn_legacy_arguments(keyfile, certfile, stacklevel=2)
        if context is None:
            # smtplib's, made here as smtplib does: a bad key or certificate
            # fails before any connection is opened.
            context = smtplib_default_context(certfile=certfile, keyfile=keyfile)
        with warnings.catch_warnings():
            # Warned above, where the caller sees it.
            warnings.simplefilter("ignore", DeprecationWarning)
            client = AsyncSMTP_SSL(
                local_hostname=local_hostname,
                timeout=_resolve_timeout(timeout),
                source_address=source_address,
                keyfile=keyfile,
                certfile=certfile,
            )
        # Not given to the async client's constructor, which refuses it
        # together with keyfile or certfile (smtplib's rule for the caller).
        client.context = context
        self._attach(portal, client)
        self._connect_on_init(host, port)
