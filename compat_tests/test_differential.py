"""Differential scenarios: stdlib smtplib is the reference, byte for byte.

Every scenario is a server (a scripted, often misbehaving, one; or aiosmtpd) and a
client program written once against an smtplib-like module (see
:mod:`compat_tests.differential`).  The program runs with the standard library's
:mod:`smtplib` (the reference), with :mod:`anysmtp` (``import anysmtp as
smtplib``) and, where it applies, through :class:`anysmtp.AsyncSMTP` on asyncio,
uvloop and trio.  Return values, exceptions (type and ``args``), the ``sock``
state the programs record, the bytes the server received and (for the debug
scenarios) stderr must be the same.

The only differences allowed are the rows of docs/compatibility.md: such a
scenario has a ``Documented`` check that names its row (a test checks that
the row is in the document) and asserts both smtplib's and
anysmtp's behaviour explicitly.  A difference the document does not list is a
bug: its scenario stays, marked ``xfail(strict=True)`` with the difference as
the reason, until anysmtp or the document changes.  Every client says EHLO as
``client.example``: anysmtp computes the default name later than smtplib
(compatibility.md), so the programs pass ``local_hostname`` (but one).

To add a scenario: write the server's script (:func:`script` steps, or a
function) and a program taking ``(smtplib, host, port)``; decorate the program
with ``@scenario(script...)``.  Programs return what they observed: use
:func:`attempt` for calls that may raise, record ``s.sock is None`` where the
connection state matters, and close every client (``contextlib.closing``).
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import hmac
import pickle
import re
import smtplib as stdlib_smtplib
import socket
import ssl
import struct
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from pathlib import Path
from types import ModuleType
from typing import Any, Final
from unittest import mock

import pytest
import trustme

import anysmtp
from compat_tests.differential import (
    BODY,
    CLOSE,
    GREETING,
    STALL,
    VARIANTS,
    Outcome,
    Program,
    Raised,
    Script,
    Step,
    answer_rest,
    attempt,
    drain,
    ehlo_reply,
    normalise,
    print_outcome,
    run,
    script,
    shape,
)
from tests.servers import AiosmtpdServer, RecordingHandler, ScriptedConnection

COMPATIBILITY_DOC: Final = (
    Path(__file__).resolve().parent.parent / "docs" / "compatibility.md"
).read_text(encoding="utf-8")

LOCAL: Final = "client.example"
#: Per-command timeout of the programs (no scenario waits for it but the stalls).
T: Final = 2.0
#: The timeout of the scenarios where the server stalls on purpose.
STALL_T: Final = 0.3

ALICE: Final = "alice@example.com"
BOB: Final = "bob@example.com"
CAROL: Final = "carol@example.com"
DAVE: Final = "dave@example.com"
MSG: Final = b"Subject: hi\r\n\r\n.dot\r\nbody\r\n"
#: MSG as DATA transmits it: dot-stuffed, then the end-of-data line.
MSG_WIRE: Final = b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"

# Lines as the client sends them.
EHLO_LINE: Final = b"ehlo client.example\r\n"
HELO_LINE: Final = b"helo client.example\r\n"
MAIL_LINE: Final = b"mail FROM:<alice@example.com>\r\n"
RCPT_BOB_LINE: Final = b"rcpt TO:<bob@example.com>\r\n"
DATA_LINE: Final = b"data\r\n"
RSET_LINE: Final = b"rset\r\n"
QUIT_LINE: Final = b"quit\r\n"

# Script steps.
EHLO_OK: Final[Step] = (EHLO_LINE, ehlo_reply(b"8BITMIME"))
MAIL_OK: Final[Step] = (MAIL_LINE, b"250 2.1.0 ok\r\n")
RCPT_OK: Final[Step] = (b"rcpt", b"250 2.1.5 ok\r\n")
DATA_GO: Final[Step] = (DATA_LINE, b"354 go ahead\r\n")
BODY_OK: Final[Step] = (BODY, b"250 2.0.0 queued as 1\r\n")
QUIT_OK: Final[Step] = (QUIT_LINE, b"221 2.0.0 bye\r\n")
#: A whole transaction for one recipient.
SEND_OK: Final = (MAIL_OK, RCPT_OK, DATA_GO, BODY_OK)


# The table -----------------------------------------------------------------------


@dataclass(frozen=True)
class Documented:
    """A difference that docs/compatibility.md lists.

    :param row: words of the row (its smtplib column) as the document has them.
    :param check: asserts smtplib's behaviour (the first outcome) and anysmtp's
        (the second) explicitly.
    """

    row: str
    check: Callable[[Outcome, Outcome], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    program: Program
    scripts: tuple[Script, ...] = ()
    aiosmtpd: Callable[[], AiosmtpdServer] | None = None
    #: Whether the program also runs through the async API.
    async_api: bool = True
    capture_stderr: bool = False
    documented: Documented | None = None
    #: Known, undocumented differences: variant ("*" for all) -> reason.
    xfail: dict[str, str] = field(default_factory=dict)
    #: Applied to both transcripts before comparing (for nondeterministic parts).
    transcript_view: Callable[[bytes], bytes] | None = None
    #: Applied to both stderr captures before comparing (timestamps).
    stderr_view: Callable[[str], str] | None = None


SCENARIOS: list[Scenario] = []


def scenario(
    *scripts: Script,
    aiosmtpd: Callable[[], AiosmtpdServer] | None = None,
    async_api: bool = True,
    capture_stderr: bool = False,
    documented: Documented | None = None,
    xfail: dict[str, str] | None = None,
    transcript_view: Callable[[bytes], bytes] | None = None,
    stderr_view: Callable[[str], str] | None = None,
) -> Callable[[Program], Program]:
    """Add the decorated program, with its server, to the table."""

    def register(program: Program) -> Program:
        SCENARIOS.append(
            Scenario(
                name=program.__name__,
                program=program,
                scripts=scripts,
                aiosmtpd=aiosmtpd,
                async_api=async_api,
                capture_stderr=capture_stderr,
                documented=documented,
                xfail=dict(xfail or {}),
                transcript_view=transcript_view,
                stderr_view=stderr_view,
            )
        )
        return program

    return register


def client(smtplib: ModuleType, host: str, port: int, timeout: float = T) -> Any:
    """``smtplib.SMTP(host, port)`` as every program opens it."""
    return smtplib.SMTP(host, port, local_hostname=LOCAL, timeout=timeout)


def unconnected(smtplib: ModuleType, timeout: float = T) -> Any:
    """``smtplib.SMTP()`` with no host: not connected yet."""
    return smtplib.SMTP(local_hostname=LOCAL, timeout=timeout)


def construct(smtplib: ModuleType, host: str, port: int, timeout: float = T) -> object:
    """What the constructor does: raise, or connect (the client is closed)."""
    try:
        smtp = client(smtplib, host, port, timeout)
    except Exception as exc:
        return normalise(exc)
    smtp.close()
    return "connected"


def sendmail_and_state(smtplib: ModuleType, host: str, port: int) -> object:
    """The most common program: one sendmail, then the connection state."""
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], MSG), s.sock is None]


# Greetings -----------------------------------------------------------------------


@scenario(script(greeting=b"220-first line\r\n220-second  \r\n220 third\r\n"))
def greeting_multiline(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as s:
        return [
            attempt(s.connect, host, port),
            attempt(s.noop),
            attempt(s.quit),
            s.sock is None,
        ]


@scenario(script(greeting=b"554 5.3.2 no SMTP service here\r\n", then=drain))
def greeting_554_in_constructor(smtplib: ModuleType, host: str, port: int) -> object:
    return construct(smtplib, host, port)


@scenario(script(greeting=b"554 5.3.2 no SMTP service here\r\n"))
def greeting_554_with_connect(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as s:
        return [
            attempt(s.connect, host, port),
            s.sock is None,
            attempt(s.noop),
            attempt(s.quit),
            s.sock is None,
        ]


@scenario(script(greeting=b"421 4.3.2 too busy, try later\r\n", then=drain))
def greeting_421(smtplib: ModuleType, host: str, port: int) -> object:
    return construct(smtplib, host, port)


@scenario(script(greeting=b"hello there\r\n", then=drain))
def greeting_garbage(smtplib: ModuleType, host: str, port: int) -> object:
    return construct(smtplib, host, port)


@scenario(script(greeting=b"220\r\n"))
def greeting_code_only(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as s:
        return [attempt(s.connect, host, port), attempt(s.quit)]


@scenario(script(greeting=CLOSE))
def greeting_disconnect(smtplib: ModuleType, host: str, port: int) -> object:
    return construct(smtplib, host, port)


def _timeout_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib: socket.timeout surfaces as SMTPServerDisconnected.
    assert isinstance(reference.result, list)
    assert isinstance(ours.result, list)
    expected = Raised(
        stdlib_smtplib.SMTPServerDisconnected,
        ("Connection unexpectedly closed: timed out",),
    )
    assert reference.result[0] == expected
    # anysmtp: an SMTPReadTimeoutError, still an SMTPServerDisconnected.
    raised = ours.result[0]
    assert isinstance(raised, Raised)
    assert issubclass(raised.type, anysmtp.SMTPReadTimeoutError)
    assert issubclass(raised.type, stdlib_smtplib.SMTPServerDisconnected)
    assert issubclass(raised.type, TimeoutError)
    assert "Timed out" in str(raised.args[0])
    # Everything else is the same: the connection is closed, same bytes sent.
    assert ours.result[1:] == reference.result[1:]
    assert ours.transcript == reference.transcript


READ_TIMEOUT = Documented(
    row="A read timeout raises `SMTPServerDisconnected`", check=_timeout_check
)


@scenario(script(greeting=STALL), documented=READ_TIMEOUT)
def greeting_timeout(smtplib: ModuleType, host: str, port: int) -> object:
    return [construct(smtplib, host, port, timeout=STALL_T)]


# 421 at each step ----------------------------------------------------------------


@scenario(
    script((EHLO_LINE, b"421 4.3.2 shutting down\r\n"), (HELO_LINE, CLOSE)),
)
def ehlo_421_then_helo_disconnect(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG),
            s.sock is None,
            s.ehlo_resp,
            s.helo_resp,
            s.does_esmtp,
        ]


@scenario(script((EHLO_LINE, b"421 4.3.2 shutting down\r\n")))
def ehlo_421_explicit(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.ehlo), s.sock is None, s.ehlo_resp, attempt(s.noop)]


@scenario(script(EHLO_OK, (MAIL_LINE, b"421 4.3.2 shutting down\r\n"), then=drain))
def mail_421(smtplib: ModuleType, host: str, port: int) -> object:
    return sendmail_and_state(smtplib, host, port)


@scenario(script(EHLO_OK, MAIL_OK, (RCPT_BOB_LINE, b"421 4.3.2 bye\r\n"), then=drain))
def rcpt_421_first(smtplib: ModuleType, host: str, port: int) -> object:
    return sendmail_and_state(smtplib, host, port)


@scenario(
    script(
        EHLO_OK,
        MAIL_OK,
        (RCPT_BOB_LINE, b"550 5.1.1 no such user\r\n"),
        (b"rcpt TO:<carol@", b"250 ok\r\n"),
        (b"rcpt TO:<dave@", b"421 4.3.2 shutting down\r\n"),
        then=drain,
    )
)
def rcpt_421_mid_list(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [BOB, CAROL, DAVE], MSG), s.sock is None]


@scenario(script(EHLO_OK, MAIL_OK, RCPT_OK, (DATA_LINE, b"421 4.3.2 bye\r\n")))
def data_command_421(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        # smtplib's data() raises before sendmail's 421 handling: still open.
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG),
            s.sock is None,
            attempt(s.noop),
        ]


@scenario(script(EHLO_OK, MAIL_OK, RCPT_OK, DATA_GO, (BODY, b"421 4.3.2 bye\r\n")))
def final_reply_421(smtplib: ModuleType, host: str, port: int) -> object:
    return sendmail_and_state(smtplib, host, port)


@scenario(script(EHLO_OK, (QUIT_LINE, b"421 4.3.2 not now\r\n"), then=drain))
def quit_421(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.ehlo),
            attempt(s.quit),
            s.sock is None,
            s.ehlo_resp,
            s.esmtp_features,
        ]


@scenario(script((b"noop", b"421 4.3.2 going down\r\n"), (b"noop", b"250 ok\r\n")))
def noop_421_leaves_connection_open(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), s.sock is None, attempt(s.noop)]


# Disconnect at each step, then connect() again -------------------------------------

#: What the second connection of the reconnect scenarios receives from smtplib,
#: which keeps the first session's EHLO state.
SECOND_SESSION: Final = MAIL_LINE + RCPT_BOB_LINE + DATA_LINE + MSG_WIRE + QUIT_LINE


def reconnect_program(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        first = attempt(s.sendmail, ALICE, [BOB], MSG)
        state = [s.sock is None, s.ehlo_resp, s.does_esmtp]
        greeting = attempt(s.connect, host, port)
        second = attempt(s.sendmail, ALICE, [BOB], MSG)
        return [first, state, greeting, second, attempt(s.quit), s.sock is None]


def _ehlo_again_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib skips EHLO on the new connection; anysmtp says it again.
    assert ours.result == reference.result
    assert reference.transcript.endswith(SECOND_SESSION)
    first = reference.transcript[: -len(SECOND_SESSION)]
    assert ours.transcript == first + EHLO_LINE + SECOND_SESSION
    assert ours.server_errors == reference.server_errors == []


EHLO_AGAIN = Documented(
    row="`connect()` keeps the previous session's EHLO state", check=_ehlo_again_check
)


@scenario(script((EHLO_LINE, CLOSE)), script())
def disconnect_at_ehlo(smtplib: ModuleType, host: str, port: int) -> object:
    # No EHLO state yet: both clients say EHLO on the new connection.
    return reconnect_program(smtplib, host, port)


@scenario(script(EHLO_OK, (MAIL_LINE, CLOSE)), script(), documented=EHLO_AGAIN)
def disconnect_at_mail(smtplib: ModuleType, host: str, port: int) -> object:
    return reconnect_program(smtplib, host, port)


@scenario(
    script(EHLO_OK, MAIL_OK, (RCPT_BOB_LINE, CLOSE)), script(), documented=EHLO_AGAIN
)
def disconnect_at_rcpt(smtplib: ModuleType, host: str, port: int) -> object:
    return reconnect_program(smtplib, host, port)


@scenario(
    script(EHLO_OK, MAIL_OK, RCPT_OK, (DATA_LINE, CLOSE)),
    script(),
    documented=EHLO_AGAIN,
)
def disconnect_at_data(smtplib: ModuleType, host: str, port: int) -> object:
    return reconnect_program(smtplib, host, port)


@scenario(
    script(EHLO_OK, MAIL_OK, RCPT_OK, DATA_GO, (BODY, CLOSE)),
    script(),
    documented=EHLO_AGAIN,
)
def disconnect_before_final_reply(smtplib: ModuleType, host: str, port: int) -> object:
    return reconnect_program(smtplib, host, port)


@scenario(script(EHLO_OK, (QUIT_LINE, CLOSE)), script(), documented=EHLO_AGAIN)
def disconnect_at_quit(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        first = [attempt(s.ehlo), attempt(s.quit)]
        state = [s.sock is None, s.ehlo_resp, s.does_esmtp]
        greeting = attempt(s.connect, host, port)
        second = attempt(s.sendmail, ALICE, [BOB], MSG)
        return [first, state, greeting, second, attempt(s.quit), s.sock is None]


#: Larger than what the loopback socket buffers hold, so the client is still
#: sending when the server goes away.
BIG_BODY: Final = (
    b"Subject: big\r\n\r\n"
    + b"x" * 998
    + b"\r\n" * 1
    + ((b"y" * 998 + b"\r\n") * 24_000)
)


def _until_data(transcript: bytes) -> bytes:
    # How much of the body the server read before closing depends on the
    # kernel; what it did read must be the start of the body.
    head, data, body = transcript.partition(DATA_LINE)
    assert BIG_BODY.startswith(body)
    return head + data


@scenario(
    script(EHLO_OK, MAIL_OK, RCPT_OK, DATA_GO, (b"subject: big", CLOSE)),
    transcript_view=_until_data,
)
def disconnect_mid_body(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], BIG_BODY), s.sock is None]


@scenario(script(EHLO_OK, (MAIL_LINE, STALL)), documented=READ_TIMEOUT)
def read_timeout_at_mail(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port, timeout=STALL_T)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], MSG), s.sock is None]


# EHLO and HELO -----------------------------------------------------------------------


@scenario(
    script(
        (EHLO_LINE, b"502 5.5.1 EHLO not implemented\r\n"),
        (HELO_LINE, b"250 scripted\r\n"),
        *SEND_OK,
    )
)
def ehlo_refused_helo_fallback(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG),
            s.does_esmtp,
            s.ehlo_resp,
            s.helo_resp,
            s.esmtp_features,
            attempt(s.quit),
        ]


@scenario(
    script(
        (EHLO_LINE, b"502 5.5.1 EHLO not implemented\r\n"),
        (HELO_LINE, b"501 5.5.4 go away\r\n"),
    )
)
def helo_refused_too(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG),
            s.sock is None,
            s.helo_resp,
            attempt(s.quit),
        ]


@scenario(script((EHLO_LINE, b"\r\n"), then=drain))
def ehlo_answered_by_empty_line(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.ehlo), s.sock is None, s.ehlo_resp]


EHLO_FEATURES: Final = ehlo_reply(
    b"SIZE 35882577",
    b"8BITMIME",
    b"AUTH=LOGIN PLAIN",
    b"AUTH CRAM-MD5 PLAIN",
    b"ENHANCEDSTATUSCODES",
    b"X-Foo  bar   baz ",
    b" leading-space",
    b"-dash",
    b"DSN",
    b"dsn again",
)


@scenario(script((b"ehlo custom.name\r\n", EHLO_FEATURES)))
def ehlo_features_parsed(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.ehlo, "custom.name"),
            s.esmtp_features,
            s.does_esmtp,
            [s.has_extn(name) for name in ("size", "AUTH", "x-foo", "nope", "dsn")],
            attempt(s.quit),
        ]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"SIZE 1000", b"PIPELINING")),
        (EHLO_LINE, b"500 5.5.2 what?\r\n"),
    )
)
def ehlo_twice_second_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        first = [attempt(s.ehlo), s.esmtp_features]
        second = [attempt(s.ehlo), s.esmtp_features, s.does_esmtp, s.ehlo_resp]
        return [first, second, attempt(s.quit)]


@scenario(script((HELO_LINE, b"250 scripted\r\n"), *SEND_OK))
def helo_first_drops_options(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.helo),
            attempt(s.sendmail, ALICE, [BOB], MSG, ["BODY=8BITMIME"], ["NOTIFY=NEVER"]),
            s.does_esmtp,
            attempt(s.quit),
        ]


@scenario(script((b"ehlo ", ehlo_reply(b"8BITMIME"))))
def ehlo_default_name(smtplib: ModuleType, host: str, port: int) -> object:
    # No local_hostname: both send the local FQDN (anysmtp computes it later).
    with closing(smtplib.SMTP(host, port, timeout=T)) as s:
        return [attempt(s.ehlo), attempt(s.quit)]


# ESMTP options -----------------------------------------------------------------------


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"SIZE 100000", b"8BITMIME")),
        (b"mail FROM:<alice@example.com> size=27\r\n", b"250 ok\r\n"),
        RCPT_OK,
        DATA_GO,
        BODY_OK,
    )
)
def size_option(smtplib: ModuleType, host: str, port: int) -> object:
    return sendmail_and_state(smtplib, host, port)


@scenario(script((EHLO_LINE, ehlo_reply(b"SIZE")), *SEND_OK))
def size_without_limit(smtplib: ModuleType, host: str, port: int) -> object:
    return sendmail_and_state(smtplib, host, port)


def _too_large_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib uploads nothing but asks: MAIL ... size=27, refused, RSET.
    assert reference.result == [
        Raised(
            stdlib_smtplib.SMTPSenderRefused,
            (552, b"5.3.4 message too big", ALICE),
        ),
        False,
    ]
    assert reference.transcript == (
        EHLO_LINE + b"mail FROM:<alice@example.com> size=27\r\n" + RSET_LINE
    )
    # anysmtp: SMTPMessageTooLarge (an SMTPSenderRefused, code 552), nothing sent.
    assert isinstance(ours.result, list)
    raised = ours.result[0]
    assert isinstance(raised, Raised)
    assert raised.type is anysmtp.SMTPMessageTooLarge
    assert issubclass(raised.type, stdlib_smtplib.SMTPSenderRefused)
    assert raised.args == (
        552,
        b"5.3.4 Message size 27 exceeds the server's limit of 10 bytes "
        b"(checked before sending)",
        ALICE,
    )
    assert ours.result[1:] == [False]
    assert ours.transcript == EHLO_LINE


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"SIZE 10")),
        (b"mail", b"552 5.3.4 message too big\r\n"),
        (RSET_LINE, b"250 ok\r\n"),
    ),
    documented=Documented(
        row="A message over the server's SIZE limit is uploaded",
        check=_too_large_check,
    ),
)
def size_exceeded(smtplib: ModuleType, host: str, port: int) -> object:
    return sendmail_and_state(smtplib, host, port)


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"8BITMIME", b"DSN")),
        (b"mail FROM:<alice@example.com> BODY=8BITMIME RET=HDRS\r\n", b"250 ok\r\n"),
        (
            b"rcpt TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE "
            b"ORCPT=rfc822;bob@example.com\r\n",
            b"250 ok\r\n",
        ),
        DATA_GO,
        BODY_OK,
    )
)
def mail_and_rcpt_options(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(
                s.sendmail,
                ALICE,
                [BOB],
                MSG,
                ["BODY=8BITMIME", "RET=HDRS"],
                ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.com"],
            ),
            attempt(s.quit),
        ]


JOSE: Final = "josé@exämple.com"


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"SMTPUTF8", b"8BITMIME")),
        ("mail FROM:<josé@exämple.com> SMTPUTF8\r\n".encode(), b"250 ok\r\n"),
        ("rcpt TO:<josé@exämple.com>\r\n".encode(), b"250 ok\r\n"),
        DATA_GO,
        BODY_OK,
    )
)
def smtputf8_supported(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, JOSE, [JOSE], MSG, ["SMTPUTF8"]),
            s.command_encoding,
            attempt(s.rset),
            s.command_encoding,
            attempt(s.quit),
        ]


@scenario(script(EHLO_OK))
def smtputf8_not_supported(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, JOSE, [BOB], MSG, ["SMTPUTF8"]),
            s.sock is None,
            s.command_encoding,
            attempt(s.quit),
        ]


@scenario(script(EHLO_OK))
def non_ascii_address_without_smtputf8(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, JOSE, [BOB], MSG),
            s.sock is None,
            attempt(s.noop),
            attempt(s.quit),
        ]


def international_message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "José <josé@exämple.com>"
    msg["To"] = "Bob <bob@example.com>"
    msg["Subject"] = "Olá"
    msg.set_content("Olá, mundo.\n")
    return msg


@scenario(script(EHLO_OK))
def send_message_international_without_smtputf8(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.send_message, international_message()), attempt(s.quit)]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"SIZE 100000", b"SMTPUTF8", b"8BITMIME")),
        (b"mail", b"250 ok\r\n"),
        RCPT_OK,
        DATA_GO,
        BODY_OK,
    )
)
def send_message_international_with_smtputf8(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.send_message, international_message()), attempt(s.quit)]


# sendmail's refusals ---------------------------------------------------------------


@scenario(
    script(
        EHLO_OK,
        MAIL_OK,
        (RCPT_BOB_LINE, b"550 5.1.1 no such user\r\n"),
        (b"rcpt TO:<carol@", b"251 2.1.5 will forward\r\n"),
        (b"rcpt TO:<dave@", b"250 ok\r\n"),
        DATA_GO,
        BODY_OK,
    )
)
def mixed_refusals(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB, CAROL, DAVE], MSG),
            s.sock is None,
            attempt(s.quit),
        ]


@scenario(
    script(
        EHLO_OK,
        MAIL_OK,
        (RCPT_BOB_LINE, b"550 5.1.1 no such user\r\n"),
        (b"rcpt", b"452-4.2.2 mailbox full\r\n452 4.2.2 try later\r\n"),
        (RSET_LINE, b"250 ok\r\n"),
    )
)
def all_recipients_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB, CAROL], MSG),
            s.sock is None,
            attempt(s.quit),
        ]


@scenario(
    script(
        EHLO_OK,
        MAIL_OK,
        (RCPT_BOB_LINE, b"550 5.1.1 no such user\r\n"),
        (RSET_LINE, CLOSE),
    )
)
def all_refused_and_rset_disconnects(
    smtplib: ModuleType, host: str, port: int
) -> object:
    return sendmail_and_state(smtplib, host, port)


@scenario(
    script(
        EHLO_OK, (MAIL_LINE, b"553 5.7.1 sender refused\r\n"), (RSET_LINE, b"250\r\n")
    )
)
def sender_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG),
            s.sock is None,
            attempt(s.quit),
        ]


@scenario(
    script(EHLO_OK, MAIL_OK, RCPT_OK, (DATA_LINE, b"554 5.5.1 no valid recipients\r\n"))
)
def data_command_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        # smtplib's data() raises SMTPDataError itself: no RSET.
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG),
            s.sock is None,
            attempt(s.quit),
        ]


@scenario(
    script(
        EHLO_OK,
        MAIL_OK,
        RCPT_OK,
        DATA_GO,
        (BODY, b"552-5.3.4 message\r\n552 5.3.4 too big\r\n"),
        (RSET_LINE, b"250 ok\r\n"),
    )
)
def final_reply_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG),
            s.sock is None,
            attempt(s.quit),
        ]


def _no_recipients_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib: MAIL, RSET, then SMTPRecipientsRefused({}).
    assert reference.result == [
        Raised(stdlib_smtplib.SMTPRecipientsRefused, ({},)),
        False,
    ]
    assert reference.transcript == EHLO_LINE + MAIL_LINE + RSET_LINE
    # anysmtp: SMTPNoRecipientsError (an SMTPRecipientsRefused and a
    # ValueError) before anything is sent.
    assert ours.result == [Raised(anysmtp.SMTPNoRecipientsError, ({},)), False]
    assert issubclass(
        anysmtp.SMTPNoRecipientsError, stdlib_smtplib.SMTPRecipientsRefused
    )
    assert issubclass(anysmtp.SMTPNoRecipientsError, ValueError)
    assert ours.transcript == EHLO_LINE


@scenario(
    script(EHLO_OK, MAIL_OK, (RSET_LINE, b"250 ok\r\n")),
    documented=Documented(
        row="An empty recipient list sends MAIL, then RSET",
        check=_no_recipients_check,
    ),
)
def empty_recipient_list(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [], MSG), s.sock is None]


@scenario(script(EHLO_OK, *SEND_OK))
def str_recipient_is_one_recipient(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, BOB, MSG), attempt(s.quit)]


@scenario(script(EHLO_OK, *SEND_OK))
def str_message_line_endings(smtplib: ModuleType, host: str, port: int) -> object:
    # A str message: lone LF and CR become CRLF (smtplib's _fix_eols), dots are
    # doubled and a final CRLF is added.
    with closing(client(smtplib, host, port)) as s:
        text = "Subject: x\n\n.starts with a dot\rcr\r\nno final newline"
        return [attempt(s.sendmail, ALICE, [BOB], text), attempt(s.quit)]


@scenario(script(EHLO_OK, *SEND_OK))
def bytes_message_without_final_crlf(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], b"Subject: x\r\n\r\n..\r\n.\r\nend"),
            attempt(s.quit),
        ]


@scenario(script(EHLO_OK, *SEND_OK))
def empty_message(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], b""), attempt(s.quit)]


def _bare_lf_check(reference: Outcome, ours: Outcome) -> None:
    assert ours.result == reference.result
    # smtplib sends the bytes as they are (only leading dots doubled)...
    assert reference.transcript.endswith(
        DATA_LINE + b"Subject: x\n\n..dot\nend\rcr\r\n.\r\n" + QUIT_LINE
    )
    # ...anysmtp turns every lone LF and CR into CRLF first.
    assert ours.transcript == reference.transcript.replace(
        b"Subject: x\n\n..dot\nend\rcr\r\n", b"Subject: x\r\n\r\n..dot\r\nend\r\ncr\r\n"
    )


@scenario(
    script(EHLO_OK, *SEND_OK),
    documented=Documented(
        row="A `bytes` message is sent as it is", check=_bare_lf_check
    ),
)
def bytes_message_bare_line_endings(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], b"Subject: x\n\n.dot\nend\rcr\r\n"),
            attempt(s.quit),
        ]


@scenario(script(EHLO_OK))
def str_message_not_ascii(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], "Subject: olá\n\nçà\n"),
            s.sock is None,
            attempt(s.quit),
        ]


def _data_not_ascii_check(reference: Outcome, ours: Outcome) -> None:
    assert isinstance(reference.result, list)
    assert isinstance(ours.result, list)
    # Both raise the same UnicodeEncodeError...
    assert ours.result[0] == reference.result[0]
    assert isinstance(reference.result[0], Raised)
    assert reference.result[0].type is UnicodeEncodeError
    # ...but smtplib has sent DATA already: the server waits for the message
    # and takes QUIT as message text, so the session is lost.
    assert reference.transcript == EHLO_LINE + MAIL_LINE + RCPT_BOB_LINE + DATA_LINE + (
        QUIT_LINE
    )
    # anysmtp raises before DATA, and QUIT is answered.
    assert ours.transcript == EHLO_LINE + MAIL_LINE + RCPT_BOB_LINE + QUIT_LINE
    assert ours.result[1] == (221, b"bye")


def _data_not_ascii_script(conn: ScriptedConnection) -> None:
    conn.send(b"220 scripted\r\n")
    for step in (EHLO_OK, MAIL_OK, RCPT_OK):
        conn.expect(step[0])
        assert isinstance(step[1], bytes)
        conn.send(step[1])
    line = conn.read_line()
    if line.lower().startswith(b"data"):
        conn.send(b"354 go ahead\r\n")
        drain(conn)  # QUIT is message text now
    elif line.lower().startswith(b"quit"):
        conn.send(b"221 bye\r\n")
        drain(conn)


@scenario(
    _data_not_ascii_script,
    documented=Documented(
        row="`data()` with a non-ASCII `str` sends DATA", check=_data_not_ascii_check
    ),
)
def data_str_not_ascii(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port, timeout=STALL_T)) as s:
        s.ehlo()
        s.mail(ALICE)
        s.rcpt(BOB)
        return [attempt(s.data, "Subject: olá\r\n\r\nçà\r\n"), attempt(s.quit)]


def _pipelining_check(reference: Outcome, ours: Outcome) -> None:
    # The same result...
    assert ours.result == reference.result
    # ...but smtplib stops after the refused MAIL, anysmtp has sent the RCPT and
    # DATA of the batch already (the server refuses them), then RSET.
    ehlo = EHLO_LINE
    assert reference.transcript == ehlo + MAIL_LINE + RSET_LINE + QUIT_LINE
    assert ours.transcript == (
        ehlo + MAIL_LINE + RCPT_BOB_LINE + DATA_LINE + RSET_LINE + QUIT_LINE
    )


def _pipelining_script(conn: ScriptedConnection) -> None:
    conn.send(b"220 scripted\r\n")
    conn.expect(EHLO_LINE)
    conn.send(ehlo_reply(b"PIPELINING", b"8BITMIME"))
    replies = {
        b"mail": b"553 5.7.1 sender refused\r\n",
        b"rcpt": b"503 5.5.1 need MAIL first\r\n",
        b"data": b"503 5.5.1 need RCPT first\r\n",
        b"rset": b"250 ok\r\n",
        b"quit": b"221 bye\r\n",
    }
    while line := conn.read_line():
        conn.send(replies[line[:4].lower()])


@scenario(
    _pipelining_script,
    documented=Documented(row="Commands go one by one", check=_pipelining_check),
)
def pipelining_sender_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], MSG), attempt(s.quit)]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"PIPELINING", b"8BITMIME")),
        MAIL_OK,
        (RCPT_BOB_LINE, b"550 5.1.1 no such user\r\n"),
        (b"rcpt TO:<carol", b"250 ok\r\n"),
        DATA_GO,
        BODY_OK,
    )
)
def pipelining_accepted(smtplib: ModuleType, host: str, port: int) -> object:
    # One write instead of three, the same bytes and results (compatibility.md:
    # "Commands go one by one" only changes what follows a refusal).
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [BOB, CAROL], MSG), attempt(s.quit)]


# Replies ----------------------------------------------------------------------------


def _long_line(length: int) -> bytes:
    """A ``250`` reply line of ``length`` bytes, CRLF included."""
    return b"250 " + b"x" * (length - 6) + b"\r\n"


@scenario(script((b"noop", _long_line(8192))))
def reply_line_of_8192_bytes(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), s.sock is None, attempt(s.quit)]


@scenario(script((b"noop", _long_line(8193)), then=drain))
def reply_line_of_8193_bytes(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), s.sock is None]


@scenario(script((b"noop", b"250-first\r\n" + _long_line(9000)), then=drain))
def reply_second_line_too_long(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), s.sock is None]


@scenario(script((b"noop", b"xyz hello\r\n"), (b"noop", b"2x0 ok\r\n")))
def reply_code_not_numeric(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), attempt(s.noop), s.sock is None, attempt(s.quit)]


@scenario(
    script(
        (b"noop", b"250 ok \t \r\n"),
        (b"noop", b"250-a  \t\r\n250-\t b\r\n250 c \r\n"),
        (b"noop", b"250    \r\n"),
    )
)
def reply_trailing_blanks(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), attempt(s.noop), attempt(s.noop), attempt(s.quit)]


@scenario(
    script(
        (b"noop", b"250-first\r\nXYZ-second\r\n250 third\r\n"),
        (b"noop", b"250 answer to the second noop\r\n"),
    )
)
def reply_garbage_code_mid_reply(smtplib: ModuleType, host: str, port: int) -> object:
    # The garbage line ends the reply; the rest is read as the next reply.
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), attempt(s.noop), attempt(s.noop), attempt(s.quit)]


@scenario(
    script(
        (b"noop", b"250-a\n250 b\n"),
        (b"noop", b"250\r\n"),
        (b"noop", b"250-\r\n251 last code wins\r\n"),
        (b"noop", b"250xok\r\n"),
        (b"noop", b"250 ok\xff\x00 bytes\r\n"),
    )
)
def reply_odd_forms(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [[attempt(s.noop) for _ in range(5)], attempt(s.quit)]


@scenario(script((b"noop", b"250 no line end"), then=None))
def reply_without_crlf_then_close(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), s.sock is None, attempt(s.noop), s.sock is None]


@scenario(script((b"noop", b"250-first\r\n250-second\r\n"), then=None))
def reply_cut_mid_multiline(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), s.sock is None]


# Raw commands -------------------------------------------------------------------------


def echo(conn: ScriptedConnection) -> None:
    """Answer every command with what was received; HELP gets a multi-line reply."""
    while line := conn.read_line():
        text = line.rstrip(b"\r\n")
        if text.lower().startswith(b"help"):
            conn.send(b"214-help for " + text[5:] + b"\r\n214 end of help\r\n")
        elif text.lower() == b"quit":
            conn.send(b"221 bye\r\n")
        else:
            conn.send(b"250 got " + text + b"\r\n")


@scenario(script(then=echo))
def raw_docmd_putcmd_getreply(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        results = [
            attempt(s.docmd, "XFOO", "bar  baz"),
            attempt(s.docmd, "NOOP"),
            attempt(s.docmd, "xbar", ""),
            attempt(s.putcmd, "VRFY", "bob"),
            attempt(s.getreply),
            attempt(s.putcmd, "noop"),
            attempt(s.getreply),
            attempt(s.send, "XRAW line\r\n"),
            attempt(s.getreply),
            attempt(s.send, b"XBYTES\r\n"),
            attempt(s.getreply),
        ]
        return [results, attempt(s.quit)]


@scenario(script(then=echo))
def raw_help_noop_rset(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.help),
            attempt(s.help, "mail"),
            attempt(s.noop),
            attempt(s.rset),
            attempt(s.quit),
        ]


@scenario(script(then=echo))
def raw_verify_vrfy_expn(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.verify, "Bob <bob@example.com>"),
            attempt(s.vrfy, "<carol@example.com>"),
            attempt(s.vrfy, "postmaster"),
            attempt(s.expn, "staff-list"),
            attempt(s.expn, '"Staff" <staff@example.com>'),
            attempt(s.quit),
        ]


@scenario(script(then=echo))
def raw_command_injection_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.putcmd, "NOOP", "a\r\nRSET"),
            attempt(s.docmd, "NOOP\n"),
            attempt(s.noop),
            attempt(s.quit),
        ]


@scenario(script(then=echo))
def raw_transaction(smtplib: ModuleType, host: str, port: int) -> object:
    # With echo, every reply is 250 "got ...": DATA is refused (not 354).
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.ehlo),
            s.does_esmtp,
            attempt(s.mail, "Alice <alice@example.com>", ["BODY=8BITMIME"]),
            attempt(s.mail, "<>"),
            attempt(s.rcpt, BOB, ["NOTIFY=NEVER"]),
            attempt(s.rcpt, "Carol Q. <carol@example.com>"),
            attempt(s.data, MSG),
            s.sock is None,
            attempt(s.quit),
        ]


@scenario(
    script(
        EHLO_OK,
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        DATA_GO,
        (BODY, b"250-queued\r\n250 as 42\r\n"),
        (RSET_LINE, b"250 reset\r\n"),
    )
)
def raw_mail_rcpt_data(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.ehlo_or_helo_if_needed),
            attempt(s.mail, ALICE),
            attempt(s.rcpt, BOB),
            attempt(s.data, MSG),
            attempt(s.rset),
            attempt(s.quit),
        ]


# send_message -------------------------------------------------------------------------


def message(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("Hello.\n.A line with a dot.\n")
    return msg


def accept_everything() -> Script:
    return script(EHLO_OK, then=answer_rest)


@scenario(accept_everything())
def send_message_bcc(smtplib: ModuleType, host: str, port: int) -> object:
    msg = message(
        From="Alice <alice@example.com>",
        To="Bob <bob@example.com>, carol@example.com",
        Cc="Dave <dave@example.com>",
        Bcc="eve@example.com, Frank <frank@example.com>",
        Subject="bcc",
    )
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.send_message, msg),
            "Bcc" in msg,  # the caller's message keeps its Bcc
            attempt(s.quit),
        ]


@scenario(accept_everything())
def send_message_resent_block(smtplib: ModuleType, host: str, port: int) -> object:
    msg = message(
        From="alice@example.com",
        To="bob@example.com",
        Subject="resent",
        Resent_Date="Mon, 1 Jan 2024 00:00:00 +0000",
        Resent_From="Carol <carol@example.com>",
        Resent_To="dave@example.com",
        Resent_Bcc="eve@example.com",
    )
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.send_message, msg), attempt(s.quit)]


@scenario(accept_everything())
def send_message_two_resent_blocks(smtplib: ModuleType, host: str, port: int) -> object:
    msg = message(From="alice@example.com", To="bob@example.com", Subject="x")
    for date, to in (("Mon, 1 Jan 2024", BOB), ("Tue, 2 Jan 2024", CAROL)):
        msg["Resent-Date"] = date
        msg["Resent-To"] = to
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.send_message, msg), s.sock is None, attempt(s.quit)]


@scenario(accept_everything())
def send_message_sender_header(smtplib: ModuleType, host: str, port: int) -> object:
    msg = message(
        From='"Alice A." <alice@example.com>, Bob <bob@example.com>',
        Sender="Secretary <secretary@example.com>",
        To='"Dave, D." <dave@example.com>',
        Subject="sender",
    )
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.send_message, msg), attempt(s.quit)]


@scenario(accept_everything())
def send_message_explicit_envelope(smtplib: ModuleType, host: str, port: int) -> object:
    msg = Message()
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg["Bcc"] = "secret@example.com"
    msg["Subject"] = "compat32 message"
    msg.set_payload("Body line\n.dot line\n")
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.send_message, msg, "Envelope <env@example.com>", CAROL),
            attempt(s.send_message, msg, None, [DAVE, BOB], ["BODY=8BITMIME"]),
            attempt(s.quit),
        ]


# quit() and with ----------------------------------------------------------------------


@scenario(
    script((EHLO_LINE, ehlo_reply(b"SIZE 1000", b"8BITMIME")), QUIT_OK),
    script((EHLO_LINE, ehlo_reply(b"DSN")), QUIT_OK),
)
def quit_resets_session(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        first = [attempt(s.ehlo), attempt(s.quit)]
        state = [
            s.sock is None,
            s.ehlo_resp,
            s.helo_resp,
            s.esmtp_features,
            s.does_esmtp,
        ]
        again = [attempt(s.connect, host, port), attempt(s.ehlo), s.esmtp_features]
        return [first, state, again, attempt(s.quit), s.sock is None]


@scenario(script((b"noop", b"250 ok\r\n"), QUIT_OK))
def with_block_quits(smtplib: ModuleType, host: str, port: int) -> object:
    with client(smtplib, host, port) as s:
        result = attempt(s.noop)
    return [result, s.sock is None]


@scenario(script((QUIT_LINE, b"500 5.5.1 no quitting\r\n")))
def with_block_quit_refused(smtplib: ModuleType, host: str, port: int) -> object:
    s = client(smtplib, host, port)
    try:
        with s:
            pass
    except Exception as exc:
        return [normalise(exc), s.sock is None]
    finally:
        s.close()
    return ["no exception", s.sock is None]


@scenario(script((QUIT_LINE, CLOSE)))
def with_block_server_gone_at_quit(smtplib: ModuleType, host: str, port: int) -> object:
    with client(smtplib, host, port) as s:
        pass
    return [s.sock is None]


@scenario(script(EHLO_OK, (MAIL_LINE, b"421 4.3.2 bye\r\n"), then=drain))
def with_block_after_421(smtplib: ModuleType, host: str, port: int) -> object:
    # The 421 closed the connection: __exit__'s QUIT fails quietly.
    with client(smtplib, host, port) as s:
        result = attempt(s.sendmail, ALICE, [BOB], MSG)
    return [result, s.sock is None]


@scenario(script(QUIT_OK))
def with_block_body_raises(smtplib: ModuleType, host: str, port: int) -> object:
    try:
        with client(smtplib, host, port) as s:
            raise KeyError("from the body")
    except KeyError as exc:
        return [normalise(exc), s.sock is None]


# AUTH ---------------------------------------------------------------------------------

USER: Final = "alice"
PASSWORD: Final = "s3cret"


def b64(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw)


PLAIN_RESPONSE: Final = b64(f"\0{USER}\0{PASSWORD}")
CRAM_CHALLENGE: Final = b"<1896.697170952@postoffice.example.net>"
CRAM_RESPONSE: Final = b64(
    USER + " " + hmac.new(PASSWORD.encode(), CRAM_CHALLENGE, hashlib.md5).hexdigest()
)


def login_program(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.login, USER, PASSWORD), s.sock is None, attempt(s.quit)]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH PLAIN")),
        (b"AUTH PLAIN " + PLAIN_RESPONSE + b"\r\n", b"235 2.7.0 welcome\r\n"),
    )
)
def auth_plain(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH LOGIN")),
        (b"AUTH LOGIN " + b64(USER) + b"\r\n", b"334 " + b64("Password:") + b"\r\n"),
        (b64(PASSWORD) + b"\r\n", b"235 2.7.0 welcome\r\n"),
    )
)
def auth_login_flow(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH LOGIN PLAIN CRAM-MD5")),
        (b"AUTH CRAM-MD5\r\n", b"334 " + b64(CRAM_CHALLENGE) + b"\r\n"),
        (CRAM_RESPONSE + b"\r\n", b"235 2.7.0 welcome\r\n"),
    )
)
def auth_cram_md5(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


def _endless_challenges(conn: ScriptedConnection) -> None:
    while conn.read_line():
        conn.send(b"334 " + b64("more?") + b"\r\n")


@scenario(
    script((EHLO_LINE, ehlo_reply(b"AUTH PLAIN LOGIN")), then=_endless_challenges)
)
def auth_endless_challenges(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.login, USER, PASSWORD), s.sock is None]


@scenario(script(EHLO_OK))
def auth_not_advertised(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


@scenario(script((EHLO_LINE, ehlo_reply(b"AUTH GSSAPI NTLM"))))
def auth_no_suitable_mechanism(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH PLAIN LOGIN")),
        (b"AUTH PLAIN ", b"454 4.7.0 temporary failure\r\n"),
        (b"AUTH LOGIN ", b"334 " + b64("Password:") + b"\r\n"),
        (b64(PASSWORD) + b"\r\n", b"235 2.7.0 welcome\r\n"),
    )
)
def auth_first_mechanism_fails(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH PLAIN LOGIN")),
        (b"AUTH PLAIN ", b"454 4.7.0 temporary failure\r\n"),
        (b"AUTH LOGIN ", b"334 " + b64("Password:") + b"\r\n"),
        (b64(PASSWORD) + b"\r\n", b"454 4.7.0 still failing\r\n"),
    )
)
def auth_every_mechanism_fails(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


def _auth_535_check(reference: Outcome, ours: Outcome) -> None:
    refused = Raised(
        stdlib_smtplib.SMTPAuthenticationError, (535, b"5.7.8 bad credentials")
    )
    # smtplib tries LOGIN after PLAIN's 535 and reports LOGIN's failure...
    assert reference.result == [
        Raised(stdlib_smtplib.SMTPAuthenticationError, (535, b"5.7.8 bad again")),
        False,
        (221, b"bye"),
    ]
    assert reference.transcript == (
        EHLO_LINE
        + b"AUTH PLAIN "
        + PLAIN_RESPONSE
        + b"\r\nAUTH LOGIN "
        + b64(USER)
        + b"\r\n"
        + b64(PASSWORD)
        + b"\r\n"
        + QUIT_LINE
    )
    # ...anysmtp stops at the first 535.
    assert ours.result == [refused, False, (221, b"bye")]
    assert ours.transcript == (
        EHLO_LINE + b"AUTH PLAIN " + PLAIN_RESPONSE + b"\r\n" + QUIT_LINE
    )


def _auth_535_script(conn: ScriptedConnection) -> None:
    conn.send(b"220 scripted\r\n")
    conn.expect(EHLO_LINE)
    conn.send(ehlo_reply(b"AUTH PLAIN LOGIN"))
    conn.expect(b"AUTH PLAIN ")
    conn.send(b"535 5.7.8 bad credentials\r\n")
    line = conn.read_line()
    if line.startswith(b"AUTH LOGIN"):
        conn.send(b"334 " + b64("Password:") + b"\r\n")
        conn.read_line()
        conn.send(b"535 5.7.8 bad again\r\n")
        line = conn.read_line()
    assert line == QUIT_LINE
    conn.send(b"221 bye\r\n")
    drain(conn)


@scenario(
    _auth_535_script,
    documented=Documented(
        row="`login()` tries the next mechanism after any failure",
        check=_auth_535_check,
    ),
)
def auth_535_stops(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH PLAIN")),
        (b"AUTH PLAIN\r\n", b"334 \r\n"),
        (PLAIN_RESPONSE + b"\r\n", b"235 ok\r\n"),
        (b"AUTH PLAIN\r\n", b"503 5.5.1 already authenticated\r\n"),
    )
)
def auth_without_initial_response(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.login, USER, PASSWORD, initial_response_ok=False),
            attempt(s.login, USER, PASSWORD, initial_response_ok=False),
            attempt(s.quit),
        ]


@scenario(
    script(
        EHLO_OK,
        (b"AUTH X-CUSTOM " + b64("first") + b"\r\n", b"334 " + b64("why?") + b"\r\n"),
        (b64("because why?") + b"\r\n", b"334 " + b64("really?") + b"\r\n"),
        (b64("because really?") + b"\r\n", b"535 5.7.8 no\r\n"),
    )
)
def auth_custom_authobject(smtplib: ModuleType, host: str, port: int) -> object:
    def authobject(challenge: bytes | None = None) -> str:
        if challenge is None:
            return "first"
        return "because " + challenge.decode()

    with closing(client(smtplib, host, port)) as s:
        s.ehlo()
        return [attempt(s.auth, "x-custom", authobject), attempt(s.quit)]


# Debug output -------------------------------------------------------------------------


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"SIZE 100000", b"8BITMIME")),
        (b"mail", b"250 ok\r\n"),
        (RCPT_BOB_LINE, b"550 5.1.1 no such user\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        DATA_GO,
        BODY_OK,
    ),
    capture_stderr=True,
)
def debug_sendmail(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(1)
        return [attempt(s.sendmail, ALICE, [BOB, CAROL], MSG), attempt(s.quit)]


@scenario(
    script(
        greeting=b"220-hello\r\n220 there\r\n",
        then=echo,
    ),
    capture_stderr=True,
)
def debug_connect_and_commands(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as s:
        s.set_debuglevel(1)
        return [
            attempt(s.connect, host, port),
            attempt(s.help),
            attempt(s.verify, BOB),
            attempt(s.docmd, "XFOO", "bar"),
            attempt(s.quit),
        ]


@scenario(
    script(
        EHLO_OK,
        MAIL_OK,
        RCPT_OK,
        (DATA_LINE, b"554 5.5.1 no\r\n"),
        (b"noop", b"250-a\r\nxyz-b\r\n"),
    ),
    capture_stderr=True,
)
def debug_refusals(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(1)
        return [attempt(s.sendmail, ALICE, [BOB], MSG), attempt(s.noop)]


# Connection state ---------------------------------------------------------------------


def _sock_closed_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib: the reply file keeps the descriptor open, NOOP still works.
    assert reference.result == [(250, b"ok"), False, (221, b"bye")]
    assert reference.transcript == b"noop\r\nquit\r\n"
    # anysmtp: the connection is closed, nothing more is sent.
    disconnected = Raised(
        stdlib_smtplib.SMTPServerDisconnected, ("please run connect() first",)
    )
    assert isinstance(ours.result, list)
    assert ours.result[1:] == [True, disconnected]
    first = ours.result[0]
    assert isinstance(first, Raised)
    assert first.type is stdlib_smtplib.SMTPServerDisconnected
    assert ours.transcript == b""


@scenario(
    script(greeting=b"220 scripted\r\n"),
    documented=Documented(
        row="After `sock.close()` by the caller, commands still work",
        check=_sock_closed_check,
    ),
)
def sock_closed_by_user(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.sock.close()
        return [attempt(s.noop), s.sock is None, attempt(s.quit)]


@scenario()
def commands_before_connect(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as s:
        return [
            s.sock is None,
            attempt(s.noop),
            attempt(s.ehlo),
            attempt(s.helo),
            attempt(s.sendmail, ALICE, [BOB], MSG),
            attempt(s.send, "NOOP\r\n"),
            attempt(s.quit),
            attempt(s.close),
            attempt(s.close),
            s.has_extn("size"),
            s.sock is None,
        ]


def _getreply_check(reference: Outcome, ours: Outcome) -> None:
    assert reference.result == [
        Raised(AttributeError, ("'NoneType' object has no attribute 'makefile'",))
    ]
    assert ours.result == [
        Raised(stdlib_smtplib.SMTPServerDisconnected, ("please run connect() first",))
    ]


@scenario(
    documented=Documented(
        row="`getreply()` before `connect()` fails with `AttributeError`",
        check=_getreply_check,
    )
)
def getreply_before_connect(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as s:
        return [attempt(s.getreply)]


@scenario(script(QUIT_OK))
def connect_host_port_string(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as s:
        return [attempt(s.connect, f"{host}:{port}"), attempt(s.quit), s.sock is None]


# LMTP ---------------------------------------------------------------------------------


@scenario(
    script(
        (b"lhlo client.example\r\n", ehlo_reply(b"8BITMIME")),
        *SEND_OK,
    )
)
def lmtp_one_recipient(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(smtplib.LMTP(host, port, local_hostname=LOCAL, timeout=T)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], MSG), attempt(s.quit)]


def _lmtp_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib reads one reply after the data: CAROL's failure is lost, and the
    # unread reply is taken as the answer to QUIT.
    assert reference.result == [{}, (452, b"4.2.2 carol's mailbox is full")]
    # anysmtp reads one reply per recipient and reports CAROL's failure.
    assert ours.result == [
        {CAROL: (452, b"4.2.2 carol's mailbox is full")},
        (221, b"bye"),
    ]
    assert ours.transcript == reference.transcript


@scenario(
    script(
        (b"lhlo client.example\r\n", ehlo_reply(b"8BITMIME")),
        MAIL_OK,
        RCPT_OK,
        RCPT_OK,
        DATA_GO,
        (BODY, b"250 2.0.0 bob ok\r\n452 4.2.2 carol's mailbox is full\r\n"),
    ),
    documented=Documented(row="`LMTP` reads one reply after DATA", check=_lmtp_check),
)
def lmtp_one_reply_per_recipient(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(smtplib.LMTP(host, port, local_hostname=LOCAL, timeout=T)) as s:
        return [attempt(s.sendmail, ALICE, [BOB, CAROL], MSG), attempt(s.quit)]


# aiosmtpd -----------------------------------------------------------------------------


def _aiosmtpd_refusing() -> AiosmtpdServer:
    handler = RecordingHandler(refused_recipients={CAROL})
    return AiosmtpdServer(handler)


@scenario(aiosmtpd=_aiosmtpd_refusing)
def aiosmtpd_sendmail(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        ehlo = attempt(s.ehlo)
        return [
            ehlo,
            s.esmtp_features,
            attempt(s.sendmail, ALICE, [BOB, CAROL], MSG, ["BODY=8BITMIME"]),
            attempt(s.sendmail, ALICE, [CAROL], MSG),
            attempt(s.vrfy, BOB),
            attempt(s.quit),
        ]


def _aiosmtpd_utf8() -> AiosmtpdServer:
    return AiosmtpdServer(enable_SMTPUTF8=True)


@scenario(aiosmtpd=_aiosmtpd_utf8)
def aiosmtpd_send_message_smtputf8(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.send_message, international_message()),
            attempt(s.send_message, message(From=ALICE, To=BOB, Bcc=CAROL)),
            attempt(s.quit),
        ]


# More edges ---------------------------------------------------------------------------


@scenario(
    script(QUIT_OK),
)
def port_given_as_str(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(smtplib.SMTP(host, str(port), local_hostname=LOCAL, timeout=T)) as s:
        return [attempt(s.quit), s.sock is None]


@scenario(script(QUIT_OK))
def source_address_given(smtplib: ModuleType, host: str, port: int) -> object:
    s = smtplib.SMTP(
        host, port, local_hostname=LOCAL, timeout=T, source_address=(host, 0)
    )
    with closing(s):
        return [s.source_address, attempt(s.quit)]


def _reset_connection(conn: ScriptedConnection) -> None:
    """Close with an RST (SO_LINGER 0) instead of a FIN."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _reset_at_mail(conn: ScriptedConnection) -> None:
    conn.send(GREETING)
    conn.expect(EHLO_LINE)
    conn.send(ehlo_reply(b"8BITMIME"))
    conn.expect(MAIL_LINE)
    _reset_connection(conn)


