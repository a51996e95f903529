"""One org's daemon against a fake API: the real ResearchLoop, git repo, journal and mutate
proposer; Jobs that "train" instantly with a val_bpb derived from the candidate's train.py."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from fake_kube import FakeKube, terminated

from autoresearch_operator.journal import Journal
from autoresearch_operator.k8s import daemon
from autoresearch_operator.k8s.config import OperatorConfig
from autoresearch_operator.k8s.daemon import OrgRunner, Runtime
from autoresearch_operator.metrics import OperatorMetrics

BODY = {
    "apiVersion": "autoresearch.dev/v1alpha1",
    "kind": "ResearchOrg",
    "metadata": {"name": "explorer", "namespace": "research", "uid": "org-uid", "generation": 1},
    "spec": {
        "program": "make it better",
        "trainer": {"timeBudgetSeconds": 30, "profile": "tiny"},
        "proposer": {"type": "mutate", "seed": 7},
        "budget": {"maxExperiments": 4},
    },
}


def val_bpb_of(train_py: str) -> float:
    return 1.5 - int(hashlib.sha256(train_py.encode()).hexdigest()[:4], 16) / 65536 / 10


def instant_cluster(hold: threading.Event | None = None, hold_job: str = ""):
    """Prepare Jobs succeed; experiment Jobs report a val_bpb once their ConfigMap exists.
    `hold_job` stays running until `hold` is set."""

    def finish(job: dict, configmaps: dict):
        name = job["metadata"]["name"]
        if name.endswith("-prepare"):
            return "Complete", {"prepare": terminated()}
        if name == hold_job and hold is not None and not hold.is_set():
            return None
        cm = configmaps.get(f"{name}-train-py")
        if cm is None:
            return None
        result = {"status": "ok", "val_bpb": val_bpb_of(cm["data"]["train.py"]),
                  "training_seconds": 30.0}  # fmt: skip
        return "Complete", {"train": terminated(), "evaluate": terminated(json.dumps(result))}

    return finish


class Harness:
    """Runs an OrgRunner in a thread, as kopf runs a sync daemon."""

    def __init__(self, fake: FakeKube, tmp_path: Path, body: dict, **config: object):
        options: dict = {
            "state_dir": tmp_path / "state", "repo_dir": tmp_path / "repos",
            "data_sources": ("/corpus/tinyshakespeare.txt",), "poll_seconds": 0.02,
            "status_interval_seconds": 0.05, **config,
        }  # fmt: skip
        settings = OperatorConfig(**options)
        self.runtime = Runtime(settings, fake.api_client(), OperatorMetrics())
        self.fake, self.body = fake, body
        self.events: list[tuple[str, str, str]] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> Harness:
        runner = OrgRunner(
            self.runtime, self.body, stopped=self.stop.is_set, wait=self.stop.wait,
            post_event=lambda *event: self.events.append(event), log=logging.getLogger("test"),
        )  # fmt: skip
        self.stop.clear()
        self.thread = threading.Thread(target=runner.run, daemon=True)
        self.thread.start()
        return self

    def wait_for(self, check, what: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; last status {self.fake.last_status}")

    def wait_phase(self, phase: str) -> dict:
        self.wait_for(lambda: self.fake.last_status.get("phase") == phase, f"phase {phase}")
        return self.fake.last_status

    def halt(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(30)
        assert not self.thread.is_alive(), "the daemon did not stop"

    def journal(self) -> list:
        return Journal(self.runtime.config.journal_dir("research", "explorer")).load()


def test_an_org_prepares_its_data_runs_its_budget_and_completes(tmp_path):
    with FakeKube(instant_cluster()) as fake:
        org = Harness(fake, tmp_path, copy.deepcopy(BODY)).start()
        status = org.wait_phase("Completed")
        org.halt()
    assert fake.created_jobs == ["autoresearch-data-prepare"] + [
        f"explorer-exp-{n:05d}" for n in range(4)
    ]
    assert status["counts"]["total"] == 4 and status["counts"]["running"] == 0
    assert status["counts"]["kept"] + status["counts"]["discarded"] == 4
    assert status["baseline"]["experiment"] == 0 and status["branch"] == "autoresearch/explorer"
    assert status["gpuSeconds"] == 120.0 and status["observedGeneration"] == 1
    assert "budget.maxExperiments" in status["message"]
    phases = [
        reason for kind, reason, _ in org.events if reason[0].isupper() and "Exp" not in reason
    ]
    assert phases == ["Preparing", "Running", "Completed"]
    decisions = [reason for _, reason, _ in org.events if reason.startswith("Experiment")]
    assert decisions.count("ExperimentStarted") == 4
    assert decisions.count("ExperimentKept") + decisions.count("ExperimentDiscarded") == 4
    # Each Job trained exactly the committed candidate, and the metrics agree with the status.
    assert [r.experiment for r in org.journal()] == [0, 1, 2, 3]
    registry = org.runtime.metrics.registry
    labels = {"namespace": "research", "org": "explorer"}
    assert registry.get_sample_value("autoresearch_gpu_seconds_total", labels) == 120.0
    assert (
        registry.get_sample_value("autoresearch_best_val_bpb", labels) == status["best"]["valBpb"]
    )


def test_after_a_restart_the_running_experiment_is_adopted_and_recorded_once(tmp_path):
    hold = threading.Event()
    with FakeKube(instant_cluster(hold, "explorer-exp-00002")) as fake:
        first = Harness(fake, tmp_path, copy.deepcopy(BODY)).start()
        first.wait_for(lambda: "explorer-exp-00002" in fake.jobs, "experiment 2's Job")
        first.halt()  # the operator stops while experiment 2 trains
        assert [r.experiment for r in first.journal()] == [0, 1]
        assert "explorer-exp-00002" in fake.jobs  # left running

        hold.set()
        second = Harness(fake, tmp_path, copy.deepcopy(BODY)).start()
        second.wait_phase("Completed")
        second.halt()
    assert fake.created_jobs.count("explorer-exp-00002") == 1  # adopted, never trained twice
    assert [r.experiment for r in second.journal()] == [0, 1, 2, 3]
    resumed = [m for _, reason, m in second.events if reason == "ExperimentResumed"]
    assert len(resumed) == 1 and "experiment 2" in resumed[0]


def test_a_paused_org_waits_and_resumes_when_the_spec_changes(tmp_path):
    body = copy.deepcopy(BODY)
    body["spec"]["paused"] = True
    with FakeKube(instant_cluster()) as fake:
        org = Harness(fake, tmp_path, body).start()
        status = org.wait_phase("Paused")
        assert fake.created_jobs == [] and "spec.paused" in status["message"]
        # kopf's body is a live view: the daemon sees the new generation and moves on.
        body["spec"]["paused"] = False
        body["metadata"]["generation"] = 2
        status = org.wait_phase("Completed")
        org.halt()
    assert status["observedGeneration"] == 2 and status["counts"]["total"] == 4


def test_a_missing_api_key_secret_fails_the_org_naming_the_secret(tmp_path, monkeypatch):
    monkeypatch.setattr(daemon, "RETRY_SECONDS", 0.2)
    body = copy.deepcopy(BODY)
    body["spec"]["proposer"] = {
        "type": "openai", "model": "gpt-x", "apiKeySecretRef": {"name": "llm", "key": "token"}
    }  # fmt: skip
    with FakeKube(instant_cluster()) as fake:
        org = Harness(fake, tmp_path, body).start()
        status = org.wait_phase("Failed")
        org.halt()
    assert "Secret research/llm" in status["message"] and "404" in status["message"]
    assert ("Warning", "Failed", status["message"]) in org.events
    assert fake.created_jobs == []  # nothing runs without a proposer


def test_a_failed_prepare_job_fails_the_org_and_says_how_to_retry(tmp_path, monkeypatch):
    monkeypatch.setattr(daemon, "RETRY_SECONDS", 0.2)

    def finish(job: dict, configmaps: dict):
        return "Failed", {"prepare": terminated("FileNotFoundError: /corpus/x.txt", exit_code=1)}

    with FakeKube(finish) as fake:
        org = Harness(fake, tmp_path, copy.deepcopy(BODY)).start()
        status = org.wait_phase("Failed")
        org.halt()
    assert "preparing the data failed" in status["message"]
    assert "FileNotFoundError" in status["message"] and "delete the Job" in status["message"]


def test_without_data_sources_the_claim_is_taken_as_prepared(tmp_path):
    with FakeKube(instant_cluster()) as fake:
        org = Harness(fake, tmp_path, copy.deepcopy(BODY), data_sources=()).start()
        org.wait_phase("Completed")
        org.halt()
    assert fake.created_jobs[0] == "explorer-exp-00000"


def test_a_crashed_baseline_fails_the_org_without_recording_it(tmp_path):
    def finish(job: dict, configmaps: dict):
        name = job["metadata"]["name"]
        if name.endswith("-prepare"):
            return "Complete", {"prepare": terminated()}
        crash = {"status": "crash", "reason": "exception", "detail": "CUDA driver not found"}
        return "Complete", {"train": terminated(), "evaluate": terminated(json.dumps(crash))}

    with FakeKube(finish) as fake:
        org = Harness(fake, tmp_path, copy.deepcopy(BODY)).start()
        status = org.wait_phase("Failed")
        time.sleep(0.5)  # it must not retry right away: the environment needs fixing first
        org.halt()
    assert "baseline" in status["message"] and "CUDA driver not found" in status["message"]
    assert org.journal() == []  # retried from scratch once the cause is fixed
    assert fake.created_jobs.count("explorer-exp-00000") == 1
