"""The meta-proposers a contest can use between rounds: `evolve` (offline, core/meta.py) and
`openai`, which asks a chat model to rewrite the trailing entrants' program.md files.

The LLM one shares the org proposer's client, retries and token accounting; a reply it gets
wrong (no block for an entrant, a front-matter that does not parse, the API failing) costs no
round: those programs are evolved instead, and the commit message says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from autoresearch_operator.core.meta import (
    EvolveMetaProposer,
    MetaContext,
    MetaProposer,
    NextPrograms,
    evolve,
    meta_messages,
    parse_meta_reply,
)
from autoresearch_operator.core.records import ProposalRejected
from autoresearch_operator.proposers.base import ProposerConfigError, ProposerSettings

log = logging.getLogger(__name__)


class OpenAIMetaProposer:
    def __init__(self, settings: ProposerSettings, api_key: str):
        from autoresearch_operator.proposers.openai_proposer import OpenAIProposer

        self._llm = OpenAIProposer(settings, api_key=api_key)
        self.name = f"openai:{settings.model}"

    def next_programs(self, ctx: MetaContext) -> NextPrograms:
        try:
            reply, finish_reason, usage = self._llm.complete(meta_messages(ctx))
        except ProposalRejected as failed:
            log.warning("meta-proposer %s failed: %s; evolving instead", self.name, failed.reason)
            fallback = evolve(ctx)
            notes = {
                e: f"{self.name} failed ({failed.reason}); evolved instead: {n}"
                for e, n in fallback.notes.items()
            }
            return NextPrograms(fallback.programs, fallback.parents, notes, failed.usage)
        if finish_reason == "length":
            log.warning("meta-proposer %s: reply cut off at maxTokens", self.name)
        return parse_meta_reply(reply, ctx, usage, self.name)


def make_meta_proposer(spec: Any, env: Mapping[str, str] | None = None) -> MetaProposer:
    """The meta-proposer a contest's `meta.proposer` block asks for (MetaProposerSpec)."""
    if spec.type == "evolve":
        return EvolveMetaProposer(seed=spec.seed)
    fields = spec.model_dump()
    fields["type"] = "openai"
    settings = ProposerSettings.coerce(fields)
    environ = os.environ if env is None else env
    key = environ.get(settings.api_key_env)
    if not key:
        raise ProposerConfigError(
            f"the environment variable {settings.api_key_env} (meta.proposer.apiKeyEnv) holds no API key"
        )
    return OpenAIMetaProposer(settings, key)