@scenario(_reset_at_mail)
def connection_reset_at_mail(smtplib: ModuleType, host: str, port: int) -> object:
    return sendmail_and_state(smtplib, host, port)


def _split_replies(conn: ScriptedConnection) -> None:
    conn.send(b"22")
    time.sleep(0.02)
    conn.send(b"0-split\r")
    time.sleep(0.02)
    conn.send(b"\n220 greeting\r\n")
    conn.expect(b"noop")
    for piece in (b"250-a", b"\r\n250-", b"b\r\n2", b"50 c\r\n"):
        conn.send(piece)
        time.sleep(0.02)
    answer_rest(conn)


@scenario(_split_replies)
def replies_split_across_segments(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as s:
        return [attempt(s.connect, host, port), attempt(s.noop), attempt(s.quit)]


@scenario(
    script(
        (b"noop", b" 25 leading space\r\n"),
        (b"noop", b"+25 plus\r\n"),
        (b"noop", b"2_5 underscore\r\n"),
        (b"noop", b"-25 minus\r\n"),
        (b"noop", b"25\r\n"),
        (b"noop", b"\r\n"),
        (b"noop", b"2500 four digits\r\n"),
    )
)
def reply_codes_python_int_quirks(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [[attempt(s.noop) for _ in range(7)], attempt(s.quit)]


@scenario(script(greeting=b"220 hi\r\n250 unsolicited\r\n"))
def unsolicited_reply_desyncs(smtplib: ModuleType, host: str, port: int) -> object:
    # Every reply is read one command late, in both clients.
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), attempt(s.ehlo), attempt(s.noop), attempt(s.quit)]


