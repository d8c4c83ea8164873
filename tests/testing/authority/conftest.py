"""The authority's own tests: every answer the authority gives here must conform to the official spec."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cycles_otel.testing.authority import LocalCyclesServer
from tests.support.conformance import assert_conforms
from tests.support.raw_api import Api


@pytest.fixture
def cycles_server() -> Iterator[LocalCyclesServer]:
    """The plugin's running authority; at teardown, every answer it gave is checked against the spec."""
    with LocalCyclesServer() as server:
        yield server
        assert_conforms(server)


@pytest.fixture
def acme_api(cycles_server: LocalCyclesServer, acme_key: str) -> Iterator[Api]:
    """Raw HTTP calls to the authority as tenant ``acme``."""
    client = Api(cycles_server, acme_key)
    yield client
    client.close()
