"""``anysmtp send``: send one message, or one per address of ``--to-file``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from ._cli_bulk import send_bulk
from ._cli_common import (
    PASSWORD_ENV,
    ConnectionOptions,
    add_command,
    add_connection_options,
    check_backend,
    connection_options,
    read_password,
    read_secret_file,
)
from ._cli_errors import (
    EXIT_STATUS_HELP,
    CliError,
    ExitCode,
    classify_transaction_error,
    describe_refusals,
    describe_reply,
    raise_classified,
)
from ._cli_message import Outgoing, Recipient, ServerOffers, build
from ._cli_session import Login, open_session, quit_quietly, server_offers
from ._errors import SMTPException

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Send a message composed from options (--from, --to, --subject, --body,
--attach...) or a ready one (--eml FILE, - for stdin).  With --to-file, send
one copy to each address of a file, over one connection, with a progress bar
on a terminal and a summary at the end (also after Ctrl-C).

The password for --user comes from --password-file, --password-env, the
ANYSMTP_PASSWORD environment variable or a prompt; never from the command
line, where other users can read it."""

_EPILOG = f"""\
examples:
  anysmtp send --server smtp.example.com --starttls --user me@example.com \\
      --from me@example.com --to you@example.com --subject Hi --body Hello
  anysmtp send --server localhost:8025 --eml message.eml
  anysmtp send --from me@example.com --to you@example.com --attach report.pdf \\
      --dry-run

{EXIT_STATUS_HELP}"""


