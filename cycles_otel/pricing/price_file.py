"""Price files: the JSON overrides named by ``CYCLES_OTEL_PRICES_FILE``, read with errors that say the fix."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from cycles_otel.pricing.model_price import ModelPrice
from cycles_otel.pricing.money import rate_microcents

PRICES_FILE_ENV: Final = "CYCLES_OTEL_PRICES_FILE"


class PricingFileError(ValueError):
    """A price file is unreadable or malformed; the message names the file, entry, field and fix."""

    def __init__(self, path: Path, problem: str, model: str | None = None, field: str | None = None) -> None:
        self.path = path
        self.model = model
        self.field = field
        where = f"{path}"
        if model is not None:
            where += f": model {model!r}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


_FILE_FORMAT: Final = '{"models": {"<model>": {"input": 2.5, "output": 10, "cached_input": 1.25}}}'
_TOP_LEVEL_KEYS: Final = frozenset({"models", "fallback"})
_PRICE_FIELDS: Final = ("input", "output", "cached_input")


def load_price_file(path: Path) -> tuple[dict[str, ModelPrice], ModelPrice | None]:
    """The models and the fallback (if any) of a price file; :class:`PricingFileError` when it is bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PricingFileError(
            path, f"cannot read the price file ({exc}): check the path (or {PRICES_FILE_ENV})"
        ) from None
    try:
        # Decimal, not float: "0.075" must stay exactly 0.075.
        data = json.loads(text, parse_float=Decimal, parse_constant=Decimal)
    except json.JSONDecodeError as exc:
        raise PricingFileError(
            path,
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"fix the syntax, the expected shape is {_FILE_FORMAT}",
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise PricingFileError(path, f'needs a top-level "models" object: {_FILE_FORMAT}', field="models")
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise PricingFileError(
            path,
            f'unknown top-level key {unknown[0]!r}: only "models" and "fallback" are read',
            field=unknown[0],
        )
    models = {name: _price_entry(path, name, entry) for name, entry in data["models"].items()}
    if not all(name.strip() for name in models):
        raise PricingFileError(path, "a model name is empty: name each entry after its model id", model="")
    fallback = data.get("fallback")
    return models, None if fallback is None else _price_entry(path, None, fallback)


def _price_entry(path: Path, model: str | None, entry: Any) -> ModelPrice:
    label = "fallback" if model is None else model
    if not isinstance(entry, dict):
        raise PricingFileError(
            path, f'must be an object like {{"input": 2.5, "output": 10}}, got {entry!r}', model=label
        )
    for field in entry:
        if field not in _PRICE_FIELDS:
            raise PricingFileError(
                path, "unknown field: use input, output and (optional) cached_input", model=label, field=field
            )
    for field in _PRICE_FIELDS[:2]:
        if field not in entry:
            raise PricingFileError(
                path, f'missing: add "{field}": <USD per 1M {field} tokens>', model=label, field=field
            )
    for field in _PRICE_FIELDS:
        value = entry.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            raise PricingFileError(
                path,
                f"must be a number of USD per 1M tokens such as 2.5, got {value!r}",
                model=label,
                field=field,
            )
        try:
            rate_microcents(value, field)
        except ValueError as exc:
            raise PricingFileError(path, f"{exc}; fix the value", model=label, field=field) from None
    return ModelPrice(entry["input"], entry["output"], entry.get("cached_input"))
