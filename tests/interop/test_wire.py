"""What really goes over the wire: pipelining (RFC 2920) and BDAT (RFC 3030)
where the server offers them and never where it does not, and the SIZE limit
enforced before the message is uploaded.

Cleartext sessions go through a recording relay (:mod:`interop.proxy`) whose
record is causal: a command recorded before the reply to the previous one was
sent by a client that had not seen that reply.  Encrypted sessions are checked
in the servers' own logs (Postfix's per-session command counts, Exim's ``L``
and ``K`` flags).
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import anysmtp
from interop.proxy import Exchange, RecordingProxy, Session
from interop.servers import ACCOUNT, SIZE_LIMIT, UNKNOWN_RECIPIENT, Endpoint
from tests.interop.helpers import (
    BOB,
    CAROL,
    assert_delivered,
    async_client,
    client_port,
    endpoints,
    exim_arrival,
    make_message,
    new_marker,
    session_summary,
    skip_unless_enabled,
    sync_client,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
skip_unless_enabled()

#: Dot lines and 8-bit bytes: BDAT carries them as they are.
BODY = b".leading dot\r\n.\r\n" + "naïve café\r\n".encode()


def cleartext(spec_tls: str) -> bool:
    """Ports where a session can stay in cleartext (the relay reads it)."""
    return spec_tls in ("starttls", "none")


@pytest.fixture
def proxy(endpoint: Endpoint) -> Iterator[RecordingProxy]:
    with RecordingProxy((endpoint.host, endpoint.port)) as relay:
        yield relay


def transaction(session: Session) -> list[Exchange]:
    """The first mail transaction's exchanges: MAIL up to the end of data."""
    exchanges = session.exchanges()
    start = next(i for i, each in enumerate(exchanges) if each.verb == "MAIL")
    end = next(
        i
        for i, each in enumerate(exchanges)
        if i > start
        and (each.verb == "DATA" or (each.verb == "BDAT" and b"LAST" in each.line))
    )
    return exchanges[start : end + 1]


def check_pipelined(session: Session) -> None:
    """RCPTs and DATA left before the reply to MAIL came back; BDAT only after
    the last RCPT's reply (a chunk sent blind, with no accepted recipient, may
    be read as commands by a server that refuses it)."""
    mail, *rest = transaction(session)
    assert mail.replied_at is not None
    batch = [each for each in rest if each.verb == "RCPT"]
    last_rcpt = batch[-1]
    end = next(each for each in rest if each.verb in ("DATA", "BDAT"))
    if end.verb == "DATA":
        batch.append(end)
    else:
        assert last_rcpt.replied_at is not None
        assert end.sent_at >= last_rcpt.replied_at, (
            f"BDAT went before the reply to the last RCPT: {session.exchanges()}"
        )
    for each in batch:
        assert each.sent_at < mail.replied_at, (
            f"{each.line!r} waited for the reply to MAIL: {session.exchanges()}"
        )


def check_pipelined_delivery(
    endpoint: Endpoint, refused: dict[str, tuple[int, bytes]], sent: bytes, marker: str
) -> None:
    assert list(refused) == [UNKNOWN_RECIPIENT]
    for address in (BOB, CAROL):
        assert_delivered(endpoint, address, sent, marker)


RECIPIENTS = [BOB, UNKNOWN_RECIPIENT, CAROL]


@pytest.mark.parametrize("chunking", [True, False], ids=["chunking", "no-chunking"])
@endpoints(lambda spec: spec.has("PIPELINING") and cleartext(spec.tls))
async def test_pipelining_on_the_wire_async(
    endpoint: Endpoint, proxy: RecordingProxy, chunking: bool
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL), body=BODY)
    async with async_client(
        endpoint, tls=False, port=proxy.port, chunking=chunking
    ) as client:
        refused = await client.sendmail(ACCOUNT, RECIPIENTS, sent)
    session = proxy.only_session()
    check_pipelined(session)
    assert ("BDAT" in session.verbs()) is chunking
    check_pipelined_delivery(endpoint, refused, sent, marker)


