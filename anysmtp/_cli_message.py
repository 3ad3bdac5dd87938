"""``anysmtp send``: the message and its envelope, from options or a file.

Nothing here touches the network.  A composed message gets ``Date`` and
``Message-ID`` like a mail client would add them; a ready message (``--eml``)
is sent byte for byte, unless it has ``Bcc`` headers, which must not reach the
wire (it is then flattened without them, as ``send_message`` does).

8-bit content goes with ``BODY=8BITMIME`` to a server that offers it.  To one
that does not, a composed message has its 8-bit text parts re-encoded as
quoted-printable, and a ready message is not sent (re-encoding it would change
bytes a signature may cover): see :meth:`Outgoing.for_server`.
"""

from __future__ import annotations

import argparse
import copy
import email.policy
import email.utils
import mimetypes
import os
import quopri
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser

from ._cli_errors import CliError, ExitCode
from ._message import prepare_message
from ._protocol import check_address

__all__ = [
    "NULL_SENDER",
    "Outgoing",
    "Recipient",
    "ServerOffers",
    "build",
    "read_recipient_file",
]

#: How ``--from`` names the null reverse-path (RFC 5321 4.5.5: bounces, DSNs).
NULL_SENDER = "<>"

#: RFC 5322 field names: printable ASCII except the colon.
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")
#: What no header text of ours may hold: the C0 controls but tab (folding
#: white space), and DEL.  A line break would start a header of its own; the
#: others (NUL, ESC, ...) are not allowed in a header by RFC 5322.
_HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: What mimetypes reports as an encoding, as the type of the file itself.
_COMPRESSED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}


@dataclass(frozen=True)
class Recipient:
    """One recipient: as written (for a ``To`` header) and the bare address."""

    display: str
    address: str


@dataclass(frozen=True)
class ServerOffers:
    """What the server offers that decides how 8-bit content may go."""

    #: The server offers 8BITMIME (RFC 6152).
    eightbitmime: bool
    #: The server offers BINARYMIME and CHUNKING (RFC 3030): the client sends
    #: a message with NUL bytes as ``BODY=BINARYMIME`` on its own.
    binarymime: bool
    #: ``host:port``, for messages.
    where: str


@dataclass
class Outgoing:
    """What ``send`` sends: an envelope and a message.

    :meth:`for_server` gives the bytes of each transaction: the message for
    every recipient, or for bulk sending each recipient's copy, fitted to what
    the server offers.
    """

    #: The envelope sender; ``""`` for the null reverse-path (``<>``).
    sender: str
    recipients: list[str]
    data: bytes
    mail_options: tuple[str, ...]
    #: The composed message, when it was composed (``None`` for ``--eml``).
    message: EmailMessage | None
    #: The domain for new Message-IDs.
    domain: str
    #: The composed message with its 8-bit parts quoted-printable, made when
    #: a server without 8BITMIME first needs it.
    _seven_bit: EmailMessage | None = field(default=None, init=False, repr=False)

    def for_server(
        self, recipient: Recipient | None, server: ServerOffers
    ) -> tuple[bytes, tuple[str, ...]]:
        """The bytes and MAIL options of one transaction, for ``recipient``
        alone (bulk) or for every recipient (``None``), fitted to the server.

        8-bit content goes with ``BODY=8BITMIME`` when the server offers it (a
        message whose addresses need SMTPUTF8 has it already, as
        ``send_message`` adds both).  Otherwise a composed message goes with
        its 8-bit text parts quoted-printable.

        :raises CliError: a ready message has 8-bit content and the server
            does not offer 8BITMIME (nothing may be sent: status 5).
        """
        data, options = self._copy(recipient, seven_bit=False)
        if (
            data.isascii()
            or any(each.upper().startswith("BODY=") for each in options)
            # NUL bytes are not 8BITMIME: the client chooses BINARYMIME.
            or (server.binarymime and b"\0" in data)
        ):
            return data, options
        if server.eightbitmime:
            return data, (*options, "BODY=8BITMIME")
        if self.message is not None:
            data, options = self._copy(recipient, seven_bit=True)
            if data.isascii():
                return data, options
        raise CliError(
            ExitCode.REFUSED,
            f"not sent: the message has 8-bit content and {server.where} does not "
            "offer 8BITMIME (encode it as quoted-printable or base64)",
        )

    def _copy(
        self, recipient: Recipient | None, *, seven_bit: bool
    ) -> tuple[bytes, tuple[str, ...]]:
        """The message for every recipient, or for one bulk recipient:
        addressed to them alone (a composed message gets its own ``To`` and
        ``Message-ID``), or the ready message unchanged."""
        if self.message is None:
            if recipient is not None and (self.sender + recipient.address).isascii():
                # Only an international address needs SMTPUTF8 (and the
                # 8BITMIME that comes with it): not every copy of the list.
                return self.data, tuple(
                    each
                    for each in self.mail_options
                    if each.upper() not in ("SMTPUTF8", "BODY=8BITMIME")
                )
            return self.data, self.mail_options
        if recipient is None and not seven_bit:
            return self.data, self.mail_options
        message = self.message
        if seven_bit:
            if self._seven_bit is None:
                self._seven_bit = _quoted_printable(self.message)
            message = self._seven_bit
        recipients = self.recipients
        if recipient is not None:
            _set_header(message, "To", recipient.display)
            _set_header(
                message, "Message-ID", email.utils.make_msgid(domain=self.domain)
            )
            recipients = [recipient.address]
        prepared = prepare_message(
            message, self.sender, recipients, (), smtputf8_supported=_yes
        )
        return prepared.data, prepared.mail_options


