"""The sans-IO SMTP protocol layer: no sockets, no event loop.

* :class:`ReplyParser` turns received bytes into replies, incrementally, so any
  number of pipelined replies can sit in its buffer; it enforces the per-line
  (``_MAXLINE``) and per-reply size limits.
* :func:`format_command` builds a command line and refuses control characters.
* :class:`DataEncoder` dot-stuffs a message body and normalises its line endings
  chunk by chunk, so a body of any size is encoded in bounded memory.
* :func:`quoteaddr` and :func:`addr_only` are smtplib's address helpers with a
  fast path for plain ``local@domain`` addresses.
"""

from __future__ import annotations

import email.utils
import functools
import io
import re
from typing import NamedTuple

from ._response import SMTPResponse

__all__ = [
    "CRLF",
    "MAX_REPLY_SIZE",
    "DataEncoder",
    "RawReply",
    "ReplyLimitError",
    "ReplyParser",
    "_MAXLINE",
    "addr_only",
    "bCRLF",
    "check_address",
    "fix_eols",
    "format_command",
    "mail_path",
    "quoteaddr",
]

CRLF = "\r\n"
bCRLF = b"\r\n"
#: smtplib's limit on one reply line, CRLF included ("more than 8 times larger
#: than RFC 821, 4.5.3").
_MAXLINE = 8192
#: The cap on a whole (multi-line) reply.  A real EHLO or HELP reply is a few
#: KiB; the cap only stops a hostile server from growing a reply without end.
MAX_REPLY_SIZE = 1024 * 1024

# Any C0 control character or DEL.  CR and LF would end the command early
# (command injection); the others have no business in a command either.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NEWLINE = re.compile(r"[\r\n]")


def format_command(cmd: str, args: str = "") -> str:
    """Build one command line, CRLF included, as smtplib's ``putcmd`` does.

    :param cmd: the verb, e.g. ``"mail"``.
    :param args: the arguments; ``""`` sends the verb alone.
    :returns: ``"cmd args\\r\\n"``.
    :raises ValueError: the verb or the arguments contain CR, LF or another
        control character; nothing may be sent then.
    """
    line = cmd if args == "" else f"{cmd} {args}"
    if _CONTROL.search(line) is not None:
        shown = line.replace("\n", "\\n").replace("\r", "\\r")
        if _NEWLINE.search(line) is not None:
            # smtplib's exact message, which callers may match on.
            raise ValueError(
                f"command and arguments contain prohibited newline characters: {shown}"
            )
        raise ValueError(
            f"command and arguments contain prohibited control characters: {shown!r}"
        )
    return line + CRLF


