"""Help text for the command lines, from the module docstrings they are documented in.

Docstrings use reStructuredText markup (``code``, :func:`name`); ``--help`` is read in a
terminal, where that markup is noise.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def plain(docstring: str) -> str:
    """``docstring`` without its markup: roles and literals become their text, and a
    ``::`` that introduces an example becomes ``:``."""
    text = _ROLE.sub(r"\1", docstring)
    text = _LITERAL.sub(r"\1", text)
    return re.sub(r"::$", ":", text, flags=re.MULTILINE).strip()
