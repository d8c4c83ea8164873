"""Values read off the wire: protocol requests and answers as pydantic models or JSON mappings alike."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType
from typing import Any, Final


def whole(value: Any) -> int | None:
    """``value`` if it is an integer (JSON booleans, which Python counts as ints, are not), else None."""
    return None if isinstance(value, bool) or not isinstance(value, int) else value


class _ByAttribute:
    """``get`` for an object that is neither a mapping nor a pydantic model."""

    __slots__ = ("_obj",)

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def get(self, name: str) -> Any:
        return getattr(self._obj, name, None)


Fields = Mapping[str, Any] | _ByAttribute
NO_FIELDS: Final[Mapping[str, Any]] = MappingProxyType({})


def fields_of(obj: Any) -> Fields:
    """``obj``'s fields, read with ``.get(name)`` (None when absent), whatever ``obj`` is.

    A pydantic model's declared fields all sit in its ``__dict__`` (runcycles' models forbid extra
    ones); reading that avoids pydantic's ``__getattr__``, which raises (slowly) for a missing field.
    """
    if type(obj) is dict:  # bodies and most requests: skip the (slower) ABC check
        return obj
    if obj is None:
        return NO_FIELDS
    if getattr(obj, "__pydantic_fields__", None) is not None:
        extra = getattr(obj, "__pydantic_extra__", None)
        return {**obj.__dict__, **extra} if extra else obj.__dict__
    if isinstance(obj, Mapping):
        return obj
    return _ByAttribute(obj)


def field(obj: Any, name: str) -> Any:
    return fields_of(obj).get(name)


def text(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    if value is None:  # most optional fields are absent
        return None
    if isinstance(value, Enum):
        value = value.value
    return value if isinstance(value, str) and value else None


def amount_of(obj: Any) -> tuple[int | None, str | None]:
    """(amount, unit) of a protocol ``Amount``, as a model or a dict."""
    amount = fields_of(obj)
    return whole(amount.get("amount")), text(amount.get("unit"))
