"""TLS: implicit TLS, STARTTLS, certificates, and the ways it fails.

Async tests run on every backend; the sync facade keeps smtplib's defaults.
"""

from __future__ import annotations

import contextlib
import inspect
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import anyio.from_thread
import pytest

import anysmtp
import anysmtp._transport
from tests.conftest import Certificates
from tests.servers import AiosmtpdServer, ScriptedConnection, ScriptedServer

MESSAGE = b"Subject: tls\r\n\r\nover TLS\r\n"


@pytest.fixture
def implicit_tls_server(certs: Certificates) -> Iterator[AiosmtpdServer]:
    with AiosmtpdServer(implicit_tls=certs.server_context()) as server:
        yield server


@pytest.fixture
def starttls_server(certs: Certificates) -> Iterator[AiosmtpdServer]:
    with AiosmtpdServer(tls_context=certs.server_context()) as server:
        yield server


@pytest.fixture
def untrusted_starttls_server(certs: Certificates) -> Iterator[AiosmtpdServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.unknown_server.configure_cert(context)
    with AiosmtpdServer(tls_context=context) as server:
        yield server


# Implicit TLS -------------------------------------------------------------------


@pytest.mark.anyio
async def test_use_tls(
    implicit_tls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = implicit_tls_server
    async with anysmtp.AsyncSMTP(
        hostname=server.host, port=server.port, use_tls=True, cert_bundle=certs.ca_file
    ) as smtp:
        assert smtp.get_transport_info("tls_version") in ("TLSv1.2", "TLSv1.3")
        assert isinstance(smtp.sock, ssl.SSLSocket)
        await smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert server.messages[0].data == MESSAGE


@pytest.mark.anyio
async def test_async_smtp_ssl_with_context(
    implicit_tls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = implicit_tls_server
    smtp = anysmtp.AsyncSMTP_SSL(
        server.host, server.port, context=certs.client_context()
    )
    await smtp.connect()
    await smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    await smtp.quit()
    assert len(server.messages) == 1


@pytest.mark.anyio
async def test_send_with_use_tls(
    implicit_tls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = implicit_tls_server
    refused, _reply = await anysmtp.send(
        MESSAGE,
        sender="a@example.com",
        recipients="b@example.com",
        hostname=server.host,
        port=server.port,
        use_tls=True,
        tls_context=certs.client_context(),
    )
    assert refused == {}
    assert server.messages[0].data == MESSAGE


def test_smtp_ssl_facade_with_context(
    implicit_tls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = implicit_tls_server
    with anysmtp.SMTP_SSL(
        server.host, server.port, context=certs.client_context()
    ) as s:
        assert isinstance(s.sock, ssl.SSLSocket)
        s.sendmail("a@example.com", "b@example.com", MESSAGE)
    assert server.messages[0].data == MESSAGE


def test_smtp_ssl_facade_default_context_does_not_verify(
    implicit_tls_server: AiosmtpdServer,
) -> None:
    # smtplib's default context does not verify: a private CA connects.
    server = implicit_tls_server
    with anysmtp.SMTP_SSL(server.host, server.port) as s:
        assert s.noop()[0] == 250


@pytest.mark.anyio
async def test_async_default_context_verifies(
    implicit_tls_server: AiosmtpdServer,
) -> None:
    server = implicit_tls_server
    smtp = anysmtp.AsyncSMTP(hostname=server.host, port=server.port, use_tls=True)
    with pytest.raises(ssl.SSLCertVerificationError):
        await smtp.connect()
    assert not smtp.is_connected


@pytest.mark.anyio
async def test_use_tls_against_a_plain_server_explains(smtpd: AiosmtpdServer) -> None:
    smtp = anysmtp.AsyncSMTP(
        hostname=smtpd.host, port=smtpd.port, use_tls=True, validate_certs=False
    )
    with pytest.raises(anysmtp.SMTPTLSError, match="starttls") as caught:
        await smtp.connect()
    assert isinstance(caught.value, ssl.SSLError)
    assert not smtp.is_connected


def test_smtp_ssl_facade_against_a_plain_server_raises_ssl_error(
    smtpd: AiosmtpdServer,
) -> None:
    with pytest.raises(ssl.SSLError):
        anysmtp.SMTP_SSL(smtpd.host, smtpd.port)


@pytest.mark.anyio
async def test_handshake_timeout() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.sock.recv(65536)  # swallow the ClientHello, never answer
        time.sleep(1)

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(
            hostname=server.host,
            port=server.port,
            use_tls=True,
            validate_certs=False,
            timeout=0.3,
        )
        with pytest.raises(anysmtp.SMTPConnectTimeoutError):
            await smtp.connect()
        assert not smtp.is_connected


# STARTTLS ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_start_tls_none_upgrades_when_offered(
    starttls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = starttls_server
    smtp = anysmtp.AsyncSMTP(
        hostname=server.host, port=server.port, cert_bundle=certs.ca_file
    )
    await smtp.connect()
    assert isinstance(smtp.sock, ssl.SSLSocket)
    assert not smtp.has_extn("starttls")  # the EHLO after the upgrade
    # Code written for the older docs calls starttls() itself: a no-op now.
    code, _message = await smtp.starttls()
    assert code == 220
    await smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    await smtp.quit()
    assert server.messages[0].data == MESSAGE


@pytest.mark.anyio
async def test_start_tls_false_stays_plain(starttls_server: AiosmtpdServer) -> None:
    server = starttls_server
    async with anysmtp.AsyncSMTP(
        hostname=server.host, port=server.port, start_tls=False
    ) as smtp:
        assert not isinstance(smtp.sock, ssl.SSLSocket)
        assert smtp.ehlo_resp is None  # nothing was said after the greeting


@pytest.mark.anyio
async def test_start_tls_true_requires_the_extension() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"PIPELINING",))
        conn.read_line()

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(hostname=server.host, port=server.port, start_tls=True)
        with pytest.raises(anysmtp.SMTPNotSupportedError, match="plain text"):
            await smtp.connect()
        assert not smtp.is_connected
    assert server.transcript.lower().startswith(b"ehlo ")
    assert server.transcript.count(b"\r\n") == 1  # EHLO only: nothing in clear


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({"start_tls": True}, True),
        ({}, True),  # start_tls=None with a name to verify: an upgrade is due
        ({"start_tls": False, "username": "u", "password": "p"}, True),
        ({"start_tls": False, "username": "u", "oauth_token": "t"}, True),
        ({"start_tls": False}, False),
    ],
)
async def test_a_greeting_other_than_220_stops_a_due_upgrade_or_login(
    options: dict[str, object], refused: bool
) -> None:
    # Whoever can change the greeting on the way must not get the commands
    # that follow in plain text, or unauthenticated: the connection is closed.
    # With nothing due, the greeting is returned, as smtplib's connect() does.
    def script(conn: ScriptedConnection) -> None:
        conn.send(b"554 not now\r\n")
        conn.read_line()

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(hostname=server.host, port=server.port, **options)  # type: ignore[arg-type]
        if refused:
            with pytest.raises(anysmtp.SMTPConnectError) as raised:
                await smtp.connect()
            assert (raised.value.smtp_code, raised.value.smtp_error) == (
                554,
                b"not now",
            )
            assert not smtp.is_connected
        else:
            assert await smtp.connect() == (554, b"not now")
            assert smtp.is_connected
            smtp.close()
    assert server.transcript == b""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("start_tls", "peer", "logs_in"),
    [
        (None, "remote", False),
        (None, "loopback", True),
        (False, "remote", True),
    ],
)
async def test_credentials_do_not_go_in_clear_text_to_another_machine(
    monkeypatch: pytest.MonkeyPatch,
    start_tls: bool | None,
    peer: str,
    logs_in: bool,
) -> None:
    # A server that leaves STARTTLS out (or anyone on the way who strips it)
    # gets no password from the default start_tls=None: the login is refused
    # unless the server is on this machine, or start_tls=False asks for clear
    # text.  The test servers are on loopback: "remote" pretends otherwise.
    if peer == "remote":
        monkeypatch.setattr(anysmtp._transport.Transport, "peer_is_local", _no)

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"AUTH PLAIN",))
        if logs_in:
            conn.expect(b"AUTH PLAIN ")
            conn.send(b"235 2.7.0 ok\r\n")
        conn.read_line()

    with ScriptedServer(script) as server:
        smtp = anysmtp.AsyncSMTP(
            hostname=server.host,
            port=server.port,
            start_tls=start_tls,
            username="alice",
            password="s3cret",
        )
        if logs_in:
            assert await smtp.connect() == (220, b"scripted ESMTP")
            smtp.close()
        else:
            with pytest.raises(anysmtp.SMTPNotSupportedError, match="clear text"):
                await smtp.connect()
            assert not smtp.is_connected
    assert server.transcript.lower().startswith(b"ehlo ")
    assert (b"AUTH" in server.transcript) == logs_in


