"""End to end on the local control plane: `autoresearch operator` as a local process, a real API
server, Job controller and scheduler, and a process kubelet that runs the trainer pods' commands.

A ResearchOrg with the tiny profile and the mutate proposer must prepare its data, train every
experiment of its budget in Jobs, and reach Completed with status, Events and metrics agreeing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import testcluster
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "researchorg.yaml"
CORPUS = Path(
    os.environ.get("AUTORESEARCH_CORPUS", REPO.parent / "shared" / "data" / "tinyshakespeare.txt")
)
GROUP, VERSION, PLURAL = "autoresearch.dev", "v1alpha1", "researchorgs"
EXPERIMENTS = 3


@pytest.fixture(scope="module")
def crd(cluster: testcluster.Cluster) -> None:
    """The canonical CRD from crds/, exactly as a user would apply it."""
    applied = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CRD), check=False
    )
    assert applied.returncode == 0, f"the API server refused {CRD}: {applied.stderr}"
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    f"crd/{PLURAL}.{GROUP}")  # fmt: skip


@pytest.fixture
def data_claim(cluster: testcluster.Cluster, namespace: str):
    """A claim bound to a hostPath volume: the process kubelet mounts the host directory."""
    core = client.CoreV1Api(cluster.api)
    name, volume = "autoresearch-data", f"autoresearch-data-{secrets.token_hex(3)}"
    # Not under /tmp: the process kubelet maps the pod's /tmp mount too, and rewrites a path it
    # has already rewritten when the host path starts with /tmp.
    path = cluster.kubeconfig.parent / "test-volumes" / volume
    path.mkdir(parents=True)
    core.create_persistent_volume(
        {
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "hostPath": {"path": str(path)},
                "claimRef": {"namespace": namespace, "name": name},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    testcluster.wait_for(
        lambda: (
            core.read_namespaced_persistent_volume_claim(name, namespace).status.phase == "Bound"
        ),
        60,
        "the data claim to be bound",
    )
    yield name
    core.delete_persistent_volume(volume)
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def operator(cluster: testcluster.Cluster, namespace: str, data_claim: str, tmp_path: Path):
    """`autoresearch operator` watching the test's namespace; yields its metrics URL."""
    if not CORPUS.is_file():
        pytest.skip(f"corpus {CORPUS} not found (set AUTORESEARCH_CORPUS)")
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "AUTORESEARCH_NAMESPACES": namespace,
        "AUTORESEARCH_STATE_DIR": str(tmp_path / "state"),
        "AUTORESEARCH_DATA_CLAIM": data_claim,
        "AUTORESEARCH_DATA_SOURCES": str(CORPUS),
        "AUTORESEARCH_DATA_VOCAB_SIZE": "512",
        "AUTORESEARCH_METRICS_PORT": str(port),
        "AUTORESEARCH_POLL_SECONDS": "1",
        "AUTORESEARCH_STATUS_INTERVAL_SECONDS": "1",
    }
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoresearch_operator.cli", "operator"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "operator.log"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def research_org(name: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResearchOrg",
        "metadata": {"name": name},
        "spec": {
            "program": "Lower val_bpb on the tiny model.",
            "trainer": {
                "profile": "tiny",
                "timeBudgetSeconds": 10,
                "graceSeconds": 240,  # two python start-ups on a busy machine, plus evaluation
                "resources": {},  # CPU: the process kubelet node has no GPU
            },
            "proposer": {"type": "mutate", "seed": 3},
            "budget": {"maxExperiments": EXPERIMENTS},
        },
    }


def test_a_tiny_org_prepares_trains_its_budget_and_completes(
    cluster, namespace, process_node, crd, operator
):
    metrics_url, operator_log = operator
    process_node(f"cpu-{secrets.token_hex(3)}")
    objects = client.CustomObjectsApi(cluster.api)
    objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, research_org("explorer")
    )

    def status() -> dict:
        try:
            org = objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "explorer"
            )
        except ApiException:
            return {}
        return org.get("status") or {}  # type: ignore[union-attr]

    seen: list[str] = []

    def completed() -> bool:
        phase = status().get("phase")
        if phase and (not seen or seen[-1] != phase):
            seen.append(phase)
        if phase == "Failed":
            raise AssertionError(f"org failed: {status()}\n{operator_log.read_text()[-3000:]}")
        return phase == "Completed"

    try:
        testcluster.wait_for(completed, 780, "the org to complete", interval=2)
    except TimeoutError:
        raise AssertionError(
            f"phases {seen}; status {status()}\n{operator_log.read_text()[-3000:]}"
        ) from None
    final = status()
    assert final["counts"]["total"] == EXPERIMENTS and final["counts"]["running"] == 0
    assert final["counts"]["crashed"] == 0, final["recentExperiments"]
    assert final["baseline"]["experiment"] == 0
    assert final["best"]["valBpb"] <= final["baseline"]["valBpb"]
    assert final["gpuSeconds"] > 0 and final["branch"] == "autoresearch/explorer"
    assert "Running" in seen and seen[-1] == "Completed"

    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    names = sorted(j.metadata.name for j in jobs)
    assert names == ["autoresearch-data-prepare"] + [
        f"explorer-exp-{n:05d}" for n in range(EXPERIMENTS)
    ]

    events = client.CoreV1Api(cluster.api).list_namespaced_event(
        namespace, field_selector="involvedObject.name=explorer"
    )
    reasons = [e.reason for e in events.items]
    assert "ExperimentKept" in reasons and "Completed" in reasons

    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    labels = f'namespace="{namespace}",org="explorer"'
    recorded = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("autoresearch_experiments_total{") and labels in line
    )
    assert recorded == EXPERIMENTS
    assert f"autoresearch_best_val_bpb{{{labels}}} {final['best']['valBpb']}" in text
    with urllib.request.urlopen(f"{metrics_url}/healthz", timeout=10) as resp:
        assert resp.status == 200


def test_deleting_an_org_stops_its_daemon_and_collects_its_jobs(
    cluster, namespace, process_node, crd, operator
):
    """Nothing is left behind but the git history: Jobs and ConfigMaps go with their owner."""
    _metrics_url, operator_log = operator
    process_node(f"cpu-{secrets.token_hex(3)}")
    objects = client.CustomObjectsApi(cluster.api)
    body = research_org("short")
    body["spec"]["budget"]["maxExperiments"] = 1
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    batch = client.BatchV1Api(cluster.api)
    testcluster.wait_for(
        lambda: any(
            j.metadata.name == "short-exp-00000" for j in batch.list_namespaced_job(namespace).items
        ),
        300,
        "the first experiment's Job",
        interval=2,
    )
    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "short")

    def gone() -> bool:
        try:
            objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "short")
        except ApiException as err:
            return err.status == 404
        return False

    try:
        testcluster.wait_for(gone, 120, "the org to be deleted (kopf's finalizer released)")
    except TimeoutError:
        raise AssertionError(operator_log.read_text()[-3000:]) from None
    testcluster.wait_for(
        lambda: (
            not [
                j
                for j in batch.list_namespaced_job(namespace).items
                if j.metadata.name.startswith("short-")
            ]
        ),
        120,
        "the garbage collector to delete the org's Jobs",
        interval=2,
    )