ADDRESSES: Final = (
    "",
    "<>",
    "a@b",
    "A <a@b>",
    '"a b"@example.com',
    '"Doe, John" <john@example.com>',
    "a@b.",
    "a.@b.c",
    ".a@b.c",
    "a..b@c.d",
    "a@-b.c",
    "a+tag@b.c",
    "a@[127.0.0.1]",
    "a@b@c",
    " <a@b.c> ",
    "<a@b.c> trailing",
    "a@b.c (comment)",
    "=?utf-8?q?J=C3=B6?= <j@b.c>",
    "a@b.c, d@e.f",
    "undisclosed-recipients:;",
    "user@localhost",
    "a@b.c ",
    "a_b@b_c.d",
    "no-at-sign",
    "@route.example:a@b.c",
    "a(b)c@d.e",
    "'quoted'@e.f",
    "a\\@b@c.d",
    '"unterminated@b.c',
    "José <jose@b.c>",
)


@scenario(script(then=echo))
def addresses_quoted_like_smtplib(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            [
                attempt(s.mail, each),
                attempt(s.rcpt, each),
                attempt(s.verify, each),
                attempt(s.expn, each),
            ]
            for each in ADDRESSES
        ]


#: Paths smtplib sends as they are: they smuggle text into MAIL and RCPT, or are
#: longer than RFC 5321 allows.
SMUGGLED_PATHS: Final = (
    "<<a@b.c>>",
    "<> SIZE=1",
    "<>x",
    " ",
    "alice@example.com RET=HDRS ENVID=x@",
    "a" * 300 + "@b.c",
)


