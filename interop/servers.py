"""Private Postfix, Exim and Dovecot (LMTP and submission) instances on
loopback, each with its own configuration, spool, mailboxes and log under one
temporary directory.

Nothing of the system's mail setup is used or written: Postfix runs with
``postfix -c <private config directory>`` (its own main.cf, master.cf, queue,
data directory, SASL database and ports; only the package's own files under
/etc/postfix, such as postfix-files, are read), Exim from the private copy
``interop/install.sh`` unpacked, with ``-C <private configuration>``, Dovecot
with ``dovecot -F -c <private dovecot.conf>`` (its own base, state and log
directories, users and port; nothing under /etc/dovecot is read).  All three
need root (Postfix's master, Exim's trusted configuration, Dovecot's
per-user delivery), which ``make interop`` checks first.

Dovecot's submission server relays what it accepts to :class:`SubmissionRelay`,
an aiosmtpd server in this process behind a recording relay
(:class:`interop.proxy.RecordingProxy`): the tests see every message it
relayed, and every command it sent, on the wire.

``python -m interop.servers`` starts them, prints the endpoints and waits for
Ctrl-C: handy to try a client by hand.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import trustme

from interop.proxy import RecordingProxy
from tests.servers import AiosmtpdServer, ReceivedMessage, RecordingHandler

__all__ = [
    "ACCOUNT",
    "DOMAIN",
    "ENDPOINTS",
    "EXIM_CAP",
    "EXIM_CAPPED_SOURCE",
    "MAILBOXES",
    "PASSWORD",
    "REFUSED_SENDER",
    "RELAY_REFUSED_RECIPIENTS",
    "SIZE_LIMIT",
    "UNKNOWN_RECIPIENT",
    "Endpoint",
    "EndpointSpec",
    "InteropServers",
    "LMTP_EXTENSIONS",
    "LMTP_MAILBOXES",
    "LmtpEndpoint",
    "MailServer",
    "OVER_QUOTA",
    "SUBMISSION_EXTENSIONS",
    "SUBMISSION_SIZE_LIMIT",
    "ServerError",
    "SubmissionEndpoint",
    "SubmissionRelay",
    "split_trace_headers",
]

HERE: Final = Path(__file__).resolve().parent
#: Where install.sh unpacks Exim (the same default and variable).
CACHE: Final = Path(os.environ.get("ANYSMTP_INTEROP_CACHE", HERE / ".cache"))
EXIM_ROOT: Final = CACHE / "exim"
EXIM_BINARY: Final = EXIM_ROOT / "usr" / "sbin" / "exim4"
POSTFIX: Final = "/usr/sbin/postfix"
POSTCONF: Final = "/usr/sbin/postconf"
SASLPASSWD2: Final = "/usr/sbin/saslpasswd2"
#: The user Debian's Exim is built to run as (install.sh makes it).
EXIM_USER: Final = "Debian-exim"
#: Postfix's virtual(8) delivers as this user (it must not be root or postfix);
#: Dovecot's LMTP too, and the users' homes are this user's.
MAILBOX_USER: Final = "nobody"
DOVECOT: Final = "/usr/sbin/dovecot"
DOVECONF: Final = "/usr/bin/doveconf"
#: The package's users (made by dovecot-core's postinst): Dovecot's internal
#: processes and its (unused here) login processes run as them.
DOVECOT_USER: Final = "dovecot"
DOVECOT_LOGIN_USER: Final = "dovenull"

DOMAIN: Final = "interop.test"
#: The account that logs in, on both servers; also a mailbox.
ACCOUNT: Final = f"alice@{DOMAIN}"
PASSWORD: Final = "interop-Secret-42"
#: Delivered addresses and their Maildir folders (a UTF-8 local part included).
MAILBOXES: Final = {
    f"alice@{DOMAIN}": "alice",
    f"bob@{DOMAIN}": "bob",
    f"carol@{DOMAIN}": "carol",
    f"zoë@{DOMAIN}": "zoe",
}
#: Exim takes at most :data:`EXIM_CAP` messages per connection from this
#: loopback address (``smtp_accept_max_per_connection``; 1000 from the others),
#: and answers the next MAIL with 421.
EXIM_CAPPED_SOURCE: Final = "127.0.0.2"
EXIM_CAP: Final = 3
#: MAIL FROM with this address is refused (Postfix: 554 5.7.1, Exim: 550).
REFUSED_SENDER: Final = f"refused-sender@{DOMAIN}"
#: A recipient that no server knows: refused at RCPT.
UNKNOWN_RECIPIENT: Final = f"nobody-here@{DOMAIN}"
#: The recipients the submission relay refuses at RCPT (Dovecot's submission
#: server passes each RCPT on, and the relay's refusal back).
RELAY_REFUSED_RECIPIENTS: Final = frozenset(
    {UNKNOWN_RECIPIENT, f"nobody-else@{DOMAIN}"}
)
#: The SIZE limit of every server: 10 MiB, so that a 9 MiB message fits.
SIZE_LIMIT: Final = 10 * 1024 * 1024
#: Dovecot's user whose quota (one byte) no message fits: its delivery fails
#: after the data (552 5.2.2), while the others' succeed.
OVER_QUOTA: Final = f"full@{DOMAIN}"
#: The users Dovecot's LMTP delivers to, and their Maildirs under its homes
#: (Dovecot's LMTP offers no SMTPUTF8: no UTF-8 local part).
LMTP_MAILBOXES: Final = {
    f"alice@{DOMAIN}": "alice/Maildir",
    f"bob@{DOMAIN}": "bob/Maildir",
    f"carol@{DOMAIN}": "carol/Maildir",
    OVER_QUOTA: "full/Maildir",
}
#: What Dovecot's LMTP server advertises in reply to LHLO (2.3.19).
LMTP_EXTENSIONS: Final = frozenset(
    {"PIPELINING", "CHUNKING", "8BITMIME", "ENHANCEDSTATUSCODES"}
)
#: The message size limit of Dovecot's second submission port (SIZE in its
#: EHLO reply): small, so that a message goes over it in a few chunks.
SUBMISSION_SIZE_LIMIT: Final = 100 * 1024
#: What Dovecot's submission server advertises in reply to EHLO (2.3.19),
#: besides AUTH and BURL.
SUBMISSION_EXTENSIONS: Final = frozenset(
    {"PIPELINING", "CHUNKING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE"}
)

Server = Literal["postfix", "exim"]
TLSMode = Literal["starttls", "implicit", "none"]


@dataclass(frozen=True)
class EndpointSpec:
    """What one listening port offers, as configured (known before start, so
    that tests can be parametrized by it)."""

    name: str
    server: Server
    tls: TLSMode
    #: SASL mechanisms offered (after TLS only).
    auth: tuple[str, ...]
    #: EHLO keywords the port must advertise (after TLS, when it has TLS).
    extensions: frozenset[str]
    #: Whether the port advertises nothing at all.
    minimal: bool = False

    def has(self, extension: str) -> bool:
        """Whether the port advertises ``extension`` (after TLS)."""
        return extension.upper() in self.extensions


_POSTFIX_EXTENSIONS: Final = frozenset(
    {
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
        "ENHANCEDSTATUSCODES",
        "AUTH",
    }
)
_EXIM_EXTENSIONS: Final = frozenset(
    {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING", "AUTH"}
)

#: Every port the tests use, by name.
ENDPOINTS: Final = {
    spec.name: spec
    for spec in (
        EndpointSpec(
            "postfix-submission",
            "postfix",
            "starttls",
            ("PLAIN", "LOGIN", "CRAM-MD5"),
            _POSTFIX_EXTENSIONS | {"STARTTLS"},
        ),
        EndpointSpec(
            "postfix-smtps",
            "postfix",
            "implicit",
            ("PLAIN", "LOGIN", "CRAM-MD5"),
            _POSTFIX_EXTENSIONS,
        ),
        EndpointSpec(
            "postfix-minimal", "postfix", "none", (), frozenset(), minimal=True
        ),
        EndpointSpec(
            "exim-submission",
            "exim",
            "starttls",
            ("PLAIN", "LOGIN"),
            _EXIM_EXTENSIONS | {"STARTTLS"},
        ),
        EndpointSpec(
            "exim-smtps", "exim", "implicit", ("PLAIN", "LOGIN"), _EXIM_EXTENSIONS
        ),
    )
}


class ServerError(RuntimeError):
    """A server could not be configured or started (with its log's tail)."""


@dataclass(frozen=True, kw_only=True)
class LoggingServer:
    """What a running server logs (the same for all the ports of one server):
    the base of :class:`MailServer` and :class:`SubmissionEndpoint`."""

    #: The server's log (Postfix's maillog, Exim's mainlog, Dovecot's log).
    log_file: Path

    @property
    def name(self) -> str:
        """The name in error messages."""
        raise NotImplementedError

    def log_size(self) -> int:
        """The log's current length: pass it to :meth:`log_since` later."""
        try:
            return self.log_file.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        """What the server logged after ``offset``."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(
        self, offset: int, pattern: str, timeout: float = 20.0
    ) -> re.Match[str]:
        """The first match of ``pattern`` in what is logged after ``offset``.

        :raises AssertionError: nothing matched within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_since(offset)
            match = re.search(pattern, text, re.MULTILINE)
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no log line matching {pattern!r} within "
                    f"{timeout} s; logged since:\n{text}"
                )
            time.sleep(0.05)


