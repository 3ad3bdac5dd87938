"""AsyncLMTP (RFC 2033) against scripted servers, on every backend.

LMTP greets with LHLO and, after the end of the data, answers once for every
recipient that RCPT accepted, in order.  smtplib's LMTP reads only the first of
those replies; anysmtp reads them all and reports the recipients whose delivery
failed as refused ones.  Where a session has one recipient the two agree, and
those scenarios also run against the stdlib's :class:`smtplib.LMTP`.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable

import anyio
import pytest

import anysmtp
from tests.servers import ScriptedConnection, ScriptedServer, drain, exchange

pytestmark = pytest.mark.anyio

Script = Callable[[ScriptedConnection], None]

LOCAL = "client.example"
LHLO = b"lhlo client.example\r\n"
ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"
DAVE = "dave@example.com"
MAIL = b"mail FROM:<alice@example.com>\r\n"
RCPT_BOB = b"rcpt TO:<bob@example.com>\r\n"
RCPT_CAROL = b"rcpt TO:<carol@example.com>\r\n"
RCPT_DAVE = b"rcpt TO:<dave@example.com>\r\n"
DATA = b"data\r\n"
RSET = b"rset\r\n"
MESSAGE = b"Subject: lmtp\r\n\r\n.dot\r\nbody\r\n"
MESSAGE_WIRE = b"Subject: lmtp\r\n\r\n..dot\r\nbody\r\n.\r\n"


#: LHLO replies: without extensions the client waits for each reply; with
#: PIPELINING (which RFC 2033 requires of LMTP servers) it sends MAIL, every RCPT
#: and DATA at once, and the scripts below, which read one command and answer
#: it, see the same commands and give the same replies.
PLAIN_LHLO = b"250-lmtp\r\n250 8BITMIME\r\n"
PIPELINING_LHLO = b"250-lmtp\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
CHUNKING_LHLO = b"250-lmtp\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n"


@pytest.fixture(
    params=[
        pytest.param(PLAIN_LHLO, id="one-by-one"),
        pytest.param(PIPELINING_LHLO, id="pipelined"),
    ]
)
def lhlo_reply(request: pytest.FixtureRequest) -> bytes:
    """The server's LHLO reply, with and without PIPELINING."""
    reply: bytes = request.param
    return reply


def lmtp_transaction(
    lhlo_reply: bytes,
    rcpt_replies: list[bytes],
    data_replies: bytes,
    *,
    then: Script = drain,
) -> Script:
    """Greeting, ``lhlo_reply`` to LHLO, MAIL, one RCPT per reply given, DATA,
    the message, then ``data_replies`` (all the per-recipient replies in one
    write), then ``then``.
    """

    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 lmtp ready\r\n")
        exchange(conn, (b"lhlo", lhlo_reply), (b"mail", b"250 ok\r\n"))
        for reply in rcpt_replies:
            exchange(conn, (b"rcpt", reply))
        exchange(conn, (b"data", b"354 go ahead\r\n"))
        conn.read_data()
        conn.send(data_replies)
        then(conn)

    return script


def noop_then_quit(conn: ScriptedConnection) -> None:
    """Proves the client read every reply: the next one must be NOOP's."""
    exchange(conn, (b"noop", b"250 noop ok\r\n"), (b"quit", b"221 bye\r\n"))


def rset_noop_quit(conn: ScriptedConnection) -> None:
    exchange(conn, (b"rset", b"250 reset\r\n"))
    noop_then_quit(conn)


def lmtp_client(server: ScriptedServer, timeout: float = 5) -> anysmtp.AsyncLMTP:
    """An AsyncLMTP for the scripted server (not connected yet)."""
    return anysmtp.AsyncLMTP(
        server.host, server.port, local_hostname=LOCAL, timeout=timeout
    )


#: What the client reports after a transaction: sendmail()'s result,
#: ``lmtp_data_replies`` and ``last_data_response``.
Outcome = tuple[object, list[tuple[str, anysmtp.SMTPResponse]], object]


