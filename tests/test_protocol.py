"""Unit tests of the sans-IO protocol layer (anysmtp._protocol).

Wherever smtplib has an equivalent, the real smtplib of the running Python is the
reference: its ``getreply`` reads from an in-memory file, its ``putcmd`` and
``data`` write into a recorder, and its address and line-ending helpers are called
directly.
"""

from __future__ import annotations

import io
import itertools
import re
import smtplib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anysmtp._protocol import (
    _MAXLINE,
    CRLF,
    MAX_REPLY_SIZE,
    DataEncoder,
    RawReply,
    ReplyLimitError,
    ReplyParser,
    addr_only,
    bCRLF,
    crlf_only,
    fix_eols,
    format_command,
    has_dot_after_lf,
    quoteaddr,
)
from anysmtp._response import SMTPResponse

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

# smtplib's private helpers are not in typeshed: look them up once, typed.
_smtplib_fix_eols: Callable[[str], str] = vars(smtplib)["_fix_eols"]
_smtplib_quote_periods: Callable[[bytes], bytes] = vars(smtplib)["_quote_periods"]
_smtplib_addr_only: Callable[[str], str] = vars(smtplib)["_addr_only"]

FAST = settings(max_examples=300, deadline=None)
Outcome = tuple[list[tuple[int, bytes]], str]


# --------------------------------------------------------------------------
# References: the real smtplib, run without a network
# --------------------------------------------------------------------------


class _Recorder(smtplib.SMTP):
    """An unconnected smtplib.SMTP that records what it would send and answers
    from a script."""

    def __init__(self, replies: Sequence[tuple[int, bytes]] = ()) -> None:
        super().__init__(local_hostname="client.example")
        self.sent: list[bytes] = []
        self._replies = list(replies)

    def send(self, s: ReadableBuffer | str) -> None:
        self.sent.append(s.encode("ascii") if isinstance(s, str) else bytes(s))

    def getreply(self) -> tuple[int, bytes]:
        return self._replies.pop(0)


def smtplib_replies(data: bytes, maxline: int = _MAXLINE) -> Outcome:
    """Every reply smtplib's getreply reads from ``data`` and how reading ended:
    ``"eof"`` (SMTPServerDisconnected) or the message of the error it raised."""
    client = smtplib.SMTP(local_hostname="client.example")
    client.file = io.BytesIO(data)
    replies: list[tuple[int, bytes]] = []
    with mock.patch.object(smtplib, "_MAXLINE", maxline):
        while True:
            try:
                replies.append(client.getreply())
            except smtplib.SMTPServerDisconnected:
                return replies, "eof"
            except smtplib.SMTPResponseException as exc:
                error = exc
                break
    assert error.smtp_code == 500
    assert isinstance(error.smtp_error, str)
    return replies, error.smtp_error


def parse(
    chunks: Iterable[bytes],
    max_line: int = _MAXLINE,
    max_reply: int = MAX_REPLY_SIZE,
) -> Outcome:
    """Feed ``chunks`` then EOF, taking replies after every feed, as smtplib would
    see them; the outcome is ``"eof"`` or the ReplyLimitError's message."""
    parser = ReplyParser(max_line=max_line, max_reply=max_reply)
    replies: list[tuple[int, bytes]] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (reply := parser.next_reply()) is not None:
                replies.append((reply.code, reply.message))
        parser.feed_eof()
        while (reply := parser.next_reply()) is not None:
            replies.append((reply.code, reply.message))
    except ReplyLimitError as exc:
        return replies, str(exc)
    assert parser.at_eof
    return replies, "eof"


def smtplib_data_wire(body: str | bytes) -> bytes:
    """What smtplib's ``data()`` sends after the 354 reply."""
    client = _Recorder([(354, b"go ahead"), (250, b"ok")])
    assert client.data(body) == (250, b"ok")
    assert client.sent[0] == b"data\r\n"
    assert len(client.sent) == 2
    return client.sent[1]


