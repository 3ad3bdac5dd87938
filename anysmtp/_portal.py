"""The process-wide portals that run the sync facade's coroutines.

One event loop thread per backend, started on the first sync call (never at
import), stopped at interpreter exit, forgotten in a forked child.  The thread is
a daemon: a script that never calls ``quit()`` must still exit.

Each call is one hand-off to the loop thread and one back: the caller schedules
the coroutine with the loop's thread-safe "call soon" and waits on a
:class:`concurrent.futures.Future`.  (anyio's ``BlockingPortal.call`` also waits
for the loop to acknowledge the task before waiting for its result: two round
trips.)  A ``BlockingPortal`` given by the caller (``portal=``) still works.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar, cast

import anyio
from anyio.from_thread import BlockingPortal

__all__ = [
    "LoopPortal",
    "Portal",
    "can_run_here",
    "carry_context_variable",
    "get_portal",
    "on_own_loop",
    "run_here",
    "run_in_portal",
    "stop_portals",
]

T = TypeVar("T")
_P = ParamSpec("_P")

_BACKEND_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


_MISSING: Any = object()
#: Context variables that follow a call from the calling thread into the loop.
_CARRIED: list[contextvars.ContextVar[Any]] = []


def carry_context_variable(variable: contextvars.ContextVar[Any]) -> None:
    """Make ``variable`` follow each call from the calling thread into the loop."""
    _CARRIED.append(variable)


class LoopPortal:
    """Runs coroutines in an event loop thread for callers in other threads.

    Each call is a bare task of the loop (an asyncio task, or a trio system
    task), started from the thread-safe callback itself: no dispatcher task and
    no task group in between, which halves the cost of a hop.

    :param schedule: the loop's thread-safe way to run a callback soon.
    :param spawn: starts ``func(*args)`` as a task; called in the loop thread.
    """

    def __init__(
        self,
        schedule: Callable[..., object],
        spawn: Callable[..., object],
    ) -> None:
        self._schedule = schedule
        self._spawn = spawn
        self._scopes: dict[int, anyio.CancelScope] = {}
        self.stopped = False

    def submit(self, func: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Start ``func()`` in the loop; its future resolves to the result."""
        if self.stopped:
            raise RuntimeError("the portal is stopped")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        # anysmtp's own context variables go along: a hook that calls back in
        # from a worker thread is still inside its transaction.  (Not the whole
        # context: the caller may be another event loop's thread.)
        carried = [
            (variable, value)
            for variable in _CARRIED
            if (value := variable.get(_MISSING)) is not _MISSING
        ]
        self._schedule(self._spawn, self._run, func, future, carried)
        return future

    async def _run(
        self,
        func: Callable[[], Awaitable[T]],
        future: concurrent.futures.Future[T],
        carried: list[tuple[contextvars.ContextVar[Any], Any]],
    ) -> None:
        if not future.set_running_or_notify_cancel():
            return
        for variable, value in carried:
            variable.set(value)  # this task's own context: nothing leaks
        scope = anyio.CancelScope()
        self._scopes[id(future)] = scope
        try:
            with scope:
                result = await func()
        except anyio.get_cancelled_exc_class():
            future.set_exception(concurrent.futures.CancelledError())
            raise
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt too (raised by a sync hook in a
            # worker thread): it belongs to the caller, and re-raised here it
            # would end the loop that every other caller shares.
            future.set_exception(exc)
        else:
            if scope.cancelled_caught:
                future.set_exception(concurrent.futures.CancelledError())
            else:
                future.set_result(result)
        finally:
            self._scopes.pop(id(future), None)

    def cancel_all(self) -> None:
        """Cancel every call still running (in the loop thread)."""
        for scope in list(self._scopes.values()):
            scope.cancel()

    def cancel(self, future: concurrent.futures.Future[Any]) -> None:
        """Cancel the coroutine behind ``future`` (from any thread)."""
        if not future.cancel():
            self._schedule(lambda: self._cancel_scope(id(future)))

    def _cancel_scope(self, key: int) -> None:
        scope = self._scopes.get(key)
        if scope is not None:
            scope.cancel()

    def call(self, func: Callable[[], T]) -> T:
        """Run a plain function in the loop thread and wait for its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(func())
            except BaseException as exc:
                future.set_exception(exc)

        self._schedule(run)
        return future.result()


#: What the facade runs its calls through.
Portal: TypeAlias = LoopPortal | BlockingPortal


class _PortalThread:
    """An event loop in a daemon thread, with a portal into it."""

    def __init__(self, name: str) -> None:
        backend, options = _BACKEND_OPTIONS[name]
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.portal: LoopPortal | None = None
        self._stop: Callable[[], object] | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(backend, options),
            name=f"anysmtp-portal-{name}",
            daemon=True,
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self, backend: str, options: dict[str, Any]) -> None:
        async def serve() -> None:
            schedule, spawn = _loop_primitives(backend)
            stop_event = anyio.Event()
            portal = self.portal = LoopPortal(schedule, spawn)

            def stop() -> None:
                portal.cancel_all()
                stop_event.set()

            self._stop = lambda: schedule(stop)
            self._ready.set()
            await stop_event.wait()

        try:
            anyio.run(serve, backend=backend, backend_options=options)
        except BaseException as exc:
            self._error = exc
        finally:
            # A loop that has ended takes no more calls: get_portal() starts
            # a new one instead of handing out this one (a call would wait for
            # ever).
            if self.portal is not None:
                self.portal.stopped = True
            self._ready.set()

    def stop(self) -> None:
        """Cancel what still runs in the loop and end the thread."""
        if self.portal is not None:
            self.portal.stopped = True
        if self._stop is not None:
            try:
                self._stop()
            except RuntimeError:
                pass  # the loop is already closed
        self._thread.join(timeout=5)


def _loop_primitives(
    backend: str,
) -> tuple[Callable[..., object], Callable[..., object]]:
    """The running loop's "call this soon, from any thread" and "start this
    task" (the latter called in the loop thread)."""
    if backend == "trio":
        import trio

        return (
            trio.lowlevel.current_trio_token().run_sync_soon,
            trio.lowlevel.spawn_system_task,
        )
    loop = asyncio.get_running_loop()

    def schedule(callback: Callable[..., object], *args: Any) -> object:
        # An empty context: the caller's (another loop's sniffio state, say)
        # must not follow the call into this loop.
        return loop.call_soon_threadsafe(callback, *args, context=contextvars.Context())

    def spawn(func: Callable[..., Awaitable[Any]], *args: Any) -> object:
        return loop.create_task(func(*args))  # type: ignore[arg-type]

    return schedule, spawn


_lock = threading.Lock()
_portals: dict[str, _PortalThread] = {}
_atexit_registered = False


def get_portal(backend: str = "asyncio") -> LoopPortal:
    """The process's portal for ``backend``, started on first use.

    :param backend: ``"asyncio"``, ``"uvloop"`` or ``"trio"``.
    :raises ValueError: an unknown backend.
    """
    global _atexit_registered
    handle = _portals.get(backend)
    if handle is None or handle.portal is None or handle.portal.stopped:
        if backend not in _BACKEND_OPTIONS:
            raise ValueError(
                f"unknown backend {backend!r}: use one of {list(_BACKEND_OPTIONS)}"
            )
        with _lock:
            handle = _portals.get(backend)
            if handle is None or handle.portal is None or handle.portal.stopped:
                handle = _portals[backend] = _PortalThread(backend)
                if not _atexit_registered:
                    atexit.register(stop_portals)
                    _atexit_registered = True
    assert handle.portal is not None
    return handle.portal


def stop_portals() -> None:
    """Stop every portal thread (cancelling what still runs in it)."""
    with _lock:
        handles = list(_portals.values())
        _portals.clear()
    for handle in handles:
        handle.stop()


def _forget_portals_in_child() -> None:
    # The parent's portal threads do not exist in a forked child; its lock may
    # have been held by a thread that is gone too.  The forking thread's own
    # loop shares its epoll instance with the parent's: close the child's copy.
    global _lock, _thread_loops
    _lock = threading.Lock()
    _portals.clear()
    holder = getattr(_thread_loops, "holder", None)
    _thread_loops = threading.local()
    if holder is not None:
        holder.close()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_forget_portals_in_child)


