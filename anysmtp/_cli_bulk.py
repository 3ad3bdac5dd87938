"""``anysmtp send --to-file``: one message per recipient over one connection.

A server that drops the connection (many close after N messages, often with a
421 first) is reconnected to, and the message it was refusing is tried once
more on the new connection.  A timeout is not retried: the server may have
taken the message without answering in time, and a second copy is worse than
a reported failure.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from ._cli_common import ConnectionOptions
from ._cli_errors import CliError, ExitCode, describe_reply
from ._cli_message import Outgoing, Recipient
from ._cli_session import Login, open_session, quit_quietly
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


def _problem(exc: BaseException) -> tuple[bool, str]:
    """Whether the failure is a refusal, and the reason, on one line."""
    if isinstance(exc, SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return True, describe_reply(code, text)
    if isinstance(exc, SMTPResponseException):
        return True, describe_reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, SMTPTimeoutError):
        return False, "timed out"
    return False, str(exc) or type(exc).__name__


async def send_bulk(
    options: ConnectionOptions,
    login: Login,
    outgoing: Outgoing,
    recipients: list[Recipient],
) -> int:
    """Send a copy of ``outgoing`` to each recipient; print a summary.

    :returns: the exit status: 0 when every message was sent, 6 when some
        were, 5 when none was, 3 when the connection was lost for good.
    :raises CliError: the first connection or login failed (nothing was sent).
    """
    tally = _Tally()
    progress = Progress(
        len(recipients),
        sys.stderr,
        enabled=sys.stderr.isatty() and not options.verbose,
    )
    lost: CliError | None = None
    client = await open_session(options, login)
    try:
        for recipient in recipients:
            data, mail_options = outgoing.for_recipient(recipient)
            for attempt in (1, 2):
                if not client.is_connected:
                    try:
                        client = await open_session(options, login)
                    except CliError as exc:
                        lost = exc
                        break
                try:
                    await client.sendmail(
                        outgoing.sender, [recipient.address], data, mail_options
                    )
                except (SMTPException, OSError) as exc:
                    if attempt == 1 and _retryable(exc, client):
                        continue
                    refused, reason = _problem(exc)
                    if refused:
                        tally.refused += 1
                    else:
                        tally.failed += 1
                    kind = "refused" if refused else "failed"
                    tally.problems.append(f"{recipient.address}: {kind}: {reason}")
                else:
                    tally.sent += 1
                break
            if lost is not None:
                break
            progress.update(tally.done, tally.sent, tally.refused, tally.failed)
    finally:
        progress.finish()
        await quit_quietly(client)
    return _report(tally, len(recipients), lost)


def _report(tally: _Tally, total: int, lost: CliError | None) -> int:
    not_attempted = total - tally.done
    for line in tally.problems:
        print(f"anysmtp: {line}", file=sys.stderr)
    if lost is not None:
        print(
            f"anysmtp: {lost.message}; {not_attempted} message"
            f"{'' if not_attempted == 1 else 's'} not sent",
            file=sys.stderr,
        )
    summary = (
        f"sent {tally.sent} of {total} messages: "
        f"{tally.refused} refused, {tally.failed + not_attempted} failed"
    )
    print(summary, flush=True)
    sys.stderr.flush()
    if lost is not None:
        return ExitCode.CONNECTION
    if tally.sent == total:
        return ExitCode.OK
    return ExitCode.PARTIAL if tally.sent else ExitCode.REFUSED
