"""The ResearchContest CustomResourceDefinition, generated from contest_spec.ContestSpec.

`crds/researchcontest.yaml` is this module's output (`autoresearch crd --kind contest`), built
the way crd.py builds the ResearchOrg's: the spec from the same pydantic models that validate a
local contest.yaml, the status from contest_status.py's shape, described field by field.
"""

from __future__ import annotations

from typing import Any

from .contest_spec import CONTEST_KIND, ContestSpec
from .crd import _obj, _structural, _t, definition, generated, status_schema

PLURAL = "researchcontests"
SINGULAR = "researchcontest"
SHORT_NAMES = ["rcontest", "rcontests"]
PHASES = ["Pending", "Running", "Completed", "Failed"]


def _default_empty_objects(node: dict[str, Any]) -> None:
    """An optional object with properties defaults to {}, so that the API server fills in the
    defaults inside it (terms.trainer.image, meta.proposer.type, ...)."""
    for prop in (node.get("properties") or {}).values():
        if prop.get("type") == "object" and "properties" in prop and not prop.get("required"):
            prop["default"] = {}
        _default_empty_objects(prop)
    if "items" in node:
        _default_empty_objects(node["items"])


def spec_schema() -> dict[str, Any]:
    raw = ContestSpec.model_json_schema()
    schema = _structural(raw, raw.get("$defs", {}))
    _default_empty_objects(schema)
    schema["description"] = (
        "A contest: program.md files (entrants) that each run as a ResearchOrg under identical "
        "terms, round after round, ranked by their improvement with its confidence."
    )
    entrants = schema["properties"]["entrants"]
    entrants["x-kubernetes-list-type"] = "map"  # the API server refuses two entrants of one name
    entrants["x-kubernetes-list-map-keys"] = ["name"]
    entrants["items"]["description"] = (
        "One entrant: its name, its round-1 program.md, its proposer."
    )
    entrants["items"]["x-kubernetes-validations"] = [
        {"rule": "has(self.program) != has(self.programRef)",
         "message": "set exactly one of program and programRef for each entrant"},
        {"rule": "!has(self.proposer) || !has(self.proposer.type) || self.proposer.type != 'openai' || has(self.proposer.model)",
         "message": "an entrant's proposer.model is required when its proposer.type is 'openai'"},
    ]  # fmt: skip
    schema["x-kubernetes-validations"] = [
        {"rule": "!has(self.meta) || !has(self.meta.proposer) || !has(self.meta.proposer.type) || self.meta.proposer.type != 'openai' || has(self.meta.proposer.model)",
         "message": "spec.meta.proposer.model is required when spec.meta.proposer.type is 'openai'"},
    ]  # fmt: skip
    return schema


def _standing() -> dict[str, Any]:
    return _obj(
        "One entrant's result in the round.",
        entrant=_t("string", "The entrant's name."),
        org=_t("string", "Its ResearchOrg in this round (<contest>-r<round>-<entrant>)."),
        rank=_t("integer", "1 for the lowest best val_bpb; entrants without a result come last."),
        valBpb=_t("number", "Its best val_bpb: the mean over the best commit's measurement runs."),
        valBpbSd=_t("number", "Standard deviation of those runs."),
        runs=_t("integer", "How many runs valBpb is the mean of."),
        bestCommit=_t("string", "The git commit of its best train.py."),
        improvement=_t(
            "number",
            "The shared start's val_bpb (pooled over every entrant's baseline runs) minus its "
            "best's: positive is better than the start; exactly 0 for an entrant that kept "
            "nothing.",
        ),
        improvementLow=_t(
            "number",
            "Lower end of the improvement's (1 - alpha) t interval, from the noise pooled over "
            "the round; absent until the round has a noise estimate.",
        ),
        improvementHigh=_t("number", "Upper end of that interval."),
        keepRate=_t("number", "Kept candidates over candidates (the baseline is no candidate)."),
        kept=_t("integer", "Candidates kept."),
        experiments=_t("integer", "Experiments recorded, the baseline included."),
        crashed=_t("integer", "Experiments that crashed."),
        gpuHours=_t("number", "GPU-hours its org used, verification runs included."),
        verificationGpuHours=_t("number", "The part of gpuHours spent confirming and re-running."),
        llmTokens=_t("integer", "LLM tokens its proposer used."),
        cost=_t("number", "What those tokens cost in USD at the proposer's pricing (when set)."),
        gainPerGpuHour=_t("number", "improvement per GPU-hour."),
        done=_t("boolean", "Its org has spent its budget for the round."),
    )