def smtplib_putcmd(cmd: str, args: str) -> bytes:
    client = _Recorder()
    client.putcmd(cmd, args)
    assert len(client.sent) == 1
    return client.sent[0]


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary positions (empty chunks included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


@st.composite
def bytes_and_chunks(
    draw: st.DrawFn, data: st.SearchStrategy[bytes]
) -> tuple[bytes, list[bytes]]:
    body = draw(data)
    return body, draw(split(body))


_CODE = st.one_of(
    st.sampled_from([b"220", b"250", b"354", b"421", b"550", b"000", b"999"]),
    # What int() accepts or refuses in three bytes: blanks, signs, underscores,
    # short codes, letters, non-ASCII.
    st.sampled_from(
        [b"", b"2", b"25", b" 25", b"25 ", b"+25", b"-25", b"2_5", b"abc", b"\xb2\xb5"]
    ),
    st.binary(max_size=3),
)
_SEPARATOR = st.sampled_from([b"-", b" ", b"", b"\t", b"x", b"--", b"- "])
_TEXT = st.lists(
    st.sampled_from(
        [b"a", b"Z", b" ", b"\t", b"\r", b"-", b"5", b".", b"\x00", b"\xff", b"ok"]
    ),
    max_size=12,
).map(b"".join)
_END = st.sampled_from([b"\r\n", b"\n", b"\r\r\n", b" \t\r\n"])
_REPLY_LINE = st.builds(lambda *parts: b"".join(parts), _CODE, _SEPARATOR, _TEXT, _END)
_REPLY_STREAM = st.builds(
    lambda lines, tail: b"".join(lines) + tail,
    st.lists(_REPLY_LINE, max_size=12),
    st.one_of(
        st.just(b""), st.builds(lambda *p: b"".join(p), _CODE, _SEPARATOR, _TEXT)
    ),
)
REPLY_BYTES = st.one_of(_REPLY_STREAM, st.binary(max_size=200))


# --------------------------------------------------------------------------
# ReplyParser
# --------------------------------------------------------------------------


def test_single_line_reply() -> None:
    parser = ReplyParser()
    parser.feed(b"250 2.0.0 Ok: queued as 12345\r\n")
    reply = parser.next_reply()
    assert reply == RawReply(
        250,
        b"2.0.0 Ok: queued as 12345",
        [b"250 2.0.0 Ok: queued as 12345\r\n"],
        SMTPResponse(250, b"2.0.0 Ok: queued as 12345"),
    )
    assert parser.next_reply() is None
    assert parser.buffered == 0
    assert not parser.at_eof


def test_multi_line_reply() -> None:
    lines = [
        b"250-mx.example.com Hello client [192.0.2.1]\r\n",
        b"250-SIZE 35882577\r\n",
        b"250-8BITMIME\r\n",
        b"250-AUTH LOGIN PLAIN\r\n",
        b"250 SMTPUTF8\r\n",
    ]
    parser = ReplyParser()
    parser.feed(b"".join(lines))
    reply = parser.next_reply()
    assert reply is not None
    assert reply.code == 250
    assert reply.message == (
        b"mx.example.com Hello client [192.0.2.1]\n"
        b"SIZE 35882577\n8BITMIME\nAUTH LOGIN PLAIN\nSMTPUTF8"
    )
    assert reply.lines == lines
    assert parser.next_reply() is None


def test_nothing_before_the_last_line_of_a_multi_line_reply() -> None:
    parser = ReplyParser()
    parser.feed(b"250-first\r\n250-second\r\n")
    assert parser.next_reply() is None
    assert parser.buffered == len(b"250-first\r\n250-second\r\n")
    parser.feed(b"250 last")
    assert parser.next_reply() is None
    parser.feed(b"\r\n")
    reply = parser.next_reply()
    assert reply is not None
    assert (reply.code, reply.message) == (250, b"first\nsecond\nlast")
    assert parser.buffered == 0


def test_pipelined_replies_in_one_feed() -> None:
    parser = ReplyParser()
    parser.feed(
        b"250 2.1.0 Sender ok\r\n"
        b"550-5.1.1 No such\r\n550 5.1.1 user\r\n"
        b"250 2.1.5 Recipient ok\r\n"
        b"354 Go ahead\r\n"
        b"250 partial"
    )
    replies = []
    while (reply := parser.next_reply()) is not None:
        replies.append((reply.code, reply.message))
    assert replies == [
        (250, b"2.1.0 Sender ok"),
        (550, b"5.1.1 No such\n5.1.1 user"),
        (250, b"2.1.5 Recipient ok"),
        (354, b"Go ahead"),
    ]
    assert parser.buffered == len(b"250 partial")


def test_message_is_stripped_like_smtplib() -> None:
    parser = ReplyParser()
    parser.feed(b"250-  \tspaced \t \r\n250 \r\n")
    reply = parser.next_reply()
    assert reply is not None
    assert reply.message == b"spaced\n"


def test_bare_lf_and_cr_inside_a_line() -> None:
    parser = ReplyParser()
    parser.feed(b"250-a\rb\n250 c\r\r\n")
    reply = parser.next_reply()
    assert reply is not None
    assert (reply.code, reply.message) == (250, b"a\rb\nc")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # A non-numeric code ends the reply at once with -1, even after "-".
        (b"abc-not a code\r\n250 ok\r\n", [(-1, b"not a code"), (250, b"ok")]),
        (
            b"250-first\r\nxyz second\r\n250 third\r\n",
            [(-1, b"first\nsecond"), (250, b"third")],
        ),
        # int() accepts blanks, signs and underscores.
        (b" 25 odd\r\n", [(25, b"odd")]),
        (b"+25 odd\r\n", [(25, b"odd")]),
        (b"-25 odd\r\n", [(-25, b"odd")]),
        (b"2_5 odd\r\n", [(25, b"odd")]),
        # Short lines: a code from fewer than three bytes, no message.
        (b"25\r\n", [(25, b"")]),
        (b"2x\r\n", [(-1, b"")]),
        (b"2\n", [(2, b"")]),
        (b"\r\n", [(-1, b"")]),
        (b"\n", [(-1, b"")]),
        # Anything but "-" in the fourth byte ends the reply.
        (b"250xhello\r\n", [(250, b"hello")]),
        (b"250\r\n", [(250, b"")]),
        (b"250--x\r\n250 y\r\n", [(250, b"-x\ny")]),
    ],
)
def test_smtplib_quirks(data: bytes, expected: list[tuple[int, bytes]]) -> None:
    assert smtplib_replies(data) == (expected, "eof")
    assert parse([data]) == (expected, "eof")


def test_partial_last_line_counts_at_eof() -> None:
    parser = ReplyParser()
    parser.feed(b"250-first\r\n250 last, no CRLF")
    assert parser.next_reply() is None
    parser.feed_eof()
    reply = parser.next_reply()
    assert reply is not None
    assert (reply.code, reply.message) == (250, b"first\nlast, no CRLF")
    assert reply.lines[-1] == b"250 last, no CRLF"
    assert parser.at_eof
    assert parser.next_reply() is None


def test_eof_inside_a_multi_line_reply_gives_no_reply() -> None:
    # smtplib raises SMTPServerDisconnected here; the parser has no reply to give.
    data = b"250-first\r\n250-second"
    assert smtplib_replies(data) == ([], "eof")
    parser = ReplyParser()
    parser.feed(data)
    parser.feed_eof()
    assert parser.next_reply() is None
    assert parser.at_eof
    assert parser.buffered == len(data)


