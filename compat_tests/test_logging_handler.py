"""logging's SMTPHandler on anysmtp: the drop-in claim for code we do not own.

:class:`logging.handlers.SMTPHandler` does ``import smtplib`` inside ``emit()``,
so a user puts anysmtp under it by making the name ``smtplib`` resolve to anysmtp
(``sys.modules["smtplib"] = anysmtp``): an import change, not a code change.
This module proves that the handler then works as it does on the standard
library's smtplib, on the running Python:

* every scenario runs twice, with the stdlib's smtplib (the reference) and with
  anysmtp swapped in, against real servers (aiosmtpd; a scripted server where the
  whole wire must be checked), and asserts what the server received byte for
  byte: a plain record; ``credentials=`` with ``secure=()`` (EHLO, STARTTLS,
  EHLO, AUTH), with no ``secure`` and with a key and certificate file; the
  failures that reach ``handleError`` (the same exception, the same report on
  stderr, silence with ``logging.raiseExceptions`` off); ``timeout=``;
* CPython's own test of the handler, ``test.test_logging.SMTPHandlerTest``, passes
  with anysmtp in place of smtplib, and fails when anysmtp is broken on purpose
  (so passing means something).

Where anysmtp differs from smtplib, the test names the row of
docs/compatibility.md that documents the difference.
"""

from __future__ import annotations

import datetime
import email.utils
import errno
import gc
import importlib
import logging
import logging.handlers
import os
import smtplib as stdlib_smtplib
import socket
import ssl
import sys
import time
import unittest
import warnings
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import pytest
import trustme
from aiosmtpd.smtp import AuthResult, LoginPassword

import anysmtp
from tests.servers import (
    AiosmtpdServer,
    RecordingHandler,
    ScriptedConnection,
    ScriptedServer,
    drain,
    exchange,
)

FROM: Final = "logger@example.com"
TO: Final = ["ops@example.com", "dev@example.com"]
SUBJECT: Final = "Alert \u2713"
USER: Final = "logger"
PASSWORD: Final = "s3cret-pass"
#: What ``email.utils.localtime()`` returns while a test runs: the only header
#: SMTPHandler sets that the test would not otherwise control.
DATE: Final = datetime.datetime(
    2024, 5, 17, 12, 34, 56, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
)
FORMAT: Final = "%(levelname)s:%(name)s:%(message)s"

#: The message of :func:`log_record`, as the server stores it: headers in
#: SMTPHandler's order (``To`` joined with a bare comma), the subject's non-ASCII
#: word RFC 2047-encoded, the non-ASCII body in 8 bit and the line that starts
#: with a dot un-stuffed again.
MESSAGE: Final = (
    b"From: logger@example.com\r\n"
    b"To: ops@example.com,dev@example.com\r\n"
    b"Subject: Alert =?utf-8?b?4pyT?=\r\n"
    b"Date: Fri, 17 May 2024 12:34:56 +0200\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"MIME-Version: 1.0\r\n"
    b"\r\n"
    b"ERROR:app.db:disk /var full\r\n"
    b".hidden line after a dot\r\n"
    b"non-ASCII: \xe2\x9c\x93\r\n"
)

MODULES: Final = [
    pytest.param(stdlib_smtplib, id="smtplib"),
    pytest.param(anysmtp, id="anysmtp"),
]