def _smuggled_path_check(reference: Outcome, ours: Outcome) -> None:
    assert isinstance(reference.result, list)
    assert isinstance(ours.result, list)
    for address, smtplib_results, anysmtp_results in zip(
        SMUGGLED_PATHS, reference.result, ours.result, strict=True
    ):
        # smtplib sends the path as it is...
        path = address.encode() if address.startswith("<") else f"<{address}>".encode()
        assert smtplib_results == [
            (250, b"got mail FROM:" + path),
            (250, b"got rcpt TO:" + path),
        ], smtplib_results
        # ...anysmtp refuses it before sending anything.
        assert all(
            isinstance(each, Raised) and each.type is ValueError
            for each in anysmtp_results
        ), anysmtp_results
    assert b"mail" in reference.transcript
    assert b"mail" not in ours.transcript


SMUGGLED_PATH = Documented(
    row="`mail()` and `rcpt()` send an address that `parseaddr` cannot parse as it is",
    check=_smuggled_path_check,
)


@scenario(script(then=echo), documented=SMUGGLED_PATH)
def addresses_smuggling_text_refused(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            [attempt(s.mail, each), attempt(s.rcpt, each)] for each in SMUGGLED_PATHS
        ]


@scenario(script(EHLO_OK, then=echo))
def sendmail_address_forms(smtplib: ModuleType, host: str, port: int) -> object:
    # echo answers DATA with 250: refused as SMTPDataError, after the envelope.
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(
                s.sendmail, "", ("Bob <bob@example.com>", "<carol@example.com>"), MSG
            ),
            attempt(s.sendmail, "Alice <alice@example.com>", "dave", MSG),
            attempt(s.quit),
        ]


