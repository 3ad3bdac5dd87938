"""Turning an :mod:`email` message into an envelope and bytes (sans-IO).

This is smtplib's ``send_message`` logic, unchanged in behaviour: the envelope
comes from ``Sender``/``From`` and ``To``/``Cc``/``Bcc`` (or their ``Resent-``
forms when the message was resent once), ``Bcc`` and ``Resent-Bcc`` never reach
the wire, and international addresses switch the generator to ``utf8=True`` and
add ``SMTPUTF8`` and ``BODY=8BITMIME`` to the MAIL options.
"""

from __future__ import annotations

import copy
import email.generator
import email.message
import email.utils
import io
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

from ._errors import SMTPNotSupportedError

__all__ = ["NotAMessageError", "PreparedMessage", "prepare_message"]


class NotAMessageError(TypeError, AttributeError):
    """``send_message`` was given something that is not a message object.

    Also an :exc:`AttributeError`: smtplib fails there with one, and callers may
    catch that.
    """


class PreparedMessage(NamedTuple):
    """The envelope and the flattened bytes of a message."""

    sender: str
    recipients: list[str]
    data: bytes
    mail_options: tuple[str, ...]


#: A line break that folds a header (followed by a space or a tab).
_FOLD = re.compile(r"\r\n(?=[ \t])|\n(?=[ \t])|\r(?=[ \t])")
#: What may not stay in an unfolded header (a tab may).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _address_field(value: object) -> str:
    """An address header's value, unfolded, for :func:`email.utils.getaddresses`.

    :raises ValueError: a control character other than folding: a CR or LF
        there would start new addresses (``"a@b\\r\\nRCPT TO:<c@d>"`` gives a
        second recipient), which smtplib sends to.
    """
    text = _FOLD.sub("", str(value))
    if _CONTROL.search(text) is not None:
        raise ValueError(
            f"address header contains prohibited control characters: {text!r}"
        )
    return text


def prepare_message(
    msg: email.message.Message,
    from_addr: str | None,
    to_addrs: str | Sequence[str] | None,
    mail_options: Sequence[str],
    *,
    smtputf8_supported: Callable[[], bool],
) -> PreparedMessage:
    """Work out the envelope of ``msg`` and flatten it with CRLF line endings.

    :param from_addr: the envelope sender, or ``None`` to take it from the headers.
    :param to_addrs: the envelope recipients, or ``None`` to take them from the
        headers.
    :param mail_options: the caller's MAIL options; ``SMTPUTF8`` and
        ``BODY=8BITMIME`` are appended when an address needs them.
    :param smtputf8_supported: tells whether the server advertised SMTPUTF8;
        called only when an address needs it (as smtplib calls ``has_extn``).
    :raises ValueError: the message has more than one ``Resent-`` header block,
        or an address header has control characters (other than folding).
    :raises SMTPNotSupportedError: an address is not ASCII and the server does not
        support SMTPUTF8.
    """
    resent = msg.get_all("Resent-Date")
    if resent is None:
        header_prefix = ""
    elif len(resent) == 1:
        header_prefix = "Resent-"
    else:
        raise ValueError("message has more than one 'Resent-' header block")
    if from_addr is None:
        # Prefer the sender field per RFC 2822:3.6.2.
        sender_field = (
            msg[header_prefix + "Sender"]
            if (header_prefix + "Sender") in msg
            else msg[header_prefix + "From"]
        )
        from_addr = email.utils.getaddresses([_address_field(sender_field)])[0][1]
    if to_addrs is None:
        addr_fields = [
            _address_field(field)
            for field in (
                msg[header_prefix + "To"],
                msg[header_prefix + "Bcc"],
                msg[header_prefix + "Cc"],
            )
            if field is not None
        ]
        recipients = [pair[1] for pair in email.utils.getaddresses(addr_fields)]
    elif isinstance(to_addrs, str):
        recipients = [to_addrs]
    else:
        recipients = list(to_addrs)
    # A copy, so that deleting the Bcc headers leaves the caller's message alone.
    msg_copy = copy.copy(msg)
    del msg_copy["Bcc"]
    del msg_copy["Resent-Bcc"]
    international = False
    try:
        "".join([from_addr, *recipients]).encode("ascii")
    except UnicodeEncodeError:
        if not smtputf8_supported():
            raise SMTPNotSupportedError(
                "One or more source or delivery addresses require"
                " internationalized email support, but the server"
                " does not advertise the required SMTPUTF8 capability"
            ) from None
        international = True
    options = tuple(mail_options)
    with io.BytesIO() as buffer:
        if international:
            # Every policy has ``utf8`` (typeshed only knows it on EmailPolicy).
            policy = msg.policy.clone(utf8=True)  # type: ignore[call-arg]
            generator = email.generator.BytesGenerator(buffer, policy=policy)
            options = (*options, "SMTPUTF8", "BODY=8BITMIME")
        else:
            generator = email.generator.BytesGenerator(buffer)
        generator.flatten(msg_copy, linesep="\r\n")
        data = buffer.getvalue()
    return PreparedMessage(from_addr, recipients, data, options)
