"""``anysmtp probe``: what a server offers, before and after TLS.

It connects, sends EHLO, upgrades with STARTTLS when offered (or speaks TLS at
once with ``--tls``), sends EHLO again and reports the extensions, the AUTH
mechanisms, the SIZE limit, the TLS version and cipher and the server's
certificate.  When the certificate cannot be verified it says so, connects
again without verifying, and still shows everything else.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from typing import Any

import anyio

from ._cli_common import (
    ConnectionOptions,
    add_command,
    add_connection_options,
    check_backend,
    connection_options,
)
from ._cli_errors import (
    EXIT_STATUS_HELP,
    CliError,
    ExitCode,
    classify_connect_error,
    describe_reply,
    no_starttls,
    raise_classified,
    refused_connection,
)
from ._client import AsyncSMTP
from ._errors import SMTPException

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Connect to an SMTP server, send EHLO, try STARTTLS, and print what it offers:
extensions, AUTH mechanisms, SIZE limit, TLS version and cipher, and the
certificate's subject, issuer and expiry.  Nothing is sent."""

_EPILOG = f"""\
examples:
  anysmtp probe smtp.example.com:587
  anysmtp probe --tls --json smtp.example.com

{EXIT_STATUS_HELP}
A certificate that cannot be verified gives status 3, after the report."""

#: Short names of the attributes in certificate names (RFC 4514).
_ATTRIBUTE_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def add_parser(subparsers: Any) -> None:
    """Add ``probe`` to the command line's subcommands.

    :param subparsers: what :meth:`argparse.ArgumentParser.add_subparsers`
        returned.
    """
    parser = add_command(
        subparsers,
        "probe",
        summary="show what a server offers (extensions, AUTH, TLS, certificate)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        run=run,
    )
    parser.add_argument("server", metavar="HOST[:PORT]", help="the server to probe")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_connection_options(parser)


def _ehlo_lines(client: AsyncSMTP) -> list[str]:
    """The extension lines of the last EHLO reply, as the server wrote them."""
    if not client.does_esmtp or client.ehlo_resp is None:
        return []
    lines = client.ehlo_resp.decode("utf-8", "replace").split("\n")
    return [line.strip() for line in lines[1:] if line.strip()]


async def _hello(client: AsyncSMTP, report: dict[str, Any], key: str) -> None:
    await client.ehlo_or_helo_if_needed()
    report["esmtp"] = client.does_esmtp
    report[key] = _ehlo_lines(client)


def _tls_details(client: AsyncSMTP) -> dict[str, Any]:
    """What the TLS layer tells, read while connected (formatted later)."""
    cipher = client.get_transport_info("cipher")
    sslobject: ssl.SSLSocket = client.get_transport_info("sslobject")
    return {
        "version": client.get_transport_info("tls_version"),
        "cipher": cipher[0] if cipher else None,
        "cipher_bits": cipher[2] if cipher else None,
        "peercert": sslobject.getpeercert(),
        "der": sslobject.getpeercert(binary_form=True),
    }


async def _session(
    options: ConnectionOptions, report: dict[str, Any], *, verify: bool
) -> None:
    """One probing session; fills ``report`` as it learns.

    :raises ssl.SSLCertVerificationError: the certificate is not trusted
        (only when ``verify``).
    :raises CliError: another failure.
    """
    client = options.client(start_tls=False, insecure=not verify)
    try:
        greeting = await client.connect()
        report["greeting"] = describe_reply(greeting.code, greeting.message)
        if greeting.code != 220:
            raise refused_connection(options.where, *greeting)
        if options.tls_mode == "tls":
            report["tls"] = {"mode": "implicit", **_tls_details(client)}
        await _hello(client, report, "extensions")
        offered = client.has_extn("starttls")
        if options.tls_mode != "tls":
            report["starttls"] = offered
        if offered and options.tls_mode in ("auto", "starttls"):
            report["extensions_before_tls"] = report.pop("extensions")
            await client.starttls()
            report["tls"] = {"mode": "starttls", **_tls_details(client)}
            await _hello(client, report, "extensions")
        elif options.tls_mode == "starttls":
            raise no_starttls(options.where)
        report["auth_mechanisms"] = client.supported_auth_methods
        report["size_limit"] = _size_limit(client)
        await client.quit()
    except ssl.SSLCertVerificationError:
        raise  # _probe connects again without verifying
    except (SMTPException, OSError) as exc:
        raise_classified(exc, classify_connect_error(exc, options.where))
    finally:
        client.close()


def _size_limit(client: AsyncSMTP) -> int | None:
    """SIZE's limit in bytes: ``None`` if not offered, ``0`` for no fixed limit."""
    if not client.has_extn("size"):
        return None
    parameter = client.esmtp_features["size"].strip()
    return int(parameter) if parameter.isdigit() else 0


async def _probe(options: ConnectionOptions) -> tuple[dict[str, Any], CliError | None]:
    report: dict[str, Any] = {
        "server": options.where,
        "host": options.host,
        "port": options.effective_port,
    }
    verify = not options.insecure
    problem: CliError | None = None
    try:
        try:
            await _session(options, report, verify=verify)
        except ssl.SSLCertVerificationError as exc:
            problem = classify_connect_error(exc, options.where)
            report["verify_error"] = exc.verify_message or str(exc.reason)
            verify = False
            # Again without verifying, to show the certificate and the rest.
            await _session(options, report, verify=False)
    except CliError as exc:
        problem = exc
    if "tls" in report:
        report["tls"]["verified"] = verify
        report["tls"]["verify_error"] = report.pop("verify_error", None)
    return report, problem


