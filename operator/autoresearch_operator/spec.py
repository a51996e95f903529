"""The ResearchOrg spec: one schema for `org.yaml` locally and the custom resource on a cluster.

Field names are the custom resource's (camelCase). Loading validates everything up front and
fails with an error that names the bad field and what is allowed there.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .core.program import ProgramError, parse_program

API_GROUP = "autoresearch.dev"
API_VERSION = "v1alpha1"
KIND = "ResearchOrg"
PROGRAM_FILE_ANNOTATION = f"{API_GROUP}/program-file"  # local runs: where programRef's text lives
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The harness's fixed allowances (trainer-image/harness.py owns them; a test keeps these equal).
EXPORT_SECONDS = {"full": 20, "tiny": 10}  # after start-up + budget: save the weights
EVALUATION_SECONDS = {"full": 600, "tiny": 120}  # the harness's own scoring, after the child
STARTUP_SECONDS = {"full": 120, "tiny": 10}  # trainer.startupSeconds when unset


# A field the operator fills from its own configuration (AUTORESEARCH_ORG_DEFAULTS, i.e. the
# chart's values) when an org omits it: the CRD gives it no default of its own, so the API server
# leaves it absent and the operator can tell "omitted" from "set". Value: the chart value.
OPERATOR_DEFAULT = "x-operator-default"
# Taken whole from the org when it sets them: an org's own `resources` is not mixed with the
# default's (a request of its own beside a smaller default limit would be refused).
WHOLE_FIELDS = {"resources", "nodeSelector", "tolerations", "pricing", "apiKeySecretRef"}
NOT_DEFAULTABLE = {"program", "programRef", "startCommit"}


def operator_default(chart_value: str) -> dict[str, Any]:
    return {OPERATOR_DEFAULT: chart_value}


class OrgSpecError(ValueError):
    """An org.yaml or ResearchOrg body that does not validate; the message names each bad field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class SecretKeyRef(_Model):
    name: str = Field(description="Name of the Secret in the org's namespace.")
    key: str = Field(default="apiKey", description="Key inside the Secret.")


class ConfigMapKeyRef(_Model):
    name: str = Field(description="Name of the ConfigMap in the org's namespace.")
    key: str = Field(default="program.md", description="Key holding the program.md text.")


class TrainerSpec(_Model):
    image: str = Field(
        default="ghcr.io/autoresearch-operator/trainer:0.1.0",
        description="Trainer image whose entrypoint is the trusted harness.",
        json_schema_extra=operator_default("images.trainer"),
    )
    timeBudgetSeconds: int = Field(
        default=300,
        ge=1,
        le=86400,
        description="Training time per experiment, in seconds.",
        json_schema_extra=operator_default("trainer.timeBudgetSeconds"),
    )
    startupSeconds: int | None = Field(
        default=None,
        ge=0,
        le=3600,
        description=(
            "Start-up allowance, in seconds, for imports, torch.compile and warm-up before the "
            "time budget. Part of the identical window every candidate gets: the harness starts "
            "the training child, lets it run startupSeconds + timeBudgetSeconds, then a fixed "
            f"export allowance ({EXPORT_SECONDS['full']} s full, {EXPORT_SECONDS['tiny']} s "
            "tiny), and kills it there; a run that has not exported by then is a timeout crash. "
            "Nothing in train.py can move this deadline. Default by profile: "
            f"full {STARTUP_SECONDS['full']}, tiny {STARTUP_SECONDS['tiny']}."
        ),
    )
    profile: Literal["full", "tiny"] = Field(
        default="full",
        description="'full' trains the reference-size model on a GPU; 'tiny' a small CPU model for tests.",
    )
    resources: dict[str, Any] = Field(
        default_factory=lambda: {"limits": {"nvidia.com/gpu": 1}},
        description=(
            "Container resources of each trainer container (requests and limits), taken whole "
            "when set. Unset: the operator's default, which bounds CPU, memory, ephemeral "
            "storage and the GPUs (chart values trainer.resources, trainer.gpuResourceName, "
            "trainer.gpusPerExperiment). A container without an ephemeral-storage request or "
            "limit gets a limit of scratchSize."
        ),
    )
    scratchSize: str = Field(
        default="20Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
        description=(
            "sizeLimit of each scratch volume of an experiment pod (/work, where the weights "
            "are exported, and the /tmp of training and of evaluation): a candidate cannot fill "
            "the node's disk."
        ),
    )
    nodeSelector: dict[str, str] = Field(
        default_factory=dict, description="Trainer pod nodeSelector."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Trainer pod tolerations."
    )
    priorityClassName: str | None = Field(default=None, description="Trainer pod priority class.")
    queueName: str | None = Field(
        default=None,
        description="Kueue LocalQueue for the trainer Jobs (label kueue.x-k8s.io/queue-name).",
        json_schema_extra=operator_default("trainer.queueName"),
    )

    @property
    def startup_seconds(self) -> int:
        if self.startupSeconds is not None:
            return self.startupSeconds
        return STARTUP_SECONDS[self.profile]

    @property
    def window_seconds(self) -> int:
        """Wall seconds the harness lets the training child run before it kills it."""
        return self.startup_seconds + self.timeBudgetSeconds + EXPORT_SECONDS[self.profile]

    @property
    def harness_deadline_seconds(self) -> int:
        """The harness's whole wall time at most: the window, then the evaluation's limit."""
        return self.window_seconds + EVALUATION_SECONDS[self.profile]