class _RefusePassword(argparse.Action):
    """``--password VALUE`` is refused, with the reason and the alternatives."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "--password is not accepted: other users can read command lines "
            "(ps); use --password-env NAME, --password-file PATH, "
            f"${PASSWORD_ENV} or the prompt"
        )


def add_parser(subparsers: Any) -> None:
    """Add ``send`` to the command line's subcommands.

    :param subparsers: what :meth:`argparse.ArgumentParser.add_subparsers`
        returned.
    """
    parser = add_command(
        subparsers,
        "send",
        summary="send a message",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        run=run,
    )
    parser.add_argument(
        "--server",
        default="localhost",
        metavar="HOST[:PORT]",
        help="the SMTP server (default: localhost)",
    )
    add_connection_options(parser)

    login = parser.add_argument_group("authentication")
    login.add_argument("--user", metavar="NAME", help="log in as this user")
    source = login.add_mutually_exclusive_group()
    source.add_argument(
        "--password-env",
        metavar="NAME",
        help="read the password from this environment variable",
    )
    source.add_argument(
        "--password-file",
        metavar="PATH",
        help="read the password from the first line of this file",
    )
    source.add_argument(
        "--oauth-token-file",
        metavar="PATH",
        help="log in with the OAuth 2.0 access token in this file "
        "(XOAUTH2/OAUTHBEARER) instead of a password",
    )
    login.add_argument(
        "--password", nargs="?", action=_RefusePassword, help=argparse.SUPPRESS
    )

    envelope = parser.add_argument_group("message")
    envelope.add_argument(
        "--from",
        dest="sender",
        metavar="ADDRESS",
        help="the sender (From header and envelope sender); '<>' for the null "
        "sender of bounces, with --header 'From: ...'",
    )
    for option, what in (
        ("to", "a recipient (To)"),
        ("cc", "a recipient (Cc)"),
        ("bcc", "a hidden recipient (Bcc, not in the message)"),
    ):
        envelope.add_argument(
            f"--{option}",
            action="append",
            default=[],
            metavar="ADDRESS",
            help=f"{what}; repeatable, or comma-separated",
        )
    envelope.add_argument("--subject", help="the subject")
    body = envelope.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="TEXT", help="the text of the message")
    body.add_argument(
        "--body-file", metavar="PATH", help="the text of the message (- for stdin)"
    )
    envelope.add_argument(
        "--html-file",
        metavar="PATH",
        help="an HTML version (an alternative to the text, or the only body)",
    )
    envelope.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="PATH",
        help="attach a file, its type guessed from its name; repeatable",
    )
    envelope.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="add a header (replacing one the other options set); repeatable",
    )
    envelope.add_argument(
        "--eml",
        metavar="FILE",
        help="send this ready message (- for stdin) as it is; the envelope comes "
        "from its headers unless --from/--to/--cc/--bcc are given",
    )
    envelope.add_argument(
        "--to-file",
        metavar="PATH",
        help="send one copy to each address in this file (one a line, # comments)",
    )
    envelope.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing: print the envelope (stderr) and the message (stdout)",
    )


def _login(args: argparse.Namespace) -> Login:
    if args.user is None:
        given = [
            option
            for option, value in (
                ("--password-env", args.password_env),
                ("--password-file", args.password_file),
                ("--oauth-token-file", args.oauth_token_file),
            )
            if value is not None
        ]
        if given:
            raise CliError(ExitCode.USAGE, f"{given[0]} needs --user")
        return Login()
    if args.oauth_token_file is not None:
        token = read_secret_file(args.oauth_token_file, "OAuth token")
        return Login(args.user, oauth_token=token)
    return Login(
        args.user,
        password=read_password(args.password_file, args.password_env, args.user),
    )


#: What a dry run assumes of the server: the message is shown as it goes to
#: one that offers 8BITMIME (most do).
_DRY_RUN_SERVER = ServerOffers(eightbitmime=True, binarymime=False, where="")


def _print_dry_run(outgoing: Outgoing, bulk: list[Recipient] | None) -> None:
    data, mail_options = outgoing.for_server(
        None if bulk is None else bulk[0], _DRY_RUN_SERVER
    )
    options = "".join(" " + each for each in mail_options)
    lines = ["dry run: nothing is sent", f"MAIL FROM:<{outgoing.sender}>{options}"]
    if bulk is None:
        lines += [f"RCPT TO:<{each}>" for each in outgoing.recipients]
    else:
        lines += [
            f"one message to each of {len(bulk)} recipients (the first follows):",
            *(f"RCPT TO:<{each.address}>" for each in bulk),
        ]
    lines.append(f"message: {len(data)} bytes on stdout")
    print("\n".join(lines), file=sys.stderr, flush=True)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


async def _send_one(
    options: ConnectionOptions, login: Login, outgoing: Outgoing
) -> int:
    client = await open_session(options, login)
    try:
        data, mail_options = outgoing.for_server(
            None, server_offers(client, options.where)
        )
        refused = await client.sendmail(
            outgoing.sender, outgoing.recipients, data, mail_options
        )
    except CliError:
        await quit_quietly(client)  # nothing was sent
        raise
    except (SMTPException, OSError) as exc:
        await quit_quietly(client)  # a refusal leaves the session usable
        raise_classified(exc, classify_transaction_error(exc, options.where))
    except ValueError as exc:
        await quit_quietly(client)
        raise CliError(ExitCode.USAGE, str(exc)) from None
    # The reply to the message often carries the server's queue id: show it.
    reply = client.last_data_response
    await quit_quietly(client)
    accepted = len(outgoing.recipients) - len(refused)
    plural = "" if accepted == 1 else "s"
    said = f": {describe_reply(*reply)}" if reply is not None else ""
    print(f"sent to {accepted} recipient{plural} via {options.where}{said}", flush=True)
    if refused:
        raise CliError(
            ExitCode.PARTIAL,
            f"sent, but {len(refused)} of {len(outgoing.recipients)} recipients "
            "were refused:",
            describe_refusals(refused),
        )
    return ExitCode.OK


def run(args: argparse.Namespace) -> int:
    """Run ``anysmtp send``.

    :returns: the exit status.
    :raises CliError: any failure, with its exit status.
    """
    check_backend(args.backend)
    options = connection_options(args, args.server)
    outgoing, bulk = build(args)
    if args.dry_run:
        _print_dry_run(outgoing, bulk)
        return ExitCode.OK
    login = _login(args)
    if bulk is not None:
        return anyio.run(
            send_bulk, options, login, outgoing, bulk, backend=args.backend
        )
    return anyio.run(_send_one, options, login, outgoing, backend=args.backend)
