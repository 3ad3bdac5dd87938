"""anysmtp against a real submission server: Dovecot's (RFC 6409), which
relays what it accepts to the tests' relay (:class:`interop.servers.SubmissionRelay`).

Dovecot's submission server offers AUTH (PLAIN, LOGIN), PIPELINING and
CHUNKING, passes each RCPT on to the relay (and the relay's refusal back), and
relays the message with DATA under a Received field of its own.  Every session
goes through the recording proxy (:mod:`interop.proxy`), whose causal record
shows what the client sent before which reply; the relay's sessions are
recorded the same way, so the tests see what Dovecot did with each command.

On its second port Dovecot takes at most
:data:`~interop.servers.SUBMISSION_SIZE_LIMIT` octets: a message of unknown
length sent there is refused in the middle of its chunks, while anysmtp has
more chunks in flight (up to four await their replies).  RFC 3030 says the
server must then discard them: Dovecot does, and none of their octets (lines
that read as commands) is taken as a command.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import re
import time
from collections.abc import AsyncGenerator, Iterator

import pytest

import anysmtp
from interop.proxy import RecordingProxy, Session
from interop.servers import (
    ACCOUNT,
    DOMAIN,
    PASSWORD,
    SUBMISSION_EXTENSIONS,
    SUBMISSION_SIZE_LIMIT,
    UNKNOWN_RECIPIENT,
    SubmissionEndpoint,
    SubmissionRelay,
    split_trace_headers,
)
from tests.interop.helpers import (
    ALICE,
    BOB,
    CAROL,
    WireExchange,
    assert_same_bytes,
    async_submission_client,
    canonical,
    dot_stuffed,
    make_message,
    multichunk_message,
    new_marker,
    received_with,
    server_reply_codes,
    skip_unless_enabled,
    smtp_exchanges,
    sync_submission_client,
)
from tests.servers import ReceivedMessage

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
skip_unless_enabled()

#: Not in alphabetical order: the relay gets them in the order of the RCPTs.
THREE = [CAROL, ALICE, BOB]
#: The relay refuses both (RELAY_REFUSED_RECIPIENTS).
UNKNOWN_TOO = f"nobody-else@{DOMAIN}"
#: The text of the relay's refusal, which Dovecot passes on.
RELAY_REFUSAL = b"5.1.1 no such user"

Refused = dict[str, tuple[int, bytes]]


@pytest.fixture
def proxy(submission: SubmissionEndpoint) -> Iterator[RecordingProxy]:
    """The recording relay in front of the port with no size limit."""
    with RecordingProxy((submission.host, submission.port)) as relay:
        yield relay


@pytest.fixture
def limited_proxy(submission: SubmissionEndpoint) -> Iterator[RecordingProxy]:
    """The recording relay in front of the port with the size limit."""
    with RecordingProxy((submission.limited_host, submission.limited_port)) as relay:
        yield relay


@dataclasses.dataclass
class RelayWatch:
    """The relay behind Dovecot, from the start of one test."""

    relay: SubmissionRelay
    #: How many sessions the relay had before the test.
    start: int

    def session(self, timeout: float = 10.0) -> Session:
        """The one relay session Dovecot opened during the test (one per
        client session), once Dovecot closed it.

        :raises AssertionError: there was not exactly one, or it stayed open.
        """
        deadline = time.monotonic() + timeout
        while not (sessions := self.relay.proxy.sessions[self.start :]):
            assert time.monotonic() < deadline, "Dovecot never connected to the relay"
            time.sleep(0.05)
        assert len(sessions) == 1, f"{len(sessions)} relay sessions"
        assert sessions[0].closed.wait(timeout), "the relay session was not closed"
        return sessions[0]

    def verbs(self) -> list[str]:
        """The commands Dovecot sent to the relay in that session."""
        return self.session().verbs()


@pytest.fixture
def relay(submission: SubmissionEndpoint) -> RelayWatch:
    return RelayWatch(submission.relay, len(submission.relay.proxy.sessions))


# -- what was relayed ------------------------------------------------------------------


def assert_relayed(
    submission: SubmissionEndpoint, marker: str, sent: bytes, recipients: list[str]
) -> ReceivedMessage:
    """The relay received ``sent`` (CRLF lines) byte for byte for
    ``recipients``, from the account, under the Received field Dovecot adds
    (``with ESMTPA``: an authenticated session)."""
    message = submission.relay.relayed(marker.encode())
    assert message.mail_from == ACCOUNT
    assert list(message.rcpt_tos) == recipients
    names, content = split_trace_headers(message.data)
    assert names == ["received"], message.data[:2000]
    assert received_with(message.data) == "esmtpa"
    assert re.search(rb"\tby submission\.interop\.test with ESMTPA\r\n", message.data)
    assert_same_bytes(content, sent)
    return message


def assert_not_relayed(submission: SubmissionEndpoint, marker: str) -> None:
    assert submission.relay.with_marker(marker.encode()) == []


# -- what went over the wire -----------------------------------------------------------


def verbs(exchanges: list[WireExchange]) -> list[str]:
    return [each.verb for each in exchanges]


def envelope(exchanges: list[WireExchange]) -> tuple[WireExchange, list[WireExchange]]:
    """The first transaction's MAIL and RCPTs."""
    start = verbs(exchanges).index("MAIL")
    rcpts = itertools.takewhile(
        lambda each: each.verb == "RCPT", exchanges[start + 1 :]
    )
    return exchanges[start], list(rcpts)


