"""Machinery of the differential tests: one client program, three ways to run it.

A *program* is ordinary smtplib code written once against a module object::

    def program(smtplib: ModuleType, host: str, port: int) -> object:
        with contextlib.closing(smtplib.SMTP(host, port, ...)) as s:
            return [attempt(s.noop), s.sock is None]

It is run with the standard library's :mod:`smtplib`, with :mod:`anysmtp` (the
sync facade, as ``import anysmtp as smtplib`` gives it) and with
:data:`ASYNC_API`, a module whose ``SMTP`` drives :class:`anysmtp.AsyncSMTP`:
the program runs in a worker thread of an event loop (asyncio, uvloop or trio)
and each method call is awaited in that loop, so the very same program exercises
the async API on every backend.

Each run gets its own :class:`~tests.servers.ScriptedServer` (or aiosmtpd
server); what is compared is the :class:`Outcome`: the program's result with
exceptions reduced to their type and ``args``, the bytes the server received,
the server script's own errors and, when asked for, what was printed on stderr.
"""

from __future__ import annotations

import enum
import functools
import inspect
import re
import smtplib
import socket
import ssl
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any, Final, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

import anysmtp
from tests.servers import (
    AiosmtpdServer,
    ReceivedMessage,
    ScriptedConnection,
    ScriptedServer,
)

__all__ = [
    "ASYNC_API",
    "ASYNC_VARIANTS",
    "BODY",
    "CLOSE",
    "GREETING",
    "STALL",
    "VARIANTS",
    "Action",
    "AsyncDrivenLMTP",
    "AsyncDrivenSMTP",
    "AsyncDrivenSMTP_SSL",
    "Outcome",
    "Program",
    "Raised",
    "Script",
    "Step",
    "answer_rest",
    "attempt",
    "drain",
    "ehlo_reply",
    "normalise",
    "print_outcome",
    "run",
    "script",
    "shape",
]

T = TypeVar("T")

Script = Callable[[ScriptedConnection], None]
#: A client program: smtplib code over whichever module it is given.
Program = Callable[[ModuleType, str, int], object]

#: Every way the programs run besides the reference (stdlib smtplib).
ASYNC_VARIANTS: Final[dict[str, tuple[str, dict[str, Any]]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}
VARIANTS: Final = ("facade", *ASYNC_VARIANTS)


# Results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Raised:
    """An exception, as compared: its exact type and its ``args``."""

    type: type[BaseException]
    args: tuple[object, ...]

    def __repr__(self) -> str:
        return f"Raised({self.type.__name__}, {self.args!r})"


def normalise(value: object) -> object:
    """Make a result comparable across clients.

    Exceptions become :class:`Raised`; tuples (``SMTPResponse`` named tuples
    included: anysmtp's replies are tuples, see compatibility.md, "Replies are
    plain tuples") become plain tuples, recursively, as do lists and dicts.
    """
    if isinstance(value, BaseException):
        return Raised(type(value), tuple(normalise(each) for each in value.args))
    if isinstance(value, tuple):
        return tuple(normalise(each) for each in value)
    if isinstance(value, list):
        return [normalise(each) for each in value]
    if isinstance(value, dict):
        return {key: normalise(each) for key, each in value.items()}
    return value


def shape(value: object) -> object:
    """The types in a normalised result, recursively: ``==`` alone would take
    ``1`` for ``True`` and ``b"x"`` for a ``bytearray``."""
    if isinstance(value, Raised):
        return ("Raised", value.type, shape(list(value.args)))
    if isinstance(value, tuple | list):
        return (type(value).__name__, [shape(each) for each in value])
    if isinstance(value, dict):
        return ("dict", {key: shape(each) for key, each in value.items()})
    return type(value).__name__


def attempt(function: Callable[..., object], *args: Any, **kwargs: Any) -> object:
    """Call ``function`` and return its normalised result or exception."""
    try:
        return normalise(function(*args, **kwargs))
    except Exception as exc:
        return normalise(exc)


@dataclass
class Outcome:
    """What one run of a program did."""

    #: The program's normalised result (or the exception that escaped it).
    result: object
    #: Every byte the server received, all connections together.
    transcript: bytes = b""
    #: Errors of the server script (a failed ``expect``): must match as well.
    server_errors: list[str] = field(default_factory=list)
    #: What the program printed on stderr, when the scenario captures it.
    stderr: str | None = None
    #: What an aiosmtpd server received (its transcript is not recorded).
    received: list[ReceivedMessage] = field(default_factory=list)


# The async API behind smtplib's interface --------------------------------------


#: The threads running the async variants' event loops.
_LOOP_THREADS: set[int] = set()


def _in_loop(function: Callable[..., T], *args: Any) -> T:
    """Call ``function`` in the event loop's thread (where the client lives)."""
    if threading.get_ident() in _LOOP_THREADS:
        # Called back by the client itself (an authobject such as
        # ``s.auth_plain`` handed to ``auth()``).
        return function(*args)
    return anyio.from_thread.run_sync(function, *args)


class AsyncDrivenSMTP:
    """``smtplib.SMTP``'s interface, driving an :class:`anysmtp.AsyncSMTP`.

    Only usable from a worker thread of a running event loop (see :func:`run`).
    Coroutine methods are awaited in the loop, plain methods and attributes are
    used in the loop thread.  The constructor does what smtplib's does: connect
    when given a host, and raise :exc:`smtplib.SMTPConnectError` (after closing)
    unless the greeting is 220.  ``with`` is ``async with``.
    """

    _client: anysmtp.AsyncSMTP

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        local_hostname: str | None = None,
        timeout: float | None = anysmtp.DEFAULT_TIMEOUT,
        source_address: tuple[str, int] | None = None,
    ) -> None:
        # smtplib never upgrades on its own.
        self._start(
            host,
            port,
            functools.partial(
                anysmtp.AsyncSMTP,
                local_hostname=local_hostname,
                timeout=timeout,
                source_address=source_address,
                start_tls=False,
            ),
        )

    def _start(
        self, host: str, port: int, factory: Callable[[], anysmtp.AsyncSMTP]
    ) -> None:
        object.__setattr__(self, "_client", _in_loop(factory))
        if host:
            code, msg = self.connect(host, port)
            if code != 220:
                self.close()
                raise smtplib.SMTPConnectError(code, msg)

    def __getattr__(self, name: str) -> Any:
        value = _in_loop(getattr, self._client, name)
        if inspect.iscoroutinefunction(value):

            def awaited(*args: Any, **kwargs: Any) -> Any:
                return anyio.from_thread.run(functools.partial(value, *args, **kwargs))

            return awaited
        if inspect.ismethod(value):

            def called(*args: Any, **kwargs: Any) -> Any:
                return _in_loop(functools.partial(value, *args, **kwargs))

            return called
        return value

    def __setattr__(self, name: str, value: object) -> None:
        _in_loop(setattr, self._client, name, value)

    def __enter__(self) -> AsyncDrivenSMTP:
        anyio.from_thread.run(self._client.__aenter__)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        anyio.from_thread.run(self._client.__aexit__, exc_type, exc, tb)