def fix_eols(text: str) -> str:
    """Turn every line ending (CRLF, lone LF, lone CR) into CRLF (smtplib's
    ``_fix_eols``, without a regular expression)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def check_address(address: str) -> None:
    """Refuse an address (or an ESMTP option) with control characters, before it
    is parsed.

    :func:`email.utils.parseaddr` silently drops a CR or LF and what follows, so
    ``quoteaddr`` alone would send a *different* address instead of failing.

    :raises ValueError: ``address`` contains a C0 control character or DEL.
    """
    if _CONTROL.search(address) is not None:
        raise ValueError(f"address contains prohibited control characters: {address!r}")


# A dot-atom local part and a host name: what email.utils.parseaddr returns
# unchanged, so these need no parsing.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


def quoteaddr(addrstring: str) -> str:
    """Quote an address for MAIL FROM / RCPT TO, exactly as smtplib does.

    ``"Name <a@b>"`` becomes ``"<a@b>"``, ``"a@b"`` becomes ``"<a@b>"`` and an
    address :func:`email.utils.parseaddr` cannot parse is used as it is, wrapped in
    angle brackets unless it already starts with one.
    """
    if _PLAIN_ADDRESS.fullmatch(addrstring) is not None:
        return f"<{addrstring}>"
    displayname, addr = email.utils.parseaddr(addrstring)
    if (displayname, addr) == ("", ""):
        if addrstring.strip().startswith("<"):
            return addrstring
        return f"<{addrstring}>"
    return f"<{addr}>"


#: RFC 5321 section 4.5.3.1.3: a reverse-path or forward-path, angle brackets
#: included, is at most 256 octets.
MAX_PATH_LENGTH = 256


#: Longer than any address with a display name has a reason to be: refused
#: before parsing (``parseaddr`` recurses once per nested comment).
MAX_ADDRESS_LENGTH = 4 * MAX_PATH_LENGTH
_BLANK_OR_BRACKET = re.compile(r"[\s<>]")
_QUOTED_LOCAL_PART = re.compile(r'"(?:[^"\\]|\\.)*"@')


def _is_one_token(path: str) -> bool:
    """Whether ``path`` is one ``<...>`` token (RFC 5321, 4.1.2): no blank,
    ``<`` or ``>`` inside, except in a quoted string that is the whole local
    part (after an optional source route)."""
    if len(path) < 2 or path[0] != "<" or path[-1] != ">":
        return False
    inner = path[1:-1]
    quote = inner.find('"')
    if quote < 0:
        return _BLANK_OR_BRACKET.search(inner) is None
    if quote and inner[quote - 1] != ":":
        return False  # a quote inside a local part
    local = _QUOTED_LOCAL_PART.match(inner, quote)
    if local is None:
        return False
    rest = inner[:quote] + inner[local.end() - 1 :]
    return '"' not in rest and _BLANK_OR_BRACKET.search(rest) is None


@functools.lru_cache(maxsize=1024)
def mail_path(address: str) -> str:
    """The path for MAIL FROM / RCPT TO (``quoteaddr(address)``), after refusing
    what would smuggle text into the command or is far too long.

    ``quoteaddr`` passes an address that ``parseaddr`` cannot parse through as it
    is when it starts with ``<``, and wraps any other in angle brackets: smtplib
    sends ``"<> SIZE=1"``, ``"<<a@b>>"`` or ``"<a@b RET=HDRS>"``, and a server
    that ends the path at ``>`` or at a blank takes the rest for ESMTP
    parameters the caller never passed as options.

    Results are cached: ``sendmail`` checks every path before MAIL and builds
    the commands from the same paths, and bulk senders repeat addresses.

    :raises ValueError: ``address`` has control characters, its path is not one
        token (blanks or angle brackets inside, outside a quoted local part), or
        the path is longer than :data:`MAX_PATH_LENGTH` octets.
    """
    if _PLAIN_ADDRESS.fullmatch(address) is not None:
        path = f"<{address}>"
    else:
        check_address(address)
        if len(address) > MAX_ADDRESS_LENGTH:
            raise ValueError(
                f"address is too long: {len(address)} characters, {address[:40]!r}..."
            )
        try:
            path = quoteaddr(address)
        except RecursionError:
            raise ValueError(
                f"address is nested too deeply to parse: {address[:40]!r}..."
            ) from None
        if not _is_one_token(path):
            raise ValueError(
                f"address would smuggle text into the command as {path!r}: {address!r}"
            )
    if len(path) > MAX_PATH_LENGTH // 4 and (
        len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_LENGTH
    ):
        raise ValueError(
            f"address is too long: its path has more than {MAX_PATH_LENGTH} "
            f"octets (RFC 5321, section 4.5.3.1.3): {path[:40]!r}..."
        )
    return path


def addr_only(addrstring: str) -> str:
    """The bare address of ``addrstring`` (smtplib's ``_addr_only``)."""
    if _PLAIN_ADDRESS.fullmatch(addrstring) is not None:
        return addrstring
    displayname, addr = email.utils.parseaddr(addrstring)
    if (displayname, addr) == ("", ""):
        return addrstring
    return addr


class ReplyLimitError(ValueError):
    """The server exceeded a reply limit; the connection cannot be trusted."""


class RawReply(NamedTuple):
    """One complete reply as parsed, with the raw lines for debug output."""

    code: int
    message: bytes
    lines: list[bytes]
    #: ``(code, message)`` as the client returns it, made once per parse (a
    #: reply the parser has seen lately is returned again, with this).
    response: SMTPResponse


#: How many one-line replies a parser remembers, and the longest it does.
_SEEN_LIMIT = 32
_SEEN_LINE_LIMIT = 200


class ReplyParser:
    """Incremental parser of server replies.

    Feed it what the socket returned with :meth:`feed` (and :meth:`feed_eof` at the
    end of the stream); take complete replies with :meth:`next_reply`.  It follows
    smtplib's ``getreply`` to the letter: a line whose first three bytes are no
    number ends the reply with code ``-1``; a line that is not ``NNN-`` ends it; the
    message is each line from the fifth byte, stripped of blanks and CRLF, joined
    by ``b"\\n"``.

    :param max_line: the longest line accepted, CRLF included.
    :param max_reply: the largest reply accepted, all lines together.
    """

    __slots__ = (
        "_buffer",
        "_eof",
        "_lines",
        "_max_line",
        "_max_reply",
        "_seen",
        "_size",
    )

    def __init__(
        self, max_line: int = _MAXLINE, max_reply: int = MAX_REPLY_SIZE
    ) -> None:
        self._max_line = max_line
        self._max_reply = max_reply
        self._buffer = bytearray()
        self._eof = False
        self._lines: list[bytes] = []
        self._size = 0
        #: One-line replies seen lately, each with its parse (shared: replies
        #: are never changed).
        self._seen: dict[bytes, RawReply] = {}

    @property
    def at_eof(self) -> bool:
        """Whether the stream ended and every buffered byte was consumed."""
        return self._eof and not self._buffer

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet part of a returned reply."""
        return len(self._buffer) + self._size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the server."""
        self._buffer += data

    def feed_eof(self) -> None:
        """Note that the server closed the stream; a partial last line still counts
        as a line, as it does for smtplib's ``readline``."""
        self._eof = True

    def clear(self) -> None:
        """Forget everything buffered (after a reconnect or a TLS upgrade)."""
        self._buffer.clear()
        self._eof = False
        self._lines = []
        self._size = 0

    def next_line(self) -> bytes | None:
        """Take the next raw line (CRLF included) or ``None`` if none is complete.

        :raises ReplyLimitError: the line is longer than ``max_line``.
        """
        buffer = self._buffer
        end = buffer.find(b"\n", 0, self._max_line)
        if end < 0:
            if len(buffer) > self._max_line:
                raise ReplyLimitError("Line too long.")
            if not (self._eof and buffer):
                return None
            end = len(buffer) - 1
        line = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        return line

    def next_reply(self) -> RawReply | None:
        """Take the next complete reply, or ``None`` if more bytes are needed.

        :raises ReplyLimitError: a line or the whole reply exceeds its limit.
        """
        lines = self._lines
        if not lines:
            # The common case: a one-line reply ``NNN text`` at the front.
            buffer = self._buffer
            end = buffer.find(b"\n", 0, self._max_line)
            if end >= 4 and buffer[3] == 0x20:
                whole = bytes(buffer[: end + 1])
                # A server repeats itself ("250 2.1.0 Ok" to every MAIL): a
                # short reply seen lately is not parsed again.
                short = end < _SEEN_LINE_LIMIT
                reply = self._seen.get(whole) if short else None
                if reply is not None:
                    del buffer[: end + 1]
                    return reply
                if whole[:3].isdigit():
                    del buffer[: end + 1]
                    code = int(whole[:3])
                    message = whole[4:].strip(b" \t\r\n")
                    reply = RawReply(
                        code, message, [whole], SMTPResponse(code, message)
                    )
                    if short:
                        if len(self._seen) >= _SEEN_LIMIT:
                            self._seen.clear()
                        self._seen[whole] = reply
                    return reply
        while True:
            line = self.next_line()
            if line is None:
                return None
            self._size += len(line)
            if self._size > self._max_reply:
                raise ReplyLimitError("Reply too long.")
            lines.append(line)
            try:
                code = int(line[:3])
            except ValueError:
                code = -1
                break
            if line[3:4] != b"-":
                break
        self._lines = []
        self._size = 0
        message = b"\n".join([each[4:].strip(b" \t\r\n") for each in lines])
        return RawReply(code, message, lines, SMTPResponse(code, message))


#: Above this size a body is searched dot by dot first (see
#: :func:`has_dot_after_lf`).
_DOT_BY_DOT_ABOVE = 32 * 1024
#: How much of a body :func:`crlf_only` reads as text at once.
_SCAN_SLICE = 256 * 1024


def crlf_only(data: bytes) -> bool:
    """Whether every CR in ``data`` starts a CRLF and every LF ends one."""
    # io.IncrementalNewlineDecoder notes which kinds of line ending a text has
    # in one pass in C: a half (1 KiB) to a quarter (25 MiB) of the cost of
    # counting CR, LF and CRLF.  It reads the Latin-1 text of a slice at a time
    # (one byte, one character), so the check never holds a copy of a large
    # body; a CR that ends a slice is kept until the next one.
    decoder = io.IncrementalNewlineDecoder(None, translate=False)
    if len(data) <= _SCAN_SLICE:
        decoder.decode(str(data, "latin-1"), True)
    else:
        view = memoryview(data)
        for start in range(0, len(view), _SCAN_SLICE):
            decoder.decode(str(view[start : start + _SCAN_SLICE], "latin-1"))
        decoder.decode("", True)
    newlines = decoder.newlines
    return newlines is None or newlines == "\r\n"


#: A line that starts with a dot.  The regular expression engine looks for the
#: LF with memchr(): three times as fast as ``b"\n." in data``.
_DOT_AFTER_LF = re.compile(rb"\n\.")


def has_dot_after_lf(data: bytes) -> bool:
    """Whether ``data`` has a dot right after an LF (a line that needs
    dot-stuffing, except at the very start, which the caller checks)."""
    if len(data) > _DOT_BY_DOT_ABOVE:
        # Searching for the dots themselves is faster still for a large body
        # that is mostly base64, whose few dots are in its headers; text with
        # many dots goes on to the search for LF-dot.
        find = data.find
        budget = 16 + (len(data) >> 12)
        index = find(b".", 1)
        while index != -1:
            if data[index - 1] == 0x0A:
                return True
            budget -= 1
            if not budget:
                break
            index = find(b".", index + 1)
        else:
            return False
    return _DOT_AFTER_LF.search(data) is not None


class DataEncoder:
    """Dot-stuffing and CRLF normalisation of a message body, chunk by chunk.

    Every line ending (CRLF, bare LF, bare CR) becomes CRLF, as smtplib's
    ``_fix_eols`` does, and a line that starts with ``.`` gets a second one.  Doing
    it for ``bytes`` bodies too means no server can see a premature end of data
    (SMTP smuggling with ``<LF>.<LF>`` or ``<CR>.<CR>``).  State crosses chunk
    boundaries, so splitting the body anywhere gives the same output.

    :param stuff_dots: ``False`` for BDAT (RFC 3030), which has no end-of-data
        line: the line endings are normalised, dots are left alone and
        :meth:`finish` adds no ``.`` line.
    """

    __slots__ = ("_at_line_start", "_pending_cr", "_sent_any", "_stuff_dots")

    def __init__(self, *, stuff_dots: bool = True) -> None:
        self._pending_cr = False
        self._at_line_start = True
        self._sent_any = False
        self._stuff_dots = stuff_dots

    def encode(self, chunk: bytes) -> bytes:
        """Encode the next chunk of the body; the result may be empty."""
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            # Whether this CR ends a line alone or starts a CRLF depends on the
            # next chunk.
            chunk = chunk[:-1]
            self._pending_cr = True
        if not chunk:
            return b""
        # Checking is much cheaper than rewriting: most bodies already have
        # CRLF line endings and no line that starts with a dot.
        if not crlf_only(chunk):
            if b"\r" in chunk:
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            chunk = chunk.replace(b"\n", b"\r\n")
        if self._stuff_dots:
            if has_dot_after_lf(chunk):
                chunk = chunk.replace(b"\n.", b"\n..")
            if self._at_line_start and chunk.startswith(b"."):
                chunk = b"." + chunk
        self._at_line_start = chunk.endswith(b"\n")
        self._sent_any = True
        return chunk

    def finish(self) -> bytes:
        """The end of the body: a pending line end, a final CRLF when the body does
        not end with one, and the ``.`` line that ends DATA (unless dots are not
        stuffed: BDAT)."""
        tail = b""
        if self._pending_cr:
            self._pending_cr = False
            tail = b"\r\n"
        elif not self._sent_any or not self._at_line_start:
            tail = b"\r\n"
        self._at_line_start = True
        self._sent_any = False
        return tail + b".\r\n" if self._stuff_dots else tail

    @staticmethod
    def goes_as_is(body: bytes) -> bool:
        """Whether ``body`` needs no change at all before the end-of-data line:
        CRLF line endings only and no line that starts with a dot.  The check
        runs at C speed, so a large message in this form is sent as it is,
        without a copy."""
        return (
            crlf_only(body) and not body.startswith(b".") and not has_dot_after_lf(body)
        )

    @staticmethod
    def end_of_data(body: bytes) -> bytes:
        """What follows a non-empty body that :meth:`goes_as_is`: the ``.``
        line, after a final CRLF if the body lacks one."""
        return b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"

    @classmethod
    def encode_all(cls, body: bytes) -> bytes:
        """The whole DATA payload for a body held in memory."""
        if body and cls.goes_as_is(body):
            return body + cls.end_of_data(body)
        encoder = cls()
        return encoder.encode(body) + encoder.finish()