class Pricing(_Model):
    """USD per million tokens, as the provider's price list gives them."""

    inputPerMillion: float = Field(
        default=0.0, ge=0, description="USD per million input (prompt) tokens."
    )
    outputPerMillion: float = Field(
        default=0.0,
        ge=0,
        description="USD per million output (completion) tokens, reasoning included.",
    )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.inputPerMillion + completion_tokens * self.outputPerMillion
        ) / 1e6


class ProposerSpec(_Model):
    type: Literal["openai", "mutate"] = Field(
        default="mutate",
        description="'openai' asks an LLM; 'mutate' perturbs numeric knobs offline.",
    )
    model: str | None = Field(
        default=None,
        description="Model name for the openai proposer.",
        json_schema_extra=operator_default("llm.model"),
    )
    baseURL: str | None = Field(
        default=None,
        description=(
            "OpenAI-compatible endpoint; the client's default when empty. The operator sends "
            "the API key only to a host its configuration allows (chart value "
            "security.secretHosts, and llm.baseURL's host) or that the Secret's annotation "
            "autoresearch.dev/allowed-hosts lists."
        ),
        json_schema_extra=operator_default("llm.baseURL"),
    )
    apiKeyEnv: str = Field(
        default="OPENAI_API_KEY",
        description="Environment variable holding the API key (local runs).",
    )
    apiKeySecretRef: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding the API key (cluster runs); read by the operator only.",
    )
    temperature: float = Field(default=0.7, ge=0, le=2, description="Sampling temperature.")
    maxTokens: int = Field(default=8192, ge=1, description="Completion token cap per proposal.")
    timeoutSeconds: float = Field(default=180, gt=0, description="Timeout of one LLM request.")
    maxRetries: int = Field(default=5, ge=0, le=20, description="Retries on 429, 5xx and timeouts.")
    repairTurns: int = Field(
        default=1,
        ge=0,
        le=3,
        description=(
            "How often a reply that cannot be used (no edit that applies, a cut-off or "
            "incomplete file, a bad import) is sent back to the model with the reason, in the "
            "same conversation, for a corrected edit. Each turn's tokens are counted; 0 turns "
            "the first unusable reply straight into a rejected proposal."
        ),
    )
    seed: int = Field(default=0, description="Seed of the mutate proposer.")
    pricing: Pricing | None = Field(
        default=None,
        description=(
            "What the endpoint charges, in USD per million tokens: turns tokens into cost per "
            "experiment, per org (status, compare, /metrics) and lets budget.maxLLMCostUSD stop "
            "the org."
        ),
    )

    @model_validator(mode="after")
    def _openai_needs_model(self) -> ProposerSpec:
        if self.type == "openai" and not self.model:
            raise ValueError("proposer.model is required when proposer.type is 'openai'")
        return self