@dataclass(frozen=True, kw_only=True)
class MailServer(LoggingServer):
    """Where a running server delivers (the same for all the ports of one
    server): the base of :class:`Endpoint` and :class:`LmtpEndpoint`."""

    #: The Maildir folders' parent directory.
    mail_dir: Path
    #: Each delivered address's Maildir, relative to :attr:`mail_dir`.
    mailboxes: Mapping[str, str] = field(default_factory=lambda: MAILBOXES)
    #: Messages already returned by :meth:`delivered` (shared by the ports of
    #: one server, which deliver to the same mailboxes).
    claimed: set[Path] = field(default_factory=set, compare=False, repr=False)

    def mailbox(self, address: str) -> Path:
        """The Maildir where ``address``'s mail is delivered."""
        return self.mail_dir / self.mailboxes[address]

    def delivered(self, address: str, marker: bytes, timeout: float = 30.0) -> bytes:
        """The delivered message to ``address`` that contains ``marker``,
        as stored (Unix line endings, the server's trace headers on top).

        A message is returned once: later searches skip it (mailboxes fill up
        with 9 MiB messages, each read once).

        :raises AssertionError: it was not delivered within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        new = self.mailbox(address) / "new"
        while True:
            found = []
            for path in sorted(new.iterdir()) if new.is_dir() else []:
                if path not in self.claimed and marker in (data := path.read_bytes()):
                    found.append((path, data))
            if len(found) > 1:
                raise AssertionError(f"{len(found)} messages with {marker!r}")
            if found:
                path, data = found[0]
                self.claimed.add(path)
                return data
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no message with {marker!r} in {new} after "
                    f"{timeout} s; the log ends with:\n{self.log_since(0)[-3000:]}"
                )
            time.sleep(0.05)

    def delivered_count(self, address: str, marker: bytes) -> int:
        """How many messages with ``marker`` ``address`` has received so far
        (messages :meth:`delivered` returned hold other markers: skipped)."""
        new = self.mailbox(address) / "new"
        paths = sorted(new.iterdir()) if new.is_dir() else []
        return sum(
            marker in path.read_bytes() for path in paths if path not in self.claimed
        )


@dataclass(frozen=True, kw_only=True)
class Endpoint(MailServer):
    """A running SMTP port: its spec, address and where its server delivers."""

    spec: EndpointSpec
    host: str
    port: int
    #: The private CA's certificate (PEM), which signed the server's.
    ca_file: Path

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, kw_only=True)
class LmtpEndpoint(MailServer):
    """The running LMTP server (Dovecot): a loopback port and a Unix socket,
    both delivering to :data:`LMTP_MAILBOXES`.  No TLS, no AUTH."""

    host: str
    port: int
    socket_path: Path

    @property
    def name(self) -> str:
        return "dovecot-lmtp"


@dataclass(frozen=True, kw_only=True)
class SubmissionEndpoint(LoggingServer):
    """The running submission server (Dovecot): two loopback ports, both with
    AUTH PLAIN and LOGIN (no TLS: the recording relay reads the sessions) for
    :data:`ACCOUNT`, relaying every message to :attr:`relay`."""

    host: str
    #: The port with no message size limit.
    port: int
    #: The port (on another loopback address) with a limit of
    #: :data:`SUBMISSION_SIZE_LIMIT` octets.
    limited_host: str
    limited_port: int
    relay: SubmissionRelay

    @property
    def name(self) -> str:
        return "dovecot-submission"


#: Header fields that Postfix, Exim and Dovecot add on delivery.
TRACE_HEADERS: Final = frozenset(
    {
        "return-path",
        "delivered-to",
        "x-original-to",
        "received",
        "envelope-to",
        "delivery-date",
    }
)


def split_trace_headers(stored: bytes) -> tuple[list[str], bytes]:
    """Split a stored message into the trace header fields the server put on
    top (their names, in order) and the message as the client sent it.

    Only fields in :data:`TRACE_HEADERS` are taken, with their continuation
    lines; the first other line starts the client's message.
    """
    names: list[str] = []
    position = 0
    taking = False
    while position < len(stored):
        end = stored.find(b"\n", position)
        end = len(stored) if end < 0 else end + 1
        line = stored[position:end]
        if line[:1] in (b" ", b"\t") and taking:
            position = end
            continue
        name, colon, _ = line.partition(b":")
        if not colon or name.strip().lower().decode("ascii", "replace") not in (
            TRACE_HEADERS
        ):
            break
        names.append(name.strip().lower().decode("ascii"))
        taking = True
        position = end
    return names, stored[position:]


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free on ``host`` now (the servers bind them a moment later)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _run(*command: str | Path, stdin: str | None = None) -> str:
    """Run a setup command; its output goes into the error when it fails."""
    result = subprocess.run(
        [str(part) for part in command],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise ServerError(
            f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def _fill(template: str, **values: object) -> str:
    """``template`` with each ``@name@`` replaced (Exim's and Postfix's own
    syntax uses braces and dollars, so neither str.format nor Template fit)."""
    text = template
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    leftover = re.search(r"@[a-z_]+@", text)
    if leftover:
        raise ServerError(f"no value for {leftover.group()} in a template")
    return text


def _chown(path: Path, user: str, group: str | None = None) -> None:
    os.chown(
        path, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid if group else -1
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _spawn(root: Path, *command: str) -> subprocess.Popen[bytes]:
    """Start a server in the foreground, as a child we can stop, its standard
    error in ``root/log/stderr``."""
    with (root / "log" / "stderr").open("wb") as stderr:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a server run in the foreground: SIGTERM, then SIGKILL after 15 s."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_greeting(
    port: int,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    host: str = "127.0.0.1",
) -> bool:
    """Whether host:port answered with a TCP connection in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=1).close()
            return True
        time.sleep(0.05)
    return False


