"""send_message with an EmailMessage, in a with block."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage


def notify(host: str, port: int, body: str) -> None:
    msg = EmailMessage()
    msg["From"] = "app@example.com"
    msg["To"] = "ops@example.com"
    msg["Subject"] = "notification"
    msg.set_content(body)
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.ehlo()
        if smtp.has_extn("size"):
            limit: str = smtp.esmtp_features["size"]
            print(limit)
        smtp.send_message(msg)
