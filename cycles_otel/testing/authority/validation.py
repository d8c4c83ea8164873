"""Request-body schemas of the Cycles protocol as small declarative rules, with errors that name the field."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

INT64_MAX = 9_223_372_036_854_775_807
UNITS = ("USD_MICROCENTS", "TOKENS", "CREDITS", "RISK_POINTS")
OVERAGE_POLICIES = ("REJECT", "ALLOW_IF_AVAILABLE", "ALLOW_WITH_OVERDRAFT")
RESERVATION_STATUSES = ("ACTIVE", "COMMITTED", "RELEASED", "EXPIRED")
SUBJECT_LEVELS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
# The spec's SHOULD-charset for subject values; ":" and "/" are scope delimiters, so the
# reference server rejects anything else and so do we.
SEGMENT = re.compile(r"^[a-zA-Z0-9_.-]+$")


class InvalidRequest(ValueError):
    """A request that breaks the protocol schema; ``field`` is the dotted path of the culprit."""

    def __init__(self, field_path: str, problem: str) -> None:
        self.field = field_path
        super().__init__(f"{field_path}: {problem}" if field_path else f"request body {problem}")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


class Rule:
    """One JSON value constraint; ``check`` raises :class:`InvalidRequest`."""

    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Str(Rule):
    max_length: int | None = None
    min_length: int = 0
    pattern: re.Pattern[str] | None = None

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise InvalidRequest(where, "must be a string")
        if len(value) < self.min_length:
            raise InvalidRequest(where, f"must have at least {self.min_length} character(s)")
        if self.max_length is not None and len(value) > self.max_length:
            raise InvalidRequest(where, f"must have at most {self.max_length} characters")
        # fullmatch: with re.match, "$" would also accept a trailing newline.
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise InvalidRequest(where, f"must match {self.pattern.pattern}")


@dataclass(frozen=True)
class Int(Rule):
    minimum: int = 0
    maximum: int = INT64_MAX

    def check(self, value: Any, where: str) -> None:
        # bool is an int subclass in Python but not a JSON integer.
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(where, "must be an integer")
        if not self.minimum <= value <= self.maximum:
            raise InvalidRequest(where, f"must be between {self.minimum} and {self.maximum}")


@dataclass(frozen=True)
class Bool(Rule):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise InvalidRequest(where, "must be a boolean")


@dataclass(frozen=True)
class Enum(Rule):
    values: tuple[str, ...]

    def check(self, value: Any, where: str) -> None:
        if value not in self.values:
            raise InvalidRequest(where, f"must be one of {', '.join(self.values)}")


@dataclass(frozen=True)
class Array(Rule):
    item: Rule
    max_items: int | None = None

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise InvalidRequest(where, "must be an array")
        if self.max_items is not None and len(value) > self.max_items:
            raise InvalidRequest(where, f"must have at most {self.max_items} items")
        for index, item in enumerate(value):
            self.item.check(item, f"{where}[{index}]")


@dataclass(frozen=True)
class Map(Rule):
    """A free-form object; ``values`` constrains every value when given."""

    values: Rule | None = None
    max_properties: int | None = None

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise InvalidRequest(where, "must be an object")
        if self.max_properties is not None and len(value) > self.max_properties:
            raise InvalidRequest(where, f"must have at most {self.max_properties} properties")
        if self.values is not None:
            for key, item in value.items():
                self.values.check(item, _join(where, key))


@dataclass(frozen=True)
class Obj(Rule):
    """A closed object (``additionalProperties: false``)."""

    fields: Mapping[str, Rule]
    required: tuple[str, ...] = ()
    any_of: tuple[str, ...] = field(default=())

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise InvalidRequest(where, "must be an object")
        for name in self.required:
            if name not in value:
                raise InvalidRequest(_join(where, name), "is required")
        for name, item in value.items():
            rule = self.fields.get(name)
            if rule is None:
                raise InvalidRequest(_join(where, name), "is not a known field")
            rule.check(item, _join(where, name))
        if self.any_of and not any(name in value for name in self.any_of):
            raise InvalidRequest(where, f"must contain at least one of {', '.join(self.any_of)}")


def _closed(fields: Mapping[str, Rule], required: Iterable[str]) -> Obj:
    return Obj(fields=dict(fields), required=tuple(required))


IDEMPOTENCY_KEY = Str(min_length=1, max_length=256)
AMOUNT = _closed({"unit": Enum(UNITS), "amount": Int()}, ("unit", "amount"))
SUBJECT = Obj(
    fields={
        **{level: Str(max_length=128, pattern=SEGMENT) for level in SUBJECT_LEVELS},
        "dimensions": Map(values=Str(max_length=256), max_properties=16),
    },
    any_of=SUBJECT_LEVELS,
)
ACTION = _closed(
    {"kind": Str(max_length=64), "name": Str(max_length=256), "tags": Array(Str(max_length=64), 10)},
    ("kind", "name"),
)
METADATA = Map()
METRICS = _closed(
    {
        "tokens_input": Int(),
        "tokens_output": Int(),
        "latency_ms": Int(),
        "model_version": Str(max_length=128),
        "custom": Map(),
    },
    (),
)
POLICY = Enum(OVERAGE_POLICIES)

RESERVE = _closed(
    {
        "idempotency_key": IDEMPOTENCY_KEY,
        "subject": SUBJECT,
        "action": ACTION,
        "estimate": AMOUNT,
        "ttl_ms": Int(1000, 86_400_000),
        "grace_period_ms": Int(0, 60_000),
        "overage_policy": POLICY,
        "dry_run": Bool(),
        "metadata": METADATA,
    },
    ("idempotency_key", "subject", "action", "estimate"),
)
DECIDE = _closed(
    {
        "idempotency_key": IDEMPOTENCY_KEY,
        "subject": SUBJECT,
        "action": ACTION,
        "estimate": AMOUNT,
        "metadata": METADATA,
    },
    ("idempotency_key", "subject", "action", "estimate"),
)
COMMIT = _closed(
    {"idempotency_key": IDEMPOTENCY_KEY, "actual": AMOUNT, "metrics": METRICS, "metadata": METADATA},
    ("idempotency_key", "actual"),
)
RELEASE = _closed({"idempotency_key": IDEMPOTENCY_KEY, "reason": Str(max_length=256)}, ("idempotency_key",))
EXTEND = _closed(
    {"idempotency_key": IDEMPOTENCY_KEY, "extend_by_ms": Int(1, 86_400_000), "metadata": METADATA},
    ("idempotency_key", "extend_by_ms"),
)
EVENT = _closed(
    {
        "idempotency_key": IDEMPOTENCY_KEY,
        "subject": SUBJECT,
        "action": ACTION,
        "actual": AMOUNT,
        "overage_policy": POLICY,
        "metrics": METRICS,
        "client_time_ms": Int(),
        "metadata": METADATA,
    },
    ("idempotency_key", "subject", "action", "actual"),
)

# Request body rule per operation name (operations without a body are absent).
BODY_RULES: dict[str, Rule] = {
    "reserve": RESERVE,
    "decide": DECIDE,
    "commit": COMMIT,
    "release": RELEASE,
    "extend": EXTEND,
    "event": EVENT,
}
