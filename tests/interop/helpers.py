"""What the interop tests share: connection options for each port, messages,
and the checks of what the servers delivered and logged."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import email.generator
import email.message
import io
import os
import random
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

import anysmtp
from anysmtp._body import CHUNK_SIZE
from interop.proxy import Session
from interop.servers import (
    ACCOUNT,
    DOMAIN,
    ENDPOINTS,
    PASSWORD,
    Endpoint,
    EndpointSpec,
    LmtpEndpoint,
    SubmissionEndpoint,
    split_trace_headers,
)

#: Set by `make interop` once the servers are installed.
ENABLE_VARIABLE = "ANYSMTP_INTEROP"
SKIP_REASON = (
    "interop: needs the private Postfix, Exim and Dovecot servers: run "
    "`make interop` "
    "(as root on Debian; it installs them and sets ANYSMTP_INTEROP=1)"
)


def interop_enabled() -> bool:
    """Whether this run is `make interop`'s."""
    return os.environ.get(ENABLE_VARIABLE) == "1"


def skip_unless_enabled() -> None:
    """Skip the calling test module (one line in pytest's summary, not one per
    test) unless this run is `make interop`'s."""
    if not interop_enabled():
        pytest.skip(SKIP_REASON, allow_module_level=True)


#: Seconds for connecting and for each reply.
TIMEOUT = 30.0
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
ZOE = f"zoë@{DOMAIN}"
#: The 9 MiB of the streamed message.
LARGE_SIZE = 9 * 1024 * 1024


def endpoints(
    where: Callable[[EndpointSpec], bool] = lambda spec: True,
) -> pytest.MarkDecorator:
    """Parametrize a test by every port ``where`` accepts (the ``endpoint``
    fixture turns each name into the running port)."""
    names = [name for name, spec in ENDPOINTS.items() if where(spec)]
    assert names, "no endpoint matches"
    return pytest.mark.parametrize("endpoint", names, indirect=True)


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """A verifying context that trusts the server's private CA."""
    return ssl.create_default_context(cafile=str(endpoint.ca_file))


def connect_options(
    endpoint: Endpoint, *, login: bool = True, tls: bool = True, port: int = 0
) -> dict[str, Any]:
    """AsyncSMTP's (and send()'s) keyword options for ``endpoint``: its TLS mode
    (``tls=False`` stays in cleartext on a STARTTLS port), the account when
    the port offers AUTH, and ``port`` instead of the endpoint's (a proxy)."""
    spec = endpoint.spec
    options: dict[str, Any] = {
        "hostname": endpoint.host,
        "port": port or endpoint.port,
        "timeout": TIMEOUT,
        "validate_certs": True,
        "cert_bundle": str(endpoint.ca_file),
        "use_tls": spec.tls == "implicit",
        "start_tls": spec.tls == "starttls" and tls,
    }
    if login and spec.auth and (tls or spec.tls == "implicit"):
        options.update(username=ACCOUNT, password=PASSWORD)
    return options


@contextlib.asynccontextmanager
async def async_client(
    endpoint: Endpoint,
    *,
    login: bool = True,
    tls: bool = True,
    port: int = 0,
    **options: Any,
) -> AsyncIterator[anysmtp.AsyncSMTP]:
    """A connected (upgraded, logged-in) AsyncSMTP; see :func:`connect_options`."""
    async with anysmtp.AsyncSMTP(
        **connect_options(endpoint, login=login, tls=tls, port=port), **options
    ) as client:
        yield client


@contextlib.contextmanager
def sync_client(
    endpoint: Endpoint, *, login: bool = True, tls: bool = True, port: int = 0
) -> Iterator[anysmtp.SMTP]:
    """A connected sync client, set up the smtplib way: ``SMTP_SSL`` for
    implicit TLS, else ``SMTP`` and an explicit ``starttls()``, then
    ``login()``."""
    spec = endpoint.spec
    context = tls_context(endpoint)
    client: anysmtp.SMTP
    if spec.tls == "implicit":
        client = anysmtp.SMTP_SSL(
            endpoint.host, port or endpoint.port, timeout=TIMEOUT, context=context
        )
    else:
        client = anysmtp.SMTP(endpoint.host, port or endpoint.port, timeout=TIMEOUT)
    with client:
        if spec.tls == "starttls" and tls:
            code, _ = client.starttls(context=context)
            assert code == 220
            # smtplib's rule: the extensions are forgotten, EHLO again.
            client.ehlo()
        if login and spec.auth and (tls or spec.tls == "implicit"):
            code, _ = client.login(ACCOUNT, PASSWORD)
            assert code == 235
        yield client