@scenario(script(EHLO_OK, then=echo))
def mail_options_given_as_str(smtplib: ModuleType, host: str, port: int) -> object:
    # A common mistake: a str where a list of options is expected.
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG, "BODY=8BITMIME"),
            attempt(s.mail, ALICE, "SIZE=10"),
            attempt(s.rcpt, BOB, "NOTIFY=NEVER"),
            attempt(s.quit),
        ]


@scenario(script(EHLO_OK, then=echo))
def docmd_non_ascii_argument(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.docmd, "XFOO", "ça"),
            attempt(s.mail, "josé@example.com"),
            s.sock is None,
            attempt(s.noop),
            attempt(s.quit),
        ]


def _control_check(reference: Outcome, ours: Outcome) -> None:
    assert isinstance(reference.result, list)
    assert isinstance(ours.result, list)
    # smtplib sends NUL, ESC and DEL as they are...
    assert reference.result[0] == (250, b"got XFOO a\x00b")
    assert reference.transcript.startswith(
        b"XFOO a\x00b\r\nXFOO \x1b[0m\r\nXFOO \x7f\r\n"
    )
    # ...anysmtp refuses them before sending.
    for each in ours.result[:3]:
        assert isinstance(each, Raised)
        assert each.type is ValueError
        assert "prohibited control characters" in str(each.args[0])
    assert ours.result[3:] == reference.result[3:]
    assert ours.transcript == b"noop\r\nquit\r\n"


@scenario(
    script(then=echo),
    documented=Documented(
        row="Only CR and LF are refused in commands", check=_control_check
    ),
)
def control_characters_in_commands(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.docmd, "XFOO", "a\x00b"),
            attempt(s.docmd, "XFOO", "\x1b[0m"),
            attempt(s.docmd, "XFOO", "\x7f"),
            attempt(s.noop),
            attempt(s.quit),
        ]


def _address_newline_check(reference: Outcome, ours: Outcome) -> None:
    assert isinstance(reference.result, list)
    assert isinstance(ours.result, list)
    # smtplib: parseaddr cuts the address at the CR; a different one is sent.
    assert b"mail FROM:<alice@example.com>\r\n" in reference.transcript
    assert reference.result[0] == {}
    # anysmtp: ValueError before MAIL.
    raised = ours.result[0]
    assert isinstance(raised, Raised)
    assert raised.type is ValueError
    assert "control characters" in str(raised.args[0])
    assert ours.transcript == EHLO_LINE + QUIT_LINE
    assert ours.result[1:] == reference.result[1:]


@scenario(
    accept_everything(),
    documented=Documented(
        row="An address with CR or LF is silently cut by `email.utils.parseaddr`",
        check=_address_newline_check,
    ),
)
def address_with_newline(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, "alice@example.com\r\nRCPT TO:<evil@x.y>", [BOB], MSG),
            attempt(s.quit),
        ]


def _huge_reply_check(reference: Outcome, ours: Outcome) -> None:
    assert isinstance(reference.result, list)
    assert isinstance(ours.result, list)
    # smtplib takes a reply of any size...
    code, text = reference.result[0]
    assert code == 250
    assert len(text) > 1024 * 1024
    assert reference.result[1:] == [False]
    # ...anysmtp stops past 1 MiB and closes.
    assert ours.result == [
        Raised(stdlib_smtplib.SMTPResponseException, (500, "Reply too long.")),
        True,
    ]
    assert ours.transcript == reference.transcript == b"noop\r\n"


HUGE_REPLY: Final = (b"250-" + b"h" * 8000 + b"\r\n") * 140 + b"250 end\r\n"


@scenario(
    script((b"noop", HUGE_REPLY), then=drain),
    documented=Documented(row="A reply may be any length", check=_huge_reply_check),
)
def reply_over_one_mebibyte(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.noop), s.sock is None]


@scenario(script(EHLO_OK))
def starttls_not_offered(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.starttls), s.sock is None, attempt(s.quit)]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"STARTTLS")),
        (b"STARTTLS\r\n", b"454 4.7.0 TLS not available\r\n"),
    )
)
def starttls_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.starttls), s.sock is None, s.ehlo_resp, attempt(s.quit)]


@scenario(
    script(
        (EHLO_LINE, b"500 no\r\n"),
        (HELO_LINE, b"250 old server\r\n"),
    )
)
def login_after_helo(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH LOGIN")),
        (b"AUTH LOGIN\r\n", b"334 " + b64("Username:") + b"\r\n"),
        (b64(USER) + b"\r\n", b"334 " + b64("Password:") + b"\r\n"),
        (b64(PASSWORD) + b"\r\n", b"235 2.7.0 welcome\r\n"),
    )
)
def auth_login_without_initial_response(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.login, USER, PASSWORD, initial_response_ok=False),
            attempt(s.quit),
        ]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH CRAM-MD5")),
        (b"AUTH CRAM-MD5\r\n", b"334 abc\r\n"),
    )
)
def auth_challenge_not_base64(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH CRAM-MD5")),
        (b"AUTH CRAM-MD5\r\n", b"334\r\n"),
        (b"", b"235 ok\r\n"),
    )
)
def auth_empty_challenge(smtplib: ModuleType, host: str, port: int) -> object:
    return login_program(smtplib, host, port)


@scenario(script((EHLO_LINE, ehlo_reply(b"auth plain login", b"AUTH"))))
def auth_lowercase_mechanisms(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.login, USER, PASSWORD), s.esmtp_features, attempt(s.quit)]


def _auth_raising_script(conn: ScriptedConnection) -> None:
    conn.send(GREETING)
    conn.expect(EHLO_LINE)
    conn.send(ehlo_reply(b"AUTH X-CUSTOM"))
    conn.expect(b"AUTH X-CUSTOM")
    conn.send(b"334 " + b64("challenge") + b"\r\n")
    while line := conn.read_line():
        if line == QUIT_LINE:
            conn.send(b"221 bye\r\n")
        else:  # "*" cancels the exchange (RFC 4954)
            conn.send(b"501 5.0.0 cancelled\r\n")


@scenario(
    _auth_raising_script,
    xfail={
        "*": "documented (docs/compatibility.md): "
        "anysmtp sends '*' (RFC 4954 cancel) when the authobject raises; "
        "smtplib sends nothing, so the next command is what the server reads"
    },
)
def auth_authobject_raises(smtplib: ModuleType, host: str, port: int) -> object:
    def authobject(challenge: bytes | None = None) -> str:
        if challenge is None:
            return "initial"
        raise KeyError("no answer for " + challenge.decode())

    with closing(client(smtplib, host, port)) as s:
        s.ehlo()
        return [attempt(s.auth, "X-CUSTOM", authobject), attempt(s.quit)]


@scenario(script((EHLO_LINE, b"251 odd but 2xx\r\n"), *SEND_OK))
def ehlo_answered_251(smtplib: ModuleType, host: str, port: int) -> object:
    # 2xx: no HELO, but not 250: no ESMTP (no SIZE, options dropped).
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG, ["BODY=8BITMIME"]),
            s.does_esmtp,
            s.ehlo_resp,
            s.helo_resp,
            attempt(s.quit),
        ]


@scenario(
    script(
        EHLO_OK,
        MAIL_OK,
        (RCPT_BOB_LINE, b"252 2.1.5 cannot verify, will try\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        (DATA_LINE, b"250 but not 354\r\n"),
    )
)
def rcpt_252_and_data_250(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB, CAROL], MSG),
            s.sock is None,
            attempt(s.quit),
        ]


@scenario(
    script(
        EHLO_OK,
        (MAIL_LINE, b"251 sender ok, will forward\r\n"),
        (RSET_LINE, b"250 ok\r\n"),
    )
)
def mail_answered_251(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], MSG), attempt(s.quit)]


@scenario(script(EHLO_OK, (QUIT_LINE, b"bye bye\r\n"), then=drain))
def quit_answered_with_garbage(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.ehlo), attempt(s.quit), s.sock is None, s.ehlo_resp]


@scenario(script(EHLO_OK, (MAIL_LINE, b"421 4.3.2 bye\r\n"), then=drain))
def commands_after_421_closed(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG),
            attempt(s.noop),
            attempt(s.sendmail, ALICE, [BOB], MSG),
            attempt(s.quit),
            s.sock is None,
        ]


@scenario(script(QUIT_OK))
def commands_after_quit(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.quit), attempt(s.noop), attempt(s.quit), attempt(s.help)]


@scenario(
    script((QUIT_LINE, b"500 5.5.1 no quitting\r\n")),
    xfail=dict.fromkeys(
        ("asyncio", "uvloop", "trio"),
        "async with: AsyncSMTP.__aexit__ drops the QUIT refusal when the body "
        "raised (the body's exception propagates); smtplib's __exit__ raises "
        "SMTPResponseException (the body's exception is its __context__)",
    ),
)
def with_block_body_raises_and_quit_refused(
    smtplib: ModuleType, host: str, port: int
) -> object:
    s = client(smtplib, host, port)
    try:
        with s:
            raise KeyError("from the body")
    except Exception as exc:
        return [normalise(exc), repr(exc.__context__), s.sock is None]
    finally:
        s.close()


@scenario(accept_everything())
def send_message_without_from(smtplib: ModuleType, host: str, port: int) -> object:
    # No From/Sender: smtplib's getaddresses([None]) makes it "None".
    msg = message(To=BOB, Subject="no from")
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.send_message, msg), attempt(s.quit)]


@scenario(accept_everything())
def send_message_resent_sender(smtplib: ModuleType, host: str, port: int) -> object:
    msg = message(
        From=ALICE,
        To=BOB,
        Resent_Date="Mon, 1 Jan 2024 00:00:00 +0000",
        Resent_From="Carol <carol@example.com>",
        Resent_Sender="Dave <dave@example.com>",
        Resent_Cc="eve@example.com",
    )
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.send_message, msg), attempt(s.quit)]


@scenario(accept_everything())
def send_message_non_ascii_display_names(
    smtplib: ModuleType, host: str, port: int
) -> object:
    msg = message(
        From="Jörg Müller <joerg@example.com>",
        To='Zoë <zoe@example.com>, "Ng, Ánh" <anh@example.com>',
        Subject="Grüße",
    )
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.send_message, msg), attempt(s.quit)]


_TIME = re.compile(r"^\d\d:\d\d:\d\d\.\d+ ", re.MULTILINE)


def _without_timestamps(text: str) -> str:
    # Level 2 starts every line with the time of day: checked, then dropped.
    lines = text.splitlines()
    assert lines
    assert all(_TIME.match(line) for line in lines)
    return _TIME.sub("", text)


@scenario(
    script((b"noop", b"250-a\r\n250 b\r\n"), QUIT_OK),
    capture_stderr=True,
    stderr_view=_without_timestamps,
)
def debug_level_2(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(2)
        return [attempt(s.noop), attempt(s.quit)]


def _debug_auth_check(reference: Outcome, ours: Outcome) -> None:
    assert ours.result == reference.result
    assert ours.transcript == reference.transcript
    assert reference.stderr is not None
    assert ours.stderr is not None
    # smtplib shows the base64 credentials; anysmtp shows <redacted>.
    secret = "AUTH PLAIN " + PLAIN_RESPONSE.decode()
    assert f"send: '{secret}\\r\\n'" in reference.stderr.splitlines()
    redacted = reference.stderr.replace(secret, "AUTH PLAIN <redacted>")
    assert ours.stderr.splitlines() == redacted.splitlines()
    assert PLAIN_RESPONSE.decode() not in ours.stderr


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH PLAIN")),
        (b"AUTH PLAIN " + PLAIN_RESPONSE + b"\r\n", b"235 2.7.0 welcome\r\n"),
        QUIT_OK,
    ),
    capture_stderr=True,
    documented=Documented(
        row="`set_debuglevel` shows AUTH payloads", check=_debug_auth_check
    ),
)
def debug_auth_redacted(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(1)
        return [attempt(s.login, USER, PASSWORD), attempt(s.quit)]


# Pipelining, TLS, authobjects ------------------------------------------------------


def _pipelined(*replies: tuple[bytes, bytes]) -> Script:
    """A server offering PIPELINING that answers by verb, in order of arrival."""

    def run_script(conn: ScriptedConnection) -> None:
        conn.send(GREETING)
        conn.expect(EHLO_LINE)
        conn.send(ehlo_reply(b"PIPELINING", b"8BITMIME"))
        queue = list(replies)
        while line := conn.read_line():
            verb = line[:4].lower()
            if verb == b"quit":
                conn.send(b"221 bye\r\n")
                continue
            if verb == b"rset":
                conn.send(b"250 reset\r\n")
                continue
            expected, reply = queue.pop(0)
            assert verb == expected, (verb, expected)
            if reply is CLOSE_REPLY:
                return
            conn.send(reply)
            if verb == b"data" and reply.startswith(b"354"):
                conn.read_data()
                final, reply = queue.pop(0)
                assert final == BODY
                conn.send(reply)

    return run_script


CLOSE_REPLY: Final = b"<close>"


def _pipelined_check(reference_extra: bytes, ours_extra: bytes) -> Documented:
    """The same result; the transcripts differ only by what the batch sent
    beyond the refusal smtplib stopped at."""

    def check(reference: Outcome, ours: Outcome) -> None:
        assert ours.result == reference.result
        assert reference.transcript == EHLO_LINE + reference_extra
        assert ours.transcript == EHLO_LINE + ours_extra

    return Documented(row="Commands go one by one", check=check)


def pipelined_program(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB, CAROL], MSG),
            s.sock is None,
            attempt(s.quit),
        ]


