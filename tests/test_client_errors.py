"""AsyncSMTP's failure paths against scripted servers, on every backend.

Each test checks what the client returned or raised, whether the connection is
still open, and the exact bytes the server received.  Every scenario smtplib can
run is also run with the stdlib's :class:`smtplib.SMTP` against the same script
(:func:`run_both`): return value, exception type and arguments, transcript and
connection state must all be the same, so smtplib stays the reference for every
expectation written here.

The async clients here pass ``start_tls=False``: by default the async API says
EHLO right after the greeting to look for STARTTLS (aiosmtplib's behaviour),
which smtplib never does; test_transport.py covers that default.
"""

from __future__ import annotations

import smtplib
import socket
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

import anysmtp
from anysmtp._protocol import MAX_REPLY_SIZE
from tests.servers import ScriptedConnection, ScriptedServer, drain, exchange

pytestmark = pytest.mark.anyio

Script = Callable[[ScriptedConnection], None]

LOCAL = "client.example"
EHLO = b"ehlo client.example\r\n"
HELO = b"helo client.example\r\n"
ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"
DAVE = "dave@example.com"
MAIL = b"mail FROM:<alice@example.com>\r\n"
RCPT_BOB = b"rcpt TO:<bob@example.com>\r\n"
RCPT_CAROL = b"rcpt TO:<carol@example.com>\r\n"
RCPT_DAVE = b"rcpt TO:<dave@example.com>\r\n"
MESSAGE = b"Subject: hi\r\n\r\n.dot\r\nbody\r\n"
#: MESSAGE as DATA transmits it: dot-stuffed, then the end-of-data line.
MESSAGE_WIRE = b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"
DATA = b"data\r\n"
RSET = b"rset\r\n"


# Helpers ---------------------------------------------------------------------


def answer_all(conn: ScriptedConnection) -> None:
    """A server that greets and accepts every command until the client leaves."""
    conn.send(b"220 scripted ESMTP\r\n")
    while line := conn.read_line():
        verb = line[:4].lower()
        if verb == b"data":
            conn.send(b"354 go ahead\r\n")
            conn.read_data()
            conn.send(b"250 queued\r\n")
        elif verb == b"quit":
            conn.send(b"221 bye\r\n")
        else:
            conn.send(b"250 ok\r\n")


@dataclass
class Outcome:
    """What one client did against one scripted connection."""

    #: The return value, or the exception raised.
    result: Any
    #: Every byte the server received.
    transcript: bytes
    #: Whether the client still had its connection after the call.
    connected: bool


def comparable(result: object) -> object:
    """Exceptions compare by type and arguments, everything else by value."""
    if isinstance(result, BaseException):
        return (type(result), result.args)
    return result


async def run_anysmtp(script: Script, method: str, *args: Any) -> Outcome:
    """Connect an AsyncSMTP to a server running ``script``; call ``method``."""
    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        )
        try:
            await smtp.connect()
            result: Any
            try:
                result = await getattr(smtp, method)(*args)
            except Exception as exc:
                result = exc
            connected = smtp.is_connected
        finally:
            smtp.close()
    return Outcome(result, bytes(server.transcript), connected)


def run_smtplib(script: Script, method: str, args: tuple[Any, ...]) -> Outcome:
    """The same with the standard library's blocking smtplib.SMTP."""
    with ScriptedServer(script) as server:
        client = smtplib.SMTP(server.host, server.port, local_hostname=LOCAL, timeout=5)
        try:
            result: Any
            try:
                result = getattr(client, method)(*args)
            except Exception as exc:
                result = exc
            connected = client.sock is not None
        finally:
            client.close()
    return Outcome(result, bytes(server.transcript), connected)


async def run_both(script: Script, method: str, *args: Any) -> Outcome:
    """Run the call with anysmtp and with smtplib; both must agree exactly.

    :returns: anysmtp's outcome, for the test's own assertions.
    """
    ours = await run_anysmtp(script, method, *args)
    reference = await anyio.to_thread.run_sync(run_smtplib, script, method, args)
    assert comparable(ours.result) == comparable(reference.result)
    assert ours.transcript == reference.transcript
    assert ours.connected == reference.connected
    return ours


# sendmail -------------------------------------------------------------------


