"""The async SMTP client: every SMTP verb lives here, once.

:class:`AsyncSMTP` mirrors :class:`smtplib.SMTP` method for method (names,
positional signatures, return values, exceptions, debug output, audit events) and
adds aiosmtplib's conveniences.  Composite methods (``sendmail``,
``send_message``, ``ehlo_or_helo_if_needed``, ``docmd``...) call the primitives
through ``self``, exactly where smtplib does, so subclass hooks keep working.

The sync facade in ``_sync.py`` is generated from this module: keep every public
method typed and documented in a voice that fits both APIs.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import email.message
import enum
import functools
import os
import re
import socket
import ssl
import sys
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from smtplib import LMTP_PORT, SMTP_PORT
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Final,
    NoReturn,
    ParamSpec,
    Self,
    TypeAlias,
    TypeVar,
)

import anyio
import anyio.lowlevel

from ._auth import (
    PREFERRED_MECHANISMS,
    check_credential,
    cram_md5_available,
    cram_md5_response,
    login_response,
    oauth_mechanism,
    oauthbearer_response,
    plain_response,
    xoauth2_response,
)
from ._body import CHUNK_SIZE, MessageBody, MessageSource
from ._errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPException,
    SMTPGreetingTimeoutError,
    SMTPHeloError,
    SMTPMessageTooLarge,
    SMTPNoRecipientsError,
    SMTPNotSupportedError,
    SMTPReadTimeoutError,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
    SMTPTLSError,
)
from ._esmtp import auth_mechanisms, parse_ehlo_features
from ._message import NotAMessageError, prepare_message
from ._portal import on_own_loop
from ._protocol import (
    DataEncoder,
    ReplyLimitError,
    addr_only,
    check_address,
    crlf_only,
    format_command,
    mail_path,
)
from ._response import SMTPResponse
from ._tls import (
    TLSOptions,
    check_legacy_arguments,
    smtplib_default_context,
    warn_legacy_arguments,
)
from ._transport import Transport, open_tcp_socket, open_unix_socket
from ._turns import Turns

if TYPE_CHECKING:
    # Any bytes-like object, as typeshed's smtplib.SMTP.send accepts.
    from _typeshed import ReadableBuffer

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncLMTP",
    "AsyncSMTP",
    "AsyncSMTP_SSL",
    "TokenProvider",
    "default_local_hostname",
]

#: The async API's default timeout for connecting and for each command, seconds.
DEFAULT_TIMEOUT: Final = 60.0

#: What ``sendmail`` returns: the refused recipients and the server's replies.
SendErrors: TypeAlias = dict[str, tuple[int, bytes]]
#: A function that returns an OAuth access token, directly or when awaited.
TokenProvider: TypeAlias = Callable[[], str | Awaitable[str]]
#: smtplib's authobject: called with no argument for the initial response, then
#: with each decoded challenge.
AuthObject: TypeAlias = Callable[..., str | None]
#: Implicit TLS (RFC 8314) and submission with STARTTLS.
SUBMISSIONS_PORT: Final = 465
SUBMISSION_PORT: Final = 587


class _Unset(enum.Enum):
    """Marks a keyword argument the caller did not give."""

    token = 0


UNSET: Final = _Unset.token

#: OpenSSL's reasons when the peer answered a ClientHello with something that is
#: not TLS, typically an SMTP greeting.
_NOT_TLS_REASONS: Final = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "UNEXPECTED_RECORD",
    }
)

_Client = TypeVar("_Client", bound="AsyncSMTP")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _alone(
    command: Callable[Concatenate[_Client, _P], Awaitable[_R]],
) -> Callable[Concatenate[_Client, _P], Coroutine[Any, Any, _R]]:
    """Make ``command`` a command that runs alone on its connection: a task
    sharing the client waits until the transaction or command in progress is
    over, so that no task reads another's reply (aiosmtplib locks each command
    the same way).  Within a transaction or command (``sendmail``'s own
    commands, a hook's calls back in) it goes ahead: the lock is held for it.
    """

    @functools.wraps(command)
    async def alone(self: _Client, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        turns = self._transaction_turns
        if turns.held_here():
            return await command(self, *args, **kwargs)
        if not turns.try_acquire():
            await turns.acquire()
        token = turns.begin()
        try:
            return await command(self, *args, **kwargs)
        finally:
            turns.end(token)

    return alone


_MAXCHALLENGE: Final = 5
#: RFC 4422 section 3.1 (upper case there; smtplib upper-cases what it is given).
_SASL_MECHANISM: Final = re.compile(r"[A-Za-z0-9_-]{1,20}")

#: The methods the pipelined path stands in for: overriding any of them (in a
#: subclass or through the sync facade) keeps smtplib's one-by-one sequence.
_PIPELINED_HOOKS: Final = (
    "send",
    "putcmd",
    "getreply",
    "docmd",
    "mail",
    "rcpt",
    "data",
    "rset",
    "_rset",
    "close",
)
_OVERRIDE_CACHE: dict[tuple[type, str], bool] = {}
_HOOKS_OVERRIDDEN: dict[type, bool] = {}


def _class_overrides(cls: type, name: str) -> bool:
    """Whether ``cls`` (a subclass) replaced the library's method ``name``."""
    key = (cls, name)
    overridden = _OVERRIDE_CACHE.get(key)
    if overridden is None:
        function = getattr(cls, name)
        overridden = _OVERRIDE_CACHE[key] = all(
            library.__dict__.get(name) is not function for library in _LIBRARY_CLASSES
        )
    return overridden


def _binary_body(
    body: MessageBody,
    mail_options: Sequence[str],
    chunking: bool,
    features: dict[str, str],
) -> bool:
    """Whether the message goes as BODY=BINARYMIME (RFC 3030): asked for in
    ``mail_options``, or an in-memory message with NUL bytes (which neither
    7BIT nor 8BITMIME allows) to a server that offers it."""
    if mail_options and any(
        option.upper() == "BODY=BINARYMIME" for option in mail_options
    ):
        return True
    return (
        chunking
        and "binarymime" in features
        and body.data is not None
        and b"\0" in body.data
    )


def _size_limit(parameter: str) -> int:
    """The SIZE extension's limit in bytes; 0 when none is announced."""
    try:
        return max(int(parameter.split()[0]), 0) if parameter.strip() else 0
    except ValueError:
        return 0


def _base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _redact(line: ReadableBuffer | str) -> str | bytes:
    """An AUTH command or response as shown in debug output: no secrets."""
    text = line if isinstance(line, str) else bytes(line).decode("ascii", "replace")
    words = text.split(" ")
    if len(words) >= 3 and words[0].upper() == "AUTH":
        shown = f"{words[0]} {words[1]} <redacted>\r\n"
    elif words[0].upper() == "AUTH":
        shown = text
    else:
        shown = "<redacted>\r\n"
    return shown if isinstance(line, str) else shown.encode("ascii")


#: default_local_hostname() as first computed by an async client.
_process_hostname: str | None = None


def default_local_hostname() -> str:
    """The name to send in HELO/EHLO: the FQDN, else an address literal.

    RFC 5321 says to use the FQDN, and an address literal like ``[192.0.2.1]``
    when it cannot be found (smtplib's rule).  It may block on DNS: call it from a
    worker thread in async code.
    """
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    address = "127.0.0.1"
    try:
        address = socket.gethostbyname(socket.gethostname())
    except socket.gaierror:
        pass
    return f"[{address}]"


class AsyncSMTP:
    """A connection to an SMTP or ESMTP server.

    The constructor takes smtplib's arguments (``host``, ``port``,
    ``local_hostname``, ``timeout``, ``source_address``); the async client also
    takes aiosmtplib's keyword options (connection, TLS and login).  The async
    client connects in :meth:`connect` or on entering ``async with``; the sync
    :class:`anysmtp.SMTP` connects in its constructor when given a host, and never
    upgrades to TLS or logs in on its own, as smtplib.

    Attributes, as in smtplib: ``helo_resp`` and ``ehlo_resp`` (the messages of
    the last HELO and EHLO replies), ``does_esmtp`` (set after a successful EHLO),
    ``esmtp_features`` (extension names in lower case mapped to their
    parameters), ``local_hostname``, ``timeout``, ``source_address``,
    ``command_encoding`` and ``debuglevel``.

    Tasks of one event loop may share the async client (their transactions
    take turns); once connected it belongs to the loop it connected in, as
    asyncio's own streams do: use it from one loop at a time (a second
    ``asyncio.run()`` after the first has ended is fine) and from that loop's
    thread, except :meth:`close` and ``sock``, which any thread may use.
    Threads may share the sync :class:`anysmtp.SMTP`: their calls take turns.

    :param host: the server to connect to; ``"host:port"`` is accepted.
    :param port: the server's port; ``0`` means the default port (25).
    :param local_hostname: the name sent with HELO/EHLO; by default the local
        FQDN, or an address literal when there is none.
    :param timeout: seconds allowed for connecting and for each command;
        ``None`` waits for ever.
    :param source_address: ``(host, port)`` to bind the socket to before
        connecting; ``("", 0)`` lets the system choose.
    :param hostname: the server to connect to (aiosmtplib's name for ``host``).
    :param socket_path: connect to this Unix domain socket instead of TCP.
    :param sock: use this already-connected socket instead of connecting.
    :param use_tls: speak TLS from the start (implicit TLS, port 465).
    :param start_tls: ``None`` (default) upgrades with STARTTLS on connect when
        the server offers it, ``True`` requires the upgrade (connecting fails if
        the server does not offer it), ``False`` never upgrades on its own.
    :param validate_certs: verify the server's certificate and host name.
    :param client_cert: a PEM file with a client certificate (and its key).
    :param client_key: a PEM file with the client certificate's key.
    :param cert_bundle: a PEM file of CA certificates to trust.
    :param tls_context: an :class:`ssl.SSLContext` to use as it is (exclusive
        with ``client_cert``, ``client_key`` and ``cert_bundle``).
    :param server_hostname: the name for SNI and certificate verification, when
        it is not the host connected to.
    :param username: log in as this user on connect.
    :param password: the password for ``username``.
    :param oauth_token: log in with XOAUTH2/OAUTHBEARER instead of a password: a
        token, or a function (sync or async) that returns one.
    :param pipelining: send MAIL, RCPT and DATA in one write when the server
        offers PIPELINING (RFC 2920) and no smtplib hook is overridden.
    :param chunking: send messages with BDAT instead of DATA when the server
        offers CHUNKING (RFC 3030) and no smtplib hook is overridden: no
        dot-stuffing, and BINARYMIME where the message needs it.  ``False``
        always uses DATA.
    :raises ValueError: conflicting options.
    """

    default_port: ClassVar[int] = SMTP_PORT
    ehlo_msg: ClassVar[str] = "ehlo"
    #: Chunks awaiting their replies in a pipelined BDAT upload: enough to keep
    #: a long path busy, few enough that a refusal wastes little.
    _bdat_window: ClassVar[int] = 4

    debuglevel: int
    helo_resp: bytes | None
    ehlo_resp: bytes | None
    does_esmtp: bool
    esmtp_features: dict[str, str]
    timeout: float | None
    source_address: tuple[str, int] | None
    command_encoding: str
    #: The credentials smtplib's authobjects (``auth_plain``...) use; ``login``
    #: sets them.
    user: str
    password: str

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        local_hostname: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        source_address: tuple[str, int] | None = None,
        *,
        hostname: str | None = None,
        socket_path: str | bytes | os.PathLike[str] | None = None,
        sock: socket.socket | None = None,
        use_tls: bool = False,
        start_tls: bool | None = None,
        validate_certs: bool = True,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        cert_bundle: str | os.PathLike[str] | None = None,
        tls_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        username: str | None = None,
        password: str | None = None,
        oauth_token: str | TokenProvider | None = None,
        pipelining: bool = True,
        chunking: bool = True,
    ) -> None:
        if hostname is not None and host and hostname != host:
            raise ValueError("host and hostname are the same option: give one")
        host = host or hostname or ""
        if sum(bool(each) for each in (host, socket_path, sock)) > 1:
            raise ValueError("host, socket_path and sock are mutually exclusive")
        if use_tls and start_tls:
            raise ValueError(
                "use_tls and start_tls are mutually exclusive: use_tls=True speaks "
                "TLS at once (port 465), start_tls=True upgrades a plain connection"
            )
        if password is not None and oauth_token is not None:
            raise ValueError("password and oauth_token are mutually exclusive")
        if (password is not None or oauth_token is not None) and username is None:
            raise ValueError("a password or oauth_token needs a username")
        if username is not None and password is None and oauth_token is None:
            raise ValueError("username needs a password or an oauth_token")
        # Checked now, not at connect time: a bad combination is a usage error.
        self._tls_options = TLSOptions(
            validate_certs=validate_certs,
            client_cert=client_cert,
            client_key=client_key,
            cert_bundle=cert_bundle,
            tls_context=tls_context,
        )
        self._tls_options.check()
        self._use_tls = use_tls
        self._start_tls = start_tls
        self._pipelining = pipelining
        self._chunking = chunking
        self._server_hostname = server_hostname
        self._username = username
        self._password = password
        self._oauth_token = oauth_token
        #: smtplib's TLS defaults (unverified stdlib context) for the sync facade.
        self._stdlib_tls_defaults = False
        self._starttls_reply: SMTPResponse | None = None
        # ``user`` and ``password`` exist once login() (or the caller) sets them,
        # as in smtplib, where an authobject used before fails loudly.
        self._auth_challenge_count = 0
        self._redacting = False
        self._host = host
        self._port = port
        self._socket_path = socket_path
        self._adopt_sock = sock
        self._local_hostname = local_hostname
        self.timeout = timeout
        self.source_address = source_address
        self.debuglevel = 0
        self.helo_resp = None
        self.ehlo_resp = None
        self.does_esmtp = False
        self.esmtp_features = {}
        self.command_encoding = "ascii"
        self._transport: Transport | None = None
        self._last_ehlo_response: SMTPResponse | None = None
        self._accepted_recipients: list[str] = []
        self._data_refusals: SendErrors = {}
        self._last_data_response: SMTPResponse | None = None
        self._final_reply_pending = False
        #: A MAIL was accepted and the transaction has not ended (final reply,
        #: RSET, EHLO/HELO): the pool resets a connection given back so.
        self._in_transaction = False
        #: MAIL commands sent on this connection, refused ones too: servers
        #: count them against LIMITS MAILMAX (RFC 9422), and so does the pool.
        self._mail_transactions = 0
        self._transaction_turns = Turns()
        #: The sync facade that wraps this client, if any, held weakly: a
        #: reference back would make a cycle, and a facade dropped unclosed
        #: must free its socket at once, as smtplib's does.
        self._facade: weakref.ref[object] | None = None
        #: Whether the connection's reader may stay registered in the event
        #: loop between calls (see Transport.hand_out_sock).  The sync facade
        #: and the sync pool turn it off: they use a connection from several
        #: threads' loops.
        self._reader_parks = True
        #: Set by the sync facade: the warnings of a call, which it raises in
        #: the calling thread when the call ends (raised in the event loop, they
        #: would name the loop's code as their source, not the caller's).
        self._warnings_for_caller: list[Warning] | None = None

    @property
    def _audit_object(self) -> object:
        """The object audit events and errors name: the sync facade, if any."""
        facade = self._facade() if self._facade is not None else None
        return self if facade is None else facade

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "not connected"
        return f"<{type(self).__name__} {self._host or self._socket_path!r} {state}>"

    async def __aenter__(self) -> Self:
        """Connect (unless connected already), as the sync constructor does.

        :raises SMTPConnectError: the server's greeting was not 220 (the
            connection is closed).
        """
        if not self.is_connected:
            code, message = await self.connect()
            if code != 220:
                self.close()
                raise SMTPConnectError(code, message)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not self.is_connected:
            self.close()
            return
        try:
            code, message = await self.docmd("QUIT")
            if code != 221 and exc is None:
                raise SMTPResponseException(code, message)
        except SMTPServerDisconnected:
            pass
        except (SMTPResponseException, SMTPTimeoutError):
            # Leaving because of another error: that one is what matters.
            if exc is None:
                raise
        finally:
            self.close()

    # Properties ----------------------------------------------------------------

    @property
    def local_hostname(self) -> str:
        """The name sent with HELO/EHLO (computed on first use when not given)."""
        if self._local_hostname is None:
            self._local_hostname = default_local_hostname()
        return self._local_hostname

    @local_hostname.setter
    def local_hostname(self, value: str) -> None:
        self._local_hostname = value

    @property
    def sock(self) -> socket.socket | None:
        """The connected socket, or ``None``.

        It is an :class:`ssl.SSLSocket` once TLS is on.  Assigning a connected
        socket to an unconnected client makes the client use it.
        """
        if self._transport is not None and not self._transport.closed:
            return self._transport.hand_out_sock()
        return self._adopt_sock

    @sock.setter
    def sock(self, value: socket.socket | None) -> None:
        if value is None:
            # smtplib code that sets ``sock = None`` forgets the socket, it
            # does not close it.
            self._transport = None
            return
        if self._transport is not None and value is self._transport.sock:
            return
        self._drop_connection()
        self._transport = Transport(value)

    @property
    def is_connected(self) -> bool:
        """Whether the client has an open connection."""
        return self._transport is not None and not self._transport.closed

    @property
    def last_ehlo_response(self) -> SMTPResponse | None:
        """The last successful EHLO reply, or ``None``."""
        return self._last_ehlo_response

    @property
    def final_reply_pending(self) -> bool:
        """Whether the end of a message was sent and its final reply not read
        yet.  When a transaction fails while this is true, the server may or may
        not have accepted the message: the one case where resending it could
        deliver it twice (RFC 1047)."""
        return self._final_reply_pending

    @property
    def last_data_response(self) -> SMTPResponse | None:
        """The server's reply to the end of the last message (after DATA or the
        last BDAT chunk), or ``None``: what aiosmtplib's ``sendmail`` returns as
        its second item, and what ``sendmail`` drops to keep smtplib's return
        value."""
        return self._last_data_response

    @property
    def supported_auth_methods(self) -> list[str]:
        """The AUTH mechanisms the server advertised, upper-cased."""
        return auth_mechanisms(self.esmtp_features)

    # Plumbing ------------------------------------------------------------------

    def set_debuglevel(self, debuglevel: int) -> None:
        """Set the debug output level.

        ``1`` prints every command and reply on :data:`sys.stderr`, ``2`` also
        prefixes each line with a timestamp, as smtplib does.

        :param debuglevel: the level; ``0`` turns the output off.
        """
        self.debuglevel = debuglevel

    def _print_debug(self, *args: object) -> None:
        if self.debuglevel > 1:
            print(datetime.datetime.now().time(), *args, file=sys.stderr)
        else:
            print(*args, file=sys.stderr)

    def _check_timeout(self, timeout: float | None) -> None:
        if timeout is not None and not timeout:
            raise ValueError("Non-blocking socket (timeout=0) is not supported")

    async def _get_socket(
        self, host: str, port: int, timeout: float | None
    ) -> socket.socket:
        """Open the TCP connection (smtplib's hook for proxies and TLS)."""
        self._check_timeout(timeout)
        if self.debuglevel > 0:
            self._print_debug("connect: to", (host, port), self.source_address)
        return await open_tcp_socket(host, port, source_address=self.source_address)

    async def connect(
        self,
        host: str | None = None,
        port: int = 0,
        source_address: tuple[str, int] | None = None,
        *,
        hostname: str | None = None,
        socket_path: str | bytes | os.PathLike[str] | None = None,
        sock: socket.socket | None = None,
        timeout: float | _Unset | None = UNSET,
        use_tls: bool | None = None,
        start_tls: bool | _Unset | None = UNSET,
    ) -> SMTPResponse:
        """Connect to a server and read its greeting.

        Without arguments it connects to what the constructor was given, or to
        ``localhost``.  A host ending in ``:NUMBER`` with no ``port`` uses that
        port.  An open connection is closed first.  With the async client's
        options it then upgrades with STARTTLS and logs in, as configured.

        :param host: the server to connect to.
        :param port: the server's port; ``0`` means the host's ``:port`` suffix or
            the default port (465 with ``use_tls``, 587 with ``start_tls=True``,
            else 25).
        :param source_address: ``(host, port)`` to bind to before connecting.
        :param hostname: aiosmtplib's name for ``host``.
        :param socket_path: connect to this Unix domain socket instead.
        :param sock: use this already-connected socket instead.
        :param timeout: replaces the client's ``timeout`` from now on.
        :param use_tls: replaces the client's ``use_tls`` from now on.
        :param start_tls: replaces the client's ``start_tls`` from now on.
        :returns: the greeting, normally ``(220, b"...")``.
        :raises OSError: the connection failed (e.g. :exc:`ConnectionRefusedError`).
        :raises ssl.SSLError: the TLS handshake failed.
        :raises SMTPConnectTimeoutError: connecting or the greeting took too long.
        :raises SMTPServerDisconnected: the server closed the connection at once.
        :raises SMTPNotSupportedError: ``start_tls=True`` and the server does not
            offer STARTTLS, or a login is due and would go in clear text to
            another machine (``start_tls=None``; the connection is closed).
        :raises SMTPConnectError: the greeting was not 220 while the client was
            to upgrade with STARTTLS or log in (the connection is closed: the
            next commands would go in plain text, or unauthenticated).
        :raises ValueError: conflicting or invalid options (``timeout=0``).
        """
        if hostname is not None and host and hostname != host:
            raise ValueError("host and hostname are the same option: give one")
        if host is None and hostname is None and socket_path is None and sock is None:
            host = self._host
            socket_path = self._socket_path
            sock = self._adopt_sock
            port = port or self._port
        host = host or hostname or ""
        if sum(bool(each) for each in (host, socket_path, sock)) > 1:
            raise ValueError("host, socket_path and sock are mutually exclusive")
        if use_tls is not None:
            self._use_tls = use_tls
        if start_tls is not UNSET:
            self._start_tls = start_tls
        if self._use_tls and self._start_tls:
            raise ValueError("use_tls and start_tls are mutually exclusive")
        if timeout is not UNSET:
            self.timeout = timeout
        if source_address:
            self.source_address = source_address
        timeout_value = self.timeout
        self._check_timeout(timeout_value)
        self._drop_connection()
        if sock is not None:
            self._adopt_sock = None
            new_socket = sock
        elif socket_path is not None:
            self._socket_path = socket_path
            new_socket = await self._open(open_unix_socket(socket_path), timeout_value)
        else:
            host = host or "localhost"
            if not port and host.find(":") == host.rfind(":"):
                i = host.rfind(":")
                if i >= 0:
                    host, port_text = host[:i], host[i + 1 :]
                    try:
                        port = int(port_text)
                    except ValueError:
                        raise OSError("nonnumeric port") from None
            if not port:
                port = self._default_port_for_mode()
            self._host = host
            sys.audit("smtplib.connect", self._audit_object, host, port)
            new_socket = await self._open(
                self._get_socket(host, port, timeout_value), timeout_value
            )
        # The reader may park between calls only on a socket no other code
        # holds, which it could close behind our back (see
        # Transport.hand_out_sock).
        opened_here = sock is None and (
            socket_path is not None
            # Not replaced in a subclass, on the instance or on the class (a
            # test's mock): such a socket may be someone else's too.
            or getattr(self._get_socket, "__func__", None) is _OWN_GET_SOCKET
        )
        self._transport = Transport(
            new_socket, parks=opened_here and self._reader_parks
        )
        # A new connection is a new session: what the last server said in EHLO
        # no longer holds (smtplib only forgets it in quit(), which breaks
        # sendmail() after a reconnect that followed an error).
        self._reset_session()
        # A ``_get_socket`` override may hand back a socket already wrapped.
        if self._use_tls and not isinstance(new_socket, ssl.SSLSocket):
            await self._handshake(self._connect_tls_context(), timeout_value, port)
        try:
            code, msg = await self.getreply()
        except SMTPReadTimeoutError as exc:
            hint = ""
            if port == SUBMISSIONS_PORT and not self._use_tls:
                hint = (
                    " (a server on port 465 expects TLS at once: use "
                    "use_tls=True or SMTP_SSL)"
                )
            raise SMTPGreetingTimeoutError(
                f"Timed out waiting for the server's greeting after "
                f"{timeout_value} seconds{hint}"
            ) from exc
        if self.debuglevel > 0:
            self._print_debug("connect:", repr(msg))
        greeting = SMTPResponse(code, msg)
        if code == 220:
            try:
                await self._after_greeting()
            except BaseException:
                # A failed upgrade or login leaves nothing worth keeping, and the
                # caller of ``async with`` or send() never gets the client back.
                self._drop_connection()
                raise
        elif self._starttls_due() or self._login_due():
            # The upgrade or login was due and did not happen: a connection
            # returned now would carry the next commands in plain text, or
            # unauthenticated (a greeting is easy to forge on the way).
            self._drop_connection()
            raise SMTPConnectError(code, msg)
        return greeting

    def _default_port_for_mode(self) -> int:
        if self._use_tls and self.default_port == SMTP_PORT:
            return SUBMISSIONS_PORT
        if self._start_tls and self.default_port == SMTP_PORT:
            return SUBMISSION_PORT
        return self.default_port

    def _connect_tls_context(self) -> ssl.SSLContext:
        """The context for implicit TLS (overridden by AsyncSMTP_SSL)."""
        if self._stdlib_tls_defaults:
            return smtplib_default_context()
        return self._tls_options.context()

    def _tls_server_hostname(self) -> str | None:
        return self._server_hostname or self._host or None

    async def _handshake(
        self, context: ssl.SSLContext, timeout: float | None, port: int
    ) -> None:
        """Wrap the connection in TLS; explain the usual mistakes."""
        transport = self._transport
        if transport is None:
            raise SMTPServerDisconnected("please run connect() first")
        server_hostname = self._tls_server_hostname()
        if server_hostname is None and context.check_hostname:
            self._drop_connection()
            raise ValueError(
                "verifying the server's certificate needs its name: pass "
                "server_hostname= (connecting by socket_path or sock gives none)"
            )
        try:
            await transport.start_tls(context, server_hostname, timeout)
        except ssl.SSLCertVerificationError:
            self._drop_connection()
            raise
        except ssl.SSLError as exc:
            self._drop_connection()
            if exc.reason in _NOT_TLS_REASONS:
                raise SMTPTLSError(
                    f"the server did not answer in TLS ({exc.reason}): it does not "
                    "speak TLS at once on this port; connect in plain text and "
                    "upgrade with starttls() (start_tls=True) instead of "
                    "use_tls=True / SMTP_SSL"
                ) from exc
            raise
        except OSError:
            self._drop_connection()
            raise

    def _starttls_due(self) -> bool:
        """Whether the async keyword API upgrades with STARTTLS after the
        greeting (``start_tls=True``, or ``None`` with a name to verify)."""
        if self._use_tls or self._start_tls is False:
            return False
        # Without a name (Unix socket, adopted socket) there is nothing to verify
        # a certificate against: only an explicit start_tls=True tries (and
        # fails with a clear error).
        return bool(self._start_tls) or (
            self._tls_server_hostname() is not None
            or not self._tls_options.validate_certs
            or self._tls_options.tls_context is not None
        )

    async def _after_greeting(self) -> None:
        """The async keyword API's automatic STARTTLS and login."""
        if self._starttls_due():
            await self.ehlo_or_helo_if_needed()
            if self.has_extn("starttls"):
                self._starttls_reply = await self.starttls()
                await self.ehlo_or_helo_if_needed()
            elif self._start_tls:
                self._drop_connection()
                raise SMTPNotSupportedError(
                    "STARTTLS extension not supported by server, and start_tls=True "
                    "requires it: not continuing in plain text"
                )
        if self._login_due():
            assert self._username is not None
            if not self._may_log_in_here():
                raise SMTPNotSupportedError(
                    "the server does not offer STARTTLS: not sending the "
                    "credentials in clear text (a server, or anyone on the way, "
                    "may have left it out); pass start_tls=False to allow it"
                )
            if self._oauth_token is not None:
                await self.login_oauth(self._username, self._oauth_token)
            elif self._password is not None:
                await self.login(self._username, self._password)

    def _may_log_in_here(self) -> bool:
        """Whether the automatic login may go ahead: over TLS, or in clear
        text to a peer on this machine (loopback, a Unix socket), or when
        ``start_tls=False`` asked for clear text."""
        transport = self._transport
        return (
            self._start_tls is False
            or transport is None  # closed meanwhile: login() will say so
            or isinstance(transport.sock, ssl.SSLSocket)
            or transport.peer_is_local()
        )

    def _login_due(self) -> bool:
        """Whether the async keyword API logs in after the greeting."""
        return self._username is not None and (
            self._oauth_token is not None or self._password is not None
        )

    async def _open(
        self, opening: Awaitable[socket.socket], timeout: float | None
    ) -> socket.socket:
        try:
            with anyio.fail_after(timeout):
                return await opening
        except TimeoutError:
            raise SMTPConnectTimeoutError(
                f"Timed out connecting to the server after {timeout} seconds"
            ) from None

    async def send(self, s: ReadableBuffer | str) -> None:
        """Send ``s`` to the server as it is.

        A ``str`` is encoded with ``command_encoding``.

        :param s: the bytes (or text) to send.
        :raises SMTPServerDisconnected: not connected, or the connection failed
            (it is closed then).
        """
        if self.debuglevel > 0:
            self._print_debug("send:", repr(_redact(s) if self._redacting else s))
        transport = self._transport
        if transport is None:
            raise SMTPServerDisconnected("please run connect() first")
        data = s.encode(self.command_encoding) if isinstance(s, str) else bytes(s)
        sys.audit("smtplib.send", self._audit_object, data)
        try:
            rest = transport.send_now(data)
            if rest is not None:
                await transport.send_rest(rest, self.timeout)
        except SMTPTimeoutError:
            self.close()
            raise
        except OSError:
            self.close()
            raise SMTPServerDisconnected("Server not connected") from None

    async def putcmd(self, cmd: str, args: str = "") -> None:
        """Send one command line.

        :param cmd: the verb.
        :param args: its arguments; ``""`` sends the verb alone.
        :raises ValueError: CR, LF or another control character in the line;
            nothing is sent.
        """
        line = format_command(cmd, args)
        await self.send(line)
        # Every MAIL counts, sent by mail() or by hand (``docmd("MAIL FROM:<a>")``
        # passes the whole line as ``cmd``): servers count them against LIMITS
        # MAILMAX, and so does the pool.  The pipelined path counts its own.
        if line[:5].lower() == "mail ":
            self._mail_transactions += 1

    async def getreply(self) -> SMTPResponse:
        """Read one reply from the server.

        :returns: ``(code, message)``; multi-line messages are joined with
            ``b"\\n"``; the code is ``-1`` when the reply does not start with one.
        :raises SMTPServerDisconnected: the connection closed (it is closed here
            too).
        :raises SMTPResponseException: a reply line or the whole reply was too
            long (the connection is closed).
        :raises SMTPReadTimeoutError: no reply within ``timeout``.
        """
        reply = self._arrived_reply()
        if reply is not None:
            return reply
        transport = self._transport
        if transport is None:
            raise SMTPServerDisconnected("please run connect() first")
        try:
            raw = await transport.receive_reply(self.timeout)
        except ReplyLimitError as exc:
            self.close()
            raise SMTPResponseException(500, str(exc)) from None
        except (SMTPServerDisconnected, SMTPTimeoutError):
            self.close()
            raise
        if self.debuglevel > 0:
            for line in raw.lines:
                self._print_debug("reply:", repr(line))
            self._print_debug(
                "reply: retcode (%s); Msg: %a" % (raw.code, raw.message)  # noqa: UP031
            )
        return raw.response

    def _arrived_reply(self) -> SMTPResponse | None:
        """The next reply if it has arrived already, else ``None`` (and always
        ``None`` with debug output on): :meth:`getreply` without a trip through
        the event loop, which the pipelined path takes first
        (``self._arrived_reply() or await self.getreply()``).

        :raises SMTPResponseException: the reply was too long (the connection
            is closed).
        """
        transport = self._transport
        if transport is None or self.debuglevel > 0:
            return None
        try:
            raw = transport.arrived_reply()
        except ReplyLimitError as exc:
            self.close()
            raise SMTPResponseException(500, str(exc)) from None
        return None if raw is None else raw.response

    @_alone
    async def docmd(self, cmd: str, args: str = "") -> SMTPResponse:
        """Send a command and return the server's reply.

        :param cmd: the verb.
        :param args: its arguments.
        """
        await self.putcmd(cmd, args)
        return await self.getreply()

    def close(self) -> None:
        """Close the connection, if any, without saying QUIT."""
        self._drop_connection()

    def _drop_connection(self) -> None:
        # Where smtplib does not call close(), this does: a subclass's close()
        # override only runs where smtplib would run it.
        transport = self._transport
        self._transport = None
        # Every new connection comes through here first (connect(), ``sock``).
        self._mail_transactions = 0
        self._in_transaction = False
        if transport is not None:
            transport.close()

    def get_transport_info(self, key: str) -> Any:
        """Details of the connection by name.

        :param key: one of ``"socket"``, ``"peername"``, ``"sockname"``,
            ``"sslobject"`` (or asyncio's ``"ssl_object"``), ``"sslcontext"``,
            ``"cipher"``, ``"peercert"``, ``"compression"``, ``"tls_version"``.
        :raises SMTPServerDisconnected: not connected.
        :raises KeyError: an unknown key.
        """
        if self._transport is None or self._transport.closed:
            raise SMTPServerDisconnected("Server not connected")
        return self._transport.extra_info(key)

    # SMTP commands --------------------------------------------------------------

    async def _hello_name(self, name: str) -> str:
        if name:
            return name
        if self._local_hostname is None:
            global _process_hostname
            if _process_hostname is None:
                # Once per process.  It may wait on DNS: in a worker thread,
                # unless this is a sync call (whose caller waits anyway, as
                # smtplib's does), which leaves no thread behind then.
                if on_own_loop():
                    _process_hostname = default_local_hostname()
                else:
                    _process_hostname = await anyio.to_thread.run_sync(
                        default_local_hostname
                    )
            self._local_hostname = _process_hostname
        return self._local_hostname

    @_alone
    async def helo(self, name: str = "") -> SMTPResponse:
        """Send HELO.

        :param name: the name to announce; by default ``local_hostname``.
        :returns: the reply; its message is also kept in ``helo_resp``.
        """
        await self.putcmd("helo", await self._hello_name(name))
        code, msg = await self.getreply()
        self.helo_resp = msg
        if code == 250:
            self._in_transaction = False  # RFC 5321 4.1.4: HELO resets
        return SMTPResponse(code, msg)

    @_alone
    async def ehlo(self, name: str = "") -> SMTPResponse:
        """Send EHLO (LHLO for LMTP) and record the server's extensions.

        :param name: the name to announce; by default ``local_hostname``.
        :returns: the reply; its message is also kept in ``ehlo_resp``, and on
            success ``does_esmtp`` and ``esmtp_features`` are set.
        :raises SMTPServerDisconnected: the server closed the connection instead
            of answering.
        """
        self.esmtp_features = {}
        await self.putcmd(self.ehlo_msg, await self._hello_name(name))
        code, msg = await self.getreply()
        # RFC 1869: some badly written servers disconnect on EHLO.
        if code == -1 and len(msg) == 0:
            self.close()
            raise SMTPServerDisconnected("Server not connected")
        self.ehlo_resp = msg
        reply = SMTPResponse(code, msg)
        if code != 250:
            return reply
        self.does_esmtp = True
        self.esmtp_features = parse_ehlo_features(msg)
        self._last_ehlo_response = reply
        self._in_transaction = False  # RFC 5321 4.1.4: EHLO resets
        return reply

    def has_extn(self, opt: str) -> bool:
        """Whether the server advertised the extension ``opt`` (any case)."""
        return opt.lower() in self.esmtp_features

    def supports_extension(self, extension: str, /) -> bool:
        """Whether the server advertised ``extension`` (aiosmtplib's name for
        :meth:`has_extn`)."""
        return extension.lower() in self.esmtp_features

    @_alone
    async def help(self, args: str = "") -> bytes:
        """Send HELP and return the message of the reply.

        :param args: the topic, if any.
        """
        await self.putcmd("help", args)
        return (await self.getreply())[1]

    @_alone
    async def rset(self) -> SMTPResponse:
        """Send RSET: abort the current mail transaction."""
        self.command_encoding = "ascii"
        self._accepted_recipients = []
        reply = await self.docmd("rset")
        if reply[0] == 250:
            self._in_transaction = False
        return reply

    async def _rset(self) -> None:
        """RSET that ignores a lost connection (the next command reports it)."""
        try:
            await self.rset()
        except SMTPServerDisconnected:
            pass

    @_alone
    async def noop(self) -> SMTPResponse:
        """Send NOOP."""
        return await self.docmd("noop")

    @_alone
    async def mail(self, sender: str, options: Sequence[str] = ()) -> SMTPResponse:
        """Send MAIL FROM: start a mail transaction.

        :param sender: the envelope sender (``"Name <a@b>"`` is reduced to
            ``<a@b>``).
        :param options: ESMTP parameters (``"SIZE=1000"``, ``"SMTPUTF8"``...),
            sent only to a server that does ESMTP.
        :raises SMTPNotSupportedError: ``SMTPUTF8`` is asked for and the server does
            not support it.
        """
        arguments = self._mail_arguments(sender, options)
        self._accepted_recipients = []
        await self.putcmd("mail", arguments)  # counts the transaction
        reply = await self.getreply()
        if reply[0] == 250:
            self._in_transaction = True
        return reply

    def _mail_arguments(self, sender: str, options: Sequence[str]) -> str:
        path = mail_path(sender)
        optionlist = ""
        if options and self.does_esmtp:
            if any(option.lower() == "smtputf8" for option in options):
                if self.has_extn("smtputf8"):
                    self.command_encoding = "utf-8"
                else:
                    raise SMTPNotSupportedError("SMTPUTF8 not supported by server")
            optionlist = " " + " ".join(options)
        return f"FROM:{path}{optionlist}"

    def _rcpt_arguments(self, recip: str, options: Sequence[str]) -> str:
        path = mail_path(recip)
        optionlist = ""
        if options and self.does_esmtp:
            optionlist = " " + " ".join(options)
        return f"TO:{path}{optionlist}"

    @_alone
    async def rcpt(self, recip: str, options: Sequence[str] = ()) -> SMTPResponse:
        """Send RCPT TO for one recipient.

        :param recip: the recipient's address.
        :param options: ESMTP parameters (for example DSN's ``NOTIFY=``).
        """
        await self.putcmd("rcpt", self._rcpt_arguments(recip, options))
        reply = await self.getreply()
        if reply[0] in (250, 251):
            self._accepted_recipients.append(recip)
        return reply

    @_alone
    async def data(self, msg: MessageSource) -> SMTPResponse:
        """Send DATA and then the message.

        Lines starting with ``.`` are doubled and every line ending becomes CRLF.
        The message may be ``bytes``, ASCII ``str``, a binary file or an (async)
        iterable of ``bytes``; a large one is read, encoded and sent in chunks.

        :param msg: the message.
        :returns: the reply to the end of the data.
        :raises SMTPDataError: the server did not answer DATA with 354.
        :raises UnicodeEncodeError: a ``str`` message is not ASCII (nothing is
            sent).
        :raises TypeError: ``msg`` is of another type (nothing is sent).
        """
        body = MessageBody(msg)
        await self.putcmd("data")
        code, repl = await self.getreply()
        if self.debuglevel > 0:
            self._print_debug("data:", (code, repl))
        if code != 354:
            raise SMTPDataError(code, repl)
        await self._send_body(body)
        return await self._end_of_data_reply()

    async def _send_body(self, body: MessageBody) -> None:
        """Send the dot-stuffed body and the final ``.`` line."""
        data = body.data
        if data is not None and (
            len(data) <= CHUNK_SIZE or self.debuglevel > 0 or self._overridden("send")
        ):
            # smtplib sends the whole message with one send(): what a send()
            # override and the debug output see.
            await self.send(DataEncoder.encode_all(data))
            return
        if data is not None and DataEncoder.goes_as_is(data):
            # Nothing to change: the message goes as it is, without a copy.
            await self.send(data)
            await self.send(DataEncoder.end_of_data(data))
            return
        encoder = DataEncoder()
        try:
            async with contextlib.aclosing(body.chunks()) as chunks:
                async for chunk in chunks:
                    encoded = encoder.encode(chunk)
                    if encoded:
                        await self.send(encoded)
        except BaseException:
            # The server is inside DATA with part of a message: the session
            # cannot be put back in step (a stream that failed or yielded str).
            self._drop_connection()
            raise
        await self.send(encoder.finish())

    async def _end_of_data_reply(self, pipelined: bool = False) -> SMTPResponse:
        """The reply to the end of the message (all of them, for LMTP).

        :param pipelined: the caller is the pipelined path, which no
            :meth:`getreply` hook stands in for (:meth:`data` takes this path
            with such a hook): a reply that has arrived is taken without one.
        """
        self._final_reply_pending = True
        first = self._arrived_reply() if pipelined else None
        if first is None:
            code, repl = await self.getreply()
            first = SMTPResponse(code, repl)
        if self.debuglevel > 0:
            self._print_debug("data:", (first.code, first.message))
        reply = await self._final_reply(first)
        self._final_reply_pending = self._in_transaction = False
        self._last_data_response = reply
        return reply

    async def _final_reply(self, first: SMTPResponse) -> SMTPResponse:
        """The reply to the end of a message (after DATA, or to ``BDAT LAST``),
        given the first one read; LMTP reads one for every recipient."""
        return first

    def _overridden(self, name: str) -> bool:
        """Whether a subclass or the sync facade replaced the method ``name``."""
        return name in self.__dict__ or _class_overrides(type(self), name)

    def _can_pipeline(self) -> bool:
        """RFC 2920 pipelining: offered, enabled, and no hook in the way."""
        return (
            self._pipelining
            and "pipelining" in self.esmtp_features
            and not self._hooks_overridden()
        )

    def _can_chunk(self) -> bool:
        """RFC 3030 BDAT: offered, enabled, and no hook in the way."""
        return (
            self._chunking
            and "chunking" in self.esmtp_features
            and not self._hooks_overridden()
        )

    def _hooks_overridden(self) -> bool:
        # Per class once, then a set operation on the instance's dict (where the
        # sync facade puts its bridges to sync overrides): no loop per message.
        cls = type(self)
        overridden = _HOOKS_OVERRIDDEN.get(cls)
        if overridden is None:
            overridden = _HOOKS_OVERRIDDEN[cls] = any(
                _class_overrides(cls, name) for name in _PIPELINED_HOOKS
            )
        return overridden or not self.__dict__.keys().isdisjoint(_PIPELINED_HOOKS)

    @_alone
    async def verify(self, address: str) -> SMTPResponse:
        """Send VRFY: ask whether an address is valid."""
        check_address(address)
        await self.putcmd("vrfy", addr_only(address))
        return await self.getreply()

    async def vrfy(self, address: str) -> SMTPResponse:
        """Send VRFY (the same as :meth:`verify`)."""
        return await self.verify(address)

    @_alone
    async def expn(self, address: str) -> SMTPResponse:
        """Send EXPN: ask to expand a mailing list."""
        check_address(address)
        await self.putcmd("expn", addr_only(address))
        return await self.getreply()

    async def ehlo_or_helo_if_needed(self) -> None:
        """Send EHLO, or HELO if EHLO fails, unless one was done this session.

        :raises SMTPHeloError: the server refused HELO too.
        """
        if (
            self.helo_resp is None
            and self.ehlo_resp is None
            and not (200 <= (await self.ehlo())[0] <= 299)
        ):
            code, resp = await self.helo()
            if not (200 <= code <= 299):
                raise SMTPHeloError(code, resp)

    @_alone
    async def starttls(
        self,
        keyfile: str | None = None,
        certfile: str | None = None,
        context: ssl.SSLContext | None = None,
        *,
        server_hostname: str | None = None,
    ) -> SMTPResponse:
        """Upgrade the connection to TLS with STARTTLS.

        EHLO is sent first if needed.  After the upgrade the server's extensions
        are forgotten (RFC 3207): send EHLO again.  If the async client already
        upgraded on connect (``start_tls``), this returns that STARTTLS reply and
        does nothing else.

        :param keyfile: deprecated (as in smtplib): a client key file.
        :param certfile: deprecated (as in smtplib): a client certificate file.
        :param context: the :class:`ssl.SSLContext`; by default the sync client
            uses smtplib's (which does not verify the server) and the async client
            the one its TLS options describe (which does).
        :param server_hostname: the name for SNI and verification, instead of the
            host connected to.
        :returns: the reply to STARTTLS, ``(220, b"...")``.
        :raises SMTPNotSupportedError: the server does not offer STARTTLS.
        :raises SMTPResponseException: the server refused STARTTLS.
        :raises ssl.SSLError: the handshake failed.
        :raises ValueError: ``context`` together with ``keyfile`` or ``certfile``.
        """
        check_legacy_arguments(context, keyfile, certfile)
        transport = self._transport
        if (
            self._starttls_reply is not None
            and transport is not None
            and isinstance(transport.sock, ssl.SSLSocket)
        ):
            return self._starttls_reply
        await self.ehlo_or_helo_if_needed()
        if not self.has_extn("starttls"):
            raise SMTPNotSupportedError("STARTTLS extension not supported by server.")
        resp, reply = await self.docmd("STARTTLS")
        if resp != 220:
            # RFC 3207: 501 syntax error, 454 TLS not available for now.
            raise SMTPResponseException(resp, reply)
        warn_legacy_arguments(
            keyfile, certfile, stacklevel=2, keep_in=self._warnings_for_caller
        )
        if context is None:
            if self._stdlib_tls_defaults:
                context = smtplib_default_context(certfile=certfile, keyfile=keyfile)
            else:
                context = self._tls_options.context()
        if server_hostname is not None:
            self._server_hostname = server_hostname
        await self._handshake(context, self.timeout, 0)
        # RFC 3207: forget everything not learnt over TLS.
        self.helo_resp = None
        self.ehlo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False
        self._last_ehlo_response = None
        return SMTPResponse(resp, reply)

    @_alone
    async def auth(
        self,
        mechanism: str,
        authobject: AuthObject,
        *,
        initial_response_ok: bool = True,
    ) -> SMTPResponse:
        """Authenticate with one SASL mechanism, smtplib's way.

        ``authobject`` is called with no argument for the initial response (when
        ``initial_response_ok``), then with each decoded server challenge; it
        returns the text to send (base64-encoded here).  The exchange is shown
        as ``<redacted>`` in debug output.

        :param mechanism: the mechanism name, e.g. ``"PLAIN"``.
        :param authobject: computes the responses.
        :param initial_response_ok: send the initial response with AUTH (RFC
            4954) when the mechanism has one.
        :returns: the final reply, ``(235, ...)`` (or ``503``: already
            authenticated).
        :raises SMTPAuthenticationError: the server refused the credentials.
        :raises SMTPException: the server kept sending challenges (more than
            ``_MAXCHALLENGE``).
        :raises ValueError: ``mechanism`` is not a SASL mechanism name (RFC
            4422: letters, digits, ``-`` and ``_``); nothing is sent.
        """
        # Checked before the credentials are computed: the error for a line
        # that cannot be sent would quote the whole AUTH line, credentials
        # included.
        if _SASL_MECHANISM.fullmatch(mechanism) is None:
            raise ValueError(f"not a SASL mechanism name: {mechanism!r}")
        mechanism = mechanism.upper()
        self._redacting = True
        try:
            initial_response = authobject() if initial_response_ok else None
            if initial_response is not None:
                response = _base64(initial_response)
                code, resp = await self.docmd("AUTH", mechanism + " " + response)
                self._auth_challenge_count = 1
            else:
                code, resp = await self.docmd("AUTH", mechanism)
                self._auth_challenge_count = 0
            while code == 334:
                self._auth_challenge_count += 1
                challenge = base64.decodebytes(resp)
                try:
                    answer = authobject(challenge)
                except Exception:
                    # Leave the server's AUTH state cleanly (RFC 4954: "*"
                    # cancels), so the session can go on.
                    await self.docmd("*")
                    raise
                code, resp = await self.docmd(_base64(answer or ""))
                if self._auth_challenge_count > _MAXCHALLENGE:
                    raise SMTPException(
                        "Server AUTH mechanism infinite loop. Last response: "
                        + repr((code, resp))
                    )
        finally:
            self._redacting = False
        if code in (235, 503):
            return SMTPResponse(code, resp)
        raise SMTPAuthenticationError(code, resp)

    def _credentials(self) -> tuple[str, str]:
        try:
            return self.user, self.password
        except AttributeError as exc:
            # Name the class the caller uses (the sync facade, if any).
            owner = type(self._audit_object).__name__
            raise AttributeError(
                f"{owner!r} object has no attribute {exc.name!r}"
            ) from None

    def auth_cram_md5(self, challenge: bytes | None = None) -> str | None:
        """The CRAM-MD5 authobject (no initial response); uses ``user`` and
        ``password``."""
        if challenge is None:
            return None
        return cram_md5_response(*self._credentials(), challenge)

    def auth_plain(self, challenge: bytes | None = None) -> str:
        """The PLAIN authobject; uses ``user`` and ``password``."""
        return plain_response(*self._credentials())

    def auth_login(self, challenge: bytes | None = None) -> str:
        """The LOGIN authobject; uses ``user`` and ``password``."""
        user, password = self._credentials()
        if challenge is None:
            return user
        return login_response(user, password, self._auth_challenge_count)

    @_alone
    async def login(
        self, user: str, password: str, *, initial_response_ok: bool = True
    ) -> SMTPResponse:
        """Log in, trying CRAM-MD5, PLAIN and LOGIN in that order.

        EHLO is sent first if needed.  Only mechanisms the server advertises are
        tried; CRAM-MD5 is skipped where MD5 is unavailable (FIPS).  A mechanism
        the server fails moves on to the next one, except a 535 (bad
        credentials), which stops at once.

        :param user: the user name.
        :param password: the password.
        :param initial_response_ok: send initial responses with AUTH (RFC 4954).
        :returns: the server's reply, ``(235, ...)``.
        :raises SMTPNotSupportedError: the server does not offer AUTH.
        :raises SMTPException: no mechanism in common.
        :raises SMTPAuthenticationError: the server refused (the last error).
        :raises ValueError: NUL, CR or LF in the user name or password.
        """
        await self.ehlo_or_helo_if_needed()
        if not self.has_extn("auth"):
            raise SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        check_credential(user, "the user name")
        check_credential(password, "the password")
        advertised = self.esmtp_features["auth"].split()
        authlist = [auth for auth in PREFERRED_MECHANISMS if auth in advertised]
        if "CRAM-MD5" in authlist and not cram_md5_available():
            authlist.remove("CRAM-MD5")
        if not authlist:
            raise SMTPException("No suitable authentication method found.")
        self.user, self.password = user, password
        last_exception: SMTPAuthenticationError | None = None
        for authmethod in authlist:
            method_name = "auth_" + authmethod.lower().replace("-", "_")
            try:
                code, resp = await self.auth(
                    authmethod,
                    getattr(self, method_name),
                    initial_response_ok=initial_response_ok,
                )
            except SMTPAuthenticationError as exc:
                last_exception = exc
                if exc.smtp_code == 535:
                    break  # The credentials are wrong: another mechanism won't help.
                continue
            # 235: authentication successful; 503: already authenticated.
            if code in (235, 503):
                return SMTPResponse(code, resp)
        assert last_exception is not None
        raise last_exception

    @_alone
    async def login_oauth(
        self,
        user: str,
        token: str | TokenProvider,
        *,
        mechanism: str | None = None,
    ) -> SMTPResponse:
        """Log in with an OAuth 2.0 access token (Gmail, Microsoft 365...).

        :param user: the account's address.
        :param token: the access token, or a function (sync or async) that returns
            a fresh one.
        :param mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``; by default the one
            the server advertises (OAUTHBEARER first).
        :returns: the server's reply, ``(235, ...)``.
        :raises SMTPNotSupportedError: the server does not offer AUTH.
        :raises SMTPException: the server offers neither OAuth mechanism.
        :raises SMTPAuthenticationError: the server refused the token.
        """
        await self.ehlo_or_helo_if_needed()
        if not self.has_extn("auth"):
            raise SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        chosen = (
            mechanism.upper()
            if mechanism
            else oauth_mechanism(self.supported_auth_methods)
        )
        if chosen not in ("XOAUTH2", "OAUTHBEARER"):
            raise SMTPException(
                "No suitable authentication method found: the server offers "
                f"{self.supported_auth_methods}, not XOAUTH2 or OAUTHBEARER."
            )
        access_token = token if isinstance(token, str) else token()
        if not isinstance(access_token, str):
            access_token = await access_token
        check_credential(user, "the user name")
        check_credential(access_token, "the access token")
        if chosen == "XOAUTH2":
            initial = xoauth2_response(user, access_token)
            # On failure the server sends a JSON error as a challenge and
            # expects an empty response before its final 535.
            error_answer = ""
        else:
            peer = self.get_transport_info("peername")
            port = peer[1] if isinstance(peer, tuple) and len(peer) > 1 else 0
            initial = oauthbearer_response(
                user, access_token, self._tls_server_hostname() or "", port
            )
            error_answer = "\x01"  # RFC 7628 section 3.2.3

        def authobject(challenge: bytes | None = None) -> str:
            return initial if challenge is None else error_answer

        return await self.auth(chosen, authobject, initial_response_ok=True)

    async def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: MessageSource,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
        *,
        total_timeout: float | None = None,
    ) -> SendErrors:
        """Send one message: a whole mail transaction.

        EHLO (or HELO) is sent first if needed; with ESMTP the message size and
        ``mail_options`` go with MAIL.  A ``str`` message must be ASCII; its lone
        CR and LF become CRLF.

        :param from_addr: the envelope sender.
        :param to_addrs: the recipients; a ``str`` is one recipient.
        :param msg: the message.
        :param mail_options: ESMTP parameters for MAIL.
        :param rcpt_options: ESMTP parameters for every RCPT.
        :param total_timeout: seconds for the whole transaction, however the
            server paces its replies; on expiry the connection is closed.
        :returns: the refused recipients, each mapped to the server's
            ``(code, message)``; empty when all were accepted.
        :raises SMTPHeloError: the server refused HELO.
        :raises SMTPRecipientsRefused: every recipient was refused; nothing sent.
        :raises SMTPSenderRefused: the server refused the sender.
        :raises SMTPDataError: the server refused the message.
        :raises SMTPNotSupportedError: ``SMTPUTF8`` is in ``mail_options`` and the
            server does not support it.
        :raises SMTPMessageTooLarge: the message is larger than the server's SIZE
            limit (nothing is sent).
        :raises SMTPNoRecipientsError: ``to_addrs`` is empty (nothing is sent).
        :raises SMTPTimeoutError: ``total_timeout`` expired.
        :raises ValueError: an address contains control characters.
        :raises TypeError: ``msg`` is of an unsupported type.
        """
        return await self._run_transaction(
            self._sendmail,
            total_timeout,
            from_addr,
            to_addrs,
            msg,
            mail_options,
            rcpt_options,
        )

    async def _run_transaction(
        self,
        transaction: Callable[..., Awaitable[SendErrors]],
        total_timeout: float | None,
        *args: Any,
    ) -> SendErrors:
        """Run ``transaction(*args)`` holding the connection (tasks sharing a
        client take turns), within ``total_timeout`` if given.  Each wait for
        the server times itself (see :meth:`Transport.receive_reply`): a reply
        that has already arrived costs no timer or cancel scope."""
        turns = self._transaction_turns
        if turns.held_here():
            with self._deadline(total_timeout):
                return await transaction(*args)
        # A task whose scope is cancelled starts nothing (the transaction's
        # reads may find every reply waiting and never reach a checkpoint).
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not turns.try_acquire():
            await turns.acquire()
        token = turns.begin()
        holder: Transport | None = None
        try:
            # On asyncio's fast path the reader stays registered from wait to
            # wait.
            transport = self._transport
            if transport is not None and transport.times_waits_itself:
                holder = transport
                holder.hold_reader()
            if total_timeout is None:
                return await transaction(*args)
            with self._deadline(total_timeout):
                return await transaction(*args)
        finally:
            if holder is not None:
                holder.release_reader()
            turns.end(token)

    @contextlib.contextmanager
    def _deadline(self, total_timeout: float | None) -> Iterator[None]:
        if total_timeout is None:
            yield
            return
        try:
            with anyio.fail_after(total_timeout):
                yield
        except TimeoutError as exc:
            if isinstance(exc, SMTPTimeoutError):
                raise
            self._drop_connection()
            raise SMTPTimeoutError(
                f"The transaction did not finish within {total_timeout} seconds"
            ) from None

    async def _sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: MessageSource,
        mail_options: Sequence[str],
        rcpt_options: Sequence[str],
    ) -> SendErrors:
        self._new_transaction()
        await self.ehlo_or_helo_if_needed()
        # Everything that can be refused locally is refused before a byte is sent.
        body = MessageBody(msg)
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        if not recipients:
            raise SMTPNoRecipientsError()
        chunking = self._can_chunk()
        binary = _binary_body(body, mail_options, chunking, self.esmtp_features)
        if binary and not chunking:
            raise SMTPNotSupportedError(
                "BODY=BINARYMIME needs BDAT, and CHUNKING is "
                + ("disabled" if "chunking" in self.esmtp_features else "not offered")
            )
        esmtp_opts = []
        if self.does_esmtp:
            if self.has_extn("size") and body.size is not None:
                limit = self._server_size_limit()
                if limit and body.size > limit:
                    raise SMTPMessageTooLarge(body.size, limit, from_addr)
                esmtp_opts.append(f"size={body.size}")
            esmtp_opts.extend(mail_options)
            if binary and not any(
                option.upper() == "BODY=BINARYMIME" for option in mail_options
            ):
                esmtp_opts.append("BODY=BINARYMIME")
        message: MessageSource = body.data if body.data is not None else msg
        # A half-sent transaction helps nobody: every envelope line is built
        # (addresses and options checked) and encoded before MAIL goes out.
        envelope = [format_command("mail", self._mail_arguments(from_addr, esmtp_opts))]
        envelope += [
            format_command("rcpt", self._rcpt_arguments(each, rcpt_options))
            for each in recipients
        ]
        encoding = self.command_encoding
        encoded = b"".join([line.encode(encoding) for line in envelope])
        if self._can_pipeline():
            return await self._sendmail_pipelined(
                from_addr, recipients, body, encoded, chunking, binary
            )
        code, resp = await self.mail(from_addr, esmtp_opts)
        if code != 250:
            if code == 421:
                self.close()
            else:
                await self._rset()
            raise SMTPSenderRefused(code, resp, from_addr)
        senderrs: SendErrors = {}
        for each in recipients:
            code, resp = await self.rcpt(each, rcpt_options)
            if code != 250 and code != 251:
                senderrs[each] = (code, resp)
            if code == 421:
                self.close()
                raise SMTPRecipientsRefused(senderrs)
        if len(senderrs) == len(recipients):
            # The server refused all our recipients.
            await self._rset()
            raise SMTPRecipientsRefused(senderrs)
        if chunking:
            code, resp = await self._bdat(body, binary, from_addr, window=1)
        else:
            code, resp = await self.data(message)
        if code != 250:
            await self._refuse_data(code, resp)
        return self._transaction_result(senderrs)

    def _new_transaction(self) -> None:
        """Forget what the previous transaction left behind (both paths of
        :meth:`sendmail` start here)."""
        self._final_reply_pending = False
        self._accepted_recipients = []
        self._data_refusals = {}

    async def _refuse_data(self, code: int, resp: bytes) -> NoReturn:
        """End a transaction whose message the server refused.

        :raises SMTPDataError: always (after RSET, or closing on 421).
        """
        if code == 421:
            self.close()
        else:
            await self._rset()
        raise SMTPDataError(code, resp)

    def _transaction_result(self, senderrs: SendErrors) -> SendErrors:
        """What :meth:`sendmail` returns once the message was accepted: the
        recipients refused at RCPT, and those refused at the end of the data
        (LMTP)."""
        senderrs.update(self._data_refusals)
        return senderrs

    async def _sendmail_pipelined(
        self,
        from_addr: str,
        recipients: list[str],
        body: MessageBody,
        envelope: bytes,
        chunking: bool,
        binary: bool,
    ) -> SendErrors:
        """MAIL, every RCPT and DATA in one write (RFC 2920), the replies read in
        order, with exactly the sequential path's results and exceptions.

        With BDAT, the message follows the envelope's replies, and only when a
        recipient was accepted: a server that refuses a chunk sent blind (no
        valid recipient) may go on to read its octets as commands (Dovecot's
        does), and LMTP answers it with no reply at all (RFC 2033 section 4.3).
        """
        await self.send(envelope if chunking else envelope + b"data\r\n")
        self._mail_transactions += 1
        code, resp = self._arrived_reply() or await self.getreply()
        if code == 421:
            self._final_reply_pending = False  # the server is closing
            self.close()
            raise SMTPSenderRefused(code, resp, from_addr)
        sender_refused = (
            SMTPSenderRefused(code, resp, from_addr) if code != 250 else None
        )
        if sender_refused is None:
            self._in_transaction = True
        senderrs: SendErrors = {}
        for each in recipients:
            rcpt_code, rcpt_resp = self._arrived_reply() or await self.getreply()
            if rcpt_code in (250, 251):
                if sender_refused is None:
                    self._accepted_recipients.append(each)
            elif sender_refused is None:
                senderrs[each] = (rcpt_code, rcpt_resp)
            if rcpt_code == 421:
                self._final_reply_pending = False  # the server is closing
                self.close()
                raise sender_refused or SMTPRecipientsRefused(senderrs)
        if chunking:
            return await self._finish_chunked(
                body,
                binary,
                from_addr,
                senderrs,
                sender_refused or len(senderrs) == len(recipients),
            )
        data_code, data_resp = self._arrived_reply() or await self.getreply()
        if sender_refused is None and self.debuglevel > 0:
            self._print_debug("data:", (data_code, data_resp))
        if sender_refused is not None or len(senderrs) == len(recipients):
            if data_code == 354:
                # A server that accepts DATA with no valid recipient gets an
                # empty message, which it must refuse (RFC 2920 section 3.1).
                await self.send(b".\r\n")
                await self.getreply()
            await self._rset()
            if sender_refused is not None:
                raise sender_refused
            raise SMTPRecipientsRefused(senderrs)
        if data_code != 354:
            raise SMTPDataError(data_code, data_resp)
        await self._send_body(body)
        code, resp = await self._end_of_data_reply(pipelined=True)
        if code != 250:
            await self._refuse_data(code, resp)
        return self._transaction_result(senderrs)

    async def _finish_chunked(
        self,
        body: MessageBody,
        binary: bool,
        sender: str,
        senderrs: SendErrors,
        refused: SMTPSenderRefused | bool,
    ) -> SendErrors:
        """The pipelined BDAT transaction after the envelope's replies: RSET
        when it never started, else the chunks.

        :param sender: the envelope sender.
        :param refused: the sender's refusal, or whether every recipient was
            refused."""
        if refused:
            await self._rset()
            if isinstance(refused, SMTPSenderRefused):
                raise refused
            raise SMTPRecipientsRefused(senderrs)
        code, resp = await self._bdat(body, binary, sender, window=self._bdat_window)
        if code != 250:
            await self._refuse_data(code, resp)
        return self._transaction_result(senderrs)

    async def _bdat(
        self, body: MessageBody, binary: bool, sender: str, *, window: int
    ) -> SMTPResponse:
        """Send the message in BDAT chunks (RFC 3030) and return the reply to the
        last one, or to the first refused one (nothing more is sent then).

        :param sender: the envelope sender, for :exc:`SMTPMessageTooLarge`.
        :param window: how many chunks may await their replies: 1 without
            PIPELINING, where each reply must come before the next chunk.
        :raises SMTPMessageTooLarge: the message, of a size not known before,
            would go past the server's SIZE limit: it stopped short of it (the
            transaction is reset).
        """
        # No chunk goes past the server's SIZE limit: a server that finds a
        # chunk too large half-way may read the rest of it as commands (Exim
        # 4.96 does), which would let a message's content run in the session.
        limit = self._server_size_limit()
        data = body.data
        if data is not None and (binary or crlf_only(data)):
            # Nothing to change: one chunk, sent as it is, without a copy.
            tail = b"" if binary or data.endswith(b"\r\n") else b"\r\n"
            if limit and len(data) + len(tail) > limit:
                await self._rset()
                raise SMTPMessageTooLarge(len(data) + len(tail), limit, sender)
            await self.send(b"BDAT %d LAST\r\n" % (len(data) + len(tail)))
            await self.send(data)
            if tail:
                await self.send(tail)
            self._final_reply_pending = True
            reply = await self._final_reply(await self._bdat_reply())
            self._final_reply_pending = self._in_transaction = False
            self._last_data_response = reply
            return reply
        encoder = None if binary else DataEncoder(stuff_dots=False)
        unanswered = 0
        refusal: SMTPResponse | None = None
        pending: bytes | None = None
        #: The octets sent in chunks so far, and how many the message would
        #: have had when it stopped short of ``limit``.
        sent = 0
        too_large = 0
        try:
            async with contextlib.aclosing(body.chunks()) as chunks:
                async for chunk in chunks:
                    payload = chunk if encoder is None else encoder.encode(chunk)
                    if not payload:
                        continue
                    if pending is not None:
                        if limit and sent + len(pending) > limit:
                            too_large = sent + len(pending)
                            break
                        await self.send(b"BDAT %d\r\n%b" % (len(pending), pending))
                        sent += len(pending)
                        unanswered += 1
                        if unanswered >= window:
                            unanswered -= 1
                            reply = await self._bdat_reply()
                            if reply[0] != 250:
                                refusal = reply
                                break
                    pending = payload
        except BaseException:
            # Part of the message is with the server: the session cannot be put
            # back in step (a stream that failed or yielded str).
            self._drop_connection()
            raise
        if refusal is None and not too_large:
            tail = b"" if encoder is None else encoder.finish()
            last = tail if pending is None else pending + tail
            if limit and sent + len(last) > limit:
                too_large = sent + len(last)
            else:
                await self.send(b"BDAT %d LAST\r\n%b" % (len(last), last))
                unanswered += 1
                self._final_reply_pending = True
        final: SMTPResponse | None = refusal
        for left in range(unanswered - 1, -1, -1):
            reply = await self._bdat_reply()
            if final is None or final[0] == 250:
                # The last one answers BDAT LAST (nothing was refused before).
                last_chunk = not left and not too_large
                final = await self._final_reply(reply) if last_chunk else reply
        self._final_reply_pending = self._in_transaction = False
        if too_large and (final is None or final[0] == 250):
            # Stopped short of the limit, every chunk sent taken: the
            # transaction ends here (RFC 3030 section 4.1: RSET aborts it).
            await self._rset()
            raise SMTPMessageTooLarge(too_large, limit, sender, streamed=True)
        assert final is not None
        self._last_data_response = final
        return final

    def _server_size_limit(self) -> int:
        """The server's SIZE limit in octets (RFC 1870); 0 when none.

        Read from what EHLO recorded, not through ``has_extn()``: that is a
        hook, and smtplib calls it once per message (``sendmail`` does).
        """
        return _size_limit(self.esmtp_features.get("size", ""))

    async def _bdat_reply(self) -> SMTPResponse:
        reply = await self.getreply()
        if self.debuglevel > 0:
            self._print_debug("bdat:", tuple(reply))
        return reply

    async def send_message(
        self,
        msg: email.message.Message,
        from_addr: str | None = None,
        to_addrs: str | Sequence[str] | None = None,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
        *,
        total_timeout: float | None = None,
    ) -> SendErrors:
        """Send an :class:`email.message.Message` (or ``EmailMessage``).

        The envelope comes from the headers unless given: the sender from
        ``Sender`` or ``From``, the recipients from ``To``, ``Cc`` and ``Bcc``
        (their ``Resent-`` forms when the message was resent).  ``Bcc`` headers
        are never transmitted.  International addresses need a server that
        supports SMTPUTF8.

        :param msg: the message.
        :param from_addr: the envelope sender, instead of the headers'.
        :param to_addrs: the recipients, instead of the headers'.
        :param mail_options: ESMTP parameters for MAIL.
        :param rcpt_options: ESMTP parameters for every RCPT.
        :param total_timeout: seconds for the whole transaction.
        :returns: the refused recipients, as :meth:`sendmail`.
        :raises ValueError: the message has more than one ``Resent-`` block.
        :raises SMTPNotSupportedError: an address needs SMTPUTF8 and the server
            does not support it.
        :raises TypeError: ``msg`` is not a message object (the exception is
            also an :exc:`AttributeError`, which smtplib raises there).
        """
        if not isinstance(msg, email.message.Message):
            raise NotAMessageError(
                "send_message() takes an email.message.Message, not "
                f"{type(msg).__name__}: give str or bytes to sendmail()"
            )
        return await self._run_transaction(
            self._send_message,
            total_timeout,
            msg,
            from_addr,
            to_addrs,
            mail_options,
            rcpt_options,
        )

    async def _send_message(
        self,
        msg: email.message.Message,
        from_addr: str | None,
        to_addrs: str | Sequence[str] | None,
        mail_options: Sequence[str],
        rcpt_options: Sequence[str],
    ) -> SendErrors:
        await self.ehlo_or_helo_if_needed()
        prepared = prepare_message(
            msg,
            from_addr,
            to_addrs,
            mail_options,
            smtputf8_supported=lambda: self.has_extn("smtputf8"),
        )
        options = prepared.mail_options
        if (
            # Not has_extn(): a hook would see a call smtplib never makes.
            "binarymime" in self.esmtp_features
            and self._can_chunk()
            and any(
                part.get("Content-Transfer-Encoding", "").strip().lower() == "binary"
                for part in msg.walk()
            )
        ):
            # RFC 3030: a binary part may go unencoded, but only with BDAT.
            options = (
                *(each for each in options if not each.upper().startswith("BODY=")),
                "BODY=BINARYMIME",
            )
        return await self.sendmail(
            prepared.sender, prepared.recipients, prepared.data, options, rcpt_options
        )

    @_alone
    async def quit(self) -> SMTPResponse:
        """Send QUIT and close the connection.

        After it, a new :meth:`connect` starts a fresh session (EHLO again).
        """
        res = await self.docmd("quit")
        # A new EHLO is required after reconnecting with connect().
        self._reset_session()
        self.close()
        return res

    def _reset_session(self) -> None:
        self.ehlo_resp = self.helo_resp = None
        self.esmtp_features = {}
        self.does_esmtp = False
        self._last_ehlo_response = None
        self._starttls_reply = None


