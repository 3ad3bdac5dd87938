"""Property tests: no input puts a second command, or an ESMTP parameter the
caller did not give, on the wire.

For arbitrary text in every argument that ends up in a command line (addresses,
ESMTP options, the EHLO name, a verb's arguments, AUTH credentials), either
``ValueError`` is raised and nothing at all is sent, or exactly the expected
lines are: one CRLF, at the end of each.  Checked on the sans-IO functions
(``format_command``, ``mail_path``) and through the client, which talks to a
fake server at the far end of a socket pair (its replies are queued before each
call, so no thread or event loop serves it).

A path is safe when any server finds where it ends: RFC 5321 allows no blank
and no angle bracket inside a path, but in a quoted local part
(:func:`path_problem` is that check, written from the RFC, not from the code).
The client tests then check that MAIL and RCPT carry exactly ``mail_path()``'s
path and the caller's options.
"""

from __future__ import annotations

import base64
import re
import socket
import string
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Final

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import anysmtp
from anysmtp._protocol import (
    MAX_PATH_LENGTH,
    addr_only,
    format_command,
    mail_path,
    quoteaddr,
)

LOCAL: Final = "client.example"

#: The sans-IO properties are cheap: many examples.
SANS_IO: Final = settings(max_examples=400, deadline=None)
#: Through the client, on each backend: fewer (the whole file stays fast).
CLIENT: Final = settings(max_examples=100, deadline=None)

# Strategies -----------------------------------------------------------------------

#: Characters that end lines somewhere (CR, LF, and what str.splitlines() also
#: takes for a line break), other controls, and what addresses are made of.
_DANGEROUS: Final = (
    "\r\n\x00\x01\x0b\x0c\x1b\x1c\x1d\x1e\x1f\x7f\x85\u2028\u2029\t "
    '<>"()[]\\@:;,.=+é\ud800'
)
_CHARACTERS: Final = st.one_of(
    st.sampled_from(_DANGEROUS),
    st.sampled_from(string.ascii_letters + string.digits),
    st.characters(),
)
#: Pieces that, put together, make addresses, parameters and injections.
_FRAGMENTS: Final = st.sampled_from(
    [
        "a",
        "alice",
        "@",
        "example.com",
        "<",
        ">",
        "<>",
        " ",
        '"',
        "(",
        ")",
        "\\",
        " SIZE=1",
        " NOTIFY=NEVER",
        "\r\n",
        "\n",
        "\r",
        "RSET",
        "\r\nRCPT TO:<evil@example.com>",
        "\n.\n",
        "\x00",
        "é",
        "\u2028",
    ]
)
TEXT: Final = st.one_of(
    st.text(_CHARACTERS, max_size=40),
    st.lists(_FRAGMENTS, max_size=8).map("".join),
)
OPTIONS: Final = st.lists(
    st.one_of(TEXT, st.sampled_from(["SMTPUTF8", "BODY=8BITMIME", "SIZE=10"])),
    max_size=3,
)

#: RFC 5321, 4.1.2: a Quoted-string local part (the whole local part).
_QUOTED_LOCAL_PART: Final = re.compile(r'"(?:[^"\\]|\\.)*"(?=@)')


def path_problem(path: str) -> str | None:
    """Why a server could misread where ``path`` ends, or ``None``.

    It must be ``<...>`` with no blank, control character or angle bracket
    inside, but in a quoted string that is the whole local part.
    """
    if not (path.startswith("<") and path.endswith(">")):
        return "not enclosed in <>"
    inner = path[1:-1]
    quoted = _QUOTED_LOCAL_PART.match(inner.split(":")[-1] if ":" in inner else inner)
    if quoted is not None:
        inner = inner.replace(quoted.group(0), '""', 1)
    for char in inner:
        if char in "<> \t" or ord(char) < 32 or ord(char) == 127:
            return f"{char!r} inside"
    return None


# Sans-IO --------------------------------------------------------------------------


