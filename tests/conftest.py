"""Fixtures shared by the tests: backends, servers, certificates."""

from __future__ import annotations

import gc
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.servers import AiosmtpdServer

BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]
#: For tests of asyncio's own machinery (its reader, its selector, its ways to
#: start a task), which trio does not have.
ASYNCIO_BACKENDS = BACKENDS[:2]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Every async test runs on asyncio, asyncio+uvloop and trio."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees objects: what smtplib code relies on."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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


@dataclass(frozen=True)
class Certificates:
    """A private CA, what it issued, and a CA nobody trusts."""

    ca: trustme.CA
    server: trustme.LeafCert
    client: trustme.LeafCert
    unknown_ca: trustme.CA
    ca_file: Path
    client_file: Path
    unknown_server: trustme.LeafCert

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        """A server-side context with the 127.0.0.1/localhost certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(context)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts the private CA."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """trustme certificates: server cert for 127.0.0.1 and localhost, a client
    cert, and an unknown CA with its own server cert for failure cases."""
    ca = trustme.CA()
    unknown_ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost", "::1")
    client = ca.issue_cert("client@example.com")
    directory = tmp_path_factory.mktemp("certs")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_file = directory / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(client_file))
    return Certificates(
        ca=ca,
        server=server,
        client=client,
        unknown_ca=unknown_ca,
        ca_file=ca_file,
        client_file=client_file,
        unknown_server=unknown_ca.issue_cert("127.0.0.1", "localhost"),
    )
