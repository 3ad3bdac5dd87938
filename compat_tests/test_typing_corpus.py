"""The typing corpus type-checks with smtplib and with anysmtp as smtplib."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from mypy import api

CORPUS = Path(__file__).with_name("typing_corpus")


def run_mypy(directory: Path) -> str:
    stdout, stderr, status = api.run(
        ["--config-file", os.devnull, "--strict", "--no-incremental", str(directory)]
    )
    assert status == 0, stdout + stderr
    return stdout


def test_corpus_passes_with_smtplib() -> None:
    assert "Success" in run_mypy(CORPUS)


def test_corpus_passes_with_anysmtp_as_smtplib(tmp_path: Path) -> None:
    programs = sorted(CORPUS.glob("*.py"))
    assert len(programs) >= 6
    for program in programs:
        source = program.read_text()
        assert re.search(r"^import smtplib$", source, re.MULTILINE)
        changed = re.sub(
            r"^import smtplib$", "import anysmtp as smtplib", source, flags=re.MULTILINE
        )
        (tmp_path / program.name).write_text(changed)
    assert "Success" in run_mypy(tmp_path)


@pytest.mark.parametrize("program", sorted(p.name for p in CORPUS.glob("*.py")))
def test_corpus_programs_import(program: str) -> None:
    # The corpus must be valid Python, not just valid types.
    compile((CORPUS / program).read_text(), program, "exec")