async def test_sender_refused_sends_rset() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn, (b"mail", b"553 5.7.1 sender refused\r\n"), (b"rset", b"250 ok\r\n")
        )
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB], MESSAGE)
    exc = outcome.result
    assert isinstance(exc, anysmtp.SMTPSenderRefused)
    assert (exc.smtp_code, exc.smtp_error, exc.sender) == (
        553,
        b"5.7.1 sender refused",
        ALICE,
    )
    assert exc.args == (553, b"5.7.1 sender refused", ALICE)
    assert outcome.transcript == EHLO + MAIL + RSET
    assert outcome.connected


async def test_sender_refused_with_421_closes_without_rset() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(conn, (b"mail", b"421 4.3.2 shutting down\r\n"))
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB], MESSAGE)
    assert comparable(outcome.result) == (
        anysmtp.SMTPSenderRefused,
        (421, b"4.3.2 shutting down", ALICE),
    )
    assert outcome.transcript == EHLO + MAIL
    assert not outcome.connected


async def test_one_recipient_refused_message_still_sent() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"550 5.1.1 no such user\r\n"),
            (b"rcpt", b"251 will forward\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        conn.read_data()
        conn.send(b"250 queued\r\n")
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB, CAROL], MESSAGE)
    assert outcome.result == {BOB: (550, b"5.1.1 no such user")}
    assert outcome.transcript == EHLO + MAIL + RCPT_BOB + RCPT_CAROL + DATA + (
        MESSAGE_WIRE
    )
    assert outcome.connected


async def test_a_str_recipient_is_one_recipient() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        conn.read_data()
        conn.send(b"250 queued\r\n")
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, BOB, MESSAGE)
    assert outcome.result == {}
    assert outcome.transcript == EHLO + MAIL + RCPT_BOB + DATA + MESSAGE_WIRE


async def test_all_recipients_refused_sends_rset() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"550 5.1.1 no such user\r\n"),
            (b"rcpt", b"452 4.2.2 mailbox full\r\n"),
            (b"rset", b"250 ok\r\n"),
        )
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB, CAROL], MESSAGE)
    exc = outcome.result
    assert isinstance(exc, anysmtp.SMTPRecipientsRefused)
    assert exc.recipients == {
        BOB: (550, b"5.1.1 no such user"),
        CAROL: (452, b"4.2.2 mailbox full"),
    }
    assert outcome.transcript == EHLO + MAIL + RCPT_BOB + RCPT_CAROL + RSET
    assert outcome.connected


async def test_421_on_rcpt_closes_with_refusals_so_far() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"550 5.1.1 no such user\r\n"),
            (b"rcpt", b"421 4.3.2 going down\r\n"),
        )
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB, CAROL, DAVE], MESSAGE)
    exc = outcome.result
    assert isinstance(exc, anysmtp.SMTPRecipientsRefused)
    assert exc.recipients == {
        BOB: (550, b"5.1.1 no such user"),
        CAROL: (421, b"4.3.2 going down"),
    }
    assert outcome.transcript == EHLO + MAIL + RCPT_BOB + RCPT_CAROL
    assert not outcome.connected


async def test_data_command_refused() -> None:
    # smtplib's data() raises at once when DATA is not answered with 354, so
    # sendmail sends no RSET in this case (it does after a refused message).
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"554 5.5.1 no valid recipients\r\n"),
        )
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB], MESSAGE)
    assert comparable(outcome.result) == (
        anysmtp.SMTPDataError,
        (554, b"5.5.1 no valid recipients"),
    )
    assert outcome.transcript == EHLO + MAIL + RCPT_BOB + DATA
    assert outcome.connected


async def test_message_refused_after_data_sends_rset() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        conn.read_data()
        conn.send(b"552 5.3.4 message too big\r\n")
        exchange(conn, (b"rset", b"250 ok\r\n"))
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB], MESSAGE)
    exc = outcome.result
    assert isinstance(exc, anysmtp.SMTPDataError)
    assert (exc.smtp_code, exc.smtp_error) == (552, b"5.3.4 message too big")
    assert outcome.transcript == EHLO + MAIL + RCPT_BOB + DATA + MESSAGE_WIRE + RSET
    assert outcome.connected