def test_eof_with_nothing_buffered() -> None:
    assert not ReplyParser().at_eof
    parser = ReplyParser()
    parser.feed_eof()
    assert parser.at_eof
    assert parser.next_reply() is None


def test_next_line() -> None:
    parser = ReplyParser()
    parser.feed(b"250-a\r\n250 b")
    assert parser.next_line() == b"250-a\r\n"
    assert parser.next_line() is None
    parser.feed_eof()
    assert parser.next_line() == b"250 b"
    assert parser.next_line() is None


def test_clear_forgets_a_partial_reply_and_eof() -> None:
    parser = ReplyParser()
    parser.feed(b"250-stale\r\n250-stale too\r\n250 half")
    assert parser.next_reply() is None
    parser.feed_eof()
    parser.clear()
    assert parser.buffered == 0
    assert not parser.at_eof
    parser.feed(b"220 fresh\r\n")
    reply = parser.next_reply()
    assert reply == RawReply(
        220, b"fresh", [b"220 fresh\r\n"], SMTPResponse(220, b"fresh")
    )


def test_clear_after_a_limit_error_makes_the_parser_usable() -> None:
    parser = ReplyParser(max_line=16)
    parser.feed(b"250 " + b"x" * 20)
    with pytest.raises(ReplyLimitError):
        parser.next_reply()
    parser.clear()
    parser.feed(b"250 ok\r\n")
    reply = parser.next_reply()
    assert reply is not None
    assert (reply.code, reply.message) == (250, b"ok")


def test_reply_limit_error_is_a_value_error() -> None:
    assert issubclass(ReplyLimitError, ValueError)


# A transcript whose replies are known; the last one is a partial line at EOF.
TRANSCRIPT: list[tuple[bytes, int, bytes]] = [
    (b"220 mx.example.com ESMTP ready\r\n", 220, b"mx.example.com ESMTP ready"),
    (
        b"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n",
        250,
        b"mx.example.com\nPIPELINING\nSIZE 1000\n8BITMIME",
    ),
    (b"250 2.1.0 Ok\n", 250, b"2.1.0 Ok"),
    (b"550-5.1.1 first\r\n550 5.1.1 second\r\n", 550, b"5.1.1 first\n5.1.1 second"),
    (
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
        354,
        b"End data with <CR><LF>.<CR><LF>",
    ),
    (b"250-a\r\nbad line\r\n", -1, b"a\nline"),
    (b"221 Bye", 221, b"Bye"),
]
TRANSCRIPT_BYTES = b"".join(raw for raw, _, _ in TRANSCRIPT)
TRANSCRIPT_REPLIES = [(code, message) for _, code, message in TRANSCRIPT]


def test_transcript_matches_smtplib() -> None:
    assert smtplib_replies(TRANSCRIPT_BYTES) == (TRANSCRIPT_REPLIES, "eof")
    assert parse([TRANSCRIPT_BYTES]) == (TRANSCRIPT_REPLIES, "eof")


def test_transcript_split_at_every_byte_position() -> None:
    # Where each complete reply (except the EOF-terminated last one) ends.
    ends = []
    offset = 0
    for raw, _, _ in TRANSCRIPT[:-1]:
        offset += len(raw)
        ends.append(offset)
    for cut in range(len(TRANSCRIPT_BYTES) + 1):
        parser = ReplyParser()
        parser.feed(TRANSCRIPT_BYTES[:cut])
        early = []
        while (reply := parser.next_reply()) is not None:
            early.append((reply.code, reply.message))
        # Exactly the replies complete by then, no more, no fewer.
        assert early == TRANSCRIPT_REPLIES[: sum(end <= cut for end in ends)], cut
        parser.feed(TRANSCRIPT_BYTES[cut:])
        parser.feed_eof()
        late = []
        while (reply := parser.next_reply()) is not None:
            late.append((reply.code, reply.message))
        assert early + late == TRANSCRIPT_REPLIES, cut
        assert parser.at_eof


def test_transcript_split_at_every_pair_of_positions() -> None:
    size = len(TRANSCRIPT_BYTES)
    for first in range(0, size + 1, 3):
        for second in range(first, size + 1, 5):
            chunks = [
                TRANSCRIPT_BYTES[:first],
                TRANSCRIPT_BYTES[first:second],
                TRANSCRIPT_BYTES[second:],
            ]
            assert parse(chunks) == (TRANSCRIPT_REPLIES, "eof"), (first, second)


def test_transcript_fed_byte_by_byte() -> None:
    chunks = [TRANSCRIPT_BYTES[i : i + 1] for i in range(len(TRANSCRIPT_BYTES))]
    assert parse(chunks) == (TRANSCRIPT_REPLIES, "eof")


def test_feed_accepts_bytearray_and_memoryview() -> None:
    parser = ReplyParser()
    parser.feed(bytearray(b"250-a\r\n"))
    parser.feed(memoryview(b"250 b\r\n"))
    reply = parser.next_reply()
    assert reply is not None
    assert (reply.code, reply.message) == (250, b"a\nb")


# ---- line limit -----------------------------------------------------------


def _line(length: int, ending: bytes = b"\r\n") -> bytes:
    """A ``250`` reply line of exactly ``length`` bytes, ``ending`` included."""
    return b"250 " + b"x" * (length - 4 - len(ending)) + ending


def test_maxline_is_smtplibs() -> None:
    assert _MAXLINE == 8192 == vars(smtplib)["_MAXLINE"]


def test_line_of_exactly_maxline_bytes_is_accepted() -> None:
    line = _line(_MAXLINE)
    assert len(line) == 8192
    assert smtplib_replies(line) == ([(250, line[4:-2])], "eof")
    parser = ReplyParser()
    parser.feed(line)
    reply = parser.next_reply()
    assert reply is not None
    assert reply.lines == [line]


