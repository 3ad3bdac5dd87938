"""Django's SMTP email backend works with anysmtp in place of smtplib.

The mission says ``import anysmtp as smtplib`` keeps existing libraries working,
Django's mail backend by name.  This module proves it two ways:

* Scenarios written once and run twice: with Django's own backend
  (``django.core.mail.backends.smtp.EmailBackend``, on the standard library's
  smtplib) and with the documented recipe, :class:`compat_tests.django.backend.
  EmailBackend` (the same backend whose ``connection_class`` is anysmtp's).  Each
  asserts what Django returned or raised and what the server received, byte for
  byte where it is deterministic, so the two runs prove that anysmtp and smtplib
  agree: ``send_mail``, ``send_mass_mail`` and ``send_messages`` over one session,
  cc/bcc (bcc in the envelope only) and attachments, ``EMAIL_USE_TLS`` and
  ``EMAIL_USE_SSL`` with Django's verifying ``ssl_context``, login,
  ``EMAIL_TIMEOUT``, ``fail_silently``, refused recipients, and a server that
  hangs up before QUIT (Django's ``except smtplib.SMTPServerDisconnected`` must
  catch anysmtp's error).
* Django's own SMTP backend tests (a copy of Django's tests/mail/tests.py, see
  :mod:`compat_tests.django.run_mail_tests`), run in a child process with
  ``sys.modules["smtplib"] = anysmtp``, and as a baseline with smtplib itself.

Django is configured once with its defaults (``settings.configure()``, unless
something configured it before); each test sets what it uses with
``override_settings``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal

import pytest
import trustme
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import Envelope, Session
from django.conf import settings
from django.core import mail
from django.core.mail import DNS_NAME, EmailMessage, send_mail, send_mass_mail
from django.test import override_settings

import anysmtp
from compat_tests.django import run_mail_tests
from tests.servers import (
    AiosmtpdServer,
    Authenticator,
    ReceivedMessage,
    RecordingHandler,
    ScriptedConnection,
    ScriptedServer,
)

if not settings.configured:
    settings.configure()

ROOT: Final = Path(__file__).resolve().parent.parent
#: Django's backend and the recipe (compat_tests/django/backend.py).
DJANGO_BACKEND: Final = "django.core.mail.backends.smtp.EmailBackend"
ANYSMTP_BACKEND: Final = "compat_tests.django.backend.EmailBackend"
#: What every message carries when the test sets it, so that it is deterministic.
DATE: Final = "Sat, 01 Mar 2025 12:00:00 -0000"
#: The EHLO command (smtplib writes its verbs in lower case) with the name Django
#: gives: its cached FQDN of this machine.
EHLO: Final = f"ehlo {DNS_NAME}\r\n".encode()


@dataclass(frozen=True)
class Variant:
    """One way to run Django's SMTP backend."""

    #: ``EMAIL_BACKEND``.
    backend: str
    #: The module whose ``SMTP`` and ``SMTP_SSL`` the backend connects with.
    smtplib: ModuleType


@pytest.fixture(
    params=[
        pytest.param(Variant(DJANGO_BACKEND, smtplib), id="smtplib"),
        pytest.param(Variant(ANYSMTP_BACKEND, anysmtp), id="anysmtp"),
    ]
)
def variant(request: pytest.FixtureRequest) -> Variant:
    """Every scenario runs with Django's backend on smtplib, then on anysmtp."""
    chosen: Variant = request.param
    return chosen


@contextmanager
def email_settings(variant: Variant, port: int, **options: Any) -> Iterator[None]:
    """Django's settings for a server on 127.0.0.1, ``port``.

    :param options: more settings (``EMAIL_USE_TLS=True``...).
    """
    with override_settings(
        EMAIL_BACKEND=variant.backend,
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=port,
        **options,
    ):
        # The recipe is what a project names in its settings, and it connects
        # with anysmtp's classes (Django's backend with smtplib's).
        connection_class = mail.get_connection().connection_class
        use_ssl = options.get("EMAIL_USE_SSL", False)
        smtp_class = variant.smtplib.SMTP_SSL if use_ssl else variant.smtplib.SMTP
        assert connection_class is smtp_class
        yield


