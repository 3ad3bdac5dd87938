"""anysmtp's LMTP clients against a real LMTP server: Dovecot's (RFC 2033).

Dovecot answers the end of the data once per accepted recipient, and offers
PIPELINING and CHUNKING: the client pipelines the envelope (RFC 2920) and
sends the message with BDAT (RFC 3030), only after the envelope's replies
(a ``BDAT LAST`` after no accepted recipient would get no reply at all) and
one chunk at a time.  Sessions over TCP go through the recording relay
(:mod:`interop.proxy`), whose causal record shows what the client sent before
which reply; sessions over the Unix socket are checked in Dovecot's log, which
lists every command it read.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
from collections.abc import Iterator

import pytest

import anysmtp
from interop.proxy import RecordingProxy
from interop.servers import (
    ACCOUNT,
    DOMAIN,
    LMTP_EXTENSIONS,
    MAILBOX_USER,
    OVER_QUOTA,
    UNKNOWN_RECIPIENT,
    LmtpEndpoint,
    split_trace_headers,
)
from tests.interop.helpers import (
    ALICE,
    BOB,
    CAROL,
    LmtpExchange,
    as_stored,
    assert_same_bytes,
    async_lmtp_client,
    canonical,
    dot_stuffed,
    lmtp_exchanges,
    make_message,
    multichunk_message,
    new_marker,
    skip_unless_enabled,
    sync_lmtp_client,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
skip_unless_enabled()

#: Not in alphabetical order: the replies follow the order of the RCPTs.
THREE = [CAROL, ALICE, BOB]
#: A second address Dovecot does not know.
UNKNOWN_TOO = f"nobody-else@{DOMAIN}"
#: A MAIL parameter Dovecot's LMTP does not support: it refuses the sender
#: (555 5.5.4), the one way to make it refuse one.
UNSUPPORTED_MAIL_OPTION = "X-ANYSMTP-INTEROP=1"

Replies = list[tuple[str, anysmtp.SMTPResponse]]
Refused = dict[str, tuple[int, bytes]]


@pytest.fixture
def proxy(lmtp: LmtpEndpoint) -> Iterator[RecordingProxy]:
    with RecordingProxy((lmtp.host, lmtp.port)) as relay:
        yield relay


# -- what was delivered --------------------------------------------------------------


def assert_lmtp_delivered(
    lmtp: LmtpEndpoint, address: str, sent: bytes, marker: str, *, alone: bool = False
) -> None:
    """The message delivered to ``address`` is ``sent`` (CRLF lines), byte for
    byte, under the header fields Dovecot puts on top (Return-Path, Received,
    and Delivered-To when ``address`` was the transaction's ``alone``
    recipient), in a file of the mailbox user's."""
    stored = lmtp.delivered(address, marker.encode())
    names, message = split_trace_headers(stored)
    if alone:
        assert names == ["return-path", "delivered-to", "received"], stored[:2000]
        assert f"\nDelivered-To: {address}\n".encode() in stored, stored[:2000]
    else:
        assert names == ["return-path", "received"], stored[:2000]
    assert re.search(rb"^\tby lmtp\.interop\.test with LMTP$", stored, re.M), stored
    assert_same_bytes(message, as_stored(sent))
    owners = [
        path.stat().st_uid
        for path in (lmtp.mailbox(address) / "new").iterdir()
        if marker.encode() in path.read_bytes()
    ]
    assert owners == [pwd.getpwnam(MAILBOX_USER).pw_uid]


def assert_not_delivered(lmtp: LmtpEndpoint, address: str, marker: str) -> None:
    assert lmtp.delivered_count(address, marker.encode()) == 0


def check_saved(replies: Replies, recipients: list[str]) -> None:
    """``lmtp_data_replies``: Dovecot's "Saved" for each recipient, in order."""
    assert [recipient for recipient, _ in replies] == recipients
    for recipient, (code, message) in replies:
        assert code == 250, message
        assert message.startswith(b"2.0.0 <" + recipient.encode() + b"> "), message
        assert message.endswith(b" Saved"), message


# -- what went over the wire ---------------------------------------------------------


def verbs(exchanges: list[LmtpExchange]) -> list[str]:
    return [each.verb for each in exchanges]


