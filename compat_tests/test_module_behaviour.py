"""smtplib behaviours beyond return values: audit events, timeouts, sock, names."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import sys
import textwrap

import pytest

import anysmtp
from tests.servers import AiosmtpdServer

AUDIT_PROGRAM = textwrap.dedent(
    """
    import sys
    events = []

    def hook(event, args):
        if event.startswith("smtplib."):
            events.append((event, type(args[0]).__name__, args[1:]))

    sys.addaudithook(hook)
    import {module} as smtplib
    server = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="client")
    server.sendmail("a@example.com", ["b@example.com"], b"hello")
    server.quit()
    for event in events:
        print(repr(event))
    """
)


def audit_events(module: str, host: str, port: int) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", AUDIT_PROGRAM.format(module=module), host, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.splitlines()


def test_audit_events_match_smtplib() -> None:
    with AiosmtpdServer() as server:
        stdlib_events = audit_events("smtplib", server.host, server.port)
        our_events = audit_events("anysmtp", server.host, server.port)
    assert stdlib_events[0].startswith("('smtplib.connect', 'SMTP', ")
    assert len(stdlib_events) > 5
    assert our_events == stdlib_events


@pytest.mark.parametrize("module", [smtplib, anysmtp])
def test_timeout_zero_is_refused(module: object) -> None:
    with AiosmtpdServer() as server:
        client = module.SMTP(timeout=0)  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match=r"^Non-blocking socket \(timeout=0\)"):
            client.connect(server.host, server.port)
        client.close()


def test_default_timeout_is_the_socket_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getdefaulttimeout", lambda: 7.5)
    assert anysmtp.SMTP().timeout == 7.5
    assert anysmtp.SMTP(timeout=None).timeout is None


@pytest.mark.parametrize("module", [smtplib, anysmtp])
def test_local_hostname_falls_back_to_an_address_literal(
    module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "getfqdn", lambda *args: "nodots")
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "192.0.2.7")
    client = module.SMTP()  # type: ignore[attr-defined]
    assert client.local_hostname == "[192.0.2.7]"


@pytest.mark.parametrize("module", [smtplib, anysmtp])
def test_debug_output_goes_to_the_stderr_of_the_moment(
    module: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with AiosmtpdServer() as server:
        client = module.SMTP(server.host, server.port, local_hostname="c")  # type: ignore[attr-defined]
        client.set_debuglevel(1)
        original = sys.stderr
        captured: list[str] = []

        class Collect:
            def write(self, text: str) -> int:
                captured.append(text)
                return len(text)

            def flush(self) -> None:
                pass

        sys.stderr = Collect()
        try:
            client.noop()
        finally:
            sys.stderr = original
        client.quit()
    assert "send: 'noop\\r\\n'" in "".join(captured)


class TestSockAttribute:
    def test_real_socket_while_connected_and_none_after_quit(self) -> None:
        with AiosmtpdServer() as server:
            client = anysmtp.SMTP(server.host, server.port)
            sock = client.sock
            assert isinstance(sock, socket.socket)
            assert sock.getsockname()[0] == "127.0.0.1"
            client.quit()
            assert client.sock is None

    def test_closing_the_socket_makes_the_next_command_fail(self) -> None:
        # smtplib keeps talking after sock.close() (its reply file holds the
        # descriptor open); anysmtp stops, as documented in compatibility.md.
        with AiosmtpdServer() as server:
            client = anysmtp.SMTP(server.host, server.port)
            sock = client.sock
            assert sock is not None
            sock.close()
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
            assert client.sock is None

    @pytest.mark.parametrize("module", [smtplib, anysmtp])
    def test_assigning_a_connected_socket_adopts_it(self, module: object) -> None:
        with AiosmtpdServer() as server:
            client = module.SMTP()  # type: ignore[attr-defined]
            client.sock = socket.create_connection((server.host, server.port))
            assert client.getreply()[0] == 220
            assert client.ehlo("client")[0] == 250
            assert client.sendmail("a@example.com", ["b@example.com"], b"x") == {}
            client.quit()
            assert server.messages[0].data == b"x\r\n"