#: AsyncSMTP's own ``_get_socket``, as defined (see :meth:`AsyncSMTP.connect`).
_OWN_GET_SOCKET: Final = AsyncSMTP._get_socket


class AsyncSMTP_SSL(AsyncSMTP):
    """A connection that speaks TLS from the start (implicit TLS, port 465).

    :param host: the server; ``"host:port"`` is accepted.
    :param port: the server's port (465 by default).
    :param local_hostname: the name sent with EHLO.
    :param timeout: seconds for connecting (TLS handshake included) and for
        each command.
    :param source_address: ``(host, port)`` to bind to before connecting.
    :param context: the :class:`ssl.SSLContext`; by default one that verifies
        the server (the sync :class:`anysmtp.SMTP_SSL` uses smtplib's, which
        does not).
    :param keyfile: deprecated (as in smtplib): a client key file.
    :param certfile: deprecated (as in smtplib): a client certificate file.
    :raises ValueError: ``context`` together with ``keyfile`` or ``certfile``.
    """

    default_port: ClassVar[int] = SUBMISSIONS_PORT

    #: smtplib's: the deprecated ``keyfile`` and ``certfile`` as given.
    keyfile: str | None
    certfile: str | None
    #: The context given; the sync client makes smtplib's in its constructor.
    context: ssl.SSLContext | None

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        local_hostname: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        source_address: tuple[str, int] | None = None,
        context: ssl.SSLContext | None = None,
        keyfile: str | None = None,
        certfile: str | None = None,
        hostname: str | None = None,
        socket_path: str | bytes | os.PathLike[str] | None = None,
        sock: socket.socket | None = None,
        validate_certs: bool = True,
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        cert_bundle: str | os.PathLike[str] | None = None,
        server_hostname: str | None = None,
        username: str | None = None,
        password: str | None = None,
        oauth_token: str | TokenProvider | None = None,
        pipelining: bool = True,
        chunking: bool = True,
    ) -> None:
        check_legacy_arguments(context, keyfile, certfile)
        warn_legacy_arguments(keyfile, certfile, stacklevel=2)
        super().__init__(
            host,
            port,
            local_hostname,
            timeout,
            source_address,
            hostname=hostname,
            socket_path=socket_path,
            sock=sock,
            use_tls=True,
            start_tls=False,
            validate_certs=validate_certs,
            client_cert=client_cert,
            client_key=client_key,
            cert_bundle=cert_bundle,
            tls_context=context,
            server_hostname=server_hostname,
            username=username,
            password=password,
            oauth_token=oauth_token,
            pipelining=pipelining,
            chunking=chunking,
        )
        self.keyfile = keyfile
        self.certfile = certfile
        self.context = context

    def _connect_tls_context(self) -> ssl.SSLContext:
        if self.context is None and self._stdlib_tls_defaults:
            self.context = smtplib_default_context(
                certfile=self.certfile, keyfile=self.keyfile
            )
        if self.context is not None:
            return self.context
        return self._tls_options.context()

    async def _get_socket(
        self, host: str, port: int, timeout: float | None
    ) -> socket.socket:
        if self.debuglevel > 0:
            self._print_debug("connect:", (host, port))
        return await super()._get_socket(host, port, timeout)


