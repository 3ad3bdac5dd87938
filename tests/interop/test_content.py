"""Message content, delivered byte for byte: SMTPUTF8 addresses, 8-bit
bodies, lines starting with a dot, a 9 MiB message streamed from a file, and
DSN parameters (Postfix) with the success notice they ask for."""

from __future__ import annotations

import email.message
import email.policy
import re
from pathlib import Path

import pytest

import anysmtp
from interop.servers import ACCOUNT, Endpoint, split_trace_headers
from tests.interop.helpers import (
    BOB,
    CAROL,
    ZOE,
    as_stored,
    assert_delivered,
    assert_same_bytes,
    async_client,
    endpoints,
    flattened,
    make_message,
    message_marker,
    new_marker,
    received_with,
    skip_unless_enabled,
    sync_client,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
skip_unless_enabled()

#: A sender whose local part needs SMTPUTF8 (any sender is accepted).
UTF8_SENDER = "josé@interop.test"


def international_message(marker: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage(policy=email.policy.SMTPUTF8)
    message["From"] = f"José <{UTF8_SENDER}>"
    message["To"] = f"Zoë <{ZOE}>, {BOB}"
    message["Subject"] = "Grüße, 你好"
    message["Message-ID"] = f"<{marker}@anysmtp.test>"
    message["X-Interop-Case"] = marker
    message.set_content("Ünïcødé body: 你好, ça va?\n", cte="8bit")
    return message


def check_international_delivery(
    endpoint: Endpoint, message: email.message.EmailMessage, marker: str
) -> None:
    sent = flattened(message, international=True)
    for address in (ZOE, BOB):
        stored = assert_delivered(endpoint, address, sent, marker)
        # The envelope sender arrived as UTF-8 (Return-Path), and the server
        # says the message came with SMTPUTF8.
        assert f"<{UTF8_SENDER}>".encode() in stored.split(b"\n", 1)[0], stored[:300]
        assert received_with(stored).startswith("utf8"), stored[:600]


@endpoints(lambda spec: spec.has("SMTPUTF8"))
async def test_smtputf8_addresses_async(endpoint: Endpoint) -> None:
    marker = new_marker()
    message = international_message(marker)
    async with async_client(endpoint) as client:
        # send_message adds SMTPUTF8 (and BODY=8BITMIME) for these addresses.
        assert await client.send_message(message) == {}
    check_international_delivery(endpoint, message, marker)


@endpoints(lambda spec: spec.has("SMTPUTF8"))
def test_smtputf8_addresses_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    message = international_message(marker)
    with sync_client(endpoint) as client:
        assert client.send_message(message) == {}
    check_international_delivery(endpoint, message, marker)


@endpoints(lambda spec: not spec.has("SMTPUTF8"))
async def test_smtputf8_refused_locally_without_the_extension_async(
    endpoint: Endpoint,
) -> None:
    async with async_client(endpoint) as client:
        with pytest.raises(anysmtp.SMTPNotSupportedError):
            await client.send_message(international_message(new_marker()))
        # Nothing was started: the session still delivers.
        marker = new_marker()
        sent = make_message(marker)
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    assert_delivered(endpoint, BOB, sent, marker)


@endpoints(lambda spec: not spec.has("SMTPUTF8"))
def test_smtputf8_refused_locally_without_the_extension_sync(
    endpoint: Endpoint,
) -> None:
    with sync_client(endpoint) as client:
        with pytest.raises(anysmtp.SMTPNotSupportedError):
            client.send_message(international_message(new_marker()))
        marker = new_marker()
        sent = make_message(marker)
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    assert_delivered(endpoint, BOB, sent, marker)


#: Every byte value from 0x80 to 0xFF, UTF-8 text, and Latin-1 text.
EIGHT_BIT_BODY = (
    "UTF-8: naïve café, Straße, 日本語\r\n".encode()
    + "Latin-1: déjà vu\r\n".encode("latin-1")
    + b"high bytes: "
    + bytes(range(0x80, 0xC0))
    + b"\r\n"
    + b"more: "
    + bytes(range(0xC0, 0x100))
    + b"\r\n"
)


def eight_bit_options(endpoint: Endpoint) -> list[str]:
    # With 8BITMIME the client declares the body; a server without it gets
    # the bytes undeclared (what Postfix accepts anyway).
    return ["BODY=8BITMIME"] if endpoint.spec.has("8BITMIME") else []


@endpoints()
async def test_8bit_body_async(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL), body=EIGHT_BIT_BODY)
    async with async_client(endpoint) as client:
        refused = await client.sendmail(
            ACCOUNT, [BOB, CAROL], sent, eight_bit_options(endpoint)
        )
        assert refused == {}
    for address in (BOB, CAROL):
        assert_delivered(endpoint, address, sent, marker)


@endpoints()
def test_8bit_body_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL), body=EIGHT_BIT_BODY)
    with sync_client(endpoint) as client:
        refused = client.sendmail(
            ACCOUNT, [BOB, CAROL], sent, eight_bit_options(endpoint)
        )
        assert refused == {}
    for address in (BOB, CAROL):
        assert_delivered(endpoint, address, sent, marker)