@dataclass
class _Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _make_tls(directory: Path, group: str) -> _Tls:
    """A private CA and a certificate for 127.0.0.1/localhost, the key readable
    by ``group`` (the server reads it after dropping root)."""
    ca = trustme.CA(organization_name="anysmtp interop CA")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file = directory / "cert.pem"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key_file = directory / "key.pem"
    leaf.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o640)
    _chown(key_file, "root", group)
    return _Tls(ca_file, cert_file, key_file)


# -- Postfix ----------------------------------------------------------------------

_POSTFIX_MAIN_CF: Final = """\
# Generated by interop/servers.py: a private Postfix instance for the tests.
compatibility_level = 3.6
queue_directory = @root@/queue
data_directory = @root@/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.@domain@
mydomain = @domain@
myorigin = $mydomain
mydestination =
relay_domains =
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
# Headers from remote clients are left alone: the tests compare what is
# delivered with what was sent, byte for byte.
local_header_rewrite_clients =
always_add_missing_headers = no
disable_mime_output_conversion = yes
smtputf8_enable = yes
disable_vrfy_command = yes
smtpd_peername_lookup = no
# The client's port in the log: the tests find their own session by it.
smtpd_client_port_logging = yes
smtpd_banner = $myhostname ESMTP interop Postfix
smtpd_error_sleep_time = 0s
in_flow_delay = 0s
# Refuse the sender at MAIL, not later at RCPT.
smtpd_delay_reject = no
smtpd_sender_restrictions = check_sender_access texthash:@conf@/senders
message_size_limit = @size_limit@
virtual_mailbox_limit = 0
virtual_mailbox_domains = @domain@
virtual_mailbox_base = @root@/mail
virtual_mailbox_maps = texthash:@conf@/mailboxes
virtual_uid_maps = static:@mailbox_uid@
virtual_gid_maps = static:@mailbox_gid@
virtual_minimum_uid = 1
smtpd_tls_chain_files = @key_file@, @cert_file@
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_loglevel = 1
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = @conf@/sasl
smtpd_sasl_local_domain = @domain@
smtpd_sasl_security_options = noanonymous
smtpd_sasl_auth_enable = no
maillog_file = @root@/log/maillog
maillog_file_prefixes = @root@/log
"""