@endpoints(lambda spec: spec.has("PIPELINING") and cleartext(spec.tls))
def test_pipelining_on_the_wire_sync(endpoint: Endpoint, proxy: RecordingProxy) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL), body=BODY)
    with sync_client(endpoint, tls=False, port=proxy.port) as client:
        refused = client.sendmail(ACCOUNT, RECIPIENTS, sent)
    check_pipelined(proxy.only_session())
    check_pipelined_delivery(endpoint, refused, sent, marker)


def check_one_at_a_time(session: Session) -> None:
    """Without PIPELINING or CHUNKING: each command waits for the previous
    reply, and the message goes with DATA."""
    exchanges = session.exchanges()
    assert [each.verb for each in exchanges] == [
        "EHLO",
        "MAIL",
        "RCPT",
        "RCPT",
        "RCPT",
        "DATA",
        "QUIT",
    ]
    for before, after in itertools.pairwise(exchanges):
        assert before.replied_at is not None
        assert after.sent_at > before.replied_at, exchanges


@endpoints(lambda spec: spec.minimal)
async def test_one_command_at_a_time_without_the_extensions_async(
    endpoint: Endpoint, proxy: RecordingProxy
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL), body=BODY)
    async with async_client(endpoint, port=proxy.port) as client:
        refused = await client.sendmail(ACCOUNT, RECIPIENTS, sent)
    check_one_at_a_time(proxy.only_session())
    check_pipelined_delivery(endpoint, refused, sent, marker)


@endpoints(lambda spec: spec.minimal)
def test_one_command_at_a_time_without_the_extensions_sync(
    endpoint: Endpoint, proxy: RecordingProxy
) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL), body=BODY)
    with sync_client(endpoint, port=proxy.port) as client:
        refused = client.sendmail(ACCOUNT, RECIPIENTS, sent)
    check_one_at_a_time(proxy.only_session())
    check_pipelined_delivery(endpoint, refused, sent, marker)