def new_marker() -> str:
    """A unique value that tells this test's message from every other."""
    return uuid.uuid4().hex


def make_message(
    marker: str,
    *,
    sender: str = ACCOUNT,
    to: tuple[str, ...] = (BOB,),
    subject: str = "interop",
    body: bytes = b"Hello from anysmtp.\r\n",
) -> bytes:
    """A message with CRLF line endings, its headers complete (no server adds
    any) and ``marker`` in a header."""
    headers = (
        f"From: {sender}\r\n"
        f"To: {', '.join(to)}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        f"Message-ID: <{marker}@anysmtp.test>\r\n"
        f"X-Interop-Case: {marker}\r\n"
        "\r\n"
    )
    return headers.encode("utf-8") + body


def flattened(message: email.message.Message, *, international: bool) -> bytes:
    """The bytes smtplib's ``send_message`` sends for ``message``: Bcc
    removed, CRLF line endings, UTF-8 headers when ``international``."""
    message = copy.copy(message)
    del message["Bcc"]
    del message["Resent-Bcc"]
    policy = message.policy
    if international:
        # Every policy has ``utf8`` (typeshed only knows it on EmailPolicy).
        policy = policy.clone(utf8=True)  # type: ignore[call-arg]
    output = io.BytesIO()
    email.generator.BytesGenerator(output, policy=policy).flatten(
        message, linesep="\r\n"
    )
    return output.getvalue()


def as_stored(sent: bytes) -> bytes:
    """``sent`` (CRLF lines) as a Maildir stores it: Unix line endings."""
    return sent.replace(b"\r\n", b"\n")


def assert_same_bytes(actual: bytes, expected: bytes) -> None:
    """Byte equality, reported as the first difference (messages are large)."""
    if actual == expected:
        return
    offset = next(
        (i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b),
        min(len(actual), len(expected)),
    )
    raise AssertionError(
        f"delivered {len(actual)} bytes, sent {len(expected)}; first difference "
        f"at {offset}:\n delivered {actual[max(offset - 60, 0) : offset + 60]!r}\n"
        f"      sent {expected[max(offset - 60, 0) : offset + 60]!r}"
    )


def assert_delivered(
    endpoint: Endpoint, address: str, sent: bytes, marker: str
) -> bytes:
    """The message delivered to ``address`` is ``sent``, byte for byte, under
    the trace headers the server added; returns it as stored."""
    stored = endpoint.delivered(address, marker.encode())
    names, message = split_trace_headers(stored)
    assert "received" in names, stored[:2000]
    assert_same_bytes(message, as_stored(sent))
    return stored


def received_with(stored: bytes) -> str:
    """The protocol in the server's Received header, lower case (``esmtp``,
    ``esmtps`` with TLS, ``esmtpsa`` with TLS and AUTH, ``utf8``... prefixed
    for SMTPUTF8)."""
    match = re.search(rb"^Received:(?:[^\n]|\n[ \t])*?\bwith (\S+)", stored, re.M)
    assert match is not None, stored[:2000]
    return match.group(1).decode("ascii").lower()


def client_port(client: anysmtp.AsyncSMTP | anysmtp.SMTP) -> int:
    """The client's local port: the servers log it with each session."""
    sock = client.sock
    assert sock is not None
    port: int = sock.getsockname()[1]
    return port


def session_summary(endpoint: Endpoint, offset: int, port: int) -> str:
    """Postfix's line that sums up the session from ``port`` (logged when it
    ends): ``disconnect from ...:port ehlo=2 starttls=1 ... commands=N``."""
    assert endpoint.spec.server == "postfix"
    match = endpoint.wait_for_log(
        offset, rf"disconnect from \S+\[127\.0\.0\.1\]:{port} (.*)$"
    )
    return match.group(1)


