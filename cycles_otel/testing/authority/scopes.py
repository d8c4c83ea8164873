"""Canonical scope derivation: tenant → workspace → app → workflow → agent → toolset, values lowercased."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cycles_otel.testing.authority.validation import SEGMENT, SUBJECT_LEVELS


def derive_scopes(subject: Mapping[str, Any]) -> list[str]:
    """Every scope a subject touches, outermost first; the last one is its ``scope_path``.

    Only levels the subject names are included: a gap (no workspace, say) is skipped,
    never filled with a default, as the spec's SCOPE DERIVATION section requires.
    """
    scopes: list[str] = []
    path = ""
    for level in SUBJECT_LEVELS:
        value = subject.get(level)
        if value:
            segment = f"{level}:{str(value).lower()}"
            path = f"{path}/{segment}" if path else segment
            scopes.append(path)
    return scopes


def parse_scope(text: str) -> dict[str, str]:
    """The subject levels of a scope path such as ``tenant:acme/workflow:research``.

    Raises ``ValueError`` naming the problem and the expected shape.
    """
    levels: dict[str, str] = {}
    last_rank = -1
    for segment in text.split("/"):
        level, sep, value = segment.partition(":")
        if not sep or level not in SUBJECT_LEVELS or not SEGMENT.fullmatch(value):
            raise ValueError(
                f"scope {text!r}: segment {segment!r} must be LEVEL:VALUE with LEVEL one of "
                f"{', '.join(SUBJECT_LEVELS)} and VALUE matching {SEGMENT.pattern}"
            )
        rank = SUBJECT_LEVELS.index(level)
        if rank <= last_rank:
            raise ValueError(
                f"scope {text!r}: levels must appear once each, in the order {' → '.join(SUBJECT_LEVELS)}"
            )
        last_rank = rank
        levels[level] = value.lower()
    return levels


def canonical_scope(text: str) -> str:
    """The canonical form of a scope path (values lowercased); raises ``ValueError`` when malformed."""
    return derive_scopes(parse_scope(text))[-1]