def commands_read(
    submission: SubmissionEndpoint, log_offset: int, relayed: ReceivedMessage
) -> list[str]:
    """The commands Dovecot's submission process read (it logs each one) in
    the session that relayed ``relayed``, once that session ended; the
    Received field's transaction id names the session."""
    match = re.search(rb"\r\n\tid (\S+)\r\n", relayed.data)
    assert match is not None, relayed.data[:2000]
    transaction = re.escape(match.group(1).decode())
    conn = r": Debug: smtp-server: conn \S+ \[\d+\]: "
    start = submission.wait_for_log(
        log_offset,
        rf"^\S+ \S+ (submission\(\S+?\)<\d+><[^>]+>){conn}trans <{transaction}>",
    )
    process = re.escape(start.group(1))
    submission.wait_for_log(log_offset, rf"^\S+ \S+ {process}: Info: Disconnected")
    return [
        " ".join(command.split())
        for command in re.findall(
            rf"^\S+ \S+ {process}{conn}Received new command: (.*)$",
            submission.log_since(log_offset),
            re.MULTILINE,
        )
    ]


def check_in_step(session: Session, exchanges: list[WireExchange]) -> None:
    """Every reply the server sent answered one of the client's commands: the
    server read nothing else (no chunk's octets) as a command."""
    assert server_reply_codes(session) == [
        code for each in exchanges for code in each.codes
    ], exchanges


def check_pipelined(exchanges: list[WireExchange], *, data: bool) -> None:
    """Every RCPT, and DATA with ``data``, left before the reply to MAIL came
    back; a BDAT only after the last RCPT's reply."""
    mail, rcpts = envelope(exchanges)
    batch = list(rcpts)
    after = exchanges[exchanges.index(rcpts[-1]) + 1]
    if data:
        assert after.verb == "DATA", exchanges
        batch.append(after)
    elif after.verb == "BDAT":
        assert after.sent_at > rcpts[-1].first_reply_at, exchanges
    for each in batch:
        assert each.sent_at < mail.first_reply_at, (
            f"{each.line!r} waited for the reply to MAIL: {exchanges}"
        )


def check_lockstep(exchanges: list[WireExchange]) -> None:
    """Each command left only after the reply to the one before."""
    for before, after in itertools.pairwise(exchanges):
        assert after.sent_at > before.last_reply_at, (
            f"{after.line!r} did not wait for {before.line!r}'s reply: {exchanges}"
        )


