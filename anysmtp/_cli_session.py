"""A connected, logged-in session for ``anysmtp send``, with errors classified."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ._cli_common import ConnectionOptions
from ._cli_errors import (
    CliError,
    ExitCode,
    classify_auth_error,
    classify_connect_error,
    raise_classified,
    refused_connection,
)
from ._cli_message import ServerOffers
from ._client import AsyncSMTP
from ._errors import SMTPException

__all__ = ["Login", "is_loopback", "open_session", "quit_quietly", "server_offers"]


@dataclass(frozen=True)
class Login:
    """The credentials to log in with, if any."""

    user: str | None = None
    password: str | None = None
    oauth_token: str | None = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (where clear text harms nobody)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


async def open_session(options: ConnectionOptions, login: Login) -> AsyncSMTP:
    """Connect (with STARTTLS as configured), greet, and log in.

    Without TLS, credentials are sent only to this machine or when ``--no-tls``
    asked for clear text: a server that merely forgot (or an attacker that
    removed) STARTTLS from its EHLO reply does not get the password.

    :raises CliError: the connection, TLS or login failed (the client is closed).
    """
    client = options.client()
    try:
        greeting = await client.connect()
        if greeting.code == 220:
            # Greeting done here, so that a refused EHLO/HELO is a session
            # error whatever the TLS mode (STARTTLS sends EHLO on connect).
            await client.ehlo_or_helo_if_needed()
    except (SMTPException, OSError) as exc:
        client.close()
        raise_classified(exc, classify_connect_error(exc, options.where))
    if greeting.code != 220:
        client.close()
        raise refused_connection(options.where, *greeting)
    if login.user is None:
        return client
    over_tls = client.get_transport_info("tls_version") is not None
    if not over_tls and options.tls_mode != "none" and not is_loopback(options.host):
        client.close()
        raise CliError(
            ExitCode.CONNECTION,
            f"{options.where} does not offer STARTTLS: not sending credentials in "
            "clear text (--tls if it speaks TLS at once, --no-tls to allow it)",
        )
    try:
        if login.oauth_token is not None:
            await client.login_oauth(login.user, login.oauth_token)
        else:
            assert login.password is not None
            await client.login(login.user, login.password)
    except (SMTPException, OSError) as exc:
        client.close()
        raise_classified(exc, classify_auth_error(exc, options.where, over_tls))
    except ValueError as exc:
        client.close()
        raise CliError(ExitCode.USAGE, str(exc)) from None
    return client


async def quit_quietly(client: AsyncSMTP) -> None:
    """QUIT, ignoring a server that already went away: what mattered is done."""
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (SMTPException, OSError):
        client.close()


def server_offers(client: AsyncSMTP, where: str) -> ServerOffers:
    """What the server of a session offers for 8-bit content (after EHLO)."""
    return ServerOffers(
        eightbitmime=client.has_extn("8bitmime"),
        # The client's own rule for sending NUL bytes as BODY=BINARYMIME.
        binarymime=client.has_extn("binarymime") and client._can_chunk(),
        where=where,
    )