def _no(*args: object) -> bool:
    return False


@pytest.mark.anyio
async def test_explicit_starttls_verifies_and_resets_state(
    starttls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = starttls_server
    smtp = anysmtp.AsyncSMTP(hostname=server.host, port=server.port, start_tls=False)
    await smtp.connect()
    await smtp.ehlo()
    assert smtp.has_extn("starttls")
    code, _ = await smtp.starttls(context=certs.client_context())
    assert code == 220
    assert (smtp.ehlo_resp, smtp.esmtp_features, smtp.does_esmtp) == (None, {}, False)
    await smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    await smtp.quit()
    assert server.messages[0].data == MESSAGE


@pytest.mark.anyio
async def test_starttls_not_offered(smtpd: AiosmtpdServer) -> None:
    async with anysmtp.AsyncSMTP(
        hostname=smtpd.host, port=smtpd.port, start_tls=False
    ) as smtp:
        with pytest.raises(
            anysmtp.SMTPNotSupportedError,
            match=r"^STARTTLS extension not supported by server\.$",
        ):
            await smtp.starttls()


@pytest.mark.anyio
async def test_verification_failure_unknown_ca(
    untrusted_starttls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = untrusted_starttls_server
    smtp = anysmtp.AsyncSMTP(
        hostname=server.host, port=server.port, cert_bundle=certs.ca_file
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        await smtp.connect()
    assert not smtp.is_connected


@pytest.mark.anyio
async def test_hostname_mismatch(
    starttls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = starttls_server
    smtp = anysmtp.AsyncSMTP(
        hostname=server.host,
        port=server.port,
        cert_bundle=certs.ca_file,
        server_hostname="mail.example.org",
    )
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|match"):
        await smtp.connect()


@pytest.mark.anyio
async def test_server_hostname_used_for_verification(
    starttls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = starttls_server
    async with anysmtp.AsyncSMTP(
        hostname=server.host,
        port=server.port,
        cert_bundle=certs.ca_file,
        server_hostname="localhost",
    ) as smtp:
        assert isinstance(smtp.sock, ssl.SSLSocket)


@pytest.mark.anyio
async def test_client_certificate(certs: Certificates) -> None:
    context = certs.server_context(require_client_cert=True)
    with AiosmtpdServer(implicit_tls=context) as server:
        async with anysmtp.AsyncSMTP(
            hostname=server.host,
            port=server.port,
            use_tls=True,
            cert_bundle=certs.ca_file,
            client_cert=certs.client_file,
        ) as smtp:
            await smtp.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        assert len(server.messages) == 1
        without = anysmtp.AsyncSMTP(
            hostname=server.host,
            port=server.port,
            use_tls=True,
            cert_bundle=certs.ca_file,
        )
        with pytest.raises((ssl.SSLError, anysmtp.SMTPServerDisconnected)):
            await without.connect()
        without.close()


@pytest.mark.anyio
async def test_response_injection_before_the_handshake_is_ignored(
    certs: Certificates,
) -> None:
    context = certs.server_context()

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"STARTTLS",))
        conn.expect(b"STARTTLS")
        # A man in the middle appends a reply to the STARTTLS answer.
        conn.send(b"220 go ahead\r\n250 injected\r\n")
        conn.start_tls(context)
        conn.expect(b"ehlo ")
        conn.send(b"250-scripted over tls\r\n250 SIZE 1000\r\n")
        conn.expect(b"noop")
        conn.send(b"250 genuine\r\n")
        conn.expect(b"quit")
        conn.send(b"221 bye\r\n")

    with ScriptedServer(script) as server:
        async with anysmtp.AsyncSMTP(
            hostname=server.host, port=server.port, cert_bundle=certs.ca_file
        ) as smtp:
            assert smtp.esmtp_features == {"size": "1000"}
            assert await smtp.noop() == (250, b"genuine")


def test_facade_starttls_with_context(
    starttls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = starttls_server
    with anysmtp.SMTP(server.host, server.port) as s:
        assert not isinstance(s.sock, ssl.SSLSocket)  # never upgrades on its own
        s.ehlo()
        assert s.starttls(context=certs.client_context())[0] == 220
        assert isinstance(s.sock, ssl.SSLSocket)
        assert s.esmtp_features == {}
        s.ehlo()
        s.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert server.messages[0].data == MESSAGE


def test_facade_starttls_default_context_does_not_verify(
    untrusted_starttls_server: AiosmtpdServer,
) -> None:
    server = untrusted_starttls_server
    with anysmtp.SMTP(server.host, server.port) as s:
        assert s.starttls()[0] == 220
        assert s.noop()[0] == 250


@pytest.mark.parametrize("through_portal", [False, True], ids=["here", "portal"])
def test_facade_starttls_keyfile_is_deprecated(
    starttls_server: AiosmtpdServer, certs: Certificates, through_portal: bool
) -> None:
    server = starttls_server
    with contextlib.ExitStack() as stack:
        portal = (
            stack.enter_context(anyio.from_thread.start_blocking_portal())
            if through_portal
            else None
        )
        s = stack.enter_context(anysmtp.SMTP(server.host, server.port, portal=portal))
        with pytest.raises(ValueError, match="mutually exclusive"):
            s.starttls(keyfile="k.pem", context=certs.client_context())
        with pytest.warns(DeprecationWarning, match="keyfile and certfile") as caught:
            s.starttls(certfile=str(certs.client_file))
        assert isinstance(s.sock, ssl.SSLSocket)
    # Where smtplib raises it: at starttls()'s caller, so that filters by
    # module match it and a script's __main__ shows it.
    assert [warning.filename for warning in caught] == [__file__]


class HandOverLock:
    """A lock that, the first time it is released, runs ``then()`` (another
    thread's whole call) before the releasing thread goes on: the moment right
    after one call has ended and before its caller has seen the result."""

    def __init__(self, then: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._then: Callable[[], None] | None = then

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()
        then, self._then = self._then, None
        if then is not None:
            then()


def test_facade_warnings_stay_with_the_thread_whose_call_raised_them(
    starttls_server: AiosmtpdServer, certs: Certificates
) -> None:
    # Another thread's call that starts the moment this one ends must not
    # raise this call's warning in its own thread, at its own caller.
    server = starttls_server
    with (
        anysmtp.SMTP(server.host, server.port) as s,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        noop: list[tuple[int, bytes]] = []

        def other_thread() -> None:
            worker = threading.Thread(target=lambda: noop.append(s.noop()))
            worker.start()
            worker.join(10)

        s._turns.lock = HandOverLock(other_thread)  # type: ignore[assignment]
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        s.starttls(certfile=str(certs.client_file))
        assert noop == [(250, b"OK")]
    assert [(w.category, w.filename, w.lineno) for w in caught] == [
        (DeprecationWarning, __file__, line)
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"use_tls": True, "start_tls": True}, "mutually exclusive"),
        (
            {"tls_context": ssl.create_default_context(), "cert_bundle": "x"},
            "exclusive",
        ),
        ({"client_key": "key.pem"}, "client_key needs client_cert"),
        ({"username": "u"}, "needs a password"),
        ({"password": "p"}, "needs a username"),
    ],
)
def test_conflicting_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        anysmtp.AsyncSMTP(hostname="localhost", **options)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "port"),
    [({"use_tls": True}, 465), ({"start_tls": True}, 587), ({}, 25)],
)
async def test_default_port_follows_the_mode(
    options: dict[str, bool], port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    smtp = anysmtp.AsyncSMTP(hostname="127.0.0.1", timeout=2, **options)  # type: ignore[arg-type]
    smtp.set_debuglevel(1)
    with pytest.raises(ConnectionRefusedError):  # nothing listens there
        await smtp.connect()
    assert f"connect: to ('127.0.0.1', {port}) None" in capsys.readouterr().err


# The same through the sync facade, written as smtplib code -----------------------


def test_facade_client_certificate(certs: Certificates) -> None:
    context = certs.server_context(require_client_cert=True)
    with AiosmtpdServer(implicit_tls=context) as server:
        client_context = certs.client_context()
        client_context.load_cert_chain(certs.client_file)
        with anysmtp.SMTP_SSL(server.host, server.port, context=client_context) as s:
            s.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        assert len(server.messages) == 1
        with pytest.raises((ssl.SSLError, anysmtp.SMTPServerDisconnected)):
            anysmtp.SMTP_SSL(server.host, server.port, context=certs.client_context())


def test_facade_verification_failure(
    untrusted_starttls_server: AiosmtpdServer, certs: Certificates
) -> None:
    server = untrusted_starttls_server
    s = anysmtp.SMTP(server.host, server.port)
    with pytest.raises(ssl.SSLCertVerificationError):
        s.starttls(context=certs.client_context())
    assert s.sock is None


def test_facade_hostname_mismatch(certs: Certificates) -> None:
    # A certificate from the trusted CA, but for another name.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.ca.issue_cert("mail.example.org").configure_cert(context)
    with AiosmtpdServer(implicit_tls=context) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|match"):
            anysmtp.SMTP_SSL(server.host, server.port, context=certs.client_context())
        assert server.messages == []


def test_facade_starttls_not_advertised(smtpd: AiosmtpdServer) -> None:
    with anysmtp.SMTP(smtpd.host, smtpd.port) as s:
        with pytest.raises(
            anysmtp.SMTPNotSupportedError,
            match=r"^STARTTLS extension not supported by server\.$",
        ):
            s.starttls()
        assert s.noop()[0] == 250


def test_facade_response_injection_is_ignored(certs: Certificates) -> None:
    context = certs.server_context()

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"STARTTLS",))
        conn.expect(b"STARTTLS")
        conn.send(b"220 go ahead\r\n250 injected\r\n")
        conn.start_tls(context)
        conn.expect(b"noop")
        conn.send(b"250 genuine\r\n")
        conn.expect(b"quit")
        conn.send(b"221 bye\r\n")

    with ScriptedServer(script) as server:
        s = anysmtp.SMTP(server.host, server.port)
        s.ehlo()
        s.starttls(context=certs.client_context())
        assert s.noop() == (250, b"genuine")
        s.quit()