@contextmanager
def backend(**options: Any) -> Iterator[Any]:
    """``mail.get_connection(**options)``, closed at the end even when it failed
    to open (Django keeps a half-opened connection until ``close()``)."""
    connection = mail.get_connection(**options)
    try:
        yield connection
    finally:
        connection.close()


def message(subject: str, body: str, to: list[str]) -> EmailMessage:
    """An ``EmailMessage`` from from@example.com with a fixed Date and
    Message-ID (Django makes them up otherwise)."""
    headers = {"Date": DATE, "Message-ID": f"<{subject.lower()}@example.com>"}
    return EmailMessage(subject, body, "from@example.com", to, headers=headers)


def plain(
    subject: str,
    to: str,
    body: bytes,
    message_id: bytes,
    sender: str = "from@example.com",
) -> bytes:
    """The bytes Django makes of a plain text message."""
    return (
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"MIME-Version: 1.0\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"From: " + sender.encode() + b"\r\n"
        b"To: " + to.encode() + b"\r\n"
        b"Date: " + DATE.encode() + b"\r\n"
        b"Message-ID: " + message_id + b"\r\n"
        b"\r\n" + body
    )


def transaction(sender: str, recipients: list[str], payload: bytes) -> bytes:
    """What the client sends for one message to a server offering SIZE: MAIL
    with smtplib's ``size=``, the RCPTs, DATA and the dot-stuffed payload."""
    rcpts = b"".join(f"rcpt TO:<{each}>\r\n".encode() for each in recipients)
    return (
        f"mail FROM:<{sender}> size={len(payload)}\r\n".encode()
        + rcpts
        + b"data\r\n"
        + re.sub(rb"(?m)^\.", b"..", payload)
        + b".\r\n"
    )


_DJANGO_DATE = re.compile(
    rb"^Date: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} -0000\r$",
    re.MULTILINE,
)
_DJANGO_MESSAGE_ID = re.compile(
    rb"^Message-ID: <\d+\.\d+\.\d+@" + re.escape(str(DNS_NAME).encode()) + rb">\r$",
    re.MULTILINE,
)


def fix_date_and_id(data: bytes, message_id: bytes) -> bytes:
    """``data`` with the Date and Message-ID that Django made up (checked to
    be of the form Django gives them) replaced by :data:`DATE` and
    ``message_id``, as :func:`plain` writes them."""
    data, dates = _DJANGO_DATE.subn(b"Date: " + DATE.encode() + b"\r", data)
    data, ids = _DJANGO_MESSAGE_ID.subn(b"Message-ID: " + message_id + b"\r", data)
    assert (dates, ids) == (1, 1), data
    return data


# Servers -------------------------------------------------------------------------