def _decode_certificate(der: bytes) -> dict[str, Any]:
    """Decode a certificate that was not verified (so ``getpeercert()`` gave
    nothing), with CPython's own decoder when it has one."""
    decode: Callable[[str], dict[str, Any]] | None = getattr(
        ssl._ssl,  # type: ignore[attr-defined]
        "_test_decode_cert",
        None,
    )
    if decode is None:
        return {}
    handle, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(handle, "w", encoding="ascii") as file:
            file.write(ssl.DER_cert_to_PEM_cert(der))
        return decode(path)
    except (OSError, ValueError, ssl.SSLError):
        return {}
    finally:
        os.unlink(path)


def _name(rdns: Any) -> str | None:
    if not rdns:
        return None
    return ", ".join(
        f"{_ATTRIBUTE_NAMES.get(key, key)}={value}"
        for rdn in rdns
        for key, value in rdn
    )


def _timestamp(text: str | None) -> str | None:
    if not text:
        return None
    seconds = ssl.cert_time_to_seconds(text)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _certificate(peercert: dict[str, Any], der: bytes | None) -> dict[str, Any] | None:
    if der is None:
        return None
    decoded = peercert or _decode_certificate(der)
    not_after = decoded.get("notAfter")
    days_left = None
    if not_after:
        days_left = int((ssl.cert_time_to_seconds(not_after) - time.time()) // 86400)
    return {
        "subject": _name(decoded.get("subject")),
        "issuer": _name(decoded.get("issuer")),
        "not_before": _timestamp(decoded.get("notBefore")),
        "not_after": _timestamp(not_after),
        "days_left": days_left,
        "subject_alt_names": [
            f"{kind}:{value}" for kind, value in decoded.get("subjectAltName", ())
        ],
        "serial_number": decoded.get("serialNumber"),
        "sha256": hashlib.sha256(der).hexdigest(),
    }


def _finish(report: dict[str, Any]) -> dict[str, Any]:
    """Turn the raw TLS details into the certificate fields."""
    tls = report.get("tls")
    if tls is not None:
        tls["certificate"] = _certificate(tls.pop("peercert"), tls.pop("der"))
    return report


def _size_text(limit: int | None) -> str:
    if limit is None:
        return "not announced"
    if limit == 0:
        return "no fixed limit"
    return f"{limit} bytes ({limit / 1024 / 1024:.1f} MiB)"


def format_text(report: dict[str, Any]) -> str:
    """The report for people."""
    rows: list[tuple[str, str]] = [("server", report["server"])]
    tls = report.get("tls")
    if "greeting" in report:
        rows.append(("greeting", report["greeting"]))
    if "extensions_before_tls" in report:
        rows.append(("before TLS", ", ".join(report["extensions_before_tls"]) or "-"))
    if "starttls" in report:
        offered = "offered" if tls is not None else "offered, not used"
        rows.append(("STARTTLS", offered if report["starttls"] else "not offered"))
    if tls is not None:
        how = "implicit TLS" if tls["mode"] == "implicit" else "after STARTTLS"
        rows.append(("TLS", f"{tls['version']}, {how}"))
        rows.append(("cipher", f"{tls['cipher']} ({tls['cipher_bits']} bits)"))
        if tls["verified"]:
            rows.append(("certificate", "verified"))
        elif tls["verify_error"]:
            rows.append(("certificate", f"NOT VERIFIED: {tls['verify_error']}"))
        else:
            rows.append(("certificate", "not verified (--insecure)"))
        certificate = tls.get("certificate") or {}
        for label, key in (
            ("  subject", "subject"),
            ("  issuer", "issuer"),
            ("  not before", "not_before"),
            ("  not after", "not_after"),
        ):
            if certificate.get(key):
                rows.append((label, certificate[key]))
        if certificate.get("days_left") is not None:
            days = certificate["days_left"]
            rows.append(
                ("  expires", f"in {days} days" if days >= 0 else f"{-days} days ago")
            )
        if certificate.get("subject_alt_names"):
            rows.append(("  names", ", ".join(certificate["subject_alt_names"])))
        if certificate.get("sha256"):
            rows.append(("  sha256", certificate["sha256"]))
    if "extensions" in report:
        label = "after TLS" if "extensions_before_tls" in report else "extensions"
        if not report.get("esmtp", True):
            rows.append((label, "none (no ESMTP: the server refused EHLO)"))
        else:
            rows.append((label, ", ".join(report["extensions"]) or "-"))
    if "auth_mechanisms" in report:
        rows.append(("AUTH", " ".join(report["auth_mechanisms"]) or "not offered"))
    if "size_limit" in report:
        rows.append(("SIZE", _size_text(report["size_limit"])))
    width = max(len(label) for label, _value in rows) + 2
    return "\n".join(f"{label + ':':<{width}}{value}" for label, value in rows)


def run(args: argparse.Namespace) -> int:
    """Run ``anysmtp probe``.

    :returns: the exit status.
    :raises CliError: a usage error, or a failure in text mode.
    """
    check_backend(args.backend)
    options = connection_options(args, args.server)
    report, problem = anyio.run(_probe, options, backend=args.backend)
    _finish(report)
    if args.json:
        if problem is not None:
            report["error"] = problem.message
        print(json.dumps(report, indent=2), flush=True)
    elif "greeting" in report:
        print(format_text(report), flush=True)
    if problem is not None:
        raise problem
    return ExitCode.OK