async def send_noop_quit(server: ScriptedServer, recipients: list[str]) -> Outcome:
    """Send MESSAGE to ``recipients``, then NOOP (its reply must be NOOP's: every
    reply of the transaction was read) and QUIT."""
    lmtp = lmtp_client(server)
    await lmtp.connect()
    refused = await lmtp.sendmail(ALICE, recipients, MESSAGE)
    outcome = (refused, lmtp.lmtp_data_replies, lmtp.last_data_response)
    assert await lmtp.noop() == (250, b"noop ok")
    assert await lmtp.quit() == (221, b"bye")
    return outcome


#: The transcript of a DATA transaction for Bob, Carol and Dave, then NOOP
#: and QUIT.
TO_THREE = (
    LHLO + MAIL + RCPT_BOB + RCPT_CAROL + RCPT_DAVE + DATA + MESSAGE_WIRE
) + b"noop\r\nquit\r\n"


# The class --------------------------------------------------------------------


def test_lmtp_class_defaults() -> None:
    assert anysmtp.AsyncLMTP.default_port == smtplib.LMTP_PORT == 2003
    assert anysmtp.AsyncLMTP.ehlo_msg == "lhlo"
    assert issubclass(anysmtp.AsyncLMTP, anysmtp.AsyncSMTP)
    assert anysmtp.AsyncLMTP().lmtp_data_replies == []


# One reply per recipient -------------------------------------------------------


async def test_one_recipient_fails_at_data_stage(lhlo_reply: bytes) -> None:
    script = lmtp_transaction(
        lhlo_reply,
        [b"250 ok\r\n"] * 3,
        b"250 2.0.0 bob delivered\r\n"
        b"452 4.2.2 carol over quota\r\n"
        b"250 2.0.0 dave delivered\r\n",
        then=noop_then_quit,
    )
    with ScriptedServer(script) as server:
        outcome = await send_noop_quit(server, [BOB, CAROL, DAVE])
    assert outcome == (
        {CAROL: (452, b"4.2.2 carol over quota")},
        [
            (BOB, (250, b"2.0.0 bob delivered")),
            (CAROL, (452, b"4.2.2 carol over quota")),
            (DAVE, (250, b"2.0.0 dave delivered")),
        ],
        (250, b"2.0.0 bob delivered"),
    )
    assert server.transcript == TO_THREE
    # One message transmission, for all three recipients.
    assert server.transcript.count(DATA) == 1
    assert server.transcript.count(MESSAGE_WIRE) == 1


async def test_replies_arriving_one_by_one(lhlo_reply: bytes) -> None:
    def then(conn: ScriptedConnection) -> None:
        conn.send(b"250 carol delivered\r\n")
        noop_then_quit(conn)

    script = lmtp_transaction(
        lhlo_reply,
        [b"250 ok\r\n", b"250 ok\r\n"],
        b"550 5.1.1 bob unknown\r\n",
        then=then,
    )
    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        refused = await lmtp.sendmail(ALICE, [BOB, CAROL], MESSAGE)
        # The first recipient failed but the second got it: no error, no RSET.
        assert refused == {BOB: (550, b"5.1.1 bob unknown")}
        assert await lmtp.noop() == (250, b"noop ok")
        await lmtp.quit()
    assert RSET not in server.transcript


async def test_all_recipients_fail_at_data_stage(lhlo_reply: bytes) -> None:
    script = lmtp_transaction(
        lhlo_reply,
        [b"250 ok\r\n", b"250 ok\r\n"],
        b"452 4.2.2 bob over quota\r\n554 5.6.0 carol rejects it\r\n",
        then=rset_noop_quit,
    )
    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        with pytest.raises(anysmtp.SMTPDataError) as caught:
            await lmtp.sendmail(ALICE, [BOB, CAROL], MESSAGE)
        assert caught.value.args == (452, b"4.2.2 bob over quota")
        assert lmtp.lmtp_data_replies == [
            (BOB, (452, b"4.2.2 bob over quota")),
            (CAROL, (554, b"5.6.0 carol rejects it")),
        ]
        assert lmtp.is_connected
        assert await lmtp.noop() == (250, b"noop ok")
        await lmtp.quit()
    assert server.transcript == (
        LHLO
        + MAIL
        + RCPT_BOB
        + RCPT_CAROL
        + DATA
        + MESSAGE_WIRE
        + RSET
        + b"noop\r\nquit\r\n"
    )