RCPT_CAROL_LINE: Final = b"rcpt TO:<carol@example.com>\r\n"
BATCH: Final = MAIL_LINE + RCPT_BOB_LINE + RCPT_CAROL_LINE + DATA_LINE


@scenario(
    _pipelined(
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"421 4.3.2 bye\r\n"),
        (b"rcpt", CLOSE_REPLY),
    ),
    documented=_pipelined_check(MAIL_LINE + RCPT_BOB_LINE, BATCH),
)
def pipelining_rcpt_421(smtplib: ModuleType, host: str, port: int) -> object:
    return pipelined_program(smtplib, host, port)


@scenario(
    _pipelined(
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"550 no\r\n"),
        (b"rcpt", b"550 no\r\n"),
        (b"data", b"554 no valid recipients\r\n"),
    ),
    documented=_pipelined_check(
        MAIL_LINE + RCPT_BOB_LINE + RCPT_CAROL_LINE + RSET_LINE + QUIT_LINE,
        BATCH + RSET_LINE + QUIT_LINE,
    ),
)
def pipelining_all_refused(smtplib: ModuleType, host: str, port: int) -> object:
    return pipelined_program(smtplib, host, port)


@scenario(
    _pipelined(
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        (b"data", b"554 5.3.0 no\r\n"),
    )
)
def pipelining_data_refused(smtplib: ModuleType, host: str, port: int) -> object:
    # Not a difference: smtplib sends the same commands, one by one.
    return pipelined_program(smtplib, host, port)


@scenario(
    _pipelined((b"mail", CLOSE_REPLY)),
    documented=_pipelined_check(MAIL_LINE, BATCH),
)
def pipelining_disconnect_at_mail(smtplib: ModuleType, host: str, port: int) -> object:
    return pipelined_program(smtplib, host, port)


@scenario(
    _pipelined(
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        (b"rcpt", b"550 no\r\n"),
        (b"data", b"354 go\r\n"),
        (BODY, b"250 queued\r\n"),
    ),
    capture_stderr=True,
    xfail={
        "*": "documented (docs/compatibility.md): "
        "with PIPELINING offered, set_debuglevel(1) shows one 'send:' line for "
        "the MAIL/RCPT/DATA batch and the replies after it; compatibility.md's "
        "pipelining row covers the write, not the debug output smtplib users get"
    },
)
def debug_with_pipelining(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(1)
        return [attempt(s.sendmail, ALICE, [BOB, CAROL], MSG), attempt(s.quit)]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"SMTPUTF8")),
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        DATA_GO,
        BODY_OK,
        QUIT_OK,
    ),
    script((b"xfoo", b"250 ok\r\n"), QUIT_OK),
)
def command_encoding_after_quit(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        sent = attempt(s.sendmail, JOSE, [BOB], MSG, ["SMTPUTF8"])
        quit_reply = attempt(s.quit)
        encoding = s.command_encoding
        greeting = attempt(s.connect, host, port)
        return [
            sent,
            quit_reply,
            encoding,
            greeting,
            s.command_encoding,
            attempt(s.docmd, "XFOO", "ça"),
            attempt(s.quit),
        ]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH PLAIN LOGIN")),
        (b"AUTH PLAIN " + PLAIN_RESPONSE + b"\r\n", b"235 ok\r\n"),
        (b"AUTH LOGIN " + b64(USER) + b"\r\n", b"334 " + b64("Password:") + b"\r\n"),
        (b64(PASSWORD) + b"\r\n", b"235 ok\r\n"),
    )
)
def auth_with_smtplibs_authobjects(smtplib: ModuleType, host: str, port: int) -> object:
    # The smtplib documentation's way: set user and password, pass auth_plain.
    with closing(client(smtplib, host, port)) as s:
        s.ehlo()
        s.user, s.password = USER, PASSWORD
        return [
            attempt(s.auth, "plain", s.auth_plain),
            attempt(s.auth, "LOGIN", s.auth_login),
            attempt(s.quit),
        ]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH PLAIN")),
        (b"AUTH PLAIN ", b"535 no\r\n"),
    ),
    xfail=dict.fromkeys(
        ("asyncio", "uvloop", "trio"),
        "the async API's class is AsyncSMTP, and its AttributeError names it",
    ),
)
def auth_object_before_login(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.ehlo()
        return [attempt(s.auth, "PLAIN", s.auth_plain), attempt(s.quit)]


@scenario()
def connection_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with socket.socket() as probe:
        probe.bind((host, 0))
        closed_port = probe.getsockname()[1]
    return [construct(smtplib, host, closed_port)]


# Not for the async API: ``async with`` connects (aiosmtplib's behaviour).
@scenario(async_api=False)
def with_block_never_connected(smtplib: ModuleType, host: str, port: int) -> object:
    with unconnected(smtplib) as s:
        pass
    return [s.sock is None]


# TLS ------------------------------------------------------------------------------


@functools.cache
def _ca() -> tuple[trustme.CA, trustme.LeafCert]:
    ca = trustme.CA()
    return ca, ca.issue_cert("127.0.0.1", "localhost")


def server_tls() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _ca()[1].configure_cert(context)
    return context


def client_tls(*, trusting: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if trusting:
        _ca()[0].configure_trust(context)
    return context


def _starttls_script(conn: ScriptedConnection) -> None:
    conn.send(GREETING)
    conn.expect(EHLO_LINE)
    conn.send(ehlo_reply(b"STARTTLS", b"SIZE 1000"))
    conn.expect(b"STARTTLS\r\n")
    conn.send(b"220 2.0.0 ready\r\n")
    conn.start_tls(server_tls())
    answer_rest(conn)


@scenario(_starttls_script)
def starttls_then_sendmail(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        before = [attempt(s.ehlo), s.has_extn("size")]
        upgraded = attempt(s.starttls, context=client_tls())
        after = [
            s.ehlo_resp,
            s.helo_resp,
            s.esmtp_features,
            s.does_esmtp,
            isinstance(s.sock, ssl.SSLSocket),
        ]
        return [
            before,
            upgraded,
            after,
            attempt(s.sendmail, ALICE, [BOB], MSG),
            s.does_esmtp,
            attempt(s.quit),
            s.sock is None,
        ]


def _tls_first(conn: ScriptedConnection) -> None:
    conn.start_tls(server_tls())
    conn.send(GREETING)
    answer_rest(conn)


@scenario(_tls_first)
def smtp_ssl_sendmail(smtplib: ModuleType, host: str, port: int) -> object:
    s = smtplib.SMTP_SSL(
        host, port, local_hostname=LOCAL, timeout=T, context=client_tls()
    )
    with closing(s):
        return [
            isinstance(s.sock, ssl.SSLSocket),
            attempt(s.sendmail, ALICE, [BOB], MSG),
            attempt(s.quit),
        ]


def _plain_server_silently(conn: ScriptedConnection) -> None:
    # The client's TLS hello is not recorded: its random bytes differ.
    conn.send(GREETING)
    while conn.sock.recv(65536):
        pass


@scenario(
    _plain_server_silently,
    xfail={
        "*": "documented (docs/compatibility.md): "
        "SMTP_SSL to a server that does not speak TLS: anysmtp raises "
        "SMTPTLSError('the server did not answer in TLS (WRONG_VERSION_NUMBER)...') "
        "where smtplib raises ssl.SSLError(1, '[SSL: WRONG_VERSION_NUMBER] ...'); "
        "a subclass, but other args, and not in compatibility.md"
    },
)
def smtp_ssl_to_plain_server(smtplib: ModuleType, host: str, port: int) -> object:
    try:
        s = smtplib.SMTP_SSL(
            host, port, local_hostname=LOCAL, timeout=T, context=client_tls()
        )
    except Exception as exc:
        return [normalise(exc)]
    s.close()
    return ["connected"]


def _untrusted_tls_first(conn: ScriptedConnection) -> None:
    try:
        conn.start_tls(server_tls())
    except ssl.SSLError:
        return  # the client refused the certificate


@scenario(_untrusted_tls_first)
def smtp_ssl_certificate_not_trusted(
    smtplib: ModuleType, host: str, port: int
) -> object:
    try:
        s = smtplib.SMTP_SSL(
            host,
            port,
            local_hostname=LOCAL,
            timeout=T,
            context=client_tls(trusting=False),
        )
    except Exception as exc:
        return [normalise(exc)]
    s.close()
    return ["connected"]


def _starttls_untrusted(conn: ScriptedConnection) -> None:
    conn.send(GREETING)
    conn.expect(EHLO_LINE)
    conn.send(ehlo_reply(b"STARTTLS"))
    conn.expect(b"STARTTLS\r\n")
    conn.send(b"220 2.0.0 ready\r\n")
    try:
        conn.start_tls(server_tls())
    except ssl.SSLError:
        return


@scenario(
    _starttls_untrusted,
    xfail={
        "*": "documented (docs/compatibility.md): "
        "after a failed STARTTLS handshake smtplib keeps `sock` (the plain "
        "socket, detached by wrap_socket: the next command fails with "
        "SMTPServerDisconnected('Server not connected')); anysmtp closes, so "
        "`sock` is None and the next command says 'please run connect() first'"
    },
)
def starttls_certificate_not_trusted(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.starttls, context=client_tls(trusting=False)),
            s.sock is None,
            attempt(s.noop),
        ]


# Debug output on error paths ---------------------------------------------------------


@scenario(script(EHLO_OK, (MAIL_LINE, CLOSE)), capture_stderr=True)
def debug_disconnect(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(1)
        return [attempt(s.sendmail, ALICE, [BOB], MSG), attempt(s.noop)]


@scenario(
    script((b"noop", _long_line(8193)), then=drain),
    capture_stderr=True,
    xfail={
        "*": "documented (docs/compatibility.md): "
        "set_debuglevel(1): smtplib prints the over-long line (reply: b'250 "
        "xxx...', its first 8193 bytes) before raising 'Line too long.'; anysmtp "
        "prints no reply line"
    },
)
def debug_line_too_long(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(1)
        return [attempt(s.noop)]


@scenario(
    script(
        (EHLO_LINE, b"502 no\r\n"),
        (HELO_LINE, b"250 ok\r\n"),
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        DATA_GO,
        (BODY, b"451 4.3.0 try later\r\n"),
        (RSET_LINE, b"250 ok\r\n"),
        (QUIT_LINE, b"221 bye\r\n"),
    ),
    capture_stderr=True,
)
def debug_send_message_refused(smtplib: ModuleType, host: str, port: int) -> object:
    msg = message(From="Alice <alice@example.com>", To=BOB, Bcc=CAROL, Subject="d")
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(1)
        return [attempt(s.send_message, msg, to_addrs=[BOB]), attempt(s.quit)]


@scenario(script(EHLO_OK, (QUIT_LINE, b"421 4.3.2 closing\r\n")), capture_stderr=True)
def debug_quit_421_and_close(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(1)
        return [attempt(s.ehlo), attempt(s.quit), attempt(s.close)]


# Timeouts and connections -----------------------------------------------------------


def _write_timeout_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib: socket.timeout while sending is an OSError: "Server not connected".
    assert reference.result == [
        Raised(stdlib_smtplib.SMTPServerDisconnected, ("Server not connected",)),
        True,
    ]
    # anysmtp: SMTPReadTimeoutError, an SMTPServerDisconnected and a TimeoutError.
    assert isinstance(ours.result, list)
    raised = ours.result[0]
    assert isinstance(raised, Raised)
    assert raised.type is anysmtp.SMTPReadTimeoutError
    assert issubclass(raised.type, stdlib_smtplib.SMTPServerDisconnected)
    assert issubclass(raised.type, TimeoutError)
    assert ours.result[1:] == [True]
    assert _until_data(ours.transcript) == _until_data(reference.transcript)


def _stop_reading(conn: ScriptedConnection) -> None:
    time.sleep(0.5)  # longer than the client's timeout; then close unread


@scenario(
    script(EHLO_OK, MAIL_OK, RCPT_OK, DATA_GO, then=_stop_reading),
    documented=Documented(
        row="A read timeout raises `SMTPServerDisconnected`",
        check=_write_timeout_check,
    ),
)
def write_timeout_mid_body(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port, timeout=STALL_T)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], BIG_BODY), s.sock is None]


def _ehlo_state_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib keeps the first session's EHLO reply after connect()...
    assert isinstance(reference.result, list)
    assert isinstance(ours.result, list)
    assert reference.result[2] == [b"scripted\n8BITMIME", True]
    # ...anysmtp forgets it: a new connection is a new session.
    assert ours.result[2] == [None, False]
    assert ours.result[:2] + ours.result[3:] == (
        reference.result[:2] + reference.result[3:]
    )
    assert ours.transcript == reference.transcript


@scenario(
    # The server serves one connection at a time: it drops the first at once.
    script(EHLO_OK, then=None),
    script((b"noop", b"250 second connection\r\n"), QUIT_OK),
    documented=Documented(
        row="`connect()` keeps the previous session's EHLO state",
        check=_ehlo_state_check,
    ),
)
def connect_while_connected(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        first = attempt(s.ehlo)
        old = s.sock
        greeting = attempt(s.connect, host, port)
        old.close()  # smtplib leaves the old socket open; anysmtp closed it
        return [
            first,
            greeting,
            [s.ehlo_resp, s.does_esmtp],
            attempt(s.noop),
            attempt(s.quit),
        ]


@scenario(script(QUIT_OK))
def constructor_host_port_string(smtplib: ModuleType, host: str, port: int) -> object:
    s = smtplib.SMTP(f"{host}:{port}", local_hostname=LOCAL, timeout=T)
    with closing(s):
        return [attempt(s.quit)]


@scenario()
def nonnumeric_port(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as s:
        return [attempt(s.connect, f"{host}:smtp"), s.sock is None]


@scenario(
    script(
        (b"lhlo client.example\r\n", ehlo_reply(b"8BITMIME")),
        MAIL_OK,
        (RCPT_BOB_LINE, b"550 5.1.1 unknown\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        DATA_GO,
        (BODY, b"250 2.0.0 carol ok\r\n"),
    )
)
def lmtp_one_refused_one_delivered(smtplib: ModuleType, host: str, port: int) -> object:
    # One accepted recipient, one reply after the data: no difference.
    with closing(smtplib.LMTP(host, port, local_hostname=LOCAL, timeout=T)) as s:
        return [attempt(s.sendmail, ALICE, [BOB, CAROL], MSG), attempt(s.quit)]


# Buffers, chunks and attributes ------------------------------------------------------


def _starttls_injection(conn: ScriptedConnection) -> None:
    conn.send(GREETING)
    conn.expect(EHLO_LINE)
    conn.send(ehlo_reply(b"STARTTLS"))
    conn.expect(b"STARTTLS\r\n")
    # Plain-text lines sent with the 220 must not be read as answers after the
    # upgrade (CVE-2011-0411-style injection).
    conn.send(b"220 2.0.0 ready\r\n250-injected\r\n250 AUTH PLAIN\r\n")
    conn.start_tls(server_tls())
    answer_rest(conn)


@scenario(_starttls_injection)
def starttls_response_injection(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.starttls, context=client_tls()),
            attempt(s.ehlo),
            s.esmtp_features,
            attempt(s.noop),
            attempt(s.quit),
        ]


def _chunk_boundaries_body() -> bytes:
    """A body whose line breaks and leading dots fall on and around anysmtp's
    256 KiB chunk boundaries."""
    chunk = 256 * 1024
    body = bytearray(b"Subject: chunks\r\n\r\n")

    def pad_to(position: int) -> None:
        body.extend(b"x" * (position - len(body)))

    pad_to(chunk - 1)
    body.extend(b"\r\n.a\r\n")  # CR ends chunk 1, LF and the dot start chunk 2
    pad_to(2 * chunk - 2)
    body.extend(b"\r\n.b\r\n")  # the dot starts chunk 3
    pad_to(3 * chunk - 3)
    body.extend(b"\r\n.\r\n.\r\n")  # a lone dot line right at the boundary
    pad_to(4 * chunk - 1)
    body.extend(b"\r\n")  # the body ends with CR at a boundary, LF after
    return bytes(body)


CHUNKY_BODY: Final = _chunk_boundaries_body()


@scenario(script(EHLO_OK, *SEND_OK))
def large_body_across_chunks(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], CHUNKY_BODY), attempt(s.quit)]


@scenario(script(EHLO_OK, *SEND_OK))
def large_str_body_across_chunks(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        text = CHUNKY_BODY.decode("ascii")
        return [attempt(s.sendmail, ALICE, [BOB], text), attempt(s.quit)]


def _early_final_reply(conn: ScriptedConnection) -> None:
    conn.send(GREETING)
    for step in (EHLO_OK, MAIL_OK, RCPT_OK, DATA_GO):
        conn.expect(step[0])
        assert isinstance(step[1], bytes)
        conn.send(step[1])
    conn.expect(b"subject: big")
    conn.send(b"552 5.3.4 too big, stop\r\n")  # before the end of the data
    conn.read_data()
    answer_rest(conn)


#: Large enough to be still sending when the reply comes, small enough for the
#: scripted server to read quickly (it reads line by line).
MEDIUM_BODY: Final = b"Subject: big\r\n\r\n" + (b"z" * 4094 + b"\r\n") * 768


@scenario(_early_final_reply)
def final_reply_before_end_of_data(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.sendmail, ALICE, [BOB], MEDIUM_BODY),
            s.sock is None,
            attempt(s.quit),
        ]


@scenario(
    script(
        (b"ehlo other.name\r\n", ehlo_reply(b"SIZE 10")),
        (b"mail", b"250 ok\r\n"),
        (b"rcpt", b"250 ok\r\n"),
        DATA_GO,
        BODY_OK,
        (b"ehlo other.name\r\n", ehlo_reply(b"8BITMIME")),
        (b"xfoo", b"250 ok\r\n"),
        QUIT_OK,
    )
)
def attributes_assigned_by_user(smtplib: ModuleType, host: str, port: int) -> object:
    # What smtplib code in the wild does with the public attributes.
    with closing(client(smtplib, host, port)) as s:
        s.local_hostname = "other.name"
        ehlo = attempt(s.ehlo)
        s.esmtp_features["smtputf8"] = ""  # pretend the server offered it
        del s.esmtp_features["size"]
        sent = attempt(s.sendmail, JOSE, [BOB], MSG, ["SMTPUTF8"])
        s.ehlo_resp = None  # force a new EHLO
        s.helo_resp = None
        again = attempt(s.ehlo_or_helo_if_needed)
        s.command_encoding = "utf-8"
        s.debuglevel = 0
        return [
            ehlo,
            sent,
            again,
            s.ehlo_resp,
            attempt(s.docmd, "XFOO", "ça"),
            attempt(s.quit),
        ]


@scenario(script(EHLO_OK, *SEND_OK, QUIT_OK))
def does_esmtp_cleared_by_user(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.ehlo()
        s.does_esmtp = False  # options are then not sent
        return [
            attempt(s.sendmail, ALICE, [BOB], MSG, ["BODY=8BITMIME"]),
            attempt(s.quit),
        ]


# Argument checks and smtplib's own quirks ---------------------------------------------


def _starttls_go(conn: ScriptedConnection) -> None:
    conn.send(GREETING)
    conn.expect(EHLO_LINE)
    conn.send(ehlo_reply(b"STARTTLS"))
    line = conn.read_line()
    if line == b"STARTTLS\r\n":
        conn.send(b"220 2.0.0 ready\r\n")
    drain(conn)  # no handshake comes


@scenario(
    _starttls_go,
    xfail={
        "*": "documented (docs/compatibility.md): "
        "starttls(keyfile=..., context=...): anysmtp raises the ValueError "
        "before anything is sent; smtplib sends EHLO and STARTTLS first and raises "
        "after the 220, leaving the server waiting for a handshake"
    },
)
def starttls_context_and_keyfile(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.starttls, keyfile="key.pem", context=client_tls()),
            s.sock is None,
        ]


@scenario(
    _starttls_script,
    xfail={
        "*": "documented (docs/compatibility.md): "
        "SMTP() then connect(host) then starttls(context=verifying context): "
        "smtplib verifies against the constructor's host ('': ValueError "
        "'check_hostname requires server_hostname' after STARTTLS); anysmtp uses "
        "the host given to connect() and upgrades"
    },
)
def starttls_after_connect_without_constructor_host(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(unconnected(smtplib)) as s:
        s.connect(host, port)
        return [attempt(s.starttls, context=client_tls()), s.sock is None]


# Facade only: the async API verifies certificates by default (DESIGN.md), the
# sync facade keeps smtplib's unverified default context.
@scenario(_starttls_script, async_api=False)
def starttls_default_context(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.starttls),
            attempt(s.sendmail, ALICE, [BOB], MSG),
            attempt(s.quit),
        ]


@scenario(_tls_first, async_api=False)
def smtp_ssl_default_context(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(smtplib.SMTP_SSL(host, port, local_hostname=LOCAL, timeout=T)) as s:
        return [attempt(s.sendmail, ALICE, [BOB], MSG), attempt(s.quit)]


@scenario(
    _tls_first,
    async_api=False,
    xfail={
        "facade": "documented (docs/compatibility.md): "
        "SMTP_SSL() then connect(host): smtplib wraps the socket with "
        "the constructor's host as server_hostname ('': ValueError 'server_hostname "
        "cannot be an empty string...'); anysmtp uses connect()'s host and connects"
    },
)
def smtp_ssl_connect_without_constructor_host(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(unconnected_ssl(smtplib)) as s:
        return [attempt(s.connect, host, port), attempt(s.quit)]


def unconnected_ssl(smtplib: ModuleType) -> Any:
    return smtplib.SMTP_SSL(local_hostname=LOCAL, timeout=T)


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"AUTH PLAIN")),
        (b"AUTH PLAIN ", b"535 5.7.8 no\r\n"),
    ),
    xfail={
        "*": "documented (docs/compatibility.md): "
        "login() with a NUL in the password: anysmtp raises ValueError before "
        "AUTH; smtplib sends it (base64) and reports the server's answer; "
        "compatibility.md's control-character row speaks of command arguments"
    },
)
def login_password_with_nul(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.login, USER, "pass\0word"), attempt(s.quit)]


