"""Running a child Python process from a test."""

from __future__ import annotations

import subprocess
import sys
import textwrap

__all__ = ["run_python"]


def run_python(source: str, *args: str, timeout: float = 30) -> str:
    """Run ``source`` (dedented) in a child Python with ``args`` as its
    ``sys.argv[1:]``; return its stdout, fail the test if it exits with an
    error."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
