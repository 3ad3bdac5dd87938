"""Signature parity: every public callable of the running Python's smtplib exists
in anysmtp and accepts the same arguments.

"Equivalent" means: the same parameters, in the same order, of the same kinds,
with the same defaults; anysmtp may add keyword-only parameters with defaults
(``portal=``, ``timeout=``...).  Annotations are not compared (smtplib has none).
"""

from __future__ import annotations

import inspect
import smtplib
from collections.abc import Iterator
from typing import Any

import pytest

import anysmtp

#: Deliberate differences, each documented in docs/compatibility.md.
KNOWN_DIFFERENCES = {
    # None means "the constructor's host, else localhost": smtplib code that
    # calls connect() without a host still reaches localhost.
    ("connect", "host"): ("localhost", None),
}


def callables() -> Iterator[tuple[str, Any, Any]]:
    for name in sorted(dir(smtplib)):
        std = getattr(smtplib, name)
        if inspect.isfunction(std) and std.__module__ == "smtplib":
            yield name, std, getattr(anysmtp, name, None)
        elif inspect.isclass(std) and std.__module__ == "smtplib":
            ours_class = getattr(anysmtp, name, None)
            yield name, std, ours_class
            for attribute, member in vars(std).items():
                if inspect.isfunction(member) and (
                    not attribute.startswith("__") or attribute == "__init__"
                ):
                    yield (
                        f"{name}.{attribute}",
                        member,
                        getattr(ours_class, attribute, None),
                    )


CALLABLES = list(callables())


def equivalent(std: inspect.Signature, ours: inspect.Signature, name: str) -> None:
    short_name = name.rsplit(".", 1)[-1]
    std_params = list(std.parameters.values())
    our_params = list(ours.parameters.values())
    assert len(our_params) >= len(std_params), f"{name}: parameters missing"
    for std_param, our_param in zip(std_params, our_params, strict=False):
        assert our_param.name == std_param.name, name
        assert our_param.kind == std_param.kind, f"{name}({std_param.name})"
        expected = std_param.default
        known = KNOWN_DIFFERENCES.get((short_name, std_param.name))
        if known is not None and known[0] == expected:
            expected = known[1]
        assert our_param.default == expected or our_param.default is expected, (
            f"{name}({std_param.name}): default {our_param.default!r}, "
            f"smtplib {expected!r}"
        )
    for extra in our_params[len(std_params) :]:
        assert extra.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.VAR_KEYWORD,
        ), f"{name}: extra parameter {extra.name} must be keyword-only"
        assert extra.kind is inspect.Parameter.VAR_KEYWORD or (
            extra.default is not inspect.Parameter.empty
        ), f"{name}: extra parameter {extra.name} needs a default"


@pytest.mark.parametrize(
    ("name", "std", "ours"), CALLABLES, ids=[name for name, _, _ in CALLABLES]
)
def test_signature_is_equivalent(name: str, std: Any, ours: Any) -> None:
    assert ours is not None, f"anysmtp has no {name}"
    if inspect.isclass(std):
        assert inspect.isclass(ours)
        if issubclass(std, BaseException):
            assert ours is std  # the very same exception classes
        return
    equivalent(inspect.signature(std), inspect.signature(ours), name)


def test_the_class_hierarchy_matches() -> None:
    assert issubclass(anysmtp.SMTP_SSL, anysmtp.SMTP)
    assert issubclass(anysmtp.LMTP, anysmtp.SMTP)


@pytest.mark.parametrize("cls_name", ["SMTP", "SMTP_SSL", "LMTP"])
def test_class_attributes_exist(cls_name: str) -> None:
    std = getattr(smtplib, cls_name)
    ours = getattr(anysmtp, cls_name)
    for attribute, value in vars(std).items():
        if attribute.startswith("__") or inspect.isfunction(value):
            continue
        assert hasattr(ours, attribute), f"{cls_name}.{attribute}"
    # smtplib's LMTP inherits SMTP's default_port (25) by accident; anysmtp's is
    # LMTP_PORT, so LMTP().connect(host) reaches an LMTP server (documented).
    expected_port = anysmtp.LMTP_PORT if cls_name == "LMTP" else std.default_port
    assert ours.default_port == expected_port
    assert ours.ehlo_msg == std.ehlo_msg
