"""What the inner client is (model, provider, OpenAI family) and the request arguments it needs from us."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autogen_core.models import ChatCompletionClient, ModelFamily

from cycles_otel.semconv import GenAiProvider

_OpenAIBase: type | None
try:  # the openai extra is optional: without it no inner client is OpenAI-family
    from autogen_ext.models.openai import BaseOpenAIChatCompletionClient as _OpenAIBase
except ImportError:  # pragma: no cover - depends on installed extras
    _OpenAIBase = None

OUTPUT_CAP_KEYS = ("max_completion_tokens", "max_tokens")


def is_openai_family(client: ChatCompletionClient) -> bool:
    """OpenAI and Azure OpenAI clients (and OpenAI-compatible endpoints behind them)."""
    return _OpenAIBase is not None and isinstance(client, _OpenAIBase)


def _create_args(client: ChatCompletionClient) -> Mapping[str, Any]:
    args = getattr(client, "_create_args", None)  # OpenAI-family clients keep their request defaults here
    return args if isinstance(args, Mapping) else {}


def inner_model(client: ChatCompletionClient) -> str | None:
    """The model the inner client asks for, when it says (OpenAI-family, or a ``model`` attribute)."""
    model = _create_args(client).get("model") or getattr(client, "model", None)
    return model if isinstance(model, str) and model else None


def configured_output_cap(client: ChatCompletionClient, extra_create_args: Mapping[str, Any]) -> int | None:
    """The output-token limit already set on this request or on the inner client, if any."""
    for source in (extra_create_args, _create_args(client)):
        for key in OUTPUT_CAP_KEYS:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


def with_output_cap(
    client: ChatCompletionClient, extra_create_args: Mapping[str, Any], cap: int
) -> Mapping[str, Any]:
    """``extra_create_args`` that make an OpenAI-family call stop at ``cap`` output tokens.

    Other clients spell the limit differently (or not at all), so they get the arguments unchanged.
    The key the request or client already uses wins (o-series models only accept
    ``max_completion_tokens``).
    """
    if not is_openai_family(client):
        return extra_create_args
    present = configured_output_cap(client, extra_create_args)
    if present is not None and present <= cap:
        return extra_create_args
    used = [k for k in OUTPUT_CAP_KEYS if k in extra_create_args or k in _create_args(client)]
    return {**extra_create_args, (used[0] if used else "max_tokens"): cap}


def stream_usage_kwargs(client: ChatCompletionClient, extra_create_args: Mapping[str, Any]) -> dict[str, Any]:
    """Ask an OpenAI-family stream for its usage chunk (``AssistantAgent`` never does).

    Left alone when the request or the client already sets ``stream_options``: passing
    ``include_usage`` as well raises in autogen-ext if the two disagree.
    """
    if not is_openai_family(client):
        return {}
    if "stream_options" in extra_create_args or "stream_options" in _create_args(client):
        return {}
    return {"include_usage": True}


_OLLAMA = "ollama"  # not (yet) a well-known value of gen_ai.provider.name
_UNKNOWN = "unknown"
_PROVIDER_BY_CLASS = (
    ("AzureOpenAI", GenAiProvider.AZURE_AI_OPENAI.value),
    ("AzureAIChat", GenAiProvider.AZURE_AI_INFERENCE.value),
    ("Anthropic", GenAiProvider.ANTHROPIC.value),
    ("Bedrock", GenAiProvider.AWS_BEDROCK.value),
    ("Gemini", GenAiProvider.GCP_GEMINI.value),
    ("Ollama", _OLLAMA),
    ("Mistral", GenAiProvider.MISTRAL_AI.value),
)
_PROVIDER_BY_MODEL = (
    (("gpt-", "o1", "o3", "o4", "chatgpt", "text-embedding"), GenAiProvider.OPENAI.value),
    (("claude",), GenAiProvider.ANTHROPIC.value),
    (("gemini", "models/gemini"), GenAiProvider.GCP_GEMINI.value),
    (("mistral", "codestral"), GenAiProvider.MISTRAL_AI.value),
    (("deepseek",), GenAiProvider.DEEPSEEK.value),
)


def provider_name(client: ChatCompletionClient, model: str) -> str:
    """``gen_ai.provider.name``: from the inner client's class, else its model family, else the model name."""
    class_name = type(client).__name__
    for marker, provider in _PROVIDER_BY_CLASS:
        if marker in class_name:
            return provider
    family = _family(client)
    if family and ModelFamily.is_claude(family):
        return GenAiProvider.ANTHROPIC.value
    if family and ModelFamily.is_gemini(family):
        return GenAiProvider.GCP_GEMINI.value
    lowered = model.lower()
    for prefixes, provider in _PROVIDER_BY_MODEL:
        if lowered.startswith(prefixes):
            return provider
    if is_openai_family(client) or (family and ModelFamily.is_openai(family)):
        return GenAiProvider.OPENAI.value
    return _UNKNOWN


def _family(client: ChatCompletionClient) -> str | None:
    try:
        family = client.model_info.get("family")
    except Exception:  # a model_info that raises must not break telemetry
        return None
    return family if isinstance(family, str) and family != ModelFamily.UNKNOWN else None
