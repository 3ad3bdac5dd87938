"""The client's cost of one small message when every reply must be waited for,
against the floor's, without a server process or the scheduler.

A development aid, not part of ``make bench``.  ``bench/python_cost.py``
measures the Python work of a ``sendmail()`` whose replies have all arrived
(the usual case with the sink on the same CPU); against a remote server, or a
server that is not scheduled at once, each of a message's two replies is
waited for, through the event loop.  Here a fake server on the other end of a
socket pair, in the same asyncio loop, answers each write from its own reader
callback, so the client's read finds nothing and waits every time.  The fake
server's work is the same for both clients; the difference between the two
lines is what anysmtp's waits cost more than the floor's.

It uses anysmtp internals (``Transport``) and may need updating when they
change.

Run: ``.venv/bin/python bench/wait_cost.py`` (add a path to measure the
anysmtp package in another directory, for example a ``git archive`` of another
commit).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])
sys.path.insert(0, str(Path(__file__).parent))

import floor
from python_cost import ENVELOPE_REPLIES, FINAL_REPLY, MESSAGE

import anysmtp
from anysmtp import _transport

SENDER = "a@example.com"
RECIPIENTS = ["b@example.net"]
MESSAGES = 20_000

Sender = Callable[
    [asyncio.AbstractEventLoop, socket.socket], Callable[[], Awaitable[object]]
]


class FakeServer:
    """Answers the pipelined envelope and the message with smtp-sink's
    replies (those of ``python_cost.py``), from a reader callback in the
    client's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.buffer = bytearray(65536)
        loop.add_reader(sock.fileno(), self.on_readable)

    def on_readable(self) -> None:
        received = self.sock.recv_into(self.buffer)
        tail = bytes(self.buffer[max(0, received - 6) : received])
        if tail.lower().endswith(b"data\r\n"):
            self.sock.send(ENVELOPE_REPLIES)
        elif tail.endswith(b"\r\n.\r\n"):
            self.sock.send(FINAL_REPLY)


def floor_sender(
    loop: asyncio.AbstractEventLoop, sock: socket.socket
) -> Callable[[], Awaitable[object]]:
    built = floor.Floor("unused", 0, SENDER, RECIPIENTS, MESSAGE)
    client = built.client()
    sock.setblocking(False)
    client.connection = floor.Connection(loop, sock)
    return lambda: client.sendmail(SENDER, RECIPIENTS, MESSAGE)


def anysmtp_sender(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float | None = 60
) -> Callable[[], Awaitable[object]]:
    client = anysmtp.AsyncSMTP(
        hostname="stub", port=1, start_tls=False, timeout=timeout
    )
    try:
        # As a client that opened its socket itself: its reader parks.
        client._transport = _transport.Transport(sock, parks=True)
    except TypeError:  # an anysmtp from before the reader parked
        client._transport = _transport.Transport(sock)
    client.esmtp_features = {"pipelining": "", "8bitmime": ""}
    client.does_esmtp = True
    client.ehlo_resp = b"stub"
    return lambda: client.sendmail(SENDER, RECIPIENTS, MESSAGE)


async def measure(make: Sender) -> float:
    """The best of five runs of :data:`MESSAGES` messages, per message."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    FakeServer(loop, theirs)
    send = make(loop, ours)
    for _ in range(1000):
        await send()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(MESSAGES):
            await send()
        best = min(best, (time.perf_counter() - start) / MESSAGES)
    return best


def main() -> None:
    senders: list[tuple[str, Sender]] = [
        ("floor", floor_sender),
        ("anysmtp", anysmtp_sender),
        # smtplib's default, and so the sync API's.
        ("anysmtp, timeout=None", functools.partial(anysmtp_sender, timeout=None)),
    ]
    for name, make in senders:
        cost = asyncio.run(measure(make))
        print(f"{name}: {cost * 1e6:.2f} us per message, every reply waited for")
    print(f"({anysmtp.__file__})")


if __name__ == "__main__":
    main()
