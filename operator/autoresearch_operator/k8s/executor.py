"""KubernetesExecutor: each run of an experiment is one Job, judged by the harness in its pod.

Idempotent across operator restarts: the Job's name is a function of (org, experiment, run), so
the loop asking again for a run that was never journaled adopts the Job already there (409) and
waits for it, instead of training that run twice.
"""

from __future__ import annotations

import time
from typing import Any

from ..core.interfaces import ExperimentJob, Progress, ProgressCallback
from ..core.records import CrashReason, TrainResult
from ..executor import parse_progress
from ..spec import Org
from . import builders
from .jobs import JobClient
from .results import TRAIN, container_status, newest_pod, result_from_job

LOG_TAIL_LINES = 40


class KubernetesExecutor:
    """Implements the loop's Executor protocol on a cluster; safe to call from many threads."""

    def __init__(self, jobs: JobClient, org: Org, org_body: dict[str, Any], *, data_claim: str):
        self.jobs, self.org, self.org_body, self.data_claim = jobs, org, org_body, data_claim
        self.slots = org.spec.parallelism  # the cluster's scheduler (or Kueue) queues the rest

    def cancel(self) -> None:
        """Nothing to stop: running Jobs finish and the next operator start adopts them."""

    def run(self, job: ExperimentJob, on_progress: ProgressCallback | None = None) -> TrainResult:
        body = builders.experiment_job(
            self.org,
            self.org_body,
            job.experiment,
            job.commit,
            data_claim=self.data_claim,
            run=job.run,
            seed=job.seed,
            test_if_val_below=job.test_if_val_below,
        )
        name = body["metadata"]["name"]
        created, fresh = self.jobs.create_or_adopt_job(body)
        if (
            not fresh
            and created["metadata"].get("labels", {}).get(builders.LABEL_COMMIT)
            != (job.commit[:40])
        ):  # a leftover from a history that was since reset: never adopt another candidate
            self.jobs.log.warning("Job %s ran another commit; replacing it", name)
            self.jobs.delete_job(name)
            created, _ = self.jobs.create_or_adopt_job(body)
        self.jobs.create_configmap(builders.candidate_configmap(created, job.train_py))

        started = time.monotonic()
        progress = Progress(job.experiment, 0.0, run=job.run)
        logs_readable = [on_progress is not None]

        def on_poll(_current: dict[str, Any]) -> None:
            if on_progress is None:
                return
            progress.wall_seconds = time.monotonic() - started
            if logs_readable[0]:
                line = self._last_train_line(name)
                logs_readable[0] = line is not None
                if line:
                    step, loss = parse_progress(line)
                    progress.line = line
                    progress.step = step if step is not None else progress.step
                    progress.loss = loss if loss is not None else progress.loss
            on_progress(progress)

        final = self.jobs.wait_finished(
            name, on_poll if on_progress is not None else None, uid=created["metadata"].get("uid")
        )
        if final is None:
            return TrainResult(
                status="crash",
                reason=CrashReason.INFRASTRUCTURE.value,
                detail=f"Job {name} was deleted before it finished",
                total_seconds=time.monotonic() - started,
            )
        pods = self.jobs.finished_pods(final)
        result = result_from_job(final, pods)
        if result.status == "crash" and not result.log_tail:
            result.log_tail = self._log_tail(pods)
        return result

    def _last_train_line(self, job_name: str) -> str | None:
        """The train container's latest log line ('' before it starts; None: logs unreadable)."""
        pod = newest_pod(self.jobs.job_pods(job_name))
        state = (container_status(pod, TRAIN) or {}).get("state") or {}
        if pod is None or "running" not in state:
            return ""
        tail = self.jobs.log_tail(pod["metadata"]["name"], TRAIN, lines=5)
        if tail is None:
            return None
        lines = [ln for ln in tail.splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def _log_tail(self, pods: list[dict[str, Any]]) -> str:
        pod = newest_pod(pods)
        if pod is None:
            return ""
        parts = []
        for container in (TRAIN, "evaluate"):
            text = self.jobs.log_tail(pod["metadata"]["name"], container, LOG_TAIL_LINES)
            if text:
                parts.append(f"--- {container}\n{text}")
        return "\n".join(parts)[-3000:]