async def test_message_refused_with_421_closes() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        conn.read_data()
        conn.send(b"421 4.3.2 bye\r\n")
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB], MESSAGE)
    assert comparable(outcome.result) == (anysmtp.SMTPDataError, (421, b"4.3.2 bye"))
    assert outcome.transcript == EHLO + MAIL + RCPT_BOB + DATA + MESSAGE_WIRE
    assert not outcome.connected


async def test_no_recipients() -> None:
    # docs/compatibility.md, "An empty recipient list": smtplib sends MAIL and
    # RSET; anysmtp raises the same exception type before sending anything.
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        drain(conn)

    outcome = await run_anysmtp(script, "sendmail", ALICE, [], MESSAGE)
    assert isinstance(outcome.result, anysmtp.SMTPNoRecipientsError)
    assert isinstance(outcome.result, anysmtp.SMTPRecipientsRefused)
    assert isinstance(outcome.result, ValueError)
    assert outcome.result.recipients == {}
    assert outcome.transcript == EHLO


async def test_size_and_options_with_esmtp() -> None:
    message = "Subject: size\n\nline one\nline two\r\n"
    normalised = message.replace("\r\n", "\n").replace("\n", "\r\n").encode()

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"SIZE 1000000", b"8BITMIME", b"DSN"))
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        conn.read_data()
        conn.send(b"250 queued\r\n")
        drain(conn)

    outcome = await run_both(
        script, "sendmail", ALICE, [BOB], message, ["BODY=8BITMIME"], ["NOTIFY=NEVER"]
    )
    assert outcome.result == {}
    assert outcome.transcript == (
        EHLO
        + b"mail FROM:<alice@example.com> size=%d BODY=8BITMIME\r\n" % len(normalised)
        + b"rcpt TO:<bob@example.com> NOTIFY=NEVER\r\n"
        + DATA
        + normalised
        + b".\r\n"
    )
    assert len(normalised) > len(message)


async def test_no_size_option_when_not_advertised() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"8BITMIME",))
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        conn.read_data()
        conn.send(b"250 queued\r\n")
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB], MESSAGE)
    assert outcome.transcript == EHLO + MAIL + RCPT_BOB + DATA + MESSAGE_WIRE


async def test_ehlo_refused_falls_back_to_helo_without_options() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 old server\r\n")
        exchange(
            conn,
            (b"ehlo", b"502 5.5.2 what?\r\n"),
            (b"helo", b"250 old server\r\n"),
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        conn.read_data()
        conn.send(b"250 queued\r\n")
        drain(conn)

    outcome = await run_both(
        script, "sendmail", ALICE, [BOB], MESSAGE, ["BODY=8BITMIME"], ["NOTIFY=NEVER"]
    )
    assert outcome.result == {}
    # No ESMTP: the options never reach the wire.
    assert outcome.transcript == EHLO + HELO + MAIL + RCPT_BOB + DATA + MESSAGE_WIRE


async def test_ehlo_and_helo_refused() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 grumpy\r\n")
        exchange(
            conn,
            (b"ehlo", b"500 no\r\n"),
            (b"helo", b"501 5.5.4 not you either\r\n"),
        )
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB], MESSAGE)
    assert comparable(outcome.result) == (
        anysmtp.SMTPHeloError,
        (501, b"5.5.4 not you either"),
    )
    assert outcome.transcript == EHLO + HELO
    assert outcome.connected


async def test_empty_ehlo_reply_means_disconnected() -> None:
    # RFC 1869: some servers drop the connection on EHLO; an empty line read as
    # reply (code -1, no text) is treated the same way by smtplib.
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        exchange(conn, (b"ehlo", b"\r\n"))
        drain(conn)

    outcome = await run_both(script, "ehlo")
    assert comparable(outcome.result) == (
        anysmtp.SMTPServerDisconnected,
        ("Server not connected",),
    )
    assert outcome.transcript == EHLO
    assert not outcome.connected