@dataclass
class TLSRecordingHandler(RecordingHandler):
    """A :class:`RecordingHandler` that also notes whether each message came
    over TLS (STARTTLS or implicit)."""

    over_tls: list[bool] = field(default_factory=list)

    async def handle_DATA(
        self, server: SMTPServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        transport = server.transport
        assert transport is not None
        self.over_tls.append(transport.get_extra_info("ssl_object") is not None)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class MiniMTA:
    """A scripted server speaking just enough ESMTP for Django's backend (SIZE,
    8BITMIME, STARTTLS when given a context; no PIPELINING, so that anysmtp
    sends command by command as smtplib does), recording every byte.

    :param refused: addresses whose RCPT is refused with 550.
    :param tls: offer STARTTLS with this context.
    :param after_data: after the message: reply 250; reply 250 and hang up
        (no reply to a later QUIT); or never reply.
    """

    refused: frozenset[str] = frozenset()
    tls: ssl.SSLContext | None = None
    after_data: Literal["reply", "disconnect", "stall"] = "reply"

    def __call__(self, conn: ScriptedConnection) -> None:
        conn.send(b"220 scripted ESMTP\r\n")
        in_tls = False
        while line := conn.read_line():
            command = line.rstrip(b"\r\n").upper()
            if command.startswith(b"EHLO "):
                offer = self.tls is not None and not in_tls
                conn.send(
                    b"250-scripted\r\n250-SIZE 10485760\r\n"
                    + (b"250-STARTTLS\r\n" if offer else b"")
                    + b"250 8BITMIME\r\n"
                )
            elif command == b"STARTTLS" and self.tls is not None and not in_tls:
                conn.send(b"220 2.0.0 ready to start TLS\r\n")
                conn.start_tls(self.tls)
                in_tls = True
            elif command.startswith(b"RCPT TO:") and self._refused(line):
                conn.send(b"550 5.1.1 no such user\r\n")
            elif command == b"DATA":
                conn.send(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                conn.read_data()
                if self.after_data == "stall":
                    conn.stall()
                    return
                conn.send(b"250 2.0.0 queued\r\n")
                if self.after_data == "disconnect":
                    conn.disconnect()
                    return
            elif command == b"QUIT":
                conn.send(b"221 2.0.0 bye\r\n")
                return
            else:
                conn.send(b"250 2.0.0 OK\r\n")

    def _refused(self, line: bytes) -> bool:
        address = line.split(b":", 1)[1].strip().strip(b"<>").decode()
        return address in self.refused


def over_tls(server: AiosmtpdServer) -> list[bool]:
    """Whether each message ``server`` received came over TLS."""
    handler = server.handler
    assert isinstance(handler, TLSRecordingHandler)
    return handler.over_tls


@pytest.fixture
def smtpd() -> Iterator[AiosmtpdServer]:
    """aiosmtpd on 127.0.0.1, recording what it receives."""
    with AiosmtpdServer(TLSRecordingHandler()) as server:
        yield server


@dataclass(frozen=True)
class PrivateCA:
    """A CA of the tests' own (trustme) and the server contexts it signs."""

    ca: trustme.CA
    #: The CA in PEM, for ``SSL_CERT_FILE``.
    ca_file: Path
    #: For 127.0.0.1 (the server's address).
    server: trustme.LeafCert
    #: For mail.example.com only.
    other_name: trustme.LeafCert
    #: A client certificate and its key in PEM, for ``EMAIL_SSL_CERTFILE``.
    client_file: Path

    def server_context(self, leaf: trustme.LeafCert | None = None) -> ssl.SSLContext:
        """A server context with ``leaf`` (the 127.0.0.1 certificate by default)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        (leaf or self.server).configure_cert(context)
        return context


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    """A private CA and the certificates it issued."""
    ca = trustme.CA()
    directory = tmp_path_factory.mktemp("django-ca")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_file = directory / "client.pem"
    client = ca.issue_cert("client@example.com")
    client.private_key_and_cert_chain_pem.write_to_path(str(client_file))
    return PrivateCA(
        ca=ca,
        ca_file=ca_file,
        server=ca.issue_cert("127.0.0.1"),
        other_name=ca.issue_cert("mail.example.com"),
        client_file=client_file,
    )


@pytest.fixture
def trust_private_ca(private_ca: PrivateCA, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the private CA trusted the way a Django project would: Django's
    ``ssl_context`` is ``ssl.create_default_context()``, which loads the CAs of
    OpenSSL's default paths, and ``SSL_CERT_FILE`` names one."""
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.ca_file))


def tls_server(
    private_ca: PrivateCA,
    mode: str,
    leaf: trustme.LeafCert | None = None,
    **options: Any,
) -> AiosmtpdServer:
    """aiosmtpd requiring STARTTLS (``mode="starttls"``) or speaking TLS at once
    (``"ssl"``), with a certificate from the private CA.

    :param options: more options for aiosmtpd's server.
    """
    context = private_ca.server_context(leaf)
    if mode == "starttls":
        return AiosmtpdServer(
            TLSRecordingHandler(), tls_context=context, require_starttls=True, **options
        )
    return AiosmtpdServer(TLSRecordingHandler(), implicit_tls=context, **options)


#: Django's settings for each TLS mode.
TLS_SETTINGS: Final = {
    "starttls": {"EMAIL_USE_TLS": True},
    "ssl": {"EMAIL_USE_SSL": True},
}


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting is refused, and no
    other process can take the port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# send_mail, send_mass_mail, send_messages -----------------------------------------


