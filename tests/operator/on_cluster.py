"""Helpers for the operator's tests on the local control plane: the operator as a process that
can be killed and restarted, org bodies, and waiting on an org's status."""

from __future__ import annotations

import http.server
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from support.processes import free_port, stop

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "researchorg.yaml"
CORPUS = Path(
    os.environ.get("AUTORESEARCH_CORPUS", REPO.parent / "shared" / "data" / "tinyshakespeare.txt")
)
GROUP, VERSION, PLURAL = "autoresearch.dev", "v1alpha1", "researchorgs"
OPERATOR_NAMESPACE = "autoresearch-system"


class DataClaim:
    """A claim bound to a hostPath volume: the process kubelet mounts the host directory."""

    def __init__(self, cluster, name: str, volume: str, path: Path):
        self.cluster, self.name, self.volume, self.path = cluster, name, volume, path

    @classmethod
    def create(cls, cluster, namespace: str, name: str = "autoresearch-data") -> DataClaim:
        import testcluster
        from kubernetes import client

        core = client.CoreV1Api(cluster.api)
        volume = f"{name}-{secrets.token_hex(3)}"
        # Not under /tmp: the process kubelet maps the pod's /tmp mount too, and rewrites a path
        # it has already rewritten when the host path starts with /tmp.
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
                core.read_namespaced_persistent_volume_claim(name, namespace).status.phase
                == "Bound"
            ),
            60,
            "the data claim to be bound",
        )
        return cls(cluster, name, volume, path)

    def delete(self) -> None:
        from kubernetes import client

        client.CoreV1Api(self.cluster.api).delete_persistent_volume(self.volume)
        shutil.rmtree(self.path, ignore_errors=True)


# The chart as the tests install it. The operator's Deployment is created like every other object,
# but nothing here can run its image, so it is pinned to a node that never exists and stays
# Pending: the operator runs as a local process with the Deployment's ServiceAccount and env.
CHART = REPO / "charts" / "autoresearch-operator"
CHART_RELEASE = "ar"
CHART_VALUES: dict[str, Any] = {
    "persistence": {"data": {"create": False}},  # each test namespace gets its own DataClaim
    "nodeSelector": {"autoresearch.dev/no-operator-image-here": "true"},
}


class ChartRelease:
    """The chart installed with Helm's own Go SDK, and what the operator pod would run with."""

    def __init__(self, manifest: list[dict[str, Any]]):
        self.manifest = manifest
        (deployment,) = [d for d in manifest if d["kind"] == "Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        self.service_account: str = pod["serviceAccountName"]
        self.namespace: str = deployment["metadata"]["namespace"]
        (container,) = pod["containers"]
        self.env: dict[str, str] = {e["name"]: e["value"] for e in container["env"]}

    @classmethod
    def install(
        cls,
        cluster,
        *,
        name: str = CHART_RELEASE,
        namespace: str = OPERATOR_NAMESPACE,
        values: dict[str, Any] | None = None,
    ) -> ChartRelease:
        """`helm upgrade --install` of the chart (release `name` into `namespace`, CHART_VALUES
        unless `values` are given), serialised across test processes that share the cluster
        (Helm refuses concurrent writes to one release)."""
        import fcntl

        import helm_python as helm

        values = CHART_VALUES if values is None else values
        lock = (cluster.kubeconfig.parent / "chart-install.lock").open("w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with (
                helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace) as cfg,
                helm.Chart.load(CHART) as chart,
            ):
                try:
                    cfg.status(name)
                except helm.HelmNotFoundError:
                    release = cfg.install(
                        chart, name, values,
                        namespace=namespace, create_namespace=True, timeout=120,
                    )  # fmt: skip
                else:
                    release = cfg.upgrade(chart, name, values, namespace=namespace, timeout=120)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
        return cls([doc for doc in yaml.safe_load_all(release["manifest"]) if doc])


def operator_account_kubeconfig(
    cluster, directory: Path, release: ChartRelease | None = None
) -> Path:
    """Install the chart (unless given its release) and write a kubeconfig holding only a token of
    the chart's ServiceAccount (from the TokenRequest API), so the operator runs with exactly the
    RBAC rules that `helm install` gives it."""
    release = release or ChartRelease.install(cluster)
    token = cluster.kubectl(
        "create", "token", release.service_account, "-n", release.namespace, "--duration=4h"
    ).stdout.strip()
    settings = cluster.api.configuration
    server = {"server": settings.host, "certificate-authority": settings.ssl_ca_cert}
    user = release.service_account
    path = directory / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": server}],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": "operator", "context": {"cluster": "test", "user": user}}],
                "current-context": "operator",
            }
        )  # fmt: skip
    )
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, directory=str(CORPUS.parent), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's signature
        pass


