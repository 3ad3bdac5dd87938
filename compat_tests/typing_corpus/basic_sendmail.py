"""The smtplib documentation's example, typed."""

from __future__ import annotations

import smtplib


def send(fromaddr: str, toaddrs: list[str], msg: str) -> dict[str, tuple[int, bytes]]:
    server = smtplib.SMTP("localhost")
    server.set_debuglevel(1)
    refused = server.sendmail(fromaddr, toaddrs, msg)
    server.quit()
    return refused