#: The minimal port advertises no extension at all.
_DISCARD_ALL: Final = ",".join(
    (
        "silent-discard",
        "pipelining",
        "size",
        "etrn",
        "enhancedstatuscodes",
        "8bitmime",
        "smtputf8",
        "dsn",
        "chunking",
        "vrfy",
        "starttls",
        "auth",
    )
)

# Every service runs unchrooted (paths stay simple) and the three listeners on
# private loopback ports.
_POSTFIX_MASTER_CF: Final = """\
# Generated by interop/servers.py.
127.0.0.1:@submission@ inet n - n - - smtpd
  -o smtpd_sasl_auth_enable=yes
127.0.0.1:@smtps@ inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
127.0.0.1:@minimal@ inet n - n - - smtpd
  -o smtpd_tls_security_level=none
  -o smtpd_discard_ehlo_keywords=@discard@
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_SASL_SMTPD_CONF: Final = """\
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: @sasldb@
mech_list: PLAIN LOGIN CRAM-MD5
"""


class _Postfix:
    """One private Postfix instance with three smtpd listeners."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "conf"
        self.ports = dict(
            zip(("submission", "smtps", "minimal"), _free_ports(3), strict=True)
        )
        self.log_file = root / "log" / "maillog"
        self.tls: _Tls | None = None
        self.claimed: set[Path] = set()

    def configure(self) -> None:
        root, conf = self.root, self.conf
        for directory in (root, conf, root / "queue", root / "log"):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        (root / "data").mkdir()
        _chown(root / "data", "postfix")
        mailbox_user = pwd.getpwnam(MAILBOX_USER)
        (root / "mail").mkdir(mode=0o700)
        os.chown(root / "mail", mailbox_user.pw_uid, mailbox_user.pw_gid)
        self.tls = _make_tls(conf / "tls", "postfix")
        _write(
            conf / "main.cf",
            _fill(
                _POSTFIX_MAIN_CF,
                root=root,
                conf=conf,
                domain=DOMAIN,
                size_limit=SIZE_LIMIT,
                mailbox_uid=mailbox_user.pw_uid,
                mailbox_gid=mailbox_user.pw_gid,
                key_file=self.tls.key_file,
                cert_file=self.tls.cert_file,
            ),
        )
        _write(
            conf / "master.cf",
            _fill(_POSTFIX_MASTER_CF, discard=_DISCARD_ALL, **self.ports),
        )
        # Maildir folders: a trailing slash means Maildir to virtual(8).
        _write(
            conf / "mailboxes",
            "".join(f"{address} {box}/\n" for address, box in MAILBOXES.items()),
        )
        _write(conf / "senders", f"{REFUSED_SENDER} REJECT sender refused by policy\n")
        sasldb = conf / "sasl" / "sasldb2"
        _write(conf / "sasl" / "smtpd.conf", _fill(_SASL_SMTPD_CONF, sasldb=sasldb))
        user, _, realm = ACCOUNT.partition("@")
        _run(SASLPASSWD2, "-p", "-c", "-f", sasldb, "-u", realm, user, stdin=PASSWORD)
        # smtpd reads the database as the postfix user.
        sasldb.chmod(0o640)
        _chown(sasldb, "root", "postfix")
        _run(POSTCONF, "-c", conf, "-n")  # fails on a syntax error

    def start(self) -> None:
        try:
            _run(POSTFIX, "-c", self.conf, "start")
        except ServerError as exc:
            raise ServerError(f"{exc}\n{_tail(self.log_file)}") from None
        for port in self.ports.values():
            if not _wait_for_greeting(port, 30):
                raise ServerError(
                    f"Postfix does not listen on 127.0.0.1:{port}:\n"
                    f"{_tail(self.log_file)}"
                )

    def _master_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.root / "queue" / "pid" / "master.pid").read_text())
        return None

    def stop(self) -> None:
        pid = self._master_pid()
        with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
            _run(POSTFIX, "-c", self.conf, "stop")
        if pid is None:
            return
        # postfix stop only signals the master: wait until it is gone, so that
        # the directory can be removed.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def endpoints(self) -> dict[str, Endpoint]:
        assert self.tls is not None
        return {
            f"postfix-{port_name}": Endpoint(
                spec=ENDPOINTS[f"postfix-{port_name}"],
                host="127.0.0.1",
                port=port,
                mail_dir=self.root / "mail",
                log_file=self.log_file,
                ca_file=self.tls.ca_file,
                claimed=self.claimed,
            )
            for port_name, port in self.ports.items()
        }


