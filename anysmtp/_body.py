"""Message bodies: bytes, text, files and (async) iterables of bytes, read in
chunks so that a large message never needs to sit in memory twice."""

from __future__ import annotations

import contextlib
import email.message
import inspect
import io
import os
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from typing import BinaryIO, TypeAlias, cast

from ._protocol import fix_eols

__all__ = ["CHUNK_SIZE", "MessageBody", "MessageSource"]

#: How much of a body is read, encoded and sent at a time.
CHUNK_SIZE = 256 * 1024

#: What ``sendmail`` and ``data`` accept as a message.
MessageSource: TypeAlias = (
    str
    | bytes
    | bytearray
    | memoryview
    | BinaryIO
    | Iterable[bytes]
    | AsyncIterable[bytes]
)


class MessageBody:
    """A message body and what is known of it before it is sent.

    :param source: the message.
    :raises TypeError: ``source`` is none of the accepted kinds (a text file, or
        an iterable of ``str``, is refused when its first chunk is read).
    :raises UnicodeEncodeError: a ``str`` message is not ASCII (smtplib's rule).
    """

    __slots__ = ("_stream", "data", "size")

    def __init__(self, source: MessageSource) -> None:
        self._stream: BinaryIO | Iterable[bytes] | AsyncIterable[bytes] | None = None
        #: The whole message when it is in memory, else ``None``.
        self.data: bytes | None = None
        #: The message's length when known in advance (for SIZE=), else ``None``.
        self.size: int | None = None
        if isinstance(source, str):
            self.data = fix_eols(source).encode("ascii")
        elif isinstance(source, bytes):
            self.data = source
        elif isinstance(source, bytearray | memoryview):
            self.data = bytes(source)
        elif isinstance(source, email.message.Message):
            raise TypeError(
                "a message object goes to send_message(), not sendmail() or data()"
            )
        elif isinstance(source, io.TextIOBase):
            raise TypeError("a message file must be opened in binary mode ('rb')")
        elif hasattr(source, "read"):
            stream = cast(BinaryIO, source)
            self._stream = stream
            self.size = _remaining_size(stream)
        elif isinstance(source, AsyncIterable | Iterable):
            self._stream = cast(Iterable[bytes] | AsyncIterable[bytes], source)
        else:
            raise TypeError(
                "msg must be str, bytes, a binary file or an (async) iterable of "
                f"bytes, not {type(source).__name__}"
            )
        if self.data is not None:
            self.size = len(self.data)

    async def chunks(self, size: int = CHUNK_SIZE) -> AsyncGenerator[bytes, None]:
        """The body in pieces of about ``size`` bytes (views of in-memory data
        are not copied)."""
        if self.data is not None:
            view = memoryview(self.data)
            for start in range(0, len(view), size):
                yield bytes(view[start : start + size])
            return
        stream = self._stream
        if hasattr(stream, "read"):
            while True:
                chunk = stream.read(size)  # type: ignore[union-attr]
                if not chunk:
                    return
                yield _checked(chunk)
        elif inspect.isasyncgen(stream):
            # An async generator exists only to be read: one that is left
            # half-read (a refusal, a bad chunk, a lost connection) is closed
            # here, so its ``finally`` runs now and not when the garbage
            # collector finds it (trio warns then).  Other async iterables
            # (a stream, say) are the caller's to close, as files are.
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    yield _checked(chunk)
        elif isinstance(stream, AsyncIterable):
            async for chunk in stream:
                yield _checked(chunk)
        elif stream is not None:
            for chunk in stream:
                yield _checked(chunk)


def _checked(chunk: object) -> bytes:
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    raise TypeError(f"a message stream must yield bytes, not {type(chunk).__name__}")


def _remaining_size(stream: BinaryIO) -> int | None:
    """What is left to read in a regular file, or ``None`` if unknown."""
    try:
        position = stream.tell()
        end = os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None
    return max(end - position, 0)
