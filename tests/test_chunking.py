"""CHUNKING (RFC 3030): BDAT instead of DATA, with BINARYMIME where asked for.

The scripted server understands BDAT: it reads each chunk's exact octet count,
records the commands and the reassembled message of every transaction, and can
hold its replies until a batch of commands has come (a client that waited for a
reply there would stall).  Results and exceptions are compared with the DATA
path's on the same server.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

import anysmtp
from anysmtp._body import CHUNK_SIZE
from tests.servers import ScriptedConnection, ScriptedServer

pytestmark = pytest.mark.anyio

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"
#: Bare LF line endings and a line starting with a dot: BDAT sends the dot as it
#: is and the line endings as CRLF.
MESSAGE = b"Subject: chunked\n\n.dot line\nbody"
DELIVERED = b"Subject: chunked\r\n\r\n.dot line\r\nbody\r\n"
BDAT_LINE = re.compile(rb"BDAT (\d+)( LAST)?\r\n", re.IGNORECASE)


@dataclass
class Server:
    """How the server answers, and what it saw."""

    extensions: tuple[bytes, ...] = (b"PIPELINING", b"CHUNKING")
    mail: bytes = b"250 ok"
    rcpts: dict[str, bytes] = field(default_factory=dict)
    #: Reply to the n-th BDAT chunk of a transaction (default 250).
    chunk_replies: dict[int, bytes] = field(default_factory=dict)
    final: bytes = b"250 queued"
    #: Commands as received (BDAT lines included, chunk contents not).
    commands: list[bytes] = field(default_factory=list)
    #: Every delivered message: (MAIL line, recipients, message).
    delivered: list[tuple[bytes, list[str], bytes]] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)
    #: Answer nothing before this many commands have come: the client must
    #: pipeline them.
    batch: int = 0
    #: For each command, whether more bytes had already come after it: a
    #: client that waits for the replies sends nothing ahead of them.
    sent_ahead: list[bool] = field(default_factory=list)
    _held: list[bytes] = field(default_factory=list)

    def script(self, conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo(self.extensions)
        mail_line = b""
        recipients: list[str] = []
        message = b""
        chunk_number = 0
        refused_chunk = False
        while line := conn.read_line():
            self.commands.append(line)
            self.sent_ahead.append(bool(conn._buffer))
            verb = line.split(b" ", 1)[0].strip().lower()
            if verb == b"mail":
                mail_line, recipients, message = line, [], b""
                chunk_number, refused_chunk = 0, False
                reply = self.mail
                if not reply.startswith(b"250"):
                    mail_line = b""
            elif verb == b"rcpt":
                address = line.split(b":", 1)[1].strip().strip(b"<>").decode()
                reply = self.rcpts.get(address, b"250 ok")
                if mail_line and reply.startswith(b"250"):
                    recipients.append(address)
            elif verb == b"bdat":
                match = BDAT_LINE.fullmatch(line)
                assert match is not None, line
                size, last = int(match[1]), match[2] is not None
                self.chunk_sizes.append(size)
                message += conn.read_exactly(size)
                chunk_number += 1
                if not mail_line or not recipients:
                    reply = b"503 5.5.1 no valid recipients"
                elif refused_chunk or chunk_number in self.chunk_replies:
                    refused_chunk = True
                    reply = self.chunk_replies.get(chunk_number, b"554 discarded")
                elif last:
                    reply = self.final
                    if reply.startswith(b"250"):
                        self.delivered.append((mail_line, recipients, message))
                else:
                    reply = b"250 2.0.0 chunk ok"
                if last:
                    mail_line = b""
            elif verb == b"data":
                if not mail_line or not recipients:
                    self._reply(conn, b"554 no valid recipients")
                    continue
                self._reply(conn, b"354 go ahead")
                body = conn.read_data()
                message = body[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
                if message.startswith(b".."):
                    message = message[1:]
                reply = self.final
                if reply.startswith(b"250"):
                    self.delivered.append((mail_line, recipients, message))
                mail_line = b""
            elif verb == b"rset":
                mail_line, reply = b"", b"250 reset"
            elif verb == b"quit":
                self._reply(conn, b"221 bye")
                return
            else:
                reply = b"500 what?"
            self._reply(conn, reply)
            if reply.startswith(b"421"):
                return  # closing, as RFC 5321 says

    def _reply(self, conn: ScriptedConnection, reply: bytes) -> None:
        self._held.append(reply + b"\r\n")
        if len(self.commands) >= self.batch:
            conn.send(b"".join(self._held))
            self._held.clear()


async def send_async(
    server: Server, *args: Any, **options: Any
) -> tuple[object, bytes]:
    """``sendmail(*args)`` with the async API; its outcome and the transcript."""
    with ScriptedServer(server.script) as scripted:
        async with anysmtp.AsyncSMTP(
            hostname=scripted.host, port=scripted.port, timeout=5, **options
        ) as smtp:
            try:
                outcome: object = await smtp.sendmail(*args)
            except Exception as exc:
                outcome = exc
    return outcome, bytes(scripted.transcript)


def send_sync(server: Server, *args: Any) -> tuple[object, bytes]:
    """The same through the sync facade."""
    with (
        ScriptedServer(server.script) as scripted,
        anysmtp.SMTP(scripted.host, scripted.port, timeout=5) as smtp,
    ):
        try:
            outcome: object = smtp.sendmail(*args)
        except Exception as exc:
            outcome = exc
    return outcome, bytes(scripted.transcript)


def same_outcome(first: object, second: object) -> bool:
    if isinstance(first, BaseException):
        return type(first) is type(second) and first.args == getattr(
            second, "args", None
        )
    return first == second


async def test_bdat_follows_the_envelope_replies(anyio_backend: str) -> None:
    # MAIL and both RCPTs in one flight (the server answers none before the
    # last), the message after their replies: a chunk sent blind, with no
    # accepted recipient, may be read as commands by a server that refuses it.
    server = Server(batch=3)
    outcome, transcript = await send_async(server, ALICE, [BOB, CAROL], MESSAGE)
    assert outcome == {}
    assert server.delivered == [
        (b"mail FROM:<alice@example.com>\r\n", [BOB, CAROL], DELIVERED)
    ]
    assert (
        b"mail FROM:<alice@example.com>\r\n"
        b"rcpt TO:<bob@example.com>\r\nrcpt TO:<carol@example.com>\r\n"
        b"BDAT %d LAST\r\n%b" % (len(DELIVERED), DELIVERED)
    ) in transcript
    last_rcpt = server.commands.index(b"rcpt TO:<carol@example.com>\r\n")
    assert not server.sent_ahead[last_rcpt]
    assert b"data" not in transcript.lower()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "serial"])
async def test_send_returns_the_final_reply(
    anyio_backend: str, pipelining: bool
) -> None:
    extensions = (b"PIPELINING", b"CHUNKING") if pipelining else (b"CHUNKING",)
    server = Server(extensions=extensions, final=b"250 2.0.0 queued as ABC")
    with ScriptedServer(server.script) as scripted:
        result = await anysmtp.send(
            MESSAGE,
            sender=ALICE,
            recipients=[BOB],
            hostname=scripted.host,
            port=scripted.port,
            start_tls=False,
        )
    assert result == ({}, "2.0.0 queued as ABC")


async def test_without_pipelining_one_command_at_a_time(anyio_backend: str) -> None:
    server = Server(extensions=(b"CHUNKING",))
    outcome, _ = await send_async(server, ALICE, [BOB], MESSAGE)
    assert outcome == {}
    assert [line.split(b" ")[0].lower() for line in server.commands] == [
        b"mail",
        b"rcpt",
        b"bdat",
        b"quit\r\n",
    ]
    assert server.delivered[0][2] == DELIVERED


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "serial"])
async def test_large_message_streamed_in_chunks(
    anyio_backend: str, pipelining: bool
) -> None:
    line = b"x" * 70 + b"\n"
    body = line * ((4 * CHUNK_SIZE) // len(line))  # 4 chunks, CRLF grows them
    expected = body.replace(b"\n", b"\r\n")
    extensions = (b"PIPELINING", b"CHUNKING") if pipelining else (b"CHUNKING",)
    server = Server(extensions=extensions)
    outcome, _ = await send_async(server, ALICE, [BOB], io.BytesIO(body))
    assert outcome == {}
    assert server.delivered[0][2] == expected
    assert len(server.chunk_sizes) >= 4
    assert sum(server.chunk_sizes) == len(expected)
    bdat = [each for each in server.commands if each.lower().startswith(b"bdat")]
    assert all(not each.endswith(b"LAST\r\n") for each in bdat[:-1])
    assert bdat[-1].endswith(b" LAST\r\n")


async def test_chunking_false_uses_data(anyio_backend: str) -> None:
    server = Server()
    outcome, transcript = await send_async(
        server, ALICE, [BOB], MESSAGE, chunking=False
    )
    assert outcome == {}
    assert b"\r\ndata\r\n" in transcript
    assert b"BDAT" not in transcript
    assert server.delivered[0][2] == DELIVERED


SCENARIOS = {
    "sender refused": Server(mail=b"553 5.7.1 no"),
    "sender 421": Server(mail=b"421 4.3.2 closing"),
    "one recipient refused": Server(rcpts={CAROL: b"550 5.1.1 unknown"}),
    "all recipients refused": Server(
        rcpts={BOB: b"550 5.1.1 unknown", CAROL: b"551 5.1.1 moved"}
    ),
    "recipient 421": Server(rcpts={CAROL: b"421 4.3.2 closing"}),
    "message refused": Server(final=b"554 5.6.0 rejected"),
    "message 421": Server(final=b"421 4.3.2 closing"),
}


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "serial"])
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_refusals_match_the_data_path(
    anyio_backend: str, name: str, pipelining: bool
) -> None:
    def server(chunking: bool) -> Server:
        template = SCENARIOS[name]
        extensions: tuple[bytes, ...] = (b"CHUNKING",) if chunking else ()
        if pipelining:
            extensions += (b"PIPELINING",)
        return Server(
            extensions=extensions,
            mail=template.mail,
            rcpts=dict(template.rcpts),
            final=template.final,
        )

    bdat_server, data_server = server(True), server(False)
    outcome, transcript = await send_async(bdat_server, ALICE, [BOB, CAROL], MESSAGE)
    expected, _ = await send_async(data_server, ALICE, [BOB, CAROL], MESSAGE)
    assert same_outcome(outcome, expected), (outcome, expected)
    assert bdat_server.delivered == data_server.delivered
    # A message goes only after a recipient was accepted.
    refused_before = {"sender refused", "sender 421", "all recipients refused"}
    assert (b"BDAT" in transcript) == (name not in refused_before | {"recipient 421"})
    # Whatever was refused, the transaction was reset or the connection closed.
    closed = b"421" in (SCENARIOS[name].mail + SCENARIOS[name].final) or any(
        reply.startswith(b"421") for reply in SCENARIOS[name].rcpts.values()
    )
    if not closed and not isinstance(outcome, dict):
        assert bdat_server.commands[-2].lower() == b"rset\r\n"


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "serial"])
async def test_refused_chunk_stops_the_upload(
    anyio_backend: str, pipelining: bool
) -> None:
    extensions = (b"PIPELINING", b"CHUNKING") if pipelining else (b"CHUNKING",)
    server = Server(extensions=extensions, chunk_replies={1: b"552 5.3.4 too big"})
    body = io.BytesIO(b"y" * (20 * CHUNK_SIZE))  # streamed: chunk by chunk
    outcome, _ = await send_async(server, ALICE, [BOB], body)
    assert isinstance(outcome, anysmtp.SMTPDataError)
    assert (outcome.smtp_code, outcome.smtp_error) == (552, b"5.3.4 too big")
    # No more than the window of chunks went after the refused one.
    assert len(server.chunk_sizes) <= (4 if pipelining else 1)
    assert server.commands[-2:] == [b"RSET\r\n", b"QUIT\r\n"] or [
        each.lower() for each in server.commands[-2:]
    ] == [b"rset\r\n", b"quit\r\n"]
    assert server.delivered == []


#: A SIZE limit that falls inside the fourth chunk of a stream.
SIZE_LIMIT = 3 * CHUNK_SIZE + CHUNK_SIZE // 2


def oversized_stream() -> io.BytesIO:
    """A message of unknown size (no SIZE= on MAIL) over ``SIZE_LIMIT``, whose
    lines look like commands (what a server that read the rest of a chunk as
    commands would run)."""
    line = b"RSET\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.net>\r\n"
    return io.BytesIO(line * (8 * CHUNK_SIZE // len(line)))


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "serial"])
async def test_a_stream_stops_short_of_the_size_limit(
    anyio_backend: str, pipelining: bool
) -> None:
    # No chunk goes past the server's SIZE: a server that finds a chunk too
    # large half-way may take the rest of it for commands (Exim does).
    extensions: tuple[bytes, ...] = (b"CHUNKING", b"SIZE %d" % SIZE_LIMIT)
    if pipelining:
        extensions += (b"PIPELINING",)
    server = Server(extensions=extensions)
    outcome, _ = await send_async(server, ALICE, [BOB], oversized_stream())
    assert isinstance(outcome, anysmtp.SMTPMessageTooLarge)
    assert outcome.smtp_code == 552
    assert outcome.limit == SIZE_LIMIT
    assert outcome.size > SIZE_LIMIT
    assert server.chunk_sizes == [CHUNK_SIZE] * 3
    assert [each.split(b" ")[0].lower() for each in server.commands] == [
        b"mail",
        b"rcpt",
        b"bdat",
        b"bdat",
        b"bdat",
        b"rset\r\n",
        b"quit\r\n",
    ]
    assert server.delivered == []


def test_a_stream_stops_short_of_the_size_limit_sync() -> None:
    server = Server(extensions=(b"PIPELINING", b"CHUNKING", b"SIZE %d" % SIZE_LIMIT))
    outcome, _ = send_sync(server, ALICE, [BOB], oversized_stream())
    assert isinstance(outcome, anysmtp.SMTPMessageTooLarge)
    assert server.chunk_sizes == [CHUNK_SIZE] * 3
    # QUIT as smtplib's __exit__ says it.
    assert server.commands[-2:] == [b"rset\r\n", b"QUIT\r\n"]


async def test_a_line_end_added_at_the_limit_stops_the_message(
    anyio_backend: str,
) -> None:
    # The message's own size is within SIZE (so MAIL goes), the CRLF that BDAT
    # adds at its end is not: nothing of it is sent.
    server = Server(extensions=(b"PIPELINING", b"CHUNKING", b"SIZE 1000"))
    outcome, _ = await send_async(server, ALICE, [BOB], b"z" * 999)
    assert isinstance(outcome, anysmtp.SMTPMessageTooLarge)
    assert (outcome.size, outcome.limit) == (1001, 1000)
    assert server.chunk_sizes == []
    assert server.commands[-2:] == [b"rset\r\n", b"QUIT\r\n"]


async def test_a_refused_chunk_before_the_limit_is_the_servers_refusal(
    anyio_backend: str,
) -> None:
    server = Server(
        extensions=(b"PIPELINING", b"CHUNKING", b"SIZE %d" % SIZE_LIMIT),
        chunk_replies={2: b"552 5.3.4 too big"},
    )
    outcome, _ = await send_async(server, ALICE, [BOB], oversized_stream())
    assert isinstance(outcome, anysmtp.SMTPDataError)
    assert (outcome.smtp_code, outcome.smtp_error) == (552, b"5.3.4 too big")
    assert server.chunk_sizes == [CHUNK_SIZE] * 3
    assert server.delivered == []


async def test_binarymime_sends_the_bytes_as_they_are(anyio_backend: str) -> None:
    server = Server(extensions=(b"PIPELINING", b"CHUNKING", b"BINARYMIME"), batch=2)
    binary = b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\n.\r\r\n\xff"
    outcome, _ = await send_async(server, ALICE, [BOB], binary, ["BODY=BINARYMIME"])
    assert outcome == {}
    mail_line, _, delivered = server.delivered[0]
    assert mail_line == b"mail FROM:<alice@example.com> BODY=BINARYMIME\r\n"
    assert delivered == binary


async def test_nul_bytes_choose_binarymime_when_offered(anyio_backend: str) -> None:
    server = Server(extensions=(b"CHUNKING", b"BINARYMIME"))
    binary = b"Subject: raw\r\n\r\n\x00\n"
    outcome, _ = await send_async(server, ALICE, [BOB], binary)
    assert outcome == {}
    assert server.delivered == [
        (b"mail FROM:<alice@example.com> BODY=BINARYMIME\r\n", [BOB], binary)
    ]


@pytest.mark.parametrize(
    ("extensions", "options"),
    [((b"PIPELINING",), {}), ((b"CHUNKING", b"BINARYMIME"), {"chunking": False})],
    ids=["not offered", "disabled"],
)
async def test_binarymime_without_bdat_sends_nothing(
    anyio_backend: str, extensions: tuple[bytes, ...], options: dict[str, bool]
) -> None:
    server = Server(extensions=extensions)
    outcome, _ = await send_async(
        server, ALICE, [BOB], b"\x00", ["BODY=BINARYMIME"], **options
    )
    assert isinstance(outcome, anysmtp.SMTPNotSupportedError)
    assert "BINARYMIME" in str(outcome)
    assert [each.lower() for each in server.commands] == [b"quit\r\n"]


async def test_overridden_hook_keeps_data(anyio_backend: str) -> None:
    calls: list[bytes] = []

    class Recording(anysmtp.AsyncSMTP):
        async def data(self, msg: Any) -> anysmtp.SMTPResponse:
            calls.append(msg)
            return await super().data(msg)

    server = Server()
    with ScriptedServer(server.script) as scripted:
        async with Recording(hostname=scripted.host, port=scripted.port) as smtp:
            assert await smtp.sendmail(ALICE, [BOB], MESSAGE) == {}
    assert calls == [MESSAGE]
    assert server.delivered[0][2] == DELIVERED
    assert b"BDAT" not in bytes(scripted.transcript)


def test_facade_uses_bdat() -> None:
    server = Server()
    outcome, transcript = send_sync(server, ALICE, [BOB, CAROL], MESSAGE)
    assert outcome == {}
    assert b"BDAT %d LAST\r\n" % len(DELIVERED) in transcript
    assert server.delivered == [
        (b"mail FROM:<alice@example.com>\r\n", [BOB, CAROL], DELIVERED)
    ]


def test_facade_refusal_matches_smtplib_data_path() -> None:
    import smtplib

    bdat_server = Server(rcpts={BOB: b"550 5.1.1 unknown"})
    data_server = Server(extensions=(), rcpts={BOB: b"550 5.1.1 unknown"})
    outcome, _ = send_sync(bdat_server, ALICE, [BOB, CAROL], DELIVERED)
    with (
        ScriptedServer(data_server.script) as scripted,
        smtplib.SMTP(scripted.host, scripted.port, timeout=5) as smtp,
    ):
        expected = smtp.sendmail(ALICE, [BOB, CAROL], DELIVERED)
    assert outcome == expected == {BOB: (550, b"5.1.1 unknown")}
    assert bdat_server.delivered == data_server.delivered


@pytest.mark.parametrize("offered", [True, False], ids=["offered", "not offered"])
async def test_send_message_binary_part(anyio_backend: str, offered: bool) -> None:
    import email

    message = email.message_from_bytes(
        b"From: alice@example.com\r\nTo: bob@example.com\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01raw\r\nbytes\xff"
    )
    extensions = (b"CHUNKING", b"BINARYMIME") if offered else (b"CHUNKING",)
    server = Server(extensions=extensions)
    with ScriptedServer(server.script) as scripted:
        async with anysmtp.AsyncSMTP(
            hostname=scripted.host, port=scripted.port, timeout=5
        ) as smtp:
            assert await smtp.send_message(message) == {}
    mail_line, _, delivered = server.delivered[0]
    body = b"\r\n\r\n\x00\x01raw\r\nbytes\xff"
    if offered:
        # As it is: not even a final CRLF is added.
        assert mail_line == b"mail FROM:<alice@example.com> BODY=BINARYMIME\r\n"
        assert delivered.endswith(body)
    else:
        assert mail_line == b"mail FROM:<alice@example.com>\r\n"
        assert delivered.endswith(body + b"\r\n")


@pytest.mark.parametrize(
    ("body", "delivered"),
    [
        (b"z" * (3 * CHUNK_SIZE) + b"\r\n", b"z" * (3 * CHUNK_SIZE) + b"\r\n"),
        (b".z\r\n" * CHUNK_SIZE, b".z\r\n" * CHUNK_SIZE),
        (b"z" * (3 * CHUNK_SIZE), b"z" * (3 * CHUNK_SIZE) + b"\r\n"),
    ],
    ids=["crlf", "dots", "no final crlf"],
)
async def test_large_canonical_message_is_one_chunk(
    anyio_backend: str, body: bytes, delivered: bytes
) -> None:
    server = Server()
    outcome, _ = await send_async(server, ALICE, [BOB], body)
    assert outcome == {}
    assert server.chunk_sizes == [len(delivered)]
    assert server.delivered[0][2] == delivered
