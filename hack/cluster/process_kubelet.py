"""A kubelet for tests that runs each container as a local process (see docs/cluster.md).

It registers a Node (with nvidia.com/gpu capacity when asked), keeps it Ready with a Lease and
status heartbeats, watches the pods the scheduler binds to it, runs their containers as
processes and reports their status as a kubelet would: Running, then Succeeded or Failed with
each container's exit code and termination message. kwok leaves this node alone because it has
no `kwok.x-k8s.io/node` annotation. Run `python process_kubelet.py --help` for the options.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import podrun
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from podworker import PodWorker

REPO = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
FINISHED = ("Succeeded", "Failed")
log = logging.getLogger("process-kubelet")


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pid_namespace_runner() -> str | None:
    """unshare's path when it can start a process as PID 1 of its own PID namespace here (as
    root, with util-linux's unshare), else None: containers then run as plain processes."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return None
    probe = podrun.in_own_pid_namespace(["sh", "-c", 'test "$$" = 1'], unshare)
    try:
        works = subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return unshare if works else None


class ProcessKubelet:
    def __init__(
        self,
        api: client.ApiClient,
        node_name: str,
        *,
        state_dir: Path,
        images: dict[str, Path] | None = None,
        default_root: Path = REPO / "trainer-image",
        gpus: int = 0,
        cpu: str | None = None,
        memory: str | None = None,
        labels: dict[str, str] | None = None,
        taints: list[dict] | None = None,
    ):
        self.api, self.core = api, client.CoreV1Api(api)
        self.node_name, self.state_dir = node_name, state_dir
        self.images, self.default_root = images or {}, default_root
        self.gpus, self.free_gpus = gpus, set(range(gpus))
        self.cpu = cpu or str(os.cpu_count())
        self.memory = (
            memory or f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**20}Mi"
        )
        self.labels, self.taints = labels or {}, taints or []
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.started = podrun.now()  # the conditions' transition time: they never change
        self.unshare = pid_namespace_runner()  # each container's process is PID 1 when set
        if self.unshare is None:
            log.warning("no PID namespaces here (needs root and unshare): containers share ours")
        host = api.configuration.host.rsplit(":", 1)
        self.base_env = {
            # `python` in a command is the interpreter running this kubelet (the venv's).
            "PATH": os.path.dirname(sys.executable) + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": host[1] if len(host) == 2 else "443",
        }

    # ------------------------------------------------------------ the node

    def node_status(self) -> dict:
        resources = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": "110",
            "ephemeral-storage": "100Gi",
        }
        if self.gpus:
            resources[podrun.GPU] = str(self.gpus)
        beat = podrun.now()
        conditions = [
            ("Ready", "True", "KubeletReady"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ]
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "lastHeartbeatTime": beat,
                    "lastTransitionTime": self.started,
                }
                for t, s, r in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "process-kubelet",
                "containerRuntimeVersion": "process://1",
                "kubeletVersion": "v1.34.0-process",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "autoresearch.dev/process-kubelet": "true",
            **self.labels,
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": labels},
            "spec": {"taints": self.taints},
        }
        try:
            created = self.core.create_node(node)
        except ApiException as e:
            if e.status != 409:
                raise
            created = self.core.patch_node(
                self.node_name, {"metadata": {"labels": labels}, "spec": {"taints": self.taints}}
            )
        self.core.patch_node_status(self.node_name, {"status": self.node_status()})
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.node_name,
                "namespace": "kube-node-lease",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.node_name,
                        "uid": created.metadata.uid,
                    }
                ],
            },
            "spec": {
                "holderIdentity": self.node_name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro_now(),
            },
        }
        coordination = client.CoordinationV1Api(self.api)
        try:
            coordination.create_namespaced_lease("kube-node-lease", lease)
        except ApiException as e:
            if e.status != 409:
                raise
            coordination.replace_namespaced_lease(self.node_name, "kube-node-lease", lease)
        log.info(
            "registered node %s (cpu=%s memory=%s gpus=%d)",
            self.node_name,
            self.cpu,
            self.memory,
            self.gpus,
        )

    def heartbeat(self) -> None:
        coordination = client.CoordinationV1Api(self.api)
        while not self.stop.wait(HEARTBEAT_SECONDS):
            try:
                coordination.patch_namespaced_lease(
                    self.node_name, "kube-node-lease", {"spec": {"renewTime": micro_now()}}
                )
                self.core.patch_node_status(self.node_name, {"status": self.node_status()})
            except Exception as e:  # the API server may be restarting; try again next beat
                log.warning("heartbeat failed: %s", e)

    # ------------------------------------------------------------ pods

    def run(self) -> None:
        self.register()
        threading.Thread(target=self.heartbeat, daemon=True).start()
        selector = f"spec.nodeName={self.node_name}"
        while not self.stop.is_set():
            try:
                listed = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for pod in listed.items:
                    self.on_pod(self.api.sanitize_for_serialization(pod), "ADDED")
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=30,
                )
                for event in stream:
                    if self.stop.is_set():
                        break
                    self.on_pod(self.api.sanitize_for_serialization(event["object"]), event["type"])
            except Exception as e:  # 410 Gone, a restarting API server: list again
                if not self.stop.is_set():
                    log.warning("pod watch ended (%s); listing again", e)
                    time.sleep(1)

    def on_pod(self, pod: dict, event: str) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        deleting = event == "DELETED" or meta.get("deletionTimestamp")
        with self.lock:
            worker = self.workers.get(uid)
            if not deleting:
                if worker is None and (pod.get("status") or {}).get("phase") not in FINISHED:
                    worker = self.workers[uid] = PodWorker(self, pod)
                    threading.Thread(target=worker.run, name=meta["name"], daemon=True).start()
                return
            if worker and not worker.done:  # it stops the processes, then finishes the deletion
                grace = 0 if event == "DELETED" else meta.get("deletionGracePeriodSeconds") or 0
                worker.delete(grace)
                return
            self.workers.pop(uid, None)
        # Deleted, and nothing runs for it here: free its volumes and finish the deletion.
        if worker:
            worker.remove_volumes()
        if event != "DELETED":
            self.force_delete(meta)

    def force_delete(self, meta: dict) -> None:
        # With a body, the API server reads the options from it, not from the query.
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            self.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=options)
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("deleting pod %s failed: %s", meta["name"], e)

    def allocate_gpus(self, count: int) -> list[int] | None:
        with self.lock:
            if count > len(self.free_gpus):
                return None
            ids = sorted(self.free_gpus)[:count]
            self.free_gpus.difference_update(ids)
            return ids

    def release_gpus(self, ids: list[int]) -> None:
        with self.lock:
            self.free_gpus.update(ids)

    def shutdown(self, delete_node: bool) -> None:
        self.stop.set()
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.kill.set()
        if delete_node:
            try:
                self.core.delete_node(self.node_name)
            except ApiException as e:
                if e.status != 404:
                    raise