@SANS_IO
@given(cmd=TEXT, args=TEXT)
def test_format_command_makes_one_line(cmd: str, args: str) -> None:
    try:
        line = format_command(cmd, args)
    except ValueError:
        return
    assert line == (cmd if args == "" else f"{cmd} {args}") + "\r\n"
    # Whatever the encoding the client uses (a lone surrogate fails to encode:
    # a ValueError again, before sending).
    for encoding in ("ascii", "utf-8"):
        try:
            wire = line.encode(encoding)
        except UnicodeEncodeError:
            continue
        assert wire.count(b"\r") == wire.count(b"\n") == 1
        assert wire.endswith(b"\r\n")


@SANS_IO
@given(address=TEXT)
def test_mail_path_makes_one_line(address: str) -> None:
    try:
        path = mail_path(address)
    except ValueError:
        return
    assert path == quoteaddr(address)
    assert path.startswith("<")
    assert len(path.encode("utf-8", "surrogatepass")) <= MAX_PATH_LENGTH
    assert format_command("mail", f"FROM:{path}") == f"mail FROM:{path}\r\n"


@SANS_IO
@example(address="<<")
@given(address=TEXT)
def test_mail_path_ends_with_a_closing_bracket(address: str) -> None:
    try:
        path = mail_path(address)
    except ValueError:
        return
    assert path.startswith("<")
    assert path.endswith(">")


@SANS_IO
@example(address="alice@example.com RET=HDRS ENVID=x@")
@given(address=TEXT)
def test_mail_path_is_one_token(address: str) -> None:
    try:
        path = mail_path(address)
    except ValueError:
        return
    assert path_problem(path) is None, (address, path)


def test_path_problem_itself() -> None:
    # The check above, on known answers.
    for good in (
        "<>",
        "<a@b.c>",
        '<"john doe"@example.com>',
        '<"a>b"@c.d>',
        "<@x:a@b>",
    ):
        assert path_problem(good) is None, good
    for bad in (
        "<<",
        "<a@b.c SIZE=1>",
        '<a"b> x"@c.d>',
        "<a<b@c.d>",
        "a@b.c",
        "<a@b\x00>",
    ):
        assert path_problem(bad) is not None, bad


# Through the client ----------------------------------------------------------------


class Peer:
    """The fake server: the far end of a socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    def queue(self, replies: bytes) -> None:
        """Replies the client will read, in order, when it asks."""
        self.sock.sendall(replies)

    def take(self) -> bytes:
        """Everything the client sent since the last call."""
        data = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return data
            if not chunk:
                return data
            data += chunk


def ehlo_reply(*extensions: bytes) -> bytes:
    lines = [b"fake", *extensions]
    head = b"".join(b"250-" + each + b"\r\n" for each in lines[:-1])
    return head + b"250 " + lines[-1] + b"\r\n"


@asynccontextmanager
async def fake_session(
    *extensions: bytes, pipelining: bool = False
) -> AsyncIterator[tuple[anysmtp.AsyncSMTP, Peer]]:
    """A client connected to a fake server, after EHLO."""
    ours, theirs = socket.socketpair()
    peer = Peer(theirs)
    advertised = (*extensions, b"PIPELINING") if pipelining else extensions
    peer.queue(b"220 fake ESMTP\r\n" + ehlo_reply(*advertised))
    smtp = anysmtp.AsyncSMTP(
        sock=ours,
        local_hostname=LOCAL,
        timeout=5,
        start_tls=False,
        pipelining=pipelining,
    )
    try:
        await smtp.connect()
        await smtp.ehlo()
        assert peer.take() == b"ehlo client.example\r\n"
        yield smtp, peer
    finally:
        smtp.close()
        theirs.close()


async def outcome(call: Awaitable[object]) -> BaseException | None:
    """``None`` if the call returned, else what it raised (only ValueError, or
    SMTPNotSupportedError for SMTPUTF8, are allowed)."""
    try:
        await call
    except (ValueError, anysmtp.SMTPNotSupportedError) as exc:
        return exc
    return None


def lines_of(sent: bytes) -> list[bytes]:
    """``sent`` cut into CRLF-terminated lines; no CR or LF anywhere else."""
    assert sent.endswith(b"\r\n"), sent
    lines = [line + b"\r\n" for line in sent[:-2].split(b"\r\n")]
    for line in lines:
        assert line.count(b"\r") == line.count(b"\n") == 1, line
    return lines


def encoding_of(smtp: anysmtp.AsyncSMTP) -> str:
    return smtp.command_encoding


def check_path_line(
    line: bytes,
    verb: str,
    keyword: str,
    address: str,
    options: Sequence[str],
    encoding: str,
) -> None:
    """A MAIL or RCPT line: exactly mail_path()'s path, then ``options``."""
    tail = " " + " ".join(options) if options else ""
    expected = f"{verb} {keyword}{mail_path(address)}{tail}\r\n"
    assert line == expected.encode(encoding)