class AsyncDrivenSMTP_SSL(AsyncDrivenSMTP):
    """``smtplib.SMTP_SSL``'s interface over :class:`anysmtp.AsyncSMTP_SSL`."""

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        local_hostname: str | None = None,
        keyfile: str | None = None,
        certfile: str | None = None,
        timeout: float | None = anysmtp.DEFAULT_TIMEOUT,
        source_address: tuple[str, int] | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self._start(
            host,
            port,
            functools.partial(
                anysmtp.AsyncSMTP_SSL,
                local_hostname=local_hostname,
                keyfile=keyfile,
                certfile=certfile,
                timeout=timeout,
                source_address=source_address,
                context=context,
            ),
        )


class AsyncDrivenLMTP(AsyncDrivenSMTP):
    """``smtplib.LMTP``'s interface over :class:`anysmtp.AsyncLMTP`."""

    def __init__(
        self,
        host: str = "",
        port: int = smtplib.LMTP_PORT,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float | None = anysmtp.DEFAULT_TIMEOUT,
    ) -> None:
        self._start(
            host,
            port,
            functools.partial(
                anysmtp.AsyncLMTP,
                local_hostname=local_hostname,
                source_address=source_address,
                timeout=timeout,
            ),
        )


def _async_api_module() -> ModuleType:
    module = types.ModuleType("anysmtp_async_api", "anysmtp's async API as smtplib")
    for name in anysmtp.__all__:
        setattr(module, name, getattr(anysmtp, name))
    setattr(module, "SMTP", AsyncDrivenSMTP)  # noqa: B010
    setattr(module, "LMTP", AsyncDrivenLMTP)  # noqa: B010
    setattr(module, "SMTP_SSL", AsyncDrivenSMTP_SSL)  # noqa: B010
    return module


#: The module the programs get for the async variants.
ASYNC_API: Final = _async_api_module()


# Server scripts -------------------------------------------------------------------


class Action(enum.Enum):
    """What a script step does instead of sending a reply."""

    #: Close the connection (without a reply).
    CLOSE = "close"
    #: Send nothing; wait until the client goes away (it must time out).
    STALL = "stall"


CLOSE: Final = Action.CLOSE
STALL: Final = Action.STALL
#: A step's prefix that reads a whole DATA body (up to its ``.`` line).
BODY: Final = b"<body>"
GREETING: Final = b"220 scripted ESMTP\r\n"

#: One step of a script: read a line starting with the prefix (``b""``: read
#: nothing), then send the reply or do the action.
Step = tuple[bytes, "bytes | Action"]


def ehlo_reply(*extensions: bytes) -> bytes:
    """A 250 reply to EHLO announcing ``extensions``."""
    lines = [b"scripted", *extensions]
    head = b"".join(b"250-" + line + b"\r\n" for line in lines[:-1])
    return head + b"250 " + lines[-1] + b"\r\n"


def drain(conn: ScriptedConnection) -> None:
    """Read (and so record) whatever the client sends until it closes."""
    while conn.read_line():
        pass


