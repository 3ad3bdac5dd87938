"""smtplib's own example scripts print the same debug output under anysmtp.

The ``prompt()`` script at the bottom of CPython's ``Lib/smtplib.py`` and the
example of the smtplib documentation are run in child processes, once with
``import smtplib`` and once with ``import anysmtp as smtplib`` and otherwise the
same source, against one aiosmtpd server.  What ``set_debuglevel`` prints on
stderr must be the same line for line once the server's port (which differs
from the scripts' port 25) and, at level 2, the timestamps are taken out.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import (
    AiosmtpdServer,
    RecordingHandler,
    ScriptedConnection,
    ScriptedServer,
)

pytestmark = pytest.mark.subprocess

#: The script at the bottom of CPython's Lib/smtplib.py (``if __name__ ==
#: '__main__':``), with ``SMTP('localhost')`` pointed at the test server.
LIB_SCRIPT = """\
import sys
{import_line}

host, port = sys.argv[1], int(sys.argv[2])


def prompt(prompt):
    sys.stdout.write(prompt + ": ")
    sys.stdout.flush()
    return sys.stdin.readline().strip()

fromaddr = prompt("From")
toaddrs = prompt("To").split(',')
print("Enter message, end with ^D:")
msg = ''
while 1:
    line = sys.stdin.readline()
    if not line:
        break
    msg = msg + line
print("Message length is %d" % len(msg))

{connect}
server.sendmail(fromaddr, toaddrs, msg)
server.quit()
"""

#: The "SMTP Example" of the smtplib documentation, pointed at the test server.
DOCS_SCRIPT = """\
import sys
{import_line}

host, port = sys.argv[1], int(sys.argv[2])


def prompt(prompt):
    return input(prompt).strip()

fromaddr = prompt("From: ")
toaddrs  = prompt("To: ").split()
print("Enter message, end with ^D (Unix) or ^Z (Windows):")

# Add the From: and To: headers at the start!
msg = ("From: %s\\r\\nTo: %s\\r\\n\\r\\n"
       % (fromaddr, ", ".join(toaddrs)))
while True:
    try:
        line = input()
    except EOFError:
        break
    if not line:
        break
    msg = msg + line

print("Message length is", len(msg))

{connect}
server.sendmail(fromaddr, toaddrs, msg)
server.quit()
"""

#: How the script connects: the examples' way (in the constructor, then
#: ``set_debuglevel``), or with the debug level set before ``connect()``, so that
#: the ``connect: to (...)`` and ``connect: b'...'`` lines are printed too.
CONNECT_STYLES = {
    "constructor": (
        "server = smtplib.SMTP(host, port)\nserver.set_debuglevel({level})"
    ),
    "connect": (
        "server = smtplib.SMTP()\n"
        "server.set_debuglevel({level})\n"
        "server.connect(host, port)"
    ),
}


@dataclass(frozen=True)
class Example:
    source: str
    stdin: str
    sender: str
    recipients: list[str]
    data: bytes


EXAMPLES = {
    # Lines end with LF as typed; one starts with a dot (dot-stuffing shows in
    # the ``send: b'...'`` line).
    "lib": Example(
        LIB_SCRIPT,
        stdin=(
            "alice@example.com\n"
            "bob@example.com,carol@example.com\n"
            "From: alice@example.com\n"
            "To: bob@example.com, carol@example.com\n"
            "Subject: debug output\n"
            "\n"
            "Hello from smtplib's own script.\n"
            ".A line that starts with a dot\n"
            "..and one with two\n"
            ".\n"
            "The end.\n"
        ),
        sender="alice@example.com",
        recipients=["bob@example.com", "carol@example.com"],
        data=(
            b"From: alice@example.com\r\n"
            b"To: bob@example.com, carol@example.com\r\n"
            b"Subject: debug output\r\n"
            b"\r\n"
            b"Hello from smtplib's own script.\r\n"
            b".A line that starts with a dot\r\n"
            b"..and one with two\r\n"
            b".\r\n"
            b"The end.\r\n"
        ),
    ),
    # The docs' script joins the typed lines without separators and stops at
    # the first empty line.
    "docs": Example(
        DOCS_SCRIPT,
        stdin=(
            "alice@example.com\n"
            "bob@example.com carol@example.com\n"
            "Hello from the documentation's example. \n"
            ".A dot after no line break\n"
            "\n"
            "never read\n"
        ),
        sender="alice@example.com",
        recipients=["bob@example.com", "carol@example.com"],
        data=(
            b"From: alice@example.com\r\n"
            b"To: bob@example.com, carol@example.com\r\n"
            b"\r\n"
            b"Hello from the documentation's example. .A dot after no line break\r\n"
        ),
    ),
}

_TIMESTAMP = re.compile(r"^\d\d:\d\d:\d\d(?:\.\d{1,6})? ")


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_example(
    tmp_path: Path,
    name: str,
    import_line: str,
    connect: str,
    level: int,
    server: AiosmtpdServer | ScriptedServer,
) -> Run:
    """Run one example script in a child Python against ``server``."""
    example = EXAMPLES[name]
    source = example.source.format(
        import_line=import_line,
        connect=CONNECT_STYLES[connect].format(level=level),
    )
    script = tmp_path / f"{name}_{import_line.split()[1]}.py"
    script.write_text(source)
    result = subprocess.run(
        [sys.executable, str(script), server.host, str(server.port)],
        input=example.stdin,
        capture_output=True,
        text=True,
        timeout=20,
        cwd=tmp_path,
        check=False,
    )
    return Run(result.returncode, result.stdout, result.stderr)


def normalise(stderr: str, port: int, level: int, module: str) -> list[str]:
    """The debug lines with the server's port replaced and timestamps removed
    (every line has one at level 2, none has one at level 1)."""
    lines = []
    for line in stderr.splitlines():
        stamp = _TIMESTAMP.match(line)
        if level > 1:
            assert stamp is not None, f"{module}: no timestamp at level 2: {line!r}"
            line = line[stamp.end() :]
        else:
            assert stamp is None, f"{module}: timestamp at level 1: {line!r}"
        lines.append(re.sub(rf"\b{port}\b", "<PORT>", line))
    return lines


def diff(expected: list[str], actual: list[str]) -> str:
    return "\n".join(
        difflib.unified_diff(
            expected, actual, "import smtplib", "import anysmtp as smtplib", lineterm=""
        )
    )


def compare_runs(
    tmp_path: Path,
    name: str,
    connect: str,
    level: int,
    server: AiosmtpdServer | ScriptedServer,
) -> list[str]:
    """Run the example with both modules; return smtplib's normalised output
    after checking that anysmtp's is the same."""
    runs = {
        module: run_example(tmp_path, name, import_line, connect, level, server)
        for module, import_line in [
            ("smtplib", "import smtplib"),
            ("anysmtp", "import anysmtp as smtplib"),
        ]
    }
    for module, run in runs.items():
        assert run.returncode == 0, f"{module} run failed:\n{run.stderr}"
    assert runs["anysmtp"].stdout == runs["smtplib"].stdout
    expected = normalise(runs["smtplib"].stderr, server.port, level, "smtplib")
    actual = normalise(runs["anysmtp"].stderr, server.port, level, "anysmtp")
    assert actual == expected, "debug output differs:\n" + diff(expected, actual)
    return expected