def test_line_of_maxline_bytes_without_newline_waits() -> None:
    parser = ReplyParser()
    parser.feed(b"250 " + b"x" * (_MAXLINE - 4))
    assert parser.next_reply() is None
    parser.feed_eof()
    reply = parser.next_reply()
    assert reply is not None
    assert reply.message == b"x" * (_MAXLINE - 4)


def test_line_longer_than_maxline_before_its_newline_arrives() -> None:
    parser = ReplyParser()
    parser.feed(b"250 " + b"x" * (_MAXLINE - 4))
    assert parser.next_reply() is None
    parser.feed(b"x")  # byte 8193, still no newline
    with pytest.raises(ReplyLimitError, match=r"^Line too long\.$"):
        parser.next_reply()


def test_very_long_line_raises_in_one_feed() -> None:
    parser = ReplyParser()
    parser.feed(b"250-ok\r\n250 " + b"x" * 100_000 + b"\r\n")
    with pytest.raises(ReplyLimitError, match=r"^Line too long\.$"):
        parser.next_reply()
    assert smtplib_replies(b"250-ok\r\n250 " + b"x" * 100_000 + b"\r\n") == (
        [],
        "Line too long.",
    )


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_line_of_maxline_plus_one_bytes_is_refused(ending: bytes) -> None:
    line = _line(_MAXLINE + 1, ending)
    assert len(line) == 8193
    assert smtplib_replies(line) == ([], "Line too long.")
    parser = ReplyParser()
    parser.feed(line)
    with pytest.raises(ReplyLimitError, match=r"^Line too long\.$"):
        parser.next_reply()


def _limit_cases() -> list[object]:
    cases: list[object] = []
    for max_line in (8, 16, _MAXLINE):
        for delta in (-2, -1, 0, 1, 2):
            for ending in (b"\r\n", b"\n", b""):
                length = max_line + delta
                cases.append(
                    pytest.param(
                        max_line,
                        length,
                        ending,
                        id=f"max{max_line}-len{length}-{ending!r}",
                    )
                )
    return cases


@pytest.mark.parametrize(("max_line", "length", "ending"), _limit_cases())
def test_line_limit_matches_smtplib(max_line: int, length: int, ending: bytes) -> None:
    line = _line(length, ending)
    assert len(line) == length
    # A following reply (which fits every limit) shows whether parsing went on
    # after the line; without a line ending the line is ended by EOF.
    data = line + b"221 a\n" if ending else line
    expected = smtplib_replies(data, maxline=max_line)
    assert parse([data], max_line=max_line) == expected
    chunks = [data[i : i + 3] for i in range(0, len(data), 3)]
    assert parse(chunks, max_line=max_line) == expected
    # And the result itself, so that the test does not trust smtplib blindly.
    too_long = length > max_line
    assert (expected[1] == "Line too long.") is too_long


# ---- reply limit ----------------------------------------------------------


def test_endless_multi_line_reply_is_refused() -> None:
    parser = ReplyParser()
    line = b"250-" + b"x" * 1018 + b"\r\n"  # 1 KiB
    block = line * 64
    fed = 0
    with pytest.raises(ReplyLimitError, match=r"^Reply too long\.$"):  # noqa: PT012
        for _ in range(10_000):
            parser.feed(block)
            fed += len(block)
            assert parser.next_reply() is None
    # It stopped as soon as the cap was crossed, not after buffering much more.
    assert MAX_REPLY_SIZE < fed <= MAX_REPLY_SIZE + len(block)


