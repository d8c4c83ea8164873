"""``--live``: which real services the demo talks to, read from the environment (keys are never shown)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

LIVE_CHOICES: Final = ("openai", "cycles", "both")
OPENAI_KEY_ENV: Final = "OPENAI_API_KEY"
OPENAI_BASE_URL_ENV: Final = "OPENAI_BASE_URL"
CYCLES_URL_ENV: Final = "CYCLES_BASE_URL"
CYCLES_KEY_ENV: Final = "CYCLES_API_KEY"
CYCLES_TENANT_ENV: Final = "CYCLES_TENANT"


class LiveSetupError(ValueError):
    """A ``--live`` part lacks the environment it needs; the message names the variable."""


@dataclass(frozen=True)
class LiveTargets:
    """Real endpoints; ``None`` means the embedded offline stand-in is used."""

    openai_key: str | None = None
    openai_base_url: str | None = None
    cycles_url: str | None = None
    cycles_key: str | None = None
    tenant: str = "acme"

    @property
    def real_openai(self) -> bool:
        return self.openai_key is not None

    @property
    def real_cycles(self) -> bool:
        return self.cycles_url is not None

    def describe(self) -> str:
        """Where calls go, without secrets."""
        model = f"OpenAI at {self.openai_base_url or 'api.openai.com'}" if self.real_openai else "fake OpenAI"
        cycles = f"Cycles at {self.cycles_url}" if self.real_cycles else "local Cycles authority"
        return f"{model}, {cycles}"


def resolve_live(choice: str | None, environ: Mapping[str, str] | None = None) -> LiveTargets:
    """The real services ``--live CHOICE`` asks for; :class:`LiveSetupError` when a variable is missing."""
    env = os.environ if environ is None else environ
    tenant = env.get(CYCLES_TENANT_ENV, "").strip() or "acme"
    if choice is None:
        return LiveTargets(tenant="acme")
    if choice not in LIVE_CHOICES:
        raise LiveSetupError(f"--live must be one of {', '.join(LIVE_CHOICES)}, got {choice!r}")
    wanted = {"openai", "cycles"} if choice == "both" else {choice}
    needed = ([OPENAI_KEY_ENV] if "openai" in wanted else []) + (
        [CYCLES_URL_ENV, CYCLES_KEY_ENV] if "cycles" in wanted else []
    )
    missing = [name for name in needed if not env.get(name, "").strip()]
    if missing:
        raise LiveSetupError(
            f"--live {choice} needs {' and '.join(missing)} in the environment: export "
            f"{missing[0]}=... (or drop --live to run fully offline)"
        )
    return LiveTargets(
        openai_key=env[OPENAI_KEY_ENV].strip() if "openai" in wanted else None,
        openai_base_url=(env.get(OPENAI_BASE_URL_ENV, "").strip() or None) if "openai" in wanted else None,
        cycles_url=env[CYCLES_URL_ENV].strip().rstrip("/") if "cycles" in wanted else None,
        cycles_key=env[CYCLES_KEY_ENV].strip() if "cycles" in wanted else None,
        tenant=tenant if "cycles" in wanted else "acme",
    )
