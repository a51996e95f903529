"""`autoresearch compare --cluster` and `plot --cluster`: the orgs as their ResearchOrg status
shows them, read from the current KUBECONFIG; with `--contest`, a ResearchContest's status and
the orgs it owns.

The status holds the totals (counts, best, baseline, GPU seconds, LLM tokens) and the last
`RECENT_EXPERIMENTS` experiments, so the table is exact and the plot shows a recent window plus
the baseline and the best.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .core.records import ExperimentRecord, Outcome, TrainResult
from .report import BestCurve, NothingToReport, OrgSummary, status_rounds

GROUP, VERSION, PLURAL = "autoresearch.dev", "v1alpha1", "researchorgs"
CONTEST_PLURAL = "researchcontests"
CONTEST_LABEL = f"{GROUP}/contest"


class ClusterReadError(RuntimeError):
    """The cluster could not be read; the message says what to fix."""


def _api() -> tuple[Any, str]:
    """A CustomObjectsApi and the namespace the kubeconfig context names (else "default")."""
    from kubernetes import client, config

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
    return client.CustomObjectsApi(), default_namespace


def load_orgs(namespace: str | None, contest: str | None = None) -> list[dict[str, Any]]:
    """Every ResearchOrg in `namespace` (None: the kubeconfig context's; "*": all namespaces),
    or only those a contest owns (its label)."""
    from kubernetes.client.rest import ApiException

    api, default_namespace = _api()
    selector = {"label_selector": f"{CONTEST_LABEL}={contest}"} if contest else {}
    try:
        if namespace == "*":
            listed = api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **selector)
        else:
            listed = api.list_namespaced_custom_object(
                GROUP, VERSION, namespace or default_namespace, PLURAL, **selector
            )
    except ApiException as err:
        raise ClusterReadError(f"listing {PLURAL}.{GROUP}: {err.status} {err.reason}") from None
    except Exception as err:  # connection refused, TLS: urllib3 raises its own types
        raise ClusterReadError(f"listing {PLURAL}.{GROUP}: {err}") from None
    items: list[dict[str, Any]] = listed.get("items", [])
    return sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))


def cluster_orgs(
    namespace: str | None, all_namespaces: bool, only: list[str] | None
) -> list[dict[str, Any]]:
    """The ResearchOrgs `compare --cluster` and `plot --cluster` show (NothingToReport: none)."""
    orgs = load_orgs("*" if all_namespaces else namespace)
    orgs = [o for o in orgs if not only or o["metadata"]["name"] in only]
    if not orgs:
        where = "any namespace" if all_namespaces else f"namespace {namespace or '(current)'}"
        raise NothingToReport(f"no ResearchOrgs in {where}")
    return orgs


def load_contest(name: str, namespace: str | None) -> dict[str, Any]:
    """The ResearchContest `name` in `namespace` (None: the kubeconfig context's)."""
    from kubernetes.client.rest import ApiException

    api, default_namespace = _api()
    where = f"{CONTEST_PLURAL}.{GROUP} {namespace or default_namespace}/{name}"
    try:
        body: dict[str, Any] = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace or default_namespace, CONTEST_PLURAL, name
        )
    except ApiException as err:
        raise ClusterReadError(f"reading {where}: {err.status} {err.reason}") from None
    except Exception as err:
        raise ClusterReadError(f"reading {where}: {err}") from None
    return body


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
        rejected=int(counts.get("rejected", 0)),
        llm_cost_usd=status.get("llmCostUSD"),
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


def plot_inputs(
    orgs: list[dict[str, Any]], all_namespaces: bool
) -> tuple[dict[str, list[ExperimentRecord]], dict[str, str]]:
    """What `plot --cluster` draws: each org's records from its status, and its panel title."""
    records, titles = {}, {}
    for org in orgs:
        label, status = org_label(org, all_namespaces), org.get("status") or {}
        records[label] = records_from_status(status)
        titles[label] = plot_title(label, status)
    return records, titles


def plot_title(label: str, status: dict[str, Any]) -> str:
    total = (status.get("counts") or {}).get("total", 0)
    recent = len(status.get("recentExperiments") or [])
    best = (status.get("best") or {}).get("valBpb")
    window = f"last {recent} of {total} experiments" if recent < total else f"{total} experiments"
    best_text = f", best {best:.4f}" if best is not None else ""
    return f"{label} ({status.get('phase', 'Pending')}): {window}{best_text}"


def contest_curves(status: dict[str, Any], orgs: list[dict[str, Any]]) -> list[BestCurve]:
    """Each entrant's running best in each round from its org's status. The status keeps GPU time
    only as the org's total, so an experiment's place on the GPU axis is estimated: the total
    shared evenly over the org's experiments (the curve says so: `estimated`)."""
    by_name = {o["metadata"]["name"]: o.get("status") or {} for o in orgs}
    curves = []
    for r in status_rounds(status):
        for s in r.get("standings") or []:
            org_status = by_name.get(s["org"])
            if not org_status:
                continue
            total = int((org_status.get("counts") or {}).get("total") or 0)
            hours = float(org_status.get("gpuSeconds") or 0.0) / 3600
            xs, ys, best = [], [], None
            for rec in records_from_status(org_status):
                if rec.outcome is Outcome.KEEP and rec.val_bpb is not None:
                    best = rec.val_bpb
                if best is not None and total:
                    xs.append(hours * (rec.experiment + 1) / total)
                    ys.append(best)
            final = (org_status.get("best") or {}).get("valBpb")
            if final is not None and xs:  # the best's mean over all its runs, at the total
                xs.append(hours)
                ys.append(final)
            curves.append(BestCurve(r["round"], s["entrant"], xs, ys, estimated=True))
    return curves
