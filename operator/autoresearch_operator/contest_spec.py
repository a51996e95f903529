"""The ResearchContest spec: program.md against program.md under identical terms.

One schema for `contest.yaml` locally and the custom resource on a cluster, like spec.py for
orgs. A contest owns one ResearchOrg per entrant and round; `org_body` builds it from the shared
terms and the entrant's own two fields (its program.md and its proposer), so every entrant trains
with the same trainer, budget, keep policy and parallelism by construction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .spec import (
    API_GROUP,
    API_VERSION,
    DNS_LABEL,
    KIND,
    PROGRAM_FILE_ANNOTATION,
    BudgetSpec,
    ConfigMapKeyRef,
    KeepPolicy,
    OrgSpec,
    OrgSpecError,
    ProposerSpec,
    TrainerSpec,
    _Model,
    format_errors,
    resource_name,
    with_defaults,
)

CONTEST_KIND = "ResearchContest"
CONTEST_LABEL = f"{API_GROUP}/contest"
ROUND_LABEL = f"{API_GROUP}/round"
ENTRANT_LABEL = f"{API_GROUP}/entrant"
TERMS_ANNOTATION = f"{API_GROUP}/contest-terms"  # sha256 of the org spec the contest set
MAX_ORG_NAME = 63


class EntrantSpec(_Model):
    name: str = Field(
        description=(
            "The entrant's name, a DNS label; its org in round R is <contest>-r<R>-<name>. "
            "The name stays across rounds while meta-research rewrites its program.md."
        )
    )
    program: str | None = Field(
        default=None, description="The entrant's program.md for round 1 (inline)."
    )
    programRef: ConfigMapKeyRef | None = Field(
        default=None, description="The entrant's program.md for round 1, from a ConfigMap key."
    )
    proposer: ProposerSpec = Field(
        default_factory=ProposerSpec,
        description="Who proposes the entrant's candidates: an LLM (openai) or mutate.",
    )

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a DNS-1123 label")
        return v

    @model_validator(mode="after")
    def _one_program(self) -> EntrantSpec:
        if (self.program is None) == (self.programRef is None):
            raise ValueError("set exactly one of program and programRef")
        return self


class TermsSpec(_Model):
    """What every entrant gets alike; an org owned by the contest cannot change it."""

    trainer: TrainerSpec = Field(
        default_factory=TrainerSpec,
        description="The trainer of every entrant's experiments: image, time budget, profile, placement.",
    )
    budget: BudgetSpec = Field(
        default_factory=BudgetSpec,
        description="Each entrant's budget per round (experiments, GPU-hours, LLM tokens).",
    )
    keepPolicy: KeepPolicy = Field(
        default_factory=KeepPolicy, description="The keep rule every entrant is judged by."
    )
    parallelism: int = Field(default=1, ge=1, le=64, description="Runs at once per entrant.")


class MetaProposerSpec(ProposerSpec):
    type: Literal["evolve", "openai"] = Field(  # type: ignore[assignment]
        default="evolve",
        description=(
            "'evolve' (offline): keep the top entrants' program.md, mutate and recombine the "
            "front-matter of the others from the leaders'. 'openai': an LLM rewrites them from "
            "the standings and what each entrant's experiments did."
        ),
    )


class MetaSpec(_Model):
    proposer: MetaProposerSpec = Field(
        default_factory=MetaProposerSpec,
        description="Who writes the next round's program.md files.",
    )
    survivors: int = Field(
        default=1,
        ge=0,
        le=64,
        description=(
            "How many of the top-ranked entrants keep their program.md unchanged into the next "
            "round; the meta-proposer rewrites the others."
        ),
    )


class ContestSpec(_Model):
    entrants: list[EntrantSpec] = Field(
        min_length=2, max_length=16, description="The program.md files that compete."
    )
    terms: TermsSpec = Field(
        default_factory=TermsSpec, description="Identical for every entrant, by construction."
    )
    rounds: int = Field(default=1, ge=1, le=20, description="How many rounds to run.")
    startFrom: Literal["baseline", "previousBest"] = Field(
        default="baseline",
        description=(
            "Where round 2 and later start: 'baseline' (the unmodified train.py, every round) or "
            "'previousBest' (the best commit of the previous round's leader, else its rank-1 "
            "entrant). Round 1 starts from the baseline."
        ),
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description=(
            "A leader is named only when its best beats the runner-up's at this significance "
            "level (one-sided t-test on the best commits' runs); otherwise they are tied."
        ),
    )
    meta: MetaSpec = Field(
        default_factory=MetaSpec, description="How the next round's program.md files are written."
    )

    @model_validator(mode="after")
    def _unique_entrants(self) -> ContestSpec:
        names = [e.name for e in self.entrants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"entrant names must be unique; repeated: {', '.join(dupes)}")
        return self


class Contest(_Model):
    name: str
    spec: ContestSpec

    @model_validator(mode="after")
    def _names_fit(self) -> Contest:
        if not DNS_LABEL.match(self.name):
            raise ValueError(f"metadata.name {self.name!r} is not a DNS-1123 label")
        longest = max(len(e.name) for e in self.spec.entrants)
        if len(org_name(self.name, self.spec.rounds, "x" * longest)) > MAX_ORG_NAME:
            raise ValueError(
                f"metadata.name and the entrant names are too long: org names "
                f"<contest>-r<round>-<entrant> must fit in {MAX_ORG_NAME} characters"
            )
        return self


class ContestSpecError(OrgSpecError):
    """A contest.yaml or ResearchContest body that does not validate."""


def org_name(contest: str, round: int, entrant: str) -> str:
    return f"{contest}-r{round}-{entrant}"


def contest_from_resource(
    body: dict[str, Any], where: str = "contest", defaults: Mapping[str, Any] | None = None
) -> Contest:
    """`defaults` (the operator's AUTORESEARCH_ORG_DEFAULTS) fill in what the terms and each
    entrant's proposer omit, as they would for an org of its own."""
    name = resource_name(body, CONTEST_KIND, where, ContestSpecError)
    spec = dict(body.get("spec") or {})
    if defaults:
        terms = {k: v for k, v in defaults.items() if k in TermsSpec.model_fields}
        spec["terms"] = with_defaults(spec.get("terms") or {}, terms)
        if isinstance(spec.get("entrants"), list) and "proposer" in defaults:
            spec["entrants"] = [
                {**e, "proposer": with_defaults(e.get("proposer") or {}, defaults["proposer"])}
                if isinstance(e, dict)
                else e
                for e in spec["entrants"]
            ]
    try:
        return Contest.model_validate({"name": name, "spec": spec})
    except ValidationError as err:
        raise ContestSpecError(format_errors(err, where, CONTEST_KIND, Contest)) from None


def load_contest(path: Path) -> tuple[Contest, dict[str, str]]:
    """The ResearchContest in a YAML file, and each entrant's round-1 program.md text.

    Locally an entrant's programRef is a file: the annotation `autoresearch.dev/program-file`
    on the contest maps entrant names to files (`{"a": "a/program.md"}` as JSON), else the
    ConfigMap key as a file name in a folder named after the ConfigMap, beside the YAML file.
    """
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise ContestSpecError(f"{path}: not valid YAML: {err}") from None
    bodies = [d for d in docs if isinstance(d, dict) and d.get("kind") == CONTEST_KIND]
    if len(bodies) != 1:
        raise ContestSpecError(f"{path}: expected one {CONTEST_KIND} document, found {len(bodies)}")
    contest = contest_from_resource(bodies[0], where=str(path))
    annotation = ((bodies[0].get("metadata") or {}).get("annotations") or {}).get(
        PROGRAM_FILE_ANNOTATION
    )
    try:
        files = json.loads(annotation) if annotation else {}
    except json.JSONDecodeError as err:
        raise ContestSpecError(
            f"{path}: metadata.annotations.{PROGRAM_FILE_ANNOTATION}: not JSON: {err}"
        ) from None
    programs = {}
    for e in contest.spec.entrants:
        if e.program is not None:
            programs[e.name] = e.program
            continue
        assert e.programRef is not None
        file = path.parent / (files.get(e.name) or f"{e.programRef.name}/{e.programRef.key}")
        if not file.is_file():
            raise ContestSpecError(
                f"{path}: spec.entrants[{e.name}].programRef: locally {file} must exist "
                f"(or map the entrant to a file in the {PROGRAM_FILE_ANNOTATION} annotation)"
            )
        programs[e.name] = file.read_text()
    return contest, programs


# -- the orgs a contest owns --------------------------------------------------------------------


def org_spec(contest: Contest, entrant: str, program: str, start_commit: str) -> dict[str, Any]:
    """The spec of an entrant's org: the shared terms, its program.md and proposer, the start."""
    e = next(x for x in contest.spec.entrants if x.name == entrant)
    terms = contest.spec.terms
    spec = OrgSpec(
        program=program,
        trainer=terms.trainer,
        proposer=e.proposer,
        parallelism=terms.parallelism,
        budget=terms.budget,
        keepPolicy=terms.keepPolicy,
        startCommit=start_commit,
    )
    return canonical_spec(spec.model_dump(mode="json", exclude_none=True))


def canonical_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """An org spec with every default filled in, so that one the API server defaulted compares
    equal to the one the contest wrote."""
    try:
        return OrgSpec.model_validate(spec).model_dump(mode="json", exclude_none=True)
    except ValidationError:
        return spec  # an invalid spec differs from the terms anyway


def terms_hash(spec: dict[str, Any]) -> str:
    text = json.dumps(canonical_spec(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def drifted_fields(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """The dotted paths where an org's spec departs from the contest's (empty: it does not)."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        elif a != b:
            out.append(f"spec.{path}")

    walk(canonical_spec(expected), canonical_spec(actual), "")
    return out


def org_body(
    contest: Contest, namespace: str | None, round: int, entrant: str, program: str, start: str
) -> dict[str, Any]:
    """The ResearchOrg a contest creates for an entrant in a round (owner references are the
    cluster adapter's, which knows the contest's uid)."""
    spec = org_spec(contest, entrant, program, start)
    metadata: dict[str, Any] = {
        "name": org_name(contest.name, round, entrant),
        "labels": {CONTEST_LABEL: contest.name, ROUND_LABEL: str(round), ENTRANT_LABEL: entrant},
        "annotations": {TERMS_ANNOTATION: terms_hash(spec)},
    }
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": metadata,
            "spec": spec}  # fmt: skip