def test_endless_reply_in_one_feed() -> None:
    parser = ReplyParser()
    parser.feed(b"250-x\r\n" * (MAX_REPLY_SIZE // 7 + 10))
    with pytest.raises(ReplyLimitError, match=r"^Reply too long\.$"):
        parser.next_reply()


def _reply_of_size(size: int) -> bytes:
    """A multi-line reply of exactly ``size`` bytes (more than 2 * _MAXLINE), every
    line within _MAXLINE: full lines, one shorter line, a final ``250 z\\n``."""
    full = _line(_MAXLINE).replace(b"250 ", b"250-", 1)
    count, rest = divmod(size - 6 - 6, _MAXLINE)
    shorter = b"250-" + b"y" * rest + b"\r\n"
    reply = full * count + shorter + b"250 z\n"
    assert len(reply) == size
    return reply


def test_reply_of_exactly_max_reply_size_is_accepted() -> None:
    reply = _reply_of_size(MAX_REPLY_SIZE)
    parser = ReplyParser()
    parser.feed(reply)
    result = parser.next_reply()
    assert result is not None
    assert result.code == 250
    assert len(result.lines) == 129
    assert result.message.endswith(b"\nz")


def test_reply_one_byte_over_max_reply_size_is_refused() -> None:
    reply = _reply_of_size(MAX_REPLY_SIZE + 1)
    parser = ReplyParser()
    parser.feed(reply)
    with pytest.raises(ReplyLimitError, match=r"^Reply too long\.$"):
        parser.next_reply()


def test_reply_limit_counts_each_reply_separately() -> None:
    reply = b"250-abcd\r\n250 efgh\r\n"  # 20 bytes
    parser = ReplyParser(max_reply=20)
    parser.feed(reply * 5)
    for _ in range(5):
        result = parser.next_reply()
        assert result is not None
        assert result.message == b"abcd\nefgh"
    parser.feed(b"250-abcd\r\n250 efghi\r\n")
    with pytest.raises(ReplyLimitError, match=r"^Reply too long\.$"):
        parser.next_reply()


def test_clear_resets_the_reply_size() -> None:
    parser = ReplyParser(max_reply=20)
    parser.feed(b"250-abcdefghijklm\r\n")
    assert parser.next_reply() is None
    parser.clear()
    parser.feed(b"250-abcd\r\n250 efgh\r\n")
    result = parser.next_reply()
    assert result is not None
    assert result.message == b"abcd\nefgh"


# ---- properties -----------------------------------------------------------


@FAST
@given(data=REPLY_BYTES)
def test_parity_with_smtplib_getreply(data: bytes) -> None:
    assert parse([data]) == smtplib_replies(data)


@FAST
@given(case=bytes_and_chunks(REPLY_BYTES))
def test_chunked_parity_with_smtplib_getreply(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    assert parse(chunks) == smtplib_replies(data)


@FAST
@given(
    case=bytes_and_chunks(REPLY_BYTES),
    max_line=st.integers(1, 24),
    max_reply=st.integers(1, 80),
)
def test_never_raises_but_limit_errors_and_ignores_chunking(
    case: tuple[bytes, list[bytes]], max_line: int, max_reply: int
) -> None:
    data, chunks = case
    whole = parse([data], max_line=max_line, max_reply=max_reply)
    assert parse(chunks, max_line=max_line, max_reply=max_reply) == whole
    assert whole[1] in {"eof", "Line too long.", "Reply too long."}


@FAST
@given(case=bytes_and_chunks(st.binary(max_size=300)))
def test_arbitrary_bytes_lines_account_for_every_byte(
    case: tuple[bytes, list[bytes]],
) -> None:
    data, chunks = case
    parser = ReplyParser()
    taken: list[bytes] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next_reply()) is not None:
            taken.extend(reply.lines)
            assert all(len(line) <= _MAXLINE for line in reply.lines)
    parser.feed_eof()
    while (reply := parser.next_reply()) is not None:
        taken.extend(reply.lines)
    consumed = b"".join(taken)
    assert data.startswith(consumed)
    assert len(data) - len(consumed) == parser.buffered


# --------------------------------------------------------------------------
# format_command
# --------------------------------------------------------------------------


def test_verb_alone_when_args_empty() -> None:
    assert format_command("noop") == "noop\r\n"
    assert format_command("noop", "") == "noop\r\n"
    assert format_command("QUIT") == "QUIT\r\n"


def test_verb_and_arguments() -> None:
    assert format_command("mail", "FROM:<a@b> SIZE=10") == "mail FROM:<a@b> SIZE=10\r\n"
    # A blank argument is an argument (smtplib compares with "" only).
    assert format_command("help", " ") == "help  \r\n"
    assert format_command("mail", "FROM:<a@b>") == smtplib_putcmd(
        "mail", "FROM:<a@b>"
    ).decode("ascii")
    assert format_command("noop", "") == smtplib_putcmd("noop", "").decode("ascii")
    assert CRLF == "\r\n"
    assert bCRLF == b"\r\n"


def test_non_ascii_is_allowed() -> None:
    assert format_command("mail", "FROM:<jörg@exämple.com> SMTPUTF8") == (
        "mail FROM:<jörg@exämple.com> SMTPUTF8\r\n"
    )
    # C1 controls and Unicode line separators are not ASCII controls.
    assert format_command("rcpt", "TO:<a\x85\u2028@b>") == "rcpt TO:<a\x85\u2028@b>\r\n"


@pytest.mark.parametrize(
    ("cmd", "args"),
    [
        ("mail", "FROM:<a@b>\r\nRCPT TO:<evil@x>"),
        ("mail", "FROM:<a@b>\n"),
        ("mail", "FROM:<a@b>\r"),
        ("rcpt\r\n", "TO:<a@b>"),
        ("noop\n", ""),
        ("\r", ""),
        ("data", "\r\n.\r\n"),
    ],
)
def test_newlines_raise_smtplibs_exact_message(cmd: str, args: str) -> None:
    with pytest.raises(ValueError, match="prohibited newline") as ours:
        format_command(cmd, args)
    with pytest.raises(ValueError, match="prohibited newline") as theirs:
        smtplib_putcmd(cmd, args)
    assert str(ours.value) == str(theirs.value)
    assert "\r" not in str(ours.value)
    assert "\n" not in str(ours.value)


def test_newline_message_text() -> None:
    with pytest.raises(ValueError, match="prohibited newline") as info:
        format_command("mail", "FROM:<a@b>\r\nRSET")
    assert str(info.value) == (
        "command and arguments contain prohibited newline characters: "
        "mail FROM:<a@b>\\r\\nRSET"
    )


@pytest.mark.parametrize("char", [chr(c) for c in [*range(32), 127]])
@pytest.mark.parametrize("where", ["cmd", "args"])
def test_control_characters_raise(char: str, where: str) -> None:
    cmd, args = (
        ("ma" + char + "il", "FROM:<a@b>")
        if where == "cmd"
        else ("mail", f"FROM:<a{char}@b>")
    )
    with pytest.raises(ValueError, match="prohibited"):
        format_command(cmd, args)


@FAST
@given(cmd=st.text(min_size=1, max_size=8), args=st.text(max_size=30))
def test_format_command_against_smtplib_putcmd(cmd: str, args: str) -> None:
    line = cmd if args == "" else f"{cmd} {args}"
    if re.search(r"[\r\n]", line):
        with pytest.raises(ValueError, match="prohibited newline") as ours:
            format_command(cmd, args)
        with pytest.raises(ValueError, match="prohibited newline") as theirs:
            smtplib_putcmd(cmd, args)
        assert str(ours.value) == str(theirs.value)
    elif re.search(r"[\x00-\x1f\x7f]", line):
        with pytest.raises(ValueError, match="prohibited control characters"):
            format_command(cmd, args)
    else:
        assert format_command(cmd, args) == line + "\r\n"
        if line.isascii():
            assert format_command(cmd, args).encode("ascii") == smtplib_putcmd(
                cmd, args
            )


# --------------------------------------------------------------------------
# fix_eols
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("a", "a"),
        ("a\nb", "a\r\nb"),
        ("a\rb", "a\r\nb"),
        ("a\r\nb", "a\r\nb"),
        ("\r\r\n", "\r\n\r\n"),
        ("\n\r", "\r\n\r\n"),
        ("\r\n\r", "\r\n\r\n"),
        ("\n\n", "\r\n\r\n"),
    ],
)
def test_fix_eols_cases(text: str, expected: str) -> None:
    assert fix_eols(text) == expected
    assert _smtplib_fix_eols(text) == expected