def envelope(exchanges: list[LmtpExchange]) -> tuple[LmtpExchange, list[LmtpExchange]]:
    """The first transaction's MAIL and RCPTs."""
    start = verbs(exchanges).index("MAIL")
    rcpts = itertools.takewhile(
        lambda each: each.verb == "RCPT", exchanges[start + 1 :]
    )
    return exchanges[start], list(rcpts)


def check_pipelined(exchanges: list[LmtpExchange], *, data: bool) -> None:
    """Every RCPT, and DATA with ``data``, left before the reply to MAIL came
    back."""
    mail, rcpts = envelope(exchanges)
    batch = list(rcpts)
    if data:
        batch.append(exchanges[exchanges.index(rcpts[-1]) + 1])
        assert batch[-1].verb == "DATA", exchanges
    for each in batch:
        assert each.sent_at < mail.first_reply_at, (
            f"{each.line!r} waited for the reply to MAIL: {exchanges}"
        )


def check_lockstep(exchanges: list[LmtpExchange]) -> None:
    """Each command left only after every reply to the one before."""
    for before, after in itertools.pairwise(exchanges):
        assert after.sent_at > before.last_reply_at, (
            f"{after.line!r} did not wait for {before.line!r}'s replies: {exchanges}"
        )


def check_chunks(
    exchanges: list[LmtpExchange], content: bytes, codes: list[int]
) -> None:
    """The message went in BDAT chunks, the first after the last RCPT's reply,
    each after the previous one's reply; their octets are ``content`` (no
    dot-stuffing); every chunk but the last got 250, ``BDAT LAST`` got
    ``codes``, one per accepted recipient."""
    _, rcpts = envelope(exchanges)
    chunks = [each for each in exchanges if each.verb == "BDAT"]
    assert "DATA" not in verbs(exchanges)
    assert chunks, exchanges
    assert not any(each.is_last_chunk for each in chunks[:-1])
    assert chunks[-1].is_last_chunk
    assert_same_bytes(b"".join(each.content for each in chunks), content)
    assert chunks[0].sent_at > rcpts[-1].first_reply_at, exchanges
    check_lockstep(chunks)
    assert [each.codes for each in chunks] == [[250]] * (len(chunks) - 1) + [codes]


def check_data(exchanges: list[LmtpExchange], content: bytes, codes: list[int]) -> None:
    """The message went with DATA, dot-stuffed; the replies: 354, then
    ``codes``, one per accepted recipient."""
    assert "BDAT" not in verbs(exchanges)
    (data,) = (each for each in exchanges if each.verb == "DATA")
    assert_same_bytes(data.content, dot_stuffed(content))
    assert data.codes == [354, *codes]


def check_message_sent(
    exchanges: list[LmtpExchange], content: bytes, codes: list[int], *, chunking: bool
) -> None:
    if chunking:
        check_chunks(exchanges, content, codes)
    else:
        check_data(exchanges, content, codes)


# -- several recipients --------------------------------------------------------------


def check_three(
    lmtp: LmtpEndpoint,
    proxy: RecordingProxy,
    refused: Refused,
    replies: Replies,
    sent: bytes,
    marker: str,
) -> None:
    assert refused == {}
    check_saved(replies, THREE)
    for address in THREE:
        assert_lmtp_delivered(lmtp, address, sent, marker)
    exchanges = lmtp_exchanges(proxy.only_session())
    assert verbs(exchanges) == ["LHLO", "MAIL", "RCPT", "RCPT", "RCPT", "BDAT", "QUIT"]
    assert [each.codes for each in envelope(exchanges)[1]] == [[250]] * 3
    check_pipelined(exchanges, data=False)
    # One chunk: a CRLF message goes as it is.
    check_chunks(exchanges, sent, [250, 250, 250])


async def test_several_recipients_async(
    lmtp: LmtpEndpoint, proxy: RecordingProxy
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=tuple(THREE), body=b".dot\r\n.\r\nend\r\n")
    async with async_lmtp_client(lmtp, port=proxy.port) as client:
        refused = await client.sendmail(ACCOUNT, THREE, sent)
        replies = client.lmtp_data_replies
        assert {name.upper() for name in client.esmtp_features} >= LMTP_EXTENSIONS
    check_three(lmtp, proxy, refused, replies, sent, marker)


