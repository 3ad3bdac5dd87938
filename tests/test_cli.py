"""The ``anysmtp`` command line, run as a child process against test servers.

Each test runs ``python -m anysmtp`` (once the ``anysmtp`` script of the
virtualenv) and checks what the server received, what was printed and the exit
status.  Starting a child Python is slow, so each test checks as much as one run
can show.
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import ipaddress
import json
import mailbox
import os
import pty
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes

import anysmtp
from tests.conftest import Certificates
from tests.servers import (
    AiosmtpdServer,
    Authenticator,
    RecordingHandler,
    ScriptedConnection,
    ScriptedServer,
    drain,
    exchange,
)

pytestmark = pytest.mark.subprocess

USER = "carol@example.com"
PASSWORD = "s3cr3t-P4ss"
TOKEN = "ya29.test-oauth-token"


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str
    raw_stdout: bytes


#: The command line, as a child Python runs it.
CLI = (sys.executable, "-m", "anysmtp")


def run_cli(
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> Result:
    """Run the command line in a child process; stdin is not a terminal."""
    environment = {
        key: value for key, value in os.environ.items() if key != "ANYSMTP_PASSWORD"
    }
    environment.update(env or {})
    completed = subprocess.run(
        [*(command or CLI), *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=environment,
        timeout=30,
        check=False,
    )
    return Result(
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
        completed.stdout,
    )


def start_cli(*args: str, stderr: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """Start the command line in a child process: stdin is ``/dev/null``,
    stdout a pipe, stderr a pipe or the file descriptor ``stderr``."""
    return subprocess.Popen(
        [*CLI, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
    )


def server_arg(server: AiosmtpdServer | ScriptedServer) -> str:
    return f"{server.host}:{server.port}"


def send_args(
    server: str,
    *extra: str,
    sender: str = "a@example.com",
    to: str = "b@example.com",
    body: str | None = "hi",
) -> list[str]:
    """``send`` to ``server``, from ``sender`` to ``to``, with ``body`` (no
    ``--body`` at all if ``None``), then ``extra``."""
    return [
        "send",
        "--server",
        server,
        "--from",
        sender,
        "--to",
        to,
        *(["--body", body] if body is not None else []),
        *extra,
    ]


def bulk_args(server: str, recipients: Path, *extra: str) -> list[str]:
    """``send`` to ``server``, a copy to each address in the file
    ``recipients``, then ``extra``."""
    return ["send", "--server", server, "--to-file", str(recipients), *extra]


def parse(data: bytes) -> email.message.EmailMessage:
    """A received message, with the line endings of a file (LF)."""
    message = email.message_from_bytes(
        data.replace(b"\r\n", b"\n"), policy=email.policy.default
    )
    assert isinstance(message, email.message.EmailMessage)
    return message


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def take_message(
    conn: ScriptedConnection, mail: bytes, rcpt: bytes, reply: bytes = b"250 queued\r\n"
) -> None:
    """Accept a MAIL and a RCPT that start with ``mail`` and ``rcpt``, take the
    message that follows DATA and answer it with ``reply``."""
    exchange(
        conn,
        (mail, b"250 ok\r\n"),
        (rcpt, b"250 ok\r\n"),
        (b"data", b"354 go on\r\n"),
    )
    conn.read_data()
    conn.send(reply)


# Authentication servers -------------------------------------------------------------


@pytest.fixture
def auth_server() -> Iterator[AiosmtpdServer]:
    """AUTH LOGIN PLAIN in plain text."""
    with AiosmtpdServer(
        authenticator=Authenticator(USER, PASSWORD), auth_require_tls=False
    ) as server:
        yield server


def verbose_login_args(server: str, *extra: str) -> list[str]:
    """``send -v`` to ``server`` logged in as USER, from USER to
    dave@example.com with no ``--body``, then ``extra``."""
    return send_args(
        server,
        "--user",
        USER,
        "-v",
        *extra,
        sender=USER,
        to="dave@example.com",
        body=None,
    )


# Help and usage -----------------------------------------------------------------------


def test_entry_point_help_version_and_usage_errors(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "anysmtp"
    result = run_cli("--help", command=[str(script)])
    assert result.status == 0
    for line in ("send", "probe", "server", "exit status:", "6    sent, but some"):
        assert line in result.stdout
    assert run_cli("--version").stdout.strip() == f"anysmtp {anysmtp.__version__}"
    for help_of in ("send", "probe", "server"):
        assert "exit status:" in run_cli(help_of, "--help").stdout
    # No command, an unknown option, a password on the command line.
    assert run_cli().status == 2
    unknown = run_cli("send", "--frm", "a@example.com")
    assert unknown.status == 2
    assert "unrecognized arguments: --frm" in unknown.stderr
    refused = run_cli("send", "--user", USER, "--password", PASSWORD)
    assert refused.status == 2
    assert "--password is not accepted" in refused.stderr
    assert PASSWORD not in refused.stderr
    # Errors found after parsing: one line each, status 2.
    missing = tmp_path / "missing.txt"
    for args, expected in (
        (["--to", "b@example.com"], "--from is required"),
        (["--from", "a@example.com"], "no recipient"),
        (
            ["--from", "a@example.com", "--to", "b@x", "--attach", str(missing)],
            "cannot read",
        ),
        (["--eml", str(missing), "--subject", "x"], "--subject cannot be used"),
        (["--from", "a@x", "--to", "b@x", "--header", "no colon"], "'Name: value'"),
        (["--server", "host:99999", "--from", "a@x", "--to", "b@x"], "not a port"),
        (["--from", "a@x", "--to", "b@x", "--cafile", str(missing)], "--cafile"),
        (["--from", "a@x", "--to", "b@x", "--user", USER], "needs a password"),
        (
            ["--from", "a@x", "--to", "b@x", "--user", USER, "--password-env", "NOPE"],
            "NOPE is not set",
        ),
    ):
        result = run_cli("send", "--server", "127.0.0.1:1", *args)
        assert (result.status, result.stdout) == (2, ""), (args, result)
        assert expected in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr


# Sending ---------------------------------------------------------------------------


def test_send_composed_message_with_attachments(
    smtpd: AiosmtpdServer, tmp_path: Path
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    pdf = b"%PDF-1.4\n" + os.urandom(3000) + b"\r\n.\r\n"
    unknown = b"\x00\x01 no extension we know \r\n.\n"
    (tmp_path / "chart.png").write_bytes(png)
    (tmp_path / "report.pdf").write_bytes(pdf)
    (tmp_path / "data.zzz-unknown").write_bytes(unknown)
    (tmp_path / "body.txt").write_text("Héllo,\n.a line with a dot\nbye\n")
    (tmp_path / "body.html").write_text("<p>Héllo</p>\n")
    result = run_cli(
        "send",
        "--server",
        server_arg(smtpd),
        "--from",
        "Alice <alice@example.com>",
        "--to",
        "bob@example.com",
        "--to",
        "Dan <dan@example.com>, eve@example.com",
        "--cc",
        "carol@example.com",
        "--bcc",
        "hidden@example.com",
        "--subject",
        "Quarterly réport",
        "--body-file",
        str(tmp_path / "body.txt"),
        "--html-file",
        str(tmp_path / "body.html"),
        "--attach",
        str(tmp_path / "chart.png"),
        "--attach",
        str(tmp_path / "report.pdf"),
        "--attach",
        str(tmp_path / "data.zzz-unknown"),
        "--header",
        "X-Mailer-Test: yes",
        "--header",
        "Subject: replaced subject",
    )
    assert result.status == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"sent to 5 recipients via {server_arg(smtpd)}")
    assert "250 OK: queued" in result.stdout
    (received,) = smtpd.messages
    assert received.mail_from == "alice@example.com"
    assert received.rcpt_tos == [
        "bob@example.com",
        "dan@example.com",
        "eve@example.com",
        "carol@example.com",
        "hidden@example.com",
    ]
    assert b"hidden@example.com" not in received.data
    message = parse(received.data)
    assert message["From"] == "Alice <alice@example.com>"
    assert message["To"] == "bob@example.com, Dan <dan@example.com>, eve@example.com"
    assert message["Cc"] == "carol@example.com"
    assert message["Subject"] == "replaced subject"
    assert message.get_all("Subject") == ["replaced subject"]
    assert message["X-Mailer-Test"] == "yes"
    assert message["Date"] is not None
    assert message["Message-ID"].endswith("@example.com>")
    assert message.get_content_type() == "multipart/mixed"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert text.get_content() == "Héllo,\n.a line with a dot\nbye\n"
    assert html.get_content() == "<p>Héllo</p>\n"
    attachments = {
        part.get_filename(): (part.get_content_type(), part.get_payload(decode=True))
        for part in message.iter_attachments()
    }
    assert attachments == {
        "chart.png": ("image/png", png),
        "report.pdf": ("application/pdf", pdf),
        "data.zzz-unknown": ("application/octet-stream", unknown),
    }


def test_dry_run_prints_envelope_and_message_and_connects_nowhere(
    tmp_path: Path,
) -> None:
    result = run_cli(
        "send",
        "--server",
        f"127.0.0.1:{free_port()}",
        "--from",
        "a@example.com",
        "--to",
        "b@example.com",
        "--to",
        "jöhn@exämple.com",
        "--bcc",
        "c@example.com",
        "--subject",
        "dry",
        "--body",
        "nothing leaves",
        "--dry-run",
    )
    assert result.status == 0, result.stderr
    assert result.stderr.splitlines() == [
        "dry run: nothing is sent",
        "MAIL FROM:<a@example.com> SMTPUTF8 BODY=8BITMIME",
        "RCPT TO:<b@example.com>",
        "RCPT TO:<jöhn@exämple.com>",
        "RCPT TO:<c@example.com>",
        f"message: {len(result.raw_stdout)} bytes on stdout",
    ]
    # stdout is the message, exactly as it would be sent (a ready .eml).
    assert b"\r\n" in result.raw_stdout
    assert b"\n" not in result.raw_stdout.replace(b"\r\n", b"")
    message = parse(result.raw_stdout)
    assert message["Subject"] == "dry"
    assert message["To"] == "b@example.com, jöhn@exämple.com"
    assert "Bcc" not in message
    assert message.get_content() == "nothing leaves\n"


def test_eml_from_file_and_stdin(smtpd: AiosmtpdServer, tmp_path: Path) -> None:
    # LF line endings and a dot line: sent as CRLF, dot-stuffed and unstuffed.
    ready = (
        b"From: Ann <ann@example.com>\n"
        b"To: ben@example.com\n"
        b"Cc: cid@example.com\n"
        b"Subject: ready made\n"
        b"X-Odd:   kept    as is\n"
        b"\n"
        b".leading dot\n"
        b"body\n"
    )
    path = tmp_path / "ready.eml"
    path.write_bytes(ready)
    from_file = run_cli("send", "--server", server_arg(smtpd), "--eml", str(path))
    assert from_file.status == 0, from_file.stderr
    from_stdin = run_cli(
        "send",
        "--server",
        server_arg(smtpd),
        "--eml",
        "-",
        "--from",
        "bounces@example.com",
        "--to",
        "only@example.com",
        stdin=ready,
    )
    assert from_stdin.status == 0, from_stdin.stderr
    with_bcc = b"Bcc: secret@example.com\n" + ready
    path.write_bytes(with_bcc)
    bcc = run_cli("send", "--server", server_arg(smtpd), "--eml", str(path))
    assert bcc.status == 0, bcc.stderr
    first, second, third = smtpd.messages
    expected = ready.replace(b"\n", b"\r\n")
    assert (first.mail_from, first.rcpt_tos, first.data) == (
        "ann@example.com",
        ["ben@example.com", "cid@example.com"],
        expected,
    )
    assert (second.mail_from, second.rcpt_tos, second.data) == (
        "bounces@example.com",
        ["only@example.com"],
        expected,
    )
    # A Bcc header never reaches the wire; its address is in the envelope.
    assert third.rcpt_tos == [
        "ben@example.com",
        "secret@example.com",
        "cid@example.com",
    ]
    assert b"secret@example.com" not in third.data
    assert parse(third.data)["Subject"] == "ready made"


def test_verbose_transcript_redacts_credentials(
    auth_server: AiosmtpdServer, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    secrets = [
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    ]
    common = verbose_login_args(server_arg(auth_server), "--body", "authenticated")
    runs = [
        run_cli(*common, "--password-file", str(password_file)),
        run_cli(*common, "--password-env", "MY_PASS", env={"MY_PASS": PASSWORD}),
        run_cli(*common, env={"ANYSMTP_PASSWORD": PASSWORD}),
    ]
    for result in runs:
        assert result.status == 0, result.stderr
        assert "send: 'AUTH PLAIN <redacted>\\r\\n'" in result.stderr
        assert "reply: retcode (235)" in result.stderr
        assert "send: 'mail FROM:<carol@example.com>" in result.stderr
        for secret in secrets:
            assert secret not in result.stderr + result.stdout
    assert len(auth_server.messages) == 3
    assert auth_server.handler.messages[0].rcpt_tos == ["dave@example.com"]
    authenticator = auth_server.server_options["authenticator"]
    assert authenticator.attempts == [("PLAIN", USER.encode(), False)] * 3


def test_verbose_redacts_login_mechanism_steps() -> None:
    with AiosmtpdServer(
        authenticator=Authenticator(USER, PASSWORD),
        auth_require_tls=False,
        auth_exclude_mechanism=["PLAIN"],
    ) as server:
        result = run_cli(
            *verbose_login_args(server_arg(server)), env={"ANYSMTP_PASSWORD": PASSWORD}
        )
        assert result.status == 0, result.stderr
        assert len(server.messages) == 1
    assert "send: 'AUTH LOGIN <redacted>\\r\\n'" in result.stderr
    assert "send: '<redacted>\\r\\n'" in result.stderr
    for secret in (
        PASSWORD,
        USER.encode().hex(),
        base64.b64encode(USER.encode()).decode(),
        base64.b64encode(PASSWORD.encode()).decode(),
    ):
        assert secret not in result.stderr


def test_oauth_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    xoauth2 = base64.b64encode(f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode())

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"AUTH XOAUTH2",))
        exchange(
            conn, (b"AUTH XOAUTH2 " + xoauth2 + b"\r\n", b"235 2.7.0 accepted\r\n")
        )
        take_message(
            conn,
            b"mail FROM:<carol@example.com>",
            b"rcpt TO:<dave@example.com>",
            b"250 queued as 42\r\n",
        )
        exchange(conn, (b"quit", b"221 bye\r\n"))

    with ScriptedServer(script) as server:
        result = run_cli(
            *verbose_login_args(
                server_arg(server), "--oauth-token-file", str(token_file)
            )
        )
    assert result.status == 0, result.stderr
    assert "250 queued as 42" in result.stdout
    assert "send: 'AUTH XOAUTH2 <redacted>\\r\\n'" in result.stderr
    assert TOKEN not in result.stderr
    assert xoauth2.decode() not in result.stderr


# Exit statuses ------------------------------------------------------------------------


def test_authentication_failures_exit_4(
    auth_server: AiosmtpdServer, smtpd: AiosmtpdServer
) -> None:
    wrong = run_cli(
        *send_args(server_arg(auth_server), "--user", USER),
        env={"ANYSMTP_PASSWORD": "wrong"},
    )
    assert (wrong.status, wrong.stdout) == (4, "")
    assert wrong.stderr == (
        "anysmtp: authentication failed: 535 5.7.8 Authentication credentials invalid\n"
    )
    no_auth = run_cli(
        *send_args(server_arg(smtpd), "--user", USER),
        env={"ANYSMTP_PASSWORD": PASSWORD},
    )
    assert no_auth.status == 4
    assert no_auth.stderr == (
        f"anysmtp: {server_arg(smtpd)} does not offer AUTH (servers often offer it "
        "only over TLS: try --starttls or --tls)\n"
    )
    assert auth_server.messages == smtpd.messages == []


def test_connection_and_tls_failures_exit_3(
    smtpd: AiosmtpdServer, certs: Certificates
) -> None:
    port = free_port()
    refused = run_cli(*send_args(f"127.0.0.1:{port}"))
    assert refused.status == 3
    assert refused.stderr == (
        f"anysmtp: cannot connect to 127.0.0.1:{port}: Connection refused\n"
    )
    no_starttls = run_cli(*send_args(server_arg(smtpd), "--starttls"))
    assert no_starttls.status == 3
    assert no_starttls.stderr == (
        f"anysmtp: {server_arg(smtpd)} does not offer STARTTLS, and --starttls "
        "requires it\n"
    )
    not_tls = run_cli(*send_args(server_arg(smtpd), "--tls"))
    assert not_tls.status == 3
    assert "anysmtp: TLS with" in not_tls.stderr
    assert "did not answer in TLS" in not_tls.stderr
    # STARTTLS is used when offered, and the certificate is verified.
    with AiosmtpdServer(tls_context=certs.server_context()) as tls_server:
        untrusted = run_cli(*send_args(server_arg(tls_server)))
        assert untrusted.status == 3
        assert untrusted.stderr.startswith(
            f"anysmtp: the TLS certificate of {server_arg(tls_server)} could not be "
            "verified: "
        )
        assert "--cafile" in untrusted.stderr
        assert untrusted.stderr.count("\n") == 1
        assert tls_server.messages == []

    def silent(conn: ScriptedConnection) -> None:
        conn.read_line()  # no greeting; wait for the client to give up

    with ScriptedServer(silent) as server:
        timeout = run_cli(*send_args(server_arg(server), "--timeout", "0.5"))
    assert timeout.status == 3
    assert timeout.stderr == f"anysmtp: timed out connecting to {server_arg(server)}\n"
    assert smtpd.messages == []


def test_refusals_exit_5_and_partial_refusal_exit_6() -> None:
    handler = RecordingHandler(
        refused_senders={"spammer@example.com"},
        refused_recipients={"gone@example.com", "left@example.com"},
    )
    with AiosmtpdServer(handler) as server:
        where = server_arg(server)
        partial = run_cli(
            *send_args(where, "--to", "gone@example.com", "--cc", "c@example.com")
        )
        everyone = run_cli(
            *send_args(where, to="gone@example.com,left@example.com", body=None)
        )
        sender = run_cli(
            *send_args(where, sender="spammer@example.com", to="b@x.org", body=None)
        )
        handler.data_reply = "554 5.6.0 message content rejected"
        data = run_cli(*send_args(where))
        messages = list(server.messages)
    assert partial.status == 6
    assert partial.stdout.startswith(f"sent to 2 recipients via {where}")
    assert partial.stderr == (
        "anysmtp: sent, but 1 of 3 recipients were refused:\n"
        "  gone@example.com: 550 5.1.1 no such user\n"
    )
    assert everyone.status == 5
    assert everyone.stdout == ""
    assert everyone.stderr == (
        "anysmtp: not sent: every recipient was refused\n"
        "  gone@example.com: 550 5.1.1 no such user\n"
        "  left@example.com: 550 5.1.1 no such user\n"
    )
    assert sender.status == 5
    assert sender.stderr == (
        "anysmtp: not sent: the sender spammer@example.com was refused: "
        "553 5.7.1 sender refused\n"
    )
    assert data.status == 5
    assert data.stderr == (
        "anysmtp: not sent: the message was refused: "
        "554 5.6.0 message content rejected\n"
    )
    # Only the partial send was delivered (the data refusal was received, then
    # refused by the handler's reply).
    assert [each.rcpt_tos for each in messages] == [
        ["b@example.com", "c@example.com"],
        ["b@example.com"],
    ]


def non_loopback_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect(("192.0.2.1", 9))  # a route lookup; nothing is sent
        except OSError:
            return None
        address: str = udp.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


def test_no_credentials_in_clear_text_to_another_machine() -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    received = bytearray()

    def serve(listener: socket.socket) -> None:
        try:
            conn, _peer = listener.accept()
        except OSError:
            return  # the client never came: the assertions below say why
        with conn, conn.makefile("rb") as lines:
            conn.settimeout(10)
            conn.sendall(b"220 plain ESMTP\r\n")
            for line in lines:
                received.extend(line)
                if line.lower().startswith(b"ehlo"):
                    conn.sendall(b"250-plain\r\n250 AUTH PLAIN LOGIN\r\n")
                else:
                    conn.sendall(b"502 5.5.1 not here\r\n")

    with socket.create_server((address, 0)) as listener:
        listener.settimeout(20)
        thread = threading.Thread(target=serve, args=(listener,), daemon=True)
        thread.start()
        where = f"{address}:{listener.getsockname()[1]}"
        result = run_cli(
            *send_args(where, "--user", USER), env={"ANYSMTP_PASSWORD": PASSWORD}
        )
        thread.join(20)
    assert result.status == 3
    assert result.stderr == (
        f"anysmtp: {where} does not offer STARTTLS: not sending credentials in "
        "clear text (--tls if it speaks TLS at once, --no-tls to allow it)\n"
    )
    assert received.lower().startswith(b"ehlo ")
    assert b"AUTH" not in received.upper()


def test_unexpected_reply_exits_1() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        conn.expect(b"mail FROM:<a@example.com>")
        conn.send(b"250 " + b"x" * 9000 + b"\r\n")  # longer than smtplib allows
        drain(conn)

    with ScriptedServer(script) as server:
        result = run_cli(*send_args(server_arg(server)))
    assert result.status == 1
    assert result.stderr.startswith(
        f"anysmtp: unexpected reply from {server_arg(server)}: 500 "
    )
    assert result.stderr.count("\n") == 1


def test_tls_modes_with_cafile(certs: Certificates) -> None:
    with (
        AiosmtpdServer(tls_context=certs.server_context()) as starttls,
        AiosmtpdServer(implicit_tls=certs.server_context()) as implicit,
    ):
        ok_starttls = run_cli(
            *send_args(
                server_arg(starttls), "--starttls", "--cafile", str(certs.ca_file)
            )
        )
        ok_implicit = run_cli(
            *send_args(server_arg(implicit), "--tls", "--cafile", str(certs.ca_file))
        )
        insecure = run_cli(*send_args(server_arg(starttls), "--insecure"))
        assert (ok_starttls.status, ok_implicit.status, insecure.status) == (0, 0, 0)
        assert len(starttls.messages) == 2
        assert len(implicit.messages) == 1


def test_backend_trio(smtpd: AiosmtpdServer) -> None:
    result = run_cli(*send_args(server_arg(smtpd), "--backend", "trio"))
    assert result.status == 0, result.stderr
    assert smtpd.messages[0].rcpt_tos == ["b@example.com"]
    # Without trio installed: a usage error that says how to install it.
    code = (
        "import sys; sys.modules['trio'] = None; from anysmtp._cli import main; "
        "raise SystemExit(main(sys.argv[1:]))"
    )
    missing = run_cli(
        *send_args(server_arg(smtpd), "--backend", "trio"),
        command=[sys.executable, "-c", code],
    )
    assert missing.status == 2
    assert (
        missing.stderr
        == "anysmtp: --backend trio needs trio: pip install 'anysmtp[trio]'\n"
    )
    assert len(smtpd.messages) == 1


# Bulk sending ------------------------------------------------------------------------


@dataclass
class SessionCountingHandler(RecordingHandler):
    """Counts the connections that sent messages; says 421 to every
    ``close_after + 1``-th MAIL of a connection, as servers with a per-connection
    limit do."""

    close_after: int = 0
    sessions: list[Session] = field(default_factory=list)
    mails: dict[int, int] = field(default_factory=dict)

    async def handle_MAIL(
        self,
        server: SMTPServerProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if all(each is not session for each in self.sessions):
            self.sessions.append(session)
        count = self.mails[id(session)] = self.mails.get(id(session), 0) + 1
        if self.close_after and count > self.close_after:
            return "421 4.7.0 too many messages, closing"
        return await super().handle_MAIL(
            server, session, envelope, address, mail_options
        )


def write_recipients(path: Path, addresses: list[str]) -> None:
    path.write_text(
        "# the list\n\n" + "\n".join(addresses) + "\n  \n# end\n", encoding="utf-8"
    )


def test_bulk_one_connection_summary_and_exit_status(tmp_path: Path) -> None:
    handler = SessionCountingHandler(refused_recipients={"gone@example.com"})
    addresses = [
        "one@example.com",
        "Two <two@example.com>",
        "gone@example.com",
        "four@example.com",
    ]
    write_recipients(tmp_path / "list.txt", addresses)
    with AiosmtpdServer(handler) as server:
        result = run_cli(
            *bulk_args(
                server_arg(server),
                tmp_path / "list.txt",
                "--from",
                "news@example.com",
                "--subject",
                "news",
                "--body",
                "same for all",
            )
        )
        everyone_refused = tmp_path / "refused.txt"
        write_recipients(everyone_refused, ["gone@example.com"])
        none = run_cli(
            *bulk_args(
                server_arg(server), everyone_refused, "--from", "news@example.com"
            )
        )
    assert result.status == 6
    assert result.stdout == "sent 3 of 4 messages: 1 refused, 0 failed\n"
    assert (
        result.stderr == "anysmtp: gone@example.com: refused: 550 5.1.1 no such user\n"
    )
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal
    assert none.status == 5
    assert none.stdout == "sent 0 of 1 messages: 1 refused, 0 failed\n"
    assert len(handler.sessions) == 2  # one connection per run
    received = server.messages
    assert [each.rcpt_tos for each in received] == [
        ["one@example.com"],
        ["two@example.com"],
        ["four@example.com"],
    ]
    messages = [parse(each.data) for each in received]
    assert [each["To"] for each in messages] == [
        "one@example.com",
        "Two <two@example.com>",
        "four@example.com",
    ]
    assert len({each["Message-ID"] for each in messages}) == 3
    assert all(each.get_content() == "same for all\n" for each in messages)


def test_bulk_reconnects_and_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    handler = SessionCountingHandler(close_after=2)
    addresses = [f"user{number}@example.com" for number in range(5)]
    write_recipients(tmp_path / "list.txt", addresses)
    ready = tmp_path / "ready.eml"
    ready.write_bytes(b"From: news@example.com\r\nSubject: ready\r\n\r\nsame bytes\r\n")
    with AiosmtpdServer(handler) as server:
        controller, terminal = pty.openpty()
        process = start_cli(
            *bulk_args(server_arg(server), tmp_path / "list.txt", "--eml", str(ready)),
            stderr=terminal,
        )
        os.close(terminal)
        stdout, _ = process.communicate(timeout=30)
        shown = read_terminal(controller)
    assert process.returncode == 0, shown
    assert stdout == b"sent 5 of 5 messages: 0 refused, 0 failed\n"
    assert "\r[" in shown
    assert "] 100% 5/5  sent 5  refused 0  failed 0" in shown
    assert [each.rcpt_tos for each in server.messages] == [[each] for each in addresses]
    assert all(each.data == ready.read_bytes() for each in server.messages)
    # Two messages per connection: the 421 to the third MAIL made it reconnect.
    assert len(handler.sessions) == 3


def test_bulk_stops_when_the_server_is_gone_for_good(tmp_path: Path) -> None:
    def script(conn: ScriptedConnection) -> None:
        if first_connection.is_set():
            conn.send(b"554 5.3.2 no more service\r\n")
            return
        first_connection.set()
        conn.greet_and_ehlo()
        take_message(
            conn, b"mail FROM:<news@example.com>", b"rcpt TO:<user0@example.com>"
        )
        exchange(conn, (b"mail FROM:", b"421 4.3.2 shutting down\r\n"))

    first_connection = threading.Event()
    write_recipients(tmp_path / "list.txt", [f"user{n}@example.com" for n in range(3)])
    with ScriptedServer(script, connections=2) as server:
        result = run_cli(
            *bulk_args(
                server_arg(server), tmp_path / "list.txt", "--from", "news@example.com"
            )
        )
    assert result.status == 3
    assert result.stdout == "sent 1 of 3 messages: 0 refused, 2 failed\n"
    assert result.stderr == (
        f"anysmtp: {server_arg(server)} refused the connection: "
        "554 5.3.2 no more service; 2 messages not sent\n"
    )


def read_terminal(controller: int) -> str:
    """Everything written to a pseudo-terminal whose other end is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    return b"".join(chunks).decode("utf-8", "replace")


