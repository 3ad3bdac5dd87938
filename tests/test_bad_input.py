"""Bad input through the public API: refused before a single byte is sent.

Every case calls one method of a connected client (the async API on every backend
and the sync facade) with one bad argument, then NOOP: the call must raise the
error the table names, and the server's transcript must be exactly EHLO, NOOP and
QUIT, so nothing of the bad call reached the wire and the session is still in
step.

What other files already cover is not repeated here: control characters in every
command of the async API (``tests/test_client_errors.py``), AUTH credentials with
``login()`` (``tests/test_auth.py``), ``mail()``/``rcpt()`` with three smuggling
paths and an empty ``sendmail`` recipient list compared with smtplib
(``compat_tests/test_differential.py``), ``format_command`` itself
(``tests/test_protocol.py``).
"""

from __future__ import annotations

import email.message
import smtplib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import pytest

import anysmtp
from anysmtp._protocol import MAX_PATH_LENGTH
from tests.servers import ScriptedConnection, ScriptedServer

LOCAL: Final = "client.example"
ALICE: Final = "alice@example.com"
BOB: Final = "bob@example.com"
MESSAGE: Final = b"Subject: hi\r\n\r\nbody\r\n"
EHLO: Final = b"ehlo client.example\r\n"
#: What the server receives around every bad call: nothing of the call itself.
TRANSCRIPT: Final = EHLO + b"noop\r\nQUIT\r\n"

#: The EHLO reply's extensions: enough for every method to reach its checks
#: (AUTH for login and auth, no SMTPUTF8 so non-ASCII addresses must fail).
EXTENSIONS: Final = (b"8BITMIME", b"AUTH PLAIN LOGIN XOAUTH2")


def accepting(*extensions: bytes) -> Callable[[ScriptedConnection], None]:
    """A server that accepts everything: if a bad call slipped through, its
    commands would be answered and show in the transcript."""

    def script(conn: ScriptedConnection) -> None:
        conn.send(b"220 scripted ESMTP\r\n")
        while line := conn.read_line():
            verb = line.split(b" ", 1)[0].strip().lower()
            if verb in (b"ehlo", b"helo"):
                lines = [b"scripted", *extensions]
                head = b"".join(b"250-" + each + b"\r\n" for each in lines[:-1])
                conn.send(head + b"250 " + lines[-1] + b"\r\n")
            elif verb == b"data":
                conn.send(b"354 go ahead\r\n")
                conn.read_data()
                conn.send(b"250 queued\r\n")
            elif verb == b"auth" and line.split()[1:2] == [b"LOGIN"]:
                # The password, or the "*" that cancels, comes next.
                conn.send(b"334 UGFzc3dvcmQ6\r\n")
                conn.read_line()
                conn.send(b"235 2.7.0 ok\r\n")
            elif verb == b"auth":
                conn.send(b"235 2.7.0 ok\r\n")
            elif verb == b"quit":
                conn.send(b"221 bye\r\n")
            else:
                conn.send(b"250 ok\r\n")

    return script


def message(**headers: str) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("hi\n")
    return msg


def legacy(**headers: str) -> email.message.Message:
    """A compat32 message (smtplib's default): its headers are not checked.
    ``From`` and ``To`` default to :data:`ALICE` and :data:`BOB`."""
    msg = email.message.Message()
    for name, value in {"From": ALICE, "To": BOB, **headers}.items():
        msg[name] = value
    msg.set_payload("hi\n")
    return msg