class _ThreadPerCall(concurrent.futures.ThreadPoolExecutor):
    """The default executor of a thread's own loop, where asyncio resolves host
    names: each call in a thread of its own that ends with it (the pool's own
    threads are never started).  A pool's idle thread would outlive the sync
    call, which smtplib's never leaves behind (test suites that check for
    leftover threads notice)."""

    def submit(
        self, fn: Callable[_P, T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=run, name="anysmtp-lookup", daemon=True).start()
        return future


class _ThreadLoop:
    """The calling thread's own asyncio loop, closed with the thread (when the
    thread's locals go) or at interpreter exit."""

    __slots__ = ("loop",)

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(_ThreadPerCall())

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.close()

    def __del__(self) -> None:
        if hasattr(self, "loop"):  # not when making the loop failed
            self.close()


_thread_loops = threading.local()
_main_thread_loop: _ThreadLoop | None = None


def _close_main_thread_loop() -> None:
    if _main_thread_loop is not None:
        _main_thread_loop.close()


atexit.register(_close_main_thread_loop)


def on_own_loop() -> bool:
    """Whether this runs on the calling thread's own loop: a sync call, whose
    caller waits for it anyway, as smtplib's caller would."""
    holder: _ThreadLoop | None = getattr(_thread_loops, "holder", None)
    return holder is not None and holder.loop.is_running()


def can_run_here() -> bool:
    """Whether a sync call can run in the calling thread, on its own loop: no
    event loop runs in this thread (Jupyter's asyncio, a trio program calling
    blocking code), which the portal is for."""
    if asyncio._get_running_loop() is not None:
        return False
    sniffio = sys.modules.get("sniffio")
    return sniffio is None or (
        getattr(sniffio.thread_local, "name", None) is None
        and sniffio.current_async_library_cvar.get() is None
    )


def run_here(func: Callable[[], Awaitable[T]], on_interrupt: Callable[[], None]) -> T:
    """Run ``func()`` to completion on the calling thread's own asyncio loop.

    No hand-off to another thread: a call costs what the coroutine costs plus
    one ``run_until_complete``.  Ctrl-C (or any ``BaseException`` that is not
    an ``Exception``) cancels the coroutine, runs ``on_interrupt`` (it closes
    the connection, out of step now) and propagates.
    """
    global _main_thread_loop
    holder: _ThreadLoop | None = getattr(_thread_loops, "holder", None)
    if holder is None or holder.loop.is_closed():
        holder = _thread_loops.holder = _ThreadLoop()
        if threading.current_thread() is threading.main_thread():
            _main_thread_loop = holder
    loop = holder.loop
    task = loop.create_task(_outcome(func))
    try:
        result, error = loop.run_until_complete(task)
    except BaseException as exc:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task)
        if not isinstance(exc, Exception):
            on_interrupt()
        raise
    if error is None:
        return cast(T, result)
    # Raised here, not through run_until_complete(): its frame, kept in the
    # traceback, would hold the task, and the task the error, a cycle that
    # would keep the client (and its socket) alive until a garbage collection.
    del task
    if not isinstance(error, Exception):
        on_interrupt()  # Ctrl-C inside the coroutine, or a hook's SystemExit
    try:
        raise error
    finally:
        del error