@scenario(
    script(
        EHLO_OK,
        MAIL_OK,
        (RCPT_BOB_LINE, b"550 5.1.1 unknown\r\n"),
        (RCPT_BOB_LINE, b"550 5.1.1 unknown\r\n"),
        (DATA_LINE, b"554 5.5.1 no valid recipients\r\n"),
    )
)
def duplicate_refused_recipient(smtplib: ModuleType, host: str, port: int) -> object:
    # smtplib compares the refusals (a dict) with the recipients (a list): the
    # same address refused twice is not "all refused", so DATA is tried.
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.sendmail, ALICE, [BOB, BOB], MSG), attempt(s.quit)]


@scenario(
    script(
        (
            EHLO_LINE,
            ehlo_reply(
                "X-ÜBER grüße".encode(),
                b"X-LATIN1 \xe9t\xe9",
                b"AUTH=PL\xc4IN",
                b"8BITMIME",
            ),
        ),
    )
)
def ehlo_features_not_ascii(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        return [attempt(s.ehlo), s.esmtp_features, attempt(s.quit)]


@scenario(
    script(
        (EHLO_LINE, ehlo_reply(b"SMTPUTF8", b"8BITMIME")),
        then=answer_rest,
    )
)
def send_message_international_options(
    smtplib: ModuleType, host: str, port: int
) -> object:
    msg = international_message()
    with closing(client(smtplib, host, port)) as s:
        return [
            attempt(s.send_message, msg, None, BOB, ["SMTPUTF8"]),
            attempt(s.send_message, msg, "josé@exämple.com", "zoë@example.com"),
            attempt(s.quit),
        ]


def _any_port(text: str) -> str:
    return re.sub(r"\('127\.0\.0\.1', \d+\)", "('127.0.0.1', PORT)", text)


@scenario(capture_stderr=True, stderr_view=_any_port)
def debug_connection_refused(smtplib: ModuleType, host: str, port: int) -> object:
    with socket.socket() as probe:
        probe.bind((host, 0))
        closed_port = probe.getsockname()[1]
    with closing(unconnected(smtplib)) as s:
        s.set_debuglevel(1)
        return [attempt(s.connect, host, closed_port), s.sock is None]


@scenario(
    script(EHLO_OK, (MAIL_LINE, b"553 5.7.1 no\r\n"), (RSET_LINE, CLOSE)),
    capture_stderr=True,
)
def debug_sender_refused_rset_disconnects(
    smtplib: ModuleType, host: str, port: int
) -> object:
    with closing(client(smtplib, host, port)) as s:
        s.set_debuglevel(1)
        return [attempt(s.sendmail, ALICE, [BOB], MSG), s.sock is None]


# smtplib's attributes on the sync facade ------------------------------------------
# Facade only, most of them: the async API's ``sock`` stays non-blocking (its
# event loop reads it), and its classes are not the ones these programs subclass.


@scenario(
    script(
        (b"NOOP", b"250 raw\r\n"),
        (b"noop", b"250 ok\r\n"),
        (b"NOOP", b"250 raw again\r\n"),
        QUIT_OK,
    ),
    async_api=False,
)
def sock_is_blocking_with_the_timeout(
    smtplib: ModuleType, host: str, port: int
) -> object:
    # Code that talks on ``s.sock`` itself, as smtplib's socket allows.
    with closing(client(smtplib, host, port)) as s:
        sock = s.sock
        mode = [sock.getblocking(), sock.gettimeout()]
        sock.sendall(b"NOOP\r\n")
        raw = attempt(sock.recv, 100)
        noop = attempt(s.noop)
        s.sock.sendall(b"NOOP\r\n")
        return [
            mode,
            raw,
            noop,
            attempt(s.sock.recv, 100),
            attempt(s.quit),
            s.sock is None,
        ]


@scenario(script((b"NOOP", b"250 raw\r\n"), QUIT_OK), async_api=False)
def sock_without_timeout_blocks(smtplib: ModuleType, host: str, port: int) -> object:
    s = smtplib.SMTP(host, port, local_hostname=LOCAL, timeout=None)
    with closing(s):
        sock = s.sock
        mode = [sock.getblocking(), sock.gettimeout()]
        sock.sendall(b"NOOP\r\n")
        return [mode, attempt(sock.recv, 100), attempt(s.quit)]


def _timeout_from_sock_check(reference: Outcome, ours: Outcome) -> None:
    _timeout_check(reference, ours)
    # The timeout set on the socket is the one anysmtp waited for.
    assert isinstance(ours.result, list)
    raised = ours.result[0]
    assert isinstance(raised, Raised)
    assert f"after {STALL_T} seconds" in str(raised.args[0])


@scenario(
    script((b"noop", STALL)),
    async_api=False,
    documented=Documented(
        row="A read timeout raises `SMTPServerDisconnected`",
        check=_timeout_from_sock_check,
    ),
)
def sock_timeout_set_by_the_caller(smtplib: ModuleType, host: str, port: int) -> object:
    # smtplib's reads use the socket's timeout, whatever the client's says.
    s = smtplib.SMTP(host, port, local_hostname=LOCAL, timeout=None)
    with closing(s):
        s.sock.settimeout(STALL_T)
        return [attempt(s.noop), s.sock is None]


@scenario(_starttls_script, async_api=False)
def starttls_by_hand_on_sock(smtplib: ModuleType, host: str, port: int) -> object:
    # The recipe of code older than starttls(context=), or that picks the SNI.
    with closing(client(smtplib, host, port)) as s:
        ehlo = attempt(s.ehlo)
        reply = attempt(s.docmd, "STARTTLS")
        s.sock = client_tls().wrap_socket(s.sock, server_hostname=host)
        s.file = None
        return [
            ehlo,
            reply,
            isinstance(s.sock, ssl.SSLSocket),
            attempt(s.ehlo),
            attempt(s.sendmail, ALICE, [BOB], MSG),
            attempt(s.quit),
            s.sock is None,
        ]


@scenario(script(QUIT_OK))
def host_attribute(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(unconnected(smtplib)) as idle:
        before = idle._host
    with closing(client(smtplib, host, port)) as s:
        return [before, s._host, attempt(s.quit)]


@scenario(_starttls_untrusted)
def host_attribute_assigned_is_what_tls_verifies(
    smtplib: ModuleType, host: str, port: int
) -> object:
    # smtplib's TLS code verifies ``_host``: code that sets it picks the name.
    with closing(client(smtplib, host, port)) as s:
        s._host = "wrong.example"
        return [s._host, attempt(s.starttls, context=client_tls())]


@scenario(_tls_first, async_api=False)
def smtp_ssl_get_socket_through_a_proxy(
    smtplib: ModuleType, host: str, port: int
) -> object:
    # The proxy recipe: SMTP_SSL._get_socket copied, the socket opened another
    # way (by a SOCKS library in real code).
    class ViaProxy(smtplib.SMTP_SSL):  # type: ignore[name-defined,misc]
        def _get_socket(
            self, host: str, port: int, timeout: float | None
        ) -> ssl.SSLSocket:
            new_socket = socket.create_connection((host, port), timeout)
            wrapped: ssl.SSLSocket = self.context.wrap_socket(
                new_socket, server_hostname=self._host
            )
            return wrapped

    s = ViaProxy(host, port, local_hostname=LOCAL, timeout=T, context=client_tls())
    with closing(s):
        return [
            isinstance(s.sock, ssl.SSLSocket),
            attempt(s.sendmail, ALICE, [BOB], MSG),
            attempt(s.quit),
        ]


@scenario(async_api=False)
def smtp_ssl_attributes(smtplib: ModuleType, host: str, port: int) -> object:
    given = client_tls()
    default = smtplib.SMTP_SSL(local_hostname=LOCAL, timeout=T)
    chosen = smtplib.SMTP_SSL(local_hostname=LOCAL, timeout=T, context=given)
    with closing(default), closing(chosen):
        return [
            type(default.context).__name__,
            default.context.verify_mode,
            default.context.check_hostname,
            default.keyfile,
            default.certfile,
            chosen.context is given,
        ]


@scenario(async_api=False)
def smtp_ssl_keyfile_without_certfile(
    smtplib: ModuleType, host: str, port: int
) -> object:
    # smtplib makes its context in the constructor: the ValueError comes before
    # any connection is opened.
    with socket.socket() as listener:
        listener.bind((host, 0))
        listener.listen(1)
        listener.setblocking(False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            made = attempt(
                smtplib.SMTP_SSL,
                host,
                listener.getsockname()[1],
                keyfile="key.pem",
                timeout=T,
            )
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            connected = False
        else:
            connected = True
    return [
        made,
        connected,
        [(w.category, str(w.message), Path(w.filename).name) for w in caught],
    ]


@scenario(
    script(QUIT_OK),
    script((b"noop", b"250 second\r\n"), QUIT_OK),
    async_api=False,
)
def default_port_of_a_subclass_and_an_instance(
    smtplib: ModuleType, host: str, port: int
) -> object:
    class Local(smtplib.SMTP):  # type: ignore[name-defined,misc]
        default_port = port

    with closing(Local(local_hostname=LOCAL, timeout=T)) as s:
        first = [attempt(s.connect, host), attempt(s.quit)]
    with closing(unconnected(smtplib)) as s:
        before = attempt(s.noop)
        s.default_port = port  # after a first call
        return [
            first,
            before,
            attempt(s.connect, host),
            attempt(s.noop),
            attempt(s.quit),
        ]


@scenario(
    script(
        (b"EHLO client.example\r\n", ehlo_reply(b"8BITMIME")),
        (b"Ehlo client.example\r\n", ehlo_reply(b"8BITMIME")),
        QUIT_OK,
    ),
    async_api=False,
)
def ehlo_msg_of_a_subclass_and_an_instance(
    smtplib: ModuleType, host: str, port: int
) -> object:
    class Upper(smtplib.SMTP):  # type: ignore[name-defined,misc]
        ehlo_msg = "EHLO"

    with closing(Upper(host, port, local_hostname=LOCAL, timeout=T)) as s:
        first = attempt(s.ehlo)
        s.ehlo_msg = "Ehlo"
        return [first, attempt(s.ehlo), attempt(s.quit)]


@scenario(
    script((b"noop", b"250 loud\r\n"), (b"noop", b"250 quiet\r\n"), QUIT_OK),
    async_api=False,
    capture_stderr=True,
)
def debuglevel_of_a_subclass(smtplib: ModuleType, host: str, port: int) -> object:
    class Verbose(smtplib.SMTP):  # type: ignore[name-defined,misc]
        debuglevel = 1

    with closing(Verbose(host, port, local_hostname=LOCAL, timeout=T)) as s:
        loud = [Verbose.debuglevel, s.debuglevel, attempt(s.noop)]
        s.set_debuglevel(0)  # its own level wins
        return [
            loud,
            Verbose.debuglevel,
            s.debuglevel,
            attempt(s.noop),
            attempt(s.quit),
        ]


@scenario(
    script(QUIT_OK),
    script(
        (b"noop", b"250 quiet\r\n"),
        (b"noop", b"250 loud\r\n"),
        (b"noop", b"250 own level\r\n"),
        (b"noop", b"250 still own\r\n"),
        QUIT_OK,
    ),
    async_api=False,
    capture_stderr=True,
)
def debuglevel_set_on_the_class(smtplib: ModuleType, host: str, port: int) -> object:
    # The old recipe ``smtplib.SMTP.debuglevel = 1``; mock.patch undoes it.
    with (
        mock.patch.object(smtplib.SMTP, "debuglevel", 1),
        closing(client(smtplib, host, port)) as s,
    ):
        new = [smtplib.SMTP.debuglevel, s.debuglevel, attempt(s.quit)]
    with closing(client(smtplib, host, port)) as s:
        before = [s.debuglevel, attempt(s.noop)]
        with mock.patch.object(smtplib.SMTP, "debuglevel", 1):
            following = [s.debuglevel, attempt(s.noop)]
            s.set_debuglevel(0)
            own = [s.debuglevel, attempt(s.noop)]
        with mock.patch.object(smtplib.SMTP, "debuglevel", 2):
            still_own = [s.debuglevel, attempt(s.noop)]
        return [
            new,
            before,
            following,
            own,
            still_own,
            smtplib.SMTP.debuglevel,
            attempt(s.quit),
        ]


@scenario(
    script((b"noop", b"250 ok\r\n"), QUIT_OK), async_api=False, capture_stderr=True
)
def attributes_assigned_before_the_constructor(
    smtplib: ModuleType, host: str, port: int
) -> object:
    class Custom(smtplib.SMTP):  # type: ignore[name-defined,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # What smtplib's constructor assigns itself is overwritten...
            self.timeout = 7
            self.local_hostname = "pre.example"
            self.source_address = ("192.0.2.1", 0)
            self.esmtp_features = {"pre": ""}
            self.command_encoding = "utf-8"
            self._host = "pre.example"
            # ...what it does not assign stays.
            self.debuglevel = 1
            self.does_esmtp = True
            self.user = "pre-user"
            self.extra = "pre"
            super().__init__(*args, **kwargs)

    def state(s: Any) -> list[object]:
        return [
            s.timeout,
            s.local_hostname,
            s.source_address,
            s.esmtp_features,
            s.command_encoding,
            s._host,
            s.debuglevel,
            s.user,
            s.extra,
        ]

    with closing(Custom(local_hostname=LOCAL, timeout=T)) as idle:
        # (After connecting, anysmtp forgets ``does_esmtp``: compatibility.md.)
        not_connected = [*state(idle), idle.does_esmtp]
    with closing(Custom(host, port, local_hostname=LOCAL, timeout=T)) as s:
        return [not_connected, state(s), attempt(s.noop), attempt(s.quit)]


@scenario(async_api=False)
def attributes_read_before_the_constructor(
    smtplib: ModuleType, host: str, port: int
) -> object:
    # Before the constructor has run, reads find smtplib's class attributes.
    seen: list[object] = []

    class Early(smtplib.SMTP):  # type: ignore[name-defined,misc]
        debuglevel = 2

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.extend(
                [
                    self.sock,
                    self.debuglevel,
                    self.does_esmtp,
                    self.helo_resp,
                    self.ehlo_resp,
                    self.file,
                    self.default_port,
                    self.ehlo_msg,
                ]
            )
            super().__init__(*args, **kwargs)

    with closing(Early(local_hostname=LOCAL, timeout=T)) as s:
        return [seen, s.debuglevel, s.sock]


def _sock_kept_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib's socket is blocking for good...
    assert reference.result == [True, (250, b"ok"), True, (221, b"2.0.0 bye")]
    # ...anysmtp's is handed out again by each ``s.sock``.
    assert ours.result == [True, (250, b"ok"), False, (221, b"2.0.0 bye")]
    assert ours.transcript == reference.transcript == b"noop\r\nquit\r\n"


@scenario(
    script((b"noop", b"250 ok\r\n"), QUIT_OK),
    async_api=False,
    documented=Documented(
        row="`sock` stays in blocking mode for the whole connection",
        check=_sock_kept_check,
    ),
)
def sock_kept_across_a_call(smtplib: ModuleType, host: str, port: int) -> object:
    with closing(client(smtplib, host, port)) as s:
        sock = s.sock
        before = sock.getblocking()
        noop = attempt(s.noop)
        return [before, noop, sock.getblocking(), attempt(s.quit)]


def _patch_check(reference: Outcome, ours: Outcome) -> None:
    # smtplib: the program's class is the mock; nothing reaches the server.
    assert reference.result == [(250, b"mocked"), True]
    assert reference.transcript == b""
    # anysmtp: the program's ``smtplib`` is anysmtp, which the patch misses.
    assert ours.result == [(250, b"ok"), False]
    assert ours.transcript == b"noop\r\nquit\r\n"


@scenario(
    script((b"noop", b"250 ok\r\n"), QUIT_OK),
    async_api=False,
    documented=Documented(
        row='`mock.patch("smtplib.SMTP")` replaces the class',
        check=_patch_check,
    ),
)
def mock_patch_of_smtplib_smtp(smtplib: ModuleType, host: str, port: int) -> object:
    with mock.patch("smtplib.SMTP") as fake:
        fake.return_value.noop.return_value = (250, b"mocked")
        with closing(client(smtplib, host, port)) as s:
            reply = attempt(s.noop)
            s.quit()
        return [reply, fake.called]


def _pickle_check(reference: Outcome, ours: Outcome) -> None:
    assert reference.result == [["SMTP", LOCAL], ["SMTP", LOCAL], LOCAL]
    assert ours.result == [
        Raised(TypeError, ("cannot pickle 'SMTP' object",)),
        Raised(TypeError, ("cannot deep-copy 'SMTP' object",)),
        LOCAL,
    ]


@scenario(
    async_api=False,
    documented=Documented(
        row="An unconnected `SMTP` can be pickled and deep-copied",
        check=_pickle_check,
    ),
)
def pickle_and_copy_unconnected(smtplib: ModuleType, host: str, port: int) -> object:
    def described(copied: Any) -> list[object]:
        return [type(copied).__name__, copied.local_hostname]

    with closing(unconnected(smtplib)) as s:
        return [
            attempt(lambda: described(pickle.loads(pickle.dumps(s)))),
            attempt(lambda: described(copy.deepcopy(s))),
            copy.copy(s).local_hostname,
        ]


#: smtplib's class attributes, anysmtp's properties.
_AUTOSPEC_PROPERTIES: Final = ("sock", "helo_resp", "ehlo_resp", "does_esmtp")


def _autospec_check(reference: Outcome, ours: Outcome) -> None:
    # Both: the methods keep their signatures; the class values are values.
    assert isinstance(reference.result, list)
    assert isinstance(ours.result, list)
    assert ours.result[1:] == reference.result[1:]
    assert reference.result[0] == dict.fromkeys(_AUTOSPEC_PROPERTIES, False)
    assert ours.result[0] == dict.fromkeys(_AUTOSPEC_PROPERTIES, True)


@scenario(
    async_api=False,
    documented=Documented(
        row="`mock.create_autospec(SMTP, instance=True)` makes",
        check=_autospec_check,
    ),
)
def autospec_of_smtp(smtplib: ModuleType, host: str, port: int) -> object:
    fake = mock.create_autospec(smtplib.SMTP, instance=True)
    return [
        {name: callable(getattr(fake, name)) for name in _AUTOSPEC_PROPERTIES},
        {
            name: callable(getattr(fake, name))
            for name in ("debuglevel", "file", "default_port", "ehlo_msg")
        },
        attempt(fake.sendmail, ALICE),
        callable(fake.sendmail),
    ]


# The tests ----------------------------------------------------------------------------


def _params() -> list[Any]:
    params = []
    for each in SCENARIOS:
        variants: Sequence[str] = VARIANTS if each.async_api else ("facade",)
        for variant in variants:
            reason = each.xfail.get(variant) or each.xfail.get("*")
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(
                pytest.param(each, variant, id=f"{each.name}-{variant}", marks=marks)
            )
    return params


_REFERENCE: dict[str, Outcome] = {}


def reference_outcome(each: Scenario, stderr: Callable[[], str] | None) -> Outcome:
    """smtplib's outcome, computed once per scenario."""
    if each.name not in _REFERENCE:
        _REFERENCE[each.name] = run(
            "smtplib",
            each.program,
            each.scripts,
            aiosmtpd=each.aiosmtpd,
            stderr=stderr,
        )
    return _REFERENCE[each.name]


def test_scenario_count() -> None:
    assert len(SCENARIOS) >= 60
    assert len({each.name for each in SCENARIOS}) == len(SCENARIOS)


@pytest.mark.parametrize(
    "row",
    sorted({each.documented.row for each in SCENARIOS if each.documented}),
)
def test_documented_rows_exist(row: str) -> None:
    assert f"| {row}" in COMPATIBILITY_DOC


@pytest.mark.parametrize(("each", "variant"), _params())
def test_differential(
    each: Scenario, variant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def stderr() -> str:
        return capsys.readouterr().err

    capture = stderr if each.capture_stderr else None
    reference = reference_outcome(each, capture)
    ours = run(
        variant, each.program, each.scripts, aiosmtpd=each.aiosmtpd, stderr=capture
    )
    print_outcome("smtplib", reference)
    print_outcome(variant, ours)
    if each.documented is not None:
        each.documented.check(reference, ours)
        return
    view = each.transcript_view or (lambda transcript: transcript)
    assert ours.result == reference.result
    assert shape(ours.result) == shape(reference.result)
    assert view(ours.transcript) == view(reference.transcript)
    assert ours.server_errors == reference.server_errors
    assert ours.received == reference.received
    if each.capture_stderr:
        assert ours.stderr is not None
        assert reference.stderr is not None
        stderr_view = each.stderr_view or (lambda text: text)
        assert stderr_view(ours.stderr).splitlines() == (
            stderr_view(reference.stderr).splitlines()
        )