#: Lines that DATA must dot-stuff (and BDAT must not): a lone dot in the middle
#: would end the message early, a lone dot at the end looks like the end.
DOT_BODY = (
    b".leading dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"after a lone dot\r\n"
    b". space after the dot\r\n"
    b"...\r\n"
    b"\r\n"
    b".\r\n"
)


@endpoints()
async def test_lines_starting_with_a_dot_async(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, body=DOT_BODY)
    async with async_client(endpoint) as client:
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    assert_delivered(endpoint, BOB, sent, marker)


@endpoints()
def test_lines_starting_with_a_dot_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, body=DOT_BODY)
    with sync_client(endpoint) as client:
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    assert_delivered(endpoint, BOB, sent, marker)


def check_large_delivery(endpoint: Endpoint, path: Path) -> None:
    stored = endpoint.delivered(BOB, message_marker(path).encode(), timeout=60)
    names, message = split_trace_headers(stored)
    assert "received" in names
    assert_same_bytes(message, as_stored(path.read_bytes()))


@endpoints()
async def test_9_mib_message_streamed_from_a_file_async(
    endpoint: Endpoint, large_message: Path
) -> None:
    async with async_client(endpoint) as client:
        with large_message.open("rb") as message:
            refused = await client.sendmail(
                ACCOUNT, [BOB], message, eight_bit_options(endpoint)
            )
        assert refused == {}
    check_large_delivery(endpoint, large_message)


@endpoints()
def test_9_mib_message_streamed_from_a_file_sync(
    endpoint: Endpoint, large_message: Path
) -> None:
    with sync_client(endpoint) as client, large_message.open("rb") as message:
        refused = client.sendmail(ACCOUNT, [BOB], message, eight_bit_options(endpoint))
        assert refused == {}
    check_large_delivery(endpoint, large_message)


#: RFC 3461 parameters: a success notice to the sender, with the envelope id.
DSN_MAIL_OPTIONS = ["RET=HDRS"]
DSN_RCPT_OPTIONS = ["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{BOB}"]


def check_dsn(endpoint: Endpoint, sent: bytes, marker: str) -> None:
    assert_delivered(endpoint, BOB, sent, marker)
    # The success notice goes to the envelope sender (alice's mailbox), with
    # the ENVID given at MAIL and the original recipient given at RCPT.
    notice = endpoint.delivered(ACCOUNT, f"ENVID-{marker}".encode())
    assert b"multipart/report" in notice
    assert b"message/delivery-status" in notice
    assert re.search(rb"Original-Envelope-Id: ENVID-" + marker.encode(), notice)
    assert re.search(rb"Original-Recipient: rfc822; ?" + BOB.encode(), notice)
    assert re.search(rb"Action: delivered", notice)


@endpoints(lambda spec: spec.has("DSN"))
async def test_dsn_parameters_async(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker)
    async with async_client(endpoint) as client:
        refused = await client.sendmail(
            ACCOUNT,
            [BOB],
            sent,
            [*DSN_MAIL_OPTIONS, f"ENVID=ENVID-{marker}"],
            DSN_RCPT_OPTIONS,
        )
        assert refused == {}
    check_dsn(endpoint, sent, marker)


@endpoints(lambda spec: spec.has("DSN"))
def test_dsn_parameters_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker)
    with sync_client(endpoint) as client:
        refused = client.sendmail(
            ACCOUNT,
            [BOB],
            sent,
            [*DSN_MAIL_OPTIONS, f"ENVID=ENVID-{marker}"],
            DSN_RCPT_OPTIONS,
        )
        assert refused == {}
    check_dsn(endpoint, sent, marker)