# Probe -------------------------------------------------------------------------------


def certificate_of(certs: Certificates) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certs.server.cert_chain_pems[0].bytes())


def name_parts(name: x509.Name) -> list[str]:
    short = {
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "commonName": "CN",
    }
    return [
        f"{short.get(attribute.oid._name, attribute.oid._name)}={attribute.value!s}"
        for attribute in name
    ]


def test_probe_starttls_text_and_json(certs: Certificates) -> None:
    certificate = certificate_of(certs)
    not_after = certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    with AiosmtpdServer(
        tls_context=certs.server_context(),
        authenticator=Authenticator(USER, PASSWORD),
    ) as server:
        text = run_cli("probe", server_arg(server), "--cafile", str(certs.ca_file))
        as_json = run_cli(
            "probe", server_arg(server), "--cafile", str(certs.ca_file), "--json"
        )
    assert text.status == 0, text.stderr
    assert text.stderr == ""
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["server:", server_arg(server)]
    assert "greeting:     220 testserver" in text.stdout
    assert "STARTTLS:     offered" in text.stdout
    assert "certificate:  verified" in text.stdout
    assert f"  not after:  {not_after}" in text.stdout
    assert "  names:      IP Address:127.0.0.1, DNS:localhost" in text.stdout
    # aiosmtpd offers AUTH only after STARTTLS.
    before = next(line for line in lines if line.startswith("before TLS:"))
    after = next(line for line in lines if line.startswith("after TLS:"))
    assert "STARTTLS" in before
    assert "AUTH" not in before
    assert "AUTH LOGIN PLAIN" in after
    assert "STARTTLS" not in after
    assert "AUTH:         LOGIN PLAIN" in text.stdout
    assert "SIZE:         33554432 bytes (32.0 MiB)" in text.stdout

    assert as_json.status == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["starttls"] is True
    assert report["auth_mechanisms"] == ["LOGIN", "PLAIN"]
    assert report["size_limit"] == 33554432
    assert "STARTTLS" in report["extensions_before_tls"]
    assert "AUTH LOGIN PLAIN" in report["extensions"]
    tls = report["tls"]
    assert tls["mode"] == "starttls"
    assert tls["version"] in ("TLSv1.2", "TLSv1.3")
    assert tls["cipher"]
    assert tls["cipher_bits"] >= 128
    assert (tls["verified"], tls["verify_error"]) == (True, None)
    details = tls["certificate"]
    assert details["subject"] == ", ".join(name_parts(certificate.subject))
    assert details["issuer"] == ", ".join(name_parts(certificate.issuer))
    assert details["not_after"] == not_after
    assert details["subject_alt_names"] == [
        "IP Address:127.0.0.1",
        "DNS:localhost",
        "IP Address:0:0:0:0:0:0:0:1",
    ]
    assert details["sha256"] == certificate.fingerprint(hashes.SHA256()).hex()
    assert text.stdout.count(details["sha256"]) == 1


