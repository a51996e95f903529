"""The namespace's Job and pod informers on the local control plane: a run's end reaches its
waiter through the watch, not through polling, and how it ended is read from the pod watch.

Each waiter polls nothing (poll_seconds is an hour) and reads its Job itself only every
RECHECK_SECONDS (two minutes), so a waiter that returns within seconds was woken by the watch.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import pytest
from kubernetes import client

from autoresearch_operator.k8s.builders import MANAGED_BY
from autoresearch_operator.k8s.informer import JobInformer, PodInformer
from autoresearch_operator.k8s.jobs import RECHECK_SECONDS, JobClient

pytestmark = pytest.mark.cluster

WOKEN_WITHIN = 10.0  # seconds; far below RECHECK_SECONDS


def job_body(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    labels = {**MANAGED_BY, "app.kubernetes.io/component": "experiment"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "trainer", "command": command}],
                },
            },
            **spec,
        },
    }


class Waiter(threading.Thread):
    """JobClient.wait_finished in a thread, as an org's loop calls it."""

    def __init__(self, jobs: JobClient, name: str, uid: str):
        super().__init__(daemon=True)
        self.jobs, self.name, self.uid = jobs, name, uid
        self.result: dict[str, Any] | None | str = "still waiting"
        self.seconds = 0.0

    def run(self) -> None:
        start = time.monotonic()
        self.result = self.jobs.wait_finished(self.name, uid=self.uid)
        self.seconds = time.monotonic() - start


def test_a_finished_and_a_deleted_job_wake_their_waiters_through_the_watch(
    cluster, namespace, process_node
):
    assert RECHECK_SECONDS > 10 * WOKEN_WITHIN
    process_node(f"cpu-{secrets.token_hex(3)}")
    informer = JobInformer(cluster.api, namespace).start()
    pod_informer = PodInformer(cluster.api, namespace).start()
    stop = threading.Event()
    jobs = JobClient(
        cluster.api, namespace, wait=stop.wait, poll_seconds=3600, informer=informer,
        pods=pod_informer,
    )  # fmt: skip
    listed = []  # direct lists of a Job's pods: the fallback when the pod watch is behind
    list_job_pods = jobs.list_job_pods
    jobs.list_job_pods = lambda name: listed.append(name) or list_job_pods(name)  # type: ignore[method-assign]
    try:
        done, _ = jobs.create_or_adopt_job(job_body("done", ["python", "-c", "pass"]))
        # suspended: it never runs, so only its deletion can end the wait
        doomed, _ = jobs.create_or_adopt_job(job_body("doomed", ["true"], suspend=True))
        waiters = [
            Waiter(jobs, j["metadata"]["name"], j["metadata"]["uid"]) for j in (done, doomed)
        ]
        for waiter in waiters:
            waiter.start()
        waiters[0].join(120)
        assert isinstance(waiters[0].result, dict), waiters[0].result
        assert waiters[0].result["status"].get("succeeded") == 1
        (pod,) = jobs.finished_pods(waiters[0].result)
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == done["metadata"]["uid"]
        assert listed == [], "the finished Job's pod was listed, not read from the pod watch"
        # without a synced pod watch the pods are listed, as before the watch
        unwatched = JobClient(
            cluster.api, namespace, wait=stop.wait, pods=PodInformer(cluster.api, namespace)
        )
        assert [p["metadata"]["name"] for p in unwatched.finished_pods(waiters[0].result)] == [
            pod["metadata"]["name"]
        ]

        client.BatchV1Api(cluster.api).delete_namespaced_job(
            "doomed", namespace, propagation_policy="Background"
        )
        waiters[1].join(WOKEN_WITHIN)
        assert waiters[1].result is None, "the deleted Job's waiter was not woken by the watch"
    finally:
        stop.set()
        informer.stop()
        pod_informer.stop()