def exim_arrival(endpoint: Endpoint, offset: int, port: int) -> str:
    """Exim's ``<=`` line for the message received from ``port``."""
    assert endpoint.spec.server == "exim"
    match = endpoint.wait_for_log(offset, rf"<= .* \[127\.0\.0\.1\]:{port} .*$")
    return match.group(0)


def large_message_body(size: int = LARGE_SIZE) -> bytes:
    """About ``size`` bytes of body: lines of 78 characters and CRLF, some
    starting with a dot, some with 8-bit bytes (the same every run)."""
    generator = random.Random(2920)
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-"
    lines = []
    for number in range(1, size // 80 + 1):
        line = bytes(generator.choices(alphabet, k=78))
        if number % 97 == 0:
            line = b"." + line[1:]
        if number % 101 == 0:
            line = line[:70] + "éüß!!".encode()
        lines.append(line + b"\r\n")
    return b"".join(lines)


def write_large_message(path: Path, body: bytes, size: int = LARGE_SIZE) -> Path:
    """A message of exactly ``size`` bytes in a file: headers with a new
    marker, then ``body`` cut or padded to the size."""
    head = make_message("large-" + new_marker(), subject="9 MiB", body=b"")
    room = size - len(head)
    cut = body[: body.rfind(b"\r\n", 0, room - 200) + 2]
    # The last line makes the size exact.
    tail = b"x" * (room - len(cut) - 2) + b"\r\n"
    path.write_bytes(head + cut + tail)
    assert path.stat().st_size == size
    return path


def multichunk_message(
    marker: str, *, to: tuple[str, ...], subject: str = "chunks"
) -> bytes:
    """About 700 KiB with bare LF line endings (three BDAT chunks of
    anysmtp's): lines that start with a dot, lines that are only dots, 8-bit
    bytes, and a CRLF whose CR ends the first chunk and whose LF starts the
    second."""
    head = make_message(marker, to=to, subject=subject, body=b"")
    lines = [head.replace(b"\r\n", b"\n")]
    size = len(lines[0])
    generator = random.Random(2033)
    alphabet = b"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789.,"

    def add(line: bytes) -> None:
        nonlocal size
        lines.append(line)
        size += len(line)

    number = 0
    while size <= CHUNK_SIZE - 200:
        number += 1
        line = bytes(generator.choices(alphabet, k=70))
        if number % 31 == 0:
            line = b"." + line
        elif number % 37 == 0:
            line = b"."
        elif number % 41 == 0:
            line = b".."
        elif number % 43 == 0:
            line = line[:60] + "äöü €".encode()
        add(line + b"\n")
    # The CR at the last octet of the first chunk, its LF the next chunk's first.
    add(b"x" * (CHUNK_SIZE - 1 - size) + b"\r")
    add(b"\n.\n.after the boundary\n")
    while size < int(2.7 * CHUNK_SIZE):
        add(b"." + bytes(generator.choices(alphabet, k=76)) + b"\n")
        add(bytes(generator.choices(alphabet, k=78)) + b"\n")
    add(b"the end\n")
    message = b"".join(lines)
    assert message[CHUNK_SIZE - 1 : CHUNK_SIZE + 1] == b"\r\n"
    assert b"\n.\n" in message
    return message


def canonical(message: bytes) -> bytes:
    """``message`` as it must go over the wire: CRLF line endings."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def dot_stuffed(content: bytes) -> bytes:
    """``content`` (CRLF lines) as DATA sends it: a dot doubled at the start
    of a line."""
    return re.sub(rb"(?m)^\.", b"..", content)


def message_marker(path: Path) -> str:
    """The X-Interop-Case marker of a message file."""
    with path.open("rb") as message:
        head = message.read(4096)
    match = re.search(rb"^X-Interop-Case: (\S+)\r$", head, re.M)
    assert match is not None
    return match.group(1).decode("ascii")


# -- LMTP (Dovecot) ---------------------------------------------------------------

ALICE = f"alice@{DOMAIN}"


@contextlib.asynccontextmanager
async def async_lmtp_client(
    lmtp: LmtpEndpoint, *, port: int = 0, unix: bool = False, **options: Any
) -> AsyncIterator[anysmtp.AsyncLMTP]:
    """A connected AsyncLMTP: to Dovecot's loopback port (or ``port``, a
    proxy's), or to its Unix socket with ``unix``; ``options`` go to the
    constructor (``pipelining``, ``chunking``)."""
    where: dict[str, Any] = (
        {"socket_path": str(lmtp.socket_path)}
        if unix
        else {"hostname": lmtp.host, "port": port or lmtp.port}
    )
    client = anysmtp.AsyncLMTP(timeout=TIMEOUT, **where, **options)
    # Not ``as client``: __aenter__ is typed as AsyncSMTP's.
    async with client:
        yield client


@contextlib.contextmanager
def sync_lmtp_client(
    lmtp: LmtpEndpoint, *, port: int = 0, unix: bool = False
) -> Iterator[anysmtp.LMTP]:
    """A connected sync LMTP, made the smtplib way: ``LMTP(host, port)``, or
    ``LMTP(socket path)``."""
    client = (
        anysmtp.LMTP(str(lmtp.socket_path), timeout=TIMEOUT)
        if unix
        else anysmtp.LMTP(lmtp.host, port or lmtp.port, timeout=TIMEOUT)
    )
    with client:
        yield client


# -- Submission (Dovecot) ----------------------------------------------------------


@contextlib.asynccontextmanager
async def async_submission_client(
    submission: SubmissionEndpoint, *, port: int, login: bool = True, **options: Any
) -> AsyncIterator[anysmtp.AsyncSMTP]:
    """A connected AsyncSMTP on ``port`` (a proxy's, in front of a submission
    port), in cleartext, logged in by the keyword options with ``login`` (the
    library picks PLAIN); ``options`` go to the constructor (``pipelining``,
    ``chunking``)."""
    credentials: dict[str, Any] = (
        {"username": ACCOUNT, "password": PASSWORD} if login else {}
    )
    async with anysmtp.AsyncSMTP(
        hostname=submission.host,
        port=port,
        timeout=TIMEOUT,
        start_tls=False,
        **credentials,
        **options,
    ) as client:
        yield client


@contextlib.contextmanager
def sync_submission_client(
    submission: SubmissionEndpoint, *, port: int, login: bool = True
) -> Iterator[anysmtp.SMTP]:
    """A connected sync client on ``port`` (a proxy's), set up the smtplib
    way: ``SMTP(host, port)``, then ``login()`` with ``login``."""
    with anysmtp.SMTP(submission.host, port, timeout=TIMEOUT) as client:
        if login:
            code, _ = client.login(ACCOUNT, PASSWORD)
            assert code == 235
        yield client


# -- Commands and replies on the wire -------------------------------------------------

_BDAT_LINE = re.compile(rb"BDAT\s+(\d+)(\s+LAST)?\s*$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class WireExchange:
    """One client command on a cleartext session and every final reply to it:
    one, except on LMTP for the end of the data (DATA's 354, then one per
    accepted recipient; ``BDAT LAST``'s one per accepted recipient, RFC 2033).

    ``sent_at`` and the replies' positions index :attr:`Session.events`, so
    comparing them tells what the client had seen when it sent a command (see
    :mod:`interop.proxy`)."""

    line: bytes
    #: The event that completed the command line.
    sent_at: int
    #: ``(code, event)`` of each final reply, in order.
    replies: tuple[tuple[int, int], ...]
    #: What followed the line: DATA's content up to the final dot (dot-stuffed,
    #: as sent), a BDAT chunk's octets.  Left out of the repr: assertion
    #: messages list exchanges, and a chunk is 256 KiB.
    content: bytes = dataclasses.field(default=b"", repr=False)

    @property
    def verb(self) -> str:
        word = self.line.split(b" ", 1)[0].split(b":", 1)[0]
        return word.decode("ascii", "replace").upper()

    @property
    def codes(self) -> list[int]:
        return [code for code, _ in self.replies]

    @property
    def first_reply_at(self) -> int:
        assert self.replies, f"no reply to {self.line!r}"
        return self.replies[0][1]

    @property
    def last_reply_at(self) -> int:
        assert self.replies, f"no reply to {self.line!r}"
        return self.replies[-1][1]

    @property
    def is_last_chunk(self) -> bool:
        match = _BDAT_LINE.match(self.line)
        return match is not None and match.group(2) is not None


#: The name the LMTP tests use.
LmtpExchange = WireExchange


def _final_replies(session: Session) -> list[tuple[int, int]]:
    """The server's replies: ``(code, the event that completed it)``, the
    greeting first."""
    replies: list[tuple[int, int]] = []
    buffer = b""
    for index, (side, chunk) in enumerate(session.events):
        if side != "server":
            continue
        buffer += chunk
        *lines, buffer = buffer.split(b"\r\n")
        for line in lines:
            if line[3:4] != b"-":  # the last line of a reply
                replies.append((int(line[:3]) if line[:3].isdigit() else 0, index))
    return replies


def server_reply_codes(session: Session) -> list[int]:
    """The code of every reply the server sent after its greeting, in order:
    more than the client's commands got, if the server read something else
    (a chunk's octets) as commands."""
    return [code for code, _ in _final_replies(session)[1:]]


def lmtp_exchanges(session: Session) -> list[WireExchange]:
    """The client's commands on a cleartext LMTP session with their replies, in
    order (:meth:`Session.exchanges` expects one reply to the end of the data:
    LMTP gives one per accepted recipient)."""
    return _exchanges(session, lmtp=True)


def smtp_exchanges(session: Session) -> list[WireExchange]:
    """The client's commands on a cleartext SMTP session with their replies
    (one each), in order, with the message contents (which
    :meth:`Session.exchanges` skips)."""
    return _exchanges(session, lmtp=False)


def _exchanges(session: Session, *, lmtp: bool) -> list[WireExchange]:
    replies = iter(_final_replies(session)[1:])  # after the greeting
    client = bytearray()
    chunk_ends: list[tuple[int, int]] = []
    for index, (side, chunk) in enumerate(session.events):
        if side == "client":
            client += chunk
            chunk_ends.append((len(client), index))

    def event_at(offset: int) -> int:
        return next(index for end, index in chunk_ends if end >= offset)

    def take(count: int) -> list[tuple[int, int]]:
        return [reply for _, reply in zip(range(count), replies, strict=False)]

    def end_of_data(accepted: int) -> int:
        """How many replies the end of the data gets."""
        return max(accepted, 1) if lmtp else 1

    exchanges: list[WireExchange] = []
    accepted = 0  # recipients accepted in the open transaction
    in_transaction = False
    position = 0
    while (end := client.find(b"\r\n", position)) >= 0:
        line = bytes(client[position:end])
        position = end + 2
        sent_at = event_at(position)
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper()
        taken = take(1)
        code = taken[0][0] if taken else None
        content = b""
        if verb == b"DATA" and code == 354:
            final = client.find(b"\r\n.\r\n", position - 2)
            if final < 0:  # cut off inside the content
                exchanges.append(WireExchange(line, sent_at, tuple(taken)))
                break
            content = bytes(client[position : final + 2])
            position = final + 5
            taken += take(end_of_data(accepted))
            in_transaction = False
        elif (match := _BDAT_LINE.match(line)) is not None:
            size = int(match.group(1))
            content = bytes(client[position : position + size])
            position += size
            if match.group(2) is not None:
                taken += take(end_of_data(accepted) - 1)
                in_transaction = False
        elif verb == b"MAIL":
            in_transaction, accepted = code == 250, 0
        elif verb == b"RCPT":
            if in_transaction and code in (250, 251):
                accepted += 1
        else:  # RSET, LHLO, NOOP... end any transaction
            in_transaction = False
        exchanges.append(WireExchange(line, sent_at, tuple(taken), content))
    return exchanges