def test_probe_untrusted_certificate_is_reported_and_exits_3(
    certs: Certificates,
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.unknown_server.configure_cert(context)
    certificate = x509.load_pem_x509_certificate(
        certs.unknown_server.cert_chain_pems[0].bytes()
    )
    with (
        AiosmtpdServer(implicit_tls=context) as server,
        AiosmtpdServer(tls_context=context) as starttls,
    ):
        text = run_cli("probe", "--tls", server_arg(server))
        insecure = run_cli("probe", "--tls", "--insecure", server_arg(server))
        as_json = run_cli("probe", "--json", server_arg(starttls))
    assert text.status == 3
    assert "certificate:  NOT VERIFIED: " in text.stdout
    assert "TLS:          TLSv1" in text.stdout
    # What the unverified certificate says is still shown.
    assert f"  issuer:     {', '.join(name_parts(certificate.issuer))}" in text.stdout
    assert "extensions:   SIZE 33554432" in text.stdout
    assert text.stderr.startswith(
        f"anysmtp: the TLS certificate of {server_arg(server)} could not be verified"
    )
    assert as_json.status == 3
    report = json.loads(as_json.stdout)
    assert report["tls"]["mode"] == "starttls"
    assert report["tls"]["verified"] is False
    assert report["tls"]["verify_error"] == "unable to get local issuer certificate"
    assert report["error"] == (
        f"the TLS certificate of {server_arg(starttls)} could not be verified: "
        "unable to get local issuer certificate (--cafile trusts a private CA)"
    )
    # Connected again without verifying: what the server says after STARTTLS
    # is there too.
    assert report["extensions_before_tls"] == [
        "SIZE 33554432",
        "8BITMIME",
        "STARTTLS",
        "HELP",
    ]
    assert report["extensions"] == [
        "SIZE 33554432",
        "8BITMIME",
        "AUTH LOGIN PLAIN",
        "HELP",
    ]
    assert report["tls"]["certificate"]["subject"] == ", ".join(
        name_parts(certificate.subject)
    )
    assert insecure.status == 0
    assert "certificate:  not verified (--insecure)" in insecure.stdout


def test_probe_plain_server_and_unreachable(smtpd: AiosmtpdServer) -> None:
    plain = run_cli("probe", "--json", server_arg(smtpd))
    assert plain.status == 0, plain.stderr
    report = json.loads(plain.stdout)
    assert report["greeting"].startswith("220 testserver")
    assert report["starttls"] is False
    assert "tls" not in report
    assert report["auth_mechanisms"] == []
    assert "SIZE 33554432" in report["extensions"]
    port = free_port()
    gone = run_cli("probe", "--json", f"127.0.0.1:{port}")
    assert gone.status == 3
    assert json.loads(gone.stdout)["error"] == (
        f"cannot connect to 127.0.0.1:{port}: Connection refused"
    )
    required = run_cli("probe", "--starttls", server_arg(smtpd))
    assert required.status == 3
    assert "does not offer STARTTLS" in required.stderr


# The debugging server ---------------------------------------------------------------


def start_server(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    process = start_cli("server", "--port", "0", *args)
    assert process.stderr is not None
    ready = process.stderr.readline().decode()
    if not ready.startswith("anysmtp server: listening on 127.0.0.1:"):
        process.kill()
        _out, errors = process.communicate(timeout=10)
        pytest.fail(f"the server did not start: {ready}{errors.decode()}")
    port = int(ready.split("127.0.0.1:")[1].split()[0])
    return process, port


FIRST = b"Subject: first\r\n\r\nline one\r\n.dot line\r\n"


def test_server_prints_messages_and_stops_on_sigint() -> None:
    process, port = start_server("--hostname", "debug.test")
    try:
        with anysmtp.SMTP("127.0.0.1", port) as client:
            code, _message = client.noop()
            client.sendmail("a@example.com", ["b@example.com", "c@example.com"], FIRST)
            client.sendmail(
                "x@example.com", "y@example.com", b"Subject: second\r\n\r\n2\r\n"
            )
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    assert code == 250
    assert process.returncode == 0, stderr
    assert stderr.decode() == "anysmtp server: stopped (2 messages)\n"
    text = stdout.decode()
    assert "---------- message 1 from 127.0.0.1:" in text
    first = text.split("---------- end of message 1 ----------\n")[0]
    assert first.splitlines()[1:] == [
        "MAIL FROM: a@example.com",
        "RCPT TO: b@example.com, c@example.com",
        f"SIZE: {len(FIRST)} bytes",
        "",
        "Subject: first",
        "",
        "line one",
        ".dot line",
    ]
    assert "MAIL FROM: x@example.com\nRCPT TO: y@example.com\n" in text
    assert text.endswith("---------- end of message 2 ----------\n")


def test_server_saves_to_maildir_and_stops_on_sigterm(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    process, port = start_server("--maildir", str(maildir))
    attachment = bytes(range(256))
    message = email.message.EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Subject"] = "to the maildir"
    message.set_content("saved\n")
    message.add_attachment(attachment, "application", "octet-stream", filename="x.bin")
    try:
        with anysmtp.SMTP("127.0.0.1", port) as client:
            client.send_message(message, to_addrs=["b@example.com", "bcc@example.com"])
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    (saved,) = mailbox.Maildir(maildir, create=False)
    assert saved["Return-Path"] == "<a@example.com>"
    assert saved["X-Envelope-To"] == "b@example.com, bcc@example.com"
    assert saved["Subject"] == "to the maildir"
    parts = [part for part in saved.walk() if part.get_filename() == "x.bin"]
    assert parts[0].get_payload(decode=True) == attachment
    assert stdout.decode().startswith("saved message 1 as ")
    assert "from a@example.com to b@example.com, bcc@example.com" in stdout.decode()


def test_server_without_aiosmtpd_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['aiosmtpd'] = None; from anysmtp._cli import main; "
        "raise SystemExit(main(sys.argv[1:]))"
    )
    result = run_cli("server", "--port", "0", command=[sys.executable, "-c", code])
    assert result.status == 2
    assert result.stderr == (
        "anysmtp: anysmtp server needs aiosmtpd: pip install 'anysmtp[server]'\n"
    )


# Found in review -------------------------------------------------------------------


def test_server_saves_into_an_existing_empty_maildir(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    maildir.mkdir()  # as after `mkdir mail`
    process, port = start_server("--maildir", str(maildir))
    try:
        with anysmtp.SMTP("127.0.0.1", port) as client:
            client.sendmail(
                "a@example.com", ["b@example.com"], b"Subject: s\r\n\r\nx\r\n"
            )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    (saved,) = mailbox.Maildir(maildir, create=False)
    assert saved["Subject"] == "s"
    assert b"stopped (1 message)" in stderr


def test_server_refuses_a_maildir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("x")
    result = run_cli("server", "--port", "0", "--maildir", str(path))
    assert result.status == 2
    assert result.stderr.startswith("anysmtp: --maildir: cannot use ")


def test_eml_bcc_only_message_is_sent_byte_for_byte(
    smtpd: AiosmtpdServer, tmp_path: Path
) -> None:
    subject = b"Subject: =?iso-8859-1?q?caf=E9?= and a quite long subject that goes on"
    raw = (
        b"From: a@example.com\r\nTo: undisclosed-recipients:;\r\n"
        b"Bcc: hidden@example.com,\r\n other@example.com\r\n"
        + subject
        + b"\r\n\r\nbody\r\n"
    )
    path = tmp_path / "bcc.eml"
    path.write_bytes(raw)
    result = run_cli("send", "--server", server_arg(smtpd), "--eml", str(path))
    assert result.status == 0, result.stderr
    [received] = smtpd.messages
    assert received.rcpt_tos == ["hidden@example.com", "other@example.com"]
    # Every byte but the Bcc field (and its continuation line).
    assert received.data == (
        b"From: a@example.com\r\nTo: undisclosed-recipients:;\r\n"
        + subject
        + b"\r\n\r\nbody\r\n"
    )


def test_eml_to_a_list_with_one_international_address(tmp_path: Path) -> None:
    # A server without SMTPUTF8: only the international copy fails.
    with AiosmtpdServer() as server:
        eml = tmp_path / "m.eml"
        eml.write_bytes(b"From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n")
        recipients = tmp_path / "to.txt"
        write_recipients(recipients, ["jörg@exämple.de", "ok@example.com"])
        result = run_cli(*bulk_args(server_arg(server), recipients, "--eml", str(eml)))
        assert result.status == 6, result.stderr
        assert result.stdout == "sent 1 of 2 messages: 0 refused, 1 failed\n"
        assert result.stderr == (
            "anysmtp: jörg@exämple.de: failed: SMTPUTF8 not supported by server\n"
        )
        assert [message.rcpt_tos for message in server.messages] == [["ok@example.com"]]


def test_content_headers_from_the_command_line() -> None:
    result = run_cli(
        *send_args(
            "localhost",
            "--header",
            "Content-Type: text/html; charset=utf-8",
            "--header",
            "Content-Language: de",
            "--dry-run",
        )
    )
    assert result.status == 0, result.stderr
    message = parse(result.raw_stdout)
    assert message.get_content_type() == "text/html"
    assert message.get_content_charset() == "utf-8"
    assert message["Content-Language"] == "de"
    refused = run_cli(
        *send_args("localhost", "--header", "Content-Transfer-Encoding: 8bit")
    )
    assert refused.status == 2
    assert "Content-Transfer-Encoding" in refused.stderr


def test_more_usage_errors_are_one_line(tmp_path: Path) -> None:
    for args in (
        send_args("localhost", "--ehlo-name", "exämple", "--dry-run"),
        send_args("localhost:²"),
        ["probe", "localhost:³"],
    ):
        result = run_cli(*args)
        assert result.status == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_attachment_name_that_is_not_utf8(tmp_path: Path) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/\xff.txt"))
    path.write_bytes(b"hi")
    result = run_cli(*send_args("localhost", "--attach", str(path), "--dry-run"))
    assert result.status == 0, result.stderr
    [part] = [p for p in parse(result.raw_stdout).walk() if p.get_filename()]
    assert part.get_filename() == "\ufffd.txt"
    assert part.get_payload(decode=True) == b"hi"


def test_tls_to_a_plain_server_says_what_to_do(smtpd: AiosmtpdServer) -> None:
    result = run_cli(*send_args(server_arg(smtpd), "--tls", "--timeout", "5"))
    assert result.status == 3
    assert "('" not in result.stderr
    assert "--starttls" in result.stderr


# 8-bit content, the null sender, Ctrl-C in bulk ---------------------------------------

FIXED_HEADERS = (
    "--header",
    "Date: Thu, 01 Jan 2026 00:00:00 +0000",
    "--header",
    "Message-ID: <fixed@example.com>",
)


def composed_8bit(body: bytes, encoding: bytes) -> bytes:
    """The message ``send --subject café --body ... FIXED_HEADERS`` composes."""
    return (
        b"From: a@example.com\r\n"
        b"To: b@example.com\r\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
        b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
        b"Message-ID: <fixed@example.com>\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: " + encoding + b"\r\n"
        b"MIME-Version: 1.0\r\n"
        b"\r\n" + body
    )


EIGHT_BIT_EML = (
    b"From: ann@example.com\r\n"
    b"To: ben@example.com\r\n"
    b"Subject: raw\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"gr\xc3\xbc\xc3\x9fe\r\n"
)


def test_8bit_content_goes_with_body_8bitmime_when_offered(
    smtpd: AiosmtpdServer, smtpd_utf8: AiosmtpdServer, tmp_path: Path
) -> None:
    composed = run_cli(
        *send_args(
            server_arg(smtpd), "--subject", "café", *FIXED_HEADERS, body="Héllo wörld"
        )
    )
    assert composed.status == 0, composed.stderr
    eml = tmp_path / "raw.eml"
    eml.write_bytes(EIGHT_BIT_EML)
    ready = run_cli("send", "--server", server_arg(smtpd), "--eml", str(eml))
    assert ready.status == 0, ready.stderr
    ascii_only = run_cli(*send_args(server_arg(smtpd)))
    assert ascii_only.status == 0, ascii_only.stderr
    dry = run_cli(*send_args("localhost", "--dry-run", body="Héllo"))
    assert dry.stderr.splitlines()[1] == "MAIL FROM:<a@example.com> BODY=8BITMIME"
    # An international address: SMTPUTF8 and one BODY=8BITMIME, as smtplib's
    # send_message sends them.
    international = run_cli(
        "send", "--server", server_arg(smtpd_utf8), "--eml", str(eml), "--to", "jö@x.de"
    )
    assert international.status == 0, international.stderr
    first, second, third = smtpd.messages
    body = "Héllo wörld\r\n".encode()
    assert first.mail_options == [f"SIZE={len(first.data)}", "BODY=8BITMIME"]
    assert first.data == composed_8bit(body, b"8bit")
    assert second.mail_options == [f"SIZE={len(EIGHT_BIT_EML)}", "BODY=8BITMIME"]
    assert second.data == EIGHT_BIT_EML
    # 7-bit content goes without a BODY parameter.
    assert third.mail_options == [f"SIZE={len(third.data)}"]
    [utf8] = smtpd_utf8.messages
    assert (utf8.rcpt_tos, utf8.data) == (["jö@x.de"], EIGHT_BIT_EML)
    assert utf8.mail_options == [
        f"SIZE={len(EIGHT_BIT_EML)}",
        "SMTPUTF8",
        "BODY=8BITMIME",
    ]


def refuse_8bit_eml(tmp_path: Path, *args: str) -> bytes:
    """``send --eml`` of a message with 8-bit bytes (and ``args``) to a server
    without 8BITMIME: status 5 before MAIL, and the error says why.

    :returns: what the server received.
    """
    eml = tmp_path / "raw.eml"
    eml.write_bytes(EIGHT_BIT_EML)
    with seven_bit_server(messages=0) as server:
        ready = run_cli(
            "send", "--server", server_arg(server), "--eml", str(eml), *args
        )
    assert (ready.status, ready.stdout) == (5, "")
    assert ready.stderr == (
        f"anysmtp: not sent: the message has 8-bit content and {server_arg(server)} "
        "does not offer 8BITMIME (encode it as quoted-printable or base64)\n"
    )
    [transcript] = server.transcripts
    return transcript


def seven_bit_server(messages: int) -> ScriptedServer:
    """A server that offers neither 8BITMIME nor PIPELINING; it takes
    ``messages`` messages on one connection, then expects QUIT."""

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo((b"SIZE 100000",))
        for _ in range(messages):
            take_message(conn, b"mail FROM:", b"rcpt TO:")
        exchange(conn, (b"quit", b"221 bye\r\n"))

    return ScriptedServer(script)


def test_8bit_content_to_a_server_without_8bitmime(tmp_path: Path) -> None:
    # A composed message is transfer-encoded (quoted-printable).
    with seven_bit_server(messages=1) as server:
        composed = run_cli(
            *send_args(
                server_arg(server),
                "--subject",
                "café",
                "--ehlo-name",
                "client.test",
                *FIXED_HEADERS,
                body="Héllo wörld",
            )
        )
    assert composed.status == 0, composed.stderr
    data = composed_8bit(b"H=C3=A9llo w=C3=B6rld\r\n", b"quoted-printable")
    assert server.transcripts == [
        b"ehlo client.test\r\n"
        b"mail FROM:<a@example.com> size=%d\r\n"
        b"rcpt TO:<b@example.com>\r\n"
        b"data\r\n" % len(data) + data + b".\r\n"
        b"quit\r\n"
    ]
    assert parse(data).get_content() == "Héllo wörld\n"
    # A ready message is never changed: nothing is sent, and the error says why.
    refused = refuse_8bit_eml(tmp_path, "--ehlo-name", "client.test")
    assert refused == b"ehlo client.test\r\nquit\r\n"


def test_bulk_8bit_to_a_server_without_8bitmime(tmp_path: Path) -> None:
    recipients = tmp_path / "list.txt"
    write_recipients(recipients, ["one@example.com", "Zwei <two@example.com>"])
    with seven_bit_server(messages=2) as server:
        composed = run_cli(
            *bulk_args(
                server_arg(server),
                recipients,
                "--from",
                "news@example.com",
                "--body",
                "Grüße",
            )
        )
    assert composed.status == 0, composed.stderr
    assert composed.stdout == "sent 2 of 2 messages: 0 refused, 0 failed\n"
    [transcript] = server.transcripts
    assert transcript.endswith(b"\r\nquit\r\n")
    assert transcript.isascii()
    assert b"BODY=" not in transcript.upper()
    copies = [
        parse(part.partition(b"\r\n.\r\n")[0] + b"\r\n")
        for part in transcript.split(b"data\r\n")[1:]
    ]
    # Each copy has its own To and Message-ID, quoted-printable.
    assert [each["To"] for each in copies] == [
        "one@example.com",
        "Zwei <two@example.com>",
    ]
    assert copies[0]["Message-ID"] != copies[1]["Message-ID"]
    for each in copies:
        assert each["Content-Transfer-Encoding"] == "quoted-printable"
        assert each.get_content() == "Grüße\n"
    # A ready message with 8-bit content: nothing is sent to anyone.
    refused = refuse_8bit_eml(tmp_path, "--to-file", str(recipients))
    assert refused.startswith(b"ehlo ")
    assert refused.endswith(b"\r\nquit\r\n")
    assert refused.count(b"\r\n") == 2


def test_bulk_8bit_after_reconnecting_to_a_server_without_8bitmime(
    tmp_path: Path,
) -> None:
    # The first connection offers 8BITMIME and closes after one message; the
    # second does not: each copy left fails with the reason, and the run goes
    # on (the first copy went).
    def script(conn: ScriptedConnection) -> None:
        if first_connection.is_set():
            conn.greet_and_ehlo()
            exchange(conn, (b"quit", b"221 bye\r\n"))
            return
        first_connection.set()
        conn.greet_and_ehlo((b"8BITMIME",))
        take_message(conn, b"mail FROM:", b"rcpt TO:")
        exchange(conn, (b"mail FROM:", b"421 4.3.2 closing\r\n"))

    first_connection = threading.Event()
    eml = tmp_path / "raw.eml"
    eml.write_bytes(EIGHT_BIT_EML)
    recipients = tmp_path / "list.txt"
    write_recipients(recipients, [f"user{n}@example.com" for n in range(3)])
    with ScriptedServer(script, connections=2) as server:
        result = run_cli(
            *bulk_args(
                server_arg(server),
                recipients,
                "--ehlo-name",
                "client.test",
                "--eml",
                str(eml),
            )
        )
    assert result.status == 6, result.stderr
    assert result.stdout == "sent 1 of 3 messages: 0 refused, 2 failed\n"
    assert result.stderr == "".join(
        f"anysmtp: user{n}@example.com: failed: not sent: the message has 8-bit "
        f"content and {server_arg(server)} does not offer 8BITMIME (encode it as "
        "quoted-printable or base64)\n"
        for n in (1, 2)
    )
    mail = b"mail FROM:<ann@example.com> BODY=8BITMIME\r\n"
    assert server.transcripts == [
        b"ehlo client.test\r\n"
        + mail
        + b"rcpt TO:<user0@example.com>\r\ndata\r\n"
        + EIGHT_BIT_EML
        + b".\r\n"
        + mail,
        b"ehlo client.test\r\nquit\r\n",
    ]


def test_null_sender_for_bounces(smtpd: AiosmtpdServer, tmp_path: Path) -> None:
    header = "From: Mail Delivery System <MAILER-DAEMON@example.com>"
    with seven_bit_server(messages=1) as server:
        composed = run_cli(
            *send_args(
                server_arg(server),
                "--ehlo-name",
                "client.test",
                "--subject",
                "Undelivered Mail Returned to Sender",
                "--header",
                header,
                "--header",
                "Date: Thu, 01 Jan 2026 00:00:00 +0000",
                sender="<>",
                body="It bounced.",
            )
        )
    assert composed.status == 0, composed.stderr
    [transcript] = server.transcripts
    envelope, _, rest = transcript.partition(b"data\r\n")
    data = rest.removesuffix(b".\r\nquit\r\n")
    assert envelope == (
        b"ehlo client.test\r\n"
        b"mail FROM:<> size=%d\r\n"
        b"rcpt TO:<b@example.com>\r\n" % len(data)
    )
    message = parse(data)
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@example.com>"
    assert message.get_all("From") == [message["From"]]
    # The Message-ID's domain is the From header's.
    assert message["Message-ID"].endswith("@example.com>")
    assert message.get_content() == "It bounced.\n"
    # A ready message keeps its From header; the envelope sender is null.
    eml = tmp_path / "dsn.eml"
    eml.write_bytes(EIGHT_BIT_EML)
    ready = run_cli(
        "send", "--server", server_arg(smtpd), "--eml", str(eml), "--from", "<>"
    )
    assert ready.status == 0, ready.stderr
    [received] = smtpd.messages
    assert (received.mail_from, received.rcpt_tos) == ("<>", ["ben@example.com"])
    assert received.data == EIGHT_BIT_EML
    dry = run_cli(
        "send", "--from", "<>", "--to", "b@example.com", "--header", header, "--dry-run"
    )
    assert dry.status == 0, dry.stderr
    assert dry.stderr.splitlines()[1:3] == ["MAIL FROM:<>", "RCPT TO:<b@example.com>"]
    # A composed message needs a From header, which <> cannot be.
    no_from = run_cli(
        *send_args(f"127.0.0.1:{free_port()}", sender="<>", to="b@x.org", body=None)
    )
    assert (no_from.status, no_from.stdout) == (2, "")
    assert no_from.stderr == (
        "anysmtp: --from <> (the null sender) is not a From header: give one with "
        "--header 'From: ADDRESS'\n"
    )


#: The ready message the interrupted bulk runs send.
NEWS_EML = b"From: news@example.com\r\nSubject: news\r\n\r\nnews\r\n"


def interrupt_bulk(
    server: ScriptedServer,
    backend: str,
    tmp_path: Path,
    recipients: int,
    stalled: threading.Event,
) -> tuple[int, bytes, bytes]:
    """Run ``send --eml`` of :data:`NEWS_EML` with ``--to-file`` (``recipients``
    addresses: user0@example.com, user1@example.com, ...) and Ctrl-C it once
    the server's script sets ``stalled``.

    :returns: the exit status, stdout and stderr.
    """
    addresses = [f"user{number}@example.com" for number in range(recipients)]
    write_recipients(tmp_path / "list.txt", addresses)
    eml = tmp_path / "news.eml"
    eml.write_bytes(NEWS_EML)
    process = start_cli(
        *bulk_args(
            server_arg(server),
            tmp_path / "list.txt",
            "--ehlo-name",
            "client.test",
            "--backend",
            backend,
            "--eml",
            str(eml),
        )
    )
    try:
        assert stalled.wait(20), "the client never reached the stall"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("stall", ["rcpt", "end of data"])
def test_bulk_interrupted_reports_what_was_sent(
    tmp_path: Path, stall: str, backend: str
) -> None:
    stalled = threading.Event()

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        for number in range(3):
            exchange(conn, (b"mail FROM:<news@example.com>", b"250 ok\r\n"))
            if number == 2 and stall == "rcpt":
                conn.expect(b"rcpt TO:<user2@example.com>")
                break
            exchange(
                conn,
                (f"rcpt TO:<user{number}@example.com>".encode(), b"250 ok\r\n"),
                (b"data", b"354 go on\r\n"),
            )
            conn.read_data()
            if number == 2:
                break
            conn.send(b"250 queued\r\n")
        stalled.set()
        drain(conn)

    with ScriptedServer(script) as server:
        status, stdout, stderr = interrupt_bulk(server, backend, tmp_path, 4, stalled)
    assert status == 130, stderr
    assert stdout == b"sent 2 of 4 messages: 0 refused, 2 failed (interrupted)\n"
    if stall == "rcpt":
        assert stderr == (
            b"anysmtp: interrupted; 2 messages not sent, starting with "
            b"user2@example.com\n"
        )
    else:
        assert stderr == (
            b"anysmtp: user2@example.com: unknown: interrupted while waiting for "
            b"the server's reply to the message: it may have been delivered\n"
            b"anysmtp: interrupted; 1 message not sent, starting with "
            b"user3@example.com\n"
        )
    copies = [
        b"mail FROM:<news@example.com>\r\n"
        b"rcpt TO:<user%d@example.com>\r\n"
        b"data\r\n" % number + NEWS_EML + b".\r\n"
        for number in range(3)
    ]
    if stall == "rcpt":
        copies[2] = b"mail FROM:<news@example.com>\r\nrcpt TO:<user2@example.com>\r\n"
    # Interrupted in the middle of a transaction: the connection is closed
    # without QUIT (which the server could take for message text).
    assert server.transcripts == [b"ehlo client.test\r\n" + b"".join(copies)]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_bulk_interrupted_waiting_for_the_reply_to_quit(
    tmp_path: Path, backend: str
) -> None:
    at_quit = threading.Event()

    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        for reply in (b"250 queued\r\n", b"550 5.7.1 no thanks\r\n"):
            take_message(conn, b"mail FROM:<news@example.com>", b"rcpt TO:<", reply)
        exchange(conn, (b"rset", b"250 ok\r\n"))
        conn.expect(b"quit")
        at_quit.set()
        drain(conn)  # never answers QUIT

    with ScriptedServer(script) as server:
        status, stdout, stderr = interrupt_bulk(server, backend, tmp_path, 2, at_quit)
    assert status == 130, stderr
    # Every message was tried before Ctrl-C: the summary and the refusal are
    # all there, marked interrupted.
    assert stdout == b"sent 1 of 2 messages: 1 refused, 0 failed (interrupted)\n"
    assert stderr == (
        b"anysmtp: user1@example.com: refused: 550 5.7.1 no thanks\n"
        b"anysmtp: interrupted\n"
    )
    assert server.transcripts == [
        b"ehlo client.test\r\n"
        + b"".join(
            b"mail FROM:<news@example.com>\r\n"
            b"rcpt TO:<user%d@example.com>\r\n"
            b"data\r\n" % number + NEWS_EML + b".\r\n"
            for number in range(2)
        )
        + b"rset\r\nquit\r\n"
    ]


def test_refused_null_sender_is_named() -> None:
    def script(conn: ScriptedConnection) -> None:
        conn.greet_and_ehlo()
        exchange(
            conn,
            (b"mail FROM:<>", b"550 5.7.1 no bounces here\r\n"),
            (b"rset", b"250 ok\r\n"),
            (b"quit", b"221 bye\r\n"),
        )

    with ScriptedServer(script) as server:
        result = run_cli(
            *send_args(
                server_arg(server),
                "--ehlo-name",
                "client.test",
                "--header",
                "From: MAILER-DAEMON@example.com",
                sender="<>",
                body="It bounced.",
            )
        )
    assert (result.status, result.stdout) == (5, "")
    assert result.stderr == (
        "anysmtp: not sent: the sender <> was refused: 550 5.7.1 no bounces here\n"
    )
    assert server.transcripts == [
        b"ehlo client.test\r\nmail FROM:<>\r\nrset\r\nquit\r\n"
    ]


# Refused input ---------------------------------------------------------------------


def refused_before_sending(*args: str) -> Result:
    """Run ``send`` with ``args`` against an aiosmtpd server and check that the
    command stopped with status 2 before sending anything: no MAIL, no message.

    :returns: what the run printed.
    """
    handler = SessionCountingHandler()
    with AiosmtpdServer(handler) as server:
        result = run_cli("send", "--server", server_arg(server), *args)
    assert (result.status, result.stdout) == (2, ""), result
    assert handler.sessions == []
    assert server.messages == []
    return result


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["--from", "a@example.com", "--to", "b@example.com\r\nBcc: evil@x.example"],
            "--to: control character in 'b@example.com\\r\\nBcc: evil@x.example'",
            id="to-crlf",
        ),
        pytest.param(
            ["--from", "a@example.com", "--cc", "c@example.com\nBcc: evil@x.example"],
            "--cc: control character in 'c@example.com\\nBcc: evil@x.example'",
            id="cc-lf",
        ),
        pytest.param(
            ["--from", "a@example.com", "--bcc", "d@example.com\rBcc: evil@x.example"],
            "--bcc: control character in 'd@example.com\\rBcc: evil@x.example'",
            id="bcc-cr",
        ),
        pytest.param(
            ["--from", "Ann\t<a@example.com>", "--to", "b@example.com"],
            "--from: control character in 'Ann\\t<a@example.com>'",
            id="from-tab",
        ),
        pytest.param(
            ["--from", "a@exam\x7fple.com", "--to", "b@example.com"],
            "--from: control character in 'a@exam\\x7fple.com'",
            id="from-del",
        ),
    ],
)
def test_control_characters_in_addresses_are_refused(
    args: list[str], expected: str
) -> None:
    # getaddresses() reads "b@x\r\nBcc: evil@y" as two clean addresses: the
    # value as given must be refused, not what the parser made of it.
    result = refused_before_sending(*args, "--body", "hi")
    assert result.stderr == f"anysmtp: {expected}\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            "x@example.com\x00",
            "--to-file: line 3: control character in 'x@example.com\\x00'",
            id="nul",
        ),
        # str.splitlines() would break the line at VT into two addresses.
        pytest.param(
            "x@example.com\x0bevil@x.example",
            "--to-file: line 3: control character in "
            "'x@example.com\\x0bevil@x.example'",
            id="vt",
        ),
    ],
)
def test_control_characters_in_a_recipient_file_are_refused(
    tmp_path: Path, line: str, expected: str
) -> None:
    recipients = tmp_path / "list.txt"
    # A CRLF file: its line endings are not control characters in a line.
    recipients.write_bytes(f"# the list\r\nok@example.com\r\n{line}\r\n".encode())
    result = refused_before_sending(
        "--to-file", str(recipients), "--from", "news@example.com", "--body", "hi"
    )
    assert result.stderr == f"anysmtp: {expected}\n"