SMTPUTF8_OFFERED: Final = (b"8BITMIME", b"SMTPUTF8")


@pytest.mark.anyio
@CLIENT
@given(sender=TEXT, options=OPTIONS)
async def test_mail(sender: str, options: list[str]) -> None:
    async with fake_session(*SMTPUTF8_OFFERED) as (smtp, peer):
        peer.queue(b"250 ok\r\n")
        raised = await outcome(smtp.mail(sender, options))
        sent = peer.take()
        if raised is not None:
            assert sent == b""
            return
        [line] = lines_of(sent)
        check_path_line(line, "mail", "FROM:", sender, options, encoding_of(smtp))


@pytest.mark.anyio
@CLIENT
@given(recipient=TEXT, options=OPTIONS)
async def test_rcpt(recipient: str, options: list[str]) -> None:
    async with fake_session(*SMTPUTF8_OFFERED) as (smtp, peer):
        peer.queue(b"250 ok\r\n")
        raised = await outcome(smtp.rcpt(recipient, options))
        sent = peer.take()
        if raised is not None:
            assert sent == b""
            return
        [line] = lines_of(sent)
        check_path_line(line, "rcpt", "TO:", recipient, options, encoding_of(smtp))


VERBS: Final = st.sampled_from(["ehlo", "helo", "vrfy", "verify", "expn", "help"])


@pytest.mark.anyio
@CLIENT
@given(method=VERBS, argument=TEXT.filter(bool))
async def test_one_argument_commands(method: str, argument: str) -> None:
    async with fake_session() as (smtp, peer):
        peer.queue(b"250 ok\r\n")
        raised = await outcome(getattr(smtp, method)(argument))
        sent = peer.take()
        if raised is not None:
            assert sent == b""
            return
        verb = "vrfy" if method == "verify" else method
        if method in ("vrfy", "verify", "expn"):
            argument = addr_only(argument)  # smtplib's rule: the bare address
        expected = verb if argument == "" else f"{verb} {argument}"
        assert lines_of(sent) == [f"{expected}\r\n".encode("ascii")]


@pytest.mark.anyio
@CLIENT
@given(verb=TEXT.filter(bool), argument=TEXT)
async def test_docmd(verb: str, argument: str) -> None:
    async with fake_session() as (smtp, peer):
        peer.queue(b"250 ok\r\n")
        raised = await outcome(smtp.docmd(verb, argument))
        sent = peer.take()
        if raised is not None:
            assert sent == b""
            return
        expected = verb if argument == "" else f"{verb} {argument}"
        assert lines_of(sent) == [f"{expected}\r\n".encode("ascii")]


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-8"))


@pytest.mark.anyio
@CLIENT
@given(user=TEXT, password=TEXT, mechanism=st.sampled_from(["PLAIN", "LOGIN"]))
async def test_login(user: str, password: str, mechanism: str) -> None:
    async with fake_session(b"AUTH " + mechanism.encode()) as (smtp, peer):
        if mechanism == "PLAIN":
            peer.queue(b"235 2.7.0 ok\r\n")
        else:
            peer.queue(b"334 UGFzc3dvcmQ6\r\n235 2.7.0 ok\r\n")
        raised = await outcome(smtp.login(user, password))
        sent = peer.take()
        if raised is not None:
            assert sent == b""
            return
        if mechanism == "PLAIN":
            expected = [b"AUTH PLAIN " + b64(f"\0{user}\0{password}") + b"\r\n"]
        else:
            expected = [b"AUTH LOGIN " + b64(user) + b"\r\n", b64(password) + b"\r\n"]
        assert lines_of(sent) == expected


