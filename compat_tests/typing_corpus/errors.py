"""Handling smtplib's exceptions."""

from __future__ import annotations

import smtplib


def try_send(host: str, sender: str, recipients: list[str], msg: bytes) -> str:
    try:
        with smtplib.SMTP(host) as server:
            refused = server.sendmail(sender, recipients, msg)
    except smtplib.SMTPRecipientsRefused as exc:
        failures: dict[str, tuple[int, bytes]] = exc.recipients
        return f"all refused: {sorted(failures)}"
    except smtplib.SMTPSenderRefused as exc:
        return f"sender {exc.sender} refused: {exc.smtp_code} {exc.smtp_error!r}"
    except smtplib.SMTPResponseException as exc:
        code: int = exc.smtp_code
        return f"server said {code}"
    except smtplib.SMTPServerDisconnected:
        return "disconnected"
    except smtplib.SMTPException as exc:
        return f"smtp error: {exc}"
    except OSError as exc:
        return f"network error: {exc}"
    for address, (code, text) in refused.items():
        print(address, code, text.decode())
    return "sent"
