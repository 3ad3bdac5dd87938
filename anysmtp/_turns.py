"""Tasks that share one client take turns: a first-come, first-served lock."""

from __future__ import annotations

import contextvars
from collections import deque

import anyio

__all__ = ["HELD_TRANSACTIONS", "Turns"]

#: The holdings (:attr:`Turns.mark`) that the current context runs in: a
#: transaction or command that calls another one (send_message -> sendmail, a
#: hook calling back in) must not wait for itself.
HELD_TRANSACTIONS: contextvars.ContextVar[frozenset[object]] = contextvars.ContextVar(
    "anysmtp_held_transactions", default=frozenset()
)


class Turns:
    """A lock for the tasks of one event loop, fair (first come, first served).

    Taking it when it is free and giving it back with nobody waiting are an
    attribute check and an assignment (``anyio.Lock`` looks up the current task
    for both).  Taking it is no checkpoint when it is free; a waiting task is
    woken with the lock already its own (a hand-over, so no other task can take
    it first).
    """

    __slots__ = ("_held", "_waiters", "mark")

    def __init__(self) -> None:
        self._held = False
        self._waiters: deque[anyio.Event] = deque()
        #: A token of the current holding, made by the holder, which puts it in
        #: its context: what runs in that context (its own nested calls, a
        #: hook's calls back in) goes ahead; a copy of the context that
        #: outlives the holding (a task started meanwhile) finds it stale.
        self.mark: object | None = None

    @property
    def held(self) -> bool:
        """Whether a task holds it."""
        return self._held

    def try_acquire(self) -> bool:
        """Take the lock if it is free (no coroutine): whether it was."""
        if self._held:
            return False
        self._held = True
        return True

    async def acquire(self) -> None:
        """Take the lock, waiting for the tasks ahead.

        A task cancelled while it waits leaves its place; one cancelled just as
        the lock came to it passes the lock on.
        """
        if self.try_acquire():
            return
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():
                self.release()
            else:
                self._waiters.remove(turn)
            raise

    def held_here(self) -> bool:
        """Whether the current context runs within the holding in progress
        (its own nested calls, a hook's calls back in): it goes ahead."""
        mark = self.mark
        return mark is not None and mark in HELD_TRANSACTIONS.get()

    def begin(self) -> contextvars.Token[frozenset[object]]:
        """Once acquired: mark this holding in the current context."""
        self.mark = mark = object()
        return HELD_TRANSACTIONS.set(HELD_TRANSACTIONS.get() | {mark})

    def end(self, token: contextvars.Token[frozenset[object]]) -> None:
        """End the holding :meth:`begin` marked, and :meth:`release`."""
        HELD_TRANSACTIONS.reset(token)
        self.mark = None
        self.release()

    def release(self) -> None:
        """Give the lock to the next waiting task, or free it."""
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self._held = False