async def test_only_accepted_recipients_get_a_data_reply(lhlo_reply: bytes) -> None:
    script = lmtp_transaction(
        lhlo_reply,
        [b"250 ok\r\n", b"550 5.1.1 no such user\r\n", b"251 will forward\r\n"],
        b"250 bob delivered\r\n451 4.3.0 dave deferred\r\n",
        then=noop_then_quit,
    )
    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        refused = await lmtp.sendmail(ALICE, [BOB, CAROL, DAVE], MESSAGE)
        assert refused == {
            CAROL: (550, b"5.1.1 no such user"),
            DAVE: (451, b"4.3.0 dave deferred"),
        }
        assert lmtp.lmtp_data_replies == [
            (BOB, (250, b"bob delivered")),
            (DAVE, (451, b"4.3.0 dave deferred")),
        ]
        assert await lmtp.noop() == (250, b"noop ok")
        await lmtp.quit()
    assert server.transcript.count(MESSAGE_WIRE) == 1


async def test_missing_data_reply_times_out(lhlo_reply: bytes) -> None:
    # Two accepted recipients but only one reply: the client waits for the
    # second one and must not take it from the next command.
    script = lmtp_transaction(
        lhlo_reply, [b"250 ok\r\n", b"250 ok\r\n"], b"250 bob delivered\r\n"
    )
    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server, timeout=0.2)
        await lmtp.connect()
        with pytest.raises(anysmtp.SMTPReadTimeoutError):
            await lmtp.sendmail(ALICE, [BOB, CAROL], MESSAGE)
        assert not lmtp.is_connected


async def test_server_closes_between_data_replies(lhlo_reply: bytes) -> None:
    def then(conn: ScriptedConnection) -> None:
        pass  # closes after the first recipient's reply

    script = lmtp_transaction(
        lhlo_reply, [b"250 ok\r\n", b"250 ok\r\n"], b"250 bob ok\r\n", then=then
    )
    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        with pytest.raises(anysmtp.SMTPServerDisconnected):
            await lmtp.sendmail(ALICE, [BOB, CAROL], MESSAGE)
        assert not lmtp.is_connected
        # Bob has the message: sending it again could deliver it twice.
        assert lmtp.final_reply_pending
        assert lmtp.lmtp_data_replies == [(BOB, (250, b"bob ok"))]


async def test_421_for_one_recipient_ends_the_replies(lhlo_reply: bytes) -> None:
    # The server is closing: Dave's reply never comes, and Dave did not get the
    # message as far as anyone can tell.
    def then(conn: ScriptedConnection) -> None:
        pass  # closes after the 421

    script = lmtp_transaction(
        lhlo_reply,
        [b"250 ok\r\n"] * 3,
        b"250 bob ok\r\n421 4.3.2 shutting down\r\n",
        then=then,
    )
    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        refused = await lmtp.sendmail(ALICE, [BOB, CAROL, DAVE], MESSAGE)
        assert refused == {
            CAROL: (421, b"4.3.2 shutting down"),
            DAVE: (421, b"4.3.2 shutting down"),
        }
        assert lmtp.lmtp_data_replies == [
            (BOB, (250, b"bob ok")),
            (CAROL, (421, b"4.3.2 shutting down")),
        ]
        assert not lmtp.is_connected
        assert not lmtp.final_reply_pending