#: A body of 600 KiB: several BDAT chunks when streamed.
MULTI_CHUNK_BODY = b"".join(
    b"%06d .line of a message sent in several BDAT chunks...\r\n" % number
    for number in range(600 * 1024 // 56)
)


def check_bdat(session: Session, sizes: list[int]) -> None:
    """Every message went with BDAT, never DATA, in chunks whose octet counts
    add up to the message as it is: no dot-stuffing."""
    verbs = session.verbs()
    assert "DATA" not in verbs
    chunks: list[list[int]] = [[]]
    for each in session.exchanges():
        match = re.fullmatch(rb"BDAT (\d+)( LAST)?", each.line, re.IGNORECASE)
        if match is None:
            continue
        assert each.code == 250, each
        chunks[-1].append(int(match.group(1)))
        if match.group(2):
            chunks.append([])
    assert [sum(message) for message in chunks[:-1]] == sizes
    # The streamed message went in several chunks.
    assert len(chunks[1]) > 1, chunks


@endpoints(lambda spec: spec.has("CHUNKING") and cleartext(spec.tls))
async def test_bdat_on_the_wire_async(
    endpoint: Endpoint, proxy: RecordingProxy
) -> None:
    small_marker, large_marker = new_marker(), new_marker()
    small = make_message(small_marker, body=BODY)
    large = make_message(large_marker, body=MULTI_CHUNK_BODY)
    async with async_client(endpoint, tls=False, port=proxy.port) as client:
        assert await client.sendmail(ACCOUNT, [BOB], small) == {}
        assert await client.sendmail(ACCOUNT, [BOB], io.BytesIO(large)) == {}
    check_bdat(proxy.only_session(), [len(small), len(large)])
    assert_delivered(endpoint, BOB, small, small_marker)
    assert_delivered(endpoint, BOB, large, large_marker)


@endpoints(lambda spec: spec.has("CHUNKING") and cleartext(spec.tls))
def test_bdat_on_the_wire_sync(endpoint: Endpoint, proxy: RecordingProxy) -> None:
    small_marker, large_marker = new_marker(), new_marker()
    small = make_message(small_marker, body=BODY)
    large = make_message(large_marker, body=MULTI_CHUNK_BODY)
    with sync_client(endpoint, tls=False, port=proxy.port) as client:
        assert client.sendmail(ACCOUNT, [BOB], small) == {}
        assert client.sendmail(ACCOUNT, [BOB], io.BytesIO(large)) == {}
    check_bdat(proxy.only_session(), [len(small), len(large)])
    assert_delivered(endpoint, BOB, small, small_marker)
    assert_delivered(endpoint, BOB, large, large_marker)


def check_logged(endpoint: Endpoint, offset: int, port: int) -> None:
    """The server logged the encrypted session as BDAT (and, for Exim, which
    logs it, pipelined)."""
    if endpoint.spec.server == "postfix":
        summary = session_summary(endpoint, offset, port)
        assert re.search(r"\bbdat=1\b", summary), summary
        assert "data=" not in summary.replace("bdat=", ""), summary
        assert re.search(r"\bauth=1\b", summary), summary
    else:
        arrival = exim_arrival(endpoint, offset, port)
        assert re.search(r" K ", arrival), arrival
        # "L" with no "-": the client pipelined.
        assert re.search(r" L[*.]? ", arrival), arrival
        assert " P=esmtpsa " in arrival, arrival


@endpoints(lambda spec: spec.has("CHUNKING") and spec.tls != "none")
async def test_server_log_shows_bdat_under_tls_async(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, body=BODY)
    offset = endpoint.log_size()
    async with async_client(endpoint) as client:
        port = client_port(client)
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    assert_delivered(endpoint, BOB, sent, marker)
    check_logged(endpoint, offset, port)


@endpoints(lambda spec: spec.has("CHUNKING") and spec.tls != "none")
def test_server_log_shows_bdat_under_tls_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, body=BODY)
    offset = endpoint.log_size()
    with sync_client(endpoint) as client:
        port = client_port(client)
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    assert_delivered(endpoint, BOB, sent, marker)
    check_logged(endpoint, offset, port)