def test_send_mail(variant: Variant, smtpd: AiosmtpdServer) -> None:
    """``send_mail()``: one message, envelope and content as Django made them,
    a line starting with a dot included."""
    with email_settings(variant, smtpd.port):
        sent = send_mail(
            "Hello",
            "Line one\n.Line two starts with a dot\n",
            "from@example.com",
            ["to@example.com"],
        )
    assert sent == 1
    [received] = smtpd.messages
    data = fix_date_and_id(received.data, b"<id>")
    expected = plain(
        "Hello",
        "to@example.com",
        b"Line one\r\n.Line two starts with a dot\r\n",
        b"<id>",
    )
    assert data == expected
    assert received == ReceivedMessage(
        mail_from="from@example.com",
        rcpt_tos=["to@example.com"],
        mail_options=[f"SIZE={len(received.data)}"],
        rcpt_options=[],
        data=received.data,
    )
    assert over_tls(smtpd) == [False]


def test_send_messages_one_session(variant: Variant) -> None:
    """``send_messages()`` of two messages on one connection: one session (one
    EHLO, one QUIT) with two transactions, every byte as expected."""
    first = message("First", "Body one\n", ["a@example.com"])
    second = message("Second", ".dot first\nnext\n", ["b@example.com", "c@example.com"])
    with ScriptedServer(MiniMTA()) as server, email_settings(variant, server.port):
        sent = mail.get_connection().send_messages([first, second])
    assert sent == 2
    first_payload = plain(
        "First", "a@example.com", b"Body one\r\n", b"<first@example.com>"
    )
    second_payload = plain(
        "Second",
        "b@example.com, c@example.com",
        b".dot first\r\nnext\r\n",
        b"<second@example.com>",
    )
    assert server.transcripts == [
        EHLO
        + transaction("from@example.com", ["a@example.com"], first_payload)
        + transaction(
            "from@example.com", ["b@example.com", "c@example.com"], second_payload
        )
        + b"quit\r\n"
    ]


def test_send_mass_mail_one_session(variant: Variant) -> None:
    """``send_mass_mail()`` of three messages: one session, three transactions."""
    datatuple = [
        (f"Subject {n}", f"Body {n}\n", f"from{n}@example.com", [f"to{n}@example.com"])
        for n in range(3)
    ]
    with ScriptedServer(MiniMTA()) as server, email_settings(variant, server.port):
        sent = send_mass_mail(datatuple)
    assert sent == 3
    [transcript] = server.transcripts
    # Django makes up each Date and Message-ID: take them from what was sent,
    # check their form, and expect the rest byte for byte.
    payloads = re.findall(rb"\r\ndata\r\n(.*?\r\n)\.\r\n", transcript, re.DOTALL)
    assert len(payloads) == 3
    expected = EHLO
    for n, payload in enumerate(payloads):
        sender, recipient = f"from{n}@example.com", f"to{n}@example.com"
        body = f"Body {n}\r\n".encode()
        assert fix_date_and_id(payload, b"<id>") == plain(
            f"Subject {n}", recipient, body, b"<id>", sender
        )
        expected += transaction(sender, [recipient], payload)
    assert transcript == expected + b"quit\r\n"