async def test_second_transaction_replaces_the_replies(lhlo_reply: bytes) -> None:
    def script(conn: ScriptedConnection) -> None:
        lmtp_transaction(
            lhlo_reply,
            [b"250 ok\r\n", b"250 ok\r\n"],
            b"250 bob ok\r\n250 carol ok\r\n",
            then=lambda conn: None,
        )(conn)
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"354 go ahead\r\n"),
        )
        conn.read_data()
        conn.send(b"250 dave ok\r\n")
        noop_then_quit(conn)

    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        assert await lmtp.sendmail(ALICE, [BOB, CAROL], MESSAGE) == {}
        assert await lmtp.sendmail(ALICE, [DAVE], MESSAGE) == {}
        assert lmtp.lmtp_data_replies == [(DAVE, (250, b"dave ok"))]
        assert await lmtp.noop() == (250, b"noop ok")
        await lmtp.quit()


async def test_refused_data_command_leaves_no_stale_replies(lhlo_reply: bytes) -> None:
    def script(conn: ScriptedConnection) -> None:
        lmtp_transaction(
            lhlo_reply, [b"250 ok\r\n"], b"250 bob ok\r\n", then=lambda conn: None
        )(conn)
        exchange(
            conn,
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"data", b"503 5.5.1 no\r\n"),
        )
        noop_then_quit(conn)

    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        assert await lmtp.sendmail(ALICE, [BOB], MESSAGE) == {}
        with pytest.raises(anysmtp.SMTPDataError):
            await lmtp.sendmail(ALICE, [CAROL], MESSAGE)
        assert await lmtp.noop() == (250, b"noop ok")
        await lmtp.quit()
        assert lmtp.lmtp_data_replies == []


# PIPELINING and CHUNKING -------------------------------------------------------


def read_commands(conn: ScriptedConnection, count: int) -> list[bytes]:
    """Read ``count`` command lines before answering any: a client that waits
    for each reply would wait for good."""
    return [conn.read_line() for _ in range(count)]


async def test_pipelined_envelope_goes_in_one_flight() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 lmtp ready\r\n")
        exchange(conn, (b"lhlo", PIPELINING_LHLO))
        assert read_commands(conn, 5) == [MAIL, RCPT_BOB, RCPT_CAROL, RCPT_DAVE, DATA]
        conn.send(
            b"250 ok\r\n250 ok\r\n550 5.1.1 no carol\r\n250 ok\r\n354 go ahead\r\n"
        )
        conn.read_data()
        conn.send(b"250 2.0.0 bob delivered\r\n452 4.2.2 dave over quota\r\n")
        noop_then_quit(conn)

    with ScriptedServer(script) as server:
        outcome = await send_noop_quit(server, [BOB, CAROL, DAVE])
    assert outcome == (
        {CAROL: (550, b"5.1.1 no carol"), DAVE: (452, b"4.2.2 dave over quota")},
        [
            (BOB, (250, b"2.0.0 bob delivered")),
            (DAVE, (452, b"4.2.2 dave over quota")),
        ],
        (250, b"2.0.0 bob delivered"),
    )
    assert server.transcript == TO_THREE


#: MESSAGE as BDAT sends it: no dot-stuffing, no end-of-data line.
BDAT_MESSAGE = b"BDAT %d LAST\r\n%b" % (len(MESSAGE), MESSAGE)


@pytest.mark.parametrize(
    "lhlo",
    [
        pytest.param(CHUNKING_LHLO, id="pipelined"),
        pytest.param(b"250-lmtp\r\n250 CHUNKING\r\n", id="one-by-one"),
    ],
)
async def test_bdat_last_gets_one_reply_per_recipient(lhlo: bytes) -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 lmtp ready\r\n")
        exchange(
            conn,
            (b"lhlo", lhlo),
            (b"mail", b"250 ok\r\n"),
            (b"rcpt", b"250 ok\r\n"),
            (b"rcpt", b"550 5.1.1 no carol\r\n"),
            (b"rcpt", b"250 ok\r\n"),
        )
        conn.expect(b"BDAT %d LAST" % len(MESSAGE))
        assert conn.read_exactly(len(MESSAGE)) == MESSAGE
        conn.send(b"452 4.2.2 bob over quota\r\n250 2.0.0 dave delivered\r\n")
        noop_then_quit(conn)

    with ScriptedServer(script) as server:
        outcome = await send_noop_quit(server, [BOB, CAROL, DAVE])
    assert outcome == (
        {BOB: (452, b"4.2.2 bob over quota"), CAROL: (550, b"5.1.1 no carol")},
        [
            (BOB, (452, b"4.2.2 bob over quota")),
            (DAVE, (250, b"2.0.0 dave delivered")),
        ],
        (250, b"2.0.0 dave delivered"),
    )
    assert (
        server.transcript
        == (LHLO + MAIL + RCPT_BOB + RCPT_CAROL + RCPT_DAVE + BDAT_MESSAGE)
        + b"noop\r\nquit\r\n"
    )


