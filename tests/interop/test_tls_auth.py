"""Sessions: what each port advertises, STARTTLS and implicit TLS with a
verified certificate, every AUTH mechanism, a wrong password, and
send_message with an attachment."""

from __future__ import annotations

import email.message
import os
import re

import pytest

import anysmtp
from interop.servers import (
    ACCOUNT,
    ENDPOINTS,
    PASSWORD,
    SIZE_LIMIT,
    Endpoint,
    EndpointSpec,
)
from tests.interop.helpers import (
    BOB,
    CAROL,
    TIMEOUT,
    assert_delivered,
    assert_same_bytes,
    async_client,
    connect_options,
    endpoints,
    flattened,
    make_message,
    new_marker,
    received_with,
    skip_unless_enabled,
    sync_client,
    tls_context,
)

pytestmark = [pytest.mark.interop, pytest.mark.anyio]
skip_unless_enabled()


def check_advertised(spec: EndpointSpec, features: dict[str, str]) -> None:
    """The EHLO features (after TLS) are the port's configuration."""
    advertised = {name.upper() for name in features}
    if spec.minimal:
        assert advertised == set(), features
        return
    assert spec.extensions - {"STARTTLS"} <= advertised, features
    assert "STARTTLS" not in advertised  # not again once encrypted
    assert set(features["auth"].upper().split()) == set(spec.auth)
    assert int(features["size"]) == SIZE_LIMIT


def check_before_tls(spec: EndpointSpec, features: dict[str, str]) -> None:
    """A STARTTLS port offers it, and AUTH only once encrypted."""
    assert "starttls" in features, features
    assert "auth" not in features, features


@endpoints()
async def test_ehlo_advertises_the_configuration_async(endpoint: Endpoint) -> None:
    spec = endpoint.spec
    async with async_client(endpoint, login=False, tls=False) as client:
        code, _ = await client.ehlo()
        assert code == 250
        if spec.tls == "starttls":
            check_before_tls(spec, client.esmtp_features)
            code, _ = await client.starttls()
            assert code == 220
            assert client.get_transport_info("tls_version") in ("TLSv1.2", "TLSv1.3")
            await client.ehlo()
        if spec.tls != "none":
            assert client.get_transport_info("peercert") is not None
        check_advertised(spec, client.esmtp_features)


@endpoints()
def test_ehlo_advertises_the_configuration_sync(endpoint: Endpoint) -> None:
    spec = endpoint.spec
    with sync_client(endpoint, login=False, tls=False) as client:
        code, _ = client.ehlo()
        assert code == 250
        if spec.tls == "starttls":
            check_before_tls(spec, client.esmtp_features)
            code, _ = client.starttls(context=tls_context(endpoint))
            assert code == 220
            client.ehlo()
        check_advertised(spec, client.esmtp_features)


def check_authenticated_delivery(endpoint: Endpoint, sent: bytes, marker: str) -> None:
    for address in (BOB, CAROL):
        stored = assert_delivered(endpoint, address, sent, marker)
        # The server's own word that the session was encrypted and logged in.
        assert received_with(stored).endswith("esmtpsa"), stored[:600]


