"""The interop tests: anysmtp against private Postfix, Exim and Dovecot (LMTP
and submission) servers.

They run only under ``make interop``, which installs the servers and sets
``ANYSMTP_INTEROP=1``; anywhere else they are collected and skipped with the
reason.  The servers start once per session (see :mod:`interop.servers`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interop.servers import (
    Endpoint,
    InteropServers,
    LmtpEndpoint,
    SubmissionEndpoint,
)
from tests.interop.helpers import (
    SKIP_REASON,
    interop_enabled,
    large_message_body,
    write_large_message,
)

#: Set to 1 to keep the servers' directory (configurations, mailboxes, logs).
KEEP_VARIABLE = "ANYSMTP_INTEROP_KEEP"


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if interop_enabled():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("interop") is not None:
            item.add_marker(skip)


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The interop tests run the async API on asyncio and trio (uvloop is an
    asyncio loop: the servers cannot tell it apart)."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture(scope="session")
def interop_servers() -> Iterator[InteropServers]:
    """Postfix, Exim and Dovecot, running for the whole session."""
    keep = os.environ.get(KEEP_VARIABLE) == "1"
    with InteropServers(keep=keep) as servers:
        if keep:
            print(f"\ninterop servers' files: {servers.directory}")
        yield servers


@pytest.fixture
def endpoint(
    request: pytest.FixtureRequest, interop_servers: InteropServers
) -> Endpoint:
    """The running port named by the test's parameter (see ``helpers.endpoints``)."""
    name: str = request.param
    return interop_servers.endpoints[name]


@pytest.fixture
def lmtp(interop_servers: InteropServers) -> LmtpEndpoint:
    """Dovecot's LMTP server: its loopback port and Unix socket."""
    return interop_servers.lmtp


@pytest.fixture
def submission(interop_servers: InteropServers) -> SubmissionEndpoint:
    """Dovecot's submission server: its two ports and the relay behind it."""
    return interop_servers.submission


@pytest.fixture(scope="session")
def large_body() -> bytes:
    """The body of the 9 MiB messages (made once)."""
    return large_message_body()


@pytest.fixture
def large_message(tmp_path: Path, large_body: bytes) -> Path:
    """A 9 MiB message in a file, with this test's own marker."""
    return write_large_message(tmp_path / "message.eml", large_body)


class _Tally:
    """Passed and failed interop cases, for the closing line."""

    def __init__(self) -> None:
        self.failed: set[str] = set()
        self.passed: set[str] = set()


_tally = _Tally()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not interop_enabled() or "tests/interop/" not in report.nodeid.replace(
        "\\", "/"
    ):
        return
    if report.failed:
        _tally.failed.add(report.nodeid)
        _tally.passed.discard(report.nodeid)
    elif report.when == "call" and report.passed and report.nodeid not in _tally.failed:
        _tally.passed.add(report.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The closing line of `make interop`, after pytest's own summary."""
    if interop_enabled() and (_tally.passed or _tally.failed):
        print(f"{len(_tally.passed)} passed, {len(_tally.failed)} failed", flush=True)