_corpus_server: http.server.ThreadingHTTPServer | None = None


def corpus_url() -> str:
    """The corpus over HTTP on loopback, as a cluster fetches a dataset shard.

    A pod cannot see a host path: handing one to the prepare Job only worked while the path
    happened not to start with one of the pod's mount paths (a checkout under /tmp broke it).
    """
    global _corpus_server
    if _corpus_server is None:
        _corpus_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
        threading.Thread(target=_corpus_server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{_corpus_server.server_address[1]}/{CORPUS.name}"


class OperatorProcess:
    """`autoresearch operator` as a local process that a test can kill and start again; its state
    directory (journals, git) and its log survive restarts, as a pod's volume would."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.state_dir = Path(env["AUTORESEARCH_STATE_DIR"])
        self.metrics_url = f"http://127.0.0.1:{env['AUTORESEARCH_METRICS_PORT']}"
        self.proc: subprocess.Popen | None = None
        self.restarts = -1

    @classmethod
    def watching(
        cls,
        namespace: str,
        *,
        kubeconfig: Path,
        data_claim: str,
        directory: Path,
        chart: ChartRelease | None = None,
    ) -> OperatorProcess:
        """An operator for one namespace, preparing the test corpus, polling every second.

        With `chart`, it starts from the environment of the chart's Deployment (what the pod
        would run with), so the tests also prove that the chart configures a working operator.
        """
        deployment_env = dict(chart.env) if chart else {}
        deployment_env.pop("HOME", None)  # the pod's HOME is its writable /tmp mount
        env = {
            **os.environ,
            **deployment_env,
            "KUBECONFIG": str(kubeconfig),
            "AUTORESEARCH_NAMESPACES": namespace,
            "AUTORESEARCH_STATE_DIR": str(directory / "state"),
            "AUTORESEARCH_DATA_CLAIM": data_claim,
            "AUTORESEARCH_DATA_SOURCES": corpus_url(),
            "AUTORESEARCH_DATA_VOCAB_SIZE": "512",
            "AUTORESEARCH_METRICS_PORT": str(free_port()),
            "AUTORESEARCH_POLL_SECONDS": "1",
            "AUTORESEARCH_STATUS_INTERVAL_SECONDS": "1",
        }
        return cls(env, directory / "operator.log")

    def start(self) -> None:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autoresearch_operator.cli", "operator"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        self.restarts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no last status patch, as when a node dies."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


# One run per experiment, as before runs existed (no noise runs, no confirmation): each test is
# as cheap as its meaning allows; a test about confirmations passes its own keepPolicy.
ONE_RUN_POLICY = {"noiseRuns": 1, "confirmRuns": 0}


def research_org(name: str, experiments: int, **spec: Any) -> dict[str, Any]:
    """A tiny-profile org on the CPU with the mutate proposer and one run per experiment;
    `spec` overrides top-level keys (keepPolicy among them)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResearchOrg",
        "metadata": {"name": name},
        "spec": {
            "program": "Lower val_bpb on the tiny model.",
            "trainer": {
                "profile": "tiny",
                "timeBudgetSeconds": 3,
                # imports on a busy machine; a run may train until 30 + 3 s after its start, and
                # one that has not exported 10 s later (a hang) is killed as a timeout
                "startupSeconds": 30,
                "resources": {},  # CPU: the process kubelet node has no GPU
            },
            "proposer": {"type": "mutate", "seed": 3},
            "budget": {"maxExperiments": experiments},
            "keepPolicy": dict(ONE_RUN_POLICY),
            **spec,
        },
    }


class Orgs:
    """ResearchOrgs of one namespace through the admin client."""

    def __init__(self, cluster, namespace: str):
        from kubernetes import client

        self.objects = client.CustomObjectsApi(cluster.api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> None:
        self.objects.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def status(self, name: str) -> dict[str, Any]:
        from kubernetes.client.rest import ApiException

        try:
            org = self.objects.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException:
            return {}
        return org.get("status") or {}  # type: ignore[union-attr]

    def wait_completed(self, name: str, operator: OperatorProcess, timeout: float) -> dict:
        """Wait for phase Completed; fail at once on Failed, with the operator's log."""
        import testcluster

        seen: list[str] = []

        def completed() -> bool:
            phase = self.status(name).get("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
            if phase == "Failed":
                raise AssertionError(f"{name} failed: {self.status(name)}\n{operator.log_tail()}")
            return phase == "Completed"

        try:
            testcluster.wait_for(completed, timeout, f"{name} to complete", interval=1)
        except TimeoutError:
            raise AssertionError(
                f"{name}: phases {seen}; status {self.status(name)}\n{operator.log_tail()}"
            ) from None
        return self.status(name)