class BudgetSpec(_Model):
    maxExperiments: int = Field(
        default=20,
        ge=1,
        le=100000,
        description="Experiments to run, baseline included.",
        json_schema_extra=operator_default("budget.maxExperiments"),
    )
    maxGPUHours: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Stop after this many GPU-hours. Each experiment is charged the harness's own "
            "measurement of its whole run (start-up, training, export and evaluation), crashes "
            "and timeouts included."
        ),
        json_schema_extra=operator_default("budget.maxGPUHours"),
    )
    maxLLMTokens: int | None = Field(
        default=None,
        gt=0,
        description="Stop after this many LLM tokens.",
        json_schema_extra=operator_default("budget.maxLLMTokens"),
    )
    maxLLMCostUSD: float | None = Field(
        default=None,
        gt=0,
        description="Stop once the proposer has cost this many USD (needs proposer.pricing).",
    )
    maxProposals: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Proposals to ask for at most, rejected ones included (a rejected proposal is not an "
            "experiment: it trains nothing and does not count against maxExperiments). Unset: "
            "3 x maxExperiments, so that a model that only sends unusable replies stops."
        ),
    )

    @property
    def proposal_cap(self) -> int:
        return self.maxProposals if self.maxProposals is not None else 3 * self.maxExperiments


class KeepPolicy(_Model):
    """How a keep is decided: screen one run, confirm the promising ones (README, "How a keep is
    decided")."""

    minImprovement: float = Field(
        default=0.0,
        ge=0,
        description=(
            "The smallest improvement of val_bpb over the best (its mean over its runs) that "
            "counts; a keep must beat the best by more than this, significantly."
        ),
    )
    noiseRuns: int = Field(
        default=3,
        ge=1,
        le=20,
        description=(
            "Runs of the unmodified baseline, each with its own harness seed, that measure the "
            "org's noise floor (sigma of val_bpb between runs of the same code). 1 turns the "
            "measurement off: sigma then comes only from later confirmations."
        ),
    )
    confirmRuns: int = Field(
        default=2,
        ge=0,
        le=10,
        description=(
            "More runs (fresh seeds) of a promising candidate, each paired with a re-run of the "
            "best beside it; the candidate is kept only if it beats those re-runs at alpha. "
            "0 keeps on the screening run alone (the one-run rule)."
        ),
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description=(
            "Significance level of the one-sided test that a confirmed candidate improves on "
            "the best by more than minImprovement."
        ),
    )
    screenSigmas: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description=(
            "A candidate is promising when its screening run beats the best by more than "
            "max(minImprovement, screenSigmas x sigma); anything else is discarded at once."
        ),
    )
    screen: bool = Field(
        default=True,
        description=(
            "false confirms every candidate that trains, promising or not (no cheap discard): "
            "costlier, for orgs that must not miss a small gain."
        ),
    )


class RepoCredentialsRef(SecretKeyRef):
    key: str = Field(
        default="token", description="Key holding the HTTPS token or password, or the SSH key."
    )


class RepoSpec(_Model):
    url: str | None = Field(
        default=None,
        description=(
            "Remote to push the org branch and tried refs to after every decision "
            "(https://host/path.git, ssh://git@host/path.git or git@host:path.git)."
        ),
    )
    credentialsSecretRef: RepoCredentialsRef | None = Field(
        default=None,
        description=(
            "Secret in the org's namespace whose key holds the push credential, read by the "
            "operator before every push. Either an HTTPS token or password, for an http(s) URL: "
            "git gets it from a credential helper, never in the URL, a command line or a message; "
            "the user name is the URL's (https://alice@host/...), else 'x-access-token'. Or an "
            "unencrypted SSH private key (text starting with '-----BEGIN'), for an SSH URL: used "
            "with IdentitiesOnly and StrictHostKeyChecking=accept-new (the host key is trusted on "
            "first use and remembered). A missing Secret or key fails the push (condition "
            "RepoPushed, Event PushFailed), never the org: results stay in the operator's "
            "repository and the next push carries them. Local runs (autoresearch run) read the "
            "credential from $AUTORESEARCH_REPO_CREDENTIALS instead."
        ),
    )
    branch: str | None = Field(default=None, description="Branch name; default autoresearch/<org>.")


