"""The fault matrix: the server disconnects or resets the connection at every step
of a session, and the client fails cleanly, every time.

A *session* is a table of :class:`Step` rows: what the client sends at that step,
what a healthy server does, and how far a faulty server gets into the step before
it faults.  For every step of every session, with an orderly disconnect (FIN) and
with a TCP reset (RST), with PIPELINING advertised and not, each client (the async
API on asyncio, uvloop and trio, with explicit calls or through ``connect()``'s
keyword options, and the sync facade ``anysmtp.SMTP``) must:

* raise exactly what smtplib raises at that step (``SMTPServerDisconnected``,
  never a timeout; the ``OSError`` of the ssl module when the TLS handshake
  fails): :func:`test_smtplib_raises_what_the_table_says` runs the standard
  library against the same scripts;
* show the connection closed (``sock is None``, ``is_connected`` false) and keep
  no file descriptor open;
* have sent nothing but a prefix of the session, byte for byte as the server
  recorded it;
* connect again, on the same object, to a healthy server and run the whole
  session successfully; that server must receive exactly the session's bytes.

Nothing may hang: the clients' timeout is small and pytest's is 60 s, and a
timeout exception fails the exact type check.

To add a session (the BDAT steps of CHUNKING, say), write its :class:`Step` rows
and a :class:`Session`, and add it to :data:`SESSIONS`: every test picks it up.
"""

from __future__ import annotations

import base64
import collections
import enum
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

import anyio
import pytest

import anysmtp
from tests.conftest import Certificates
from tests.servers import INVALID_UTF8, ScriptedConnection, ScriptedServer, long_line

Script = Callable[[ScriptedConnection], None]

#: The clients' timeout: far above a loopback round trip, far below pytest's.
TIMEOUT: Final = 5.0
LOCAL: Final = "client.example"
ALICE: Final = "alice@example.com"
RECIPIENTS: Final = ["bob@example.com", "carol@example.com"]
USER: Final = "alice"
PASSWORD: Final = "secret"

#: Larger than the client's 256 KiB chunk, so that it is streamed in pieces; the
#: dot at the start of a line checks the dot-stuffing on the way.
BODY_LINES: Final = [b"Subject: faults\r\n", b"\r\n", b".dot\r\n"] + [
    b"%06d " % n + b"x" * 991 + b"\r\n" for n in range(300)
]
BODY: Final = b"".join(BODY_LINES)
assert len(BODY) > 256 * 1024
#: BODY as DATA transmits it.
BODY_WIRE: Final = BODY.replace(b"\r\n.dot", b"\r\n..dot") + b".\r\n"
#: How many body lines the server reads before a fault "mid-body".
MID_BODY_LINES: Final = 20
MID_BODY: Final = BODY_WIRE[: len(b"".join(BODY_LINES[:MID_BODY_LINES])) + 1]
assert MID_BODY.endswith(b"\r\n")
assert MID_BODY.count(b"\r\n") == MID_BODY_LINES

EHLO_LINE: Final = b"ehlo client.example\r\n"
AUTH_LINE: Final = (
    b"AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()) + b"\r\n"
)
MAIL_LINE: Final = b"mail FROM:<alice@example.com>\r\n"
RCPT_LINES: Final = [b"rcpt TO:<%s>\r\n" % each.encode() for each in RECIPIENTS]


class Fault(enum.Enum):
    """How the server breaks the connection."""

    #: An orderly close: FIN, then the server reads until the client leaves.
    DISCONNECT = "disconnect"
    #: A TCP reset (SO_LINGER 0).
    RESET = "reset"

    def apply(self, conn: ScriptedConnection) -> None:
        if self is Fault.DISCONNECT:
            conn.disconnect()
        else:
            conn.reset()


