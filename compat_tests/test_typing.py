"""The facade's types are precise: mypy sees what smtplib's stubs promise."""

from __future__ import annotations

import os
import textwrap

from mypy import api

SNIPPET = textwrap.dedent(
    """
    import anysmtp

    server = anysmtp.SMTP("h")
    reveal_type(server.sendmail("a@b", ["c@d"], "msg"))
    reveal_type(server.ehlo())
    reveal_type(server.help())
    reveal_type(server.esmtp_features)

    async def main() -> None:
        client = anysmtp.AsyncSMTP(hostname="h")
        reveal_type(await client.sendmail("a@b", ["c@d"], b"msg"))
        reveal_type(await anysmtp.send("m", sender="a@b", recipients=["c@d"]))
    """
)


def test_reveal_types_are_precise() -> None:
    # An empty config file: the project's own lists files to check.
    stdout, stderr, _status = api.run(
        ["--config-file", os.devnull, "--strict", "-c", SNIPPET]
    )
    revealed = [
        line.split("Revealed type is ", 1)[1].strip('"')
        for line in stdout.splitlines()
        if "Revealed type is" in line
    ]
    assert revealed == [
        "dict[str, tuple[int, bytes]]",
        "tuple[int, bytes]",
        "bytes",
        "dict[str, str]",
        "dict[str, tuple[int, bytes]]",
        "tuple[dict[str, tuple[int, bytes, "
        "fallback=anysmtp._response.SMTPResponse]], str]",
    ], stdout + stderr
    assert " error: " not in stdout, stdout
