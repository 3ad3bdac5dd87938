"""Unit tests of EHLO parsing (anysmtp._esmtp) against the real smtplib.

The reference is ``smtplib.SMTP.ehlo`` itself, run on an unconnected object whose
``putcmd`` and ``getreply`` are stubbed to return the reply under test.
"""

from __future__ import annotations

import smtplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anysmtp._esmtp import auth_mechanisms, parse_ehlo_features

FAST = settings(max_examples=400, deadline=None)


class _EhloStub(smtplib.SMTP):
    """smtplib.SMTP without a network: EHLO is answered with a fixed reply."""

    def __init__(self, code: int, message: bytes) -> None:
        super().__init__(local_hostname="client.example")
        self._reply = (code, message)
        self.commands: list[tuple[str, str]] = []

    def putcmd(self, cmd: str, args: str = "") -> None:
        self.commands.append((cmd, args))

    def getreply(self) -> tuple[int, bytes]:
        return self._reply


def smtplib_features(message: bytes) -> dict[str, str]:
    """What smtplib's ``ehlo()`` stores in ``esmtp_features`` for a 250 reply."""
    client = _EhloStub(250, message)
    assert client.ehlo() == (250, message)
    assert client.commands == [("ehlo", "client.example")]
    assert client.does_esmtp
    return client.esmtp_features


def test_reference_stub_runs_the_real_ehlo() -> None:
    # A non-250 reply leaves smtplib's features empty: the stub really drives ehlo().
    client = _EhloStub(502, b"mx\nSIZE 10")
    assert client.ehlo("me") == (502, b"mx\nSIZE 10")
    assert client.esmtp_features == {}
    assert client.commands == [("ehlo", "me")]


TYPICAL = (
    b"mx.example.com Hello client.example [192.0.2.1]\n"
    b"PIPELINING\n"
    b"SIZE 35882577\n"
    b"VRFY\n"
    b"ETRN\n"
    b"STARTTLS\n"
    b"AUTH PLAIN LOGIN\n"
    b"ENHANCEDSTATUSCODES\n"
    b"8BITMIME\n"
    b"DSN\n"
    b"SMTPUTF8\n"
    b"CHUNKING"
)


def test_typical_reply() -> None:
    expected = {
        "pipelining": "",
        "size": "35882577",
        "vrfy": "",
        "etrn": "",
        "starttls": "",
        "auth": " PLAIN LOGIN",
        "enhancedstatuscodes": "",
        "8bitmime": "",
        "dsn": "",
        "smtputf8": "",
        "chunking": "",
    }
    assert parse_ehlo_features(TYPICAL) == expected
    assert smtplib_features(TYPICAL) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # The greeting line is never a feature.
        (b"PIPELINING", {}),
        (b"", {}),
        (b"mx", {}),
        (b"mx\n", {}),
        # Names are lower-cased; parameters keep their case and inner spacing.
        (b"mx\nSize 100", {"size": "100"}),
        (b"mx\nX-Custom  Some   Params  ", {"x-custom": "Some   Params"}),
        # The last duplicate wins (but AUTH accumulates).
        (b"mx\nSIZE 1\nSIZE 2", {"size": "2"}),
        # Old-style AUTH= lines, alone, lower case and mixed with AUTH lines.
        (b"mx\nAUTH=LOGIN PLAIN", {"auth": " LOGIN PLAIN"}),
        (b"mx\nauth=login", {"auth": " login"}),
        (b"mx\nAuTh=X", {"auth": " X"}),
        (
            b"mx\nAUTH LOGIN CRAM-MD5\nAUTH=LOGIN PLAIN",
            {"auth": " LOGIN CRAM-MD5 LOGIN PLAIN"},
        ),
        (
            b"mx\nAUTH=LOGIN PLAIN\nAUTH LOGIN CRAM-MD5",
            {"auth": " LOGIN PLAIN LOGIN CRAM-MD5"},
        ),
        (b"mx\nAUTH A\nAUTH B\nauth c", {"auth": " A B c"}),
        # AUTH without mechanisms, AUTH= without mechanisms.
        (b"mx\nAUTH", {"auth": " "}),
        (b"mx\nAUTH=", {"auth": " "}),
        (b"mx\nAUTH \t", {"auth": " "}),
        # The old-style regex keeps trailing blanks; the new style strips them.
        (b"mx\nAUTH=LOGIN  ", {"auth": " LOGIN  "}),
        (b"mx\nAUTH LOGIN  ", {"auth": " LOGIN"}),
        # A name followed by something else than a space.
        (b"mx\nSIZE=100", {"size": "=100"}),
        (b"mx\nAUTHX=foo", {"authx": "=foo"}),
        (b"mx\nAUTH = x", {"auth": " = x"}),
        (b"mx\nAUTH\tLOGIN", {"auth": " LOGIN"}),
        (b"mx\nDSN\t", {"dsn": ""}),
        (b"mx\nSIZE\r", {"size": ""}),
        # Garbage lines: no leading letter or digit, nothing recognisable.
        (b"mx\n-foo\n leading\n\n!!!\n\t", {}),
        (b"mx\n250 x", {"250": "x"}),
        (b"mx\n8BITMIME", {"8bitmime": ""}),
        # Latin-1 bytes survive decoding.
        (b"mx\nX-\xe9T\xe9 v\xff", {"x-": "\xe9T\xe9 v\xff"}),
        (b"mx\n\xe9TE", {}),
    ],
)
def test_cases(message: bytes, expected: dict[str, str]) -> None:
    assert smtplib_features(message) == expected
    assert parse_ehlo_features(message) == expected


