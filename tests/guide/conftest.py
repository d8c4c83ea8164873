"""The guide's programs run in an environment of their own: the variables it names, global providers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.budgeted import Authority
from tests.support.guide import Guide, guide_environment


@pytest.fixture
def guide(authority: Authority, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guide]:
    """What a guide program talks to, its environment pointed at it (see ``guide_environment``)."""
    with guide_environment(authority, monkeypatch) as environment:
        yield environment
