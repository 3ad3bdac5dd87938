"""The drop-in claim at module level: smtplib's names, by identity or by value.

``except smtplib.X`` in existing code must catch what anysmtp raises, so the
exception classes are smtplib's own objects; the constants and helpers that code
in the wild imports from smtplib exist in anysmtp with the same values and the
same behaviour.
"""

from __future__ import annotations

import inspect
import re
import smtplib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import anysmtp

#: Every exception class smtplib defines, whether or not it is in ``__all__``.
SMTPLIB_EXCEPTIONS = sorted(
    name
    for name, value in vars(smtplib).items()
    if inspect.isclass(value)
    and issubclass(value, BaseException)
    and value.__module__ == "smtplib"
)

TIMEOUT_ERRORS = ["SMTPTimeoutError", "SMTPConnectTimeoutError", "SMTPReadTimeoutError"]


def test_smtplib_exceptions_were_found() -> None:
    # Guards the parametrization below against an empty (vacuous) list.
    assert set(SMTPLIB_EXCEPTIONS) >= {
        name for name in smtplib.__all__ if name.startswith("SMTP") and "Error" in name
    }
    assert "SMTPException" in SMTPLIB_EXCEPTIONS
    assert "SMTPResponseException" in SMTPLIB_EXCEPTIONS
    assert len(SMTPLIB_EXCEPTIONS) >= 10


@pytest.mark.parametrize("name", SMTPLIB_EXCEPTIONS)
def test_exception_is_smtplibs_own_class(name: str) -> None:
    ours = getattr(anysmtp, name)
    assert ours is getattr(smtplib, name)
    assert name in anysmtp.__all__


@pytest.mark.parametrize("name", SMTPLIB_EXCEPTIONS)
def test_except_smtplib_catches_what_anysmtp_raises(name: str) -> None:
    ours: type[BaseException] = getattr(anysmtp, name)
    theirs: type[BaseException] = getattr(smtplib, name)
    error: BaseException
    if issubclass(ours, smtplib.SMTPRecipientsRefused):
        error = ours({"a@example.com": (550, b"no")})
    elif issubclass(ours, smtplib.SMTPSenderRefused):
        error = ours(553, b"no", "a@example.com")
    elif issubclass(ours, smtplib.SMTPResponseException):
        error = ours(554, b"no")
    else:
        error = ours("no")
    with pytest.raises(theirs) as caught:
        raise error
    assert caught.value is error


@pytest.mark.parametrize("name", smtplib.__all__)
def test_every_name_in_smtplib_all_exists(name: str) -> None:
    assert hasattr(anysmtp, name)
    assert name in anysmtp.__all__


@pytest.mark.parametrize(
    "name",
    [
        "SMTP_PORT",
        "SMTP_SSL_PORT",
        "LMTP_PORT",
        "CRLF",
        "bCRLF",
        "_MAXLINE",
        "_MAXCHALLENGE",
        "OLDSTYLE_AUTH",
        "_have_ssl",
    ],
)
def test_module_constant_equals_smtplibs(name: str) -> None:
    ours: Any = getattr(anysmtp, name)
    theirs: Any = getattr(smtplib, name)
    assert type(ours) is type(theirs)
    assert ours == theirs


def test_constant_values() -> None:
    # The values themselves, so that an equal-but-wrong smtplib could not hide
    # a mistake here.
    assert (anysmtp.SMTP_PORT, anysmtp.SMTP_SSL_PORT, anysmtp.LMTP_PORT) == (
        25,
        465,
        2003,
    )
    assert (anysmtp.CRLF, anysmtp.bCRLF) == ("\r\n", b"\r\n")
    assert anysmtp._MAXLINE == 8192
    assert anysmtp._MAXCHALLENGE == 5
    assert anysmtp._have_ssl is True


