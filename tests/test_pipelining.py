"""PIPELINING (RFC 2920): one write for MAIL, RCPT and DATA, the same results.

Every scenario runs twice against the same server logic: once with PIPELINING
advertised, where the server reads the whole batch before it answers anything (a
client that waited for a reply would stall, so these tests fail unless the
client really pipelines), and once without, where the client goes one by one.
Results, exceptions, connection state and the transcript must be identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

import anysmtp
from tests.servers import ScriptedConnection, ScriptedServer

pytestmark = pytest.mark.anyio

ALICE = "alice@example.com"
RECIPIENTS = ["bob@example.com", "carol@example.com", "dave@example.com"]
MESSAGE = b"Subject: pipelined\r\n\r\n.dot\r\nbody\r\n"


@dataclass
class Behaviour:
    """How the server answers; one reply per command, in order."""

    mail: bytes = b"250 ok"
    rcpts: list[bytes] = field(default_factory=lambda: [b"250 ok"] * 3)
    data: bytes = b"354 go ahead"
    final: bytes = b"250 queued"


def responder(conn: ScriptedConnection, behaviour: Behaviour, batch: int) -> None:
    """Answer commands; with ``batch`` > 0, read that many lines first."""
    pending = [conn.read_line() for _ in range(batch)]
    rcpts = iter(behaviour.rcpts)
    in_transaction = False
    while True:
        line = pending.pop(0) if pending else conn.read_line()
        if not line:
            return
        verb = line.split(b" ", 1)[0].strip().lower()
        if verb == b"mail":
            reply = behaviour.mail
            in_transaction = reply.startswith(b"250")
        elif verb == b"rcpt":
            reply = next(rcpts)
        elif verb == b"data":
            reply = behaviour.data
            if reply.startswith(b"354"):
                conn.send(reply + b"\r\n")
                while pending:  # nothing may follow DATA in a batch
                    raise AssertionError(f"sent after DATA: {pending!r}")
                body = conn.read_data()
                reply = (
                    behaviour.final if body != b".\r\n" else b"554 no valid recipients"
                )
                if not in_transaction:
                    reply = b"503 5.5.1 no transaction"
                conn.send(reply + b"\r\n")
                continue
        elif verb == b"rset":
            reply = b"250 reset"
            in_transaction = False
        elif verb == b"quit":
            conn.send(b"221 bye\r\n")
            return
        else:
            reply = b"500 what?"
        conn.send(reply + b"\r\n")
        if reply.startswith(b"421"):
            return


async def run(behaviour: Behaviour, pipelining: bool) -> tuple[Any, bytes, bool]:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo(
            (b"PIPELINING", b"SIZE 100000") if pipelining else (b"SIZE 100000",)
        )
        responder(conn, behaviour, batch=len(RECIPIENTS) + 2 if pipelining else 0)

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(
            server.host,
            server.port,
            local_hostname="client",
            timeout=3,
            start_tls=False,
        )
        await smtp.connect()
        await smtp.ehlo()
        result: Any
        try:
            result = await smtp.sendmail(ALICE, RECIPIENTS, MESSAGE)
        except anysmtp.SMTPException as exc:
            result = (type(exc), exc.args)
        connected = smtp.is_connected
        if connected:
            await smtp.quit()
        smtp.close()
    return result, bytes(server.transcript), connected


SCENARIOS = {
    "all accepted": Behaviour(),
    "one refused": Behaviour(rcpts=[b"250 ok", b"550 5.1.1 unknown", b"251 forward"]),
    "sender refused": Behaviour(
        mail=b"553 5.7.1 sender refused",
        rcpts=[b"503 5.5.1 need MAIL"] * 3,
        data=b"503 5.5.1 need RCPT",
    ),
    "sender 421": Behaviour(mail=b"421 4.3.2 closing"),
    "recipient 421": Behaviour(rcpts=[b"250 ok", b"421 4.3.2 closing", b"250 ok"]),
    "all refused": Behaviour(
        rcpts=[b"550 no"] * 3, data=b"554 5.5.1 no valid recipients"
    ),
    "all refused, DATA accepted anyway": Behaviour(rcpts=[b"550 no"] * 3),
    "DATA refused": Behaviour(data=b"451 4.3.0 try later"),
    "final reply refused": Behaviour(final=b"552 5.3.4 too big"),
    "final reply 421": Behaviour(final=b"421 4.3.2 closing"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_pipelined_equals_sequential(scenario: str) -> None:
    behaviour = SCENARIOS[scenario]
    sequential = await run(behaviour, pipelining=False)
    pipelined = await run(behaviour, pipelining=True)
    assert pipelined[0] == sequential[0]
    assert pipelined[1] == sequential[1] or scenario in SEQUENCE_DIFFERS
    assert pipelined[2] == sequential[2]


#: Where the server answered commands the sequential client never sent: the
#: batch is on the wire before the first reply comes back.
SEQUENCE_DIFFERS = {
    "sender refused",
    "sender 421",
    "recipient 421",
    "all refused",
    "all refused, DATA accepted anyway",
}


async def test_the_batch_is_one_flight() -> None:
    result, transcript, connected = await run(Behaviour(), pipelining=True)
    assert result == {}
    assert connected
    batch = (
        b"mail FROM:<alice@example.com> size=34\r\n"
        b"rcpt TO:<bob@example.com>\r\n"
        b"rcpt TO:<carol@example.com>\r\n"
        b"rcpt TO:<dave@example.com>\r\n"
        b"data\r\n"
    )
    assert batch in transcript
    assert transcript.endswith(b"..dot\r\nbody\r\n.\r\nquit\r\n")


async def test_sender_refused_reads_every_reply_then_resets() -> None:
    result, transcript, connected = await run(SCENARIOS["sender refused"], True)
    assert result == (
        anysmtp.SMTPSenderRefused,
        (553, b"5.7.1 sender refused", ALICE),
    )
    assert connected
    assert transcript.endswith(b"data\r\nrset\r\nquit\r\n")


async def test_sender_refused_then_421_raises_the_refusal() -> None:
    # The server closes after the first RCPT's 421: the sender's refusal is
    # what went wrong, and no reply is read from the closed connection.
    behaviour = Behaviour(
        mail=b"553 5.7.1 sender refused", rcpts=[b"421 4.3.2 closing"]
    )
    result, transcript, connected = await run(behaviour, True)
    assert result == (
        anysmtp.SMTPSenderRefused,
        (553, b"5.7.1 sender refused", ALICE),
    )
    assert not connected
    assert transcript.endswith(b"data\r\n")


async def test_data_accepted_without_recipients_gets_an_empty_message() -> None:
    result, transcript, _ = await run(
        SCENARIOS["all refused, DATA accepted anyway"], True
    )
    assert result[0] is anysmtp.SMTPRecipientsRefused
    assert transcript.endswith(b"data\r\n.\r\nrset\r\nquit\r\n")


async def test_pipelining_can_be_turned_off() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"PIPELINING",))
        responder(conn, Behaviour(rcpts=[b"250 ok"]), batch=0)

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, timeout=3, start_tls=False, pipelining=False
        ) as smtp:
            assert await smtp.sendmail(ALICE, [RECIPIENTS[0]], MESSAGE) == {}


def test_facade_pipelines_without_hooks_and_not_with_them() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"PIPELINING",))
        responder(conn, Behaviour(), batch=len(RECIPIENTS) + 2)

    with (
        ScriptedServer(script) as server,
        anysmtp.SMTP(server.host, server.port, local_hostname="c", timeout=3) as s,
    ):
        assert s.sendmail(ALICE, RECIPIENTS, MESSAGE) == {}

    seen: list[str] = []

    class Hooked(anysmtp.SMTP):
        def rcpt(self, recip: str, options: Any = ()) -> tuple[int, bytes]:
            seen.append(recip)
            return super().rcpt(recip, options)

    def sequential(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"PIPELINING",))
        responder(conn, Behaviour(), batch=0)

    with (
        ScriptedServer(sequential) as server,
        Hooked(server.host, server.port, local_hostname="c", timeout=3) as s,
    ):
        assert s.sendmail(ALICE, RECIPIENTS, MESSAGE) == {}
    assert seen == RECIPIENTS
