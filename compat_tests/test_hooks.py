"""smtplib's hooks: overrides are called where smtplib calls them.

Each scenario defines the same recording subclass over ``smtplib.SMTP`` and over
``anysmtp.SMTP``, runs the same code against the same kind of server and
compares what the overrides saw, call by call.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import pytest

import anysmtp
from tests.servers import AiosmtpdServer, ScriptedConnection, ScriptedServer

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

HOOKS = (
    "send",
    "putcmd",
    "getreply",
    "docmd",
    "data",
    "mail",
    "rcpt",
    "ehlo",
    "helo",
    "rset",
    "sendmail",
    "quit",
    "close",
    "has_extn",
    "ehlo_or_helo_if_needed",
)

Calls = list[tuple[str, tuple[Any, ...]]]


def recording_class(base: type[smtplib.SMTP]) -> tuple[type[smtplib.SMTP], Calls]:
    """A subclass of ``base`` whose hooks log their arguments, then call super."""
    calls: Calls = []
    namespace: dict[str, Any] = {}
    for name in HOOKS:

        def hook(self: Any, *args: Any, _name: str = name, **kwargs: Any) -> Any:
            calls.append((_name, args))
            return getattr(super(cls, self), _name)(*args, **kwargs)

        namespace[name] = hook
    cls = type(f"Recording{base.__name__}", (base,), namespace)
    return cls, calls


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = "bob@example.com, carol@example.com"
    msg["Bcc"] = "dave@example.com"
    msg["Subject"] = "hooks"
    msg.set_content(".dotted line\nsecond line\n")
    return msg


Scenario = Callable[[Any, str, int], Any]


def sendmail_and_quit(client_class: Any, host: str, port: int) -> Any:
    client = client_class(host, port)
    result = client.sendmail(
        "alice@example.com", ["bob@example.com"], "Subject: x\n\n.hi\nthere"
    )
    client.quit()
    return result


def send_message_in_with(client_class: Any, host: str, port: int) -> Any:
    with client_class(host, port) as client:
        return client.send_message(message())


def explicit_commands(client_class: Any, host: str, port: int) -> Any:
    client = client_class()
    client.connect(host, port)
    results = [client.helo(), client.ehlo("client.example"), client.noop()]
    results.append(client.mail("alice@example.com", ["BODY=8BITMIME"]))
    results.append(client.rcpt("bob@example.com"))
    results.append(client.data(b"Subject: explicit\r\n\r\nbody"))
    results.append(client.rset())
    results.append(client.verify("bob@example.com"))
    client.quit()
    return results


SCENARIOS: dict[str, Scenario] = {
    "sendmail_and_quit": sendmail_and_quit,
    "send_message_in_with": send_message_in_with,
    "explicit_commands": explicit_commands,
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_overrides_see_what_smtplib_passes(scenario: str) -> None:
    outcomes = []
    for base in (smtplib.SMTP, anysmtp.SMTP):
        cls, calls = recording_class(base)  # type: ignore[arg-type]
        with AiosmtpdServer() as server:
            result = SCENARIOS[scenario](cls, server.host, server.port)
            received = [(m.mail_from, m.rcpt_tos, m.data) for m in server.messages]
        outcomes.append((calls, result, received))
    (std_calls, std_result, std_received), (any_calls, any_result, any_received) = (
        outcomes
    )
    assert any_calls == std_calls
    assert any_result == std_result
    assert any_received == std_received


def test_send_override_sees_every_byte() -> None:
    seen: list[bytes] = []

    class Tapped(anysmtp.SMTP):
        def send(self, s: ReadableBuffer | str) -> None:
            seen.append(s.encode("ascii") if isinstance(s, str) else bytes(s))
            super().send(s)

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"SIZE 1000",))
        conn.expect(b"mail")
        conn.send(b"250 ok\r\n")
        conn.expect(b"rcpt")
        conn.send(b"250 ok\r\n")
        conn.expect(b"data")
        conn.send(b"354 go\r\n")
        conn.read_data()
        conn.send(b"250 queued\r\n")
        conn.expect(b"quit")
        conn.send(b"221 bye\r\n")

    # The server must outlive the client: its transcript is read after both.
    with ScriptedServer(script) as server:  # noqa: SIM117
        with Tapped(server.host, server.port) as client:
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: s\r\n\r\n.x")
    assert b"".join(seen) == bytes(server.transcript)
    assert seen[-2] == b"Subject: s\r\n\r\n..x\r\n.\r\n"  # the whole message, once


def test_send_data_command_is_a_str() -> None:
    seen: list[str | bytes] = []

    class Tapped(anysmtp.SMTP):
        def send(self, s: ReadableBuffer | str) -> None:
            seen.append(s if isinstance(s, str) else bytes(s))
            super().send(s)

    with AiosmtpdServer() as server, Tapped(server.host, server.port) as client:
        client.sendmail("a@example.com", "b@example.com", "hi")
    assert "data\r\n" in seen
    assert b"hi\r\n.\r\n" in seen


def test_monkeypatched_instance_method(monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[tuple[str, str]] = []
    with AiosmtpdServer() as server, anysmtp.SMTP(server.host, server.port) as client:
        original = client.putcmd

        def putcmd(cmd: str, args: str = "") -> None:
            commands.append((cmd, args))
            original(cmd, args)

        monkeypatch.setattr(client, "putcmd", putcmd)
        client.sendmail("a@example.com", ["b@example.com"], b"x")
        monkeypatch.undo()
        client.noop()
    assert [cmd for cmd, _ in commands] == ["ehlo", "mail", "rcpt", "data"]
    assert commands[1][1].startswith("FROM:<a@example.com>")


def test_monkeypatched_class_method(monkeypatch: pytest.MonkeyPatch) -> None:
    replies: list[tuple[int, bytes]] = []
    original = anysmtp.SMTP.getreply

    def getreply(self: anysmtp.SMTP) -> tuple[int, bytes]:
        reply = original(self)
        replies.append(reply)
        return reply

    monkeypatch.setattr(anysmtp.SMTP, "getreply", getreply)
    with AiosmtpdServer() as server, anysmtp.SMTP(server.host, server.port) as client:
        client.noop()
    assert [code for code, _ in replies] == [220, 250, 221]


def test_print_debug_override_receives_the_debug_lines() -> None:
    lines: list[tuple[Any, ...]] = []

    class Logged(anysmtp.SMTP):
        def _print_debug(self, *args: Any) -> None:
            lines.append(args)

    with AiosmtpdServer() as server:
        client = Logged()
        client.set_debuglevel(1)
        client.connect(server.host, server.port)
        client.noop()
        client.quit()
    assert lines[0] == ("connect: to", (server.host, server.port), None)
    assert ("send:", "'noop\\r\\n'") in lines
    assert lines[-1][0].startswith("reply: retcode (221)")


def test_get_socket_override_proxy_recipe() -> None:
    opened: list[tuple[str, int]] = []

    with AiosmtpdServer() as server:

        class ViaProxy(anysmtp.SMTP):
            def _get_socket(
                self, host: str, port: int, timeout: float | None
            ) -> socket.socket:
                # A proxy would connect elsewhere; this one goes to the test
                # server whatever the host says.
                opened.append((host, port))
                return socket.create_connection((server.host, server.port), timeout)

        with ViaProxy("mail.invalid", 2525) as client:
            client.sendmail("a@example.com", ["b@example.com"], b"via proxy")
        assert opened == [("mail.invalid", 2525)]
        assert server.messages[0].data == b"via proxy\r\n"


def test_sendmail_override_used_by_send_message() -> None:
    calls: list[tuple[Any, ...]] = []

    class Counting(anysmtp.SMTP):
        def sendmail(self, *args: Any, **kwargs: Any) -> dict[str, tuple[int, bytes]]:
            calls.append(args)
            return super().sendmail(*args, **kwargs)

    with AiosmtpdServer() as server, Counting(server.host, server.port) as client:
        client.send_message(message())
    assert len(calls) == 1
    assert calls[0][0] == "alice@example.com"
    assert calls[0][1] == ["bob@example.com", "carol@example.com", "dave@example.com"]