def answer_rest(conn: ScriptedConnection) -> None:
    """Accept every command until the client leaves (QUIT gets 221)."""
    while line := conn.read_line():
        verb = line[:4].lower()
        if verb == b"data":
            conn.send(b"354 go ahead\r\n")
            conn.read_data()
            conn.send(b"250 queued\r\n")
        elif verb == b"quit":
            conn.send(b"221 bye\r\n")
        elif verb == b"ehlo":
            conn.send(ehlo_reply(b"8BITMIME"))
        else:
            conn.send(b"250 ok\r\n")


def script(
    *steps: Step,
    greeting: bytes | Action = GREETING,
    then: Callable[[ScriptedConnection], None] | None = answer_rest,
) -> Script:
    """A script: the greeting, each step in turn, then ``then`` (by default
    :func:`answer_rest`; ``None`` closes the connection)."""

    def run_script(conn: ScriptedConnection) -> None:
        for prefix, reply in [(b"", greeting), *steps]:
            if prefix == BODY:
                conn.read_data()
            elif prefix:
                conn.expect(prefix)
            if reply is CLOSE:
                return
            if reply is STALL:
                drain(conn)
                return
            assert isinstance(reply, bytes)
            conn.send(reply)
        if then is not None:
            then(conn)

    return run_script


# Running a program -----------------------------------------------------------------


class _Scripted:
    """A scripted server that runs ``scripts[i]`` on its i-th connection."""

    def __init__(self, scripts: Sequence[Script]) -> None:
        self._scripts: Iterator[Script] = iter(scripts)
        self._expected = len(scripts)
        self._accepted = 0
        self._finished = False
        self.server = ScriptedServer(self._dispatch, connections=len(scripts))

    def _dispatch(self, conn: ScriptedConnection) -> None:
        self._accepted += 1
        if not self._finished:
            next(self._scripts)(conn)

    def release(self) -> None:
        """The program is over: connections it never made are made (and closed
        at once) so that the server does not wait for them."""
        self._finished = True
        for _ in range(self._expected - self._accepted):
            with socket.create_connection((self.server.host, self.server.port)):
                pass


def _run_program(variant: str, program: Program, host: str, port: int) -> object:
    if variant == "smtplib":
        return program(smtplib, host, port)
    if variant == "facade":
        return program(anysmtp, host, port)
    backend, options = ASYNC_VARIANTS[variant]

    async def main() -> object:
        loop_thread = threading.get_ident()
        _LOOP_THREADS.add(loop_thread)
        try:
            return await anyio.to_thread.run_sync(program, ASYNC_API, host, port)
        finally:
            _LOOP_THREADS.discard(loop_thread)

    return anyio.run(main, backend=backend, backend_options=options)


def run(
    variant: str,
    program: Program,
    scripts: Sequence[Script] = (),
    *,
    aiosmtpd: Callable[[], AiosmtpdServer] | None = None,
    stderr: Callable[[], str] | None = None,
) -> Outcome:
    """Run ``program`` in ``variant`` against fresh servers.

    :param variant: ``"smtplib"`` (the reference), ``"facade"`` or an async
        backend's name.
    :param scripts: the scripted server's script for each connection.
    :param aiosmtpd: make an aiosmtpd server instead of a scripted one; the
        outcome's transcript is then empty and the program reports what the
        server received.
    :param stderr: returns what was printed on stderr since its last call
        (capsys); the outcome then includes it.
    """
    if stderr is not None:
        stderr()  # forget what came before
    if aiosmtpd is not None:
        with aiosmtpd() as server:
            try:
                result = _run_program(variant, program, server.host, server.port)
            except Exception as exc:
                result = exc
        return Outcome(
            normalise(result),
            received=list(server.messages),
            stderr=_normalise_port(stderr(), server.port) if stderr else None,
        )
    scripted = _Scripted(scripts)
    scripted_server = scripted.server.start()
    errors: list[str] = []
    try:
        try:
            result = _run_program(
                variant, program, scripted_server.host, scripted_server.port
            )
        except Exception as exc:
            result = exc
    finally:
        scripted.release()
        try:
            scripted_server.stop()
        except Exception as exc:
            errors = [f"{type(exc).__name__}: {exc}"]
    return Outcome(
        normalise(result),
        bytes(scripted_server.transcript),
        errors,
        _normalise_port(stderr(), scripted_server.port) if stderr else None,
    )


def _normalise_port(text: str, port: int) -> str:
    """The server's port differs from run to run: ``connect: to ('127.0.0.1',
    PORT) None`` in the debug output."""
    return re.sub(rf"(?<=, ){port}(?=\))", "PORT", text)


def print_outcome(label: str, outcome: Outcome) -> None:
    """Show an outcome in a failing test's captured output."""
    print(f"--- {label}", file=sys.stdout)
    print(f"result:     {outcome.result!r}", file=sys.stdout)
    print(f"transcript: {outcome.transcript!r}", file=sys.stdout)
    if outcome.server_errors:
        print(f"server:     {outcome.server_errors!r}", file=sys.stdout)
    if outcome.received:
        print(f"received:   {outcome.received!r}", file=sys.stdout)
    if outcome.stderr is not None:
        print(f"stderr:\n{outcome.stderr}", file=sys.stdout)
