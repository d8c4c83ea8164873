"""Component config of ``BudgetedChatCompletionClient``: what ``dump_component()`` writes, never a secret."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Final

from autogen_core import ComponentModel
from pydantic import BaseModel
from runcycles import CyclesConfig  # type: ignore[import-untyped]

API_KEY_ENV: Final = "CYCLES_API_KEY"
BASE_URL_ENV: Final = "CYCLES_BASE_URL"
SECRET_KEYS: Final = frozenset({"api_key", "azure_ad_token", "azure_ad_token_provider", "password", "token"})


class BudgetedChatCompletionClientConfig(BaseModel):
    """Declarative form of :class:`~cycles_otel.autogen.BudgetedChatCompletionClient`.

    ``inner`` is the wrapped client's own component config with every secret removed: on load the
    inner client reads its key from its environment (``OPENAI_API_KEY`` for OpenAI clients), and
    the Cycles API key comes from ``CYCLES_API_KEY``. Prices come from ``PriceTable.from_env()``.
    """

    inner: ComponentModel
    base_url: str | None = None
    tenant: str | None = None
    workspace: str | None = None
    app: str | None = None
    workflow: str | None = None
    agent: str | None = None
    toolset: str | None = None
    action_kind: str = "llm.completion"
    model: str | None = None
    estimate_amount: int | None = None
    max_output_tokens: int | None = None
    unit: str = "USD_MICROCENTS"
    ttl_ms: int = 60_000
    overage_policy: str = "ALLOW_IF_AVAILABLE"
    tool_allowlist: list[str] | None = None
    tool_denylist: list[str] | None = None
    emit_inference_span: bool = True
    capture_content: bool | None = None
    settle_in_background: bool = False


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