@pytest.mark.parametrize(
    ("replies", "refusal"),
    [
        pytest.param(
            b"250 ok\r\n550 5.1.1 no bob\r\n550 5.1.1 no carol\r\n",
            anysmtp.SMTPRecipientsRefused(
                {BOB: (550, b"5.1.1 no bob"), CAROL: (550, b"5.1.1 no carol")}
            ),
            id="every-recipient-refused",
        ),
        pytest.param(
            b"553 5.7.1 no alice\r\n503 5.5.1 no sender\r\n503 5.5.1 no sender\r\n",
            anysmtp.SMTPSenderRefused(553, b"5.7.1 no alice", ALICE),
            id="sender-refused",
        ),
    ],
)
async def test_bdat_waits_for_an_accepted_recipient(
    replies: bytes, refusal: anysmtp.SMTPException
) -> None:
    # After no accepted recipient, BDAT LAST gets no reply at all (RFC 2033
    # section 4.3): it never goes with the envelope, and here not at all.
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 lmtp ready\r\n")
        exchange(conn, (b"lhlo", CHUNKING_LHLO))
        assert read_commands(conn, 3) == [MAIL, RCPT_BOB, RCPT_CAROL]
        conn.send(replies)
        rset_noop_quit(conn)

    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        with pytest.raises(type(refusal)) as caught:
            await lmtp.sendmail(ALICE, [BOB, CAROL], MESSAGE)
        assert caught.value.args == refusal.args
        assert lmtp.lmtp_data_replies == []
        assert not lmtp.final_reply_pending
        assert await lmtp.noop() == (250, b"noop ok")
        await lmtp.quit()
    assert server.transcript == (
        LHLO + MAIL + RCPT_BOB + RCPT_CAROL + RSET + b"noop\r\nquit\r\n"
    )


#: Over one chunk, with bare LF line endings: converted, so it goes in chunks.
BIG_MESSAGE = b"Subject: big\n\n" + (b"x" * 998 + b"\n") * 600


async def test_large_bdat_message_goes_chunk_by_chunk() -> None:
    # Each chunk is answered once, BDAT LAST once per recipient.
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 lmtp ready\r\n")
        exchange(conn, (b"lhlo", CHUNKING_LHLO))
        assert read_commands(conn, 3) == [MAIL, RCPT_BOB, RCPT_CAROL]
        conn.send(b"250 ok\r\n250 ok\r\n250 ok\r\n")
        received = b""
        while True:
            command = conn.read_line().split()
            assert command[0] == b"BDAT"
            received += conn.read_exactly(int(command[1]))
            if command[2:] == [b"LAST"]:
                break
            conn.send(b"250 chunk ok\r\n")
        assert received == BIG_MESSAGE.replace(b"\n", b"\r\n")
        conn.send(b"250 bob ok\r\n250 carol ok\r\n")
        noop_then_quit(conn)

    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        assert await lmtp.sendmail(ALICE, [BOB, CAROL], BIG_MESSAGE) == {}
        assert lmtp.lmtp_data_replies == [
            (BOB, (250, b"bob ok")),
            (CAROL, (250, b"carol ok")),
        ]
        assert await lmtp.noop() == (250, b"noop ok")
        await lmtp.quit()


