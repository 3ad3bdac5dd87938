"""The process-wide blocking portals that run the sync facade's coroutines.

One event loop thread per backend, started on the first sync call (never at
import), stopped at interpreter exit, forgotten in a forked child.  The thread is
a daemon: a script that never calls ``quit()`` must still exit.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["get_portal", "run_in_portal", "stop_portals"]

T = TypeVar("T")

_BACKEND_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


class _PortalThread:
    """An event loop in a daemon thread, with a portal into it."""

    def __init__(self, name: str) -> None:
        backend, options = _BACKEND_OPTIONS[name]
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.portal: BlockingPortal | None = None
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
            async with BlockingPortal() as portal:
                self.portal = portal
                self._ready.set()
                await portal.sleep_until_stopped()

        try:
            anyio.run(serve, backend=backend, backend_options=options)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def stop(self) -> None:
        portal = self.portal
        if portal is None:
            return
        try:
            portal.call(portal.stop, True)
        except RuntimeError:
            pass  # already stopped
        self._thread.join(timeout=5)


_lock = threading.Lock()
_portals: dict[str, _PortalThread] = {}
_atexit_registered = False


def get_portal(backend: str = "asyncio") -> BlockingPortal:
    """The process's portal for ``backend``, started on first use.

    :param backend: ``"asyncio"``, ``"uvloop"`` or ``"trio"``.
    :raises ValueError: an unknown backend.
    """
    global _atexit_registered
    if backend not in _BACKEND_OPTIONS:
        raise ValueError(
            f"unknown backend {backend!r}: use one of {list(_BACKEND_OPTIONS)}"
        )
    handle = _portals.get(backend)
    if handle is None or handle.portal is None:
        with _lock:
            handle = _portals.get(backend)
            if handle is None:
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
    # have been held by a thread that is gone too.
    global _lock
    _lock = threading.Lock()
    _portals.clear()


os.register_at_fork(after_in_child=_forget_portals_in_child)


def run_in_portal(
    portal: BlockingPortal,
    func: Callable[[], Awaitable[T]],
    on_interrupt: Callable[[], None],
) -> T:
    """Run ``func()`` in the portal's event loop and wait for its result.

    If the waiting thread is interrupted (Ctrl-C raises :exc:`KeyboardInterrupt`
    here), the coroutine is cancelled, ``on_interrupt`` runs in the loop (it
    closes the connection, which is out of step now) and the interruption
    propagates.
    """
    future = portal.start_task_soon(func)
    try:
        return future.result()
    except BaseException:
        if future.done():
            raise
        future.cancel()
        try:
            portal.call(on_interrupt)
        except RuntimeError:
            pass  # the portal is gone: nothing is left to close
        raise
