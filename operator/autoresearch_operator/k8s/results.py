"""What a finished experiment Job means: pure functions over the Job and pod as the API returns
them (camelCase dicts), so every way a pod can end is unit-tested without a cluster.

The trusted harness writes the result JSON to the `evaluate` container's termination message;
that always wins. Without it the Job's conditions and the containers' states say what happened:
killed at activeDeadlineSeconds after training started is the candidate's timeout; anything
else (never scheduled, evicted, harness failure) is the infrastructure's fault.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..core.records import CrashReason, TrainResult

TRAIN, EVALUATE = "train", "evaluate"
LOG_TAIL_CHARS = 3000


def _true_conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conditions = (job.get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conditions if c.get("status") == "True"}


def job_finished(job: dict[str, Any]) -> bool:
    """Complete or Failed: the Job controller has stopped its pods and will start no more."""
    done = _true_conditions(job)
    return "Complete" in done or "Failed" in done


def job_succeeded(job: dict[str, Any]) -> bool:
    return "Complete" in _true_conditions(job)


def _join(*parts: str | None) -> str:
    return ": ".join(p for p in parts if p)


def job_failure(job: dict[str, Any]) -> str | None:
    """'Reason: message' of a failed Job, or None."""
    failed = _true_conditions(job).get("Failed")
    if failed is None:
        return None
    return _join(failed.get("reason"), failed.get("message")) or "Failed"


def newest_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)


def pods_settled(pods: list[dict[str, Any]]) -> bool:
    """The newest pod has stopped for good (Succeeded or Failed): what it says is final."""
    pod = newest_pod(pods)
    return pod is not None and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def container_status(pod: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if pod is None:
        return None
    status = pod.get("status") or {}
    for c in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        if c.get("name") == name:
            return dict(c)
    return None


def _terminated(c: dict[str, Any] | None) -> dict[str, Any] | None:
    return ((c or {}).get("state") or {}).get("terminated")


def _started(c: dict[str, Any] | None) -> bool:
    state = (c or {}).get("state") or {}
    return "running" in state or "terminated" in state


def parse_result(message: str | None) -> TrainResult | None:
    """The harness's result JSON from a termination message, or None if it is not one."""
    if not message:
        return None
    try:
        data = json.loads(message)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("status") not in ("ok", "crash"):
        return None
    return TrainResult.from_json(data)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def _describe(name: str, c: dict[str, Any] | None) -> str | None:
    """One phrase on how a container ended or why it is waiting."""
    state = (c or {}).get("state") or {}
    if "terminated" in state:
        t = state["terminated"]
        return f"container {name} exited with code {t.get('exitCode')} ({t.get('reason') or 'no reason'})"
    if "waiting" in state and state["waiting"].get("reason") not in (None, "PodInitializing"):
        w = state["waiting"]
        return f"container {name} never started ({_join(w.get('reason'), w.get('message'))})"
    return None


def _pod_problem(pod: dict[str, Any] | None) -> str | None:
    if pod is None:
        return "no pod was found for the Job"
    status = pod.get("status") or {}
    if status.get("reason"):  # Evicted, DeadlineExceeded, NodeLost, ...
        return f"pod {_join(status['reason'], status.get('message'))}"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") != "True":
            return f"pod never scheduled ({_join(cond.get('reason'), cond.get('message'))})"
    return None


def _tail(*parts: str | None) -> str:
    return "\n".join(p for p in parts if p)[-LOG_TAIL_CHARS:]


def result_from_job(
    job: dict[str, Any], pods: list[dict[str, Any]], log_tail: str = ""
) -> TrainResult:
    """The TrainResult of a finished experiment Job (see the module docstring for the order)."""
    pod = newest_pod(pods)
    train, evaluate = container_status(pod, TRAIN), container_status(pod, EVALUATE)
    evaluated, trained = _terminated(evaluate), _terminated(train)
    result = parse_result((evaluated or {}).get("message"))
    if result is not None:
        return result
    train_result = parse_result((trained or {}).get("message"))
    # A termination message that is not a result is the log tail (FallbackToLogsOnError).
    messages = [
        t.get("message")
        for t in (trained, evaluated)
        if t and parse_result(t.get("message")) is None
    ]
    tail = _tail(*messages, log_tail) or (train_result.log_tail if train_result else "")
    pod_start = ((pod or {}).get("status") or {}).get("startTime")
    ends = [str(t["finishedAt"]) for t in (trained, evaluated) if t and t.get("finishedAt")]
    total = _seconds_between(pod_start, max(ends)) if ends else None
    failure = job_failure(job) or ""

    def crash(reason: CrashReason, detail: str, **extra: Any) -> TrainResult:
        return TrainResult(
            status="crash", reason=reason.value, detail=detail, log_tail=tail,
            total_seconds=total, **extra,
        )  # fmt: skip

    for name, t in ((TRAIN, trained), (EVALUATE, evaluated)):
        if t and t.get("reason") == "OOMKilled":
            return crash(CrashReason.EXCEPTION, f"container {name} ran out of memory (OOMKilled)")
    if failure.startswith("DeadlineExceeded") and _started(train):
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        return crash(
            CrashReason.TIMEOUT,
            f"killed at the Job's activeDeadlineSeconds ({deadline} s: the harness's window of "
            "start-up + time budget + export, its evaluation, and the pod's start-up margin)",
            training_seconds=train_result.training_seconds if train_result else None,
        )
    if train_result is not None and train_result.status == "crash":
        return train_result  # the train phase recorded its own crash; evaluate did not run
    problems = [
        p
        for p in (
            _pod_problem(pod),
            _describe(EVALUATE, evaluate) if evaluated else None,
            _describe(TRAIN, train) if not evaluated else None,
            f"Job failed ({failure})" if failure else None,
        )
        if p
    ]
    detail = "; ".join(problems) or "the Job finished without a result"
    return crash(CrashReason.INFRASTRUCTURE, f"no result from the harness: {detail}")