class OrgSpec(_Model):
    program: str | None = Field(default=None, description="program.md: the agent's instructions.")
    programRef: ConfigMapKeyRef | None = Field(
        default=None, description="program.md from a ConfigMap key."
    )
    trainer: TrainerSpec = Field(
        default_factory=TrainerSpec,
        description="How each experiment trains: image, time budget, size profile and pod placement.",
    )
    proposer: ProposerSpec = Field(
        default_factory=ProposerSpec,
        description="Who proposes the next train.py: an LLM (openai) or the offline knob mutator.",
    )
    parallelism: int = Field(default=1, ge=1, le=64, description="Experiments running at once.")
    budget: BudgetSpec = Field(
        default_factory=BudgetSpec,
        description="When the org stops: whichever of its limits is reached first.",
    )
    keepPolicy: KeepPolicy = Field(
        default_factory=KeepPolicy, description="When a candidate counts as better than the best."
    )
    repo: RepoSpec = Field(
        default_factory=RepoSpec, description="Where the org's git history is pushed (optional)."
    )
    paused: bool = Field(default=False, description="Stop scheduling new experiments.")
    startCommit: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{40}$",
        description=(
            "The commit (full hex) the org branch starts from, in the operator's repository; "
            "default the baseline train.py. A contest sets it so that every entrant of a round "
            "starts from the same commit. Read when the branch is created; changing it later "
            "has no effect."
        ),
    )

    @model_validator(mode="after")
    def _one_program(self) -> OrgSpec:
        if (self.program is None) == (self.programRef is None):
            raise ValueError("set exactly one of spec.program and spec.programRef")
        if self.budget.maxLLMCostUSD is not None and self.proposer.pricing is None:
            raise ValueError(
                "spec.budget.maxLLMCostUSD needs spec.proposer.pricing (USD per million tokens)"
            )
        return self


class Org(_Model):
    name: str
    spec: OrgSpec
    program_text: str = ""  # resolved program.md

    @field_validator("name")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError(
                f"{v!r} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
            )
        return v

    @property
    def branch(self) -> str:
        return self.spec.repo.branch or f"autoresearch/{self.name}"


def format_errors(
    err: ValidationError, where: str, kind: str = KIND, root: type[BaseModel] | None = None
) -> str:
    """One line per bad field: its dotted path and what is allowed there."""
    lines = [f"{where}: invalid {kind}"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] not in ("extra_forbidden", "missing", "value_error"):
            msg += f" (got {e['input']!r})"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_fields(e["loc"][:-1], root or Org)
            msg = f"unknown field; allowed here: {', '.join(allowed)}"
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