async def test_a_chunk_waits_for_the_reply_to_the_one_before() -> None:
    # RFC 2033 does not say how a pipelined BDAT LAST is answered after a
    # refused chunk: a server that never answers the first chunk sees no other.
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 lmtp ready\r\n")
        exchange(conn, (b"lhlo", CHUNKING_LHLO))
        assert read_commands(conn, 2) == [MAIL, RCPT_BOB]
        conn.send(b"250 ok\r\n250 ok\r\n")
        drain(conn)  # until the client gives up and closes

    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server, timeout=0.5)
        await lmtp.connect()
        with pytest.raises(anysmtp.SMTPReadTimeoutError):
            await lmtp.sendmail(ALICE, [BOB], BIG_MESSAGE)
    assert server.transcript.count(b"BDAT ") == 1


async def test_pipelining_and_chunking_can_be_turned_off() -> None:
    # The server offers both; the client waits for each reply and uses DATA.
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 lmtp ready\r\n")
        exchange(conn, (b"lhlo", CHUNKING_LHLO))
        for command in (MAIL, RCPT_BOB):
            assert conn.read_line() == command
            assert not conn._buffer  # nothing sent ahead of this reply
            conn.send(b"250 ok\r\n")
        exchange(conn, (b"data", b"354 go ahead\r\n"))
        conn.read_data()
        conn.send(b"250 bob ok\r\n")
        noop_then_quit(conn)

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncLMTP(
            server.host,
            server.port,
            local_hostname=LOCAL,
            pipelining=False,
            chunking=False,
        ) as lmtp:
            assert await lmtp.sendmail(ALICE, [BOB], MESSAGE) == {}
            assert await lmtp.noop() == (250, b"noop ok")
    assert server.transcript == (
        LHLO + MAIL + RCPT_BOB + DATA + MESSAGE_WIRE + b"noop\r\nQUIT\r\n"
    )