def test_cc_bcc_and_attachments(variant: Variant, smtpd: AiosmtpdServer) -> None:
    """cc and bcc are recipients, bcc in the envelope only (never in the
    headers); non-ASCII headers and attachments arrive as Django encoded them."""
    email = EmailMessage(
        "Café report",
        "See attached.\n",
        '"Renée" <from@example.com>',
        ["To <to@example.com>"],
        cc=["cc@example.com"],
        bcc=["hidden@example.com"],
        headers={"Date": DATE, "Message-ID": "<report@example.com>"},
    )
    email.attach("report.csv", "a,b\n1,2\n", "text/csv")
    email.attach("data.bin", bytes(range(40)), "application/octet-stream")
    with email_settings(variant, smtpd.port), backend() as connection:
        assert connection.send_messages([email]) == 1
    [received] = smtpd.messages
    assert received.mail_from == "from@example.com"
    assert received.rcpt_tos == [
        "to@example.com",
        "cc@example.com",
        "hidden@example.com",
    ]
    # The multipart boundary is random: read it from the header, then compare
    # every byte with the boundary replaced by a fixed one.
    match = re.match(
        rb'Content-Type: multipart/mixed; boundary="([^"]+)"', received.data
    )
    assert match is not None
    data = received.data.replace(match.group(1), b"BOUNDARY")
    assert data == (
        b'Content-Type: multipart/mixed; boundary="BOUNDARY"\r\n'
        b"MIME-Version: 1.0\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9_report?=\r\n"
        b"From: =?utf-8?b?UmVuw6ll?= <from@example.com>\r\n"
        b"To: To <to@example.com>\r\n"
        b"Cc: cc@example.com\r\n"
        b"Date: Sat, 01 Mar 2025 12:00:00 -0000\r\n"
        b"Message-ID: <report@example.com>\r\n"
        b"\r\n"
        b"--BOUNDARY\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"MIME-Version: 1.0\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"See attached.\r\n"
        b"\r\n"
        b"--BOUNDARY\r\n"
        b'Content-Type: text/csv; charset="utf-8"\r\n'
        b"MIME-Version: 1.0\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b'Content-Disposition: attachment; filename="report.csv"\r\n'
        b"\r\n"
        b"a,b\r\n1,2\r\n"
        b"\r\n"
        b"--BOUNDARY\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="data.bin"\r\n'
        b"\r\n"
        b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw==\r\n"
        b"\r\n"
        b"--BOUNDARY--\r\n"
    )
    assert b"hidden" not in received.data


# TLS ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
@pytest.mark.usefixtures("trust_private_ca")
def test_tls_with_djangos_context(
    variant: Variant, private_ca: PrivateCA, mode: str
) -> None:
    """``EMAIL_USE_TLS`` (STARTTLS) and ``EMAIL_USE_SSL``: the connection is
    encrypted with Django's own ``ssl_context`` (not a context of the client's
    making), which verifies the certificate and the host name against
    OpenSSL's default CAs, and the message travels over TLS."""
    with (
        tls_server(private_ca, mode) as server,
        email_settings(variant, server.port, **TLS_SETTINGS[mode]),
        backend() as connection,
    ):
        assert connection.open() is True
        context = connection.ssl_context
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True
        sock = connection.connection.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.context is context
        certificate = sock.getpeercert()
        assert certificate is not None
        assert certificate["subjectAltName"] == (("IP Address", "127.0.0.1"),)
        email = message("Secret", "Over TLS.\n", ["to@example.com"])
        assert connection.send_messages([email]) == 1
    assert over_tls(server) == [True]
    [received] = server.messages
    assert received.data == plain(
        "Secret", "to@example.com", b"Over TLS.\r\n", b"<secret@example.com>"
    )


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
@pytest.mark.parametrize(
    ("case", "verify_code"),
    [
        # Not trusted (no SSL_CERT_FILE): "unable to get local issuer certificate".
        ("unknown-ca", 20),
        # Trusted, but issued for mail.example.com only: "IP address mismatch".
        ("wrong-address", 64),
        # Trusted, but EMAIL_SSL_CERTFILE (a client certificate) makes Django
        # build ssl.SSLContext(PROTOCOL_TLS_CLIENT), which loads no CA at all.
        ("client-certificate", 20),
    ],
)
def test_tls_verification_failure(
    variant: Variant,
    private_ca: PrivateCA,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    case: str,
    verify_code: int,
) -> None:
    """A certificate Django's context does not accept stops the backend before
    anything is sent, with the same ``ssl`` error from both clients: neither
    loosens nor replaces the context it is given."""
    if case == "unknown-ca":
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.ca_file))
    options: dict[str, Any] = {**TLS_SETTINGS[mode]}
    if case == "client-certificate":
        options["EMAIL_SSL_CERTFILE"] = str(private_ca.client_file)
    leaf = private_ca.other_name if case == "wrong-address" else None
    with (
        tls_server(private_ca, mode, leaf) as server,
        email_settings(variant, server.port, **options),
        backend() as connection,
    ):
        email = message("Secret", "Never sent.\n", ["to@example.com"])
        with pytest.raises(ssl.SSLCertVerificationError) as raised:
            connection.send_messages([email])
        assert raised.value.verify_code == verify_code
        assert connection.connection is None
    assert server.messages == []


