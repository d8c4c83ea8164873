"""The client's settings, validated once: the constructor, ``with_agent``, dump and load share them."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Final, Literal

from autogen_core import ComponentModel
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from runcycles import CyclesConfig  # type: ignore[import-untyped]
from typing_extensions import Self

API_KEY_ENV: Final = "CYCLES_API_KEY"
BASE_URL_ENV: Final = "CYCLES_BASE_URL"
SECRET_KEYS: Final = frozenset({"api_key", "azure_ad_token", "azure_ad_token_provider", "password", "token"})
SUBJECT_FIELDS: Final = ("tenant", "workspace", "app", "workflow", "agent", "toolset")
# The protocol's portable charset and length for subject values (Subject in the official spec).
SUBJECT_CHARSET: Final = re.compile(r"[a-zA-Z0-9._-]+")
SUBJECT_MAX_LENGTH: Final = 128
ACTION_KIND_MAX_LENGTH: Final = 64
MAX_AMOUNT: Final = 2**63 - 1  # amounts are int64 in the protocol
TTL_RANGE_MS: Final = (1_000, 86_400_000)
GUIDE_ESTIMATE: Final = 2_000_000
"""What the guide's ``CyclesBudgetClient`` reserves per call when it is given no estimate."""

Unit = Literal["USD_MICROCENTS", "TOKENS"]
OveragePolicy = Literal["ALLOW_IF_AVAILABLE", "REJECT", "ALLOW_WITH_OVERDRAFT"]
AuthorityErrorPolicy = Literal["raise", "allow"]
Tokenizer = Literal["auto", "characters"]
Mode = Literal["enforce", "observe"]
ToolDenial = Literal["raise", "result"]
Transport = Literal["aiohttp", "httpx"]


