"""Two orgs share one GPU node: the scheduler queues their trainer pods, both orgs finish, and
never do two trainer pods run at once."""

from __future__ import annotations

import secrets
import threading

import pytest
from kubernetes import client, watch
from on_cluster import Orgs, research_org

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EXPERIMENT_PODS = "app.kubernetes.io/component=experiment"


class RunningPods:
    """Watches the namespace's trainer pods and remembers the most that were Running at once."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.core, self.namespace = client.CoreV1Api(api), namespace
        self.phases: dict[str, str] = {}
        self.most_at_once = 0
        self.ever_running: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> RunningPods:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(40)

    def _watch(self) -> None:
        while not self._stop.is_set():
            stream = watch.Watch().stream(
                self.core.list_namespaced_pod, self.namespace,
                label_selector=EXPERIMENT_PODS, timeout_seconds=5,
            )  # fmt: skip
            for event in stream:
                pod = event["object"]
                name = pod.metadata.name
                if event["type"] == "DELETED":
                    self.phases.pop(name, None)
                else:
                    self.phases[name] = pod.status.phase
                running = [n for n, phase in self.phases.items() if phase == "Running"]
                self.ever_running.update(running)
                self.most_at_once = max(self.most_at_once, len(running))


def test_two_orgs_on_one_gpu_take_turns_and_both_complete(
    cluster, namespace, process_node, operator
):
    process_node(f"gpu-{secrets.token_hex(3)}", gpus=1)
    orgs = Orgs(cluster, namespace)
    with RunningPods(cluster.api, namespace) as pods:
        for name, seed in (("left", 1), ("right", 2)):
            # the baseline only: two pods that want the one GPU at once are the whole point
            body = research_org(name, 1, proposer={"type": "mutate", "seed": seed})
            body["spec"]["trainer"]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
            orgs.create(body)
        finals = {name: orgs.wait_completed(name, operator, 840) for name in ("left", "right")}
    for name, final in finals.items():
        assert final["counts"]["total"] == 1 and final["counts"]["crashed"] == 0, (name, final)
    assert len(pods.ever_running) == 2, pods.phases
    assert pods.most_at_once == 1
