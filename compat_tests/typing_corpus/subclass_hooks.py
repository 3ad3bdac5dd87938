"""Subclasses that override smtplib's hooks."""

from __future__ import annotations

import smtplib
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class LoggingSMTP(smtplib.SMTP):
    sent: list[bytes]

    def send(self, s: ReadableBuffer | str) -> None:
        self.sent.append(s.encode() if isinstance(s, str) else bytes(s))
        super().send(s)

    def _print_debug(self, *args: object) -> None:
        print("smtp:", *args)


class ProxySMTP(smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection(("proxy.example", 1080), timeout)


def run() -> None:
    client = LoggingSMTP()
    client.sent = []
    client.connect("localhost", 25)
    code, msg = client.docmd("NOOP")
    print(code, msg)
    reply = client.getreply()
    print(reply[0])
    client.close()