async def test_ehlo_state_after_refusal_and_success() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        exchange(conn, (b"ehlo", b"502 no\r\n"))
        exchange(conn, (b"ehlo", b"250-server\r\n250-SIZE 100\r\n250 8BITMIME\r\n"))
        exchange(conn, (b"quit", b"221 bye\r\n"))

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        ) as smtp:
            assert await smtp.ehlo() == (502, b"no")
            state = (smtp.ehlo_resp, smtp.does_esmtp, smtp.esmtp_features)
            assert state == (b"no", False, {})
            assert (smtp.last_ehlo_response,) == (None,)
            reply = await smtp.ehlo()
            assert reply == (250, b"server\nSIZE 100\n8BITMIME")
            state = (smtp.ehlo_resp, smtp.does_esmtp, smtp.esmtp_features)
            assert state == (reply.message, True, {"size": "100", "8bitmime": ""})
            assert (smtp.last_ehlo_response,) == (reply,)
    assert server.transcript == EHLO + EHLO + b"QUIT\r\n"


async def test_non_ascii_str_message_fails_before_mail() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"SIZE 1000",))
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB], "Subject: café\n\n")
    assert isinstance(outcome.result, UnicodeEncodeError)
    assert outcome.transcript == EHLO
    assert outcome.connected


async def test_smtputf8_without_server_support_sends_nothing() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"8BITMIME",))
        drain(conn)

    outcome = await run_both(script, "sendmail", ALICE, [BOB], MESSAGE, ["SMTPUTF8"])
    assert comparable(outcome.result) == (
        anysmtp.SMTPNotSupportedError,
        ("SMTPUTF8 not supported by server",),
    )
    assert outcome.transcript == EHLO


async def test_mail_smtputf8_without_server_support() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"8BITMIME",))
        exchange(conn, (b"noop", b"250 ok\r\n"), (b"quit", b"221 bye\r\n"))

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        ) as smtp:
            await smtp.ehlo()
            with pytest.raises(
                anysmtp.SMTPNotSupportedError, match="SMTPUTF8 not supported"
            ):
                await smtp.mail(ALICE, ["SMTPUTF8"])
            assert smtp.command_encoding == "ascii"
            assert await smtp.noop() == (250, b"ok")
    assert server.transcript == EHLO + b"noop\r\nQUIT\r\n"


async def test_mail_options_dropped_before_ehlo() -> None:
    # smtplib only sends options once EHLO succeeded; before it they are dropped,
    # SMTPUTF8 included (no error).
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        exchange(conn, (b"mail", b"250 ok\r\n"))
        drain(conn)

    outcome = await run_both(script, "mail", ALICE, ["SMTPUTF8", "BODY=8BITMIME"])
    assert outcome.result == (250, b"ok")
    assert outcome.transcript == MAIL


# Replies ----------------------------------------------------------------------


def replying(reply: bytes, *, then_close: bool = False) -> Script:
    """A server that greets, answers NOOP with ``reply`` and then waits (or
    closes the connection)."""

    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        conn.expect(b"noop")
        conn.send(reply)
        if then_close:
            return
        drain(conn)

    return script


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(b"250 fine\r\n", (250, b"fine"), id="single"),
        pytest.param(
            b"250-one\r\n250-two\r\n250 three\r\n",
            (250, b"one\ntwo\nthree"),
            id="multi-line",
        ),
        pytest.param(b"250-a\r\n251 b\r\n", (251, b"a\nb"), id="last-code-wins"),
        pytest.param(
            b"250-  spaced \t\r\n250 end  \r\n", (250, b"spaced\nend"), id="blanks"
        ),
        pytest.param(b"250-one\n250 two\n", (250, b"one\ntwo"), id="bare-lf"),
        pytest.param(b"250\r\n", (250, b""), id="code-only"),
        pytest.param(b"hello\r\n", (-1, b"o"), id="garbage"),
        pytest.param(b"250-ok\r\nhello\r\n", (-1, b"ok\no"), id="garbage-continued"),
        pytest.param(b"25x ok\r\n", (-1, b"ok"), id="bad-digit"),
        pytest.param(
            b"250 " + b"x" * (8192 - 6) + b"\r\n",
            (250, b"x" * (8192 - 6)),
            id="line-of-8192-bytes",
        ),
    ],
)
async def test_reply_parsing(reply: bytes, expected: tuple[int, bytes]) -> None:
    outcome = await run_both(replying(reply), "noop")
    assert outcome.result == expected
    assert outcome.transcript == b"noop\r\n"
    assert outcome.connected


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(8193, id="8193-bytes"),
        pytest.param(8194, id="8194-bytes"),
        pytest.param(20000, id="20000-bytes"),
    ],
)
async def test_reply_line_too_long_closes(length: int) -> None:
    line = b"250 " + b"x" * (length - 6) + b"\r\n"
    assert len(line) == length
    outcome = await run_both(replying(line), "noop")
    assert comparable(outcome.result) == (
        anysmtp.SMTPResponseException,
        (500, "Line too long."),
    )
    assert not outcome.connected