@FAST
@given(text=st.one_of(st.text(alphabet="\r\na. \x85\u2028", max_size=40), st.text()))
def test_fix_eols_equals_smtplib(text: str) -> None:
    assert fix_eols(text) == _smtplib_fix_eols(text)


# --------------------------------------------------------------------------
# DataEncoder
# --------------------------------------------------------------------------

END = b"\r\n.\r\n"
_BARE_EOL = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def reference_payload(body: bytes) -> bytes:
    """The DATA payload built independently: smtplib's regex for line endings on
    bytes, smtplib's dot-stuffing, smtplib's terminator."""
    q = _smtplib_quote_periods(re.sub(rb"\r\n|\n|\r(?!\n)", b"\r\n", body))
    if q[-2:] != b"\r\n":
        q += b"\r\n"
    return q + b".\r\n"


def unstuff(payload: bytes) -> bytes:
    assert payload.endswith(b"\r\n.\r\n")
    lines = payload[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b"..") else line for line in lines)


def encode_chunks(chunks: Iterable[bytes], encoder: DataEncoder | None = None) -> bytes:
    encoder = DataEncoder() if encoder is None else encoder
    out = [encoder.encode(chunk) for chunk in chunks]
    return b"".join(out) + encoder.finish()


def all_splits(body: bytes) -> list[list[bytes]]:
    """``body`` whole, byte by byte, and cut once at every position."""
    splits = [[body], [body[i : i + 1] for i in range(len(body))]]
    splits += [[body[:i], body[i:]] for i in range(len(body) + 1)]
    return splits


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", b"\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b"\r\n", b"\r\n.\r\n"),
        (b"\r", b"\r\n.\r\n"),
        (b"\n", b"\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r", b"a\r\n.\r\n"),
        (b"a\n", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"\n\n", b"\r\n\r\n.\r\n"),
        (b"\r\r\n", b"\r\n\r\n.\r\n"),
        (b"\n\r", b"\r\n\r\n.\r\n"),
        (b"..a\r\n.b", b"...a\r\n..b\r\n.\r\n"),
        (b".\r\n.\r\n", b"..\r\n..\r\n.\r\n"),
        (b"x\r\n.\r\n", b"x\r\n..\r\n.\r\n"),
        (b"a.b\r\n .c", b"a.b\r\n .c\r\n.\r\n"),
        (b"Subject: x\r\n\r\nbody\r\n", b"Subject: x\r\n\r\nbody\r\n.\r\n"),
    ],
)
def test_encode_all_cases(body: bytes, expected: bytes) -> None:
    assert DataEncoder.encode_all(body) == expected
    assert reference_payload(body) == expected
    # smtplib's data() with the same body as str (line endings fixed there too).
    assert smtplib_data_wire(body.decode("ascii")) == expected
    for chunks in all_splits(body):
        assert encode_chunks(chunks) == expected, chunks


@pytest.mark.parametrize(
    "body",
    [
        b"a\n.\nb",
        b"a\r.\rb",
        b"a\r\n.\r\nb",
        b"a\n.\r\nb",
        b"a\r\n.\nb",
        b"a\r.\nb",
        b"a\n.\rb",
        b"a\r.\r\nb",
        b"\n.\n",
        b"\r.\r",
        b".\n",
        b".\r",
        b"a\r\n.",
        b"a\n.",
        b"a\r.",
        b"a\r\n.\r",
        b"a\n\r.\r\n",
        b"\r\n.\r\n",
    ],
)
def test_no_premature_end_of_data(body: bytes) -> None:
    for chunks in all_splits(body):
        out = encode_chunks(chunks)
        assert out.endswith(END), chunks
        assert out.find(END) == len(out) - len(END), (chunks, out)
        assert _BARE_EOL.search(out) is None, (chunks, out)


@pytest.mark.parametrize("body", [b"a\n.\nb", b"a\r.\rb", b"a\r\n.\r\nb"])
def test_smuggling_bodies_exact_output(body: bytes) -> None:
    assert DataEncoder.encode_all(body) == b"a\r\n..\r\nb\r\n.\r\n"


@pytest.mark.parametrize(
    "body", [b"", b"a", b"a\r\nb", b".a\r\n..b\r\n", b"x\r\n.\r\ny", b"\r\n\r\n"]
)
def test_crlf_bytes_body_equals_smtplib_data(body: bytes) -> None:
    # With nothing to normalise, bytes bodies go out as smtplib sends them.
    assert DataEncoder.encode_all(body) == smtplib_data_wire(body)


def test_bytes_body_deliberately_differs_from_smtplib_for_bare_lf() -> None:
    # smtplib sends bytes as they are; anysmtp normalises (SMTP smuggling defence).
    assert smtplib_data_wire(b"a\n.\nb") == b"a\n..\nb\r\n.\r\n"
    assert smtplib_data_wire(b"a\r.\rb") == b"a\r.\rb\r\n.\r\n"
    assert DataEncoder.encode_all(b"a\n.\nb") == b"a\r\n..\r\nb\r\n.\r\n"
    assert DataEncoder.encode_all(b"a\r.\rb") == b"a\r\n..\r\nb\r\n.\r\n"


