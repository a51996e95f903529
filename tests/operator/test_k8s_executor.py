"""KubernetesExecutor against a fake API, for what the real API server cannot be made to do on
demand: 503 and 429 replies, a 403 on create, a Job that vanishes mid-run, a leftover Job of
another commit, a stop mid-run; and one Job per run. Adoption after a real restart, and
everything an org does end to end, run on the local control plane (test_*_on_cluster.py)."""

from __future__ import annotations

import json
import threading

import pytest
from fake_kube import FakeKube, terminated

from autoresearch_operator.core.interfaces import ExperimentJob
from autoresearch_operator.k8s.builders import LABEL_COMMIT, LABEL_RUN, experiment_job
from autoresearch_operator.k8s.executor import KubernetesExecutor
from autoresearch_operator.k8s.jobs import Interrupted, JobClient, KubernetesError
from autoresearch_operator.spec import org_from_resource

BODY = {
    "apiVersion": "autoresearch.dev/v1alpha1",
    "kind": "ResearchOrg",
    "metadata": {"name": "explorer", "namespace": "research", "uid": "org-uid", "generation": 1},
    "spec": {"program": "x", "trainer": {"timeBudgetSeconds": 60, "profile": "tiny"}},
}
ORG = org_from_resource(BODY)
COMMIT = "c" * 40
OK = {"status": "ok", "val_bpb": 1.25, "training_seconds": 60.0}


def experiment(n: int = 3, commit: str = COMMIT, **extra) -> ExperimentJob:
    return ExperimentJob(
        org="explorer", experiment=n, commit=commit, train_py="print('candidate')\n",
        time_budget=60, startup_seconds=10, profile="tiny", **extra,
    )  # fmt: skip


def finish_when_configmap_exists(job: dict, configmaps: dict):
    """The pod can start only once its train.py ConfigMap exists, as on a cluster."""
    if f"{job['metadata']['name']}-train-py" not in configmaps:
        return None
    return "Complete", {"train": terminated(), "evaluate": terminated(json.dumps(OK))}


def executor(fake: FakeKube, stop: threading.Event | None = None) -> KubernetesExecutor:
    stop = stop or threading.Event()
    jobs = JobClient(fake.api_client(), "research", wait=stop.wait, poll_seconds=0.02)
    return KubernetesExecutor(jobs, ORG, BODY, data_claim="autoresearch-data")


def test_runs_the_candidate_in_a_job_and_reads_the_harness_result():
    with FakeKube(finish_when_configmap_exists) as fake:
        progress = []
        result = executor(fake).run(experiment(), progress.append)
        assert result.status == "ok" and result.val_bpb == 1.25
        assert fake.created_jobs == ["explorer-exp-00003-run-0"]
        cm = fake.configmaps["explorer-exp-00003-run-0-train-py"]
        owner = cm["metadata"]["ownerReferences"][0]
        assert (
            owner["kind"] == "Job"
            and owner["uid"] == fake.jobs["explorer-exp-00003-run-0"]["metadata"]["uid"]
        )
        assert cm["data"]["train.py"] == "print('candidate')\n"


def test_the_jobs_seed_and_test_threshold_reach_the_harness_in_the_pod():
    with FakeKube(finish_when_configmap_exists) as fake:
        executor(fake).run(experiment(seed=7, test_if_val_below=1.3))
        pod = fake.jobs["explorer-exp-00003-run-0"]["spec"]["template"]["spec"]
        [train], [evaluate] = pod["initContainers"], pod["containers"]
        assert train["command"][train["command"].index("--seed") + 1] == "7"
        command = evaluate["command"]
        assert command[command.index("--test-if-val-below") + 1] == "1.3"
        assert "/data/test" in {m["mountPath"] for m in evaluate["volumeMounts"]}


def test_each_run_is_its_own_job_and_asking_for_a_run_again_adopts_its_job():
    views: dict[str, int] = {}

    def finish_on_the_second_look(job: dict, configmaps: dict):
        name = job["metadata"]["name"]
        views[name] = views.get(name, 0) + 1
        return finish_when_configmap_exists(job, configmaps) if views[name] > 1 else None

    with FakeKube(finish_on_the_second_look) as fake:
        progress: list = []
        ex = executor(fake)
        ex.run(experiment(run=1, seed=3001), progress.append)
        ex.run(experiment(run=3, commit="b" * 40, seed=3001))  # a re-run of the best beside it
        assert fake.created_jobs == ["explorer-exp-00003-run-1", "explorer-exp-00003-run-3"]
        job = fake.jobs["explorer-exp-00003-run-3"]
        assert job["metadata"]["labels"][LABEL_RUN] == "3"
        assert job["metadata"]["labels"][LABEL_COMMIT] == "b" * 40
        assert {p.run for p in progress} == {1}
        uid = fake.jobs["explorer-exp-00003-run-1"]["metadata"]["uid"]
        # after an operator restart the loop asks for run 1 again: the finished Job is read
        assert ex.run(experiment(run=1, seed=3001)).val_bpb == 1.25
        assert len(fake.created_jobs) == 2
        assert fake.jobs["explorer-exp-00003-run-1"]["metadata"]["uid"] == uid


def test_a_leftover_job_for_another_commit_is_replaced():
    with FakeKube(finish_when_configmap_exists) as fake:
        stale = experiment_job(ORG, BODY, 3, "d" * 40, data_claim="autoresearch-data", run=0)
        fake.jobs[stale["metadata"]["name"]] = stale
        executor(fake).run(experiment())
        assert fake.created_jobs == ["explorer-exp-00003-run-0"]
        assert fake.jobs["explorer-exp-00003-run-0"]["metadata"]["labels"][LABEL_COMMIT] == COMMIT


def test_transient_api_errors_are_retried():
    with FakeKube(finish_when_configmap_exists) as fake:
        fake.fail_next = [503, 429]
        ex = executor(fake)
        ex.jobs.wait = lambda _s: False  # skip the backoff sleeps
        assert ex.run(experiment()).status == "ok"


def test_a_refused_job_raises_instead_of_recording_a_crash():
    with FakeKube(finish_when_configmap_exists) as fake:
        fake.fail_next = [403]
        with pytest.raises(KubernetesError, match="create Job explorer-exp-00003-run-0: 403"):
            executor(fake).run(experiment())


def test_stopping_while_a_job_runs_interrupts_and_leaves_the_job_running():
    with FakeKube(lambda job, cms: None) as fake:
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        with pytest.raises(Interrupted):
            executor(fake, stop).run(experiment())
        assert "explorer-exp-00003-run-0" in fake.jobs


def test_a_job_deleted_while_running_is_an_infrastructure_crash():
    with FakeKube(lambda job, cms: None) as fake:

        def delete() -> None:
            with fake.lock:
                fake.jobs.clear()

        threading.Timer(0.2, delete).start()
        result = executor(fake).run(experiment())
        assert result.reason == "infrastructure" and "deleted" in (result.detail or "")