def test_result_is_a_fresh_dict() -> None:
    first = parse_ehlo_features(b"mx\nSIZE 1")
    first["size"] = "changed"
    assert parse_ehlo_features(b"mx\nSIZE 1") == {"size": "1"}


_KEYWORD = st.sampled_from(
    [
        "AUTH",
        "auth",
        "Auth",
        "AUTH=",
        "auth=",
        "AUTHX",
        "SIZE",
        "size",
        "8BITMIME",
        "X-EXPS",
        "STARTTLS",
        "PIPELINING",
        "-bad",
        "",
        " ",
        "é",
        "250",
    ]
)
_SEPARATOR = st.sampled_from(["", " ", "  ", "\t", "=", " = ", "-"])
_PARAMS = st.lists(
    st.sampled_from(
        ["LOGIN", "PLAIN", "cram-md5", "XOAUTH2", "100", " ", "\t", "\r", "=", "é"]
    ),
    max_size=5,
).map("".join)
_LINE = st.builds(lambda *parts: "".join(parts), _KEYWORD, _SEPARATOR, _PARAMS)
EHLO_MESSAGES = st.one_of(
    st.builds(
        lambda greeting, lines: "\n".join([greeting, *lines]).encode("latin-1"),
        st.sampled_from(["mx.example.com", "", "AUTH=LOGIN", "SIZE 1"]),
        st.lists(_LINE, max_size=10),
    ),
    st.binary(max_size=120),
)


@FAST
@given(message=EHLO_MESSAGES)
def test_parse_ehlo_features_equals_smtplib(message: bytes) -> None:
    assert parse_ehlo_features(message) == smtplib_features(message)


# --------------------------------------------------------------------------
# auth_mechanisms
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({}, []),
        ({"size": "100"}, []),
        ({"auth": ""}, []),
        ({"auth": " "}, []),
        ({"auth": " LOGIN PLAIN"}, ["LOGIN", "PLAIN"]),
        ({"auth": " login Plain"}, ["LOGIN", "PLAIN"]),
        ({"auth": " LOGIN PLAIN LOGIN CRAM-MD5"}, ["LOGIN", "PLAIN", "CRAM-MD5"]),
        ({"auth": " plain LOGIN Plain login"}, ["PLAIN", "LOGIN"]),
        ({"auth": "\tA\t b  \r\nc"}, ["A", "B", "C"]),
    ],
)
def test_auth_mechanisms(features: dict[str, str], expected: list[str]) -> None:
    assert auth_mechanisms(features) == expected


def test_auth_mechanisms_from_a_reply_with_both_styles() -> None:
    features = parse_ehlo_features(
        b"mx\nAUTH=login PLAIN\nAUTH LOGIN xoauth2\nSIZE 10\nauth cram-md5 Plain"
    )
    assert features["auth"] == " login PLAIN LOGIN xoauth2 cram-md5 Plain"
    assert auth_mechanisms(features) == ["LOGIN", "PLAIN", "XOAUTH2", "CRAM-MD5"]


def test_auth_mechanisms_leaves_the_features_alone() -> None:
    features = {"auth": " login login"}
    auth_mechanisms(features)
    assert features == {"auth": " login login"}


_MECHANISM = st.sampled_from(
    [
        "LOGIN",
        "login",
        "Login",
        "PLAIN",
        "plain",
        "CRAM-MD5",
        "cram-md5",
        "XOAUTH2",
        "x",
    ]
)


@FAST
@given(
    mechanisms=st.lists(_MECHANISM, max_size=12),
    blanks=st.lists(st.sampled_from([" ", "  ", "\t"]), min_size=13, max_size=13),
)
def test_auth_mechanisms_property(mechanisms: list[str], blanks: list[str]) -> None:
    auth = "".join(
        blank + mech for blank, mech in zip(blanks, mechanisms, strict=False)
    )
    result = auth_mechanisms({"auth": auth})
    assert all(mech == mech.upper() for mech in result)
    assert len(result) == len(set(result))
    assert set(result) == {mech.upper() for mech in mechanisms}
    # In order of first appearance.
    firsts: list[str] = []
    for mech in mechanisms:
        if mech.upper() not in firsts:
            firsts.append(mech.upper())
    assert result == firsts