def test_pending_cr_is_resolved_by_the_next_chunk() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"a\r") == b"a"
    assert encoder.encode(b"") == b""
    assert encoder.encode(b"\n.b") == b"\r\n..b"
    assert encoder.encode(b"\r") == b""
    assert encoder.encode(b".") == b"\r\n.."
    assert encoder.finish() == b"\r\n.\r\n"


def test_line_start_crosses_chunks() -> None:
    encoder = DataEncoder()
    assert encoder.encode(b"x\r\n") == b"x\r\n"
    assert encoder.encode(b".y") == b"..y"
    assert encoder.encode(b".z") == b".z"
    assert encoder.finish() == b"\r\n.\r\n"


def test_encoder_is_reusable_after_finish() -> None:
    encoder = DataEncoder()
    # Leave every kind of state behind: mid-line, pending CR, line start.
    for first in (b"abc", b"abc\r", b"abc\r\n", b".", b""):
        encoder.encode(first)
        encoder.finish()
        assert encode_chunks([b".second"], encoder) == b"..second\r\n.\r\n"
        assert encode_chunks([], encoder) == b"\r\n.\r\n"
        assert encode_chunks([b"\n"], encoder) == b"\r\n.\r\n"


_BODY_PIECES = st.sampled_from(
    [
        b"\r",
        b"\n",
        b"\r\n",
        b".",
        b"..",
        b"a",
        b"Zz",
        b" ",
        b"\x00",
        b"\xff",
        b"\r\n.\r\n",
    ]
)
BODIES = st.one_of(
    st.lists(_BODY_PIECES, max_size=30).map(b"".join), st.binary(max_size=200)
)


@FAST
@given(case=bytes_and_chunks(BODIES))
def test_encoder_properties(case: tuple[bytes, list[bytes]]) -> None:
    body, chunks = case
    encoder = DataEncoder()
    outputs = []
    for chunk in chunks:
        out = encoder.encode(chunk)
        # Streaming: at most one byte (a CR) is held back per chunk.
        assert len(out) >= len(chunk) - 1
        outputs.append(out)
    payload = b"".join(outputs) + encoder.finish()

    assert payload == DataEncoder.encode_all(body)
    assert payload == reference_payload(body)
    assert payload.endswith(END)
    assert payload.find(END) == len(payload) - len(END)
    assert _BARE_EOL.search(payload) is None
    lines = payload[:-3].split(b"\r\n")
    assert all(line.startswith(b"..") for line in lines if line.startswith(b"."))

    normalised = re.sub(rb"\r\n|\n|\r(?!\n)", b"\r\n", body)
    if not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert unstuff(payload) == normalised


@FAST
@given(first=bytes_and_chunks(BODIES), second=bytes_and_chunks(BODIES))
def test_encoder_reuse_property(
    first: tuple[bytes, list[bytes]], second: tuple[bytes, list[bytes]]
) -> None:
    encoder = DataEncoder()
    assert encode_chunks(first[1], encoder) == DataEncoder.encode_all(first[0])
    assert encode_chunks(second[1], encoder) == DataEncoder.encode_all(second[0])


@FAST
@given(text=st.text(alphabet="\r\n.ab \t", max_size=60))
def test_encode_all_equals_smtplib_data_for_str(text: str) -> None:
    assert DataEncoder.encode_all(text.encode("ascii")) == smtplib_data_wire(text)


# --------------------------------------------------------------------------
# quoteaddr and addr_only
# --------------------------------------------------------------------------

TRICKY_ADDRESSES = [
    "",
    " ",
    "<>",
    " <> ",
    "<> ",
    "a@b",
    "user@example.com",
    "user+tag@example.com",
    "o'reilly@example.com",
    "{weird}|~`^$#!%&*=?/@example.com",
    "first.last@sub.example.co.uk",
    "1@2.3",
    "a@b-c.d",
    "a@b_c.d",
    "a@-b.c",
    "a@b-.c",
    "a@b..c",
    "a@b.",
    "a.@b",
    ".a@b",
    "a..b@c",
    "<user@example.com>",
    "<user@example.com",
    "user@example.com>",
    "<<user@example.com>>",
    "User <user@example.com>",
    "User Name<user@example.com>",
    '"Doe, John" <john@example.com>',
    '"John Doe" <john@example.com>',
    '"john doe"@example.com',
    '"a@b"@example.com',
    '"quoted\\"inner"@example.com',
    "john@example.com (John Doe)",
    "(comment) john@example.com",
    "john(comment)@example.com",
    "john@(comment)example.com",
    "  user@example.com  ",
    "\tuser@example.com",
    "user @ example.com",
    "us er@example.com",
    "user@exam ple.com",
    "a@b@c",
    "@example.com",
    "user@",
    "user",
    "MAILER-DAEMON",
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "ñandú@example.com",
    "user@exämple.com",
    "Jörg <jörg@example.com>",
    "=?utf-8?q?J=C3=B6rg?= <j@example.com>",
    "a@b, c@d",
    "group: a@b, c@d;",
    "undisclosed-recipients:;",
    "<a@b> trailing",
    "leading <a@b> trailing",
    "a\\@b@example.com",
    "@route,@relay:user@example.com",
    "<@route:user@example.com>",
    "user@example.com\t",
    "<",
    ">",
    '"',
    "(",
    "()",
    # One special character inside an otherwise plain address: the fast path
    # must leave these to parseaddr.
    "a(b@c",
    "a)b@c",
    "a,b@c",
    "a:b@c",
    "a;b@c",
    "a[b@c",
    "a<b@c",
    'a"b@c',
    "a\\b@c",
    "a@b c",
    "a  b@c",
    " a@b",
    "a @b",
    "a@b(c",
    "a@b,c",
    "a@b:c",
    "a@b<c",
    "\\",
]