# The session tables -------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """How the server being scripted behaves when healthy."""

    #: The context for its side of STARTTLS.
    tls: ssl.SSLContext
    #: Whether EHLO announces PIPELINING.
    pipelining: bool = False
    #: Send every reply one byte at a time.
    trickle: bool = False

    def send(self, conn: ScriptedConnection, reply: bytes) -> None:
        if self.trickle:
            conn.trickle(reply)
        else:
            conn.send(reply)


Serve = Callable[[ScriptedConnection, Server], None]
Reach = Callable[[ScriptedConnection], None]


def nothing(conn: ScriptedConnection) -> None:
    """A fault before the server reads anything."""


def expect(line: bytes) -> Reach:
    """Read the step's command: exactly ``line``."""

    def reach(conn: ScriptedConnection) -> None:
        received = conn.read_line()
        if received != line:
            raise AssertionError(f"expected {line!r}, got {received!r}")

    return reach


def answer(line: bytes, reply: bytes) -> Serve:
    """Read ``line``, send ``reply``."""
    reach = expect(line)

    def serve(conn: ScriptedConnection, server: Server) -> None:
        reach(conn)
        server.send(conn, reply)

    return serve


def ehlo_answer(*extensions: bytes) -> Serve:
    """Read EHLO, announce ``extensions`` (and PIPELINING if the server does)."""

    def serve(conn: ScriptedConnection, server: Server) -> None:
        expect(EHLO_LINE)(conn)
        lines = [b"scripted", *extensions]
        if server.pipelining:
            lines.append(b"PIPELINING")
        head = b"".join(b"250-" + each + b"\r\n" for each in lines[:-1])
        server.send(conn, head + b"250 " + lines[-1] + b"\r\n")

    return serve


def read_mid_body(conn: ScriptedConnection) -> None:
    for _ in range(MID_BODY_LINES):
        conn.read_line()


def read_rest_of_body(conn: ScriptedConnection) -> None:
    data = conn.read_data()
    if data != BODY_WIRE[len(MID_BODY) :]:
        raise AssertionError(f"the end of the body differs: {data[-60:]!r}")


def greet(conn: ScriptedConnection, server: Server) -> None:
    server.send(conn, b"220 scripted ESMTP\r\n")


def start_tls(conn: ScriptedConnection, server: Server) -> None:
    conn.start_tls(server.tls)


def take_client_hello(conn: ScriptedConnection) -> None:
    conn.read_tls_record()


def final_reply(reply: bytes) -> Serve:
    """Read the rest of the body, send ``reply``."""

    def serve(conn: ScriptedConnection, server: Server) -> None:
        read_rest_of_body(conn)
        server.send(conn, reply)

    return serve