# -- Exim -------------------------------------------------------------------------

_EXIM_CONF: Final = """\
# Generated by interop/servers.py: a private Exim for the tests.
# Exim re-executes itself to deliver, with -C, which drops root ("exim user
# lost privilege for using -C option" in the paniclog): so the transport
# delivers as the Exim user itself.
exim_path = @exim@
spool_directory = @root@/spool
log_file_path = @root@/log/%slog
pid_file_path = @root@/exim.pid
primary_hostname = exim.@domain@
qualify_domain = @domain@
domainlist local_domains = @domain@
disable_ipv6 = true
local_interfaces = <; 127.0.0.1.@submission@ ; 127.0.0.1.@smtps@
tls_on_connect_ports = @smtps@
tls_advertise_hosts = *
tls_certificate = @cert_file@
tls_privatekey = @key_file@
# AUTH only once the session is encrypted.
auth_advertise_hosts = ${if eq{$tls_in_cipher}{}{}{*}}
message_size_limit = @size_limit@
pipelining_advertise_hosts = *
chunking_advertise_hosts = *
smtputf8_advertise_hosts = *
accept_8bitmime = true
host_lookup =
rfc1413_hosts =
keep_environment =
never_users = root
smtp_banner = $smtp_active_hostname ESMTP interop Exim $version_number
# Exim before 4.97 does not announce this cap (as LIMITS MAILMAX).
smtp_accept_max_per_connection = \
  ${if eq{$sender_host_address}{@capped_source@}{@cap@}{1000}}
# On the <= lines: "L" not followed by "-" when the client pipelined, "K" when
# it used CHUNKING.
# H=[127.0.0.1]:port: the tests find their own session by the client's port.
log_selector = +smtp_connection +pipelining +received_recipients +incoming_port
acl_smtp_mail = acl_check_mail
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_mail:
  deny    senders = @refused_sender@
          message = sender refused by policy
  accept

acl_check_rcpt:
  deny    domains = !+local_domains
          message = relay not permitted
  require verify = recipient
  accept

begin routers

mailboxes:
  driver = accept
  domains = +local_domains
  local_parts = lsearch;@root@/mailboxes
  address_data = ${lookup{$local_part}lsearch{@root@/mailboxes}}
  transport = maildir

begin transports

maildir:
  driver = appendfile
  directory = @root@/mail/$address_data
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = @exim_user@
  group = @exim_user@
  mode = 0600

begin authenticators

plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if and{{eq{$auth2}{@account@}}{eq{$auth3}{@password@}}}}
  server_set_id = $auth2

login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = <| Username: | Password:
  server_condition = ${if and{{eq{$auth1}{@account@}}{eq{$auth2}{@password@}}}}
  server_set_id = $auth1
"""


