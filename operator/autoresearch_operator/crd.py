"""The ResearchOrg CustomResourceDefinition, generated from the same models that validate org.yaml.

`crds/researchorg.yaml` is this module's output (`autoresearch crd > crds/researchorg.yaml`); a
test proves the committed file is current, so the local loader and the API server never disagree.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .spec import API_GROUP, API_VERSION, KIND, OPERATOR_DEFAULT, OrgSpec

PLURAL = "researchorgs"
SINGULAR = "researchorg"
SHORT_NAMES = ["rorg", "rorgs"]

_DROP = {"title", "additionalProperties", "$defs"}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema node into a Kubernetes structural schema node."""
    node = copy.deepcopy(node)
    description = node.pop("description", None)
    chart_value = node.pop(OPERATOR_DEFAULT, None)
    if chart_value is not None:  # left absent by the API server: the operator fills it in
        fallback = node.pop("default", None)
        description = (
            f"{description or ''} Unset: the operator's default (chart value {chart_value})"
            + (f", else {fallback}." if fallback is not None else ", else none.")
        )
    if "$ref" in node:
        node = {**copy.deepcopy(defs[node.pop("$ref").split("/")[-1]]), **node}
    if "anyOf" in node:  # Optional[X]: the API server's "absent" is our None
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        assert len(options) == 1, f"unsupported union: {options}"
        default = node.pop("default", None)
        node = {**_structural(options[0], defs), **node}
        if default is not None:
            node["default"] = default
    elif node.get("default", 0) is None:
        node.pop("default")
    description = description or node.get("description")
    out: dict[str, Any] = {k: v for k, v in node.items() if k not in _DROP and k != "description"}
    if description:
        out["description"] = " ".join(description.split())
    if out.get("type") == "object":
        props = node.get("properties")
        if props:
            out["properties"] = {k: _structural(v, defs) for k, v in props.items()}
        elif (
            node.get("additionalProperties") not in (None, False, True)
            and node["additionalProperties"].get("type") == "string"
        ):
            out["additionalProperties"] = {"type": "string"}
        else:
            out.pop("properties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "array":
        out["items"] = _structural(node.get("items", {"type": "object"}), defs)
        if out["items"].get("type") == "object" and "properties" not in out["items"]:
            out["items"]["x-kubernetes-preserve-unknown-fields"] = True
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if not isinstance(out.get(bound, True), bool):  # OpenAPI v3.0's boolean form
            out[inclusive] = out.pop(bound)
            out[bound] = True
    return out


def spec_schema() -> dict[str, Any]:
    raw = OrgSpec.model_json_schema()
    schema = _structural(raw, raw.get("$defs", {}))
    for prop in schema["properties"].values():
        if prop.get("type") == "object" and "properties" in prop and not prop.get("required"):
            prop["default"] = {}  # so the API server fills in the nested defaults
    schema["description"] = (
        "What a research org does: its program.md, where and how long each experiment trains, "
        "who proposes candidates, and how much it may spend."
    )
    schema["x-kubernetes-validations"] = [
        {"rule": "has(self.program) != has(self.programRef)",
         "message": "set exactly one of spec.program and spec.programRef"},
        {"rule": "!has(self.budget) || !has(self.budget.maxLLMCostUSD) || (has(self.proposer) && has(self.proposer.pricing))",
         "message": "spec.budget.maxLLMCostUSD needs spec.proposer.pricing (USD per million tokens)"},
    ]  # fmt: skip
    return schema


def _obj(doc: str, **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "description": doc, "properties": properties}


def _t(kind: str, doc: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": doc, **extra}


def _result(description: str) -> dict[str, Any]:
    return _obj(
        description,
        valBpb=_t(
            "number",
            "Validation bits per byte (lower is better): the mean over the commit's measurement "
            "runs (noise runs, confirmation runs and re-runs; the screening run only when there "
            "is no other).",
        ),
        valBpbSd=_t("number", "Standard deviation of val_bpb over those runs."),
        runs=_t("integer", "How many runs valBpb is the mean of."),
        testBpb=_t(
            "number",
            "Bits per byte on the held-out test split, which no keep decision reads: the mean "
            "over the same runs, for those the harness scored on it.",
        ),
        commit=_t("string", "The git commit of the candidate train.py."),
        experiment=_t("integer", "Experiment number (0 is the unmodified baseline)."),
    )


def status_schema() -> dict[str, Any]:
    experiment = _obj(
        "One experiment's outcome.",
        experiment=_t("integer", "Experiment number."),
        commit=_t("string", "Candidate commit."),
        outcome=_t("string", "keep, discard or crash.", enum=["keep", "discard", "crash"]),
        reason=_t(
            "string",
            "For crashes: exception, nan, timeout, rejected-by-harness, invalid-proposal, infrastructure.",
        ),
        detail=_t(
            "string",
            "One sentence on why it was kept, discarded (the keep policy's test) or crashed.",
        ),
        valBpb=_t(
            "number",
            "val_bpb of this candidate: the mean of its confirmation runs, else its screening run.",
        ),
        testBpb=_t(
            "number", "test_bpb of its screening run on the held-out split, when it was scored."
        ),
        runs=_t("integer", "Runs trained for this experiment (champion re-runs included)."),
        pValue=_t(
            "number",
            "p-value of the confirmation test (one-sided: improvement > minImprovement).",
        ),
        **{"description": _t("string", "The hypothesis (commit message).")},
        trainingSeconds=_t(
            "number", "Wall seconds the training child ran, as the harness measured them."
        ),
        finishedAt=_t("string", "When it was recorded (RFC 3339).", format="date-time"),
    )
    return _obj(
        "What the operator observed; written by the operator only.",
        phase=_t(
            "string",
            "Pending, Preparing, Running, Paused, Completed or Failed.",
            enum=["Pending", "Preparing", "Running", "Paused", "Completed", "Failed"],
        ),  # fmt: skip
        message=_t("string", "A human sentence on the current phase."),
        observedGeneration=_t("integer", "The spec generation this status reflects."),
        branch=_t("string", "The org's git branch."),
        baseline=_result("The unmodified train.py's result (experiment 0)."),
        best=_result("The best kept result so far; the branch head."),
        counts=_obj(
            "Experiments by outcome.",
            total=_t(
                "integer",
                "Experiments recorded (candidates that trained or crashed; rejected proposals "
                "are counted apart).",
            ),
            kept=_t("integer", "Kept (baseline included)."),
            discarded=_t("integer", "Discarded."),
            crashed=_t("integer", "Crashed while training or evaluating."),
            rejected=_t(
                "integer",
                "Proposals rejected before training (no usable edit, a cut-off reply, a "
                "forbidden import, ...): no experiment and no GPU time; budget.maxProposals "
                "caps them.",
            ),
            running=_t("integer", "Experiments with a run training now."),
            confirming=_t(
                "integer", "Promising experiments whose confirmation runs are under way."
            ),
            confirmed=_t("integer", "Experiments that went past screening to confirmation."),
            runs=_t("integer", "Training runs recorded (screening, confirmation, re-runs)."),
        ),
        noise=_obj(
            "The org's noise floor: how much val_bpb varies between runs of the same code.",
            sigma=_t(
                "number",
                "Pooled standard deviation of val_bpb between runs of the same commit (the "
                "baseline's noise runs, champion re-runs, confirmation runs).",
            ),
            runs=_t("integer", "Runs sigma is pooled from."),
            df=_t("integer", "Its degrees of freedom (runs minus commits)."),
        ),
        verificationGpuSeconds=_t(
            "number",
            "The part of gpuSeconds spent on confirmation runs and champion re-runs.",
        ),
        gpuSeconds=_t(
            "number",
            "GPU seconds charged to budget.maxGPUHours: the harness's wall time of every run "
            "(crashes and timeouts included), summed.",
        ),
        gpuHours=_t("number", "gpuSeconds in hours, for the printer column."),
        llmTokens=_t("integer", "LLM tokens used by the proposer."),
        llmCostUSD=_t(
            "number", "What the proposer cost in USD at spec.proposer.pricing (absent without)."
        ),
        lastExperiment=experiment,
        recentExperiments={
            "type": "array",
            "description": "The most recent experiments, newest last (bounded).",
            "maxItems": 50,
            "items": experiment,
        },  # fmt: skip
        conditions={
            "type": "array",
            "description": "Standard conditions (Ready, Progressing, RepoPushed).",
            "items": _obj(
                "A condition.",
                type=_t("string", "Condition type."),
                status=_t("string", "True, False or Unknown."),
                reason=_t("string", "CamelCase reason."),
                message=_t("string", "Human message."),
                lastTransitionTime=_t("string", "When status last changed.", format="date-time"),
            ),
        },
        kopf={
            "type": "object",
            "description": "Operator framework bookkeeping.",
            "x-kubernetes-preserve-unknown-fields": True,
        },  # fmt: skip
    )


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Best",
        "type": "number",
        "jsonPath": ".status.best.valBpb",
        "description": "Best val_bpb",
    },
    {
        "name": "Best-Test",
        "type": "number",
        "jsonPath": ".status.best.testBpb",
        "description": "The best's test_bpb on the held-out split",
    },
    {"name": "Baseline", "type": "number", "jsonPath": ".status.baseline.valBpb"},
    {
        "name": "Sigma",
        "type": "number",
        "jsonPath": ".status.noise.sigma",
        "description": "The org's noise floor (sigma of val_bpb between runs)",
        "priority": 1,
    },
    {"name": "Experiments", "type": "integer", "jsonPath": ".status.counts.total"},
    {"name": "Kept", "type": "integer", "jsonPath": ".status.counts.kept"},
    {"name": "Running", "type": "integer", "jsonPath": ".status.counts.running"},
    {"name": "GPU-hours", "type": "number", "jsonPath": ".status.gpuHours"},
    {
        "name": "Cost",
        "type": "number",
        "jsonPath": ".status.llmCostUSD",
        "description": "What the proposer cost in USD (spec.proposer.pricing)",
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def definition(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    printer_columns: list[dict[str, Any]],
) -> dict[str, Any]:
    """One namespaced CustomResourceDefinition of our API group: a single served and stored
    version with a status subresource, in the `autoresearch` category (`kubectl get autoresearch`)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["autoresearch"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def generated(command: str, source: str, crd: dict[str, Any]) -> str:
    """The CRD as the YAML committed under crds/, headed by how to regenerate it."""
    header = (
        f"# Generated by `{command}` from operator/autoresearch_operator/{source}; do not edit.\n"
    )
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def build_crd() -> dict[str, Any]:
    return definition(
        kind=KIND,
        plural=PLURAL,
        singular=SINGULAR,
        short_names=SHORT_NAMES,
        description=(
            "A research org: an LLM researcher (or the offline mutate proposer) that improves "
            "train.py one experiment at a time, each trained as a GPU Job for a fixed budget, "
            "keeping a change only if val_bpb improves."
        ),
        spec=spec_schema(),
        status=status_schema(),
        printer_columns=PRINTER_COLUMNS,
    )


def render() -> str:
    return generated("autoresearch crd", "spec.py", build_crd())