def test_oldstyle_auth_pattern_matches_the_same() -> None:
    ours: re.Pattern[str] = anysmtp.OLDSTYLE_AUTH
    theirs: re.Pattern[str] = smtplib.OLDSTYLE_AUTH
    assert (ours.pattern, ours.flags) == (theirs.pattern, theirs.flags)
    for line in ["AUTH=LOGIN PLAIN", "auth=cram-md5", "AUTH LOGIN", "8BITMIME", ""]:
        ours_match = ours.match(line)
        theirs_match = theirs.match(line)
        assert (ours_match and ours_match.groups()) == (
            theirs_match and theirs_match.groups()
        )


DATA_SAMPLES = [
    "",
    ".",
    "..",
    "a",
    ".leading dot",
    "line\n.dot after LF\n",
    "line\r.dot after CR\r",
    "line\r\n.dot after CRLF\r\n",
    "mixed\rendings\nhere\r\nand\n\rthere",
    "\n\n\r\r\r\n\r\n",
    "no ending at all",
    "trailing dot\r\n.",
    "Subject: x\n\nbody\n.\n..\n...\nend",
]


@pytest.mark.parametrize("data", DATA_SAMPLES)
def test_quotedata_behaves_the_same(data: str) -> None:
    assert anysmtp.quotedata(data) == smtplib.quotedata(data)


@pytest.mark.parametrize("data", DATA_SAMPLES)
def test_fix_eols_behaves_the_same(data: str) -> None:
    ours = anysmtp._fix_eols(data)
    theirs = smtplib._fix_eols(data)  # type: ignore[attr-defined]
    assert ours == theirs


@pytest.mark.parametrize("data", [sample.encode() for sample in DATA_SAMPLES])
def test_quote_periods_behaves_the_same(data: bytes) -> None:
    ours = anysmtp._quote_periods(data)
    theirs = smtplib._quote_periods(data)  # type: ignore[attr-defined]
    assert ours == theirs


QUOTEADDR_SAMPLES = [
    "",
    " ",
    "<>",
    " <> ",
    "<",
    ">",
    "@",
    "a@b",
    "user@example.com",
    "User.Name+tag@sub.example.co.uk",
    "o'brien@example.com",
    "a!#$%&'*+/=?^_`{|}~-b@example.com",
    "<user@example.com>",
    " <user@example.com> ",
    "John Doe <john@example.com>",
    '"Doe, John" <john@example.com>',
    '"quoted local"@example.com',
    "john@example.com (John Doe)",
    "john (comment) @ example.com",
    "a@b, c@d",
    "a@b c@d",
    "user",
    "user@",
    "@example.com",
    "user@[192.0.2.1]",
    "user@example.com.",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "user@-example.com",
    "user@exa_mple.com",
    "USER@EXAMPLE.COM",
    "user@localhost",
    "müller@example.com",
    "Jörg <jörg@exämple.com>",
    "<unclosed@example.com",
    "unopened@example.com>",
    "<<double@example.com>>",
    "group: a@b, c@d;",
    "a@b;c@d",
    "user@example.com\t",
    "\tuser@example.com",
]


@pytest.mark.parametrize("address", QUOTEADDR_SAMPLES)
def test_quoteaddr_behaves_the_same(address: str) -> None:
    assert anysmtp.quoteaddr(address) == smtplib.quoteaddr(address)


_ADDRESS_ALPHABET = st.sampled_from(
    [*"aZ09.@<>\"(),:;[] \\\t!#$%&'*+/=?^_`{|}~-", "é", "\x7f"]
)


@given(st.text(_ADDRESS_ALPHABET, max_size=16))
def test_quoteaddr_behaves_the_same_on_generated_input(address: str) -> None:
    assert anysmtp.quoteaddr(address) == smtplib.quoteaddr(address)


