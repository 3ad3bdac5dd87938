"""The generated sync facade is fresh and mirrors the async client."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import anysmtp
from anysmtp import _codegen


def test_committed_facade_is_fresh() -> None:
    committed = _codegen.TARGET.read_text(encoding="utf-8")
    assert committed == _codegen.render(), "anysmtp/_sync.py is stale: make generate"


def test_check_mode_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "_sync.py"
    stale.write_text(_codegen.render().replace("def noop(", "def old_noop("))
    monkeypatch.setattr(_codegen, "TARGET", stale)
    assert _codegen.main(["--check"]) == 1
    assert "+    def noop(" in capsys.readouterr().out
    assert _codegen.main([]) == 0
    assert _codegen.main(["--check"]) == 0


def test_a_new_async_method_appears_in_the_facade() -> None:
    source = _codegen.SOURCE.read_text(encoding="utf-8")
    anchor = "    async def noop(self) -> SMTPResponse:"
    added = (
        "    async def turn(self, arg: int = 1) -> SMTPResponse:\n"
        '        """Send TURN."""\n'
        "        return await self.docmd('turn')\n\n"
    )
    rendered = _codegen.render(source.replace(anchor, added + anchor, 1))
    assert "    def turn(self, arg: int = 1) -> tuple[int, bytes]:" in rendered
    assert "self._call(lambda: AsyncSMTP.turn(self._async, arg=arg))" in rendered


@pytest.mark.parametrize(
    ("sync_class", "async_class"),
    [(anysmtp.SMTP, anysmtp.AsyncSMTP), (anysmtp.LMTP, anysmtp.AsyncLMTP)],
)
def test_every_public_method_has_the_same_signature(
    sync_class: type, async_class: type
) -> None:
    for name, member in inspect.getmembers(async_class):
        if name.startswith("_") and name not in _codegen.PRIVATE_KEPT:
            continue
        if not inspect.isfunction(member) or name in _codegen.SKIPPED:
            continue
        sync_member = getattr(sync_class, name)
        expected = inspect.signature(member)
        if expected.return_annotation == "SMTPResponse":
            # The facade promises what typeshed's smtplib promises.
            expected = expected.replace(return_annotation="tuple[int, bytes]")
        assert inspect.signature(sync_member) == expected, name
        assert inspect.getdoc(sync_member) == inspect.getdoc(member), name
        assert not inspect.iscoroutinefunction(sync_member), name


def test_sync_classes_do_not_inherit_from_async_ones() -> None:
    assert not issubclass(anysmtp.SMTP, anysmtp.AsyncSMTP)
    assert not issubclass(anysmtp.LMTP, anysmtp.AsyncSMTP)