@endpoints(lambda spec: spec.tls == "starttls")
async def test_starttls_login_sendmail_async(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    # start_tls=True and username/password: upgraded and logged in on connect.
    async with async_client(endpoint) as client:
        assert client.get_transport_info("tls_version") in ("TLSv1.2", "TLSv1.3")
        refused = await client.sendmail(ACCOUNT, [BOB, CAROL], sent)
        assert refused == {}
    check_authenticated_delivery(endpoint, sent, marker)


@endpoints(lambda spec: spec.tls == "starttls")
def test_starttls_login_sendmail_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    with anysmtp.SMTP(endpoint.host, endpoint.port, timeout=TIMEOUT) as client:
        assert client.starttls(context=tls_context(endpoint))[0] == 220
        assert client.login(ACCOUNT, PASSWORD)[0] == 235
        assert client.sendmail(ACCOUNT, [BOB, CAROL], sent) == {}
    check_authenticated_delivery(endpoint, sent, marker)


def mechanisms() -> list[object]:
    """Every (port, SASL mechanism) the servers offer."""
    return [
        pytest.param(name, mechanism, id=f"{name}-{mechanism}")
        for name, spec in ENDPOINTS.items()
        for mechanism in spec.auth
    ]


def authobject_name(mechanism: str) -> str:
    return "auth_" + mechanism.lower().replace("-", "_")


@pytest.mark.parametrize(("endpoint", "mechanism"), mechanisms(), indirect=["endpoint"])
async def test_each_auth_mechanism_async(endpoint: Endpoint, mechanism: str) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    async with async_client(endpoint, login=False) as client:
        # auth() is smtplib's low-level call: it needs the EHLO done.
        await client.ehlo_or_helo_if_needed()
        client.user, client.password = ACCOUNT, PASSWORD
        code, _ = await client.auth(
            mechanism, getattr(client, authobject_name(mechanism))
        )
        assert code == 235
        assert await client.sendmail(ACCOUNT, [BOB, CAROL], sent) == {}
    check_authenticated_delivery(endpoint, sent, marker)


@pytest.mark.parametrize(("endpoint", "mechanism"), mechanisms(), indirect=["endpoint"])
def test_each_auth_mechanism_sync(endpoint: Endpoint, mechanism: str) -> None:
    marker = new_marker()
    sent = make_message(marker, to=(BOB, CAROL))
    with sync_client(endpoint, login=False) as client:
        client.ehlo_or_helo_if_needed()
        client.user, client.password = ACCOUNT, PASSWORD
        code, _ = client.auth(mechanism, getattr(client, authobject_name(mechanism)))
        assert code == 235
        assert client.sendmail(ACCOUNT, [BOB, CAROL], sent) == {}
    check_authenticated_delivery(endpoint, sent, marker)


@endpoints(lambda spec: bool(spec.auth))
async def test_wrong_password_async(endpoint: Endpoint) -> None:
    async with async_client(endpoint, login=False) as client:
        with pytest.raises(anysmtp.SMTPAuthenticationError) as caught:
            await client.login(ACCOUNT, "not-the-password")
        assert caught.value.smtp_code == 535
        # The session goes on: the right password works next.
        assert (await client.login(ACCOUNT, PASSWORD))[0] == 235


@endpoints(lambda spec: bool(spec.auth))
async def test_wrong_password_on_connect_async(endpoint: Endpoint) -> None:
    options = connect_options(endpoint) | {"password": "not-the-password"}
    client = anysmtp.AsyncSMTP(**options)
    with pytest.raises(anysmtp.SMTPAuthenticationError) as caught:
        await client.connect()
    assert caught.value.smtp_code == 535
    # connect() fails whole: no half-open, logged-out session is left.
    assert not client.is_connected
    assert client.sock is None


@endpoints(lambda spec: bool(spec.auth))
def test_wrong_password_sync(endpoint: Endpoint) -> None:
    with sync_client(endpoint, login=False) as client:
        with pytest.raises(anysmtp.SMTPAuthenticationError) as caught:
            client.login(ACCOUNT, "not-the-password")
        assert caught.value.smtp_code == 535
        # The session goes on: the right password works next.
        assert client.login(ACCOUNT, PASSWORD)[0] == 235


def attachment_message(marker: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = ACCOUNT
    message["To"] = f"{BOB}, {CAROL}"
    message["Subject"] = "interop: an attachment"
    message["Message-ID"] = f"<{marker}@anysmtp.test>"
    message["X-Interop-Case"] = marker
    message.set_content("The attachment is 48 KiB of random bytes.\n")
    payload = os.urandom(48 * 1024)
    message.add_attachment(
        payload, maintype="application", subtype="octet-stream", filename="data.bin"
    )
    # A fixed boundary: the test knows the exact bytes that go out.
    message.set_boundary(f"interop-{marker}")
    return message


def check_attachment_delivery(
    endpoint: Endpoint, message: email.message.EmailMessage, marker: str
) -> None:
    sent = flattened(message, international=False)
    for address in (BOB, CAROL):
        stored = assert_delivered(endpoint, address, sent, marker)
        assert received_with(stored).endswith("esmtpsa")
        parsed = email.message_from_bytes(stored, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        attachments = list(parsed.iter_attachments())
        assert len(attachments) == 1
        original = next(iter(message.iter_attachments()))
        delivered_payload = attachments[0].get_content()
        assert isinstance(delivered_payload, bytes)
        assert_same_bytes(delivered_payload, original.get_content())


@endpoints(lambda spec: spec.tls == "implicit")
async def test_implicit_tls_send_message_with_attachment_async(
    endpoint: Endpoint,
) -> None:
    marker = new_marker()
    message = attachment_message(marker)
    # The one-shot helper: connect with TLS, log in, send_message, QUIT.
    refused, reply = await anysmtp.send(message, **connect_options(endpoint))
    assert refused == {}
    # The server's reply to the message: "2.0.0 Ok: queued as ..." or "OK id=...".
    assert re.search(r"queued as|id=", reply), reply
    check_attachment_delivery(endpoint, message, marker)


@endpoints(lambda spec: spec.tls == "implicit")
def test_implicit_tls_send_message_with_attachment_sync(endpoint: Endpoint) -> None:
    marker = new_marker()
    message = attachment_message(marker)
    with anysmtp.SMTP_SSL(
        endpoint.host, endpoint.port, timeout=TIMEOUT, context=tls_context(endpoint)
    ) as client:
        client.login(ACCOUNT, PASSWORD)
        assert client.send_message(message) == {}
    check_attachment_delivery(endpoint, message, marker)