@pytest.mark.parametrize("name", TIMEOUT_ERRORS)
def test_timeout_errors_are_smtp_and_builtin_timeout_errors(name: str) -> None:
    error_class: type[Exception] = getattr(anysmtp, name)
    assert name in anysmtp.__all__
    assert issubclass(error_class, anysmtp.SMTPTimeoutError)
    assert issubclass(error_class, smtplib.SMTPException)
    assert issubclass(error_class, TimeoutError)
    # Not one of smtplib's classes: an addition that subclasses them.
    assert not hasattr(smtplib, name)
    error = error_class("timed out")
    with pytest.raises(TimeoutError):
        raise error
    with pytest.raises(smtplib.SMTPException):
        raise error
    # TimeoutError is an OSError, as socket.timeout is since Python 3.10.
    with pytest.raises(OSError, match=r"^timed out$"):
        raise error


def test_connect_and_read_timeouts_are_distinct() -> None:
    assert not issubclass(anysmtp.SMTPConnectTimeoutError, anysmtp.SMTPReadTimeoutError)
    assert not issubclass(anysmtp.SMTPReadTimeoutError, anysmtp.SMTPConnectTimeoutError)


def test_sync_classes_do_not_inherit_from_async_ones() -> None:
    assert not issubclass(anysmtp.SMTP, anysmtp.AsyncSMTP)
    assert not issubclass(anysmtp.LMTP, anysmtp.AsyncSMTP)
    assert not issubclass(anysmtp.LMTP, anysmtp.AsyncLMTP)
    assert issubclass(anysmtp.LMTP, anysmtp.SMTP)
    assert issubclass(anysmtp.AsyncLMTP, anysmtp.AsyncSMTP)
    assert not issubclass(anysmtp.AsyncSMTP, anysmtp.SMTP)


def test_class_level_attributes_match_smtplib() -> None:
    assert anysmtp.SMTP.default_port == smtplib.SMTP.default_port == 25
    assert anysmtp.SMTP.ehlo_msg == smtplib.SMTP.ehlo_msg == "ehlo"
    assert anysmtp.LMTP.ehlo_msg == smtplib.LMTP.ehlo_msg == "lhlo"


def test_smtp_response_is_a_code_message_tuple() -> None:
    response = anysmtp.SMTPResponse(250, b"2.0.0 OK")
    assert isinstance(response, tuple)
    assert response == (250, b"2.0.0 OK")
    assert (250, b"2.0.0 OK") == response  # noqa: SIM300 (tuple.__eq__ first)
    text_message: object = (250, "2.0.0 OK")
    assert response != text_message
    assert response != (251, b"2.0.0 OK")
    assert hash(response) == hash((250, b"2.0.0 OK"))
    assert len(response) == 2
    assert response[0] == 250
    assert response[1] == b"2.0.0 OK"
    code, message = response
    assert (code, message) == (250, b"2.0.0 OK")
    assert (response.code, response.message) == (250, b"2.0.0 OK")
    assert response.text == "2.0.0 OK"
    assert response.ok is True
    assert str(response) == "250 2.0.0 OK"
    # Usable wherever smtplib's tuples are: as a dict key, in a set, sorted.
    assert {(250, b"2.0.0 OK"): "x"}[response] == "x"
    assert sorted([anysmtp.SMTPResponse(550, b"b"), (250, b"a")]) == [
        (250, b"a"),
        (550, b"b"),
    ]


@pytest.mark.parametrize(
    ("code", "ok"),
    [(-1, False), (199, False), (200, True), (221, True), (299, True), (354, False)],
)
def test_smtp_response_ok(code: int, ok: bool) -> None:
    assert anysmtp.SMTPResponse(code, b"").ok is ok


def test_smtp_response_text_and_str() -> None:
    multi = anysmtp.SMTPResponse(250, b"first\nsecond")
    assert multi.text == "first\nsecond"
    assert str(multi) == "250 first\nsecond"
    utf8 = anysmtp.SMTPResponse(550, "Empfänger unbekannt".encode())
    assert utf8.text == "Empfänger unbekannt"
    invalid = anysmtp.SMTPResponse(500, b"bad \xff byte")
    assert invalid.text == "bad \ufffd byte"
    assert str(invalid) == "500 bad \ufffd byte"
    empty = anysmtp.SMTPResponse(-1, b"")
    assert (empty.text, str(empty)) == ("", "-1 ")