def check_chunks(exchanges: list[WireExchange], content: bytes) -> None:
    """The message went in BDAT chunks, every one accepted, the last one
    ``BDAT LAST``; their octets are ``content`` (no dot-stuffing)."""
    chunks = [each for each in exchanges if each.verb == "BDAT"]
    assert "DATA" not in verbs(exchanges)
    assert chunks, exchanges
    assert not any(each.is_last_chunk for each in chunks[:-1])
    assert chunks[-1].is_last_chunk
    assert [each.codes for each in chunks] == [[250]] * len(chunks)
    assert_same_bytes(b"".join(each.content for each in chunks), content)


def check_data(exchanges: list[WireExchange], content: bytes) -> None:
    """The message went with DATA, dot-stuffed: 354, then 250."""
    assert "BDAT" not in verbs(exchanges)
    (data,) = (each for each in exchanges if each.verb == "DATA")
    assert_same_bytes(data.content, dot_stuffed(content))
    assert data.codes == [354, 250]


def check_message_sent(
    exchanges: list[WireExchange], content: bytes, *, chunking: bool
) -> None:
    if chunking:
        check_chunks(exchanges, content)
    else:
        check_data(exchanges, content)


# -- AUTH, then several recipients -----------------------------------------------------


def auth_lines(mechanism: str) -> list[tuple[bytes, list[int]]]:
    """What the client sends for ``mechanism`` (smtplib's initial responses)
    and the codes Dovecot answers."""
    if mechanism == "PLAIN":
        plain = base64.b64encode(f"\0{ACCOUNT}\0{PASSWORD}".encode())
        return [(b"AUTH PLAIN " + plain, [235])]
    return [
        (b"AUTH LOGIN " + base64.b64encode(ACCOUNT.encode()), [334]),
        (base64.b64encode(PASSWORD.encode()), [235]),
    ]


def check_three(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    mechanism: str,
    refused: Refused,
    sent: bytes,
    marker: str,
) -> None:
    """Logged in with ``mechanism``; the message went with one ``BDAT LAST``
    after the pipelined envelope, and reached the relay for all three."""
    assert refused == {}
    assert_relayed(submission, marker, sent, THREE)
    session = proxy.only_session()
    exchanges = smtp_exchanges(session)
    logins = auth_lines(mechanism)
    assert [(each.line, each.codes) for each in exchanges[1 : 1 + len(logins)]] == (
        logins
    )
    assert verbs(exchanges[0:1] + exchanges[1 + len(logins) :]) == [
        *["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "BDAT", "QUIT"]
    ]
    mail, rcpts = envelope(exchanges)
    assert mail.codes == [250]
    assert [each.codes for each in rcpts] == [[250]] * 3
    check_pipelined(exchanges, data=False)
    check_chunks(exchanges, sent)
    check_in_step(session, exchanges)
    assert relay.verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA", "QUIT"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_and_several_recipients_async(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    mechanism: str,
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=tuple(THREE), body=b".dot\r\n.\r\nend\r\n")
    # PLAIN: the keyword API's login(), which picks it; LOGIN: smtplib's auth().
    async with async_submission_client(
        submission, port=proxy.port, login=mechanism == "PLAIN"
    ) as client:
        if mechanism == "LOGIN":
            await client.ehlo()
            client.user, client.password = ACCOUNT, PASSWORD
            assert (await client.auth("LOGIN", client.auth_login)).code == 235
        assert {name.upper() for name in client.esmtp_features} >= (
            SUBMISSION_EXTENSIONS | {"AUTH"}
        )
        refused = await client.sendmail(ACCOUNT, THREE, sent)
    check_three(submission, proxy, relay, mechanism, refused, sent, marker)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_and_several_recipients_sync(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    mechanism: str,
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=tuple(THREE), body=b".dot\r\n.\r\nend\r\n")
    with sync_submission_client(
        submission, port=proxy.port, login=mechanism == "PLAIN"
    ) as client:
        if mechanism == "LOGIN":
            client.ehlo()
            client.user, client.password = ACCOUNT, PASSWORD
            assert client.auth("LOGIN", client.auth_login)[0] == 235
        assert {name.upper() for name in client.esmtp_features} >= (
            SUBMISSION_EXTENSIONS | {"AUTH"}
        )
        refused = client.sendmail(ACCOUNT, THREE, sent)
    check_three(submission, proxy, relay, mechanism, refused, sent, marker)