def test_sync_lmtp_pipelines_too() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 lmtp ready\r\n")
        exchange(conn, (b"lhlo", PIPELINING_LHLO))
        assert read_commands(conn, 4) == [MAIL, RCPT_BOB, RCPT_CAROL, DATA]
        conn.send(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go ahead\r\n")
        conn.read_data()
        conn.send(b"250 bob ok\r\n550 5.2.1 carol disabled\r\n")
        noop_then_quit(conn)

    with (
        ScriptedServer(script) as server,
        anysmtp.LMTP(server.host, server.port, LOCAL) as lmtp,
    ):
        refused = lmtp.sendmail(ALICE, [BOB, CAROL], MESSAGE)
        assert refused == {CAROL: (550, b"5.2.1 carol disabled")}
        assert lmtp.lmtp_data_replies == [
            (BOB, (250, b"bob ok")),
            (CAROL, (550, b"5.2.1 carol disabled")),
        ]
        assert lmtp.noop() == (250, b"noop ok")
    assert (
        server.transcript
        == (LHLO + MAIL + RCPT_BOB + RCPT_CAROL + DATA + MESSAGE_WIRE)
        + b"noop\r\nQUIT\r\n"  # the with block's QUIT, as smtplib's
    )


# Like smtplib.LMTP with one recipient ----------------------------------------


@pytest.mark.parametrize(
    ("data_reply", "expected"),
    [
        pytest.param(b"250 delivered\r\n", {}, id="delivered"),
        pytest.param(
            b"452 4.2.2 over quota\r\n",
            (anysmtp.SMTPDataError, (452, b"4.2.2 over quota")),
            id="refused",
        ),
    ],
)
async def test_single_recipient_like_smtplib(
    data_reply: bytes, expected: object, lhlo_reply: bytes
) -> None:
    then = noop_then_quit if data_reply.startswith(b"250") else rset_noop_quit
    script = lmtp_transaction(lhlo_reply, [b"250 ok\r\n"], data_reply, then=then)

    def run_smtplib() -> tuple[object, bytes]:
        with (
            ScriptedServer(script) as server,
            smtplib.LMTP(server.host, server.port, LOCAL) as client,
        ):
            try:
                result: object = client.sendmail(ALICE, [BOB], MESSAGE)
            except smtplib.SMTPException as exc:
                result = (type(exc), exc.args)
            assert client.noop() == (250, b"noop ok")
            client.quit()
        return result, bytes(server.transcript)

    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        try:
            result: object = await lmtp.sendmail(ALICE, [BOB], MESSAGE)
        except smtplib.SMTPException as exc:
            result = (type(exc), exc.args)
        assert await lmtp.noop() == (250, b"noop ok")
        await lmtp.quit()
    assert result == expected
    assert (result, bytes(server.transcript)) == await anyio.to_thread.run_sync(
        run_smtplib
    )


async def test_lhlo_refused_falls_back_like_smtplib() -> None:
    # smtplib's LMTP inherits ehlo_or_helo_if_needed: a refused LHLO is followed
    # by HELO.
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 lmtp ready\r\n")
        exchange(
            conn,
            (b"lhlo", b"500 what\r\n"),
            (b"helo", b"501 no\r\n"),
        )
        drain(conn)

    with ScriptedServer(script) as server:
        lmtp = lmtp_client(server)
        await lmtp.connect()
        with pytest.raises(anysmtp.SMTPHeloError) as caught:
            await lmtp.sendmail(ALICE, [BOB], MESSAGE)
        assert caught.value.args == (501, b"no")
        lmtp.close()
    assert server.transcript == LHLO + b"helo client.example\r\n"


# Unix sockets -------------------------------------------------------------------


def lmtp_greet_lhlo_quit(conn: ScriptedConnection) -> None:
    conn.send(b"220 lmtp ready\r\n")
    exchange(conn, (b"lhlo", b"250 lmtp\r\n"), (b"quit", b"221 bye\r\n"))


@pytest.mark.parametrize("how", ["host", "connect", "socket_path"])
async def test_absolute_path_is_a_unix_socket(how: str) -> None:
    with ScriptedServer(lmtp_greet_lhlo_quit, unix=True) as server:
        if how == "host":
            lmtp = anysmtp.AsyncLMTP(server.socket_path, local_hostname=LOCAL)
            greeting = await lmtp.connect()
        elif how == "connect":
            lmtp = anysmtp.AsyncLMTP(local_hostname=LOCAL)
            greeting = await lmtp.connect(server.socket_path)
        else:
            lmtp = anysmtp.AsyncLMTP(
                socket_path=server.socket_path, local_hostname=LOCAL
            )
            greeting = await lmtp.connect()
        assert greeting == (220, b"lmtp ready")
        sock = lmtp.sock
        assert sock is not None
        assert sock.family == socket.AF_UNIX
        assert lmtp.get_transport_info("peername") == server.socket_path
        assert await lmtp.ehlo() == (250, b"lmtp")
        assert await lmtp.quit() == (221, b"bye")
    assert server.transcript == LHLO + b"quit\r\n"


async def test_unix_socket_like_smtplib() -> None:
    def run_smtplib(path: str) -> tuple[object, object]:
        with smtplib.LMTP(path, local_hostname=LOCAL) as client:
            return client.ehlo(), client.quit()

    with ScriptedServer(lmtp_greet_lhlo_quit, unix=True) as server:
        reference = await anyio.to_thread.run_sync(run_smtplib, server.socket_path)
    with ScriptedServer(lmtp_greet_lhlo_quit, unix=True) as server:
        async with anysmtp.AsyncLMTP(server.socket_path, local_hostname=LOCAL) as lmtp:
            ours = (await lmtp.ehlo(), await lmtp.quit())
    assert ours == reference == ((250, b"lmtp"), (221, b"bye"))


async def test_missing_unix_socket() -> None:
    lmtp = anysmtp.AsyncLMTP("/nonexistent/anysmtp/lmtp.sock")
    with pytest.raises(FileNotFoundError):
        await lmtp.connect()
    assert not lmtp.is_connected
