"""How the rightsizer quotes what it was given in a reason or an error: a short prefix, never the whole of it (a
bad value, an id, an error text can be megabytes long, and a reason is one line of a report)."""

from __future__ import annotations

from typing import Any

PREFIX_CHARS = 40
"""A bad value or text is quoted to this many characters."""
REASON_CHARS = 300
"""An error from another system (an HTTP answer, a client library's message) is kept to this many characters."""


def quote_prefix(text: str, limit: int = PREFIX_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of ``text``, saying how long the whole was when it is cut."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def quote_value(value: Any) -> str:
    """A bad value of any type as quoted in a problem: its ``repr``, at most :data:`PREFIX_CHARS` characters."""
    return cut(repr(value), PREFIX_CHARS)


def cut(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` as it is when short enough, else its first characters and ``...``, ``limit`` in all."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
