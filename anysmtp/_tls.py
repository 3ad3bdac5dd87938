"""The rules for TLS contexts.

The sync facade keeps smtplib's defaults to the letter (an unverified stdlib
context when none is given, as ``smtplib`` does); the async keyword API verifies
certificates and host names unless told otherwise, as aiosmtplib does.
"""

from __future__ import annotations

import os
import ssl
import warnings
from dataclasses import dataclass

__all__ = [
    "TLSOptions",
    "check_legacy_arguments",
    "smtplib_default_context",
    "warn_legacy_arguments",
]


def smtplib_default_context(
    certfile: str | None = None, keyfile: str | None = None
) -> ssl.SSLContext:
    """The context smtplib uses when given none (it does not verify the server)."""
    return ssl._create_stdlib_context(certfile=certfile, keyfile=keyfile)  # type: ignore[attr-defined, no-any-return]


def check_legacy_arguments(
    context: ssl.SSLContext | None, keyfile: str | None, certfile: str | None
) -> None:
    """smtplib's rule for its deprecated ``keyfile``/``certfile`` arguments.

    :raises ValueError: ``context`` together with either of them.
    """
    if context is not None and keyfile is not None:
        raise ValueError("context and keyfile arguments are mutually exclusive")
    if context is not None and certfile is not None:
        raise ValueError("context and certfile arguments are mutually exclusive")


def warn_legacy_arguments(
    keyfile: str | None,
    certfile: str | None,
    stacklevel: int,
    *,
    keep_in: list[Warning] | None = None,
) -> None:
    """smtplib's DeprecationWarning for ``keyfile``/``certfile``.

    :param stacklevel: as for :func:`warnings.warn`, counted from the caller.
    :param keep_in: append the warning to this list instead of raising it.
    """
    if keyfile is not None or certfile is not None:
        warning = DeprecationWarning(
            "keyfile and certfile are deprecated, use a custom context instead"
        )
        if keep_in is not None:
            keep_in.append(warning)
        else:
            warnings.warn(warning, stacklevel=stacklevel + 1)


@dataclass(frozen=True)
class TLSOptions:
    """The async keyword API's TLS options, and the context they make.

    :param validate_certs: verify the server's certificate and host name.
    :param client_cert: a PEM file with the client's certificate (and key).
    :param client_key: a PEM file with the client's key, if not in ``client_cert``.
    :param cert_bundle: CA certificates to trust instead of the system's.
    :param tls_context: use this context as it is.
    """

    validate_certs: bool = True
    client_cert: str | os.PathLike[str] | None = None
    client_key: str | os.PathLike[str] | None = None
    cert_bundle: str | os.PathLike[str] | None = None
    tls_context: ssl.SSLContext | None = None

    def check(self) -> None:
        """:raises ValueError: ``tls_context`` together with a path option, or
        ``client_key`` without ``client_cert``."""
        paths = (self.client_cert, self.client_key, self.cert_bundle)
        if self.tls_context is not None and any(each is not None for each in paths):
            raise ValueError(
                "tls_context and client_cert/client_key/cert_bundle are mutually "
                "exclusive: load the certificates into the context instead"
            )
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key needs client_cert")

    def context(self) -> ssl.SSLContext:
        """The context to use (made anew unless ``tls_context`` was given).

        :raises OSError: a certificate file cannot be read.
        :raises ssl.SSLError: a certificate file is not valid.
        """
        self.check()
        if self.tls_context is not None:
            return self.tls_context
        context = ssl.create_default_context(cafile=self.cert_bundle)
        if not self.validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context
