"""What ``make bench`` measures: the clients, the scenarios and their sizes.

Shared by the driver (``run.py``) and the measuring child process
(``worker.py``); imports nothing but the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Final

HOST: Final = "127.0.0.1"
SENDER: Final = "bench@example.com"
MIB: Final = 1024 * 1024

#: The clients, in table order: (key, column heading, description).
CLIENTS: Final[tuple[tuple[str, str, str], ...]] = (
    ("smtplib", "smtplib", "stdlib smtplib.SMTP"),
    ("aiosmtplib", "aiosmtplib", "aiosmtplib.SMTP on asyncio"),
    ("anysmtp-sync", "any sync", "anysmtp.SMTP, the sync facade (asyncio portal)"),
    ("anysmtp-asyncio", "any asyncio", "anysmtp.AsyncSMTP on asyncio"),
    ("anysmtp-uvloop", "any uvloop", "anysmtp.AsyncSMTP on asyncio + uvloop"),
    ("anysmtp-trio", "any trio", "anysmtp.AsyncSMTP on trio"),
    (
        "floor-asyncio",
        "floor asyncio",
        "floor: the same bytes from a minimal asyncio client (no SMTP library)",
    ),
)
CLIENT_KEYS: Final = tuple(key for key, _, _ in CLIENTS)
SYNC_CLIENTS: Final = frozenset({"smtplib", "anysmtp-sync"})
ANYSMTP_CLIENTS: Final = tuple(key for key in CLIENT_KEYS if key.startswith("anysmtp"))
ANYSMTP_ASYNC_CLIENTS: Final = ("anysmtp-asyncio", "anysmtp-uvloop", "anysmtp-trio")
#: The reference client (``floor.py``): never a baseline, never in a target.
FLOOR: Final = "floor-asyncio"
#: The scenarios the floor takes part in: small messages, one recipient each.
FLOOR_SCENARIOS: Final = frozenset({"small", "concurrent"})

#: The scenarios each child process can run: key -> description.
SCENARIOS: Final[dict[str, str]] = {
    "small": "many small messages on one connection",
    "rcpt100": "one message to 100 recipients, repeated",
    "concurrent": "concurrent connections (tasks, or threads for sync clients)",
    "big-bytes": "one 25 MiB message given as bytes (fresh process)",
    "big-file": "one 25 MiB message given as an open binary file (fresh process)",
    "connect": "connect + EHLO + QUIT, repeated",
    "noop": "NOOP round trips on one connection",
    "hop": "the sync facade's cost per call: facade noop() minus async noop(), "
    "in the calling thread and through the portal",
    "pool": (
        "10,000 messages through the pool with 20 connections (anysmtp's pools "
        "and send_many; smtplib with 20 threads; aiosmtplib with 20 clients)"
    ),
}


def clients_for(scenario: str) -> tuple[str, ...]:
    """The clients that take part in ``scenario``."""
    if scenario == "big-file":
        # smtplib and aiosmtplib take the message as str/bytes only.
        return ANYSMTP_CLIENTS
    if scenario == "hop":
        return ("anysmtp-sync",)
    if scenario in FLOOR_SCENARIOS:
        return CLIENT_KEYS
    # The floor implements nothing but sending the small message.
    return tuple(key for key in CLIENT_KEYS if key != FLOOR)


@dataclasses.dataclass(frozen=True)
class Params:
    """The sizes of one run (``--quick``/``--full`` and ``ANYSMTP_BENCH_SCALE``
    scale the counts; the large message stays 25 MiB)."""

    repetitions: int = 5
    small_messages: int = 5000
    small_size: int = 1024
    rcpt_messages: int = 500
    rcpt_count: int = 100
    concurrent_connections: int = 20
    concurrent_messages: int = 100
    big_size: int = 25 * MIB
    big_sends: int = 3
    connects: int = 1000
    noops: int = 5000
    hop_blocks: int = 5
    hop_calls: int = 1000
    pool_messages: int = 10_000
    pool_connections: int = 20
    warmup: int = 20

    def scaled(self, factor: float) -> Params:
        """The same run with every count multiplied by ``factor`` (at least 1)."""

        def scale(value: int) -> int:
            return max(1, math.ceil(value * factor))

        return dataclasses.replace(
            self,
            small_messages=scale(self.small_messages),
            rcpt_messages=scale(self.rcpt_messages),
            concurrent_messages=scale(self.concurrent_messages),
            connects=scale(self.connects),
            noops=scale(self.noops),
            hop_calls=scale(self.hop_calls),
            pool_messages=scale(self.pool_messages),
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Params:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)


def small_message(size: int) -> bytes:
    """A plain text message of about ``size`` bytes with CRLF line endings."""
    head = (
        b"From: Bench <bench@example.com>\r\n"
        b"To: Someone <someone@example.net>\r\n"
        b"Subject: anysmtp benchmark message\r\n"
        b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
        b"Message-ID: <bench-small@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    lines = max(1, (size - len(head)) // len(line))
    return head + line * lines


def big_message_parts(size: int) -> tuple[bytes, bytes, int]:
    """The large message as ``(head, line, count)``: ``head + line * count``
    (base64-like 76-character lines, about ``size`` bytes)."""
    head = (
        b"From: Bench <bench@example.com>\r\n"
        b"To: Someone <someone@example.net>\r\n"
        b"Subject: anysmtp benchmark, large message\r\n"
        b"Message-ID: <bench-big@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
    )
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    line = (alphabet + alphabet)[:76] + b"\r\n"
    return head, line, max(1, (size - len(head)) // len(line))


def recipients(count: int) -> list[str]:
    return [f"rcpt{index}@example.net" for index in range(count)]