@dataclass(frozen=True)
class Step:
    """One step of a session.

    :param name: the step's id in test names.
    :param sent: what the client sends in this step (as the server records it:
        decrypted under TLS).
    :param serve: what a healthy server does.
    :param reach: what a faulty server does before the fault.
    :param raises: what the client may raise when the step faults, where that
        is not ``SMTPServerDisconnected``.
    """

    name: str
    sent: bytes
    serve: Serve
    reach: Reach
    raises: Mapping[Fault, tuple[type[BaseException], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def expected(self, fault: Fault) -> tuple[type[BaseException], ...]:
        return self.raises.get(fault, (anysmtp.SMTPServerDisconnected,))


def command(name: str, line: bytes, reply: bytes) -> Step:
    """A step that is one command and its reply."""
    return Step(name, line, answer(line, reply), expect(line))


def ehlo(name: str, *extensions: bytes) -> Step:
    return Step(name, EHLO_LINE, ehlo_answer(*extensions), expect(EHLO_LINE))


GREETING: Final = Step(
    "greeting",
    b"",
    greet,
    nothing,
    # A reset that overtakes the client's own connect() (between the kernel's
    # handshake and the client reading SO_ERROR) fails connect() itself, with
    # smtplib as with anysmtp.
    MappingProxyType(
        {Fault.RESET: (anysmtp.SMTPServerDisconnected, ConnectionResetError)}
    ),
)
TRANSACTION: Final = (
    command("mail", MAIL_LINE, b"250 2.1.0 ok\r\n"),
    command("rcpt-1", RCPT_LINES[0], b"250 2.1.5 ok\r\n"),
    command("rcpt-2", RCPT_LINES[1], b"250 2.1.5 ok\r\n"),
    command("data", b"data\r\n", b"354 go ahead\r\n"),
    Step("mid-body", MID_BODY, lambda conn, _: read_mid_body(conn), read_mid_body),
    Step(
        "final-reply",
        BODY_WIRE[len(MID_BODY) :],
        final_reply(b"250 2.0.0 queued\r\n"),
        read_rest_of_body,
    ),
    command("quit", b"quit\r\n", b"221 bye\r\n"),
)


@dataclass(frozen=True)
class Session:
    """A whole session: the server's steps, and what the client calls."""

    name: str
    steps: tuple[Step, ...]
    #: The client upgrades with STARTTLS after its first EHLO (then says EHLO).
    starttls: bool = False
    #: The client logs in (AUTH PLAIN) before the transaction.
    login: bool = False

    @property
    def wire(self) -> bytes:
        """Everything the client sends in the session, in order."""
        return b"".join(step.sent for step in self.steps)

    def through(self, index: int) -> bytes:
        """What the client sends up to and including step ``index``."""
        return b"".join(step.sent for step in self.steps[: index + 1])

    def index(self, name: str) -> int:
        return [step.name for step in self.steps].index(name)

    def healthy(self, server: Server) -> Script:
        def script(conn: ScriptedConnection) -> None:
            for step in self.steps:
                step.serve(conn, server)

        return script

    def faulty(self, index: int, fault: Reach, server: Server) -> Script:
        """Healthy up to step ``index``; in it, ``reach`` then ``fault``."""

        def script(conn: ScriptedConnection) -> None:
            for step in self.steps[:index]:
                step.serve(conn, server)
            self.steps[index].reach(conn)
            fault(conn)

        return script


PLAIN: Final = Session("plain", (GREETING, ehlo("ehlo", b"8BITMIME"), *TRANSACTION))
STARTTLS_AUTH: Final = Session(
    "starttls-auth",
    (
        GREETING,
        ehlo("ehlo", b"STARTTLS"),
        command("starttls", b"STARTTLS\r\n", b"220 2.0.0 ready for TLS\r\n"),
        Step(
            "tls-handshake",
            b"",
            start_tls,
            # The server takes the ClientHello and faults instead of answering.
            take_client_hello,
            # A failed handshake raises the ssl module's error, as in smtplib.
            MappingProxyType(
                {
                    Fault.DISCONNECT: (ssl.SSLEOFError,),
                    Fault.RESET: (ConnectionResetError,),
                }
            ),
        ),
        ehlo("ehlo-tls", b"AUTH PLAIN"),
        command("auth", AUTH_LINE, b"235 2.7.0 authenticated\r\n"),
        *TRANSACTION,
    ),
    starttls=True,
    login=True,
)
SESSIONS: Final = (PLAIN, STARTTLS_AUTH)

#: Every (session, step index) pair.
STEPS: Final = [
    pytest.param(session, index, id=f"{session.name}-{step.name}")
    for session in SESSIONS
    for index, step in enumerate(session.steps)
]
#: The steps that ``connect()`` goes through by itself with the keyword options
#: (``start_tls=True``, ``username``, ``password``), and MAIL after them.
CONNECT_STEPS: Final = [
    pytest.param(STARTTLS_AUTH, index, id=f"{STARTTLS_AUTH.name}-{step.name}")
    for index, step in enumerate(STARTTLS_AUTH.steps)
    if index <= STARTTLS_AUTH.index("mail")
]
FAULTS: Final = [pytest.param(fault, id=fault.value) for fault in Fault]
PIPELINING: Final = [
    pytest.param(False, id="sequential"),
    pytest.param(True, id="pipelining"),
]


# Running a case -------------------------------------------------------------------


def open_files() -> collections.Counter[str]:
    """What this process's file descriptors point to (sockets by inode: one
    closed by someone else's finalizer and one leaked never cancel out)."""
    found: collections.Counter[str] = collections.Counter()
    for name in os.listdir("/proc/self/fd"):
        try:
            found[os.readlink(f"/proc/self/fd/{name}")] += 1
        except FileNotFoundError:
            pass  # the listing's own descriptor, closed by now
    return found


@dataclass
class Case:
    """A server whose first connection faults and whose second is healthy."""

    session: Session
    server: ScriptedServer
    #: The client side's TLS context (trusts the test CA).
    context: ssl.SSLContext
    #: The exceptions the first session may raise (exactly these types);
    #: empty: it must succeed.
    expected: tuple[type[BaseException], ...]
    #: The step the first connection breaks in (the last one if it does not).
    index: int

    def first_connection_done(self) -> bool:
        return len(self.server.transcripts) >= 1

    def check_failure(self, exc: BaseException | None) -> None:
        """The first session raised one of the expected exceptions, by exact
        type (so never a timeout where a disconnection was due)."""
        if not self.expected:
            assert exc is None, repr(exc)
            return
        assert type(exc) in self.expected, f"expected {self.expected}, got {exc!r}"

    def check_transcripts(self) -> None:
        first, second = self.server.transcripts
        wire = self.session.wire
        # Only the session's own bytes, at least up to the step that broke.
        assert wire.startswith(first), first[-200:]
        assert first.startswith(self.session.through(self.index)), first[-200:]
        assert second == wire


@contextmanager
def serving(
    session: Session,
    first: Script,
    second: Script,
    certs: Certificates,
    *,
    expected: tuple[type[BaseException], ...],
    index: int,
    unix: bool = False,
) -> Iterator[Case]:
    """A server running ``first`` on its first connection and ``second`` on the
    next; the transcripts are checked when the block ends."""
    scripts = iter([first, second])

    def script(conn: ScriptedConnection) -> None:
        next(scripts)(conn)

    with ScriptedServer(script, connections=2, unix=unix) as server:
        case = Case(session, server, certs.client_context(), expected, index)
        yield case
    case.check_transcripts()


@contextmanager
def fault_case(
    session: Session,
    index: int,
    fault: Fault,
    pipelining: bool,
    certs: Certificates,
    *,
    unix: bool = False,
) -> Iterator[Case]:
    """The matrix's case: ``fault`` at step ``index`` of ``session``."""
    server = Server(certs.server_context(), pipelining=pipelining)
    with serving(
        session,
        session.faulty(index, fault.apply, server),
        session.healthy(server),
        certs,
        expected=session.steps[index].expected(fault),
        index=index,
        unix=unix,
    ) as case:
        yield case


async def async_session(
    smtp: anysmtp.AsyncSMTP, case: Case, *, keyword_options: bool = False
) -> None:
    """The session (the client connects where its constructor was told).

    :param keyword_options: ``connect()`` itself says EHLO, upgrades and logs
        in, as the client's keyword options ask; else the calls are explicit.
    """
    await smtp.connect()
    if not keyword_options:
        await smtp.ehlo()
        if case.session.starttls:
            await smtp.starttls(context=case.context)
            await smtp.ehlo()
        if case.session.login:
            await smtp.login(USER, PASSWORD)
    assert await smtp.sendmail(ALICE, RECIPIENTS, BODY) == {}
    assert await smtp.quit() == (221, b"bye")


async def attempt_async(
    smtp: anysmtp.AsyncSMTP, case: Case, *, keyword_options: bool = False
) -> BaseException | None:
    try:
        await async_session(smtp, case, keyword_options=keyword_options)
    except Exception as exc:
        return exc
    return None


class SyncClient(Protocol):
    """What the sync session calls: smtplib.SMTP's and anysmtp.SMTP's methods."""

    def connect(self, host: str, port: int) -> tuple[int, bytes]: ...

    def ehlo(self, name: str = "") -> tuple[int, bytes]: ...

    def starttls(self, *, context: ssl.SSLContext) -> tuple[int, bytes]: ...

    def login(self, user: str, password: str) -> tuple[int, bytes]: ...

    def sendmail(
        self, from_addr: str, to_addrs: Sequence[str], msg: bytes
    ) -> dict[str, tuple[int, bytes]]: ...

    def quit(self) -> tuple[int, bytes]: ...


def sync_session(client: SyncClient, case: Case) -> None:
    """The same session through smtplib's interface."""
    if case.server.port == 0:
        raise AssertionError("the sync clients connect over TCP only")
    client.connect(case.server.host, case.server.port)
    client.ehlo()
    if case.session.starttls:
        client.starttls(context=case.context)
        client.ehlo()
    if case.session.login:
        client.login(USER, PASSWORD)
    assert client.sendmail(ALICE, RECIPIENTS, BODY) == {}
    assert client.quit() == (221, b"bye")


def attempt_sync(client: SyncClient, case: Case) -> BaseException | None:
    try:
        sync_session(client, case)
    except Exception as exc:
        return exc
    return None


def wait_sync(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the server never finished"
        time.sleep(0.002)


async def check_async_client(
    smtp: anysmtp.AsyncSMTP, case: Case, *, keyword_options: bool = False
) -> None:
    """Fail as expected, be closed, leak nothing, then work again."""
    files = open_files()
    case.check_failure(await attempt_async(smtp, case, keyword_options=keyword_options))
    assert (smtp.sock, smtp.is_connected) == (None, False)
    await anyio.to_thread.run_sync(wait_sync, case.first_connection_done)
    assert not open_files() - files
    # The same object, a new connection: the whole session works.
    assert await attempt_async(smtp, case, keyword_options=keyword_options) is None
    assert (smtp.sock, smtp.is_connected) == (None, False)


def check_facade(client: anysmtp.SMTP, case: Case) -> None:
    """The same for the sync facade."""
    # Start the facade's event loop thread (and its file descriptors) first.
    with pytest.raises(anysmtp.SMTPServerDisconnected):
        client.noop()
    files = open_files()
    case.check_failure(attempt_sync(client, case))
    assert (client.sock, client.is_connected) == (None, False)
    wait_sync(case.first_connection_done)
    assert not open_files() - files
    assert attempt_sync(client, case) is None
    assert (client.sock, client.is_connected) == (None, False)


# The matrix -----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", PIPELINING)
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(("session", "index"), STEPS)
async def test_async_api(
    session: Session, index: int, fault: Fault, pipelining: bool, certs: Certificates
) -> None:
    with fault_case(session, index, fault, pipelining, certs) as case:
        smtp = anysmtp.AsyncSMTP(
            case.server.host,
            case.server.port,
            local_hostname=LOCAL,
            timeout=TIMEOUT,
            start_tls=False,
            pipelining=pipelining,
        )
        await check_async_client(smtp, case)


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(("session", "index"), CONNECT_STEPS)
async def test_async_api_connect_with_keyword_options(
    session: Session, index: int, fault: Fault, certs: Certificates
) -> None:
    # connect() says EHLO, upgrades and logs in by itself: a fault in any of
    # it must leave the client closed just the same.
    with fault_case(session, index, fault, True, certs) as case:
        smtp = anysmtp.AsyncSMTP(
            case.server.host,
            case.server.port,
            local_hostname=LOCAL,
            timeout=TIMEOUT,
            start_tls=True,
            tls_context=case.context,
            username=USER,
            password=PASSWORD,
        )
        await check_async_client(smtp, case, keyword_options=True)


@pytest.mark.anyio
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(
    "index", [pytest.param(i, id=step.name) for i, step in enumerate(PLAIN.steps)]
)
async def test_async_api_over_a_unix_socket(
    index: int, fault: Fault, certs: Certificates
) -> None:
    with fault_case(PLAIN, index, fault, False, certs, unix=True) as case:
        smtp = anysmtp.AsyncSMTP(
            socket_path=case.server.socket_path,
            local_hostname=LOCAL,
            timeout=TIMEOUT,
        )
        await check_async_client(smtp, case)


@pytest.mark.parametrize("pipelining", PIPELINING)
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(("session", "index"), STEPS)
def test_facade(
    session: Session, index: int, fault: Fault, pipelining: bool, certs: Certificates
) -> None:
    with fault_case(session, index, fault, pipelining, certs) as case:
        check_facade(anysmtp.SMTP(local_hostname=LOCAL, timeout=TIMEOUT), case)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(("session", "index"), STEPS)
def test_smtplib_raises_what_the_table_says(
    session: Session, index: int, fault: Fault, certs: Certificates
) -> None:
    # The reference for every expectation above: the standard library, on the
    # same scripts (it never pipelines).
    with fault_case(session, index, fault, False, certs) as case:
        client = smtplib.SMTP(local_hostname=LOCAL, timeout=TIMEOUT)
        # smtplib's starttls() takes the server's name from the constructor's
        # host (connect()'s is not kept): give it, without connecting there.
        vars(client)["_host"] = case.server.host
        try:
            case.check_failure(attempt_sync(client, case))
            wait_sync(case.first_connection_done)
            assert attempt_sync(client, case) is None
        finally:
            client.close()


# Other misbehaviours, then connect() again ----------------------------------------


def stall_at_mail(server: Server) -> Script:
    return PLAIN.faulty(PLAIN.index("mail"), ScriptedConnection.stall, server)


def over_long_reply_to_mail(server: Server) -> Script:
    def fault(conn: ScriptedConnection) -> None:
        conn.send(long_line(8193))
        conn.stall()

    return PLAIN.faulty(PLAIN.index("mail"), fault, server)


def endless_reply_to_ehlo(server: Server) -> Script:
    def fault(conn: ScriptedConnection) -> None:
        conn.send_endless()

    return PLAIN.faulty(PLAIN.index("ehlo"), fault, server)


def trickled_replies(server: Server) -> Script:
    return PLAIN.healthy(Server(server.tls, pipelining=server.pipelining, trickle=True))


#: PLAIN, with invalid UTF-8 in the EHLO reply and in the replies to MAIL and
#: DATA's end.
INVALID_UTF8_SESSION: Final = Session(
    "invalid-utf8",
    tuple(
        {
            "ehlo": ehlo("ehlo", b"X-NAME caf\xe9 \xc0\xaf"),
            "mail": command("mail", MAIL_LINE, INVALID_UTF8),
            "final-reply": Step(
                "final-reply",
                BODY_WIRE[len(MID_BODY) :],
                final_reply(INVALID_UTF8),
                read_rest_of_body,
            ),
        }.get(step.name, step)
        for step in PLAIN.steps
    ),
)
assert INVALID_UTF8_SESSION.wire == PLAIN.wire


def invalid_utf8(server: Server) -> Script:
    return INVALID_UTF8_SESSION.healthy(server)


def replies_before_commands(server: Server) -> Script:
    # The replies to MAIL, both RCPTs and DATA go out before the server has
    # read any of them: the client must keep them, in order, not discard them.
    def script(conn: ScriptedConnection) -> None:
        for step in PLAIN.steps[: PLAIN.index("mail")]:
            step.serve(conn, server)
        conn.send(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
        for line in (MAIL_LINE, *RCPT_LINES, b"data\r\n"):
            expect(line)(conn)
        for step in PLAIN.steps[PLAIN.index("mid-body") :]:
            step.serve(conn, server)

    return script


@dataclass(frozen=True)
class Misbehaviour:
    """A first connection that misbehaves in another way than disconnecting."""

    first: Callable[[Server], Script]
    #: The exception (type and args) the session raises; ``None``: it succeeds.
    raises: tuple[type[BaseException], tuple[object, ...]] | None
    #: The step where it fails.
    step: str = "quit"
    timeout: float = TIMEOUT


#: The stalling case's timeout: it has to expire.
STALL_TIMEOUT: Final = 0.5

MISBEHAVIOURS: Final = {
    "stall": Misbehaviour(
        stall_at_mail,
        (
            anysmtp.SMTPReadTimeoutError,
            (
                "Timed out waiting for the server's reply after "
                f"{STALL_TIMEOUT} seconds",
            ),
        ),
        "mail",
        STALL_TIMEOUT,
    ),
    "over-long-line": Misbehaviour(
        over_long_reply_to_mail,
        (anysmtp.SMTPResponseException, (500, "Line too long.")),
        "mail",
    ),
    "endless-reply": Misbehaviour(
        endless_reply_to_ehlo,
        (anysmtp.SMTPResponseException, (500, "Reply too long.")),
        "ehlo",
    ),
    "trickle": Misbehaviour(trickled_replies, None),
    "invalid-utf8": Misbehaviour(invalid_utf8, None),
    "replies-before-commands": Misbehaviour(replies_before_commands, None),
}
MISBEHAVIOUR_PARAMS: Final = [
    pytest.param(each, id=name) for name, each in MISBEHAVIOURS.items()
]


@contextmanager
def misbehaviour_case(
    misbehaviour: Misbehaviour, pipelining: bool, certs: Certificates
) -> Iterator[Case]:
    server = Server(certs.server_context(), pipelining=pipelining)
    with serving(
        PLAIN,
        misbehaviour.first(server),
        PLAIN.healthy(server),
        certs,
        expected=() if misbehaviour.raises is None else (misbehaviour.raises[0],),
        index=PLAIN.index(misbehaviour.step),
    ) as case:
        yield case


def check_args(misbehaviour: Misbehaviour, exc: BaseException | None) -> None:
    if misbehaviour.raises is not None:
        assert exc is not None
        assert exc.args == misbehaviour.raises[1]


@pytest.mark.anyio
@pytest.mark.parametrize("pipelining", PIPELINING)
@pytest.mark.parametrize("misbehaviour", MISBEHAVIOUR_PARAMS)
async def test_async_api_misbehaviour(
    misbehaviour: Misbehaviour, pipelining: bool, certs: Certificates
) -> None:
    with misbehaviour_case(misbehaviour, pipelining, certs) as case:
        smtp = anysmtp.AsyncSMTP(
            case.server.host,
            case.server.port,
            local_hostname=LOCAL,
            timeout=misbehaviour.timeout,
            start_tls=False,
            pipelining=pipelining,
        )
        exc = await attempt_async(smtp, case)
        case.check_failure(exc)
        check_args(misbehaviour, exc)
        assert (smtp.sock, smtp.is_connected) == (None, False)
        smtp.timeout = TIMEOUT  # the stalling case's short one has served
        assert await attempt_async(smtp, case) is None


@pytest.mark.parametrize("pipelining", PIPELINING)
@pytest.mark.parametrize("misbehaviour", MISBEHAVIOUR_PARAMS)
def test_facade_misbehaviour(
    misbehaviour: Misbehaviour, pipelining: bool, certs: Certificates
) -> None:
    with misbehaviour_case(misbehaviour, pipelining, certs) as case:
        client = anysmtp.SMTP(local_hostname=LOCAL, timeout=misbehaviour.timeout)
        exc = attempt_sync(client, case)
        case.check_failure(exc)
        check_args(misbehaviour, exc)
        assert (client.sock, client.is_connected) == (None, False)
        client.timeout = TIMEOUT  # the stalling case's short one has served
        assert attempt_sync(client, case) is None