async def test_endless_reply_is_capped() -> None:
    line = b"250-" + b"x" * 1018 + b"\r\n"

    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        conn.expect(b"noop")
        while True:  # until the client gives up and the send fails
            conn.send(line)

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, timeout=5, start_tls=False)
        await smtp.connect()
        sock = smtp.sock
        assert sock is not None
        tracemalloc.start()
        try:
            with pytest.raises(anysmtp.SMTPResponseException) as caught:
                await smtp.noop()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert caught.value.smtp_code == 500
        assert not smtp.is_connected
        assert sock.fileno() == -1
    assert peak < 4 * MAX_REPLY_SIZE


async def test_reply_split_into_single_bytes() -> None:
    reply = b"250-one\r\n250 two\r\n"

    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        conn.expect(b"noop")
        for byte in reply:
            conn.send(bytes([byte]))
            time.sleep(0.001)
        drain(conn)

    outcome = await run_anysmtp(script, "noop")
    assert outcome.result == (250, b"one\ntwo")


async def test_two_replies_in_one_segment() -> None:
    # The second reply stays buffered for the next command, as with smtplib's
    # buffered file.
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        conn.expect(b"noop")
        conn.send(b"250 first\r\n250 second\r\n")
        conn.expect(b"noop")
        drain(conn)

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, timeout=5, start_tls=False)
        await smtp.connect()
        assert await smtp.noop() == (250, b"first")
        assert await smtp.noop() == (250, b"second")
        smtp.close()
    assert server.transcript == b"noop\r\nnoop\r\n"


async def test_partial_last_line_before_close_is_a_reply() -> None:
    outcome = await run_both(replying(b"250 partial", then_close=True), "noop")
    assert outcome.result == (250, b"partial")


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"", id="no-reply"),
        pytest.param(b"250-first\r\n", id="after-continuation-line"),
        pytest.param(b"250-fir", id="mid-line"),
    ],
)
async def test_server_closes_mid_reply(reply: bytes) -> None:
    outcome = await run_both(replying(reply, then_close=True), "noop")
    assert comparable(outcome.result) == (
        anysmtp.SMTPServerDisconnected,
        ("Connection unexpectedly closed",),
    )
    assert outcome.transcript == b"noop\r\n"
    assert not outcome.connected


def second_connection(conn: ScriptedConnection) -> None:
    """A healthy session for the reconnect after a failure."""
    conn.greet_and_ehlo()
    exchange(
        conn,
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        (b"data", b"354 go ahead\r\n"),
    )
    conn.read_data()
    conn.send(b"250 queued\r\n")
    exchange(conn, (b"quit", b"221 bye\r\n"))


def close_at_greeting(conn: ScriptedConnection) -> None:
    pass


def close_instead_of_ehlo_reply(conn: ScriptedConnection) -> None:
    conn.send(b"220 hi\r\n")
    conn.expect(b"ehlo")


def close_after_ehlo(conn: ScriptedConnection) -> None:
    conn.greet_and_ehlo()


def close_mid_reply(conn: ScriptedConnection) -> None:
    conn.greet_and_ehlo()
    conn.expect(b"mail")
    conn.send(b"250-wait for")


def close_during_data(conn: ScriptedConnection) -> None:
    conn.greet_and_ehlo()
    exchange(
        conn,
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        (b"data", b"354 go ahead\r\n"),
    )
    conn.read_data()