class _Exim:
    """One private Exim daemon with a STARTTLS and an implicit-TLS port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = dict(zip(("submission", "smtps"), _free_ports(2), strict=True))
        self.config = root / "exim.conf"
        self.log_file = root / "log" / "mainlog"
        self.process: subprocess.Popen[bytes] | None = None
        self.tls: _Tls | None = None
        self.claimed: set[Path] = set()

    def configure(self) -> None:
        if not EXIM_BINARY.exists():
            raise ServerError(f"{EXIM_BINARY} is missing: run interop/install.sh")
        root = self.root
        root.mkdir(parents=True)
        root.chmod(0o755)
        for name in ("spool", "log", "mail"):
            (root / name).mkdir(mode=0o750)
            _chown(root / name, EXIM_USER, EXIM_USER)
        self.tls = _make_tls(root / "tls", EXIM_USER)
        _write(
            root / "mailboxes",
            "".join(
                f'"{address.split("@")[0]}": {box}\n'
                for address, box in (MAILBOXES.items())
            ),
        )
        # Exim trusts -C only for a file owned by root and writable by no one else.
        _write(
            self.config,
            _fill(
                _EXIM_CONF,
                exim=EXIM_BINARY,
                root=root,
                domain=DOMAIN,
                size_limit=SIZE_LIMIT,
                cert_file=self.tls.cert_file,
                key_file=self.tls.key_file,
                refused_sender=REFUSED_SENDER,
                capped_source=EXIM_CAPPED_SOURCE,
                cap=EXIM_CAP,
                exim_user=EXIM_USER,
                account=ACCOUNT,
                password=PASSWORD,
                **self.ports,
            ),
        )
        _run(EXIM_BINARY, "-C", self.config, "-bV")  # fails on a syntax error

    def start(self) -> None:
        # -bdf: the listening daemon, in the foreground.
        self.process = _spawn(
            self.root, str(EXIM_BINARY), "-C", str(self.config), "-bdf"
        )
        for port in self.ports.values():
            if not _wait_for_greeting(port, 30, self.process):
                raise ServerError(
                    f"Exim does not listen on 127.0.0.1:{port}:\n"
                    f"{_tail(self.root / 'log' / 'stderr')}\n"
                    f"{_tail(self.root / 'log' / 'paniclog')}\n{_tail(self.log_file)}"
                )

    def stop(self) -> None:
        _terminate(self.process)
        self.process = None

    def endpoints(self) -> dict[str, Endpoint]:
        assert self.tls is not None
        return {
            f"exim-{port_name}": Endpoint(
                spec=ENDPOINTS[f"exim-{port_name}"],
                host="127.0.0.1",
                port=port,
                mail_dir=self.root / "mail",
                log_file=self.log_file,
                ca_file=self.tls.ca_file,
                claimed=self.claimed,
            )
            for port_name, port in self.ports.items()
        }


# -- The relay behind Dovecot's submission server ----------------------------------


class SubmissionRelay:
    """The SMTP server Dovecot's submission server relays to: the tests'
    aiosmtpd server (:class:`tests.servers.AiosmtpdServer`: PIPELINING,
    8BITMIME, SMTPUTF8; no CHUNKING, so Dovecot relays with DATA), refusing
    :data:`RELAY_REFUSED_RECIPIENTS`, behind a :class:`RecordingProxy` whose
    :attr:`~RecordingProxy.sessions` hold every command Dovecot sent.
    """

    def __init__(self) -> None:
        self._server = AiosmtpdServer(
            RecordingHandler(refused_recipients=set(RELAY_REFUSED_RECIPIENTS)),
            hostname=f"relay.{DOMAIN}",
            enable_SMTPUTF8=True,
        )
        self._proxy: RecordingProxy | None = None

    @property
    def proxy(self) -> RecordingProxy:
        """The recording relay in front of the server: Dovecot connects to it."""
        if self._proxy is None:
            raise ServerError("the submission relay is not running")
        return self._proxy

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """The port Dovecot relays to (the recording relay's)."""
        return self.proxy.port

    def start(self) -> None:
        self._server.start()
        self._proxy = RecordingProxy((self._server.host, self._server.port))

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None
        self._server.stop()

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Every message relayed so far, in order (``data``: CRLF line
        endings, dot-stuffing undone, Dovecot's Received field on top)."""
        return list(self._server.messages)

    def with_marker(self, marker: bytes) -> list[ReceivedMessage]:
        """The messages relayed so far that contain ``marker``."""
        return [each for each in self.messages if marker in each.data]

    def relayed(self, marker: bytes, timeout: float = 30.0) -> ReceivedMessage:
        """The one relayed message that contains ``marker``.

        :raises AssertionError: none arrived within ``timeout`` seconds, or
            more than one did.
        """
        deadline = time.monotonic() + timeout
        while not (found := self.with_marker(marker)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the relay received no message with {marker!r} in {timeout} s"
                )
            time.sleep(0.05)
        assert len(found) == 1, f"{len(found)} relayed messages with {marker!r}"
        return found[0]


# -- Dovecot (LMTP and submission) ----------------------------------------------

_DOVECOT_CONF: Final = """\
# Generated by interop/servers.py: a private Dovecot that speaks only LMTP and
# submission.  Everything it writes (sockets, state, log, mail) is under @root@.
base_dir = @root@/run
state_dir = @root@/state
# Its processes are named after it (ps tells it from a system Dovecot).
instance_name = anysmtp-interop
protocols = lmtp submission
listen = 127.0.0.1
ssl = no
hostname = lmtp.@domain@
postmaster_address = postmaster@@domain@
default_internal_user = @internal_user@
default_login_user = @login_user@
log_path = @log_file@
info_log_path = @log_file@
debug_log_path = @log_file@
log_timestamp = "%Y-%m-%d %H:%M:%S "
# The LMTP and submission servers log each command as they read it
# ("Received new command: BDAT 1234 LAST"): the tests see what reached the LMTP
# server over the Unix socket.
log_debug = category=smtp-server
# Every user is the mailbox user, with a home under @root@/home.
first_valid_uid = @mail_uid@
last_valid_uid = @mail_uid@
first_valid_gid = @mail_gid@
last_valid_gid = @mail_gid@
mail_location = maildir:~/Maildir
# Only the submission account logs in (it alone has a password).
passdb {
  driver = passwd-file
  args = @root@/users
}
# In cleartext: the recording relay reads the sessions (Dovecot would refuse
# it on the second address, since a connection from 127.0.0.1 to 127.0.0.2 does
# not count as local).
disable_plaintext_auth = no
auth_mechanisms = plain login
userdb {
  driver = passwd-file
  args = @root@/users
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = @port@
  }
  # @root@/run/lmtp
  unix_listener lmtp {
    mode = 0600
    user = root
  }
}
# Quota is checked when the message is saved: a recipient over quota is
# refused in the replies to the end of the data (one per recipient, RFC
# 2033), not at RCPT.
lmtp_rcpt_check_quota = no
protocol lmtp {
  mail_plugins = $mail_plugins quota
}
# Submission relays every message to the tests' relay, over one connection
# per client session; on its second address, messages are limited in size.
service submission-login {
  inet_listener submission {
    address = 127.0.0.1
    port = @submission_port@
  }
  inet_listener submission-limited {
    address = @limited_host@
    port = @limited_port@
  }
}
protocol submission {
  hostname = submission.@domain@
  submission_relay_host = 127.0.0.1
  submission_relay_port = @relay_port@
  submission_relay_ssl = no
  # What Dovecot sent to the relay and read from it (one file per session).
  submission_relay_rawlog_dir = @root@/relay-rawlog
}
local @limited_host@ {
  protocol submission {
    submission_max_mail_size = @size_limit@
  }
}
plugin {
  quota = count:User quota
  quota_vsizes = yes
}
"""


#: The second loopback address Dovecot's size-limited submission port listens
#: on (settings differ by local address, not by port).
_LIMITED_HOST: Final = "127.0.0.2"


class _Dovecot:
    """One private Dovecot with an LMTP listener on loopback and a Unix socket,
    and two submission listeners relaying to ``relay``."""

    def __init__(self, root: Path, relay: SubmissionRelay) -> None:
        self.root = root
        self.relay = relay
        self.port, self.submission_port = _free_ports(2)
        (self.limited_port,) = _free_ports(1, _LIMITED_HOST)
        self.config = root / "dovecot.conf"
        self.log_file = root / "log" / "dovecot.log"
        self.socket_path = root / "run" / "lmtp"
        self.process: subprocess.Popen[bytes] | None = None
        self.claimed: set[Path] = set()

    def configure(self) -> None:
        for program in (DOVECOT, DOVECONF):
            if not Path(program).exists():
                raise ServerError(f"{program} is missing: run interop/install.sh")
        root = self.root
        root.mkdir(parents=True)
        root.chmod(0o755)
        (root / "log").mkdir(mode=0o755)
        mailbox_user = pwd.getpwnam(MAILBOX_USER)
        uid, gid = mailbox_user.pw_uid, mailbox_user.pw_gid
        # Dovecot makes each home and Maildir, as the mailbox user, on the first
        # delivery.
        (root / "home").mkdir(mode=0o700)
        os.chown(root / "home", uid, gid)
        # The submission server (running as the account's user) writes a raw
        # log of each relay session there.
        (root / "relay-rawlog").mkdir(mode=0o755)
        os.chown(root / "relay-rawlog", uid, gid)
        # passwd-file: user:password:uid:gid:gecos:home:shell:extra fields.  A
        # password for the submission account only: nobody else can log in.  A
        # one-byte quota: nothing fits.
        _write(
            root / "users",
            "".join(
                f"{address}:{'{PLAIN}' + PASSWORD if address == ACCOUNT else ''}"
                f":{uid}:{gid}::{root / 'home' / box.split('/')[0]}::"
                + ("userdb_quota_rule=*:storage=1B" if address == OVER_QUOTA else "")
                + "\n"
                for address, box in LMTP_MAILBOXES.items()
            ),
            mode=0o640,
        )
        # Dovecot's auth service reads it as its internal user.
        _chown(root / "users", "root", DOVECOT_USER)
        _write(
            self.config,
            _fill(
                _DOVECOT_CONF,
                root=root,
                domain=DOMAIN,
                internal_user=DOVECOT_USER,
                login_user=DOVECOT_LOGIN_USER,
                log_file=self.log_file,
                mail_uid=uid,
                mail_gid=gid,
                port=self.port,
                submission_port=self.submission_port,
                limited_host=_LIMITED_HOST,
                limited_port=self.limited_port,
                size_limit=SUBMISSION_SIZE_LIMIT,
                relay_port=self.relay.port,
            ),
        )
        _run(DOVECONF, "-c", self.config, "-n")  # fails on a syntax error

    def start(self) -> None:
        # -F: in the foreground.
        self.process = _spawn(self.root, DOVECOT, "-F", "-c", str(self.config))
        deadline = time.monotonic() + 30
        listening = all(
            _wait_for_greeting(port, 30, self.process, host)
            for host, port in (
                ("127.0.0.1", self.port),
                ("127.0.0.1", self.submission_port),
                (_LIMITED_HOST, self.limited_port),
            )
        )
        while listening and not self.socket_path.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                listening = False
            time.sleep(0.05)
        if not listening:
            raise ServerError(
                f"Dovecot does not listen on 127.0.0.1:{self.port}, "
                f"127.0.0.1:{self.submission_port}, "
                f"{_LIMITED_HOST}:{self.limited_port} and "
                f"{self.socket_path}:\n{_tail(self.root / 'log' / 'stderr')}\n"
                f"{_tail(self.log_file)}"
            )

    def stop(self) -> None:
        # The master stops its children before it exits.
        _terminate(self.process)
        self.process = None

    def endpoint(self) -> LmtpEndpoint:
        return LmtpEndpoint(
            host="127.0.0.1",
            port=self.port,
            socket_path=self.socket_path,
            mail_dir=self.root / "home",
            log_file=self.log_file,
            mailboxes=LMTP_MAILBOXES,
            claimed=self.claimed,
        )

    def submission_endpoint(self) -> SubmissionEndpoint:
        return SubmissionEndpoint(
            host="127.0.0.1",
            port=self.submission_port,
            limited_host=_LIMITED_HOST,
            limited_port=self.limited_port,
            relay=self.relay,
            log_file=self.log_file,
        )


@dataclass
class InteropServers:
    """Postfix, Exim and Dovecot, configured and running until the ``with``
    block ends.

    :param keep: leave the temporary directory (configurations, mailboxes,
        logs) in place after stopping, for a look after a failure.
    """

    keep: bool = False
    directory: Path = field(init=False)
    endpoints: dict[str, Endpoint] = field(init=False, default_factory=dict)
    _lmtp: LmtpEndpoint | None = field(init=False, default=None, repr=False)
    _submission: SubmissionEndpoint | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        # The servers' unprivileged processes must traverse it.
        self.directory = Path(tempfile.mkdtemp(prefix="anysmtp-interop-"))
        self.directory.chmod(0o755)
        self._postfix = _Postfix(self.directory / "postfix")
        self._exim = _Exim(self.directory / "exim")
        self._relay = SubmissionRelay()
        self._dovecot = _Dovecot(self.directory / "dovecot", self._relay)

    @property
    def lmtp(self) -> LmtpEndpoint:
        """Dovecot's LMTP server.

        :raises ServerError: the servers are not running.
        """
        if self._lmtp is None:
            raise ServerError("the interop servers are not running")
        return self._lmtp

    @property
    def submission(self) -> SubmissionEndpoint:
        """Dovecot's submission server.

        :raises ServerError: the servers are not running.
        """
        if self._submission is None:
            raise ServerError("the interop servers are not running")
        return self._submission

    def start(self) -> InteropServers:
        if os.geteuid() != 0:
            raise ServerError("the interop servers need root (see interop/install.sh)")
        try:
            for server in (self._postfix, self._exim):
                server.configure()
                server.start()
                self.endpoints.update(server.endpoints())
            self._relay.start()
            self._dovecot.configure()
            self._dovecot.start()
            self._lmtp = self._dovecot.endpoint()
            self._submission = self._dovecot.submission_endpoint()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._lmtp = None
        self._submission = None
        self._dovecot.stop()
        self._relay.stop()
        self._exim.stop()
        self._postfix.stop()
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> InteropServers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def versions(self) -> dict[str, str]:
        """The servers' versions, as they report them."""
        postfix = _run(POSTCONF, "-c", self._postfix.conf, "-h", "mail_version")
        exim = _run(EXIM_BINARY, "-C", self._exim.config, "-bV").splitlines()[0]
        dovecot = _run(DOVECOT, "--version")
        return {
            "postfix": postfix.strip(),
            "exim": exim.strip(),
            "dovecot": dovecot.strip(),
        }


def _main() -> None:
    with InteropServers(keep=True) as servers:
        print(f"configurations, mailboxes and logs in {servers.directory}")
        for name, version in servers.versions().items():
            print(f"{name}: {version}")
        for endpoint in servers.endpoints.values():
            print(
                f"{endpoint.name}: {endpoint.host}:{endpoint.port} "
                f"tls={endpoint.spec.tls} auth={','.join(endpoint.spec.auth) or '-'} "
                f"ca={endpoint.ca_file}"
            )
        lmtp = servers.lmtp
        print(f"{lmtp.name}: {lmtp.host}:{lmtp.port} and {lmtp.socket_path}")
        submission = servers.submission
        print(
            f"{submission.name}: {submission.host}:{submission.port}, "
            f"{submission.limited_host}:{submission.limited_port} (at most "
            f"{SUBMISSION_SIZE_LIMIT} octets), relaying to "
            f"{submission.relay.host}:{submission.relay.port}"
        )
        print(f"login: {ACCOUNT} / {PASSWORD}")
        print("Ctrl-C (or SIGTERM) stops them.")
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    _main()
    sys.exit(0)