class GovernanceSettings(BaseModel):
    """What every governed call is configured with: where it is charged, how it is reserved and settled.

    Strict: a string is not a bool and ``"100"`` is not an int. Build it with :meth:`validated`,
    whose errors name the argument and what to pass instead.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    tenant: str | None = None
    workspace: str | None = None
    app: str | None = None
    workflow: str | None = None
    agent: str | None = None
    """A fixed agent; ``None`` attributes each call to the AutoGen agent making it."""
    toolset: str | None = None
    action_kind: str
    estimate_amount: int | None = None
    unit: Unit = "USD_MICROCENTS"
    ttl_ms: int = 60_000
    overage_policy: OveragePolicy = "ALLOW_IF_AVAILABLE"
    settle_in_background: bool = False
    on_authority_error: AuthorityErrorPolicy = "raise"
    mode: Mode = "enforce"
    """``observe``: ask the authority (``/v1/decide``) and record its decision, never block or hold budget."""
    transport: Transport = "aiohttp"
    """How runcycles' own clients are spoken through: aiohttp (fast), or runcycles' httpx client."""

    @classmethod
    def validated(cls, **values: Any) -> Self:
        """The settings, or a ``ValueError`` / ``TypeError`` naming the first bad argument and its fix."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise readable(exc, values) from None

    @property
    def subject(self) -> dict[str, str]:
        """The subject fields set (the agent included when fixed)."""
        return {name: value for name in SUBJECT_FIELDS if (value := getattr(self, name))}

    @field_validator(*SUBJECT_FIELDS)
    @classmethod
    def _subject_value(cls, value: str | None, info: Any) -> str | None:
        if value is None:
            return None
        name = info.field_name
        if len(value) > SUBJECT_MAX_LENGTH:
            raise ValueError(
                f"{name}={value[:32]!r}... is {len(value)} characters: subject values are at most "
                f"{SUBJECT_MAX_LENGTH} characters in the Cycles protocol; shorten the {name}"
            )
        if not SUBJECT_CHARSET.fullmatch(value):
            raise ValueError(
                f"{name}={value!r}: subject values use only a-zA-Z0-9._- (the Cycles protocol's "
                f"portable charset) and are not empty; rename the {name}, or pass None to leave it out"
            )
        return value

    @field_validator("action_kind")
    @classmethod
    def _action_kind(cls, value: str) -> str:
        if not value or len(value) > ACTION_KIND_MAX_LENGTH:
            raise ValueError(
                f"action_kind={value!r}: give 1 to {ACTION_KIND_MAX_LENGTH} characters, "
                "e.g. action_kind='llm.completion'"
            )
        return value

    @field_validator("estimate_amount")
    @classmethod
    def _estimate(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= MAX_AMOUNT:
            raise ValueError(
                f"estimate_amount={value!r}: give an int >= 0 and <= {MAX_AMOUNT} (the protocol's int64 "
                "maximum), a callable, or None"
            )
        return value

    @field_validator("ttl_ms")
    @classmethod
    def _ttl(cls, value: int) -> int:
        low, high = TTL_RANGE_MS
        if not low <= value <= high:
            raise ValueError(f"ttl_ms={value!r}: the protocol takes a TTL between {low} and {high} ms")
        return value


class ClientSettings(GovernanceSettings):
    """Everything a ``BudgetedChatCompletionClient`` is configured with, apart from the objects it wraps."""

    action_kind: str = "llm.completion"
    model: str | None = None
    max_output_tokens: int | None = None
    tool_allowlist: list[str] | None = None
    tool_denylist: list[str] | None = None
    emit_inference_span: bool = True
    capture_content: bool | None = None
    tokenizer: Tokenizer = "auto"

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("model='': pass the model id, e.g. model='gpt-4o', or None to read it off inner")
        return value

    @field_validator("max_output_tokens")
    @classmethod
    def _output_cap(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"max_output_tokens={value!r}: {_FIXES['max_output_tokens']}")
        return value

    @field_validator("tool_allowlist", "tool_denylist", mode="before")
    @classmethod
    def _tool_names(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str) or (value is not None and not isinstance(value, (list, tuple))):
            name = info.field_name
            raise TypeError(f"{name} must be a list of tool names, e.g. {name}=[{value!r}], got {value!r}")
        return list(value) if isinstance(value, tuple) else value


class ToolSettings(GovernanceSettings):
    """Everything a ``BudgetedTool`` or ``BudgetedWorkbench`` is configured with, apart from the tools."""

    action_kind: str = "tool.call"
    on_denied: ToolDenial = "raise"
    """``raise``: the typed runcycles error; ``result``: a tool error result the model reads."""


class BudgetedChatCompletionClientConfig(ClientSettings):
    """Declarative form of :class:`~cycles_otel.autogen.BudgetedChatCompletionClient`.

    ``inner`` is the wrapped client's own component config with every secret removed: on load the
    inner client reads its key from its environment (``OPENAI_API_KEY`` for OpenAI clients), and
    the Cycles API key comes from ``CYCLES_API_KEY``. Prices come from ``PriceTable.from_env()``.
    """

    model_config = ConfigDict(strict=False, frozen=True, extra="forbid")
    # Loaded from JSON: lists and numbers arrive as JSON gives them; the checks above still apply.

    inner: ComponentModel
    base_url: str | None = None

    def settings(self) -> ClientSettings:
        return ClientSettings.validated(**self.model_dump(exclude={"inner", "base_url"}))


_TYPE_ERRORS: Final = frozenset({"TypeError"})
# What to pass instead, for arguments whose own check cannot run on a value of the wrong type.
_FIXES: Final = {
    "estimate_amount": "give an int >= 0, a callable (messages, tools) -> int, or None",
    "max_output_tokens": "give a positive int, e.g. max_output_tokens=1_000",
    "ttl_ms": f"give an int between {TTL_RANGE_MS[0]} and {TTL_RANGE_MS[1]}",
    "unit": "give 'USD_MICROCENTS' or 'TOKENS'",
    "overage_policy": "give 'ALLOW_IF_AVAILABLE', 'REJECT' or 'ALLOW_WITH_OVERDRAFT'",
    "on_authority_error": "give 'raise' (the default) or 'allow' (fail open)",
    "tokenizer": "give 'auto' (the inner client's tokenizer) or 'characters'",
    "mode": "give 'enforce' (the default) or 'observe' (shadow mode: decide and record, never block)",
    "on_denied": "give 'raise' (the typed runcycles error) or 'result' (a tool error result the model reads)",
    "transport": "give 'aiohttp' (the default) or 'httpx' (runcycles' own async client)",
}


def readable(exc: ValidationError, values: dict[str, Any]) -> Exception:
    """The first problem of ``exc`` as one sentence that names the argument and the fix."""
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    field = str(error["loc"][0]) if error["loc"] else name
    given = values.get(field, error.get("input"))
    kind = error["type"]
    context = error.get("ctx") or {}
    raised = context.get("error")
    if raised is not None:  # one of our own checks: its message already says it all
        message = str(raised)
        return TypeError(message) if type(raised).__name__ in _TYPE_ERRORS else ValueError(message)
    if kind == "extra_forbidden":
        return TypeError(f"{name}: not a setting of BudgetedChatCompletionClient (check the spelling)")
    if kind == "bool_type":
        fix = "pass True or False (a string such as 'false' is not a bool)"
    else:
        fix = _FIXES.get(field, "see the BudgetedChatCompletionClient manual")
    message = f"{name}={given!r} ({type(given).__name__}): {error['msg']}; {fix}"
    return TypeError(message) if kind.endswith("_type") else ValueError(message)


def without_secrets(component: ComponentModel) -> ComponentModel:
    """A copy of ``component`` whose config (at any depth) holds no API key or token."""
    return component.model_copy(update={"config": _scrub(component.config)})


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in SECRET_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def cycles_config_for_load(base_url: str | None) -> CyclesConfig:
    """Cycles config of a loaded client: the dumped base URL; the key (and the rest) from the environment."""
    api_key = os.environ.get(API_KEY_ENV, "")
    if not api_key:
        raise ValueError(
            f"loading a BudgetedChatCompletionClient needs the Cycles API key: set {API_KEY_ENV} "
            "(dumped configs never contain it)"
        )
    url = base_url or os.environ.get(BASE_URL_ENV, "")
    if not url:
        raise ValueError(f"the dumped config has no base_url: set {BASE_URL_ENV}")
    try:
        config = CyclesConfig.from_env()
    except ValueError:  # only the key was set: defaults for the rest
        config = CyclesConfig(base_url=url, api_key=api_key)
    return dataclasses.replace(config, base_url=url)
