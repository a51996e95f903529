"""Reading an experiment's result from its finished Job and pod, for every way a pod can end."""

from __future__ import annotations

import json

from autoresearch_operator.k8s.results import job_finished, parse_result, result_from_job

OK = {"status": "ok", "val_bpb": 1.4321, "training_seconds": 300.2, "peak_vram_mb": 40000.0}
NAN = {"status": "crash", "reason": "nan", "detail": "loss went NaN at step 12", "log_tail": "..."}


def job(condition: str | None = "Complete", reason: str | None = None, message: str = "") -> dict:
    conditions = []
    if condition:
        conditions.append(
            {"type": condition, "status": "True", "reason": reason, "message": message}
        )
    return {
        "metadata": {"name": "explorer-exp-00007-run-0"},
        "spec": {"activeDeadlineSeconds": 420},
        "status": {"conditions": conditions},
    }


def terminated(exit_code: int = 0, message: str = "", reason: str | None = None) -> dict:
    return {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "message": message,
            "startedAt": "2025-01-01T00:00:10Z",
            "finishedAt": "2025-01-01T00:06:00Z",
        }
    }


def pod(train: dict | None = None, evaluate: dict | None = None, **status: object) -> dict:
    pod_status: dict = {"phase": "Failed", "startTime": "2025-01-01T00:00:00Z", **status}
    if train is not None:
        pod_status["initContainerStatuses"] = [{"name": "train", "state": train}]
    if evaluate is not None:
        pod_status["containerStatuses"] = [{"name": "evaluate", "state": evaluate}]
    return {
        "metadata": {
            "name": "explorer-exp-00007-run-0-abcde",
            "creationTimestamp": "2025-01-01T00:00:00Z",
        },
        "status": pod_status,
    }


def test_the_evaluate_containers_termination_message_is_the_result():
    p = pod(terminated(), terminated(message=json.dumps(OK)))
    result = result_from_job(job(), [p])
    assert result.status == "ok" and result.val_bpb == 1.4321 and result.training_seconds == 300.2


def test_a_crash_reported_by_the_harness_is_kept_as_it_is():
    p = pod(terminated(), terminated(message=json.dumps(NAN)))
    result = result_from_job(job(), [p])
    assert (result.status, result.reason, result.detail) == ("crash", "nan", NAN["detail"])


def test_killed_at_the_deadline_after_training_started_is_a_timeout():
    p = pod(terminated(137, reason="Error"), {"waiting": {"reason": "PodInitializing"}})
    failed = job("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
    result = result_from_job(failed, [p])
    assert result.reason == "timeout" and "420 s" in result.detail


def test_a_pod_that_never_got_a_node_is_the_infrastructures_fault_not_a_timeout():
    never = pod(
        {"waiting": {"reason": "PodInitializing"}},
        {"waiting": {"reason": "PodInitializing"}},
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    result = result_from_job(job("Failed", "DeadlineExceeded"), [never])
    assert result.reason == "infrastructure"
    assert "Insufficient nvidia.com/gpu" in result.detail


def test_a_crash_recorded_by_the_train_phase_is_used_when_evaluate_never_reported():
    p = pod(terminated(message=json.dumps(NAN)), None)
    result = result_from_job(job("Failed", "BackoffLimitExceeded"), [p])
    assert result.reason == "nan"


def test_an_evicted_pod_is_an_infrastructure_crash_naming_the_eviction():
    p = pod(
        {"running": {"startedAt": "2025-01-01T00:00:10Z"}},
        None,
        reason="Evicted",
        message="The node was low on resource: memory.",
    )
    result = result_from_job(job("Failed", "BackoffLimitExceeded"), [p])
    assert result.reason == "infrastructure"
    assert "Evicted: The node was low on resource: memory." in result.detail


def test_a_harness_failure_without_result_keeps_the_log_tail_from_the_fallback_message():
    p = pod(terminated(), terminated(1, message="Traceback ...\nFileNotFoundError: /data/val"))
    result = result_from_job(job("Failed", "BackoffLimitExceeded"), [p])
    assert result.reason == "infrastructure"
    assert "container evaluate exited with code 1 (Error)" in result.detail
    assert "FileNotFoundError: /data/val" in result.log_tail
    assert result.total_seconds == 360.0


def test_out_of_memory_is_the_candidates_exception():
    p = pod(terminated(137, reason="OOMKilled"), None)
    result = result_from_job(job("Failed", "BackoffLimitExceeded"), [p])
    assert result.reason == "exception" and "OOMKilled" in result.detail


def test_no_pod_at_all_is_an_infrastructure_crash():
    result = result_from_job(job("Failed", "BackoffLimitExceeded", "pod creation forbidden"), [])
    assert result.reason == "infrastructure"
    assert "no pod was found" in result.detail and "pod creation forbidden" in result.detail


def test_the_newest_pod_counts_when_there_are_several():
    old = pod(terminated(), terminated(message=json.dumps(NAN)))
    new = pod(terminated(), terminated(message=json.dumps(OK)))
    new["metadata"]["creationTimestamp"] = "2025-01-01T01:00:00Z"
    assert result_from_job(job(), [new, old]).status == "ok"


def test_job_finished_only_on_a_true_complete_or_failed_condition():
    assert job_finished(job("Complete")) and job_finished(job("Failed", "DeadlineExceeded"))
    assert not job_finished(job(None))
    suspended = job("Suspended")
    assert not job_finished(suspended)
    pending_failure = job("Failed")
    pending_failure["status"]["conditions"][0]["status"] = "False"
    assert not job_finished(pending_failure)


def test_parse_result_rejects_what_is_not_a_result():
    assert parse_result("") is None
    assert parse_result("step 100 loss 2.3") is None
    assert parse_result('{"val_bpb": 1.0}') is None  # no status: not the harness's result
    assert parse_result(json.dumps(OK)).val_bpb == 1.4321  # type: ignore[union-attr]
