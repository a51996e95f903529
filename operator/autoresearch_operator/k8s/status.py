"""A ResearchOrg's status, computed from the journal: pure functions, no Kubernetes.

The operator never keeps counts of its own; it rebuilds the status from the org's ledger
(core/ledger.py: the journaled runs and decided experiments) and the experiments running now,
every time, so the status, the journal, `compare` and the metrics cannot drift apart. A None
value means "absent": the merge patch that writes it removes the key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..core.ledger import Estimate, Ledger, Noise
from ..core.records import ExperimentRecord, RunRecord

PENDING, PREPARING, RUNNING, PAUSED, COMPLETED, FAILED = (
    "Pending",
    "Preparing",
    "Running",
    "Paused",
    "Completed",
    "Failed",
)
PHASES = (PENDING, PREPARING, RUNNING, PAUSED, COMPLETED, FAILED)
RECENT_EXPERIMENTS = 20
DETAIL_CHARS = 300  # keeps twenty experiments well inside an object's size limit
DESCRIPTION_CHARS = 200


def rfc3339(when: float | datetime) -> str:
    moment = when if isinstance(when, datetime) else datetime.fromtimestamp(when, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clip(text: str | None, limit: int) -> str | None:
    """One line of at most `limit` characters (status fields, Event messages)."""
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def experiment_summary(rec: ExperimentRecord) -> dict[str, Any]:
    """One experiment as status.lastExperiment / recentExperiments shows it (no nulls)."""
    summary: dict[str, Any] = {
        "experiment": rec.experiment,
        "commit": rec.commit,
        "outcome": rec.outcome.value,
        "reason": rec.reason,
        "detail": clip(rec.detail, DETAIL_CHARS),
        "valBpb": rec.val_bpb,
        "testBpb": rec.result.test_bpb if rec.result else None,
        "runs": len(rec.runs) or None,
        "pValue": rec.p_value,
        "description": clip(rec.description, DESCRIPTION_CHARS),
        "trainingSeconds": rec.result.training_seconds if rec.result else None,
        "finishedAt": rfc3339(rec.finished_at) if rec.finished_at is not None else None,
    }
    return {k: v for k, v in summary.items() if v is not None}


def _point(rec: ExperimentRecord | None, est: Estimate | None) -> dict[str, Any] | None:
    """The best or the baseline: its mean over its runs, with their count and spread."""
    if rec is None:
        return None
    point = {
        "valBpb": est.mean if est else rec.val_bpb,
        "valBpbSd": est.sd if est else None,
        "runs": est.n if est else None,
        "testBpb": est.test_mean if est else None,
        "commit": rec.commit,
        "experiment": rec.experiment,
    }
    return {k: v for k, v in point.items() if v is not None}


def noise_status(noise: Noise) -> dict[str, Any]:
    """status.noise: sigma once some commit has two measurement runs."""
    out: dict[str, Any] = {"runs": noise.runs, "df": noise.df}
    if noise.sigma is not None:
        out["sigma"] = round(noise.sigma, 6)
    return out


def counts(ledger: Ledger, running: Collection[int], confirming: int = 0) -> dict[str, int]:
    """The ledger's counts, and what is under way: experiments with a run training, and
    promising ones whose confirmation has begun."""
    return {**ledger.counts, "running": len(running), "confirming": confirming}


def conditions_for(
    phase: str,
    message: str,
    previous: Iterable[dict[str, Any]],
    now: datetime,
    push_error: str | None | bool = False,
) -> list[dict[str, Any]]:
    """Ready (not Failed) and Progressing (Preparing or Running), plus RepoPushed once a push to
    spec.repo.url was tried (`push_error`: None for success, the error text for a failure,
    False for no push yet). Transition times are kept from `previous` while a condition's status
    does not change; other conditions in `previous` (an earlier RepoPushed) carry over."""
    wanted = {
        "Ready": ("True" if phase != FAILED else "False", phase, message),
        "Progressing": ("True" if phase in (PREPARING, RUNNING) else "False", phase, message),
    }
    if push_error is not False:
        wanted["RepoPushed"] = (
            ("True", "Pushed", "the branch and tried refs are on spec.repo.url")
            if push_error is None
            else ("False", "PushFailed", f"{push_error}; results are kept locally and pushed later")
        )
    before = {c.get("type"): c for c in previous}
    out = []
    for kind, (status, reason, text) in wanted.items():
        old = before.get(kind) or {}
        kept = old.get("status") == status and old.get("lastTransitionTime")
        out.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": text,
                "lastTransitionTime": kept or rfc3339(now),
            }
        )
    out += [c for kind, c in before.items() if kind not in wanted]
    return out


def status_from_state(
    *,
    phase: str,
    message: str,
    records: Sequence[ExperimentRecord],
    running: Collection[int] = (),
    open_runs: Sequence[RunRecord] = (),
    confirming: int = 0,
    branch: str | None = None,
    observed_generation: int | None = None,
    previous_conditions: Iterable[dict[str, Any]] = (),
    now: datetime | None = None,
    push_error: str | None | bool = False,
) -> dict[str, Any]:
    """The whole status of an org: its decided experiments, the runs journaled for experiments
    still open, the experiments running now and how many of those are being confirmed."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    now = now or datetime.now(UTC)
    ledger = Ledger(records, open_runs)
    used, verification = ledger.gpu_seconds, ledger.verification_gpu_seconds
    last = max(records, key=lambda r: (r.finished_at or 0.0, r.experiment), default=None)
    return {
        "phase": phase,
        "message": message,
        "observedGeneration": observed_generation,
        "branch": branch,
        "baseline": _point(ledger.baseline_record, ledger.baseline),
        "best": _point(ledger.best_record, ledger.best),
        "noise": noise_status(ledger.noise),
        "counts": counts(ledger, running, confirming),
        "gpuSeconds": round(used, 3),
        "gpuHours": round(used / 3600, 4),
        "verificationGpuSeconds": round(verification, 3),
        "llmTokens": ledger.llm_tokens,
        "llmCostUSD": None if ledger.llm_cost_usd is None else round(ledger.llm_cost_usd, 6),
        "lastExperiment": experiment_summary(last) if last else None,
        "recentExperiments": [experiment_summary(r) for r in list(records)[-RECENT_EXPERIMENTS:]],
        "conditions": conditions_for(phase, message, previous_conditions, now, push_error),
    }


def failed_status(message: str, previous_conditions: Iterable[dict[str, Any]] = ()) -> dict:
    """The status patch for a body that does not validate: the rest of the status is kept."""
    return {
        "phase": FAILED,
        "message": message,
        "conditions": conditions_for(FAILED, message, previous_conditions, datetime.now(UTC)),
    }


def next_phase(
    *, paused: bool, exhausted: str | None, data_ready: bool, recorded: int
) -> tuple[str, str]:
    """What a valid org does next, and the sentence saying so: stopping for a pause or a spent
    budget wins over preparing data, and preparing comes before running."""
    if paused:
        return PAUSED, f"spec.paused is true; {recorded} experiments recorded"
    if exhausted is not None:
        return COMPLETED, f"budget spent: {exhausted}"
    if not data_ready:
        return PREPARING, "preparing the data claim (prepare Job)"
    return RUNNING, "running the research loop"