# Login ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["plain", "starttls", "ssl"])
@pytest.mark.usefixtures("trust_private_ca")
def test_login(variant: Variant, private_ca: PrivateCA, mode: str) -> None:
    """``EMAIL_HOST_USER`` and ``EMAIL_HOST_PASSWORD``: the backend logs in (with
    AUTH PLAIN, the mechanism smtplib prefers among aiosmtpd's), then sends."""
    credentials = Authenticator("django", "s3cret pass")
    # aiosmtpd counts only STARTTLS as TLS for AUTH: allow it otherwise.
    options: dict[str, Any] = {"authenticator": credentials}
    if mode != "starttls":
        options["auth_require_tls"] = False
    server = (
        AiosmtpdServer(TLSRecordingHandler(), **options)
        if mode == "plain"
        else tls_server(private_ca, mode, **options)
    )
    with (
        server,
        email_settings(
            variant,
            server.port,
            EMAIL_HOST_USER=credentials.user,
            EMAIL_HOST_PASSWORD=credentials.password,
            **TLS_SETTINGS.get(mode, {}),
        ),
    ):
        assert send_mail("Hi", "Logged in.\n", "from@example.com", ["to@example.com"])
    assert [attempt[:2] for attempt in credentials.attempts] == [("PLAIN", b"django")]
    assert [each.rcpt_tos for each in server.messages] == [["to@example.com"]]
    assert over_tls(server) == [mode != "plain"]


@pytest.mark.parametrize("fail_silently", [False, True])
def test_wrong_password(variant: Variant, fail_silently: bool) -> None:
    """A refused login raises smtplib's ``SMTPAuthenticationError`` with the
    server's reply, or sends nothing and returns 0 with ``fail_silently``.

    After a 535 smtplib tries its next mechanism (LOGIN) and anysmtp does not:
    docs/compatibility.md, "login() tries the next mechanism after any failure".
    """
    credentials = Authenticator("django", "s3cret pass")
    with (
        AiosmtpdServer(authenticator=credentials, auth_require_tls=False) as server,
        email_settings(
            variant,
            server.port,
            EMAIL_HOST_USER=credentials.user,
            EMAIL_HOST_PASSWORD="wrong",
        ),
        backend(fail_silently=fail_silently) as connection,
    ):
        email = message("Hi", "Never sent.\n", ["to@example.com"])
        if fail_silently:
            assert connection.send_messages([email]) == 0
        else:
            with pytest.raises(smtplib.SMTPAuthenticationError) as raised:
                connection.send_messages([email])
            assert raised.value.args == (
                535,
                b"5.7.8 Authentication credentials invalid",
            )
        assert connection.connection is None
    assert server.messages == []
    mechanisms = ["PLAIN", "LOGIN"] if variant.smtplib is smtplib else ["PLAIN"]
    assert [attempt[:2] for attempt in credentials.attempts] == [
        (each, b"django") for each in mechanisms
    ]


# Timeouts and failures ------------------------------------------------------------


def test_email_timeout_reaches_the_connection(
    variant: Variant, smtpd: AiosmtpdServer
) -> None:
    """``EMAIL_TIMEOUT`` becomes the connection's timeout."""
    with (
        email_settings(variant, smtpd.port, EMAIL_TIMEOUT=7.5),
        backend() as connection,
    ):
        assert connection.open() is True
        assert connection.connection.timeout == 7.5


