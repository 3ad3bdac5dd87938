"""Message bodies from files and iterables; SIZE, trickling servers, deadlines."""

from __future__ import annotations

import io
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import anysmtp
from tests.servers import AiosmtpdServer, ScriptedConnection, ScriptedServer

pytestmark = pytest.mark.anyio

BODY = b"Subject: stream\r\n\r\n" + b"".join(
    b".line %d\nwith a bare LF\r\n" % number for number in range(20000)
)
EXPECTED = BODY.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def pieces(size: int) -> Iterator[bytes]:
    for start in range(0, len(BODY), size):
        yield BODY[start : start + size]


async def async_pieces(size: int) -> AsyncIterator[bytes]:
    for piece in pieces(size):
        yield piece


async def test_a_binary_file_is_streamed(smtpd: AiosmtpdServer, tmp_path: Path) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(BODY)
    async with anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port) as smtp:
        with path.open("rb") as file:
            assert await smtp.sendmail("a@example.com", ["b@example.com"], file) == {}
    [received] = smtpd.messages
    assert received.data == EXPECTED
    assert f"SIZE={len(BODY)}" in [opt.upper() for opt in received.mail_options]


@pytest.mark.parametrize("size", [61, 1000, 300_000])
async def test_iterables_give_the_same_bytes(smtpd: AiosmtpdServer, size: int) -> None:
    async with anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port) as smtp:
        await smtp.sendmail("a@example.com", ["b@example.com"], pieces(size))
        await smtp.sendmail("a@example.com", ["b@example.com"], async_pieces(size))
    assert [m.data for m in smtpd.messages] == [EXPECTED, EXPECTED]
    assert smtpd.messages[0].mail_options == []  # no SIZE: unknown in advance


def test_the_sync_facade_streams_a_file(smtpd: AiosmtpdServer) -> None:
    with anysmtp.SMTP(smtpd.host, smtpd.port) as server:
        server.sendmail("a@example.com", "b@example.com", io.BytesIO(BODY))
    assert smtpd.messages[0].data == EXPECTED


async def test_a_text_file_is_refused_before_sending(tmp_path: Path) -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        conn.expect(b"QUIT")
        conn.send(b"221 bye\r\n")

    path = tmp_path / "message.txt"
    path.write_text("Subject: text\n\nhello\n")
    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname="c", start_tls=False
        ) as smtp:
            await smtp.ehlo()
            with path.open() as text, pytest.raises(TypeError, match="binary mode"):
                await smtp.sendmail("a@example.com", ["b@example.com"], text)  # type: ignore[arg-type]
    assert server.transcript == b"ehlo c\r\nQUIT\r\n"


async def test_a_stream_that_yields_text_closes_the_connection(
    smtpd: AiosmtpdServer,
) -> None:
    def bad() -> Iterator[object]:
        yield b"Subject: x\r\n\r\n"
        yield "text"

    smtp = anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port)
    await smtp.connect()
    with pytest.raises(TypeError, match="must yield bytes"):
        await smtp.sendmail("a@example.com", ["b@example.com"], bad())  # type: ignore[arg-type]
    assert not smtp.is_connected
    assert smtpd.messages == []


async def test_a_generator_left_half_read_is_closed(smtpd: AiosmtpdServer) -> None:
    # An async generator that anysmtp stops reading is closed at once (its
    # ``finally`` runs), not left to the garbage collector: trio warns about
    # those, and the generator may hold a file or a lock until then.
    closed: list[str] = []

    async def bad() -> AsyncIterator[object]:
        try:
            yield b"Subject: x\r\n\r\n"
            yield "text"
            yield b"never read\r\n"
        finally:
            closed.append("finally")

    stream = bad()
    smtp = anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port)
    await smtp.connect()
    with pytest.raises(TypeError, match="must yield bytes"):
        await smtp.sendmail("a@example.com", ["b@example.com"], stream)  # type: ignore[arg-type]
    assert closed == ["finally"]
    assert not smtp.is_connected
    assert smtpd.messages == []


async def test_size_limit_is_checked_before_sending() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"SIZE 1000",))
        conn.expect(b"QUIT")
        conn.send(b"221 bye\r\n")

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname="c", start_tls=False
        ) as smtp:
            await smtp.ehlo()
            with pytest.raises(anysmtp.SMTPMessageTooLarge) as caught:
                await smtp.sendmail("a@example.com", ["b@example.com"], b"x" * 1001)
    assert isinstance(caught.value, anysmtp.SMTPSenderRefused)
    assert (caught.value.smtp_code, caught.value.size, caught.value.limit) == (
        552,
        1001,
        1000,
    )
    assert server.transcript == b"ehlo c\r\nQUIT\r\n"


async def test_a_trickling_reply_cannot_outlast_the_timeout() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        conn.expect(b"noop")
        for byte in b"250 this reply trickles in one byte at a time\r\n":
            conn.send(bytes([byte]))
            time.sleep(0.02)

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, timeout=0.3, start_tls=False)
        await smtp.connect()
        started = time.monotonic()
        with pytest.raises(anysmtp.SMTPReadTimeoutError):
            await smtp.noop()
        assert time.monotonic() - started < 0.9
        assert not smtp.is_connected


async def test_total_timeout_bounds_the_whole_transaction() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        while conn.read_line():  # until the client gives up and closes
            time.sleep(0.15)  # each reply well within the per-reply timeout
            conn.send(b"250 ok\r\n")

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname="c", timeout=2, start_tls=False
        )
        await smtp.connect()
        await smtp.ehlo()
        with pytest.raises(anysmtp.SMTPTimeoutError, match="did not finish within"):
            await smtp.sendmail(
                "a@example.com",
                ["b@x.org", "c@x.org", "d@x.org"],
                b"hi",
                total_timeout=0.35,
            )
        assert not smtp.is_connected


@pytest.mark.parametrize(
    "body",
    [
        b"Subject: big\r\n\r\n" + b"canonical line\r\n" * 40000,
        b"Subject: big\r\n\r\n" + b"line\r\n" * 60000 + b"no final line ending",
        b"Subject: big\r\n\r\n" + b".dot\r\nline\r\n" * 40000,
        b"Subject: big\r\n\r\n" + b"bare LF\n" * 40000,
        b"Subject: big\r\n\r\n" + b"a.b.c\r\n" * 100000 + b".last\r\n",
        b"Subject: big\r\n\r\n" + (b"QUJD" * 19 + b"\r\n") * 20000 + b".x\r\n",
        b"Subject: big\r\n\r\n" + b"line\r\n" * 300000 + b"bare CR\r",
    ],
    ids=[
        "canonical",
        "no final CRLF",
        "dots",
        "bare LF",
        "last line of many dots",
        "one dot line",
        "bare CR at the end",
    ],
)
async def test_large_bytes_give_the_same_bytes(
    smtpd: AiosmtpdServer, body: bytes
) -> None:
    # Larger than a chunk: a canonical body goes as it is, the others chunk by
    # chunk; what the server keeps is the same either way.
    assert len(body) > 256 * 1024
    async with anysmtp.AsyncSMTP(hostname=smtpd.host, port=smtpd.port) as smtp:
        await smtp.sendmail("a@example.com", ["b@example.com"], body)
    expected = re.sub(rb"\r\n|\n|\r", b"\r\n", body)
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert smtpd.messages[0].data == expected
