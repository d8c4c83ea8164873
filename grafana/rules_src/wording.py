"""How a tunable is written: as a PromQL literal or duration, in a sentence, as a percentage."""

from __future__ import annotations

from datetime import timedelta

_UNITS = (("h", "hour", 3600), ("m", "minute", 60), ("s", "second", 1))


def number(value: float) -> str:
    """A PromQL number: the shortest exact form (``0.8``, ``1.2``, ``600``)."""
    text = repr(float(value))
    return text.removesuffix(".0")


def seconds(duration: timedelta) -> str:
    """A duration as a PromQL number of seconds (``600``)."""
    return number(duration.total_seconds())


def promql(duration: timedelta) -> str:
    """A PromQL duration in its largest whole unit (``5m``, ``6h``, ``90s``)."""
    total = int(duration.total_seconds())
    symbol, _, size = next(unit for unit in _UNITS if total % unit[2] == 0)
    return f"{total // size}{symbol}"


def words(duration: timedelta) -> str:
    """A duration in a sentence: ``1 minute``, ``5 minutes``, ``6 hours``."""
    total = int(duration.total_seconds())
    _, name, size = next(unit for unit in _UNITS if total % unit[2] == 0)
    count = total // size
    return f"{count} {name}" + ("" if count == 1 else "s")


def period(duration: timedelta) -> str:
    """What follows "the last": ``hour`` for one hour, ``5 minutes`` otherwise."""
    text = words(duration)
    return text.removeprefix("1 ")


def percent(ratio: float) -> str:
    """A ratio as a percentage in prose: ``80 %``."""
    return f"{ratio * 100:g} %"
