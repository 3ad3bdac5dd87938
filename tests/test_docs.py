"""Every ```python block of docs/*.md and README.md runs against local servers.

The conventions the examples follow (docs/index.md explains them to readers):

- **Servers.**  Examples talk to ``localhost`` on three ports that stand for the
  usual ones: ``8025`` for port 25 (plain aiosmtpd, what ``python -m aiosmtpd -n``
  starts), ``8587`` for port 587 (STARTTLS required, then AUTH required) and
  ``8465`` for port 465 (implicit TLS, AUTH required).  The test starts an
  aiosmtpd server for each of these numbers the block mentions and rewrites the
  number to that server's port; nothing else in the example changes.  The TLS
  servers' certificate is issued by a private CA whose certificate is ``ca.pem``
  in the working directory (with ``client.pem``, a client certificate and key
  that the implicit-TLS server accepts).  The servers accept the user
  ``me@example.com`` with the password ``secret`` or the OAuth token
  ``ya29.access-token`` (XOAUTH2 and OAUTHBEARER), and refuse the recipient
  ``nobody@example.com``.
- **Sync or async.**  A block with a top-level ``await`` (``async with``,
  ``async for``) runs inside an event loop on asyncio, asyncio+uvloop and trio;
  only on trio if it imports ``trio``, only on asyncio (and uvloop) if it imports
  ``asyncio``.  Any other block runs as a script (``__name__ == "__main__"``), so
  it may call ``asyncio.run`` or ``trio.run`` itself.
- **What is checked.**  The block must not raise.  A block that calls
  ``send``/``sendmail``/``send_message``/``data`` must deliver at least one
  message, unless it says ``# delivers nothing``, in which case it must deliver
  none.  Every delivered message's envelope addresses and ``Subject`` appear in
  the block's source.  Every ``print(...)`` call ends with a comment showing its
  output, and the block prints exactly those lines, in that order.
- **Opting out.**  A block whose first line is ``# not run: <reason>`` is only
  compiled; the reason is mandatory.  Blocks in other languages (``sh``,
  ``text``...) are not run; Python under another name (``py``, ``pycon``...) is
  refused, so that no example escapes by accident.
"""

from __future__ import annotations

import ast
import base64
import email
import email.policy
import inspect
import io
import re
import shutil
import ssl
import tokenize
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.conftest import Certificates
from tests.servers import AiosmtpdServer, RecordingHandler

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

USER = "me@example.com"
PASSWORD = "secret"
TOKEN = "ya29.access-token"
REFUSED_RECIPIENT = "nobody@example.com"

#: The port numbers examples use, standing for 25, 587 and 465.
PLAIN_PORT, STARTTLS_PORT, IMPLICIT_TLS_PORT = 8025, 8587, 8465
PORT_PATTERN = re.compile(rf"\b({PLAIN_PORT}|{STARTTLS_PORT}|{IMPLICIT_TLS_PORT})\b")

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
#: Python under a name the test would not run: refused.
OTHER_PYTHON_NAMES = {"py", "py3", "python3", "pycon", "ipython", "ipython3"}
NOT_RUN = re.compile(r"^#\s*not run\b")
NOT_RUN_WITH_REASON = re.compile(r"^# not run: (?P<reason>\S.*\S)\s*$")
DELIVERS_NOTHING = "# delivers nothing"
SENDS = re.compile(r"\b(send|sendmail|send_message|data)\(")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    #: The 1-based line of the first line of code (after the fence).
    line: int
    language: str
    source: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def not_run(self) -> bool:
        return bool(NOT_RUN.match(self.source.lstrip()))


def fenced_blocks(path: Path) -> Iterator[Block]:
    """The fenced code blocks of a Markdown file, nested fences included as text."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        start = index
        while index < len(lines):
            closing = FENCE.match(lines[index])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"]
            ):
                break
            index += 1
        # A fence indented in a list item: its content carries the same indent.
        body = [
            line[indent:] if not line[:indent].strip() else line.lstrip()
            for line in lines[start:index]
        ]
        index += 1
        info = opening["info"].strip()
        yield Block(
            path,
            start + 1,
            info.split()[0].lower() if info else "",
            "\n".join(body) + "\n",
        )


ALL_BLOCKS = [block for path in DOCUMENTS for block in fenced_blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language == "python"]


def compile_block(block: Block, source: str | None = None) -> Any:
    """Compile a block so that tracebacks point at the Markdown file's lines."""
    padded = "\n" * (block.line - 1) + (block.source if source is None else source)
    return compile(
        padded, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )


