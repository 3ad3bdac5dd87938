"""The Python work of one ``AsyncSMTP.sendmail()``, without the network.

A development aid, not part of ``make bench``: it replaces the connection's
transport with a stub that takes each write and answers it at once (smtp-sink's
replies), so what is left is anysmtp's own work per message: building and
checking the envelope, checking the body, parsing four replies, the
transaction's bookkeeping.  It uses anysmtp internals (``Transport``,
``_transport``) and may need updating when they change.

Run: ``.venv/bin/python bench/python_cost.py`` (add a path to measure the
anysmtp package in another directory, for example a ``git archive`` of another
commit).
"""

from __future__ import annotations

import socket
import sys
import time

if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])

import anyio

import anysmtp
from anysmtp import _transport

MESSAGE = (
    b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n\r\n"
    + b"The quick brown fox jumps over the lazy dog, again and again.\r\n" * 15
)
ENVELOPE_REPLIES = (
    b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
)
FINAL_REPLY = b"250 2.0.0 Ok: queued as 12345\r\n"


class StubTransport(_transport.Transport):
    """Answers the pipelined envelope and the message as smtp-sink does."""

    def send_now(self, data: bytes) -> memoryview | None:
        if data.endswith(b"data\r\n"):
            self._parser.feed(ENVELOPE_REPLIES)
        elif data.endswith(b".\r\n"):
            self._parser.feed(FINAL_REPLY)
        return None

    async def send_all(self, data: bytes, timeout: float | None) -> None:
        # What anysmtp before send_now() called for every send.
        self.send_now(data)


async def main() -> None:
    ours, _theirs = socket.socketpair()
    client = anysmtp.AsyncSMTP(hostname="stub", port=1, start_tls=False)
    client._transport = StubTransport(ours)
    client.esmtp_features = {"pipelining": "", "8bitmime": ""}
    client.does_esmtp = True
    client.ehlo_resp = b"stub"
    for _ in range(1000):
        await client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20_000):
            await client.sendmail("a@example.com", ["b@example.net"], MESSAGE)
        best = min(best, (time.perf_counter() - start) / 20_000)
    print(f"{anysmtp.__file__}: {best * 1e6:.2f} us of Python per sendmail()")


if __name__ == "__main__":
    anyio.run(main)
