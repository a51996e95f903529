"""The local control plane for tests: plain functions and classes, no pytest (see docs/cluster.md).

    cluster = testcluster.Cluster.up()          # builds on first use, reuses a running cluster
    ns = cluster.create_namespace("my-test")
    node = cluster.start_process_node("gpu-0", gpus=1)   # runs pods as local processes
    cluster.add_kwok_nodes(100, gpus=8)         # simulated nodes, pods only pretend to run
    ...
    node.stop(); cluster.delete_namespace(ns); cluster.release()

`tests/cluster/conftest.py` wraps these in fixtures; other test folders can do the same.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

HERE = Path(__file__).resolve().parent
CLUSTER_SH = HERE / "cluster.sh"
KWOK_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Call `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _cluster_sh(*args: str, echo: bool) -> str:
    """Run cluster.sh, streaming its progress to stderr when `echo`; return its output."""
    proc = subprocess.Popen(
        [str(CLUSTER_SH), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if echo:
            print(line, end="", file=sys.stderr, flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f"{CLUSTER_SH} {' '.join(args)} failed:\n{''.join(lines[-30:])}")
    return "".join(lines)


def _kubeconfig_from(output: str) -> Path:
    match = re.search(r"^export KUBECONFIG=(.+)$", output, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no KUBECONFIG in:\n{output}")
    return Path(match.group(1).strip())


def build(echo: bool = True) -> None:
    """Build whatever binaries the cache lacks (seconds when all are there)."""
    _cluster_sh("build", echo=echo)


class Cluster:
    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.state_dir = kubeconfig.parent / "process-kubelets"

    @classmethod
    def up(cls, echo: bool = True) -> Cluster:
        """Reuse a running cluster or start one (building first when needed); call `release()` after."""
        output = _cluster_sh("up", "--session", str(os.getpid()), echo=echo)
        return cls(_kubeconfig_from(output))

    def release(self) -> None:
        """This process is done with the cluster. The last test session to release a cluster that a
        test session started stops it; a cluster from `make cluster-up` keeps running."""
        _cluster_sh("release", str(os.getpid()), echo=False)

    def down(self) -> None:
        """The old name of `release()`, kept for fixtures written against it."""
        self.release()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(CLUSTER_SH), "kubectl", *args],
            input=input,
            text=True,
            capture_output=True,
            check=check,
        )

    def client_for_token(self, token: str) -> client.ApiClient:
        """An API client that authenticates as whoever `token` belongs to (nothing else)."""
        conf = client.Configuration()
        conf.host = self.api.configuration.host
        conf.ssl_ca_cert = self.api.configuration.ssl_ca_cert
        conf.verify_ssl = self.api.configuration.verify_ssl
        conf.api_key = {"authorization": f"Bearer {token}"}
        return client.ApiClient(conf)

    # ------------------------------------------------------------ namespaces

    def create_namespace(self, hint: str) -> str:
        name = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].rstrip("-")
        name = f"{name}-{secrets.token_hex(3)}"
        self.core.create_namespace(
            {"metadata": {"name": name, "labels": {"autoresearch.dev/test": "true"}}}
        )
        # Pods need the default ServiceAccount, which the controller manager creates.
        wait_for(
            lambda: self._exists(self.core.read_namespaced_service_account, "default", name),
            30,
            f"the default ServiceAccount in {name}",
        )
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise

    @staticmethod
    def _exists(read: Callable, *args: str) -> bool:
        try:
            read(*args)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    # ------------------------------------------------------------ nodes

    def start_process_node(
        self,
        name: str,
        *,
        gpus: int = 0,
        cpu: str | None = None,
        memory: str | None = None,
        images: dict[str, Path] | None = None,
        labels: dict[str, str] | None = None,
        taints: list[dict] | None = None,
        ready_timeout: float = 60,
    ) -> ProcessNode:
        """Start a process kubelet owning node `name`; returns once the node is Ready and schedulable."""
        state = self.state_dir / name
        state.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            str(HERE / "process_kubelet.py"),
            "--kubeconfig",
            str(self.kubeconfig),
            "--node-name",
            name,
            "--gpus",
            str(gpus),
            "--state-dir",
            str(state),
            "--delete-node-on-exit",
            "--exit-with-parent",
        ]
        argv += ["--cpu", cpu] if cpu else []
        argv += ["--memory", memory] if memory else []
        for image, root in (images or {}).items():
            argv += ["--image", f"{image}={root}"]
        for taint in taints or []:
            argv += ["--taint", f"{taint['key']}={taint.get('value', '')}:{taint['effect']}"]
        for key, value in (labels or {}).items():
            argv += ["--label", f"{key}={value}"]
        log_file = open(state / "kubelet.log", "ab")  # noqa: SIM115 - closed by ProcessNode.stop
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=HERE)
        node = ProcessNode(self, name, proc, state, log_file)

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"process kubelet {name} exited: see {state / 'kubelet.log'}")
            try:
                found = self.core.read_node(name)
            except ApiException:
                return False
            conditions = {c.type: c.status for c in found.status.conditions or []}
            # The node lifecycle controller lifts the not-ready taint once it sees Ready.
            tainted = any(t.key.startswith("node.kubernetes.io/") for t in found.spec.taints or [])
            return conditions.get("Ready") == "True" and not tainted

        try:
            wait_for(ready, ready_timeout, f"node {name} to be Ready")
        except BaseException:
            node.stop()
            raise
        return node

    def add_kwok_nodes(
        self,
        count: int,
        *,
        prefix: str = "kwok-",
        gpus: int = 0,
        cpu: str = "32",
        memory: str = "256Gi",
        taint: bool = True,
        labels: dict[str, str] | None = None,
    ) -> list[str]:
        """Create `count` nodes that kwok simulates. With `taint`, only pods tolerating KWOK_TAINT land there."""
        # ephemeral-storage as every real node reports it: pods bounding their disk ask for it
        capacity = {"cpu": cpu, "memory": memory, "ephemeral-storage": "1Ti", "pods": "110"}
        if gpus:
            capacity["nvidia.com/gpu"] = str(gpus)
        names = [f"{prefix}{i}" for i in range(count)]
        for name in names:
            self.core.create_node(
                {
                    "metadata": {
                        "name": name,
                        "annotations": dict(KWOK_ANNOTATION),
                        "labels": {
                            "type": "kwok",
                            "kubernetes.io/hostname": name,
                            **(labels or {}),
                        },
                    },
                    "spec": {"taints": [KWOK_TAINT] if taint else []},
                    "status": {"capacity": capacity, "allocatable": capacity},
                }
            )
        return names

    def delete_nodes(self, names: list[str]) -> None:
        for name in names:
            try:
                self.core.delete_node(name)
            except ApiException as e:
                if e.status != 404:
                    raise


class ProcessNode:
    """A running process kubelet; `stop()` ends it, its processes and its Node."""

    def __init__(
        self, cluster: Cluster, name: str, proc: subprocess.Popen, state_dir: Path, log_file
    ):
        self.cluster, self.name, self.proc, self.state_dir, self._log_file = (
            cluster,
            name,
            proc,
            state_dir,
            log_file,
        )

    def pod_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's stdout and stderr (`kubectl logs` needs a kubelet server; this has files)."""
        pattern = f"{namespace}_{pod}_{container or '*'}.log"
        return "".join(
            p.read_text(errors="replace") for p in sorted((self.state_dir / "logs").glob(pattern))
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        self.cluster.delete_nodes([self.name])
        # Pods bound to a node that is gone would wait for the pod GC; remove them now.
        pods = self.cluster.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.name}"
        )
        for pod in pods.items:
            try:
                self.cluster.core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                )
            except ApiException as e:
                if e.status != 404:
                    raise