def is_async(block: Block) -> bool:
    try:
        code = compile_block(block)
    except SyntaxError:
        return False  # test_sync_example reports it
    return bool(code.co_flags & inspect.CO_COROUTINE)


def imported_modules(block: Block) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(block.source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def backends_for(block: Block) -> list[str]:
    modules = imported_modules(block)
    if "trio" in modules:
        return ["trio"]
    if "asyncio" in modules:
        return ["asyncio", "uvloop"]
    return ["asyncio", "uvloop", "trio"]


BACKEND_PARAMS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}

RUN_BLOCKS = [block for block in PYTHON_BLOCKS if not block.not_run]
SYNC_BLOCKS = [
    pytest.param(block, id=block.name) for block in RUN_BLOCKS if not is_async(block)
]
ASYNC_BLOCKS = [
    pytest.param(block, BACKEND_PARAMS[backend], id=f"{block.name}-{backend}")
    for block in RUN_BLOCKS
    if is_async(block)
    for backend in backends_for(block)
]


# The servers -----------------------------------------------------------------------


@dataclass
class DocsHandler(RecordingHandler):
    """Records messages, refuses ``nobody@example.com``, and accepts the docs'
    OAuth token with XOAUTH2 and OAUTHBEARER."""

    refused_recipients: set[str] = field(default_factory=lambda: {REFUSED_RECIPIENT})
    #: Refuse MAIL before a login (aiosmtpd's own ``auth_required`` needs
    #: STARTTLS: it does not count implicit TLS as TLS).
    login_required: bool = False

    async def handle_MAIL(
        self,
        server: SMTPServerProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.login_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        return await super().handle_MAIL(
            server, session, envelope, address, mail_options
        )

    async def _initial_response(
        self, server: SMTPServerProtocol, args: list[str]
    ) -> bytes | None:
        if len(args) > 1:
            return base64.b64decode(args[1])
        response = await server.challenge_auth("")
        return response if isinstance(response, bytes) else None

    async def auth_XOAUTH2(
        self, server: SMTPServerProtocol, args: list[str]
    ) -> AuthResult:
        response = await self._initial_response(server, args)
        expected = f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01".encode()
        return AuthResult(success=response == expected, handled=False)

    async def auth_OAUTHBEARER(
        self, server: SMTPServerProtocol, args: list[str]
    ) -> AuthResult:
        response = await self._initial_response(server, args)
        if response is None:
            return AuthResult(success=False, handled=False)
        gs2_header, _, fields = response.partition(b"\x01")
        success = (
            gs2_header == f"n,a={USER},".encode()
            and f"auth=Bearer {TOKEN}".encode() in fields.split(b"\x01")
        )
        return AuthResult(success=success, handled=False)


def authenticator(
    server: SMTPServerProtocol,
    session: Session,
    envelope: Envelope,
    mechanism: str,
    auth_data: object,
) -> AuthResult:
    """Accepts the docs' user and password (PLAIN, LOGIN)."""
    success = isinstance(auth_data, LoginPassword) and (
        auth_data.login,
        auth_data.password,
    ) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=success, handled=False)


def implicit_tls_context(certs: Certificates) -> ssl.SSLContext:
    """The port 465 server: verifies a client certificate when one is sent."""
    context = certs.server_context()
    context.verify_mode = ssl.CERT_OPTIONAL
    certs.ca.configure_trust(context)
    return context


def start_server(port: int, certs: Certificates) -> AiosmtpdServer:
    handler = DocsHandler()
    if port == PLAIN_PORT:
        return AiosmtpdServer(handler, enable_SMTPUTF8=True)
    if port == STARTTLS_PORT:
        return AiosmtpdServer(
            handler,
            tls_context=certs.server_context(),
            require_starttls=True,
            authenticator=authenticator,
            auth_required=True,
        )
    handler.login_required = True
    return AiosmtpdServer(
        handler,
        implicit_tls=implicit_tls_context(certs),
        authenticator=authenticator,
        auth_require_tls=False,  # aiosmtpd only counts STARTTLS as TLS
    )