def _quoted_printable(message: EmailMessage) -> EmailMessage:
    """A copy of ``message`` whose 8-bit parts are quoted-printable: readable
    where the text is mostly ASCII, and 7-bit for a server without 8BITMIME.
    Other headers stay where they are."""
    encoded = copy.deepcopy(message)
    for part in encoded.walk():
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if part.is_multipart() or cte != "8bit":
            continue
        raw = part.get_payload(decode=True)
        assert isinstance(raw, bytes)  # a part that is not multipart
        part.set_payload(quopri.encodestring(raw).decode("ascii"))
        part.replace_header("Content-Transfer-Encoding", "quoted-printable")
    return encoded


def _set_header(message: EmailMessage, name: str, value: str) -> None:
    """Replace a header where it stands (or add it)."""
    if name in message:
        message.replace_header(name, value)
    else:
        message[name] = value


def _yes() -> bool:
    # Prepared before connecting: whether the server supports SMTPUTF8 is
    # checked when sending (MAIL with SMTPUTF8 fails cleanly).
    return True


def _parse(value: str) -> list[Recipient] | None:
    """The addresses in ``value`` (``a@b``, ``Name <a@b>``, comma-separated),
    or ``None`` if one of them is not a mailbox.

    RFC 5321 addresses have a domain; ``postmaster`` alone is the exception.
    """
    pairs = email.utils.getaddresses([value])
    for _name, address in pairs:
        local, at, domain = address.rpartition("@")
        if not (local and at and domain) and address.lower() != "postmaster":
            return None
    return [Recipient(_display(*pair), pair[1]) for pair in pairs] or None


def _addresses(values: Sequence[str], option: str) -> list[Recipient]:
    """Each value may hold several comma-separated addresses."""
    recipients: list[Recipient] = []
    for value in values:
        parsed = _parse(value)
        if parsed is None:
            raise CliError(ExitCode.USAGE, f"{option}: not an address: {value!r}")
        recipients.extend(parsed)
    return recipients


def _display(name: str, address: str) -> str:
    """``Name <address>`` for a header, or the address alone."""
    if not name:
        return address
    try:
        return email.utils.formataddr((name, address))
    except UnicodeEncodeError:
        # formataddr wants an ASCII address; the header policy encodes the
        # rest (an international address needs SMTPUTF8 anyway).
        return f'"{email.utils.quote(name)}" <{address}>'


def _sender(value: str) -> str:
    """The envelope sender ``--from`` gives: ``""`` for the null sender."""
    if value.strip() == NULL_SENDER:
        return ""
    parsed = _parse(value)
    if parsed is None or len(parsed) != 1:
        raise CliError(ExitCode.USAGE, f"--from: not one address: {value!r}")
    return parsed[0].address


