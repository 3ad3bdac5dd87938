"""Sphinx configuration: ``make docs`` builds with warnings as errors (``-W -n``).

The pages are Markdown (MyST); the API reference is generated from the
docstrings (reST field lists) by autodoc.  The build needs no network: instead
of intersphinx, references to the standard library (and to anyio) are resolved
here into links to their documentation (see :func:`link_to_external_docs`).
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.nodes import Element, TextElement
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anysmtp

project = "anysmtp"
author = "The anysmtp developers"
copyright = "the anysmtp developers"
release = anysmtp.__version__
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"anysmtp {release}"
html_static_path: list[str] = []

# Signatures stay short; the types go into each parameter's description.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True

#: Names in signatures that have no page of their own: the marker of an omitted
#: argument, and typeshed's name for any bytes-like object.
nitpick_ignore = [
    ("py:class", "anysmtp._client._Unset"),
    ("py:class", "ReadableBuffer"),
    ("py:class", "HealthCheck"),  # the pool's Literal["noop", "reconnect"] | None
]

PYTHON_DOCS = "https://docs.python.org/3/library/"
#: Builtin types documented in stdtypes.html rather than functions.html.
STDTYPES = frozenset(
    {"bytes", "bytearray", "memoryview", "str", "dict", "list", "tuple"}
)
#: Names documented somewhere other than their module's page.
SPECIAL_PAGES = {
    "email.message.Message": "email.compat32-message.html#email.message.Message",
    "None": "constants.html#None",
}


ANYIO_API = "https://anyio.readthedocs.io/en/stable/api.html#"
#: anyio names in signatures whose annotations autodoc could not resolve.
ANYIO_SHORT_NAMES = {"BlockingPortal": "anyio.from_thread.BlockingPortal"}


def external_url(target: str) -> str | None:
    """The address of a standard library or anyio name, or ``None``.

    :param target: a dotted name such as ``ssl.SSLContext`` or ``ValueError``.
    """
    target = ANYIO_SHORT_NAMES.get(target, target)
    if target.startswith("anyio."):
        return ANYIO_API + target
    if target in SPECIAL_PAGES:
        return PYTHON_DOCS + SPECIAL_PAGES[target]
    if target in sys.stdlib_module_names:
        return f"{PYTHON_DOCS}{target}.html"
    if "." not in target:
        value = getattr(builtins, target, None)
        if not isinstance(value, type):
            return None
        if issubclass(value, BaseException):
            return f"{PYTHON_DOCS}exceptions.html#{target}"
        page = "stdtypes" if target in STDTYPES else "functions"
        return f"{PYTHON_DOCS}{page}.html#{target}"
    parts = target.split(".")
    if parts[0] not in sys.stdlib_module_names:
        return None
    # The page is the longest importable module prefix (collections.abc, ...).
    for end in range(len(parts), 0, -1):
        module = ".".join(parts[:end])
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return f"{PYTHON_DOCS}{module}.html#{target}"
    return None


def link_to_external_docs(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: TextElement
) -> Element | None:
    """Resolve a reference to a standard library or anyio name, which Sphinx
    does not know, into an external link (what intersphinx would do, offline)."""
    if node.get("refdomain") != "py":
        return None
    target = str(node.get("reftarget", ""))
    url = external_url(target)
    if url is None:
        return None
    reference = nodes.reference("", "", internal=False, refuri=url)
    reference.append(contnode)
    return reference


PARAM_FIELD = re.compile(r":param (?:[^:]*\s)?(?P<name>\w+):")


def drop_parameters_the_signature_lacks(
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """Keep a class's ``:param:`` fields to the parameters it has.

    The generated sync classes share their docstrings with the async ones,
    which take more keyword options (``anysmtp.SMTP`` has no ``use_tls``).
    """
    if what != "class" or not callable(obj):
        return
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return
    if any(each.kind is inspect.Parameter.VAR_KEYWORD for each in parameters.values()):
        return
    kept: list[str] = []
    skipping = False
    for line in lines:
        field = PARAM_FIELD.match(line)
        if field is not None:
            skipping = field["name"] not in parameters
        elif not line.startswith((" ", "\t")):
            skipping = False  # a blank line or the next field ends the entry
        if not skipping:
            kept.append(line)
    lines[:] = kept


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", link_to_external_docs)
    app.connect("autodoc-process-docstring", drop_parameters_the_signature_lacks)
    return {"parallel_read_safe": True}