@pytest.mark.parametrize(
    "first",
    [
        close_at_greeting,
        close_instead_of_ehlo_reply,
        close_after_ehlo,
        close_mid_reply,
        close_during_data,
    ],
)
async def test_disconnect_then_reconnect(first: Script) -> None:
    scripts = iter([first, second_connection])

    def script(conn: ScriptedConnection) -> None:
        next(scripts)(conn)

    with ScriptedServer(script, connections=2) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        )

        async def first_attempt() -> None:
            await smtp.connect()
            await smtp.sendmail(ALICE, [BOB], MESSAGE)

        with pytest.raises(anysmtp.SMTPServerDisconnected):
            await first_attempt()
        assert (smtp.is_connected, smtp.sock) == (False, None)
        # The same object connects again and starts a new session: EHLO again.
        assert await smtp.connect() == (220, b"scripted ESMTP")
        assert smtp.is_connected
        assert await smtp.sendmail(ALICE, [BOB], MESSAGE) == {}
        assert await smtp.quit() == (221, b"bye")
    second = EHLO + MAIL + RCPT_BOB + DATA + MESSAGE_WIRE + b"quit\r\n"
    assert server.transcript.endswith(second)


# Injection ------------------------------------------------------------------

Action = Callable[[anysmtp.AsyncSMTP, str], Awaitable[object]]

#: (id, the call with the control character ``c`` in an argument, what the
#: server receives before that command)
INJECTIONS: list[tuple[str, Action, bytes]] = [
    (
        "mail-sender",
        lambda smtp, c: smtp.mail(f"alice@example.com{c}RCPT TO:<evil@example.com>"),
        b"",
    ),
    ("mail-sender-bracketed", lambda smtp, c: smtp.mail(f"<alice@ex.com>{c}RSET"), b""),
    ("rcpt", lambda smtp, c: smtp.rcpt(f"bob@example.com{c}DATA"), b""),
    (
        "sendmail-sender",
        lambda smtp, c: smtp.sendmail(f"alice{c}@example.com", [BOB], MESSAGE),
        b"",
    ),
    (
        "sendmail-recipient",
        lambda smtp, c: smtp.sendmail(ALICE, [BOB, f"{c}evil@example.com"], MESSAGE),
        b"",  # sendmail checks every address before MAIL (docs/compatibility.md)
    ),
    ("mail-option", lambda smtp, c: smtp.mail(ALICE, [f"BODY=8BITMIME{c}RSET"]), b""),
    ("rcpt-option", lambda smtp, c: smtp.rcpt(BOB, [f"NOTIFY=NEVER{c}RSET"]), b""),
    (
        "sendmail-mail-option",
        lambda smtp, c: smtp.sendmail(ALICE, [BOB], MESSAGE, [f"X{c}Y"]),
        b"",
    ),
    (
        "sendmail-rcpt-option",
        lambda smtp, c: smtp.sendmail(ALICE, [BOB], MESSAGE, [], [f"X{c}Y"]),
        b"",  # and every option
    ),
    ("ehlo-name", lambda smtp, c: smtp.ehlo(f"client{c}.example"), b""),
    ("helo-name", lambda smtp, c: smtp.helo(f"client{c}.example"), b""),
    ("docmd-args", lambda smtp, c: smtp.docmd("NOOP", f"x{c}RSET"), b""),
    ("docmd-verb", lambda smtp, c: smtp.docmd(f"NOOP{c}RSET"), b""),
    ("putcmd", lambda smtp, c: smtp.putcmd("NOOP", f"x{c}RSET"), b""),
    ("help", lambda smtp, c: smtp.help(f"x{c}y"), b""),
    ("vrfy", lambda smtp, c: smtp.verify(f"bob@example.com{c}RSET"), b""),
    ("expn", lambda smtp, c: smtp.expn(f"list@example.com{c}RSET"), b""),
]

#: CR and LF would end the command early; the other control characters have no
#: business in a command either.
CONTROL_CHARACTERS = {
    "crlf": "\r\n",
    "lf": "\n",
    "cr": "\r",
    "nul": "\0",
    "esc": "\x1b",
    "del": "\x7f",
}


@pytest.mark.parametrize(
    ("action", "sent_before", "char"),
    [
        pytest.param(action, sent_before, char, id=f"{case_id}-{char_id}")
        for case_id, action, sent_before in INJECTIONS
        for char_id, char in CONTROL_CHARACTERS.items()
    ],
)
async def test_control_characters_never_reach_the_wire(
    action: Action, sent_before: bytes, char: str
) -> None:
    with ScriptedServer(answer_all) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        ) as smtp:
            await smtp.ehlo()
            with pytest.raises(ValueError, match="prohibited"):
                await action(smtp, char)
            # Still in step with the server: nothing of that command was sent.
            assert await smtp.noop() == (250, b"ok")
    assert server.transcript == EHLO + sent_before + b"noop\r\nQUIT\r\n"