@pytest.mark.parametrize("address", TRICKY_ADDRESSES)
def test_quoteaddr_and_addr_only_tricky(address: str) -> None:
    assert quoteaddr(address) == smtplib.quoteaddr(address)
    assert addr_only(address) == _smtplib_addr_only(address)


def test_quoteaddr_known_answers() -> None:
    assert quoteaddr("a@b") == "<a@b>"
    assert quoteaddr("User <a@b>") == "<a@b>"
    assert quoteaddr("<>") == "<>"
    assert quoteaddr("") == "<>"
    assert addr_only("User <a@b>") == "a@b"
    assert addr_only("a@b") == "a@b"
    assert addr_only("") == ""


_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_LOCAL = st.lists(
    st.text(alphabet=_ATEXT, min_size=0, max_size=5), min_size=1, max_size=3
).map(".".join)
_LABEL = st.text(alphabet="abZ09-_", min_size=0, max_size=6)
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_PLAINISH = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN)
_DECORATED = st.builds(
    lambda template, address: template.format(address),
    st.sampled_from(
        [
            "{}",
            "<{}>",
            "Name <{}>",
            "{} (c)",
            " {} ",
            '"x y" <{}>',
            "{}>",
            "<{}",
            "{}.",
            "{}@x",
        ]
    ),
    _PLAINISH,
)
_SPECIALS = '()<>[]:;@\\,." \t\x85é'


@st.composite
def near_plain(draw: st.DrawFn) -> str:
    """A plain ``local@domain`` with one special character inserted somewhere."""
    address = draw(_PLAINISH)
    where = draw(st.integers(0, len(address)))
    return address[:where] + draw(st.sampled_from(_SPECIALS)) + address[where:]


_ADDRESSISH = st.text(alphabet="ab.@<>\"()[],:;\\ \t-_+é'", max_size=30)


@settings(max_examples=500, deadline=None)
@given(address=st.one_of(_PLAINISH, near_plain(), _DECORATED, _ADDRESSISH))
def test_quoteaddr_and_addr_only_equal_smtplib(address: str) -> None:
    assert quoteaddr(address) == smtplib.quoteaddr(address)
    assert addr_only(address) == _smtplib_addr_only(address)


# --------------------------------------------------------------------------
# The checks that let a large body go without a copy
# --------------------------------------------------------------------------


def counted_crlf_only(body: bytes) -> bool:
    crlf = body.count(b"\r\n")
    return body.count(b"\n") == crlf and body.count(b"\r") == crlf


@FAST
@given(body=BODIES, slice_size=st.integers(1, 9))
def test_one_pass_line_ending_check_equals_counting(
    body: bytes, slice_size: int
) -> None:
    # With tiny slices, as a large body is read: a CR or a CRLF falls on every
    # slice boundary.
    with mock.patch("anysmtp._protocol._SCAN_SLICE", slice_size):
        assert crlf_only(body) == counted_crlf_only(body)
    assert crlf_only(body) == counted_crlf_only(body)


@FAST
@given(body=st.one_of(BODIES, st.text(alphabet="\n.a", max_size=300).map(str.encode)))
def test_dot_search_equals_substring_search(body: bytes) -> None:
    # Forced onto small bodies: many have more dots than the search's budget,
    # so both its ways (dot by dot, then one search for "\n.") are exercised.
    with mock.patch("anysmtp._protocol._DOT_BY_DOT_ABOVE", -1):
        assert has_dot_after_lf(body) == (b"\n." in body)
    assert has_dot_after_lf(body) == (b"\n." in body)


_BASE64_LINE = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" * 2
)[:76] + b"\r\n"
#: A message past two of the check's slices, mostly base64 lines.
_LARGE = b"From: a@example.com\r\n\r\n" + _BASE64_LINE * 30_000
_MIB = 1024 * 1024
#: Where the first line after the first MiB starts.
_LINE_AFTER_MIB = _LARGE.index(b"\r\n", _MIB) + 2


@pytest.mark.parametrize(
    ("at", "insert", "canonical", "dot"),
    [
        (0, b"", True, False),
        (_MIB - 1, b"\r", False, False),  # a bare CR at the end of a slice
        (_MIB, b"\r", False, False),  # ... at the start of the next one
        (_MIB - 1, b"\r\n", True, False),  # a CRLF across the boundary
        (2 * _MIB + 3, b"\n", False, False),
        (len(_LARGE), b"\r", False, False),  # a CR that ends the body
        (_LINE_AFTER_MIB, b".x\r\n", True, True),  # the one dot of base64
        (len(_LARGE), b".", True, True),
    ],
)
def test_large_body_checks(at: int, insert: bytes, canonical: bool, dot: bool) -> None:
    body = _LARGE[:at] + insert + _LARGE[at:]
    assert crlf_only(body) is canonical
    assert has_dot_after_lf(body) is dot
    assert DataEncoder.goes_as_is(body) is (canonical and not dot)


def test_large_text_with_many_dots_finds_the_dot_line() -> None:
    # More dots than the budget of the dot-by-dot search: the last line, the
    # only one that starts with a dot, is still found.
    body = b"Subject: x\r\n\r\n" + b"a.b.c.d.e.f\r\n" * 200_000
    assert not has_dot_after_lf(body)
    assert has_dot_after_lf(body + b".end\r\n")