@dataclass(frozen=True)
class Call:
    """One call of a client method, the same for both APIs."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Bad:
    """A bad call and the error it must raise (nothing being sent)."""

    call: Call
    raises: type[BaseException]
    #: Extensions of the server's EHLO reply.
    extensions: tuple[bytes, ...] = EXTENSIONS
    #: The async client's ``pipelining`` option (the server offers it when set).
    pipelining: bool = False
    #: Why the library fails this case today (the test is then an xfail).
    bug: str | None = None


def params(cases: Mapping[str, Bad]) -> list[Any]:
    return [
        pytest.param(
            case,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else [],
        )
        for name, case in cases.items()
    ]


def server_for(case: Bad) -> ScriptedServer:
    extensions = case.extensions + ((b"PIPELINING",) if case.pipelining else ())
    return ScriptedServer(accepting(*extensions))


def check(case: Bad, result: object, noop: object, transcript: bytes) -> None:
    assert isinstance(result, case.raises), repr(result)
    assert noop == (250, b"ok")
    assert transcript == TRANSCRIPT


async def run_async(case: Bad) -> None:
    with server_for(case) as server:
        async with anysmtp.AsyncSMTP(
            server.host,
            server.port,
            local_hostname=LOCAL,
            timeout=5,
            start_tls=False,
            pipelining=case.pipelining,
        ) as smtp:
            await smtp.ehlo()
            result: object
            try:
                result = await getattr(smtp, case.call.method)(
                    *case.call.args, **case.call.kwargs
                )
            except Exception as exc:
                result = exc
            noop = await smtp.noop()
    check(case, result, noop, bytes(server.transcript))


def run_facade(case: Bad) -> None:
    with (
        server_for(case) as server,
        anysmtp.SMTP(server.host, server.port, local_hostname=LOCAL, timeout=5) as s,
    ):
        s.ehlo()
        result: object
        try:
            result = getattr(s, case.call.method)(*case.call.args, **case.call.kwargs)
        except Exception as exc:
            result = exc
        noop = s.noop()
    check(case, result, noop, bytes(server.transcript))


# Control characters ----------------------------------------------------------------

#: CR and LF would end the command early; the others have no business in one.
CONTROL_CHARACTERS: Final = {
    "crlf": "\r\n",
    "lf": "\n",
    "cr": "\r",
    "nul": "\0",
    "esc": "\x1b",
    "del": "\x7f",
}

#: (the call with ``c`` in one argument, whether tests/test_client_errors.py
#: already runs it through the async API)
CONTROL_CALLS: Final[dict[str, tuple[Callable[[str], Call], bool]]] = {
    "mail-sender": (lambda c: Call("mail", (f"alice@example.com{c}RSET",)), True),
    "mail-sender-bracketed": (
        lambda c: Call("mail", (f"<alice@ex.com>{c}RSET",)),
        True,
    ),
    "rcpt": (lambda c: Call("rcpt", (f"bob@example.com{c}DATA",)), True),
    "sendmail-sender": (
        lambda c: Call("sendmail", (f"alice{c}@example.com", [BOB], MESSAGE)),
        True,
    ),
    "sendmail-second-recipient": (
        lambda c: Call("sendmail", (ALICE, [BOB, f"{c}evil@example.com"], MESSAGE)),
        True,
    ),
    "mail-option": (lambda c: Call("mail", (ALICE, [f"BODY=8BITMIME{c}RSET"])), True),
    "rcpt-option": (lambda c: Call("rcpt", (BOB, [f"NOTIFY=NEVER{c}RSET"])), True),
    "sendmail-mail-option": (
        lambda c: Call("sendmail", (ALICE, [BOB], MESSAGE, [f"X{c}Y"])),
        True,
    ),
    "sendmail-rcpt-option": (
        lambda c: Call("sendmail", (ALICE, [BOB], MESSAGE, [], [f"X{c}Y"])),
        True,
    ),
    "ehlo-name": (lambda c: Call("ehlo", (f"client{c}.example",)), True),
    "helo-name": (lambda c: Call("helo", (f"client{c}.example",)), True),
    "docmd-args": (lambda c: Call("docmd", ("NOOP", f"x{c}RSET")), True),
    "docmd-verb": (lambda c: Call("docmd", (f"NOOP{c}RSET",)), True),
    "putcmd": (lambda c: Call("putcmd", ("NOOP", f"x{c}RSET")), True),
    "help": (lambda c: Call("help", (f"x{c}y",)), True),
    "vrfy": (lambda c: Call("vrfy", (f"bob@example.com{c}RSET",)), True),
    "verify": (lambda c: Call("verify", (f"bob@example.com{c}RSET",)), True),
    "expn": (lambda c: Call("expn", (f"list@example.com{c}RSET",)), True),
    # Not run through the async API anywhere else:
    "send_message-from_addr": (
        lambda c: Call("send_message", (message(), f"alice@example.com{c}RSET", BOB)),
        False,
    ),
    "send_message-to_addrs": (
        lambda c: Call(
            "send_message", (message(), ALICE, [BOB, f"carol@example.com{c}RSET"])
        ),
        False,
    ),
    "send_message-mail_options": (
        lambda c: Call("send_message", (message(), ALICE, BOB, [f"X{c}Y"])),
        False,
    ),
    "send_message-rcpt_options": (
        lambda c: Call("send_message", (message(), ALICE, BOB, [], [f"X{c}Y"])),
        False,
    ),
    # Header values of a legacy (compat32) message, which email accepts as they
    # are: parsed for the envelope, a CR or LF would start another address
    # (smtplib then sends to it too).
    "send_message-to-header": (
        lambda c: Call(
            "send_message", (legacy(To=f"bob@example.com{c}RCPT TO:<e@x>"),)
        ),
        False,
    ),
    "send_message-cc-header": (
        lambda c: Call(
            "send_message", (legacy(To=BOB, Cc=f"carol@example.com{c}e@x"),)
        ),
        False,
    ),
    "send_message-from-header": (
        lambda c: Call("send_message", (legacy(From=f"alice@example.com{c}e@x"),)),
        False,
    ),
    "auth-mechanism": (
        lambda c: Call("auth", (f"PLAIN{c}RSET", lambda challenge=None: "x")),
        False,
    ),
    "login-user": (lambda c: Call("login", (f"alice{c}x", "secret")), False),
    "login-password": (lambda c: Call("login", ("alice", f"secret{c}x")), False),
    "login_oauth-token": (
        lambda c: Call(
            "login_oauth", ("alice", f"token{c}x"), {"mechanism": "XOAUTH2"}
        ),
        False,
    ),
}


def control_cases(*, async_api: bool) -> dict[str, Bad]:
    cases: dict[str, Bad] = {}
    for call_name, (build, covered) in CONTROL_CALLS.items():
        if async_api and covered:
            continue
        for char_name, char in CONTROL_CHARACTERS.items():
            if call_name.startswith("login") and char in "\x1b\x7f":
                continue  # legal in SASL credentials: they go base64-encoded
            cases[f"{call_name}-{char_name}"] = Bad(build(char), ValueError)
    return cases


@pytest.mark.anyio
@pytest.mark.parametrize("case", params(control_cases(async_api=True)))
async def test_control_characters_async(case: Bad) -> None:
    await run_async(case)


@pytest.mark.parametrize("case", params(control_cases(async_api=False)))
def test_control_characters_facade(case: Bad) -> None:
    run_facade(case)


# <> smuggling ------------------------------------------------------------------------

#: Addresses whose path (as smtplib's quoteaddr makes it) is not one ``<...>``
#: token: a server would take the rest for ESMTP parameters.
SMUGGLING: Final = {
    "null-with-parameter": "<> SIZE=1",
    "doubled-brackets": "<<a@b.c>>",
    "text-after-null": "<>x",
    "null-then-path": "<> <a@b.c>",
    "route-with-brackets": "<@a:<b@c>>",
    "closed-by-an-opening-bracket": "<, SIZE=1 <",
    "blanks-inside": "alice@example.com RET=HDRS ENVID=x@",
    "quoted-string-inside-a-local-part": 'a"b> RET=HDRS x"@example.com',
}

#: compat_tests/test_differential.py already runs the first three through
#: mail() and rcpt().
_DIFFERENTIAL_FORMS: Final = (
    "null-with-parameter",
    "doubled-brackets",
    "text-after-null",
)

SMUGGLING_PLACES: Final[dict[str, Callable[[str], Call]]] = {
    "mail": lambda path: Call("mail", (path,)),
    "rcpt": lambda path: Call("rcpt", (path,)),
    "sendmail-sender": lambda path: Call("sendmail", (path, [BOB], MESSAGE)),
    "sendmail-second-recipient": lambda path: Call(
        "sendmail", (ALICE, [BOB, path], MESSAGE)
    ),
    "send_message-from_addr": lambda path: Call("send_message", (message(), path, BOB)),
    "send_message-to_addrs": lambda path: Call(
        "send_message", (message(), ALICE, [BOB, path])
    ),
}
SMUGGLING_CASES: Final = {
    f"{place}-{form}{'-pipelining' if pipelining else ''}": Bad(
        build(path), ValueError, pipelining=pipelining
    )
    for form, path in SMUGGLING.items()
    for place, build in SMUGGLING_PLACES.items()
    if not (place in ("mail", "rcpt") and form in _DIFFERENTIAL_FORMS)
    # sendmail has two paths to check: sequential and pipelined.
    for pipelining in ((False, True) if place.startswith("sendmail") else (False,))
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", params(SMUGGLING_CASES))
async def test_smuggling_async(case: Bad) -> None:
    await run_async(case)


@pytest.mark.parametrize("case", params(SMUGGLING_CASES))
def test_smuggling_facade(case: Bad) -> None:
    run_facade(case)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "address",
    [
        "<a@example.com> NOTIFY=NEVER",
        "<a@example.com>>",
        "<a@example.com> <b@example.com>",
        "<a@example.com><b@example.com>",
        "<a@example.com>x",
    ],
)
async def test_text_after_a_parsable_path_is_dropped(address: str) -> None:
    # Not smuggled either: parseaddr finds the first path and drops the rest,
    # so only <a@example.com> is sent, exactly as smtplib's quoteaddr does.
    assert smtplib.quoteaddr(address) == "<a@example.com>"
    with ScriptedServer(accepting(*EXTENSIONS)) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        ) as smtp:
            await smtp.ehlo()
            assert await smtp.mail(address) == (250, b"ok")
            assert await smtp.rcpt(address) == (250, b"ok")
    assert server.transcript == (
        EHLO
        + b"mail FROM:<a@example.com>\r\n"
        + b"rcpt TO:<a@example.com>\r\n"
        + b"QUIT\r\n"
    )


# Addresses of absurd length --------------------------------------------------------


def address_of(octets: int, local_char: str = "a") -> str:
    """An address whose path (``<...>``) has exactly ``octets`` octets."""
    domain = "@example.com"
    width = len(local_char.encode("utf-8"))
    count, rest = divmod(octets - 2 - len(domain), width)
    address = local_char * count + "a" * rest + domain
    assert len(f"<{address}>".encode()) == octets
    return address


TOO_LONG: Final = {
    "257-octets": address_of(MAX_PATH_LENGTH + 1),
    "257-octets-utf8": address_of(MAX_PATH_LENGTH + 1, "é"),
    "display-name-and-257-octets": f"Alice <{address_of(MAX_PATH_LENGTH + 1)}>",
    "10k": "a" * 10_000 + "@example.com",
    "1m": "a" * 1_000_000 + "@example.com",
    "1m-quoted": '"' + "a " * 500_000 + '"@example.com',
}
LENGTH_PLACES: Final[dict[str, Callable[[str], Call]]] = {
    "mail": lambda address: Call("mail", (address,)),
    "rcpt": lambda address: Call("rcpt", (address,)),
    "sendmail-sender": lambda address: Call("sendmail", (address, [BOB], MESSAGE)),
    "sendmail-recipient": lambda address: Call(
        "sendmail", (ALICE, [BOB, address], MESSAGE)
    ),
    "send_message-to_addrs": lambda address: Call(
        "send_message", (message(), ALICE, [address])
    ),
}
LENGTH_CASES: Final = {
    f"{place}-{size}": Bad(
        build(address),
        ValueError,
        # The UTF-8 address must not fail for want of SMTPUTF8 first.
        extensions=(*EXTENSIONS, b"SMTPUTF8"),
    )
    for size, address in TOO_LONG.items()
    for place, build in LENGTH_PLACES.items()
}
LENGTH_CASES.update(
    {
        # email.utils.parseaddr recurses once per nested comment: the length
        # is only checked after parsing.
        "mail-nested-comments": Bad(
            Call("mail", ("(" * 2000 + "a@example.com",)),
            ValueError,
        ),
    }
)


@pytest.mark.anyio
@pytest.mark.parametrize("case", params(LENGTH_CASES))
async def test_too_long_async(case: Bad) -> None:
    await run_async(case)


@pytest.mark.parametrize("case", params(LENGTH_CASES))
def test_too_long_facade(case: Bad) -> None:
    run_facade(case)


@pytest.mark.anyio
@pytest.mark.parametrize("local_char", ["a", "é"])
async def test_a_path_of_exactly_256_octets_is_sent(local_char: str) -> None:
    address = address_of(MAX_PATH_LENGTH, local_char)
    options = ["SMTPUTF8"] if local_char != "a" else []
    with ScriptedServer(accepting(b"SMTPUTF8")) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        ) as smtp:
            await smtp.ehlo()
            assert await smtp.mail(address, options) == (250, b"ok")
    path = f"<{address}>".encode()
    assert len(path) == MAX_PATH_LENGTH
    suffix = b" SMTPUTF8" if options else b""
    assert server.transcript == EHLO + b"mail FROM:" + path + suffix + b"\r\nQUIT\r\n"


# Recipients, non-ASCII addresses, message types ------------------------------------

#: An address that needs SMTPUTF8.
INTERNATIONAL: Final = "jörg@example.com"


OTHER_CASES: Final = {
    # Empty recipient lists in the forms compat_tests does not try.
    "sendmail-empty-tuple": Bad(
        Call("sendmail", (ALICE, (), MESSAGE)), anysmtp.SMTPNoRecipientsError
    ),
    "sendmail-empty-tuple-pipelining": Bad(
        Call("sendmail", (ALICE, (), MESSAGE)),
        anysmtp.SMTPNoRecipientsError,
        pipelining=True,
    ),
    "send_message-no-recipient-headers": Bad(
        Call("send_message", (message(From=ALICE, Subject="hi"),)),
        anysmtp.SMTPNoRecipientsError,
    ),
    "send_message-empty-to_addrs": Bad(
        Call("send_message", (message(From=ALICE, To=BOB), None, [])),
        anysmtp.SMTPNoRecipientsError,
    ),
    # Non-ASCII without SMTPUTF8: UnicodeEncodeError is a ValueError.
    "mail-non-ascii": Bad(Call("mail", (INTERNATIONAL,)), UnicodeEncodeError),
    "rcpt-non-ascii": Bad(Call("rcpt", (INTERNATIONAL,)), UnicodeEncodeError),
    "vrfy-non-ascii": Bad(Call("vrfy", (INTERNATIONAL,)), UnicodeEncodeError),
    "expn-non-ascii": Bad(Call("expn", (INTERNATIONAL,)), UnicodeEncodeError),
    "ehlo-non-ascii-name": Bad(Call("ehlo", ("exämple",)), UnicodeEncodeError),
    "sendmail-non-ascii-sender": Bad(
        Call("sendmail", (INTERNATIONAL, [BOB], MESSAGE)), UnicodeEncodeError
    ),
    "sendmail-non-ascii-recipient-pipelining": Bad(
        Call("sendmail", (ALICE, [BOB, INTERNATIONAL], MESSAGE)),
        UnicodeEncodeError,
        pipelining=True,
    ),
    "sendmail-non-ascii-recipient": Bad(
        Call("sendmail", (ALICE, [BOB, INTERNATIONAL], MESSAGE)),
        UnicodeEncodeError,
    ),
    "sendmail-non-ascii-rcpt-option": Bad(
        Call("sendmail", (ALICE, [BOB], MESSAGE, [], ["X-NOTE=café"])),
        UnicodeEncodeError,
    ),
    "sendmail-non-ascii-rcpt-option-pipelining": Bad(
        Call("sendmail", (ALICE, [BOB], MESSAGE, [], ["X-NOTE=café"])),
        UnicodeEncodeError,
        pipelining=True,
    ),
    "send_message-non-ascii-to_addrs": Bad(
        Call("send_message", (message(From=ALICE, To=BOB), None, [INTERNATIONAL])),
        anysmtp.SMTPNotSupportedError,
    ),
    "send_message-non-ascii-to-header": Bad(
        Call("send_message", (message(From=ALICE, To=f"Jörg <{INTERNATIONAL}>"),)),
        anysmtp.SMTPNotSupportedError,
    ),
    # Credentials that UTF-8 cannot encode (a lone surrogate).
    "login-plain-password-lone-surrogate": Bad(
        Call("login", ("alice", "pa\ud800ss")),
        UnicodeEncodeError,
        extensions=(b"AUTH PLAIN",),
    ),
    "login-user-lone-surrogate": Bad(
        Call("login", ("al\ud800ice", "secret")),
        UnicodeEncodeError,
        extensions=(b"AUTH LOGIN",),
    ),
    "login-password-lone-surrogate": Bad(
        Call("login", ("alice", "pa\ud800ss")),
        UnicodeEncodeError,
        extensions=(b"AUTH LOGIN",),
    ),
    # Messages that are neither str, bytes, a file, an iterable of bytes nor
    # (for send_message) a message object.
    "sendmail-int": Bad(Call("sendmail", (ALICE, [BOB], 123)), TypeError),
    "sendmail-none": Bad(Call("sendmail", (ALICE, [BOB], None)), TypeError),
    "sendmail-float-pipelining": Bad(
        Call("sendmail", (ALICE, [BOB], 1.5)), TypeError, pipelining=True
    ),
    "sendmail-object": Bad(Call("sendmail", (ALICE, [BOB], object())), TypeError),
    "data-int": Bad(Call("data", (123,)), TypeError),
    "sendmail-email-message": Bad(
        Call("sendmail", (ALICE, [BOB], message(From=ALICE, To=BOB))),
        TypeError,
    ),
    "data-email-message": Bad(
        Call("data", (message(From=ALICE, To=BOB),)),
        TypeError,
    ),
    "send_message-str": Bad(
        Call("send_message", ("Subject: hi\r\n\r\nbody\r\n",)),
        TypeError,
    ),
    "send_message-bytes": Bad(
        Call("send_message", (b"Subject: hi\r\n\r\nbody\r\n",)),
        TypeError,
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", params(OTHER_CASES))
async def test_other_bad_input_async(case: Bad) -> None:
    await run_async(case)


@pytest.mark.parametrize("case", params(OTHER_CASES))
def test_other_bad_input_facade(case: Bad) -> None:
    run_facade(case)


@pytest.mark.anyio
async def test_a_folded_address_header_is_not_refused() -> None:
    # A line break followed by a space or a tab folds a header: it is not a
    # control character in the value.
    with ScriptedServer(accepting(*EXTENSIONS)) as server:
        async with anysmtp.AsyncSMTP(
            server.host, server.port, local_hostname=LOCAL, timeout=5, start_tls=False
        ) as smtp:
            folded = legacy(To="bob@example.com,\r\n carol@example.com,\n\tdan@x.org")
            assert await smtp.send_message(folded) == {}
    recipients = [
        line for line in bytes(server.transcript).split(b"\r\n") if b"rcpt" in line
    ]
    assert recipients == [
        b"rcpt TO:<bob@example.com>",
        b"rcpt TO:<carol@example.com>",
        b"rcpt TO:<dan@x.org>",
    ]