@pytest.mark.parametrize("char", ["\r\n", "\n", "\0"])
async def test_control_characters_in_local_hostname(char: str) -> None:
    with ScriptedServer(answer_all) as server:
        async with anysmtp.AsyncSMTP(
            server.host,
            server.port,
            local_hostname=f"client{char}.example",
            timeout=5,
            start_tls=False,
        ) as smtp:
            with pytest.raises(ValueError, match="prohibited"):
                await smtp.sendmail(ALICE, [BOB], MESSAGE)
            assert await smtp.noop() == (250, b"ok")
    assert server.transcript == b"noop\r\nQUIT\r\n"


# Timeouts -------------------------------------------------------------------


async def test_server_never_answers() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        drain(conn)

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, timeout=0.2, start_tls=False)
        await smtp.connect()
        sock = smtp.sock
        assert sock is not None
        start = time.monotonic()
        with pytest.raises(anysmtp.SMTPReadTimeoutError) as caught:
            await smtp.noop()
        elapsed = time.monotonic() - start
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, anysmtp.SMTPTimeoutError)
        assert isinstance(caught.value, smtplib.SMTPException)
        assert 0.15 <= elapsed < 2
        assert not smtp.is_connected
        assert sock.fileno() == -1
        with pytest.raises(anysmtp.SMTPServerDisconnected):
            await smtp.noop()
    assert server.transcript == b"noop\r\n"


async def test_read_timeout_is_caught_like_smtplib() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 hi\r\n")
        drain(conn)

    def stdlib_timeout() -> BaseException:
        with ScriptedServer(script) as server:
            client = smtplib.SMTP(server.host, server.port, timeout=0.2)
            try:
                client.noop()
            except smtplib.SMTPException as exc:
                return exc
            finally:
                client.close()
        raise AssertionError("smtplib did not time out")

    reference = await anyio.to_thread.run_sync(stdlib_timeout)
    assert type(reference) is smtplib.SMTPServerDisconnected
    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, timeout=0.2, start_tls=False)
        await smtp.connect()
        with pytest.raises(anysmtp.SMTPReadTimeoutError) as caught:
            await smtp.noop()
    assert isinstance(caught.value, smtplib.SMTPServerDisconnected)


async def test_server_never_greets() -> None:
    with ScriptedServer(drain) as server:
        smtp = anysmtp.AsyncSMTP(server.host, server.port, timeout=0.2, start_tls=False)
        with pytest.raises(anysmtp.SMTPConnectTimeoutError) as caught:
            await smtp.connect()
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, anysmtp.SMTPTimeoutError)
        assert not smtp.is_connected
        assert smtp.sock is None
    assert server.transcript == b""


async def test_server_stops_reading_data() -> None:
    stop = threading.Event()

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        stop.wait(10)  # read nothing more until the client gave up

    big = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    big *= 64 * 1024  # 64 MiB: more than any socket buffer holds
    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=0.2, start_tls=False
        )
        await smtp.connect()
        try:
            with pytest.raises(anysmtp.SMTPReadTimeoutError):
                await smtp.sendmail(ALICE, [BOB], big)
        finally:
            stop.set()
        assert not smtp.is_connected


@pytest.mark.parametrize("where", ["constructor", "connect"])
async def test_timeout_zero_is_refused(where: str) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        if where == "constructor":
            smtp = anysmtp.AsyncSMTP("127.0.0.1", port, timeout=0, start_tls=False)
            with pytest.raises(ValueError, match="timeout=0"):
                await smtp.connect()
        else:
            smtp = anysmtp.AsyncSMTP("127.0.0.1", port, start_tls=False)
            with pytest.raises(ValueError, match="timeout=0"):
                await smtp.connect(timeout=0)
        assert not smtp.is_connected
        # Not even a TCP connection was made.
        listener.settimeout(0.05)
        with pytest.raises(TimeoutError):
            listener.accept()
