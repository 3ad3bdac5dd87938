"""LMTP and the single commands."""

from __future__ import annotations

import smtplib


def deliver(path: str, recipient: str, data: bytes) -> None:
    lmtp = smtplib.LMTP(path)
    lmtp.ehlo("client")
    lmtp.mail("sender@example.com")
    lmtp.rcpt(recipient, ["NOTIFY=NEVER"])
    code, message = lmtp.data(data)
    print(code, message)
    print(lmtp.verify(recipient), lmtp.expn("list"), lmtp.help())
    lmtp.rset()
    lmtp.noop()
    lmtp.quit()


def quoting() -> str:
    return smtplib.quoteaddr("Name <a@b.c>") + smtplib.quotedata("a\n.b")
