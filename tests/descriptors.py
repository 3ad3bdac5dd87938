"""File descriptor numbers, for tests of what the event loop polls: a socket
closed while a loop still has an entry for its number breaks the next socket
given that number."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def lowest_free_descriptor() -> int:
    """The number the next socket gets."""
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return fd


def is_open(number: int) -> bool:
    """Whether descriptor ``number`` is open in this process."""
    try:
        os.fstat(number)
    except OSError:
        return False
    return True


@contextmanager
def next_descriptor_is(number: int) -> Iterator[None]:
    """Within the block the next socket gets descriptor ``number``: every free
    number below it is taken meanwhile (by other threads' sockets that closed
    since ``number`` was freed, say)."""
    held: list[int] = []
    try:
        while (fd := os.open(os.devnull, os.O_RDONLY)) != number:
            held.append(fd)
            assert fd < number, f"descriptor {number} is in use"
        os.close(fd)
        yield
    finally:
        for each in held:
            os.close(each)
