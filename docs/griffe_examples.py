"""A Griffe extension for the API pages (``mkdocs.yml``): doctests render as Python code.

xmed's docstrings title their doctests ``Example:`` (or ``Example (what it shows):``), which the
Google style reads as an admonition: rendered as Markdown, its ``>>>`` lines run together and
``result["differences"][0]`` reads as a link. Retitled ``Examples:``, they render as code, the
title's note as the section's first line.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: ``Example:``, ``Example, on a JPEG:`` or ``Example (…):`` over one or more lines, then a doctest
EXAMPLE_TITLE = re.compile(
    r"^(?P<indent>[ \t]*)Examples?(?P<note>,? [^>]*?)?:[ \t]*\n(?=(?P<body>[ \t]+)>>>)", re.MULTILINE)


def retitle(match: re.Match) -> str:
    """The title as an ``Examples:`` section whose first line is the title's note.

    Example:
        >>> text = "Sum.\\n\\nExample (two\\n  numbers):\\n    >>> 1 + 1\\n"
        >>> EXAMPLE_TITLE.sub(retitle, text).splitlines()
        ['Sum.', '', 'Examples:', '    Two numbers:', '    >>> 1 + 1']
    """
    note = " ".join((match["note"] or "").split()).lstrip(", ").removeprefix("(").removesuffix(")")
    return f"{match['indent']}Examples:\n" + (f"{match['body']}{note[:1].upper()}{note[1:]}:\n" if note else "")


class DoctestExamples(griffe.Extension):
    """Retitles each docstring's ``Example`` sections ``Examples`` before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = EXAMPLE_TITLE.sub(retitle, obj.docstring.value)
