"""A message's content must never run as SMTP commands (SMTP smuggling).

The message is a stream of unknown length (no ``SIZE=`` on MAIL, so the server
finds out that it is too large only while reading it), over the servers'
limit, sent with BDAT.  After its first few kilobytes every line looks like a
command: blocks of RSET, MAIL, RCPT and a ``BDAT n LAST`` with a one-line
message, each closed by a line that no server knows.

Postfix refuses the chunk that goes over its limit (552 5.3.4) and skips all
of it.  Exim 4.96 does not: when the limit is passed inside a chunk, it reads
one more buffer of the chunk (receive_swallow_smtp stops as soon as the count
is over the limit, which it already is) and takes the rest of the chunk for
commands.  In cleartext its pipelining check hangs up at the first line that is
not a command, so the smuggled transaction runs when the cut falls on a line
start; under TLS that check is not made and Exim puts up with three unknown
commands before it hangs up, so wherever the cut falls, a block further on
runs: Exim accepts and delivers its message, in the client's authenticated
session.  The blocks' closing lines make Exim hang up after at most three such
messages.

anysmtp therefore never sends a chunk past the SIZE limit that the server
advertised: it stops short of it, resets the transaction and raises
``SMTPMessageTooLarge``, and the session stays in step.  (Before it did, the
Exim cases here failed: three smuggled messages accepted each time.)

The session is checked in the server's log (it is encrypted), and the
mailbox.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, Iterator

import pytest

import anysmtp
from anysmtp._body import CHUNK_SIZE
from interop.servers import ACCOUNT, ENDPOINTS, SIZE_LIMIT, Endpoint
from tests.interop.helpers import (
    BOB,
    async_client,
    client_port,
    make_message,
    new_marker,
    session_summary,
    skip_unless_enabled,
    sync_client,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
skip_unless_enabled()

#: How far past the limit the message goes: the limit is passed well inside a
#: chunk (a chunk whose rest fits in the server's input buffer when the limit
#: is passed would be read whole even by Exim).
OVERSHOOT = 512 * 1024


def smuggled_tag(marker: str) -> str:
    """What every smuggled envelope and message carries."""
    return f"smuggled-{marker}"


def smuggled_block(marker: str, number: int) -> bytes:
    """Lines of content that are a whole mail transaction to Bob, from an
    address the client never gave, and a closing line no server knows."""
    tag = smuggled_tag(marker)
    message = f"Subject: {tag} {number}\r\n".encode()
    return b"".join(
        (
            b"RSET\r\n",
            f"MAIL FROM:<{tag}-{number}@x.test>\r\n".encode(),
            f"RCPT TO:<{BOB}>\r\n".encode(),
            b"BDAT %d LAST\r\n" % len(message),
            message,
            b"-- end of smuggled block %d --\r\n" % number,
        )
    )


def smuggling_message(marker: str) -> Iterator[bytes]:
    """The message, in pieces of anysmtp's chunk size: headers and a few
    innocent kilobytes, then blocks of :func:`smuggled_block` until it is
    :data:`OVERSHOOT` past :data:`SIZE_LIMIT`."""
    content = bytearray(
        make_message(
            marker,
            subject="content that looks like commands",
            body=b"An innocent line of the message.\r\n" * 128,
        )
    )
    number = 0
    while len(content) < SIZE_LIMIT + OVERSHOOT:
        content += smuggled_block(marker, number)
        number += 1
    view = memoryview(content)
    for start in range(0, len(view), CHUNK_SIZE):
        yield bytes(view[start : start + CHUNK_SIZE])


async def smuggling_message_async(marker: str) -> AsyncGenerator[bytes, None]:
    for piece in smuggling_message(marker):
        yield piece


#: The STARTTLS ports, logged in: the usual submission session.
SUBMISSION_PORTS = pytest.mark.parametrize(
    "endpoint",
    [
        name
        for name, spec in ENDPOINTS.items()
        if spec.tls == "starttls" and spec.has("CHUNKING") and spec.has("SIZE")
    ],
    indirect=True,
)


def session_log(endpoint: Endpoint, offset: int, port: int) -> list[str]:
    """The server's log lines about the client's session from ``port``, once
    the session is over (the server logs its end)."""
    if endpoint.spec.server == "postfix":
        session_summary(endpoint, offset, port)  # waits for "disconnect from"
    else:
        endpoint.wait_for_log(
            offset,
            rf"\[127\.0\.0\.1\]:{port} (closed by QUIT|lost|dropped)"
            rf"|synchronization error.*\[127\.0\.0\.1\]:{port}\b",
        )
    client = re.compile(rf"\[127\.0\.0\.1\]:{port}\b")
    return [
        line for line in endpoint.log_since(offset).splitlines() if client.search(line)
    ]


def check_nothing_smuggled(
    endpoint: Endpoint, offset: int, port: int, marker: str
) -> None:
    """The server accepted no message from the content, delivered none, and
    read none of the content as commands."""
    lines = session_log(endpoint, offset, port)
    # Exim's "<= sender" and Postfix's "from=<sender>" name the envelope
    # sender of a message the server took.
    taken = re.compile(rf"(<= |from=<){smuggled_tag(marker)}-")
    accepted = [
        line for line in endpoint.log_since(offset).splitlines() if taken.search(line)
    ]
    assert not accepted, "\n".join(accepted)
    assert endpoint.delivered_count(BOB, smuggled_tag(marker).encode()) == 0
    if endpoint.spec.server == "postfix":
        # One MAIL, one RCPT and nothing unknown: the client's commands only.
        summary = session_summary(endpoint, offset, port)
        assert re.search(r"\bmail=1 rcpt=1\b", summary), summary
        assert "unknown=" not in summary, summary
    else:
        ran = [
            line
            for line in lines
            if "unrecognized command" in line or "synchronization error" in line
        ]
        assert not ran, "\n".join(ran)


@SUBMISSION_PORTS
async def test_content_never_runs_as_commands_async(endpoint: Endpoint) -> None:
    marker = new_marker()
    offset = endpoint.log_size()
    async with async_client(endpoint) as client:
        port = client_port(client)
        # anysmtp stops short of the SIZE limit the server advertised: no
        # chunk goes past it, so no server cuts one half-way.
        with pytest.raises(anysmtp.SMTPMessageTooLarge):
            async with contextlib.aclosing(smuggling_message_async(marker)) as stream:
                await client.sendmail(ACCOUNT, [BOB], stream)
        # In step: every reply answers the client's own command.
        assert (await client.noop())[0] == 250
    check_nothing_smuggled(endpoint, offset, port, marker)


@SUBMISSION_PORTS
def test_content_never_runs_as_commands_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    offset = endpoint.log_size()
    with sync_client(endpoint) as client:
        port = client_port(client)
        with pytest.raises(anysmtp.SMTPMessageTooLarge):
            client.sendmail(ACCOUNT, [BOB], smuggling_message(marker))
        assert client.noop()[0] == 250
    check_nothing_smuggled(endpoint, offset, port, marker)