def test_several_recipients_sync(lmtp: LmtpEndpoint, proxy: RecordingProxy) -> None:
    marker = new_marker()
    sent = make_message(marker, to=tuple(THREE), body=b".dot\r\n.\r\nend\r\n")
    with sync_lmtp_client(lmtp, port=proxy.port) as client:
        refused = client.sendmail(ACCOUNT, THREE, sent)
        replies = client.lmtp_data_replies
        assert {name.upper() for name in client.esmtp_features} >= LMTP_EXTENSIONS
    check_three(lmtp, proxy, refused, replies, sent, marker)


# -- the Unix socket -----------------------------------------------------------------


def check_unix_session(
    lmtp: LmtpEndpoint,
    log_offset: int,
    refused: Refused,
    replies: Replies,
    sent: bytes,
    marker: str,
) -> None:
    """Delivered to Alice and Bob, over the Unix socket (Dovecot logs this
    process as the peer) with one ``BDAT LAST``."""
    assert refused == {}
    check_saved(replies, [ALICE, BOB])
    for address in (ALICE, BOB):
        assert_lmtp_delivered(lmtp, address, sent, marker)
    conn = rf"conn unix:pid={os.getpid()},uid={os.getuid()} \[\d+\]"
    lmtp.wait_for_log(log_offset, rf"{conn}: Received new command: (?i:quit)")
    commands = re.findall(
        rf"{conn}: Received new command: (.*?) ?$",
        lmtp.log_since(log_offset),
        re.MULTILINE,
    )
    assert [command.split()[0].lower() for command in commands] == [
        "lhlo",
        "mail",
        "rcpt",
        "rcpt",
        "bdat",
        "quit",
    ]
    assert commands[4].upper() == f"BDAT {len(sent)} LAST"


async def test_unix_socket_async(lmtp: LmtpEndpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(ALICE, BOB))
    offset = lmtp.log_size()
    async with async_lmtp_client(lmtp, unix=True) as client:
        refused = await client.sendmail(ACCOUNT, [ALICE, BOB], sent)
        replies = client.lmtp_data_replies
    check_unix_session(lmtp, offset, refused, replies, sent, marker)


def test_unix_socket_sync(lmtp: LmtpEndpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(ALICE, BOB))
    offset = lmtp.log_size()
    with sync_lmtp_client(lmtp, unix=True) as client:
        refused = client.sendmail(ACCOUNT, [ALICE, BOB], sent)
        replies = client.lmtp_data_replies
    check_unix_session(lmtp, offset, refused, replies, sent, marker)


# -- refusals at RCPT and MAIL ------------------------------------------------------

WITH_UNKNOWN = [BOB, UNKNOWN_RECIPIENT, CAROL]


