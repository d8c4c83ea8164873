"""Checks the local authority's recorded answers against the official Cycles OpenAPI document."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cycles_otel.testing.authority import LocalCyclesServer, RecordedRequest
from tests.support.ci import require_file
from tests.support.paths import TESTS

SPEC_URI = "urn:cycles-protocol-v0"
# The official Cycles protocol (OpenAPI 3.1, Apache-2.0: its licence is beside it).
VENDORED_SPEC = TESTS / "testing" / "authority" / "spec" / "cycles-protocol-v0.yaml"
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def spec_path() -> Path:
    """``$CYCLES_PROTOCOL_SPEC``, else the copy of the official spec kept beside the authority's tests."""
    override = os.environ.get("CYCLES_PROTOCOL_SPEC")
    return Path(override) if override else VENDORED_SPEC


@cache
def load_spec() -> dict[str, Any]:
    path = require_file(spec_path(), "the Cycles protocol spec (CYCLES_PROTOCOL_SPEC names another copy)")
    spec: dict[str, Any] = yaml.safe_load(path.read_text())
    return spec


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(load_spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return registry


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    for template, item in load_spec()["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^/]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    return None


def response_problems(record: RecordedRequest) -> list[str]:
    """Everything about one answer that the spec does not allow (empty when it conforms)."""
    if record.status is None:
        return []  # a dropped connection has no answer to check
    where = f"{record.method} {record.path} -> {record.status}"
    problems: list[str] = []
    headers = {k.lower(): v for k, v in record.response_headers.items()}
    if not headers.get("x-request-id"):
        problems.append(f"{where}: no X-Request-Id header")
    if not _TRACE_ID.match(headers.get("x-cycles-trace-id", "")):
        problems.append(f"{where}: X-Cycles-Trace-Id missing or not 32 lowercase hex")
    found = _operation(record.method, record.path)
    if found is None:
        return problems
    template, operation = found
    status = str(record.status)
    if status not in operation["responses"]:
        return [*problems, f"{where}: status {status} is not declared for {operation['operationId']}"]
    response = operation["responses"][status]
    pointer = _pointer("paths", template, record.method.lower(), "responses", status)
    if "$ref" in response:
        pointer = response["$ref"]
        name = pointer.rsplit("/", 1)[-1]
        response = load_spec()["components"]["responses"][name]
    schema_pointer = pointer + "/content/application~1json/schema"
    validator = OAS31Validator(
        {"$ref": SPEC_URI + schema_pointer},
        registry=_registry(),
        format_checker=OAS31Validator.FORMAT_CHECKER,
    )
    for error in validator.iter_errors(record.response_body):
        problems.append(f"{where}: {'.'.join(map(str, error.absolute_path)) or '<body>'}: {error.message}")
    return problems


def assert_conforms(server: LocalCyclesServer) -> None:
    problems = [p for record in server.requests for p in response_problems(record)]
    assert not problems, "responses outside the Cycles spec:\n" + "\n".join(problems)
