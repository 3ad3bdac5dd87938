"""``anysmtp send --to-file``: one message per recipient over one connection.

A server that drops the connection (many close after N messages, often with a
421 first) is reconnected to, and the message it was refusing is tried once
more on the new connection.  A timeout is not retried: the server may have
taken the message without answering in time, and a second copy is worse than
a reported failure.

Ctrl-C (SIGINT) stops the run and still prints the summary, with the message
that was on its way when the server may have taken it, and exits with 130.
Everything that waits for the server, the final QUIT included, can be
interrupted; after Ctrl-C the connection is closed without waiting.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, TextIO

import anyio
import anyio.abc

from ._cli_common import ConnectionOptions
from ._cli_errors import CliError, ExitCode, describe_reply
from ._cli_message import Outgoing, Recipient
from ._cli_session import Login, open_session, quit_quietly, server_offers
from ._client import AsyncSMTP
from ._errors import (
    SMTPException,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

__all__ = ["Progress", "send_bulk"]

#: The reply of a server that is closing the connection (RFC 5321 4.2.3).
_CLOSING = 421

#: How a recipient's copy went wrong: refused by the server, failed on the way,
#: or unknown (interrupted after the whole message went: it may have arrived).
_FailureKind = Literal["refused", "failed", "unknown"]


class Progress:
    """A one-line progress bar redrawn with carriage returns.

    It draws only on a terminal, at most every ``interval`` seconds (and at the
    end), so a fast run does not spend its time drawing.

    :param total: the number of messages.
    :param stream: where to draw (stderr).
    :param enabled: whether to draw at all.
    """

    width = 24

    def __init__(
        self, total: int, stream: TextIO, *, enabled: bool, interval: float = 0.1
    ) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.interval = interval
        self._last_draw = float("-inf")
        self._drawn = False

    def update(self, done: int, sent: int, refused: int, failed: int) -> None:
        """Show the counts after ``done`` messages."""
        if not self.enabled:
            return
        now = time.monotonic()
        if done < self.total and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        filled = self.width * done // self.total if self.total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        percent = 100 * done // self.total if self.total else 100
        self.stream.write(
            f"\r[{bar}] {percent:3d}% {done}/{self.total}"
            f"  sent {sent}  refused {refused}  failed {failed}"
        )
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """End the bar's line, so what follows starts on a new one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


@dataclass
class _Tally:
    sent: int = 0
    refused: int = 0
    failed: int = 0
    #: One line per recipient that did not get the message.
    problems: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.sent + self.refused + self.failed

    def fail(self, recipient: Recipient, kind: _FailureKind, reason: str) -> None:
        """Count a copy that did not go (an unknown one as failed), and say why."""
        if kind == "refused":
            self.refused += 1
        else:
            self.failed += 1
        self.problems.append(f"{recipient.address}: {kind}: {reason}")


def _retryable(exc: BaseException, client: AsyncSMTP) -> bool:
    """Whether the message may be tried again on a new connection: the server
    closed the connection before taking it (421, or a plain disconnection)."""
    if client.is_connected or isinstance(exc, SMTPTimeoutError):
        return False
    if isinstance(exc, SMTPRecipientsRefused):
        return any(code == _CLOSING for code, _text in exc.recipients.values())
    if isinstance(exc, SMTPResponseException):
        return exc.smtp_code == _CLOSING
    return isinstance(exc, SMTPServerDisconnected | OSError)


def _problem(exc: BaseException) -> tuple[_FailureKind, str]:
    """The kind of failure (a refusal or not) and the reason, on one line."""
    if isinstance(exc, SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return "refused", describe_reply(code, text)
    if isinstance(exc, SMTPResponseException):
        return "refused", describe_reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, SMTPTimeoutError):
        return "failed", "timed out"
    return "failed", str(exc) or type(exc).__name__


