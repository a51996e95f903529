"""`autoresearch compare --cluster` and `plot --cluster`: the orgs as their ResearchOrg status
shows them, read from the current KUBECONFIG.

The status holds the totals (counts, best, baseline, GPU seconds, LLM tokens) and the last
`RECENT_EXPERIMENTS` experiments, so the table is exact and the plot shows a recent window plus
the baseline and the best.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .core.records import ExperimentRecord, Outcome, TrainResult
from .report import OrgSummary

GROUP, VERSION, PLURAL = "autoresearch.dev", "v1alpha1", "researchorgs"


class ClusterReadError(RuntimeError):
    """The cluster could not be read; the message says what to fix."""


def load_orgs(namespace: str | None) -> list[dict[str, Any]]:
    """Every ResearchOrg in `namespace` (None: the kubeconfig context's; "*": all namespaces)."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    try:
        config.load_kube_config()
        _, context = config.list_kube_config_contexts()
        default_namespace = (context or {}).get("context", {}).get("namespace") or "default"
    except config.ConfigException:
        try:
            config.load_incluster_config()
        except config.ConfigException as err:
            raise ClusterReadError(f"no cluster credentials (set KUBECONFIG): {err}") from None
        default_namespace = "default"
    api = client.CustomObjectsApi()
    try:
        if namespace == "*":
            listed = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            listed = api.list_namespaced_custom_object(
                GROUP, VERSION, namespace or default_namespace, PLURAL
            )
    except ApiException as err:
        raise ClusterReadError(f"listing {PLURAL}.{GROUP}: {err.status} {err.reason}") from None
    except Exception as err:  # connection refused, TLS: urllib3 raises its own types
        raise ClusterReadError(f"listing {PLURAL}.{GROUP}: {err}") from None
    items: list[dict[str, Any]] = listed.get("items", [])  # type: ignore[attr-defined]
    return sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))


def org_label(org: dict[str, Any], all_namespaces: bool) -> str:
    meta = org["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if all_namespaces else meta["name"]


def summary_from_org(org: dict[str, Any], label: str) -> OrgSummary:
    """The comparison row of one org, from its status totals (exact, not the recent window)."""
    status = org.get("status") or {}
    counts = status.get("counts") or {}
    proposer = (org.get("spec") or {}).get("proposer") or {}
    name = proposer.get("type", "-")
    if proposer.get("model") and name == "openai":
        name = f"openai:{proposer['model']}"
    return OrgSummary(
        org=label,
        proposer=name,
        experiments=int(counts.get("total", 0)),
        kept=int(counts.get("kept", 0)),
        discarded=int(counts.get("discarded", 0)),
        crashed=int(counts.get("crashed", 0)),
        baseline=(status.get("baseline") or {}).get("valBpb"),
        best=(status.get("best") or {}).get("valBpb"),
        best_test=(status.get("best") or {}).get("testBpb"),
        gpu_seconds=float(status.get("gpuSeconds") or 0.0),
        llm_tokens=int(status.get("llmTokens") or 0),
        best_runs=(status.get("best") or {}).get("runs"),
        sigma=(status.get("noise") or {}).get("sigma"),
        sigma_runs=(status.get("noise") or {}).get("runs") or None,
        confirmed=int(counts.get("confirmed", 0)),
        verification_gpu_seconds=float(status.get("verificationGpuSeconds") or 0.0),
    )


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def records_from_status(status: dict[str, Any]) -> list[ExperimentRecord]:
    """The recent experiments of a status as records, with the baseline and the best added when
    they fall before the window, so the plot's running best starts where the org really was."""
    records = []
    for item in status.get("recentExperiments") or []:
        records.append(
            ExperimentRecord(
                experiment=int(item["experiment"]),
                description=item.get("description", ""),
                outcome=Outcome(item["outcome"]),
                commit=item.get("commit"),
                reason=item.get("reason"),
                detail=item.get("detail"),
                val_bpb=item.get("valBpb"),
                result=TrainResult(
                    status="crash" if item["outcome"] == "crash" else "ok",
                    val_bpb=item.get("valBpb"),
                    test_bpb=item.get("testBpb"),
                    training_seconds=item.get("trainingSeconds"),
                ),
                finished_at=_timestamp(item.get("finishedAt")),
            )
        )
    shown = {r.experiment for r in records}
    for key, what in (("baseline", "baseline"), ("best", "best so far")):
        point = status.get(key) or {}
        if point.get("experiment") is not None and point["experiment"] not in shown:
            shown.add(point["experiment"])
            records.append(
                ExperimentRecord(
                    experiment=int(point["experiment"]),
                    description=what,
                    outcome=Outcome.KEEP,
                    commit=point.get("commit"),
                    val_bpb=point.get("valBpb"),
                    result=TrainResult(
                        status="ok", val_bpb=point.get("valBpb"), test_bpb=point.get("testBpb")
                    ),
                )
            )
    return sorted(records, key=lambda r: r.experiment)


def plot_title(label: str, status: dict[str, Any]) -> str:
    total = (status.get("counts") or {}).get("total", 0)
    recent = len(status.get("recentExperiments") or [])
    best = (status.get("best") or {}).get("valBpb")
    window = f"last {recent} of {total} experiments" if recent < total else f"{total} experiments"
    best_text = f", best {best:.4f}" if best is not None else ""
    return f"{label} ({status.get('phase', 'Pending')}): {window}{best_text}"