@pytest.mark.anyio
@CLIENT
@given(user=TEXT, token=TEXT)
async def test_login_oauth(user: str, token: str) -> None:
    async with fake_session(b"AUTH XOAUTH2") as (smtp, peer):
        peer.queue(b"235 2.7.0 ok\r\n")
        raised = await outcome(smtp.login_oauth(user, token))
        sent = peer.take()
        if raised is not None:
            assert sent == b""
            return
        initial = b64(f"user={user}\x01auth=Bearer {token}\x01\x01")
        assert lines_of(sent) == [b"AUTH XOAUTH2 " + initial + b"\r\n"]


MESSAGE: Final = b"Subject: fuzz\r\n\r\nbody\r\n"


async def check_sendmail(
    pipelining: bool,
    sender: str,
    recipients: list[str],
    mail_options: list[str],
    rcpt_options: list[str],
) -> None:
    async with fake_session(*SMTPUTF8_OFFERED, pipelining=pipelining) as (smtp, peer):
        peer.queue(
            b"250 ok\r\n"
            + b"250 ok\r\n" * len(recipients)
            + b"354 go ahead\r\n250 queued\r\n"
        )
        raised = await outcome(
            smtp.sendmail(sender, recipients, MESSAGE, mail_options, rcpt_options)
        )
        sent = peer.take()
        if raised is not None:
            assert sent == b""
            return
        head, separator, body = sent.partition(b"data\r\n")
        assert separator
        assert body == MESSAGE + b".\r\n"
        lines = lines_of(head)
        assert len(lines) == 1 + len(recipients)
        encoding = encoding_of(smtp)
        check_path_line(lines[0], "mail", "FROM:", sender, mail_options, encoding)
        for line, recipient in zip(lines[1:], recipients, strict=True):
            check_path_line(line, "rcpt", "TO:", recipient, rcpt_options, encoding)


@pytest.mark.anyio
@CLIENT
@given(
    sender=TEXT,
    recipients=st.lists(TEXT, min_size=1, max_size=3),
    mail_options=OPTIONS,
    rcpt_options=OPTIONS,
)
async def test_sendmail_sequential(
    sender: str,
    recipients: list[str],
    mail_options: list[str],
    rcpt_options: list[str],
) -> None:
    await check_sendmail(False, sender, recipients, mail_options, rcpt_options)


@pytest.mark.anyio
@CLIENT
@given(
    sender=TEXT,
    recipients=st.lists(TEXT, min_size=1, max_size=3),
    mail_options=OPTIONS,
    rcpt_options=OPTIONS,
)
async def test_sendmail_pipelined(
    sender: str,
    recipients: list[str],
    mail_options: list[str],
    rcpt_options: list[str],
) -> None:
    await check_sendmail(True, sender, recipients, mail_options, rcpt_options)


# The sync facade, over the same fake server ----------------------------------------


@settings(max_examples=40, deadline=None)
@given(sender=TEXT, recipient=TEXT, options=OPTIONS)
def test_facade_mail_and_rcpt(sender: str, recipient: str, options: list[str]) -> None:
    ours, theirs = socket.socketpair()
    peer = Peer(theirs)
    peer.queue(b"220 fake ESMTP\r\n" + ehlo_reply(*SMTPUTF8_OFFERED))
    client = anysmtp.SMTP(local_hostname=LOCAL, timeout=5)
    try:
        assert client.connect(sock=ours) == (220, b"fake ESMTP")
        client.ehlo()
        assert peer.take() == b"ehlo client.example\r\n"
        for verb, keyword, address in (
            ("mail", "FROM:", sender),
            ("rcpt", "TO:", recipient),
        ):
            peer.queue(b"250 ok\r\n")
            try:
                getattr(client, verb)(address, options)
            except (ValueError, anysmtp.SMTPNotSupportedError):
                assert peer.take() == b""
                continue
            [line] = lines_of(peer.take())
            check_path_line(
                line, verb, keyword, address, options, client.command_encoding
            )
    finally:
        client.close()
        theirs.close()
