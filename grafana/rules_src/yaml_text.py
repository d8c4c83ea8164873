"""Readable YAML for the generated files: comments, block scalars, and proof that it loads back as built."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import yaml

WIDTH = 100  # of comment and folded lines, indentation included
# Spans a line break would make hard to read: template actions and `code`.
_UNBREAKABLE = re.compile(r"\{\{.*?\}\}|`[^`]*`")
_KEEP_TOGETHER = "\x00"  # stands for a space that must not become a line break


def flow(value: str | float) -> str:
    """A one-line scalar: plain when YAML reads it back unchanged, single-quoted otherwise."""
    if not isinstance(value, str):
        return repr(value)
    if "\n" in value:
        raise ValueError(f"{value!r}: a one-line scalar cannot hold a line break")
    if value and _reads_back(value, value):
        return value
    return quoted(value)


def quoted(value: str) -> str:
    """A single-quoted scalar, for values a reader should see as one string (series selectors)."""
    return "'" + value.replace("'", "''") + "'"


def field(indent: int, key: str, value: str | float, *, quote: bool = False) -> str:
    """``key: value`` at ``indent``; several lines (block literal) when ``value`` has line breaks."""
    pad = " " * indent
    if quote and isinstance(value, str):
        return f"{pad}{key}: {quoted(value)}"
    if not isinstance(value, str) or "\n" not in value.rstrip("\n"):
        return f"{pad}{key}: {flow(value)}"
    indicator = "|" if value.endswith("\n") else "|-"
    body = value.removesuffix("\n").split("\n")
    return "\n".join([f"{pad}{key}: {indicator}", *(f"{pad}  {line}" if line else "" for line in body)])


def folded(indent: int, key: str, value: str) -> str:
    """``key: >-`` and ``value`` wrapped in lines YAML folds back into the one-line original."""
    pad = " " * (indent + 2)
    lines = _wrap(value, WIDTH - len(pad))
    return "\n".join([" " * indent + f"{key}: >-", *(pad + line for line in lines)])


def comment(indent: int, text: str) -> list[str]:
    """``text`` rewrapped as ``#`` lines; a blank line in ``text`` starts a new paragraph."""
    pad = " " * indent + "# "
    out: list[str] = []
    for number, paragraph in enumerate(text.strip().split("\n\n")):
        out += [pad.rstrip()] if number else []
        out += [pad + line for line in _wrap(" ".join(paragraph.split()), WIDTH - len(pad))]
    return out


def checked(text: str, expected: Any, name: str) -> str:
    """``text`` itself, once it is proven to load as ``expected`` (a wrong emitter fails loudly here)."""
    loaded = yaml.safe_load(text)
    if loaded != expected:
        raise AssertionError(f"{name}: the generated YAML does not read back as built")
    return text


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` (longer only for one long word), never breaking inside a span."""
    joined = _UNBREAKABLE.sub(lambda span: span.group(0).replace(" ", _KEEP_TOGETHER), text)
    lines = textwrap.wrap(joined, width, break_long_words=False, break_on_hyphens=False)
    return [line.replace(_KEEP_TOGETHER, " ") for line in lines]


def _reads_back(text: str, value: str) -> bool:
    try:
        return bool(yaml.safe_load(f"key: {text}") == {"key": value})
    except yaml.YAMLError:
        return False