def check_unknown_refused(
    lmtp: LmtpEndpoint,
    proxy: RecordingProxy,
    refused: Refused,
    replies: Replies,
    sent: bytes,
    marker: str,
    *,
    chunking: bool,
) -> None:
    """The unknown recipient refused at RCPT (and in the result), the others
    delivered, with one reply each to the end of the data."""
    assert list(refused) == [UNKNOWN_RECIPIENT]
    code, text = refused[UNKNOWN_RECIPIENT]
    assert code == 550, text
    assert text.startswith(b"5.1.1 <" + UNKNOWN_RECIPIENT.encode() + b"> "), text
    check_saved(replies, [BOB, CAROL])
    for address in (BOB, CAROL):
        assert_lmtp_delivered(lmtp, address, sent, marker)
    exchanges = lmtp_exchanges(proxy.only_session())
    assert [each.codes for each in envelope(exchanges)[1]] == [[250], [550], [250]]
    check_pipelined(exchanges, data=not chunking)
    check_message_sent(exchanges, sent, [250, 250], chunking=chunking)


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_unknown_recipient_among_known_async(
    lmtp: LmtpEndpoint, proxy: RecordingProxy, chunking: bool
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    async with async_lmtp_client(lmtp, port=proxy.port, chunking=chunking) as client:
        refused = await client.sendmail(ACCOUNT, WITH_UNKNOWN, sent)
        replies = client.lmtp_data_replies
    check_unknown_refused(
        lmtp, proxy, refused, replies, sent, marker, chunking=chunking
    )


def test_unknown_recipient_among_known_sync(
    lmtp: LmtpEndpoint, proxy: RecordingProxy
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    with sync_lmtp_client(lmtp, port=proxy.port) as client:
        refused = client.sendmail(ACCOUNT, WITH_UNKNOWN, sent)
        replies = client.lmtp_data_replies
    check_unknown_refused(lmtp, proxy, refused, replies, sent, marker, chunking=True)


def check_every_recipient_refused(
    lmtp: LmtpEndpoint,
    proxy: RecordingProxy,
    caught: pytest.ExceptionInfo[anysmtp.SMTPRecipientsRefused],
    replies_after: Replies,
    sent: bytes,
    marker: str,
    *,
    chunking: bool,
) -> None:
    """Both recipients refused; no message data sent (no BDAT: it would get no
    reply at all); then the same session delivered the next message."""
    assert list(caught.value.recipients) == [UNKNOWN_RECIPIENT, UNKNOWN_TOO]
    assert {code for code, _ in caught.value.recipients.values()} == {550}
    check_saved(replies_after, [BOB])
    assert_lmtp_delivered(lmtp, BOB, sent, marker, alone=True)
    exchanges = lmtp_exchanges(proxy.only_session())
    refused_end = verbs(exchanges).index("RSET")
    first, second = exchanges[: refused_end + 1], exchanges[refused_end + 1 :]
    assert [each.codes for each in envelope(first)[1]] == [[550], [550]]
    if chunking:
        assert verbs(first) == ["LHLO", "MAIL", "RCPT", "RCPT", "RSET"]
    else:
        # DATA went with the envelope (pipelined): Dovecot refused it.
        assert verbs(first) == ["LHLO", "MAIL", "RCPT", "RCPT", "DATA", "RSET"]
        assert first[-2].codes == [503], first
    check_pipelined(first, data=not chunking)
    assert verbs(second) == ["MAIL", "RCPT", "BDAT" if chunking else "DATA", "QUIT"]
    check_message_sent(second, sent, [250], chunking=chunking)


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_every_recipient_unknown_async(
    lmtp: LmtpEndpoint, proxy: RecordingProxy, chunking: bool
) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    async with async_lmtp_client(lmtp, port=proxy.port, chunking=chunking) as client:
        with pytest.raises(anysmtp.SMTPRecipientsRefused) as caught:
            await client.sendmail(
                ACCOUNT, [UNKNOWN_RECIPIENT, UNKNOWN_TOO], make_message(refused_marker)
            )
        assert client.lmtp_data_replies == []
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
        replies = client.lmtp_data_replies
    check_every_recipient_refused(
        lmtp, proxy, caught, replies, sent, marker, chunking=chunking
    )


def test_every_recipient_unknown_sync(
    lmtp: LmtpEndpoint, proxy: RecordingProxy
) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    with sync_lmtp_client(lmtp, port=proxy.port) as client:
        with pytest.raises(anysmtp.SMTPRecipientsRefused) as caught:
            client.sendmail(
                ACCOUNT, [UNKNOWN_RECIPIENT, UNKNOWN_TOO], make_message(refused_marker)
            )
        assert client.lmtp_data_replies == []
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
        replies = client.lmtp_data_replies
    check_every_recipient_refused(
        lmtp, proxy, caught, replies, sent, marker, chunking=True
    )


def check_sender_refused(
    lmtp: LmtpEndpoint,
    proxy: RecordingProxy,
    caught: pytest.ExceptionInfo[anysmtp.SMTPSenderRefused],
    refused_marker: str,
    sent: bytes,
    marker: str,
    *,
    chunking: bool,
) -> None:
    """MAIL refused (the RCPTs pipelined with it too); the next message
    delivered on the same session, the refused one nowhere."""
    assert caught.value.smtp_code == 555
    error = caught.value.smtp_error
    assert isinstance(error, bytes)
    assert error.startswith(b"5.5.4 "), error
    assert caught.value.sender == ACCOUNT
    assert_lmtp_delivered(lmtp, BOB, sent, marker, alone=True)
    for address in (BOB, CAROL):
        assert_not_delivered(lmtp, address, refused_marker)
    exchanges = lmtp_exchanges(proxy.only_session())
    # Without BDAT, DATA went with the envelope (pipelined) and was refused.
    message = ["BDAT"] if chunking else ["DATA"]
    assert verbs(exchanges) == [
        *["LHLO", "MAIL", "RCPT", "RCPT", *([] if chunking else ["DATA"]), "RSET"],
        *["MAIL", "RCPT", *message, "QUIT"],
    ]
    mail, rcpts = envelope(exchanges)
    assert mail.codes == [555]
    assert UNSUPPORTED_MAIL_OPTION.encode() in mail.line
    check_pipelined(exchanges, data=not chunking)
    assert [each.codes[0] // 100 for each in rcpts] == [5, 5]
    second = exchanges[verbs(exchanges).index("RSET") + 1 :]
    check_message_sent(second, sent, [250], chunking=chunking)


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_refused_sender_async(
    lmtp: LmtpEndpoint, proxy: RecordingProxy, chunking: bool
) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    async with async_lmtp_client(lmtp, port=proxy.port, chunking=chunking) as client:
        with pytest.raises(anysmtp.SMTPSenderRefused) as caught:
            await client.sendmail(
                ACCOUNT,
                [BOB, CAROL],
                make_message(refused_marker),
                mail_options=[UNSUPPORTED_MAIL_OPTION],
            )
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_sender_refused(
        lmtp, proxy, caught, refused_marker, sent, marker, chunking=chunking
    )


def test_refused_sender_sync(lmtp: LmtpEndpoint, proxy: RecordingProxy) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    with sync_lmtp_client(lmtp, port=proxy.port) as client:
        with pytest.raises(anysmtp.SMTPSenderRefused) as caught:
            client.sendmail(
                ACCOUNT,
                [BOB, CAROL],
                make_message(refused_marker),
                mail_options=[UNSUPPORTED_MAIL_OPTION],
            )
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_sender_refused(
        lmtp, proxy, caught, refused_marker, sent, marker, chunking=True
    )


# -- a message of several chunks -----------------------------------------------------


def check_multichunk(
    lmtp: LmtpEndpoint,
    proxy: RecordingProxy,
    refused: Refused,
    replies: Replies,
    message: bytes,
    marker: str,
    *,
    pipelining: bool,
    chunking: bool,
) -> None:
    """Delivered intact to Alice and Bob; sent as the options say (several
    chunks with BDAT, dot-stuffed with DATA; pipelined or one command at a
    time)."""
    sent = canonical(message)
    assert refused == {}
    check_saved(replies, [ALICE, BOB])
    for address in (ALICE, BOB):
        assert_lmtp_delivered(lmtp, address, sent, marker)
    exchanges = lmtp_exchanges(proxy.only_session())
    check_message_sent(exchanges, sent, [250, 250], chunking=chunking)
    if chunking:
        assert verbs(exchanges).count("BDAT") == 3
    if pipelining:
        check_pipelined(exchanges, data=not chunking)
    else:
        check_lockstep(exchanges)


@pytest.mark.parametrize(
    ("pipelining", "chunking"),
    [(True, True), (True, False), (False, True), (False, False)],
    ids=["pipelining-bdat", "pipelining-data", "bdat", "data"],
)
async def test_multichunk_bare_lf_message_async(
    lmtp: LmtpEndpoint, proxy: RecordingProxy, pipelining: bool, chunking: bool
) -> None:
    marker = new_marker()
    message = multichunk_message(marker, to=(ALICE, BOB), subject="LMTP chunks")
    async with async_lmtp_client(
        lmtp, port=proxy.port, pipelining=pipelining, chunking=chunking
    ) as client:
        refused = await client.sendmail(ACCOUNT, [ALICE, BOB], message)
        replies = client.lmtp_data_replies
    check_multichunk(
        lmtp,
        proxy,
        refused,
        replies,
        message,
        marker,
        pipelining=pipelining,
        chunking=chunking,
    )


def test_multichunk_bare_lf_message_sync(
    lmtp: LmtpEndpoint, proxy: RecordingProxy
) -> None:
    marker = new_marker()
    message = multichunk_message(marker, to=(ALICE, BOB), subject="LMTP chunks")
    with sync_lmtp_client(lmtp, port=proxy.port) as client:
        refused = client.sendmail(ACCOUNT, [ALICE, BOB], message)
        replies = client.lmtp_data_replies
    check_multichunk(
        lmtp,
        proxy,
        refused,
        replies,
        message,
        marker,
        pipelining=True,
        chunking=True,
    )


# -- a delivery that fails after the data: over quota ------------------------------

WITH_FULL = [ALICE, OVER_QUOTA, BOB]


def check_quota_refusal(text: bytes) -> None:
    assert text.startswith(b"5.2.2 <" + OVER_QUOTA.encode() + b"> Quota exceeded"), text


def check_over_quota(
    lmtp: LmtpEndpoint,
    proxy: RecordingProxy,
    refused: Refused,
    replies: Replies,
    sent: bytes,
    marker: str,
    *,
    chunking: bool,
) -> None:
    """Every RCPT accepted; the full mailbox's delivery refused at the end of
    the data (in the result and in its place among the replies), the others'
    done."""
    assert list(refused) == [OVER_QUOTA]
    code, text = refused[OVER_QUOTA]
    assert code == 552
    check_quota_refusal(text)
    assert [recipient for recipient, _ in replies] == WITH_FULL
    assert [reply.code for _, reply in replies] == [250, 552, 250]
    assert replies[1][1].message == text
    check_saved([replies[0], replies[2]], [ALICE, BOB])
    for address in (ALICE, BOB):
        assert_lmtp_delivered(lmtp, address, sent, marker)
    assert_not_delivered(lmtp, OVER_QUOTA, marker)
    exchanges = lmtp_exchanges(proxy.only_session())
    assert [each.codes for each in envelope(exchanges)[1]] == [[250]] * 3
    check_pipelined(exchanges, data=not chunking)
    check_message_sent(exchanges, sent, [250, 552, 250], chunking=chunking)


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_over_quota_recipient_async(
    lmtp: LmtpEndpoint, proxy: RecordingProxy, chunking: bool
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=tuple(WITH_FULL))
    async with async_lmtp_client(lmtp, port=proxy.port, chunking=chunking) as client:
        refused = await client.sendmail(ACCOUNT, WITH_FULL, sent)
        replies = client.lmtp_data_replies
    check_over_quota(lmtp, proxy, refused, replies, sent, marker, chunking=chunking)


def test_over_quota_recipient_sync(lmtp: LmtpEndpoint, proxy: RecordingProxy) -> None:
    marker = new_marker()
    sent = make_message(marker, to=tuple(WITH_FULL))
    with sync_lmtp_client(lmtp, port=proxy.port) as client:
        refused = client.sendmail(ACCOUNT, WITH_FULL, sent)
        replies = client.lmtp_data_replies
    check_over_quota(lmtp, proxy, refused, replies, sent, marker, chunking=True)


def check_only_recipient_over_quota(
    lmtp: LmtpEndpoint,
    caught: pytest.ExceptionInfo[anysmtp.SMTPDataError],
    replies: Replies,
    refused_marker: str,
    sent: bytes,
    marker: str,
) -> None:
    """No delivery succeeded: SMTPDataError with the 552; the session went on."""
    assert caught.value.smtp_code == 552
    error = caught.value.smtp_error
    assert isinstance(error, bytes)
    check_quota_refusal(error)
    assert [(recipient, code) for recipient, (code, _) in replies] == [
        (OVER_QUOTA, 552)
    ]
    assert_not_delivered(lmtp, OVER_QUOTA, refused_marker)
    assert_lmtp_delivered(lmtp, BOB, sent, marker, alone=True)


async def test_only_recipient_over_quota_async(lmtp: LmtpEndpoint) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    async with async_lmtp_client(lmtp) as client:
        with pytest.raises(anysmtp.SMTPDataError) as caught:
            await client.sendmail(ACCOUNT, [OVER_QUOTA], make_message(refused_marker))
        replies = client.lmtp_data_replies
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_only_recipient_over_quota(lmtp, caught, replies, refused_marker, sent, marker)


def test_only_recipient_over_quota_sync(lmtp: LmtpEndpoint) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    with sync_lmtp_client(lmtp) as client:
        with pytest.raises(anysmtp.SMTPDataError) as caught:
            client.sendmail(ACCOUNT, [OVER_QUOTA], make_message(refused_marker))
        replies = client.lmtp_data_replies
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_only_recipient_over_quota(lmtp, caught, replies, refused_marker, sent, marker)