# -- a message of several chunks -------------------------------------------------------


def check_multichunk(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    refused: Refused,
    message: bytes,
    marker: str,
    *,
    pipelining: bool,
    chunking: bool,
) -> None:
    """Relayed intact for Alice and Bob; sent as the options say (three
    chunks with BDAT, dot-stuffed with DATA; pipelined or one command at a
    time)."""
    sent = canonical(message)
    assert refused == {}
    assert_relayed(submission, marker, sent, [ALICE, BOB])
    session = proxy.only_session()
    exchanges = smtp_exchanges(session)
    check_message_sent(exchanges, sent, chunking=chunking)
    if chunking:
        assert verbs(exchanges).count("BDAT") == 3
    if pipelining:
        check_pipelined(exchanges, data=not chunking)
    else:
        check_lockstep(exchanges)
    check_in_step(session, exchanges)
    assert relay.verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "QUIT"]


@pytest.mark.parametrize(
    ("pipelining", "chunking"),
    [(True, True), (True, False), (False, True), (False, False)],
    ids=["pipelining-bdat", "pipelining-data", "bdat", "data"],
)
async def test_multichunk_bare_lf_message_async(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    pipelining: bool,
    chunking: bool,
) -> None:
    marker = new_marker()
    message = multichunk_message(marker, to=(ALICE, BOB), subject="submission")
    async with async_submission_client(
        submission, port=proxy.port, pipelining=pipelining, chunking=chunking
    ) as client:
        refused = await client.sendmail(ACCOUNT, [ALICE, BOB], message)
    check_multichunk(
        submission,
        proxy,
        relay,
        refused,
        message,
        marker,
        pipelining=pipelining,
        chunking=chunking,
    )


def test_multichunk_bare_lf_message_sync(
    submission: SubmissionEndpoint, proxy: RecordingProxy, relay: RelayWatch
) -> None:
    marker = new_marker()
    message = multichunk_message(marker, to=(ALICE, BOB), subject="submission")
    with sync_submission_client(submission, port=proxy.port) as client:
        refused = client.sendmail(ACCOUNT, [ALICE, BOB], message)
    check_multichunk(
        submission,
        proxy,
        relay,
        refused,
        message,
        marker,
        pipelining=True,
        chunking=True,
    )


# -- a refused recipient ---------------------------------------------------------------

WITH_UNKNOWN = [BOB, UNKNOWN_RECIPIENT, CAROL]