# ---------------------------------------------------------------- command line


def parse_mapping(items: list[str]) -> dict[str, Path]:
    mapping = {}
    for item in items:
        image, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--image wants IMAGE=DIR, got {item!r}")
        mapping[image] = Path(path).resolve()
    return mapping


def parse_taint(text: str) -> dict:
    key_value, sep, effect = text.rpartition(":")
    key, _, value = key_value.partition("=")
    if not sep or not key:
        raise SystemExit(f"--taint wants KEY=VALUE:EFFECT, got {text!r}")
    return {"key": key, "value": value, "effect": effect}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity to advertise")
    parser.add_argument("--cpu", help="cpu capacity to advertise (default: this machine's cores)")
    parser.add_argument(
        "--memory", help="memory capacity to advertise (default: this machine's memory)"
    )
    parser.add_argument(
        "--label", action="append", default=[], help="KEY=VALUE node label (repeatable)"
    )
    parser.add_argument(
        "--taint", action="append", default=[], help="KEY=VALUE:EFFECT node taint (repeatable)"
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        help="IMAGE=DIR: run containers of IMAGE (name with or without tag) in DIR",
    )
    parser.add_argument(
        "--default-image-root",
        type=Path,
        default=REPO / "trainer-image",
        help="working directory for images not named by --image",
    )
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="volumes, logs and claims live here"
    )
    parser.add_argument("--delete-node-on-exit", action="store_true")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the process that started it ends"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    api = config.new_client_from_config(config_file=args.kubeconfig)
    kubelet = ProcessKubelet(
        api,
        args.node_name,
        state_dir=args.state_dir.resolve(),
        images=parse_mapping(args.image),
        default_root=args.default_image_root.resolve(),
        gpus=args.gpus,
        cpu=args.cpu,
        memory=args.memory,
        labels=dict(label.split("=", 1) for label in args.label),
        taints=[parse_taint(taint) for taint in args.taint],
    )

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping the node's processes", signum)
        kubelet.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner = threading.Thread(target=kubelet.run, daemon=True)
    runner.start()
    parent = os.getppid()
    while runner.is_alive() and not kubelet.stop.wait(0.5):
        if args.exit_with_parent and os.getppid() != parent:  # a killed test session
            log.info("parent %d is gone: stopping", parent)
            kubelet.stop.set()
    kubelet.shutdown(delete_node=args.delete_node_on_exit)
    time.sleep(0.5)  # let pod workers send their last status


if __name__ == "__main__":
    main()
