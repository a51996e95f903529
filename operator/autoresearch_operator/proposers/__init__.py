"""Proposers: where the next candidate train.py comes from.

`make_proposer(settings)` builds one from an org's `proposer` block: `mutate` (offline random
knob changes, the control group) or `openai` (any OpenAI-compatible chat endpoint, imported
from `autoresearch_operator.proposers.openai_proposer` on demand).
"""

from autoresearch_operator.proposers.base import (
    PROPOSER_TYPES,
    Proposer,
    ProposerConfigError,
    ProposerSettings,
    make_proposer,
)
from autoresearch_operator.proposers.mutate import MutateProposer, mutate_source
from autoresearch_operator.proposers.prompt import build_messages

__all__ = [
    "PROPOSER_TYPES",
    "MutateProposer",
    "Proposer",
    "ProposerConfigError",
    "ProposerSettings",
    "build_messages",
    "make_proposer",
    "mutate_source",
]
