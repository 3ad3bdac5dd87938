"""Fixtures shared by the tests: backends, servers, certificates."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers import AiosmtpdServer

BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Every async test runs on asyncio, asyncio+uvloop and trio."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture
def smtpd() -> Iterator[AiosmtpdServer]:
    """An aiosmtpd server on loopback that records what it receives."""
    with AiosmtpdServer() as server:
        yield server


@pytest.fixture
def smtpd_utf8() -> Iterator[AiosmtpdServer]:
    """An aiosmtpd server that advertises SMTPUTF8."""
    with AiosmtpdServer(enable_SMTPUTF8=True) as server:
        yield server
