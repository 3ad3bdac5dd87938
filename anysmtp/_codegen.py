"""Generate the sync facade, ``_sync.py``, from the async client, ``_client.py``.

Usage: ``python -m anysmtp._codegen`` writes the file; ``--check`` only compares
and prints a diff when the file is stale (exit status 1).

For each async class the generator emits a sync class that holds an instance of
it and exposes the same public surface:

* every ``async def`` becomes a ``def`` with the same signature and docstring,
  whose body hands the coroutine to the portal through a ``lambda`` (so
  ``mypy --strict`` re-checks every call against the async signature);
* every plain ``def`` is called directly;
* every property and every annotated instance attribute becomes a property that
  reads and writes the async client's (but those in :data:`HAND_WRITTEN`);
* every ``ClassVar`` is copied.

The output depends only on ``_client.py`` and needs no formatter.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import difflib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["main", "render"]

PACKAGE = Path(__file__).resolve().parent
SOURCE = PACKAGE / "_client.py"
TARGET = PACKAGE / "_sync.py"


@dataclass(frozen=True)
class SyncClassSpec:
    """How one async class maps to its sync facade."""

    name: str
    bases: tuple[str, ...]


#: The async classes that get a facade, with the sync name and bases.
CLASSES: dict[str, SyncClassSpec] = {
    "AsyncSMTP": SyncClassSpec("SMTP", ("SyncClient",)),
    "AsyncSMTP_SSL": SyncClassSpec("SMTP_SSL", ("SyncSMTPSSLInit", "SMTP")),
    "AsyncLMTP": SyncClassSpec("LMTP", ("SyncLMTPInit", "SMTP")),
}
#: Hand-written in ``_sync_base.py`` (constructors, context managers).
SKIPPED = frozenset({"__init__", "__aenter__", "__aexit__", "__repr__"})
#: Private names smtplib code calls or overrides, so the facade has them too.
PRIVATE_KEPT = frozenset({"_print_debug", "_rset"})
#: Attributes whose sync property is hand-written in ``_sync_base.py``, where it
#: behaves as smtplib's: ``sock`` is handed out in blocking mode, and
#: ``debuglevel`` follows the class's value until the client sets its own.
HAND_WRITTEN = frozenset({"sock", "debuglevel"})
_BUILTINS = frozenset(dir(builtins))
_INDENT = "    "


def _without_fields(doc: str) -> str:
    """A class docstring without its field list: the async constructor's
    ``:param:`` fields do not describe the sync constructor, which documents its
    own (smtplib's) arguments."""
    match = re.search(rf"\n{_INDENT}:(param|raises|returns|ivar|var) ", doc)
    if match is None:
        return doc
    fields = match.start()
    quote = doc[-3:]
    return (
        doc[:fields].rstrip()
        + "\n\n"
        + _INDENT
        + "See the constructor for its arguments.\n"
        + _INDENT
        + quote
    )


def _isort_key(name: str) -> tuple[int, str]:
    """isort's (and ruff's) order-by-type: CONSTANTS, Classes, then the rest."""
    if name.isupper() and len(name) > 1:
        return (0, name.lower())
    if name[:1].isupper():
        return (1, name.lower())
    return (2, name.lower())


class _Renderer:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tree = ast.parse(source)
        self.names: set[str] = set()
        self.classes = {
            node.name: node for node in self.tree.body if isinstance(node, ast.ClassDef)
        }

    # Expressions ------------------------------------------------------------------

    def expr(self, node: ast.expr) -> str:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                self.names.add(sub.id)
        segment = ast.get_source_segment(self.source, node)
        return (
            segment
            if segment is not None and "\n" not in segment
            else ast.unparse(node)
        )

    def parameters(self, args: ast.arguments) -> tuple[list[str], str]:
        """The parameter list and the matching call arguments."""
        params: list[str] = []
        call: list[str] = []

        def param(arg: ast.arg, default: ast.expr | None, prefix: str = "") -> str:
            text = prefix + arg.arg
            if arg.annotation is not None:
                text += ": " + self.expr(arg.annotation)
            if default is not None:
                sep = " = " if arg.annotation is not None else "="
                text += sep + self.expr(default)
            return text

        positional = [*args.posonlyargs, *args.args]
        defaults: list[ast.expr | None] = [None] * (
            len(positional) - len(args.defaults)
        )
        defaults.extend(args.defaults)
        for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
            params.append(param(arg, default))
            if index == 0:
                continue  # self
            if arg in args.posonlyargs:
                call.append(arg.arg)
            else:
                call.append(f"{arg.arg}={arg.arg}")
            if args.posonlyargs and arg is args.posonlyargs[-1]:
                params.append("/")
        if args.vararg is not None:
            params.append(param(args.vararg, None, "*"))
            call.append("*" + args.vararg.arg)
        elif args.kwonlyargs:
            params.append("*")
        for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            params.append(param(arg, kw_default))
            call.append(f"{arg.arg}={arg.arg}")
        if args.kwarg is not None:
            params.append(param(args.kwarg, None, "**"))
            call.append("**" + args.kwarg.arg)
        return params, ", ".join(call)

    def docstring(
        self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
    ) -> str | None:
        first = node.body[0] if node.body else None
        if not (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            return None
        segment = ast.get_source_segment(self.source, first, padded=True)
        assert segment is not None
        return segment.strip()

    # Members ----------------------------------------------------------------------

    @staticmethod
    def public(name: str) -> bool:
        if name in SKIPPED:
            return False
        return not name.startswith("_") or name in PRIVATE_KEPT

    def method(
        self, node: ast.FunctionDef | ast.AsyncFunctionDef, owner: str
    ) -> list[str]:
        params, call = self.parameters(node.args)
        # The async class's own function, not ``self._async.name``: when a sync
        # subclass overrides a hook, the async client's attribute is a bridge
        # back to that override, and ``super().name()`` must not loop into it.
        call = ", ".join(["self._async", call]) if call else "self._async"
        returns = f" -> {self.expr(node.returns)}" if node.returns is not None else ""
        if returns == " -> SMTPResponse":
            # typeshed's smtplib says tuple[int, bytes]: subclasses typed for
            # smtplib must be able to override these methods.
            returns = " -> tuple[int, bytes]"
        lines = [f"def {node.name}({', '.join(params)}){returns}:"]
        if len(_INDENT + lines[0]) > 88:
            lines = [f"def {node.name}("]
            lines += [f"{_INDENT}{each}," for each in params]
            lines.append(f"){returns}:")
        doc = self.docstring(node)
        if doc is not None:
            lines.append(_INDENT + doc)
        if isinstance(node, ast.AsyncFunctionDef):
            body = f"return self._call(lambda: {owner}.{node.name}({call}))"
        else:
            body = f"return {owner}.{node.name}({call})"
        lines.append(_INDENT + body)
        return lines

    def proxy(
        self, name: str, annotation: str, doc: str | None, settable: bool
    ) -> list[str]:
        lines = ["@property", f"def {name}(self) -> {annotation}:"]
        if doc is not None:
            lines.append(_INDENT + doc)
            lines.append(f"{_INDENT}return self._async.{name}")
        else:
            # A plain attribute may not be set yet (``user`` before login()):
            # the error names the sync class, as smtplib's would.
            lines += [
                f"{_INDENT}try:",
                f"{_INDENT * 2}return self._async.{name}",
                f"{_INDENT}except AttributeError:",
                f'{_INDENT * 2}raise self._missing("{name}") from None',
            ]
        if settable:
            lines += [
                "",
                f"@{name}.setter",
                f"def {name}(self, value: {annotation}) -> None:",
                f"{_INDENT}self._async.{name} = value",
            ]
        return lines

    def members(self, cls: ast.ClassDef) -> list[list[str]]:
        owner = cls.name
        setters = {
            node.name
            for node in cls.body
            if isinstance(node, ast.FunctionDef)
            for deco in node.decorator_list
            if isinstance(deco, ast.Attribute) and deco.attr == "setter"
        }
        members: list[list[str]] = []
        for node in cls.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name = node.target.id
                annotation = node.annotation
                is_classvar = (
                    isinstance(annotation, ast.Subscript)
                    and isinstance(annotation.value, ast.Name)
                    and annotation.value.id == "ClassVar"
                )
                if is_classvar and node.value is not None:
                    members.append(
                        [f"{name}: {self.expr(annotation)} = {self.expr(node.value)}"]
                    )
                elif not is_classvar and self.public(name) and name not in HAND_WRITTEN:
                    members.append(self.proxy(name, self.expr(annotation), None, True))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if not self.public(node.name) or node.name in HAND_WRITTEN:
                    continue
                decorators = [ast.unparse(deco) for deco in node.decorator_list]
                if decorators == ["property"]:
                    assert node.returns is not None, node.name
                    members.append(
                        self.proxy(
                            node.name,
                            self.expr(node.returns),
                            self.docstring(node),
                            node.name in setters,
                        )
                    )
                elif not decorators or decorators == ["_alone"]:
                    # ``_alone``: a command that takes the client's turn.
                    members.append(self.method(node, owner))
        return members

    def sync_class(self, async_name: str, spec: SyncClassSpec) -> list[str]:
        cls = self.classes[async_name]
        lines = [f"class {spec.name}({', '.join(spec.bases)}):"]
        doc = self.docstring(cls)
        if doc is not None:
            lines += [_INDENT + _without_fields(doc), ""]
        self.names.add(async_name)
        lines += [
            f"{_INDENT}_generated: ClassVar[bool] = True",
            f"{_INDENT}_async_class: ClassVar[type[AsyncSMTP]] = {async_name}",
            f"{_INDENT}_async: {async_name}",
        ]
        for member in self.members(cls):
            lines.append("")
            lines += [(_INDENT + line) if line else "" for line in member]
        return lines

    # Imports ----------------------------------------------------------------------

    def imports(self) -> list[str]:
        origins: dict[str, str] = {}
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                module = "." * node.level + (node.module or "")
                for alias in node.names:
                    origins[alias.asname or alias.name] = module
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    origins[alias.asname or alias.name.split(".")[0]] = ""
        # Names imported for annotations only (``if TYPE_CHECKING:``).
        checking_origins: dict[str, str] = {}
        for node in self.tree.body:
            if (
                isinstance(node, ast.If)
                and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"
            ):
                for inner in node.body:
                    if isinstance(inner, ast.ImportFrom) and inner.module:
                        for alias in inner.names:
                            name = alias.asname or alias.name
                            checking_origins[name] = inner.module
        checking_imports: dict[str, set[str]] = {}
        defined = {
            target.id
            for node in self.tree.body
            for target in (
                [ast.Name(node.name)]
                if isinstance(node, ast.ClassDef | ast.FunctionDef)
                else node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            if isinstance(target, ast.Name)
        }
        plain: set[str] = set()
        from_imports: dict[str, set[str]] = {"typing": {"ClassVar"}}
        for name in sorted(self.names):
            if name in checking_origins:
                checking_imports.setdefault(checking_origins[name], set()).add(name)
                from_imports["typing"].add("TYPE_CHECKING")
            elif name in origins:
                module = origins[name]
                if module:
                    from_imports.setdefault(module, set()).add(name)
                else:
                    plain.add(name)
            elif name in defined:
                from_imports.setdefault("._client", set()).add(name)
            elif name not in _BUILTINS:
                raise SystemExit(f"_codegen: cannot tell where {name!r} comes from")
        from_imports.setdefault("._sync_base", set()).update(
            base
            for spec in CLASSES.values()
            for base in spec.bases
            if base not in {each.name for each in CLASSES.values()}
        )
        # What the annotations name as "email.message" etc. needs the submodule.
        submodules = sorted(
            {
                ast.unparse(node.value)
                for node in ast.walk(self.tree)
                if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id in plain
            }
        )
        roots = {each.split(".")[0] for each in submodules}
        lines = [f"import {name}" for name in sorted((plain - roots) | set(submodules))]
        absolute = sorted(m for m in from_imports if not m.startswith("."))
        relative = sorted(m for m in from_imports if m.startswith("."))
        for group in (absolute, relative):
            for module in group:
                names = sorted(from_imports[module], key=_isort_key)
                line = f"from {module} import {', '.join(names)}"
                if len(line) > 88:
                    lines.append(f"from {module} import (")
                    lines += [f"{_INDENT}{name}," for name in names]
                    lines.append(")")
                else:
                    lines.append(line)
            lines.append("")
        if checking_imports:
            lines.append("if TYPE_CHECKING:")
            for module in sorted(checking_imports):
                names = sorted(checking_imports[module], key=_isort_key)
                lines.append(f"{_INDENT}from {module} import {', '.join(names)}")
            lines.append("")
        return lines[:-1]

    def render(self) -> str:
        body: list[str] = []
        for async_name, spec in CLASSES.items():
            body += ["", "", *self.sync_class(async_name, spec)]
        names = ", ".join(
            f'"{spec.name}"' for spec in sorted(CLASSES.values(), key=lambda s: s.name)
        )
        header = [
            "# GENERATED by `python -m anysmtp._codegen` from anysmtp/_client.py.",
            "# Do not edit: change _client.py and run `make generate`.",
            '"""The sync facade: smtplib-compatible classes over the async client."""',
            "",
            "from __future__ import annotations",
            "",
            *self.imports(),
            "",
            f"__all__ = [{names}]",
        ]
        return "\n".join(header + body) + "\n"


def render(source: str | None = None) -> str:
    """The text of ``_sync.py`` for the given (or the installed) ``_client.py``."""
    if source is None:
        source = SOURCE.read_text(encoding="utf-8")
    return _Renderer(source).render()


def main(argv: list[str] | None = None) -> int:
    """Write ``_sync.py``, or with ``--check`` report whether it is stale."""
    parser = argparse.ArgumentParser(prog="python -m anysmtp._codegen")
    parser.add_argument(
        "--check", action="store_true", help="fail with a diff if _sync.py is stale"
    )
    options = parser.parse_args(argv)
    expected = render()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    if options.check:
        if current == expected:
            return 0
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(keepends=True),
                expected.splitlines(keepends=True),
                "anysmtp/_sync.py (committed)",
                "anysmtp/_sync.py (generated)",
            )
        )
        print("anysmtp/_sync.py is stale: run `make generate`", file=sys.stderr)
        return 1
    if current != expected:
        TARGET.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
