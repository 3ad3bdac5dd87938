"""SASL mechanisms as pure functions: credentials and challenge in, response out.

Nothing here does I/O.  ``AsyncSMTP.auth`` runs smtplib's challenge loop; these
functions compute what it sends.
"""

from __future__ import annotations

import hmac

__all__ = [
    "PREFERRED_MECHANISMS",
    "check_credential",
    "cram_md5_available",
    "cram_md5_response",
    "login_response",
    "oauth_mechanism",
    "oauthbearer_response",
    "plain_response",
    "xoauth2_response",
]

#: smtplib's order for ``login()``.
PREFERRED_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")


def check_credential(value: str, what: str) -> None:
    """Refuse characters that would change what a SASL message means.

    The message names the field, never the value: credentials must not end up in
    logs through exception messages.

    :raises ValueError: ``value`` contains NUL, CR, LF or SOH.
    :raises UnicodeEncodeError: UTF-8 cannot encode ``value`` (a lone
        surrogate); the exception does not carry the value.
    """
    if any(char in value for char in "\x00\r\n\x01"):
        raise ValueError(f"{what} contains a NUL, CR, LF or SOH character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Checked before AUTH: LOGIN would otherwise send the user name and
        # fail on the password, leaving the server waiting for it.
        raise UnicodeEncodeError(
            "utf-8", "", exc.start, exc.end, f"{what} cannot be encoded in UTF-8"
        ) from None


def plain_response(user: str, password: str) -> str:
    """PLAIN (RFC 4616): ``\\0user\\0password``."""
    return f"\0{user}\0{password}"


def login_response(user: str, password: str, challenge_count: int) -> str:
    """LOGIN: the user name first, then the password (smtplib's rule)."""
    return user if challenge_count < 2 else password


def cram_md5_available() -> bool:
    """Whether HMAC-MD5 can be computed here (not under a FIPS-only OpenSSL)."""
    try:
        hmac.new(b"key", b"message", "md5")
    except ValueError:
        return False
    return True


def cram_md5_response(user: str, password: str, challenge: bytes) -> str:
    """CRAM-MD5 (RFC 2195): the user name and the HMAC-MD5 of the challenge.

    :raises ValueError: MD5 is not available.
    """
    digest = hmac.new(password.encode("utf-8"), challenge, "md5").hexdigest()
    return f"{user} {digest}"


def xoauth2_response(user: str, token: str) -> str:
    """XOAUTH2 (Google, Microsoft): the initial client response."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer_response(user: str, token: str, host: str, port: int) -> str:
    """OAUTHBEARER (RFC 7628): the initial client response.  The user name
    goes in the GS2 header, where ``=`` and ``,`` are escaped (RFC 5801)."""
    authzid = user.replace("=", "=3D").replace(",", "=2C")
    return (
        f"n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    )


def oauth_mechanism(advertised: list[str]) -> str | None:
    """The OAuth mechanism to use: OAUTHBEARER (the standard) before XOAUTH2."""
    for mechanism in ("OAUTHBEARER", "XOAUTH2"):
        if mechanism in advertised:
            return mechanism
    return None