def _allowed_fields(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    model = root
    for part in loc:
        if isinstance(part, int):  # a list index: the model stays the list's item type
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        candidates = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        nested = [a for a in candidates if issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return sorted(model.model_fields)


def resource_name(body: Any, kind: str, where: str, error: type[OrgSpecError]) -> str:
    """The name of a body that is a `kind` of our API (apiVersion and kind may be left out
    locally); anything else raises `error` naming the field."""
    if not isinstance(body, dict):
        raise error(f"{where}: expected a mapping, got {type(body).__name__}")
    if body.get("kind", kind) != kind:
        raise error(f"{where}: kind: expected {kind!r}, got {body.get('kind')!r}")
    api_version = body.get("apiVersion", f"{API_GROUP}/{API_VERSION}")
    if api_version != f"{API_GROUP}/{API_VERSION}":
        raise error(
            f"{where}: apiVersion: expected '{API_GROUP}/{API_VERSION}', got {api_version!r}"
        )
    name = (body.get("metadata") or {}).get("name")
    if not name:
        raise error(f"{where}: metadata.name: required")
    return str(name)


def with_defaults(spec: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """`spec` with `defaults` filled in where it omits a field (nested objects field by field,
    WHOLE_FIELDS as a whole)."""
    out = copy.deepcopy(dict(defaults))
    for key, value in spec.items():
        default = out.get(key)
        if isinstance(value, Mapping) and isinstance(default, Mapping) and key not in WHOLE_FIELDS:
            out[key] = with_defaults(value, default)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_org_defaults(defaults: Mapping[str, Any]) -> None:
    """OrgSpecError naming the bad field when `defaults` is not a valid partial spec."""
    forbidden = sorted(NOT_DEFAULTABLE & set(defaults))
    if forbidden:
        raise OrgSpecError(f"{', '.join(forbidden)}: an org's own; no default may set it")
    try:
        OrgSpec.model_validate(with_defaults({"program": "-"}, defaults))
    except ValidationError as err:
        raise OrgSpecError(
            format_errors(err, "defaults", "partial ResearchOrg spec", OrgSpec)
        ) from None


def org_from_resource(
    body: dict[str, Any],
    base_dir: Path | None = None,
    where: str = "org",
    defaults: Mapping[str, Any] | None = None,
) -> Org:
    """Build an Org from a ResearchOrg body (apiVersion/kind/metadata/spec); `defaults` (the
    operator's AUTORESEARCH_ORG_DEFAULTS) fill in the fields the spec omits."""
    name = resource_name(body, KIND, where, OrgSpecError)
    spec = body.get("spec") or {}
    if defaults:
        spec = with_defaults(spec, defaults)
    try:
        org = Org.model_validate({"name": name, "spec": spec})
    except ValidationError as err:
        raise OrgSpecError(format_errors(err, where)) from None
    program_file = ((body.get("metadata") or {}).get("annotations") or {}).get(
        PROGRAM_FILE_ANNOTATION
    )
    program = _resolve_program(org.spec, base_dir, program_file, where)
    check_program(
        program, "spec.program" if org.spec.program is not None else "spec.programRef", where
    )
    return org.model_copy(update={"program_text": program})


def check_program(text: str, field: str, where: str) -> None:
    """A program.md whose front-matter does not parse fails like any other bad field."""
    try:
        parse_program(text)
    except ProgramError as err:
        raise OrgSpecError(f"{where}: invalid {KIND}\n  {field}: {err}") from None


def _resolve_program(
    spec: OrgSpec, base_dir: Path | None, program_file: str | None, where: str
) -> str:
    """Inline program, or locally the file a programRef stands for (the cluster reads the ConfigMap).

    Locally the file is the annotation `autoresearch.dev/program-file` (relative to the YAML file)
    when set, else the ConfigMap key as a file name beside the YAML file.
    """
    if spec.program is not None:
        return spec.program
    assert spec.programRef is not None
    if base_dir is None:
        return ""  # resolved by the operator from the ConfigMap
    path = base_dir / (program_file or spec.programRef.key)
    if not path.is_file():
        how = (
            f"annotation {PROGRAM_FILE_ANNOTATION}"
            if program_file
            else f"key {spec.programRef.key!r}"
        )
        raise OrgSpecError(
            f"{where}: spec.programRef: locally the {how} must name a file beside the YAML file, "
            f"and {path} does not exist"
        )
    return path.read_text()


def load_orgs(path: Path) -> list[Org]:
    """Load every ResearchOrg document in a YAML file (other kinds, e.g. ConfigMaps, are skipped)."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as err:
        raise OrgSpecError(f"{path}: not valid YAML: {err}") from None
    orgs = [
        org_from_resource(d, path.parent, where=str(path))
        for d in docs
        if not (isinstance(d, dict) and d.get("kind") not in (None, KIND))
    ]
    if not orgs:
        raise OrgSpecError(f"{path}: no ResearchOrg document found")
    names = [o.name for o in orgs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OrgSpecError(f"{path}: metadata.name must be unique; repeated: {', '.join(dupes)}")
    return orgs