async def _outcome(
    func: Callable[[], Awaitable[T]],
) -> tuple[T | None, BaseException | None]:
    """``func()``'s result, or the exception it raised, as a value.

    Everything but a cancellation of this task: a ``SystemExit`` or
    ``KeyboardInterrupt`` raised by a sync hook in a worker thread is the
    caller's too, not the event loop's.
    """
    try:
        return await func(), None
    except anyio.get_cancelled_exc_class():
        raise
    except BaseException as error:
        return None, error


def run_in_portal(
    portal: Portal,
    func: Callable[[], Awaitable[T]],
    on_interrupt: Callable[[], None],
) -> T:
    """Run ``func()`` in the portal's event loop and wait for its result.

    If the waiting thread is interrupted (Ctrl-C raises :exc:`KeyboardInterrupt`
    here), the coroutine is cancelled, ``on_interrupt`` runs in the loop (it
    closes the connection, which is out of step now) and the interruption
    propagates.  So it does when the call itself raised a ``BaseException``
    that is not an ``Exception`` (a sync hook's ``SystemExit``).
    """
    future: concurrent.futures.Future[tuple[T | None, BaseException | None]]
    if isinstance(portal, LoopPortal):
        future = portal.submit(lambda: _outcome(func))
    else:
        future = _where_trio_allows(
            portal, lambda: portal.start_task_soon(_outcome, func)
        )
    try:
        result, error = future.result()
    except BaseException:
        if future.done():
            raise
        if isinstance(portal, LoopPortal):
            portal.cancel(future)
        else:
            # anyio's callback for it calls into the portal's loop.
            _where_trio_allows(portal, future.cancel)
        _close_through(portal, on_interrupt)
        raise
    # As in run_here(): the traceback keeps this frame, which must not hold the
    # future (and through it the error) while the error is raised.
    del future
    if error is None:
        return cast(T, result)
    if not isinstance(error, Exception):
        # A hook's SystemExit (say): the session stopped half-way, as after
        # Ctrl-C above.
        _close_through(portal, on_interrupt)
    try:
        raise error
    finally:
        del error


def _close_through(portal: Portal, on_interrupt: Callable[[], None]) -> None:
    """Run ``on_interrupt`` (it closes the connection) in the portal's loop."""
    try:
        _where_trio_allows(portal, lambda: portal.call(on_interrupt))
    except RuntimeError:
        pass  # the portal is gone: nothing is left to close


def _where_trio_allows(portal: Portal, operation: Callable[[], T]) -> T:
    """Run ``operation``, a call into an anyio portal, in this thread; or, if
    this thread runs a trio loop (a sync call from trio code) other than the
    portal's, in a thread of its own: trio refuses any call into a trio loop
    from a thread that runs one, and the portal's may be trio's.  The call
    still blocks this thread, as any blocking call from async code does.  (In
    the portal's own thread anyio refuses it, as it should: it would wait for
    ever.)
    """
    trio = sys.modules.get("trio")
    if (
        trio is None
        or isinstance(portal, LoopPortal)  # asyncio's: any thread may call it
        or not trio.lowlevel.in_trio_run()
        or getattr(portal, "_event_loop_thread_id", None) == threading.get_ident()
    ):
        return operation()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(operation())
        except BaseException as exc:
            failure.append(exc)

    hop = threading.Thread(target=run, name="anysmtp-portal-hop")
    hop.start()
    hop.join()
    if failure:
        # Not kept in this frame, which the traceback holds: a cycle would
        # keep the client (and its socket) alive until a garbage collection.
        error = failure.pop()
        try:
            raise error
        finally:
            del error
    return outcome.pop()