def check_unknown_refused(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    refused: Refused,
    sent: bytes,
    marker: str,
    *,
    chunking: bool,
) -> None:
    """The relay's refusal of the unknown recipient came back at RCPT (and in
    the result); the others got the message."""
    assert list(refused) == [UNKNOWN_RECIPIENT]
    code, text = refused[UNKNOWN_RECIPIENT]
    assert code == 550, text
    assert RELAY_REFUSAL in text, text
    assert UNKNOWN_RECIPIENT.encode() in text, text
    assert_relayed(submission, marker, sent, [BOB, CAROL])
    session = proxy.only_session()
    exchanges = smtp_exchanges(session)
    assert [each.codes for each in envelope(exchanges)[1]] == [[250], [550], [250]]
    check_pipelined(exchanges, data=not chunking)
    check_message_sent(exchanges, sent, chunking=chunking)
    check_in_step(session, exchanges)
    assert relay.verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "DATA", "QUIT"]


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_unknown_recipient_among_known_async(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    chunking: bool,
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    async with async_submission_client(
        submission, port=proxy.port, chunking=chunking
    ) as client:
        refused = await client.sendmail(ACCOUNT, WITH_UNKNOWN, sent)
    check_unknown_refused(
        submission, proxy, relay, refused, sent, marker, chunking=chunking
    )


def test_unknown_recipient_among_known_sync(
    submission: SubmissionEndpoint, proxy: RecordingProxy, relay: RelayWatch
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    with sync_submission_client(submission, port=proxy.port) as client:
        refused = client.sendmail(ACCOUNT, WITH_UNKNOWN, sent)
    check_unknown_refused(
        submission, proxy, relay, refused, sent, marker, chunking=True
    )


# -- every recipient refused -----------------------------------------------------------


def check_every_recipient_refused(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    caught: pytest.ExceptionInfo[anysmtp.SMTPRecipientsRefused],
    refused_marker: str,
    sent: bytes,
    marker: str,
    *,
    chunking: bool,
) -> None:
    """Both recipients refused; no BDAT after the refused envelope (RSET
    instead); then the same session relayed the next message."""
    assert list(caught.value.recipients) == [UNKNOWN_RECIPIENT, UNKNOWN_TOO]
    assert {code for code, _ in caught.value.recipients.values()} == {550}
    assert_not_relayed(submission, refused_marker)
    assert_relayed(submission, marker, sent, [BOB])
    session = proxy.only_session()
    exchanges = smtp_exchanges(session)
    refused_end = verbs(exchanges).index("RSET")
    first, second = exchanges[: refused_end + 1], exchanges[refused_end + 1 :]
    assert [each.codes for each in envelope(first)[1]] == [[550], [550]]
    if chunking:
        assert verbs(first) == ["EHLO", "AUTH", "MAIL", "RCPT", "RCPT", "RSET"]
    else:
        # DATA went with the envelope (pipelined): Dovecot refused it.
        assert verbs(first) == ["EHLO", "AUTH", "MAIL", "RCPT", "RCPT", "DATA", "RSET"]
        assert first[-2].codes[0] // 100 == 5, first
    assert first[-1].codes == [250]
    check_pipelined(first, data=not chunking)
    assert verbs(second) == ["MAIL", "RCPT", "BDAT" if chunking else "DATA", "QUIT"]
    check_message_sent(second, sent, chunking=chunking)
    check_in_step(session, exchanges)
    # The refused transaction never reached the relay's DATA.
    assert relay.verbs() == [
        *["EHLO", "MAIL", "RCPT", "RCPT", "RSET"],
        *["MAIL", "RCPT", "DATA", "QUIT"],
    ]


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_every_recipient_refused_async(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    chunking: bool,
) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    async with async_submission_client(
        submission, port=proxy.port, chunking=chunking
    ) as client:
        with pytest.raises(anysmtp.SMTPRecipientsRefused) as caught:
            await client.sendmail(
                ACCOUNT, [UNKNOWN_RECIPIENT, UNKNOWN_TOO], make_message(refused_marker)
            )
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_every_recipient_refused(
        submission,
        proxy,
        relay,
        caught,
        refused_marker,
        sent,
        marker,
        chunking=chunking,
    )


def test_every_recipient_refused_sync(
    submission: SubmissionEndpoint, proxy: RecordingProxy, relay: RelayWatch
) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    with sync_submission_client(submission, port=proxy.port) as client:
        with pytest.raises(anysmtp.SMTPRecipientsRefused) as caught:
            client.sendmail(
                ACCOUNT, [UNKNOWN_RECIPIENT, UNKNOWN_TOO], make_message(refused_marker)
            )
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_every_recipient_refused(
        submission, proxy, relay, caught, refused_marker, sent, marker, chunking=True
    )


# -- a chunk refused in the middle of the message --------------------------------------

#: The size of the pieces the message of unknown length comes in: anysmtp sends
#: each as one chunk, so the fourth goes over the limit, after three accepted.
PIECE = 32 * 1024
assert 3 * PIECE < SUBMISSION_SIZE_LIMIT < 4 * PIECE


def smuggled_commands(marker: str) -> bytes:
    """Lines that a server reading the octets as commands would run: a whole
    transaction from another sender, to another recipient."""
    return (
        "RSET\r\n"
        f"MAIL FROM:<evil-{marker}@x.test>\r\n"
        f"RCPT TO:<victim-{marker}@{DOMAIN}>\r\n"
        "DATA\r\n"
        f"Subject: smuggled {marker}\r\n"
        "\r\n"
        "smuggled\r\n"
        ".\r\n"
        "NOOP\r\n"
    ).encode()


def oversized_message(marker: str, smuggled: str) -> bytes:
    """About 700 KiB (seven times the limit), the body nothing but
    :func:`smuggled_commands`."""
    head = make_message(marker, subject="over the limit", body=b"")
    block = smuggled_commands(smuggled)
    return head + block * (700 * 1024 // len(block))


def in_pieces(message: bytes) -> Iterator[bytes]:
    """The message as a stream of unknown length (no SIZE announced)."""
    for start in range(0, len(message), PIECE):
        yield message[start : start + PIECE]


async def in_pieces_async(message: bytes) -> AsyncGenerator[bytes, None]:
    for piece in in_pieces(message):
        yield piece


#: Each case: the MAIL parameters the caller gives.
ANNOUNCED = {
    # No size: the server finds out in the chunks.
    "unknown-size": [],
    # A size under the limit that the message then exceeds: MAIL is accepted.
    "size-understated": ["SIZE=50000"],
}


def check_refused_mid_message(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    relay: RelayWatch,
    log_offset: int,
    caught: pytest.ExceptionInfo[anysmtp.SMTPMessageTooLarge],
    message: bytes,
    refused_marker: str,
    smuggled: str,
    sent: bytes,
    marker: str,
    mail_options: list[str],
) -> None:
    """Three chunks accepted; the fourth would have gone past the SIZE limit
    Dovecot advertised, so anysmtp stopped short of it (a server that finds a
    chunk too large half-way may read the rest as commands: Exim does, see
    test_smuggling.py; Dovecot discards it); the caller got
    SMTPMessageTooLarge; RSET, and the next message went on the same session.
    No octet of any chunk was read as a command: every reply Dovecot sent
    answers one of the client's commands, Dovecot logged none of the smuggled
    ones, and the relay saw none."""
    assert caught.value.smtp_code == 552
    assert caught.value.limit == SUBMISSION_SIZE_LIMIT
    assert caught.value.size == 4 * PIECE
    assert_not_relayed(submission, refused_marker)
    relayed = assert_relayed(submission, marker, sent, [BOB])

    session = proxy.only_session()
    exchanges = smtp_exchanges(session)
    check_in_step(session, exchanges)
    refused_end = verbs(exchanges).index("RSET")
    first, second = exchanges[: refused_end + 1], exchanges[refused_end + 1 :]
    mail, rcpts = envelope(first)
    assert mail.line.split()[2:] == [option.encode() for option in mail_options]
    assert mail.codes == [250]
    assert [each.codes for each in rcpts] == [[250]]
    chunks = [each for each in first if each.verb == "BDAT"]
    assert verbs(first) == ["EHLO", "AUTH", "MAIL", "RCPT"] + ["BDAT"] * len(chunks) + [
        "RSET"
    ]
    assert 3 * PIECE <= SUBMISSION_SIZE_LIMIT < 4 * PIECE
    assert [each.codes for each in chunks] == [[250]] * 3
    assert [len(each.content) for each in chunks] == [PIECE] * 3
    assert not any(each.is_last_chunk for each in chunks)
    assert_same_bytes(
        b"".join(each.content for each in chunks), message[: PIECE * len(chunks)]
    )
    assert first[-1].codes == [250]
    assert verbs(second) == ["MAIL", "RCPT", "BDAT", "QUIT"]
    check_chunks(second, sent)

    # Dovecot read the client's commands after AUTH, and nothing else.
    after_login = exchanges[verbs(exchanges).index("AUTH") + 1 :]
    assert commands_read(submission, log_offset, relayed) == [
        each.line.decode() for each in after_login
    ]
    assert smuggled not in submission.log_since(log_offset)
    # The relay: the refused transaction's envelope, RSET, the next message.
    relay_session = relay.session()
    assert smuggled.encode() not in relay_session.data("client")
    assert relay_session.verbs() == [
        *["EHLO", "MAIL", "RCPT", "RSET"],
        *["MAIL", "RCPT", "DATA", "QUIT"],
    ]


@pytest.mark.parametrize("announced", list(ANNOUNCED))
async def test_chunk_refused_mid_message_async(
    submission: SubmissionEndpoint,
    limited_proxy: RecordingProxy,
    relay: RelayWatch,
    announced: str,
) -> None:
    refused_marker, smuggled, marker = new_marker(), new_marker(), new_marker()
    message = oversized_message(refused_marker, smuggled)
    sent = make_message(marker)
    mail_options = ANNOUNCED[announced]
    log_offset = submission.log_size()
    async with async_submission_client(submission, port=limited_proxy.port) as client:
        assert client.esmtp_features["size"] == str(SUBMISSION_SIZE_LIMIT)
        with pytest.raises(anysmtp.SMTPMessageTooLarge) as caught:
            async with contextlib.aclosing(in_pieces_async(message)) as pieces:
                await client.sendmail(ACCOUNT, [BOB], pieces, mail_options)
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_refused_mid_message(
        submission,
        limited_proxy,
        relay,
        log_offset,
        caught,
        message,
        refused_marker,
        smuggled,
        sent,
        marker,
        mail_options,
    )


@pytest.mark.parametrize("announced", list(ANNOUNCED))
def test_chunk_refused_mid_message_sync(
    submission: SubmissionEndpoint,
    limited_proxy: RecordingProxy,
    relay: RelayWatch,
    announced: str,
) -> None:
    refused_marker, smuggled, marker = new_marker(), new_marker(), new_marker()
    message = oversized_message(refused_marker, smuggled)
    sent = make_message(marker)
    mail_options = ANNOUNCED[announced]
    log_offset = submission.log_size()
    with sync_submission_client(submission, port=limited_proxy.port) as client:
        assert client.esmtp_features["size"] == str(SUBMISSION_SIZE_LIMIT)
        with pytest.raises(anysmtp.SMTPMessageTooLarge) as caught:
            client.sendmail(ACCOUNT, [BOB], in_pieces(message), mail_options)
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_refused_mid_message(
        submission,
        limited_proxy,
        relay,
        log_offset,
        caught,
        message,
        refused_marker,
        smuggled,
        sent,
        marker,
        mail_options,
    )


# -- a message of known size over the limit --------------------------------------------


def check_refused_before_mail(
    submission: SubmissionEndpoint,
    proxy: RecordingProxy,
    caught: pytest.ExceptionInfo[anysmtp.SMTPMessageTooLarge],
    refused_marker: str,
    sent: bytes,
    marker: str,
) -> None:
    """anysmtp refused it against the advertised SIZE: nothing of it went on
    the wire, and the next message did."""
    assert caught.value.smtp_code == 552
    assert isinstance(caught.value, anysmtp.SMTPSenderRefused)
    assert_not_relayed(submission, refused_marker)
    assert_relayed(submission, marker, sent, [BOB])
    session = proxy.only_session()
    exchanges = smtp_exchanges(session)
    assert verbs(exchanges) == ["EHLO", "AUTH", "MAIL", "RCPT", "BDAT", "QUIT"]
    assert refused_marker.encode() not in session.data("client")
    check_chunks(exchanges, sent)
    check_in_step(session, exchanges)


async def test_known_size_over_the_limit_async(
    submission: SubmissionEndpoint, limited_proxy: RecordingProxy
) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    async with async_submission_client(submission, port=limited_proxy.port) as client:
        with pytest.raises(anysmtp.SMTPMessageTooLarge) as caught:
            await client.sendmail(
                ACCOUNT, [BOB], oversized_message(refused_marker, new_marker())
            )
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_refused_before_mail(
        submission, limited_proxy, caught, refused_marker, sent, marker
    )


def test_known_size_over_the_limit_sync(
    submission: SubmissionEndpoint, limited_proxy: RecordingProxy
) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    with sync_submission_client(submission, port=limited_proxy.port) as client:
        with pytest.raises(anysmtp.SMTPMessageTooLarge) as caught:
            client.sendmail(
                ACCOUNT, [BOB], oversized_message(refused_marker, new_marker())
            )
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_refused_before_mail(
        submission, limited_proxy, caught, refused_marker, sent, marker
    )