async def _cancel_on_sigint(
    scope: anyio.CancelScope,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` on the first SIGINT; a second one interrupts as usual
    (the handler is gone by then)."""
    with contextlib.ExitStack() as stack:
        try:
            signals = stack.enter_context(anyio.open_signal_receiver(signal.SIGINT))
        except (NotImplementedError, RuntimeError, ValueError):
            # No signal handlers here (Windows' event loops, another thread):
            # Ctrl-C stays a KeyboardInterrupt, without the summary.
            task_status.started()
            return
        task_status.started()
        async for _signum in signals:
            scope.cancel()
            return


async def _interruptible(send: Callable[[], Awaitable[None]]) -> bool:
    """Run ``send`` until it returns or Ctrl-C (SIGINT) cancels it.

    :returns: whether Ctrl-C cancelled it.
    """
    failure: BaseException | None = None
    async with anyio.create_task_group() as group:
        sending = anyio.CancelScope()
        await group.start(_cancel_on_sigint, sending)
        try:
            with sending:
                await send()
        except (Exception, KeyboardInterrupt) as exc:  # re-raised below
            # Out of the task group as it is, not in an ExceptionGroup (a
            # KeyboardInterrupt comes where no signal receiver could be set).
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return sending.cancelled_caught


@dataclass
class _BulkRun:
    """One ``--to-file`` run: the connection, the counts, where it stopped."""

    options: ConnectionOptions
    login: Login
    outgoing: Outgoing
    recipients: list[Recipient]
    tally: _Tally = field(default_factory=_Tally)
    client: AsyncSMTP | None = None
    #: Why the run stopped before the end: the server went away for good.
    lost: CliError | None = None
    #: The recipient whose transaction is under way, and its client.
    in_flight: tuple[Recipient, AsyncSMTP] | None = None
    progress: Progress = field(init=False)

    def __post_init__(self) -> None:
        self.progress = Progress(
            len(self.recipients),
            sys.stderr,
            enabled=sys.stderr.isatty() and not self.options.verbose,
        )

    async def send_all(self) -> None:
        """Send each copy, stopping early when the server is gone for good;
        then QUIT.

        :raises CliError: the first connection or login failed, or the message
            cannot go to this server at all (nothing was sent).
        """
        self.client = await open_session(self.options, self.login)
        try:
            await self._send_each()
        except CliError:
            await quit_quietly(self.client)  # nothing was sent: the session is idle
            raise
        # Here, not after the run: Ctrl-C while the server is slow to answer
        # QUIT must still find the signal handler that keeps the summary.
        await quit_quietly(self.client)

    async def _send_each(self) -> None:
        for recipient in self.recipients:
            await self._send(recipient)
            if self.lost is not None:
                break
            tally = self.tally
            self.progress.update(tally.done, tally.sent, tally.refused, tally.failed)

    async def _send(self, recipient: Recipient) -> None:
        """Send one copy, on a new connection once more if the server closed
        the connection before taking it."""
        for attempt in (1, 2):
            client = self.client
            if client is None or not client.is_connected:
                try:
                    client = self.client = await open_session(self.options, self.login)
                except CliError as exc:
                    self.lost = exc
                    return
            try:
                data, mail_options = self.outgoing.for_server(
                    recipient, server_offers(client, self.options.where)
                )
            except CliError as exc:
                if not self.tally.done:
                    raise  # the first message: nothing can go to this server
                self.tally.fail(recipient, "failed", exc.message)
                return
            # Left set when Ctrl-C cancels the transaction (report() looks).
            self.in_flight = recipient, client
            try:
                await client.sendmail(
                    self.outgoing.sender, [recipient.address], data, mail_options
                )
            except (SMTPException, OSError) as exc:
                self.in_flight = None
                if attempt == 1 and _retryable(exc, client):
                    continue
                self.tally.fail(recipient, *_problem(exc))
            else:
                self.in_flight = None
                self.tally.sent += 1
            return

    def close(self) -> None:
        """End the progress bar; close the connection without waiting for the
        server, if Ctrl-C (or a failure) left one open: in a transaction,
        where QUIT could be taken for message text, or waiting for the reply
        to QUIT.  After a QUIT there is nothing left to close."""
        self.progress.finish()
        if self.client is not None:
            self.client.close()

    def report(self, interrupted: bool) -> int:
        """Print the summary.

        :returns: the exit status.
        """
        tally = self.tally
        if interrupted and self.in_flight is not None:
            recipient, client = self.in_flight
            if client.final_reply_pending:
                # The whole message went; the server may have taken it.
                tally.fail(
                    recipient,
                    "unknown",
                    "interrupted while waiting for the server's reply to the "
                    "message: it may have been delivered",
                )
        total = len(self.recipients)
        not_attempted = total - tally.done
        for line in tally.problems:
            print(f"anysmtp: {line}", file=sys.stderr)
        plural = "" if not_attempted == 1 else "s"
        if self.lost is not None:
            print(
                f"anysmtp: {self.lost.message}; {not_attempted} message{plural} "
                "not sent",
                file=sys.stderr,
            )
        elif interrupted and not_attempted:
            first = self.recipients[tally.done].address
            print(
                f"anysmtp: interrupted; {not_attempted} message{plural} not sent, "
                f"starting with {first}",
                file=sys.stderr,
            )
        elif interrupted:
            print("anysmtp: interrupted", file=sys.stderr)
        summary = (
            f"sent {tally.sent} of {total} messages: "
            f"{tally.refused} refused, {tally.failed + not_attempted} failed"
        )
        print(summary + (" (interrupted)" if interrupted else ""), flush=True)
        sys.stderr.flush()
        if interrupted:
            return ExitCode.INTERRUPTED
        if self.lost is not None:
            return ExitCode.CONNECTION
        if tally.sent == total:
            return ExitCode.OK
        return ExitCode.PARTIAL if tally.sent else ExitCode.REFUSED


async def send_bulk(
    options: ConnectionOptions,
    login: Login,
    outgoing: Outgoing,
    recipients: list[Recipient],
) -> int:
    """Send a copy of ``outgoing`` to each recipient; print a summary, also
    when Ctrl-C stops the run.

    :returns: the exit status: 0 when every message was sent, 6 when some
        were, 5 when none was, 3 when the connection was lost for good, 130
        when interrupted.
    :raises CliError: the first connection or login failed, or the message
        cannot go to the server (nothing was sent).
    """
    run = _BulkRun(options, login, outgoing, recipients)
    try:
        interrupted = await _interruptible(run.send_all)
    finally:
        run.close()
    return run.report(interrupted)