def _round() -> dict[str, Any]:
    return _obj(
        "One round: its standings and where its program.md files came from.",
        round=_t("integer", "The round's number, from 1."),
        verdict=_t(
            "string",
            "Who leads, with the p-value against the runner-up, or which entrants are tied at "
            "the contest's alpha.",
        ),
        leader=_t("string", "The entrant separated from the runner-up at alpha, if any."),
        tied={
            "type": "array",
            "description": "The entrants not separated from the top (empty when there is a leader).",
            "items": {"type": "string"},
        },
        pValue=_t("number", "One-sided p-value of the top entrant against the runner-up."),
        startCommit=_t("string", "The train.py commit every entrant of the round starts from."),
        startValBpb=_t("number", "That commit's val_bpb over every entrant's baseline runs."),
        sigma=_t("number", "The noise (sigma of val_bpb between runs) pooled over the round."),
        programsCommit=_t("string", "The round's commit on the programs/<contest> branch."),
        standings={
            "type": "array",
            "description": "The entrants by rank.",
            "items": _standing(),
        },
        lineage={
            "type": "array",
            "description": "Which entrants' previous program.md each of this round's came from.",
            "items": _obj(
                "One entrant's program.md parents.",
                entrant=_t("string", "The entrant."),
                parents={
                    "type": "array",
                    "description": "Entrants of the previous round it was written from (none in round 1).",
                    "items": {"type": "string"},
                },
            ),
        },
        done=_t("boolean", "Every entrant has spent its budget."),
    )


def contest_status_schema() -> dict[str, Any]:
    conditions = status_schema()["properties"]["conditions"]
    conditions["description"] = "Standard conditions (Ready, Progressing)."
    return _obj(
        "What the operator observed; written by the operator only. Recomputed from the "
        "programs/<contest> branch and the entrants' journals.",
        phase=_t("string", "Pending, Running, Completed or Failed.", enum=PHASES),
        message=_t("string", "A human sentence on the current phase."),
        observedGeneration=_t("integer", "The spec generation this status reflects."),
        round=_t(
            "integer", "The round under way (or the last one, once Completed); 0 before round 1."
        ),
        rounds=_t("integer", "How many rounds the contest runs (spec.rounds)."),
        programsBranch=_t(
            "string",
            "The git branch holding one commit per round with every entrant's program.md, its "
            "parents and the previous round's standings (the lineage).",
        ),
        verdict=_t("string", "The current round's verdict."),
        leader=_t(
            "string",
            "The current round's leader, named only when separated from the runner-up at "
            "spec.alpha; otherwise 'tied: ' and the entrants not separated from the top.",
        ),
        entrants=_t("integer", "Entrants in the current round."),
        best=_t("number", "The current round's best val_bpb (the rank-1 entrant's)."),
        gpuHours=_t("number", "GPU-hours of every entrant in every round, verification included."),
        current=_round(),
        history={
            "type": "array",
            "description": "The finished rounds before the current one, oldest first.",
            "items": _round(),
        },
        conditions=conditions,
        kopf=status_schema()["properties"]["kopf"],
    )


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Round", "type": "integer", "jsonPath": ".status.round"},
    {
        "name": "Leader",
        "type": "string",
        "jsonPath": ".status.leader",
        "description": "The leader at spec.alpha, or the tied entrants",
    },
    {"name": "Entrants", "type": "integer", "jsonPath": ".status.entrants"},
    {
        "name": "Best",
        "type": "number",
        "jsonPath": ".status.best",
        "description": "The current round's best val_bpb",
    },
    {"name": "GPU-hours", "type": "number", "jsonPath": ".status.gpuHours"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> dict[str, Any]:
    return definition(
        kind=CONTEST_KIND,
        plural=PLURAL,
        singular=SINGULAR,
        short_names=SHORT_NAMES,
        description=(
            "A contest of program.md files: one ResearchOrg per entrant and round, all under the "
            "same terms (trainer, budget, keep policy, parallelism) and from the same start "
            "commit; between rounds a meta-proposer writes the next round's program.md files."
        ),
        spec=spec_schema(),
        status=contest_status_schema(),
        printer_columns=PRINTER_COLUMNS,
    )


def render() -> str:
    return generated("autoresearch crd --kind contest", "contest_spec.py", build_crd())