@pytest.mark.parametrize("connect", ["constructor", "connect"])
@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("name", ["lib", "docs"])
def test_example_debug_output_is_smtplibs(
    tmp_path: Path, name: str, level: int, connect: str
) -> None:
    example = EXAMPLES[name]
    with AiosmtpdServer() as server:
        lines = compare_runs(tmp_path, name, connect, level, server)
    # The comparison covered the whole session, not an empty or cut output.
    assert lines[0].startswith("connect: to " if connect == "connect" else "send: ")
    assert lines[-1] == "reply: retcode (221); Msg: b'Bye'"
    assert "data: (250, b'OK: queued')" in lines
    # The message itself, dot-stuffed, as one ``send: b'...'`` line.
    assert any(
        line.startswith("send: b") and "From: alice@example.com\\r\\n" in line
        for line in lines
    )
    if connect == "connect":
        assert lines[0] == f"connect: to ('{server.host}', <PORT>) None"
        assert any(line.startswith("connect: b'testserver ") for line in lines)
    else:
        assert not any(line.startswith("connect:") for line in lines)
    # The server received the very same message from both.
    first, second = server.messages
    assert first == second
    assert first.mail_from == example.sender
    assert first.rcpt_tos == example.recipients
    assert first.data == example.data


def test_refused_recipient_debug_output_is_smtplibs(tmp_path: Path) -> None:
    # A refused RCPT is printed, and sendmail still sends to the others.
    handler = RecordingHandler(refused_recipients={"carol@example.com"})
    with AiosmtpdServer(handler) as server:
        lines = compare_runs(tmp_path, "lib", "connect", 1, server)
    assert "reply: retcode (550); Msg: b'5.1.1 no such user'" in lines
    first, second = server.messages
    assert first == second
    assert first.rcpt_tos == ["bob@example.com"]


def test_helo_fallback_and_odd_replies_debug_output_is_smtplibs(
    tmp_path: Path,
) -> None:
    # A server that refuses EHLO (HELO follows), greets in UTF-8 and answers
    # HELO with a multi-line reply holding invalid UTF-8: the ``%a`` and
    # ``repr`` forms of the debug lines must match too.
    received: list[bytes] = []

    def script(conn: ScriptedConnection) -> None:
        conn.send("220 grüß dich ESMTP\r\n".encode())
        conn.expect(b"ehlo ")
        conn.send(b"502 5.5.1 no EHLO here\r\n")
        conn.expect(b"helo ")
        conn.send(b"250-first line\r\n250 caf\xc3\xa9 \xff\r\n")
        conn.expect(b"mail FROM:<alice@example.com>\r\n")
        conn.send(b"250 ok\r\n")
        conn.expect(b"rcpt TO:<bob@example.com>\r\n")
        conn.send(b"250 ok\r\n")
        conn.expect(b"rcpt TO:<carol@example.com>\r\n")
        conn.send(b"251 will forward\r\n")
        conn.expect(b"data\r\n")
        conn.send(b"354 go ahead\r\n")
        received.append(conn.read_data())
        conn.send(b"250 2.0.0 queued\r\n")
        conn.expect(b"quit\r\n")
        conn.send(b"221 2.0.0 bye\r\n")

    with ScriptedServer(script, connections=2) as server:
        lines = compare_runs(tmp_path, "lib", "connect", 1, server)
    assert "reply: b'220 gr\\xc3\\xbc\\xc3\\x9f dich ESMTP\\r\\n'" in lines
    assert "reply: retcode (250); Msg: b'first line\\ncaf\\xc3\\xa9 \\xff'" in lines
    assert any(line.startswith("send: 'helo ") for line in lines)
    assert lines[-1] == "reply: retcode (221); Msg: b'2.0.0 bye'"
    first, second = received
    assert first == second
    # As sent: dot-stuffed, CRLF, ended by the lone dot.
    assert first == EXAMPLES["lib"].data.replace(b"\r\n.", b"\r\n..") + b".\r\n"