@pytest.mark.parametrize(
    "control",
    ["\r\n", "\n", "\x1b", "\x7f", "\x08"],
    ids=["crlf", "lf", "esc", "del", "backspace"],
)
def test_attachment_name_with_a_control_character_is_refused(
    tmp_path: Path, control: str
) -> None:
    name = f'a"{control}Bcc: evil@x.example{control}.txt'
    path = str(tmp_path / name)
    Path(path).write_bytes(b"data\n")
    result = refused_before_sending(
        "--from", "a@example.com", "--to", "b@example.com", "--attach", path
    )
    assert result.stderr == (
        f"anysmtp: --attach: file name: control character in {name!r}\n"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["--subject", "hi\r\nBcc: evil@x.example"],
            "--subject: control character in 'hi\\r\\nBcc: evil@x.example'",
            id="subject-crlf",
        ),
        pytest.param(
            ["--subject", "\x1b[31mred"],
            "--subject: control character in '\\x1b[31mred'",
            id="subject-esc",
        ),
        pytest.param(
            ["--header", "X-Note: a\x01b"],
            "--header: control character in 'X-Note: a\\x01b'",
            id="header-soh",
        ),
        pytest.param(
            ["--header", "X-Note: a\nBcc: evil@x.example"],
            "--header: control character in 'X-Note: a\\nBcc: evil@x.example'",
            id="header-lf",
        ),
        pytest.param(
            ["--header", "X-Note: a\x7f"],
            "--header: control character in 'X-Note: a\\x7f'",
            id="header-del",
        ),
    ],
)
def test_control_characters_in_header_text_are_refused(
    args: list[str], expected: str
) -> None:
    result = refused_before_sending(
        "--from", "a@example.com", "--to", "b@example.com", *args, "--body", "hi"
    )
    assert result.stderr == f"anysmtp: {expected}\n"


def test_a_tab_in_header_text_is_kept(smtpd: AiosmtpdServer) -> None:
    # Tab is white space in a header (RFC 5322), not a control to refuse.
    result = run_cli(
        "send",
        "--server",
        server_arg(smtpd),
        "--from",
        "a@example.com",
        "--to",
        "b@example.com",
        "--subject",
        "a\tb",
        "--header",
        "X-Note: c\td",
        "--body",
        "hi",
    )
    assert result.status == 0, result
    [received] = smtpd.messages
    assert b"\r\nSubject: a\tb\r\n" in received.data
    assert b"\r\nX-Note: c\td\r\n" in received.data
