"""The two list endpoints: query-parameter validation, filters, sorting and opaque cursor pagination."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from cycles_otel.testing.authority.accounting import ProtocolError
from cycles_otel.testing.authority.ledger import Ledger, Outcome
from cycles_otel.testing.authority.records import Reservation
from cycles_otel.testing.authority.validation import RESERVATION_STATUSES, SUBJECT_LEVELS, InvalidRequest

Query = dict[str, list[str]]
_SORT_KEYS = (
    "reservation_id",
    "tenant",
    "scope_path",
    "status",
    "reserved",
    "created_at_ms",
    "expires_at_ms",
)
_WINDOWS = (
    ("from", "to", "created_at_ms"),
    ("expires_from", "expires_to", "expires_at_ms"),
    ("finalized_from", "finalized_to", "finalized_at_ms"),
)


def _one(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _limit(query: Query) -> int:
    raw = _one(query, "limit")
    if raw is None:
        return 50
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        raise InvalidRequest("limit", "must be an integer between 1 and 200")
    return int(raw)


def _subject_filters(query: Query, tenant: str) -> dict[str, str]:
    filters = {level: value for level in SUBJECT_LEVELS if (value := _one(query, level))}
    if "tenant" in filters and filters["tenant"].lower() != tenant:
        raise ProtocolError(
            403, "FORBIDDEN", f"tenant filter {filters['tenant']!r} is not the API key's tenant"
        )
    return filters


def _page(
    items: Sequence[Any], query: Query, binding: dict[str, Any], key: str
) -> tuple[list[Any], dict[str, Any]]:
    """One page of ``items`` plus ``next_cursor`` / ``has_more``; a cursor is bound to its filters."""
    limit = _limit(query)
    digest = hashlib.sha256(json.dumps(binding, sort_keys=True).encode()).hexdigest()[:16]
    offset = 0
    cursor = _one(query, "cursor")
    if cursor:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"==="))
            offset, bound = int(decoded["o"]), decoded["f"]
        except (ValueError, KeyError, TypeError, RecursionError, binascii.Error) as exc:
            raise InvalidRequest(
                "cursor", "is not a cursor this server issued; drop it to start over"
            ) from exc
        if bound != digest or offset < 0:
            raise InvalidRequest(
                "cursor", "was issued for different filters; keep the filters stable across pages"
            )
    page = list(items[offset : offset + limit])
    extra: dict[str, Any] = {key: page, "has_more": offset + limit < len(items)}
    if extra["has_more"]:
        token = json.dumps({"o": offset + limit, "f": digest}).encode()
        extra["next_cursor"] = base64.urlsafe_b64encode(token).decode().rstrip("=")
    return page, extra


def list_balances(ledger: Ledger, tenant: str, query: Query) -> Outcome:
    filters = _subject_filters(query, tenant)
    if not filters:
        raise InvalidRequest(
            "tenant",
            "at least one of the query parameters tenant, workspace, app, workflow, "
            "agent or toolset is required",
        )
    include_children = _one(query, "include_children")
    if include_children not in (None, "true", "false"):
        raise InvalidRequest("include_children", "must be true or false")
    balances = ledger.balances(tenant, filters)
    _, body = _page(balances, query, filters, "balances")
    return Outcome(200, body)


def _epoch_ms(name: str, raw: str | None) -> int | None:
    if raw is None or not raw.strip():  # blank bounds mean "unset" (NORMATIVE)
        return None
    try:
        parsed = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(name, "must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def _matches(
    record: Reservation,
    filters: dict[str, str],
    status: str | None,
    key: str | None,
    windows: list[tuple[str, int | None, int | None]],
) -> bool:
    if status and record.status != status:
        return False
    if key and record.idempotency_key != key:
        return False
    if any(str(record.subject.get(level, "")).lower() != value.lower() for level, value in filters.items()):
        return False
    for attribute, low, high in windows:
        value = getattr(record, attribute)
        if value is None or (low is not None and value < low) or (high is not None and value > high):
            return False
    return True


def _sort_value(record: Reservation, sort_by: str) -> Any:
    if sort_by == "reserved":
        return record.reserved
    if sort_by == "tenant":
        return record.tenant
    return getattr(record, sort_by)


def list_reservations(ledger: Ledger, tenant: str, query: Query) -> Outcome:
    filters = _subject_filters(query, tenant)
    status = _one(query, "status")
    if status is not None and status not in RESERVATION_STATUSES:
        raise InvalidRequest("status", f"must be one of {', '.join(RESERVATION_STATUSES)}")
    windows: list[tuple[str, int | None, int | None]] = []
    for low_name, high_name, attribute in _WINDOWS:
        low, high = _epoch_ms(low_name, _one(query, low_name)), _epoch_ms(high_name, _one(query, high_name))
        if low is not None and high is not None and low > high:
            raise InvalidRequest(low_name, f"must not be later than {high_name}")
        if low is not None or high is not None:
            windows.append((attribute, low, high))
    sort_by, sort_dir = _one(query, "sort_by"), _one(query, "sort_dir")
    if sort_by is not None and sort_by not in _SORT_KEYS:
        raise InvalidRequest("sort_by", f"must be one of {', '.join(_SORT_KEYS)}")
    if sort_dir is not None and sort_dir not in ("asc", "desc"):
        raise InvalidRequest("sort_dir", "must be asc or desc")
    include = frozenset(t.strip() for v in query.get("include", []) for t in v.split(",") if t.strip())
    key = _one(query, "idempotency_key")
    if key is not None and not 1 <= len(key) <= 256:
        raise InvalidRequest("idempotency_key", "must have 1 to 256 characters")
    records = [r for r in ledger.reservations_of(tenant) if _matches(r, filters, status, key, windows)]
    if sort_by is not None:  # without sort_by: creation order
        records.sort(
            key=lambda r: (_sort_value(r, sort_by), r.reservation_id), reverse=(sort_dir or "desc") == "desc"
        )
    binding = {
        "filters": filters,
        "status": status,
        "key": key,
        "windows": windows,
        "sort": [sort_by, sort_dir],
    }
    page, body = _page(records, query, binding, "reservations")
    body["reservations"] = [r.to_protocol(include) for r in page]
    return Outcome(200, body)
