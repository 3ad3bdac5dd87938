"""EHLO reply parsing and extension queries (sans-IO).

The parser reproduces smtplib's, quirks included, because ``esmtp_features`` is
public and code in the wild reads it: names are lower-cased, parameters are kept
as one string, and AUTH mechanisms from every ``AUTH`` and old-style ``AUTH=``
line are concatenated with a leading space each.
"""

from __future__ import annotations

import re

__all__ = ["auth_mechanisms", "parse_ehlo_features"]

_OLDSTYLE_AUTH = re.compile(r"auth=(.*)", re.I)
_FEATURE = re.compile(r"(?P<feature>[A-Za-z0-9][A-Za-z0-9\-]*) ?")


def parse_ehlo_features(message: bytes) -> dict[str, str]:
    """Parse the message of a 250 EHLO reply into ``{extension: parameters}``.

    :param message: the reply message, lines joined by ``b"\\n"``; the first line
        (the server's greeting) is skipped.
    :returns: extension names in lower case mapped to their parameter string.
    """
    features: dict[str, str] = {}
    for line in message.decode("latin-1").split("\n")[1:]:
        auth_match = _OLDSTYLE_AUTH.match(line)
        if auth_match:
            features["auth"] = features.get("auth", "") + " " + auth_match.group(1)
            continue
        match = _FEATURE.match(line)
        if match:
            feature = match.group("feature").lower()
            params = line[match.end("feature") :].strip()
            if feature == "auth":
                features["auth"] = features.get("auth", "") + " " + params
            else:
                features[feature] = params
    return features


def auth_mechanisms(features: dict[str, str]) -> list[str]:
    """The AUTH mechanisms a server advertised, upper-cased, without duplicates."""
    seen: dict[str, None] = {}
    for mechanism in features.get("auth", "").split():
        seen.setdefault(mechanism.upper(), None)
    return list(seen)
