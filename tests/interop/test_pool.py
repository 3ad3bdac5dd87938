"""Pools against a real server: Exim's cap on messages per connection.

Exim answers the MAIL after ``smtp_accept_max_per_connection`` messages with
421 and closes the connection; before 4.97 it does not announce the cap as
LIMITS MAILMAX.  The private Exim applies a cap of :data:`EXIM_CAP` to
connections from :data:`EXIM_CAPPED_SOURCE`, so the test binds its
connections there.
"""

from __future__ import annotations

import re

import anyio
import pytest

import anysmtp
from interop.servers import ACCOUNT, EXIM_CAP, EXIM_CAPPED_SOURCE, Endpoint
from tests.interop.helpers import (
    BOB,
    assert_delivered,
    connect_options,
    endpoints,
    make_message,
    new_marker,
    skip_unless_enabled,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
skip_unless_enabled()


@endpoints(lambda spec: spec.name == "exim-submission")
async def test_a_pool_learns_exims_cap_on_messages_per_connection(
    endpoint: Endpoint,
) -> None:
    offset = endpoint.log_size()
    markers = [new_marker() for _ in range(3 * EXIM_CAP + 1)]
    messages = [make_message(marker) for marker in markers]
    async with anysmtp.AsyncSMTPPool(
        max_size=2,
        source_address=(EXIM_CAPPED_SOURCE, 0),
        # A pause after a 421 would outlast the test.
        reconnect_backoff=3600,
        **connect_options(endpoint),
    ) as pool:
        with anyio.fail_after(45):
            results = await pool.send_many(
                [
                    anysmtp.Envelope(each, sender=ACCOUNT, recipients=[BOB])
                    for each in messages
                ],
                concurrency=1,
            )
        assert pool.effective_max_size == 2
    assert [result.status for result in results] == ["sent"] * len(messages)
    # The two sessions Exim ended (after EXIM_CAP messages each) taught the
    # pool the cap: the third connection was retired with QUIT at it.
    retried = [index for index, result in enumerate(results) if result.attempts > 1]
    assert retried == [EXIM_CAP, 2 * EXIM_CAP]
    for marker, sent in zip(markers, messages, strict=True):
        assert_delivered(endpoint, BOB, sent, marker)
    # Exim logs each MAIL over the cap.
    log = endpoint.log_since(offset)
    assert len(re.findall(r"too many messages in one connection", log)) == 2, log
