"""What every proposer offers the loop, and how an org's `proposer` settings become one."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from autoresearch_operator.core.interfaces import Proposer

if TYPE_CHECKING:
    from autoresearch_operator.proposers.openai_proposer import Backoff

PROPOSER_TYPES = ("openai", "mutate")
MAX_REPAIR_TURNS = 3  # each turn resends the whole conversation: more costs more than it saves


class ProposerConfigError(ValueError):
    """A `proposer` setting is missing or wrong; the message names it."""


# The resource's camelCase field -> the snake_case attribute.
_CAMEL_TO_SNAKE = {
    "type": "type",
    "model": "model",
    "baseURL": "base_url",
    "apiKeyEnv": "api_key_env",
    "temperature": "temperature",
    "maxTokens": "max_tokens",
    "timeoutSeconds": "timeout_seconds",
    "maxRetries": "max_retries",
    "repairTurns": "repair_turns",
    "seed": "seed",
}
# apiKeySecretRef: mounted as the apiKeyEnv variable in-cluster; pricing: read by the loop
_IGNORED = {"apiKeySecretRef", "api_key_secret_ref", "pricing"}


@dataclass(frozen=True)
class ProposerSettings:
    """An org's `proposer` block, with the same names as the ResearchOrg resource (snake_cased)."""

    type: str = "mutate"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_seconds: float = 120.0
    max_retries: int = 4
    repair_turns: int = 1  # an unusable reply is sent back with its problem this many times
    seed: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ProposerSettings:
        """From the resource's camelCase keys (snake_case keys are accepted too)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in _IGNORED:
                continue
            name = _CAMEL_TO_SNAKE.get(key, key)
            if name not in known:
                raise ProposerConfigError(f"unknown proposer setting {key!r}")
            if value is not None:
                values[name] = value
        return cls(**values).validated()

    @classmethod
    def coerce(cls, settings: ProposerSettings | Mapping[str, Any] | object) -> ProposerSettings:
        """Accept settings, a mapping, the spec's pydantic model, or an object with snake_case attributes."""
        if isinstance(settings, ProposerSettings):
            return settings.validated()
        if isinstance(settings, Mapping):
            return cls.from_mapping(settings)
        model_dump = getattr(settings, "model_dump", None)
        if callable(model_dump):  # the ResearchOrg spec's pydantic model: camelCase field names
            return cls.from_mapping(model_dump())
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(settings, f.name, None)
            if isinstance(value, enum.Enum):
                value = value.value
            if value is not None:
                values[f.name] = value
        return cls(**values).validated()

    def validated(self) -> ProposerSettings:
        if self.type not in PROPOSER_TYPES:
            raise ProposerConfigError(
                f"proposer.type is {self.type!r}; expected one of {', '.join(PROPOSER_TYPES)}"
            )
        if self.type == "openai" and not self.model:
            raise ProposerConfigError("proposer.model is required when proposer.type is openai")
        if self.timeout_seconds <= 0:
            raise ProposerConfigError("proposer.timeoutSeconds must be positive")
        if self.max_retries < 0:
            raise ProposerConfigError("proposer.maxRetries must be zero or more")
        if not 0 <= self.repair_turns <= MAX_REPAIR_TURNS:
            raise ProposerConfigError(
                f"proposer.repairTurns must be between 0 and {MAX_REPAIR_TURNS}"
            )
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ProposerConfigError("proposer.maxTokens must be positive")
        if not self.api_key_env:
            raise ProposerConfigError("proposer.apiKeyEnv must name an environment variable")
        return self


def make_proposer(
    settings: ProposerSettings | Mapping[str, Any] | object,
    *,
    env: Mapping[str, str] | None = None,
    backoff: Backoff | None = None,
) -> Proposer:
    """Build the proposer an org's settings ask for; fails loudly on a bad setting or missing key."""
    resolved = ProposerSettings.coerce(settings)
    if resolved.type == "mutate":
        from autoresearch_operator.proposers.mutate import MutateProposer

        return MutateProposer(seed=resolved.seed)

    environ = os.environ if env is None else env
    api_key = environ.get(resolved.api_key_env)
    if not api_key:
        raise ProposerConfigError(
            f"the environment variable {resolved.api_key_env} (proposer.apiKeyEnv) holds no API key"
        )
    # Imported here so orgs using the offline mutate proposer never load the openai client.
    from autoresearch_operator.proposers.openai_proposer import OpenAIProposer

    return OpenAIProposer(resolved, api_key=api_key, backoff=backoff)