def _read_bytes(path: str, option: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise CliError(
            ExitCode.USAGE, f"{option}: cannot read {path}: {exc.strerror or exc}"
        ) from None


def _read_text(path: str, option: str, hint: str = "") -> str:
    try:
        return _read_bytes(path, option).decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(
            ExitCode.USAGE, f"{option}: {path} is not UTF-8 text{hint}"
        ) from None


def read_recipient_file(path: str) -> list[Recipient]:
    """``--to-file``: one address per line; blank lines and ``#`` comments are
    skipped.

    :raises CliError: a line that is not one address, or no address at all.
    """
    text = _read_text(path, "--to-file")
    recipients: list[Recipient] = []
    # Lines end as in a text file opened with universal newlines (LF, CRLF,
    # CR): str.splitlines would also break at VT, FF and other controls,
    # splitting one line into addresses instead of refusing it.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        _refuse_control_characters(f"--to-file: line {number}", line)
        parsed = _parse(line)
        if parsed is None or len(parsed) != 1:
            raise CliError(
                ExitCode.USAGE, f"--to-file: line {number} is not one address: {line!r}"
            )
        recipients.append(parsed[0])
    if not recipients:
        raise CliError(ExitCode.USAGE, f"--to-file: no address in {path}")
    return recipients


def _headers(values: Sequence[str]) -> list[tuple[str, str]]:
    headers = []
    for value in values:
        name, colon, text = value.partition(":")
        name = name.strip()
        if not colon or not _FIELD_NAME.match(name):
            raise CliError(
                ExitCode.USAGE, f"--header: expected 'Name: value', got {value!r}"
            )
        headers.append((name, text.strip()))
    return headers


def _attachment_type(path: str) -> tuple[str, str]:
    content_type, encoding = mimetypes.guess_type(path, strict=False)
    if encoding is not None:
        # report.csv.gz is a gzip file, whatever it holds.
        content_type = _COMPRESSED_TYPES.get(encoding, "application/octet-stream")
    if content_type is None:
        content_type = "application/octet-stream"
    maintype, _, subtype = content_type.partition("/")
    return maintype, subtype


def _compose(
    args: argparse.Namespace, sender: str, first: Recipient | None
) -> tuple[EmailMessage, str]:
    """The message the options describe; for bulk sending, addressed to the
    ``first`` recipient (each copy gets its own ``To``)."""
    message = EmailMessage()
    headers = _headers(args.header)
    author = sender
    if not sender:
        # Bounces come from <>, but their From header names a mailbox
        # (MAILER-DAEMON@...), which only the user can say.
        given = [value for name, value in headers if name.lower() == "from"]
        if not given:
            raise CliError(
                ExitCode.USAGE,
                f"--from {NULL_SENDER} (the null sender) is not a From header: "
                "give one with --header 'From: ADDRESS'",
            )
        parsed = _parse(given[0])
        author = parsed[0].address if parsed else ""
    domain = author.rpartition("@")[2] or "localhost"
    try:
        if sender:
            message["From"] = args.sender
        if first is not None:
            message["To"] = first.display
        for option, name in (("to", "To"), ("cc", "Cc"), ("bcc", "Bcc")):
            values = getattr(args, option)
            if values:
                message[name] = ", ".join(
                    each.display for each in _addresses(values, f"--{option}")
                )
        if args.subject is not None:
            message["Subject"] = args.subject
        message["Date"] = email.utils.formatdate(localtime=True)
        # Given a domain, make_msgid does not look up this machine's name.
        message["Message-ID"] = email.utils.make_msgid(domain=domain)
        if any(name.lower() == "content-transfer-encoding" for name, _ in headers):
            raise ValueError(
                "Content-Transfer-Encoding is chosen for the body; it cannot be set"
            )
        # Content-* headers go on after the body, which sets its own.
        _apply_headers(message, [each for each in headers if not _is_content(each[0])])
    except (ValueError, TypeError, IndexError) as exc:
        raise CliError(ExitCode.USAGE, f"invalid header: {exc}") from None
    hint = " (send it with --attach instead)"
    text = args.body
    if args.body_file is not None:
        text = _read_text(args.body_file, "--body-file", hint)
    html = None
    if args.html_file is not None:
        html = _read_text(args.html_file, "--html-file", hint)
    if html is None or text is not None:
        message.set_content(text or "")
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    for path in args.attach:
        data = _read_bytes(path, "--attach")
        maintype, subtype = _attachment_type(path)
        # A file name that is not valid UTF-8 (lone surrogates) cannot be
        # written into the message as it is.
        filename = os.path.basename(path).encode("utf-8", "surrogateescape")
        try:
            message.add_attachment(
                data, maintype, subtype, filename=filename.decode("utf-8", "replace")
            )
        except ValueError as exc:  # what the header policy refuses
            raise CliError(ExitCode.USAGE, f"--attach: {path!r}: {exc}") from None
    try:
        _apply_headers(message, [each for each in headers if _is_content(each[0])])
    except (ValueError, TypeError, IndexError) as exc:
        raise CliError(ExitCode.USAGE, f"invalid header: {exc}") from None
    return message, domain


def _is_content(name: str) -> bool:
    return name.lower().startswith("content-")


def _apply_headers(message: EmailMessage, headers: list[tuple[str, str]]) -> None:
    """``--header`` replaces what the other options set, once per name."""
    replaced: set[str] = set()
    for name, value in headers:
        if name.lower() not in replaced:
            replaced.add(name.lower())
            del message[name]
        message[name] = value


def _refuse_control_characters(what: str, value: str) -> None:
    """Refuse an address with a control character, before it is parsed.

    :func:`email.utils.getaddresses` reads ``"a@b\\r\\nBcc: c@d"`` as two
    addresses, both clean, so the library's own check on each address cannot
    see what was injected: the value as given is checked, with that check.

    :param what: the option (or ``--to-file`` line) for the message.
    :raises CliError: a C0 control character or DEL in ``value`` (status 2).
    """
    try:
        check_address(value)
    except ValueError:
        raise CliError(
            ExitCode.USAGE, f"{what}: control character in {value!r}"
        ) from None


def _check_text(args: argparse.Namespace) -> None:
    """Arguments that go into the message must be text: bytes that are not
    valid in the locale's encoding arrive as lone surrogates.  Addresses must
    have no control characters either."""
    for option in ("sender", "to", "cc", "bcc", "subject", "body", "header"):
        values = getattr(args, option)
        name = "--from" if option == "sender" else f"--{option}"
        for value in values if isinstance(values, list) else [values]:
            try:
                (value or "").encode("utf-8")
            except UnicodeEncodeError:
                raise CliError(
                    ExitCode.USAGE, f"{name}: not valid text: {value!r}"
                ) from None
            if value is not None and option in ("sender", "to", "cc", "bcc"):
                _refuse_control_characters(name, value)
            elif value is not None and option in ("subject", "header"):
                _refuse_header_control(name, value)
    for path in args.attach:
        # The name goes into the attachment's Content-Disposition header.
        _refuse_header_control("--attach: file name", os.path.basename(path))


def _refuse_header_control(what: str, value: str) -> None:
    """:raises CliError: ``value``, headed for a header, has a control
    character other than tab (status 2)."""
    if _HEADER_CONTROL.search(value):
        raise CliError(ExitCode.USAGE, f"{what}: control character in {value!r}")


def _check_options(args: argparse.Namespace) -> None:
    _check_text(args)
    stdin_users = [
        option
        for option, value in (
            ("--eml", args.eml),
            ("--body-file", args.body_file),
            ("--html-file", args.html_file),
            ("--to-file", args.to_file),
        )
        if value == "-"
    ]
    stdin_users += ["--attach"] * args.attach.count("-")
    if len(stdin_users) > 1:
        raise CliError(
            ExitCode.USAGE,
            f"only one input can be read from stdin ('-'): {', '.join(stdin_users)}",
        )
    if args.eml is not None:
        composing = [
            option
            for option, given in (
                ("--subject", args.subject is not None),
                ("--body", args.body is not None),
                ("--body-file", args.body_file is not None),
                ("--html-file", args.html_file is not None),
                ("--attach", bool(args.attach)),
                ("--header", bool(args.header)),
            )
            if given
        ]
        if composing:
            raise CliError(
                ExitCode.USAGE,
                f"--eml sends a ready message: {', '.join(composing)} cannot be "
                "used with it",
            )
    elif args.sender is None:
        raise CliError(ExitCode.USAGE, "--from is required (or a message with --eml)")
    if args.body is not None and args.body_file is not None:
        raise CliError(ExitCode.USAGE, "--body and --body-file are exclusive")
    if args.to_file is not None and (args.to or args.cc or args.bcc):
        raise CliError(
            ExitCode.USAGE,
            "--to-file sends one message per address: --to, --cc and --bcc cannot "
            "be used with it",
        )


def build(args: argparse.Namespace) -> tuple[Outgoing, list[Recipient] | None]:
    """The message and envelope the options describe.

    :returns: the message, and the bulk recipients of ``--to-file`` (or ``None``).
    :raises CliError: conflicting options, unreadable files, bad addresses.
    """
    _check_options(args)
    bulk = read_recipient_file(args.to_file) if args.to_file is not None else None
    envelope_to = [
        each.address
        for option in ("to", "cc", "bcc")
        for each in _addresses(getattr(args, option), f"--{option}")
    ]
    sender = _sender(args.sender) if args.sender is not None else None
    if args.eml is not None:
        return _ready_message(args.eml, sender, envelope_to, bulk), bulk
    assert sender is not None
    message, domain = _compose(args, sender, bulk[0] if bulk else None)
    if bulk is None and not envelope_to:
        raise CliError(
            ExitCode.USAGE, "no recipient: give --to, --cc, --bcc or --to-file"
        )
    prepared = prepare_message(
        message,
        sender,
        envelope_to or [each.address for each in bulk or ()],
        (),
        smtputf8_supported=_yes,
    )
    return (
        Outgoing(
            sender=sender,
            recipients=prepared.recipients,
            data=prepared.data,
            mail_options=prepared.mail_options,
            message=message,
            domain=domain,
        ),
        bulk,
    )


def _ready_message(
    path: str,
    sender: str | None,
    envelope_to: list[str],
    bulk: list[Recipient] | None,
) -> Outgoing:
    raw = _read_bytes(path, "--eml")
    if not raw.strip():
        raise CliError(ExitCode.USAGE, f"--eml: {path} is empty")
    try:
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
        prepared = prepare_message(
            message,
            sender,
            envelope_to or [each.address for each in bulk or ()] or None,
            (),
            smtputf8_supported=_yes,
        )
    except (ValueError, TypeError, IndexError) as exc:
        raise CliError(ExitCode.USAGE, f"--eml: cannot use {path}: {exc}") from None
    if sender is None and not prepared.sender:
        raise CliError(
            ExitCode.USAGE, f"--eml: {path} has no From or Sender address: give --from"
        )
    # An empty group ("To: undisclosed-recipients:;") gives an empty address.
    recipients = [each for each in prepared.recipients if each]
    if not recipients:
        raise CliError(
            ExitCode.USAGE,
            f"--eml: no recipient in the headers of {path}: give --to or --to-file",
        )
    return Outgoing(
        sender=prepared.sender,
        recipients=recipients,
        # Byte for byte: only Bcc and Resent-Bcc fields are cut out.
        data=_without_bcc(raw),
        mail_options=prepared.mail_options,
        message=None,
        domain="localhost",
    )


def _without_bcc(raw: bytes) -> bytes:
    """``raw`` without its ``Bcc:`` and ``Resent-Bcc:`` fields (and their
    continuation lines), every other byte as it was: a re-generated message
    would re-encode and re-fold headers a DKIM signature may cover."""
    # The header block ends with the line ending before the empty line.
    end = raw.find(b"\r\n\r\n")
    end = end + 2 if end >= 0 else -1
    end_lf = raw.find(b"\n\n")
    if end < 0 or (0 <= end_lf < end - 1):
        end = end_lf + 1 if end_lf >= 0 else -1
    head, body = (raw, b"") if end < 0 else (raw[:end], raw[end:])
    lines = head.splitlines(keepends=True)
    kept: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        skipping = name in (b"bcc", b"resent-bcc")
        if not skipping:
            kept.append(line)
    return b"".join(kept) + body