class AsyncLMTP(AsyncSMTP):
    """A connection to an LMTP server (RFC 2033), over TCP or a Unix socket.

    It greets with LHLO and, unlike smtplib's LMTP, reads one reply to the end of
    the data for every accepted recipient: ``sendmail`` reports the recipients
    whose delivery failed in its result, as refused ones.  The envelope is
    pipelined when the server offers PIPELINING (RFC 2033 requires it of LMTP
    servers), and the message goes with BDAT when it offers CHUNKING:
    ``BDAT LAST`` is answered once for every accepted recipient too.

    :param host: the server, or the absolute path of a Unix socket (``"/..."``).
    :param port: the server's port (2003 by default).
    :param local_hostname: the name sent with LHLO.
    :param source_address: ``(host, port)`` to bind to before connecting.
    :param timeout: seconds allowed for connecting and for each command.
    :param hostname: aiosmtplib's name for ``host``.
    :param socket_path: connect to this Unix domain socket.
    :param sock: use this already-connected socket.
    :param start_tls: ``False`` (the default: LMTP is local delivery, RFC 2033)
        never upgrades on its own; ``None`` upgrades when the server offers
        STARTTLS; ``True`` requires it.
    :param pipelining: send MAIL, RCPT and DATA in one write when the server
        offers PIPELINING and no smtplib hook is overridden.
    :param chunking: send messages with BDAT instead of DATA when the server
        offers CHUNKING and no smtplib hook is overridden; ``False`` always
        uses DATA.
    """

    default_port: ClassVar[int] = LMTP_PORT
    ehlo_msg: ClassVar[str] = "lhlo"
    #: One chunk at a time: RFC 2033 does not say how many replies a pipelined
    #: ``BDAT LAST`` gets after a refused chunk, so it only follows accepted ones.
    _bdat_window: ClassVar[int] = 1

    #: ``(recipient, reply)`` for each accepted recipient of the last message,
    #: in order, kept as each reply is read.
    lmtp_data_replies: list[tuple[str, SMTPResponse]]

    def __init__(
        self,
        host: str = "",
        port: int = LMTP_PORT,
        local_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        hostname: str | None = None,
        socket_path: str | bytes | os.PathLike[str] | None = None,
        sock: socket.socket | None = None,
        start_tls: bool | None = False,
        pipelining: bool = True,
        chunking: bool = True,
    ) -> None:
        if host.startswith("/") and socket_path is None:
            host, socket_path = "", host
        super().__init__(
            host,
            port,
            local_hostname,
            timeout,
            source_address,
            hostname=hostname,
            socket_path=socket_path,
            sock=sock,
            start_tls=start_tls,
            pipelining=pipelining,
            chunking=chunking,
        )
        self.lmtp_data_replies: list[tuple[str, SMTPResponse]] = []

    async def connect(
        self,
        host: str | None = None,
        port: int = 0,
        source_address: tuple[str, int] | None = None,
        *,
        hostname: str | None = None,
        socket_path: str | bytes | os.PathLike[str] | None = None,
        sock: socket.socket | None = None,
        timeout: float | _Unset | None = UNSET,
        use_tls: bool | None = None,
        start_tls: bool | _Unset | None = UNSET,
    ) -> SMTPResponse:
        """Connect to the LMTP server, over TCP or a Unix socket, and read its
        greeting.

        :param host: the server, or the absolute path of a Unix socket.
        :param port: the server's port.
        :param source_address: ``(host, port)`` to bind to before connecting.
        :param hostname: aiosmtplib's name for ``host``.
        :param socket_path: connect to this Unix domain socket.
        :param sock: use this already-connected socket.
        :param timeout: replaces the client's ``timeout`` from now on.
        :param use_tls: replaces the client's ``use_tls`` from now on.
        :param start_tls: replaces the client's ``start_tls`` from now on.
        :returns: the greeting.
        """
        if host is not None and host.startswith("/"):
            if socket_path is not None:
                raise ValueError("host, socket_path and sock are mutually exclusive")
            host, socket_path = None, host
            try:
                return await super().connect(
                    socket_path=socket_path,
                    sock=sock,
                    timeout=timeout,
                    use_tls=use_tls,
                    start_tls=start_tls,
                )
            except OSError:
                if self.debuglevel > 0:
                    self._print_debug("connect fail:", socket_path)
                raise
        return await super().connect(
            host,
            port,
            source_address,
            hostname=hostname,
            socket_path=socket_path,
            sock=sock,
            timeout=timeout,
            use_tls=use_tls,
            start_tls=start_tls,
        )

    @_alone
    async def data(self, msg: MessageSource) -> SMTPResponse:
        """Send DATA and the message, then read one reply per accepted recipient.

        The replies are kept in ``lmtp_data_replies`` as ``(recipient, reply)``
        pairs.

        :param msg: the message.
        :returns: the first success when any recipient got the message, else the
            first failure.
        :raises SMTPDataError: the server did not answer DATA with 354.
        """
        self.lmtp_data_replies = []
        return await super().data(msg)

    def _new_transaction(self) -> None:
        super()._new_transaction()
        self.lmtp_data_replies = []

    async def _final_reply(self, first: SMTPResponse) -> SMTPResponse:
        """Read the replies of the accepted recipients after the first (RFC
        2033), keep them in ``lmtp_data_replies`` as they come, and report the
        failed deliveries as refused recipients.  After a 421 the server is
        closing: the recipients it did not answer are reported with that reply.

        :returns: the first success when any recipient got the message, else the
            first failure.
        """
        recipients = self._accepted_recipients
        replies = self.lmtp_data_replies = []
        refusals = self._data_refusals = {}
        reply = first
        for index, recipient in enumerate(recipients):
            if index:
                reply = SMTPResponse(*await self.getreply())
            # Kept as read: if the connection fails half-way, the recipients
            # that already have the message are known.
            replies.append((recipient, reply))
            if reply.code != 250:
                refusals[recipient] = (reply.code, reply.message)
            if reply.code == 421:
                # The server is closing: no reply comes for the others.
                for unanswered in recipients[index + 1 :]:
                    refusals[unanswered] = (reply.code, reply.message)
                self.close()
                break
        return next((each for _, each in replies if each.code == 250), first)


#: The classes whose methods are the library's own (not overrides).
_LIBRARY_CLASSES: Final = (AsyncSMTP, AsyncSMTP_SSL, AsyncLMTP)