@pytest.mark.parametrize("stall", ["greeting", "data"])
@pytest.mark.parametrize("fail_silently", [False, True])
def test_email_timeout_on_a_stalled_server(
    variant: Variant, stall: str, fail_silently: bool
) -> None:
    """A server that stops answering (before its greeting, or after the
    message) makes the send fail after ``EMAIL_TIMEOUT`` with an
    ``SMTPServerDisconnected`` (anysmtp's is also a ``TimeoutError``:
    docs/compatibility.md, "A read timeout raises SMTPServerDisconnected"), or
    return 0 with ``fail_silently``."""
    script: Callable[[ScriptedConnection], None] = (
        ScriptedConnection.stall if stall == "greeting" else MiniMTA(after_data="stall")
    )
    email = message("Hi", "Unanswered.\n", ["to@example.com"])
    with (
        ScriptedServer(script) as server,
        email_settings(variant, server.port, EMAIL_TIMEOUT=0.5),
        backend(fail_silently=fail_silently) as connection,
    ):
        if fail_silently:
            assert connection.send_messages([email]) == 0
        else:
            with pytest.raises(smtplib.SMTPServerDisconnected) as raised:
                connection.send_messages([email])
            if variant.smtplib is smtplib:
                assert raised.value.args == (
                    "Connection unexpectedly closed: timed out",
                )
            else:
                timeout_class = (
                    anysmtp.SMTPGreetingTimeoutError
                    if stall == "greeting"
                    else anysmtp.SMTPReadTimeoutError
                )
                assert type(raised.value) is timeout_class
                assert isinstance(raised.value, TimeoutError)
        assert connection.connection is None
    payload = plain("Hi", "to@example.com", b"Unanswered.\r\n", b"<hi@example.com>")
    # Nothing is sent after the timeout: the connection is closed, so Django's
    # close() sends no QUIT.
    sent = EHLO + transaction("from@example.com", ["to@example.com"], payload)
    assert server.transcripts == [b"" if stall == "greeting" else sent]


@pytest.mark.parametrize("fail_silently", [False, True])
def test_connection_refused(
    variant: Variant, refused_port: int, fail_silently: bool
) -> None:
    """A refused connection raises ``ConnectionRefusedError``, or is silenced
    (0 sent) with ``fail_silently``."""
    with email_settings(variant, refused_port):
        email = message("Hi", "Nobody there.\n", ["to@example.com"])
        if fail_silently:
            assert (
                send_mail(
                    "Hi", "Nobody.\n", "from@example.com", ["to@example.com"], True
                )
                == 0
            )
            assert mail.get_connection(fail_silently=True).send_messages([email]) == 0
        else:
            with pytest.raises(ConnectionRefusedError) as raised:
                mail.get_connection().send_messages([email])
            assert raised.value.args == (
                errno.ECONNREFUSED,
                os.strerror(errno.ECONNREFUSED),
            )


def test_one_recipient_refused(variant: Variant) -> None:
    """One refused recipient of two: the message goes to the other and counts
    as sent (Django ignores ``sendmail``'s refused dict)."""
    email = message("Hi", "Some get it.\n", ["to@example.com", "nobody@example.com"])
    mta = MiniMTA(refused=frozenset({"nobody@example.com"}))
    with ScriptedServer(mta) as server, email_settings(variant, server.port):
        assert mail.get_connection().send_messages([email]) == 1
    payload = plain(
        "Hi",
        "to@example.com, nobody@example.com",
        b"Some get it.\r\n",
        b"<hi@example.com>",
    )
    assert server.transcripts == [
        EHLO
        + transaction(
            "from@example.com", ["to@example.com", "nobody@example.com"], payload
        )
        + b"quit\r\n"
    ]


