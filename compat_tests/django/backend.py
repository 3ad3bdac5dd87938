"""The recipe: Django's SMTP email backend, connecting with anysmtp.

A project puts this class in one of its modules and names it in its settings::

    EMAIL_BACKEND = "myproject.mail.EmailBackend"

Everything else (``EMAIL_HOST``, ``EMAIL_USE_TLS``, ``EMAIL_USE_SSL``,
``EMAIL_HOST_USER``, ``EMAIL_TIMEOUT``, ``fail_silently``...) works as with
Django's own backend, whose code runs unchanged: only the connection class is
anysmtp's.  Its ``except smtplib.SMTPServerDisconnected`` and ``except
smtplib.SMTPException`` clauses still name the standard library's classes, and
still catch what anysmtp raises, because anysmtp raises those very classes.
"""

from __future__ import annotations

from django.core.mail.backends import smtp

import anysmtp


class EmailBackend(smtp.EmailBackend):  # type: ignore[misc]  # Django has no types
    """Django's ``django.core.mail.backends.smtp.EmailBackend`` on anysmtp."""

    @property
    def connection_class(self) -> type[anysmtp.SMTP]:
        """:class:`anysmtp.SMTP_SSL` with ``EMAIL_USE_SSL``, else
        :class:`anysmtp.SMTP` (Django picks ``smtplib``'s the same way)."""
        return anysmtp.SMTP_SSL if self.use_ssl else anysmtp.SMTP
