"""Hand-written machinery of the sync facade.

The generated classes in ``_sync.py`` inherit from these: the constructors that
connect as smtplib's do, the context manager with smtplib's QUIT rules, and the
bridge that runs each coroutine of the wrapped async client in a portal.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from smtplib import LMTP_PORT
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, TypeVar

from anyio.from_thread import BlockingPortal

from ._client import AsyncLMTP, AsyncSMTP
from ._errors import SMTPConnectError, SMTPResponseException, SMTPServerDisconnected
from ._portal import get_portal, run_in_portal

__all__ = ["SyncClient", "SyncLMTPInit"]

T = TypeVar("T")

#: smtplib's "no timeout given" marker: use :func:`socket.getdefaulttimeout`.
_GLOBAL_DEFAULT_TIMEOUT: Final[Any] = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


def _resolve_timeout(timeout: float | None) -> float | None:
    if timeout is _GLOBAL_DEFAULT_TIMEOUT:
        return socket.getdefaulttimeout()
    return timeout


class SyncClient:
    """The base of the sync clients: an async client driven through a portal."""

    _async_class: ClassVar[type[AsyncSMTP]] = AsyncSMTP
    _async: AsyncSMTP

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
        self._portal = portal
        self._pid = os.getpid()
        self._async = self._async_class(
            local_hostname=local_hostname,
            timeout=_resolve_timeout(timeout),
            source_address=source_address,
        )
        self._async._audit_object = self
        if host:
            code, msg = self.connect(host, port)
            if code != 220:
                self.close()
                raise SMTPConnectError(code, msg)

    def __repr__(self) -> str:
        return repr(self._async).replace(
            type(self._async).__name__, type(self).__name__
        )

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

    def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run one coroutine of the async client and return its result."""
        if self._pid != os.getpid():
            self._adopt_process()
        portal = self._portal if self._portal is not None else get_portal()
        return run_in_portal(portal, func, self._async.close)

    def _adopt_process(self) -> None:
        # A forked child shares the parent's socket: using it would interleave
        # two sessions on one connection.  Drop the child's copy and say so.
        self._pid = os.getpid()
        if self._async.is_connected:
            self._async.close()
            raise SMTPServerDisconnected(
                "this connection was opened in another process; connect() again "
                "in this one"
            )


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