@pytest.fixture
def oversized(tmp_path: Path) -> Path:
    """A message file one byte over the servers' SIZE limit."""
    path = tmp_path / "oversized.eml"
    head = make_message(new_marker(), body=b"")
    line = b"0123456789" * 7 + b"\r\n"
    with path.open("wb") as output:
        output.write(head)
        remaining = SIZE_LIMIT + 1 - len(head)
        output.write(line * (remaining // len(line)))
        output.write(b"x" * (remaining % len(line)))
    assert path.stat().st_size == SIZE_LIMIT + 1
    return path


def check_nothing_uploaded(
    proxy: RecordingProxy,
    caught: pytest.ExceptionInfo[anysmtp.SMTPMessageTooLarge],
    endpoint: Endpoint,
) -> None:
    assert caught.value.smtp_code == 552
    assert isinstance(caught.value, anysmtp.SMTPSenderRefused)
    session = proxy.only_session()
    # The whole session, TLS records included, is a few kilobytes: the 10 MiB
    # never left.
    assert len(session.data("client")) < 64 * 1024


@endpoints(lambda spec: spec.has("SIZE"))
async def test_over_the_size_limit_refused_before_upload_async(
    endpoint: Endpoint, proxy: RecordingProxy, oversized: Path
) -> None:
    marker = new_marker()
    sent = make_message(marker)
    async with async_client(endpoint, port=proxy.port) as client:
        with (
            pytest.raises(anysmtp.SMTPMessageTooLarge) as caught,
            oversized.open("rb") as message,
        ):
            await client.sendmail(ACCOUNT, [BOB], message)
        # The session is untouched: the next message goes.
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_nothing_uploaded(proxy, caught, endpoint)
    assert_delivered(endpoint, BOB, sent, marker)


@endpoints(lambda spec: spec.has("SIZE"))
def test_over_the_size_limit_refused_before_upload_sync(
    endpoint: Endpoint, proxy: RecordingProxy, oversized: Path
) -> None:
    marker = new_marker()
    sent = make_message(marker)
    with sync_client(endpoint, port=proxy.port) as client:
        with (
            pytest.raises(anysmtp.SMTPMessageTooLarge) as caught,
            oversized.open("rb") as message,
        ):
            client.sendmail(ACCOUNT, [BOB], message)
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_nothing_uploaded(proxy, caught, endpoint)
    assert_delivered(endpoint, BOB, sent, marker)


def oversized_lines(marker: str) -> Iterator[bytes]:
    """A message over the SIZE limit, as a stream of unknown length."""
    yield make_message(marker, body=b"")
    block = (b"0123456789" * 7 + b"\r\n") * 1024
    for _ in range(SIZE_LIMIT // len(block) + 16):
        yield block


async def oversized_lines_async(marker: str) -> AsyncIterator[bytes]:
    for block in oversized_lines(marker):
        yield block


def expected_refusals(
    endpoint: Endpoint, chunking: bool
) -> tuple[type[anysmtp.SMTPException], ...]:
    """After DATA, the server answers 552 at the end and goes on.  With BDAT
    the client stops short of the SIZE limit the server advertised, so no
    server sees a chunk go past it: Exim would stop reading such a chunk one
    buffer past the limit and take the rest for commands (see
    test_smuggling.py)."""
    if chunking and endpoint.spec.has("CHUNKING"):
        return (anysmtp.SMTPMessageTooLarge,)
    return (anysmtp.SMTPDataError,)


def check_refused_by_server(
    endpoint: Endpoint, error: BaseException, chunking: bool
) -> None:
    assert isinstance(error, expected_refusals(endpoint, chunking)), repr(error)
    assert isinstance(error, anysmtp.SMTPResponseException)
    assert error.smtp_code == 552, error


def check_never_delivered(endpoint: Endpoint, oversized_marker: str) -> None:
    """A message sent after the refusal arrived; the oversized one did not."""
    marker = new_marker()
    sent = make_message(marker)
    with sync_client(endpoint) as client:
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    assert_delivered(endpoint, BOB, sent, marker)
    assert endpoint.delivered_count(BOB, oversized_marker.encode()) == 0


@pytest.mark.parametrize("chunking", [True, False], ids=["chunking", "no-chunking"])
@endpoints(lambda spec: spec.has("SIZE") and spec.tls == "starttls")
async def test_over_the_size_limit_of_unknown_length_async(
    endpoint: Endpoint, chunking: bool
) -> None:
    marker = new_marker()
    async with async_client(endpoint, chunking=chunking) as client:
        with pytest.raises(anysmtp.SMTPException) as caught:
            await client.sendmail(ACCOUNT, [BOB], oversized_lines_async(marker))
        check_refused_by_server(endpoint, caught.value, chunking)
        if client.is_connected:
            # Still in step: the session goes on.
            assert (await client.noop())[0] == 250
        else:
            assert client.sock is None
    check_never_delivered(endpoint, marker)


@endpoints(lambda spec: spec.has("SIZE") and spec.tls == "starttls")
def test_over_the_size_limit_of_unknown_length_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    with sync_client(endpoint) as client:
        with pytest.raises(anysmtp.SMTPException) as caught:
            client.sendmail(ACCOUNT, [BOB], oversized_lines(marker))
        check_refused_by_server(endpoint, caught.value, chunking=True)
        if client.sock is not None:
            assert client.noop()[0] == 250
    check_never_delivered(endpoint, marker)
