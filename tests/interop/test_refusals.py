"""Refusals by a real server: some recipients, every recipient, the sender;
each time the session stays in step and delivers the next message."""

from __future__ import annotations

import pytest

import anysmtp
from interop.servers import ACCOUNT, REFUSED_SENDER, UNKNOWN_RECIPIENT, Endpoint
from tests.interop.helpers import (
    BOB,
    CAROL,
    assert_delivered,
    async_client,
    endpoints,
    make_message,
    new_marker,
    skip_unless_enabled,
    sync_client,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
skip_unless_enabled()

#: What each server answers to MAIL from the refused sender.
SENDER_REFUSAL_CODE = {"postfix": 554, "exim": 550}


def check_partial(
    endpoint: Endpoint, refused: object, sent: bytes, marker: str
) -> None:
    assert isinstance(refused, dict)
    assert list(refused) == [UNKNOWN_RECIPIENT]
    code, text = refused[UNKNOWN_RECIPIENT]
    assert code == 550, text
    for address in (BOB, CAROL):
        assert_delivered(endpoint, address, sent, marker)


@endpoints()
async def test_partial_recipient_refusal_async(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    async with async_client(endpoint) as client:
        refused = await client.sendmail(ACCOUNT, [BOB, UNKNOWN_RECIPIENT, CAROL], sent)
    check_partial(endpoint, refused, sent, marker)


@endpoints()
def test_partial_recipient_refusal_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    with sync_client(endpoint) as client:
        refused = client.sendmail(ACCOUNT, [BOB, UNKNOWN_RECIPIENT, CAROL], sent)
    check_partial(endpoint, refused, sent, marker)


def check_sender_refused(
    endpoint: Endpoint, caught: pytest.ExceptionInfo[anysmtp.SMTPSenderRefused]
) -> None:
    assert caught.value.smtp_code == SENDER_REFUSAL_CODE[endpoint.spec.server]
    assert caught.value.sender == REFUSED_SENDER


def check_next_message(
    endpoint: Endpoint, refused_marker: str, sent: bytes, marker: str
) -> None:
    """The message after the refusal arrived, and the refused one never did."""
    assert_delivered(endpoint, BOB, sent, marker)
    assert endpoint.delivered_count(BOB, refused_marker.encode()) == 0


@endpoints()
async def test_sender_refusal_async(endpoint: Endpoint) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    async with async_client(endpoint) as client:
        with pytest.raises(anysmtp.SMTPSenderRefused) as caught:
            await client.sendmail(
                REFUSED_SENDER,
                [BOB],
                make_message(refused_marker, sender=REFUSED_SENDER),
            )
        check_sender_refused(endpoint, caught)
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_next_message(endpoint, refused_marker, sent, marker)


@endpoints()
def test_sender_refusal_sync(endpoint: Endpoint) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    with sync_client(endpoint) as client:
        with pytest.raises(anysmtp.SMTPSenderRefused) as caught:
            client.sendmail(
                REFUSED_SENDER,
                [BOB],
                make_message(refused_marker, sender=REFUSED_SENDER),
            )
        check_sender_refused(endpoint, caught)
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_next_message(endpoint, refused_marker, sent, marker)


def check_all_refused(
    caught: pytest.ExceptionInfo[anysmtp.SMTPRecipientsRefused],
) -> None:
    assert list(caught.value.recipients) == [UNKNOWN_RECIPIENT]
    assert caught.value.recipients[UNKNOWN_RECIPIENT][0] == 550


@endpoints()
async def test_every_recipient_refused_async(endpoint: Endpoint) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    async with async_client(endpoint) as client:
        with pytest.raises(anysmtp.SMTPRecipientsRefused) as caught:
            await client.sendmail(
                ACCOUNT, [UNKNOWN_RECIPIENT], make_message(refused_marker)
            )
        check_all_refused(caught)
        assert await client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_next_message(endpoint, refused_marker, sent, marker)


@endpoints()
def test_every_recipient_refused_sync(endpoint: Endpoint) -> None:
    refused_marker, marker = new_marker(), new_marker()
    sent = make_message(marker)
    with sync_client(endpoint) as client:
        with pytest.raises(anysmtp.SMTPRecipientsRefused) as caught:
            client.sendmail(ACCOUNT, [UNKNOWN_RECIPIENT], make_message(refused_marker))
        check_all_refused(caught)
        assert client.sendmail(ACCOUNT, [BOB], sent) == {}
    check_next_message(endpoint, refused_marker, sent, marker)
