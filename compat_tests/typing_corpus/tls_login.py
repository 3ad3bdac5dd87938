"""Submission with STARTTLS and login, and implicit TLS."""

from __future__ import annotations

import smtplib
import ssl


def submit(host: str, user: str, password: str, raw: bytes) -> None:
    context = ssl.create_default_context()
    with smtplib.SMTP(host, 587) as server:
        server.ehlo()
        code, reply = server.starttls(context=context)
        assert code == 220, reply
        server.ehlo()
        server.login(user, password)
        server.sendmail(user, [user], raw)


def submit_ssl(host: str, user: str, password: str, raw: str) -> tuple[int, bytes]:
    server = smtplib.SMTP_SSL(
        host, smtplib.SMTP_SSL_PORT, context=ssl.create_default_context()
    )
    server.login(user, password)
    server.sendmail(user, user, raw)
    return server.quit()