@pytest.mark.parametrize("fail_silently", [False, True])
def test_every_recipient_refused(variant: Variant, fail_silently: bool) -> None:
    """Every recipient refused: ``SMTPRecipientsRefused`` with the server's
    replies (or 0 sent with ``fail_silently``), after RSET; the next message on
    the same connection still goes."""
    refused = message("Refused", "Nobody gets it.\n", ["nobody@example.com"])
    accepted = message("Accepted", "Delivered.\n", ["to@example.com"])
    mta = MiniMTA(refused=frozenset({"nobody@example.com"}))
    with (
        ScriptedServer(mta) as server,
        email_settings(variant, server.port),
        backend(fail_silently=fail_silently) as connection,
    ):
        connection.open()
        if fail_silently:
            assert connection.send_messages([refused, accepted]) == 1
        else:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as raised:
                connection.send_messages([refused])
            assert raised.value.args == (
                {"nobody@example.com": (550, b"5.1.1 no such user")},
            )
            assert connection.send_messages([accepted]) == 1
    payload = plain(
        "Accepted", "to@example.com", b"Delivered.\r\n", b"<accepted@example.com>"
    )
    assert server.transcripts == [
        EHLO
        + b"mail FROM:<from@example.com> size=%d\r\n"
        % len(refused.message().as_bytes(linesep="\r\n"))
        + b"rcpt TO:<nobody@example.com>\r\nrset\r\n"
        + transaction("from@example.com", ["to@example.com"], payload)
        + b"quit\r\n"
    ]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_server_hangs_up_before_quit(
    variant: Variant,
    private_ca: PrivateCA,
    monkeypatch: pytest.MonkeyPatch,
    tls: bool,
) -> None:
    """The server closes the connection after accepting the message: the
    QUIT in Django's ``close()`` gets no reply, the client raises
    ``SMTPServerDisconnected``, and Django's ``except (ssl.SSLError,
    smtplib.SMTPServerDisconnected)`` catches it: the message counts as sent
    and nothing escapes."""
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.ca_file))
    mta = MiniMTA(
        tls=private_ca.server_context() if tls else None, after_data="disconnect"
    )
    email = message("Hi", "Then goodbye.\n", ["to@example.com"])
    with (
        ScriptedServer(mta) as server,
        email_settings(variant, server.port, EMAIL_USE_TLS=tls),
        backend() as connection,
    ):
        assert connection.open() is True
        client = connection.connection
        raised: list[BaseException] = []
        quit_ = client.quit

        def quit_watched() -> tuple[int, bytes]:
            try:
                reply: tuple[int, bytes] = quit_()
            except BaseException as exc:
                raised.append(exc)
                raise
            return reply

        # Watch what quit() raises, to see Django catch it.
        monkeypatch.setattr(client, "quit", quit_watched)
        assert connection.send_messages([email]) == 1
        connection.close()
        assert [(type(each), each.args) for each in raised] == [
            (smtplib.SMTPServerDisconnected, ("Connection unexpectedly closed",))
        ]
        assert connection.connection is None
        assert client.sock is None
    payload = plain("Hi", "to@example.com", b"Then goodbye.\r\n", b"<hi@example.com>")
    starttls = b"STARTTLS\r\n" + EHLO if tls else b""
    assert server.transcripts == [
        EHLO
        + starttls
        + transaction("from@example.com", ["to@example.com"], payload)
        + b"quit\r\n"
    ]


# Django's own tests ---------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize("swapped_in", ["smtplib", "anysmtp"])
def test_djangos_own_smtp_backend_tests(swapped_in: str) -> None:
    """Django's SMTP backend tests pass with ``sys.modules["smtplib"] =
    anysmtp`` (and, as the baseline that shows the copy of the tests matches
    the installed Django, with smtplib itself)."""
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-m", run_mail_tests.__name__, swapped_in],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    output = f"{completed.stderr}\n{completed.stdout}"
    # The runner's last line is its summary (none if it crashed).
    try:
        summary = json.loads(completed.stdout.splitlines()[-1])
    except (IndexError, ValueError):
        pytest.fail(
            f"the runner printed no summary (exit {completed.returncode}):\n{output}"
        )
    if swapped_in == "smtplib":
        assert completed.returncode == 0, (
            f"Django's tests fail with smtplib itself: is the copy (Django "
            f"{run_mail_tests.DJANGO_VERSION}) out of step with the installed "
            f"Django {summary['django']}?\n{output}"
        )
    module: ModuleType = smtplib if swapped_in == "smtplib" else anysmtp
    assert summary["smtplib"] == module.__name__
    smtp_class = module.SMTP
    assert (
        summary["connection_class"] == f"{smtp_class.__module__}.{smtp_class.__name__}"
    )
    assert summary["run"] > 0
    assert (
        summary["failures"],
        summary["errors"],
        summary["skipped"],
        summary["unexpected_successes"],
    ) == ([], [], [], []), output
    assert completed.returncode == 0, output
    # -W error turns a leaked socket into an "Exception ignored" report.
    assert "Exception ignored" not in completed.stderr, output