@dataclass
class Run:
    """What a block needs: its rewritten source and its servers."""

    block: Block
    servers: list[AiosmtpdServer]
    code: Any


@pytest.fixture
def docs_directory(
    tmp_path: Path, certs: Certificates, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The working directory of the examples: ``ca.pem`` and ``client.pem``."""
    shutil.copy(certs.ca_file, tmp_path / "ca.pem")
    shutil.copy(certs.client_file, tmp_path / "client.pem")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as servers:
        yield servers


def prepare(block: Block, certs: Certificates, stack: ExitStack) -> Run:
    """Start the servers the block mentions and point the block at them."""
    numbers = sorted({int(match) for match in PORT_PATTERN.findall(block.source)})
    servers = {
        number: stack.enter_context(start_server(number, certs)) for number in numbers
    }
    source = PORT_PATTERN.sub(
        lambda match: str(servers[int(match[0])].port), block.source
    )
    return Run(block, list(servers.values()), compile_block(block, source))


# The checks ------------------------------------------------------------------------


def expected_output(block: Block) -> list[str]:
    """The comment that ends each ``print(...)`` call, in source order."""
    comments = {
        token.start[0]: token.string
        for token in tokenize.generate_tokens(io.StringIO(block.source).readline)
        if token.type == tokenize.COMMENT
    }
    calls = sorted(
        (node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(ast.parse(block.source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "print"
    )
    expected = []
    for first, last in calls:
        comment = comments.get(last)
        assert comment is not None, (
            f"{block.name}: print() on line {block.line + first - 1} needs a "
            "comment showing its output"
        )
        expected.append(comment.removeprefix("#").strip())
    return expected


def check_outcome(run: Run, output: str) -> None:
    block = run.block
    assert output.splitlines() == expected_output(block), f"{block.name}: output"
    messages = [message for server in run.servers for message in server.messages]
    if DELIVERS_NOTHING in block.source:
        assert messages == [], f"{block.name} says it delivers nothing"
    elif SENDS.search(block.source):
        assert messages, f"{block.name}: no message reached the server"
    for message in messages:
        for address in [message.mail_from, *message.rcpt_tos]:
            assert address in block.source, f"{block.name}: unexpected {address!r}"
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        subject = parsed["Subject"]
        if subject is not None:
            assert str(subject) in block.source, f"{block.name}: subject {subject!r}"


# The tests -------------------------------------------------------------------------


def test_every_document_has_examples() -> None:
    """A guard against the test silently running nothing."""
    assert RUN_BLOCKS
    assert SYNC_BLOCKS
    assert ASYNC_BLOCKS


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.name for b in ALL_BLOCKS])
def test_python_is_written_as_python(block: Block) -> None:
    """No example escapes the test by being labelled differently."""
    assert block.language not in OTHER_PYTHON_NAMES, (
        f"{block.name}: write ```python so that the example is run"
    )
    assert not block.language.startswith("{code"), (
        f"{block.name}: write ```python instead of a {block.language} directive"
    )


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.name for b in PYTHON_BLOCKS])
def test_opting_out_needs_a_reason(block: Block) -> None:
    lines = block.source.strip().splitlines()
    for number, line in enumerate(lines[1:], start=1):
        assert not NOT_RUN.match(line.strip()), (
            f"{block.name}: '# not run: <reason>' must be the first line "
            f"(found on line {block.line + number})"
        )
    if block.not_run:
        assert NOT_RUN_WITH_REASON.match(lines[0]), (
            f"{block.name}: write '# not run: <the reason>'"
        )
    compile_block(block)  # valid Python, run or not


@pytest.mark.parametrize("block", SYNC_BLOCKS)
def test_sync_example(
    block: Block,
    certs: Certificates,
    docs_directory: Path,
    stack: ExitStack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = prepare(block, certs, stack)
    exec(run.code, {"__name__": "__main__"})
    check_outcome(run, capsys.readouterr().out)


@pytest.mark.anyio
@pytest.mark.parametrize(("block", "anyio_backend"), ASYNC_BLOCKS)
async def test_async_example(
    block: Block,
    certs: Certificates,
    docs_directory: Path,
    stack: ExitStack,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = prepare(block, certs, stack)
    coroutine = eval(run.code, {"__name__": "__main__"})
    assert inspect.iscoroutine(coroutine)
    await coroutine
    check_outcome(run, capsys.readouterr().out)