@pytest.fixture(params=MODULES)
def smtplib_module(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> ModuleType:
    """The module SMTPHandler's ``import smtplib`` gets for this test."""
    module: ModuleType = request.param
    monkeypatch.setitem(sys.modules, "smtplib", module)
    return module


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """SMTPHandler's Date header is ``email.utils.localtime()``, looked up at
    each ``emit()``: fixing it makes the whole message deterministic."""

    def localtime(
        dt: datetime.datetime | None = None, isdst: int = -1
    ) -> datetime.datetime:
        return DATE

    monkeypatch.setattr(email.utils, "localtime", localtime)


@pytest.fixture(scope="module")
def ehlo_name() -> str:
    """The name smtplib says EHLO with when given none (SMTPHandler gives none)."""
    with closing(stdlib_smtplib.SMTP()) as client:
        return client.local_hostname


@dataclass(frozen=True)
class Certificates:
    """A private CA's server certificate, and a client key and certificate in
    files (what SMTPHandler's ``secure=(keyfile, certfile)`` names)."""

    ca: trustme.CA
    server: trustme.LeafCert
    keyfile: Path
    certfile: Path

    def server_context(self) -> ssl.SSLContext:
        """A server context that asks for a client certificate from the CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        # Optional, not required: a client without a certificate still gets
        # through, and the server's record says whether it sent one.
        context.verify_mode = ssl.CERT_OPTIONAL
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    ca = trustme.CA()
    client = ca.issue_cert("client@example.com")
    directory = tmp_path_factory.mktemp("logging-certs")
    keyfile = directory / "client.key"
    certfile = directory / "client.pem"
    client.private_key_pem.write_to_path(str(keyfile))
    client.cert_chain_pems[0].write_to_path(str(certfile))
    return Certificates(
        ca=ca,
        server=ca.issue_cert("127.0.0.1", "localhost"),
        keyfile=keyfile,
        certfile=certfile,
    )


# The server side ------------------------------------------------------------------

#: ``(command, argument, over TLS)``, in the order the server saw them.
Event = tuple[str, str, bool]


@dataclass
class SessionRecorder(RecordingHandler):
    """A :class:`RecordingHandler` that also notes each command of the session."""

    events: list[Event] = field(default_factory=list)

    async def handle_EHLO(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # With this hook aiosmtpd leaves remembering the name to the handler.
        session.host_name = hostname
        self.events.append(("EHLO", hostname, session.ssl is not None))
        return responses

    def handle_STARTTLS(self, server: Any, session: Any, envelope: Any) -> bool:
        """Called after the handshake: notes the client certificate's e-mail
        address ("" when the client sent none)."""
        peercert = session.ssl.get("peercert") or {}
        names = [value for kind, value in peercert.get("subjectAltName", ())]
        self.events.append(("STARTTLS", ",".join(names), True))
        return True

    async def handle_MAIL(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        address: str,
        mail_options: list[str],
    ) -> str:
        self.events.append(("MAIL", address, session.ssl is not None))
        return await super().handle_MAIL(
            server, session, envelope, address, mail_options
        )

    async def handle_RCPT(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.events.append(("RCPT", address, session.ssl is not None))
        return await super().handle_RCPT(
            server, session, envelope, address, rcpt_options
        )

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.events.append(("DATA", "", session.ssl is not None))
        return await super().handle_DATA(server, session, envelope)

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.events.append(("RSET", "", session.ssl is not None))
        return "250 OK"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.events.append(("QUIT", "", session.ssl is not None))
        return "221 Bye"


@dataclass
class Authenticator:
    """aiosmtpd's ``authenticator=``: accepts :data:`USER`/:data:`PASSWORD` and
    notes each attempt in the recorder's events."""

    recorder: SessionRecorder

    def __call__(
        self,
        server: Any,
        session: Any,
        envelope: Any,
        mechanism: str,
        auth_data: object,
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.recorder.events.append(
            ("AUTH", f"{mechanism} {login} {password}", session.ssl is not None)
        )
        # handled=False: aiosmtpd itself answers a failure with 535.
        return AuthResult(success=(login, password) == (USER, PASSWORD), handled=False)


def delivered(*, tls: bool = False) -> list[Event]:
    """The events of delivering :data:`MESSAGE` to :data:`TO`, then QUIT."""
    return [
        ("MAIL", FROM, tls),
        *[("RCPT", address, tls) for address in TO],
        ("DATA", "", tls),
        ("QUIT", "", tls),
    ]


def assert_message_received(recorder: SessionRecorder) -> None:
    assert [
        (m.mail_from, m.rcpt_tos, m.mail_options, m.rcpt_options, m.data)
        for m in recorder.messages
    ] == [(FROM, TO, [f"SIZE={len(MESSAGE)}"], [], MESSAGE)]


# The client side ------------------------------------------------------------------


@dataclass(frozen=True)
class Caught:
    """What reached ``handleError``: the exception's type and ``args`` (not the
    exception: its traceback would keep emit's frame, and the connection in it,
    alive)."""

    type: type[BaseException]
    args: tuple[Any, ...]


class CapturingSMTPHandler(logging.handlers.SMTPHandler):
    """SMTPHandler noting what reaches ``handleError``, then doing what the
    standard handler does with it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.caught: list[Caught] = []
        self.setFormatter(logging.Formatter(FORMAT))

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        assert exc is not None
        self.caught.append(Caught(type(exc), exc.args))
        del exc
        super().handleError(record)


def log_record() -> logging.LogRecord:
    """An ERROR record with an argument, a line starting with a dot, non-ASCII."""
    return logging.makeLogRecord(
        {
            "name": "app.db",
            "levelname": "ERROR",
            "levelno": logging.ERROR,
            "msg": "disk %s full\n.hidden line after a dot\nnon-ASCII: \u2713",
            "args": ("/var",),
        }
    )


def emit(handler: logging.Handler, port: int) -> int:
    """Handle :func:`log_record`, then collect garbage.

    SMTPHandler does not close its connection when sending fails, whatever the
    module, so a failed ``emit()`` leaves an unclosed socket behind; collecting
    garbage here makes its :exc:`ResourceWarning` come now, not in a later test.
    Other warnings go on to the caller's filters unchanged.

    :returns: how many sockets connected to ``port`` were left unclosed.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        handler.handle(log_record())
        gc.collect()
    unclosed = []
    for warning in caught:
        if issubclass(warning.category, ResourceWarning):
            unclosed.append(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    assert all(message.startswith("unclosed <socket.") for message in unclosed), (
        unclosed
    )
    return sum(f"raddr=('127.0.0.1', {port})" in message for message in unclosed)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wire(ehlo_name: str) -> bytes:
    """What the client sends to deliver :data:`MESSAGE` to a server that offers
    no extension."""
    return (
        f"ehlo {ehlo_name}\r\n".encode()
        + b"mail FROM:<logger@example.com>\r\n"
        + b"rcpt TO:<ops@example.com>\r\n"
        + b"rcpt TO:<dev@example.com>\r\n"
        + b"data\r\n"
        + MESSAGE.replace(b"\r\n.hidden", b"\r\n..hidden")
        + b".\r\n"
        + b"quit\r\n"
    )


def accepts_after(delay: float) -> Callable[[ScriptedConnection], None]:
    """A scripted server that greets after ``delay`` seconds, then accepts one
    message (no extension offered)."""

    def script(conn: ScriptedConnection) -> None:
        time.sleep(delay)
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail ", b"250 ok\r\n"),
            (b"rcpt ", b"250 ok\r\n"),
            (b"rcpt ", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        conn.read_data()
        conn.send(b"250 queued\r\n")
        exchange(conn, (b"quit", b"221 bye\r\n"))
        drain(conn)

    return script


# A plain record -------------------------------------------------------------------


def test_plain_record(smtplib_module: ModuleType, ehlo_name: str) -> None:
    recorder = SessionRecorder()
    with AiosmtpdServer(recorder) as server:
        handler = CapturingSMTPHandler((server.host, server.port), FROM, TO, SUBJECT)
        unclosed = emit(handler, server.port)
    assert handler.caught == []
    assert unclosed == 0
    assert recorder.events == [("EHLO", ehlo_name, False), *delivered()]
    assert_message_received(recorder)


def test_plain_record_on_the_wire(smtplib_module: ModuleType, ehlo_name: str) -> None:
    """Every byte the client sends, with a server that makes it wait for the
    greeting (well within ``timeout``)."""
    with ScriptedServer(accepts_after(0.2)) as server:
        handler = CapturingSMTPHandler(
            (server.host, server.port), FROM, TO, SUBJECT, timeout=10.0
        )
        unclosed = emit(handler, server.port)
    assert handler.caught == []
    assert unclosed == 0
    assert server.transcripts == [wire(ehlo_name)]


def test_default_port_is_smtplibs(
    smtplib_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mailhost without a port goes to ``smtplib.SMTP_PORT``, read from the
    module SMTPHandler imported: anysmtp's is smtplib's 25."""
    assert smtplib_module.SMTP_PORT == 25
    recorder = SessionRecorder()
    with AiosmtpdServer(recorder) as server:
        # Point "port 25" at the test server, through the module in use.
        monkeypatch.setattr(smtplib_module, "SMTP_PORT", server.port)
        handler = CapturingSMTPHandler(server.host, FROM, TO, SUBJECT)
        unclosed = emit(handler, server.port)
    assert handler.caught == []
    assert unclosed == 0
    assert_message_received(recorder)


# credentials= and secure= ---------------------------------------------------------


def test_credentials_with_secure_starttls_then_auth(
    smtplib_module: ModuleType, certs: Certificates, ehlo_name: str
) -> None:
    """``secure=()``: EHLO, STARTTLS (smtplib's default context: the private
    CA's certificate is not verified), EHLO again, AUTH, then the message, all
    over TLS.  The server offers AUTH only under TLS (aiosmtpd's default)."""
    recorder = SessionRecorder()
    with AiosmtpdServer(
        recorder,
        tls_context=certs.server_context(),
        authenticator=Authenticator(recorder),
    ) as server:
        handler = CapturingSMTPHandler(
            (server.host, server.port),
            FROM,
            TO,
            SUBJECT,
            credentials=(USER, PASSWORD),
            secure=(),
        )
        unclosed = emit(handler, server.port)
    assert handler.caught == []
    assert unclosed == 0
    assert recorder.events == [
        ("EHLO", ehlo_name, False),
        ("STARTTLS", "", True),
        ("EHLO", ehlo_name, True),
        ("AUTH", f"PLAIN {USER} {PASSWORD}", True),
        *delivered(tls=True),
    ]
    assert_message_received(recorder)


def test_credentials_without_secure_log_in_without_tls(
    smtplib_module: ModuleType, certs: Certificates, ehlo_name: str
) -> None:
    """No ``secure``: AUTH in clear, even though the server offers STARTTLS (the
    sync facade never upgrades on its own)."""
    recorder = SessionRecorder()
    with AiosmtpdServer(
        recorder,
        tls_context=certs.server_context(),
        authenticator=Authenticator(recorder),
        auth_require_tls=False,
    ) as server:
        handler = CapturingSMTPHandler(
            (server.host, server.port),
            FROM,
            TO,
            SUBJECT,
            credentials=(USER, PASSWORD),
        )
        unclosed = emit(handler, server.port)
    assert handler.caught == []
    assert unclosed == 0
    assert recorder.events == [
        ("EHLO", ehlo_name, False),
        ("AUTH", f"PLAIN {USER} {PASSWORD}", False),
        *delivered(),
    ]
    assert_message_received(recorder)


@pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="Python 3.12 removed starttls()'s keyfile"
)
def test_secure_key_and_certificate_files(
    smtplib_module: ModuleType, certs: Certificates, ehlo_name: str
) -> None:
    """``secure=(keyfile, certfile)``: SMTPHandler passes them to
    ``starttls(keyfile, certfile)``, deprecated since Python 3.6: it warns, from
    the line of SMTPHandler.emit() that called it (``stacklevel=2``), and
    presents the client certificate."""
    recorder = SessionRecorder()
    with AiosmtpdServer(
        recorder,
        tls_context=certs.server_context(),
        authenticator=Authenticator(recorder),
    ) as server:
        handler = CapturingSMTPHandler(
            (server.host, server.port),
            FROM,
            TO,
            SUBJECT,
            credentials=(USER, PASSWORD),
            secure=(str(certs.keyfile), str(certs.certfile)),
        )
        # Recorded, not raised: as an error (pytest's filter) the warning would
        # make emit() fail, which is not what it does in a user's program.
        with pytest.warns(DeprecationWarning, match="keyfile and certfile") as record:
            unclosed = emit(handler, server.port)
    assert handler.caught == []
    assert unclosed == 0
    assert [(str(w.message), w.filename) for w in record] == [
        (
            "keyfile and certfile are deprecated, use a custom context instead",
            logging.handlers.__file__,
        )
    ]
    assert recorder.events == [
        ("EHLO", ehlo_name, False),
        ("STARTTLS", "client@example.com", True),
        ("EHLO", ehlo_name, True),
        ("AUTH", f"PLAIN {USER} {PASSWORD}", True),
        *delivered(tls=True),
    ]
    assert_message_received(recorder)


# Failures reach handleError -------------------------------------------------------

#: The handler's ``timeout`` when a failure leaves the connection open: none, so
#: that these tests do not depend on how anysmtp lets go of a connection whose
#: timeout is still running, which
#: :func:`test_abandoned_connection_is_not_kept_by_its_timeout` checks on its own
#: (when anysmtp kept it, its ResourceWarning came in some later test).
ABANDONED: Final = None
#: A timeout the tests wait for.
TIMEOUT: Final = 0.5
#: What a server refusing :data:`FROM` makes reach handleError.
SENDER_REFUSED: Final = Caught(
    stdlib_smtplib.SMTPSenderRefused, (553, b"5.7.1 sender refused", FROM)
)


#: Starts a server on the stack; returns its port, and what tells (once the
#: server has stopped) what it received.
Start = Callable[[ExitStack], tuple[int, Callable[[], object]]]


@dataclass(frozen=True)
class Failure:
    """A server that makes ``emit()`` fail, and what must reach handleError."""

    start: Start
    caught: Caught
    #: What the server received (aiosmtpd's events, a scripted server's
    #: transcripts), given the EHLO name.
    received: Callable[[str], object]
    #: Whether SMTPHandler leaves the connection for the garbage collector.
    leaves_connection_open: bool

    @property
    def timeout(self) -> float | None:
        """The handler's timeout: SMTPHandler's default unless the connection
        is left open."""
        return ABANDONED if self.leaves_connection_open else 5.0


def aiosmtpd_refusing(**options: Any) -> Start:
    def start(stack: ExitStack) -> tuple[int, Callable[[], object]]:
        recorder = SessionRecorder(**options)
        server = stack.enter_context(AiosmtpdServer(recorder))
        return server.port, lambda: recorder.events

    return start


def scripted(script: Callable[[ScriptedConnection], None]) -> Start:
    def start(stack: ExitStack) -> tuple[int, Callable[[], object]]:
        server = stack.enter_context(ScriptedServer(script))
        return server.port, lambda: server.transcripts

    return start


def nothing_listens(stack: ExitStack) -> tuple[int, Callable[[], object]]:
    return closed_port(), lambda: None


def refuses_greeting(conn: ScriptedConnection) -> None:
    conn.send(b"554 5.3.2 no service here\r\n")
    drain(conn)


def hangs_up_at_mail(conn: ScriptedConnection) -> None:
    conn.greet_and_ehlo()
    conn.expect(b"mail ")
    conn.disconnect()


FAILURES: Final = [
    pytest.param(
        Failure(
            nothing_listens,
            Caught(
                ConnectionRefusedError,
                (errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED)),
            ),
            received=lambda name: None,
            leaves_connection_open=False,
        ),
        id="connection-refused",
    ),
    pytest.param(
        Failure(
            scripted(refuses_greeting),
            Caught(stdlib_smtplib.SMTPConnectError, (554, b"5.3.2 no service here")),
            received=lambda name: [b""],
            leaves_connection_open=False,
        ),
        id="greeting-554",
    ),
    pytest.param(
        Failure(
            aiosmtpd_refusing(refused_senders={FROM}),
            SENDER_REFUSED,
            received=lambda name: [
                ("EHLO", name, False),
                ("MAIL", FROM, False),
                ("RSET", "", False),
            ],
            leaves_connection_open=True,
        ),
        id="sender-refused",
    ),
    pytest.param(
        Failure(
            aiosmtpd_refusing(refused_recipients=set(TO)),
            Caught(
                stdlib_smtplib.SMTPRecipientsRefused,
                (dict.fromkeys(TO, (550, b"5.1.1 no such user")),),
            ),
            received=lambda name: [
                ("EHLO", name, False),
                ("MAIL", FROM, False),
                *[("RCPT", address, False) for address in TO],
                ("RSET", "", False),
            ],
            leaves_connection_open=True,
        ),
        id="recipients-refused",
    ),
    pytest.param(
        Failure(
            aiosmtpd_refusing(data_reply="554 5.6.0 message refused"),
            Caught(stdlib_smtplib.SMTPDataError, (554, b"5.6.0 message refused")),
            received=lambda name: [
                ("EHLO", name, False),
                *delivered()[:-1],
                ("RSET", "", False),
            ],
            leaves_connection_open=True,
        ),
        id="data-refused",
    ),
    pytest.param(
        Failure(
            scripted(hangs_up_at_mail),
            Caught(
                stdlib_smtplib.SMTPServerDisconnected,
                ("Connection unexpectedly closed",),
            ),
            received=lambda name: [
                f"ehlo {name}\r\nmail FROM:<logger@example.com>\r\n".encode()
            ],
            leaves_connection_open=False,
        ),
        id="hang-up",
    ),
]


@pytest.mark.parametrize("failure", FAILURES)
def test_failure_reaches_handle_error(
    smtplib_module: ModuleType, failure: Failure, ehlo_name: str
) -> None:
    """The very exception smtplib raises (class and ``args``) reaches
    handleError, emit() itself never raises, and the server received the same
    commands."""
    with ExitStack() as stack:
        port, received = failure.start(stack)
        handler = CapturingSMTPHandler(
            ("127.0.0.1", port), FROM, TO, SUBJECT, timeout=failure.timeout
        )
        unclosed = emit(handler, port)
    assert handler.caught == [failure.caught]
    assert received() == failure.received(ehlo_name)
    assert unclosed == (1 if failure.leaves_connection_open else 0)


def test_bad_credentials(smtplib_module: ModuleType, ehlo_name: str) -> None:
    """A wrong password: the same SMTPAuthenticationError reaches handleError.
    smtplib then tries LOGIN with the same password, anysmtp stops after the
    first 535 (docs/compatibility.md: "A 535 (bad credentials) stops at
    once")."""
    recorder = SessionRecorder()
    with AiosmtpdServer(
        recorder, authenticator=Authenticator(recorder), auth_require_tls=False
    ) as server:
        handler = CapturingSMTPHandler(
            (server.host, server.port),
            FROM,
            TO,
            SUBJECT,
            credentials=(USER, "wrong"),
            timeout=ABANDONED,
        )
        unclosed = emit(handler, server.port)
    assert handler.caught == [
        Caught(
            stdlib_smtplib.SMTPAuthenticationError,
            (535, b"5.7.8 Authentication credentials invalid"),
        )
    ]
    assert unclosed == 1
    mechanisms = {"smtplib": ["PLAIN", "LOGIN"], "anysmtp": ["PLAIN"]}
    assert recorder.events == [
        ("EHLO", ehlo_name, False),
        *[
            ("AUTH", f"{mechanism} {USER} wrong", False)
            for mechanism in mechanisms[smtplib_module.__name__]
        ],
    ]
    assert recorder.messages == []


def sender_refused_report(capsys: pytest.CaptureFixture[str]) -> str:
    """Emit to a server refusing the sender; logging's own handleError deals
    with the failure.

    :returns: what went to stderr.
    """
    with AiosmtpdServer(SessionRecorder(refused_senders={FROM})) as server:
        handler = CapturingSMTPHandler(
            (server.host, server.port), FROM, TO, SUBJECT, timeout=ABANDONED
        )
        capsys.readouterr()
        unclosed = emit(handler, server.port)
    assert handler.caught == [SENDER_REFUSED]
    assert unclosed == 1
    return capsys.readouterr().err


def test_handle_error_reports_on_stderr(
    smtplib_module: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """``logging.raiseExceptions`` (the default): the traceback goes to stderr,
    under smtplib's own exception name, and emit() returns normally."""
    assert logging.raiseExceptions
    report, _, call_stack = sender_refused_report(capsys).partition("Call stack:\n")
    assert report.startswith("--- Logging error ---\nTraceback (most recent call")
    assert report.endswith(
        "\nsmtplib.SMTPSenderRefused: "
        "(553, b'5.7.1 sender refused', 'logger@example.com')\n"
    )
    assert call_stack.endswith(f"Message: {log_record().msg!r}\nArguments: ('/var',)\n")


def test_handle_error_is_silent_without_raise_exceptions(
    smtplib_module: ModuleType,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)
    assert sender_refused_report(capsys) == ""


def test_failed_emit_drops_its_connection_when_it_returns(
    smtplib_module: ModuleType,
) -> None:
    """SMTPHandler leaves the connection of a failed send open; with smtplib
    it is closed (with a ResourceWarning) as soon as emit() returns."""
    with (
        AiosmtpdServer(SessionRecorder(refused_senders={FROM})) as server,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", ResourceWarning)
        handler = CapturingSMTPHandler(
            (server.host, server.port), FROM, TO, SUBJECT, timeout=ABANDONED
        )
        # No collection may run by chance while emit() returns.
        gc.disable()
        try:
            handler.handle(log_record())
            unclosed_at_return = len(caught)
        finally:
            gc.enable()
        gc.collect()
    assert len(caught) == 1
    assert unclosed_at_return == 1


def answers_mail_late(conn: ScriptedConnection) -> None:
    conn.greet_and_ehlo()
    conn.expect(b"mail ")
    # The client has sent MAIL and found no reply: it waits (with a deadline).
    time.sleep(0.1)
    conn.send(b"553 5.7.1 sender refused\r\n")
    exchange(conn, (b"rset", b"250 ok\r\n"))
    drain(conn)


def greets_and_quits(conn: ScriptedConnection) -> None:
    conn.send(b"220 ready\r\n")
    exchange(conn, (b"quit", b"221 bye\r\n"))
    drain(conn)


def test_abandoned_connection_is_not_kept_by_its_timeout(
    smtplib_module: ModuleType,
) -> None:
    """SMTPHandler's usual case: a timeout, and a reply the client had to wait
    for (anysmtp sets a timer in the thread's event loop for that wait).  The
    connection a failed emit() leaves open is closed by the garbage collection
    that follows, as with smtplib: the timer must not keep it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with ScriptedServer(answers_mail_late) as server:
            handler = CapturingSMTPHandler(
                (server.host, server.port), FROM, TO, SUBJECT, timeout=TIMEOUT
            )
            handler.handle(log_record())
            gc.collect()
            unclosed_after_collection = len(caught)
            if not unclosed_after_collection:
                # Kept by its timer in the thread's event loop: past the
                # deadline, an anysmtp call that runs the loop lets it go (for
                # the server, which waits for the client to leave, and for the
                # tests that follow, which would get the ResourceWarning).
                time.sleep(TIMEOUT + 0.1)
                with ScriptedServer(greets_and_quits) as other:
                    anysmtp.SMTP(other.host, other.port).quit()
                gc.collect()
    assert handler.caught == [SENDER_REFUSED]
    assert len(caught) == 1
    assert unclosed_after_collection == 1


# timeout= -------------------------------------------------------------------------


def stalls_before_greeting(conn: ScriptedConnection) -> None:
    conn.stall()


def stalls_at_mail(conn: ScriptedConnection) -> None:
    conn.greet_and_ehlo()
    conn.stall()


#: What reaches handleError when the server stops answering: smtplib's
#: SMTPServerDisconnected, anysmtp's timeout subclasses of it
#: (docs/compatibility.md: "A read timeout raises SMTPServerDisconnected").
STALLS: Final = [
    pytest.param(
        stalls_before_greeting,
        {
            "smtplib": Caught(
                stdlib_smtplib.SMTPServerDisconnected,
                ("Connection unexpectedly closed: timed out",),
            ),
            "anysmtp": Caught(
                anysmtp.SMTPGreetingTimeoutError,
                (
                    "Timed out waiting for the server's greeting after "
                    f"{TIMEOUT} seconds",
                ),
            ),
        },
        b"",
        id="greeting",
    ),
    pytest.param(
        stalls_at_mail,
        {
            "smtplib": Caught(
                stdlib_smtplib.SMTPServerDisconnected,
                ("Connection unexpectedly closed: timed out",),
            ),
            "anysmtp": Caught(
                anysmtp.SMTPReadTimeoutError,
                (f"Timed out waiting for the server's reply after {TIMEOUT} seconds",),
            ),
        },
        b"ehlo {name}\r\nmail FROM:<logger@example.com>\r\n",
        id="reply-to-mail",
    ),
]


@pytest.mark.parametrize(("script", "expected", "transcript"), STALLS)
def test_timeout(
    smtplib_module: ModuleType,
    ehlo_name: str,
    script: Callable[[ScriptedConnection], None],
    expected: dict[str, Caught],
    transcript: bytes,
) -> None:
    """``timeout=`` reaches the client: a server that stops answering makes
    emit() fail (instead of hanging) and the connection is closed."""
    with ScriptedServer(script) as server:
        handler = CapturingSMTPHandler(
            (server.host, server.port), FROM, TO, SUBJECT, timeout=TIMEOUT
        )
        unclosed = emit(handler, server.port)
    assert handler.caught == [expected[smtplib_module.__name__]]
    assert unclosed == 0
    assert issubclass(handler.caught[0].type, stdlib_smtplib.SMTPServerDisconnected)
    assert server.transcripts == [transcript.replace(b"{name}", ehlo_name.encode())]


# CPython's own test ---------------------------------------------------------------


def run_cpython_test(
    monkeypatch: pytest.MonkeyPatch, timeout: float
) -> unittest.TestResult:
    """Run ``test.test_logging.SMTPHandlerTest`` with anysmtp as ``smtplib``.

    :param timeout: the test case's ``TIMEOUT`` (the handler's timeout, and how
        long it waits for the message): CPython's, ``support.LONG_TIMEOUT``, is
        5 minutes, longer than pytest's 60 s limit: a failure would show as a
        pytest timeout.
    """
    # Imported here, not at collection: it imports the deprecated asyncore and
    # smtpd for its server (with their DeprecationWarning silenced by
    # test.support.warnings_helper.import_deprecated).
    test_logging = importlib.import_module("test.test_logging")
    case = test_logging.SMTPHandlerTest
    monkeypatch.setattr(case, "TIMEOUT", timeout)
    monkeypatch.setitem(sys.modules, "smtplib", anysmtp)
    suite = unittest.TestLoader().loadTestsFromTestCase(case)
    result = unittest.TestResult()
    # The test's setUp refuses a root logger with handlers and its tearDown
    # closes them: pytest's log capture handlers are set aside meanwhile.
    root = logging.getLogger()
    pytest_handlers = root.handlers[:]
    for handler in pytest_handlers:
        root.removeHandler(handler)
    try:
        suite.run(result)
    finally:
        for handler in pytest_handlers:
            root.addHandler(handler)
    return result


def describe(result: unittest.TestResult) -> str:
    return "\n".join(
        f"{test}: {trace}" for test, trace in [*result.errors, *result.failures]
    )


def test_cpython_smtp_handler_test_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_cpython_test(monkeypatch, timeout=10.0)
    assert result.testsRun > 0
    assert result.skipped == []
    assert result.wasSuccessful(), describe(result)


def test_cpython_smtp_handler_test_fails_with_anysmtp_broken(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Proof that the test above runs anysmtp: with ``anysmtp.SMTP.send_message``
    broken, CPython's test fails."""

    def send_message(self: anysmtp.SMTP, *args: Any, **kwargs: Any) -> Any:
        # Closed first: SMTPHandler would leave the connection open.
        self.close()
        raise anysmtp.SMTPDataError(554, b"broken on purpose")

    monkeypatch.setattr(anysmtp.SMTP, "send_message", send_message)
    # Nothing arrives: the test waits its TIMEOUT for the message.
    result = run_cpython_test(monkeypatch, timeout=1.0)
    assert result.testsRun > 0
    assert (len(result.failures), result.errors) == (result.testsRun, [])
    assert "broken on purpose" in capsys.readouterr().err
