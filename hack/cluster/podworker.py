"""One pod on the process kubelet: its volumes, its containers as processes, its status.

The kubelet (`process_kubelet.py`) starts a PodWorker per pod bound to its node; the mapping from
container to process is in `podrun.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import podrun
from kubernetes.client.rest import ApiException

if TYPE_CHECKING:
    from process_kubelet import ProcessKubelet

SMP = "application/strategic-merge-patch+json"
log = logging.getLogger("process-kubelet")


class PodWorker:
    """Runs one pod: volumes, init containers in order, then the containers together."""

    def __init__(self, kubelet: ProcessKubelet, pod: dict):
        self.kubelet, self.pod = kubelet, pod
        meta = pod["metadata"]
        self.name, self.namespace, self.uid = meta["name"], meta["namespace"], meta["uid"]
        self.dir = kubelet.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.kill = threading.Event()  # stop the processes: the pod is deleted or the node stops
        self.deleted = False
        self.done = False
        self.grace = 0
        self.started_at = podrun.now()
        self.init_status = [
            podrun.waiting_status(c) for c in pod["spec"].get("initContainers") or []
        ]
        self.main_status = [podrun.waiting_status(c) for c in pod["spec"]["containers"]]

    def log_path(self, container: dict) -> Path:
        return (
            self.kubelet.state_dir
            / "logs"
            / f"{self.namespace}_{self.name}_{container['name']}.log"
        )

    def delete(self, grace: int) -> None:
        self.grace, self.deleted = grace, True
        self.kill.set()

    def report(self, phase: str, initialized: bool) -> None:
        status = podrun.pod_status(
            phase,
            started_at=self.started_at,
            init=self.init_status,
            main=self.main_status,
            initialized=initialized,
        )
        try:
            self.kubelet.core.patch_namespaced_pod_status(
                self.name, self.namespace, {"status": status}, _content_type=SMP
            )
        except ApiException as e:
            if e.status != 404:
                log.warning("status of pod %s: %s", self.name, e.reason)

    def run(self) -> None:
        try:
            self.run_pod()
        except Exception:
            log.exception("pod %s/%s", self.namespace, self.name)
        finally:
            with self.kubelet.lock:
                self.done = True
                deleted = self.deleted
            if deleted:
                self.kubelet.force_delete(self.pod["metadata"])
                self.remove_volumes()

    def remove_volumes(self) -> None:
        """A deleted pod's emptyDirs and written volumes go; claims and logs stay."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def run_pod(self) -> None:
        spec = self.pod["spec"]
        gpu_count = sum(podrun.gpus_requested(c) for c in spec["containers"])
        gpu_count = max(
            [gpu_count] + [podrun.gpus_requested(c) for c in spec.get("initContainers") or []]
        )
        gpu_ids = self.kubelet.allocate_gpus(gpu_count)
        if gpu_ids is None:  # what a kubelet says when the scheduler and the node disagree
            self.main_status = [
                podrun.terminated_status(
                    c, self.started_at, 0, None, 128, "no free GPU", "UnexpectedAdmissionError"
                )
                for c in spec["containers"]
            ]
            self.report("Failed", False)
            return
        final: tuple[str, bool] | None = None  # reported only after the GPUs are free again
        try:
            objects = self.wait_for_objects()
            if objects is None:
                return
            volume_dirs = self.prepare_volumes(objects)
            self.report("Pending", False)
            for i, container in enumerate(spec.get("initContainers") or []):
                code = self.run_container(
                    container,
                    volume_dirs,
                    objects,
                    gpu_ids[: podrun.gpus_requested(container)],
                    self.init_status,
                    i,
                    initialized=False,
                )
                if code != 0 or self.kill.is_set():
                    final = ("Failed", False)
                    return
            codes: dict[int, int] = {}
            threads, offset = [], 0
            for i, container in enumerate(spec["containers"]):
                count = podrun.gpus_requested(container)
                ids, offset = gpu_ids[offset : offset + count], offset + count

                def run(i: int = i, container: dict = container, ids: list[int] = ids) -> None:
                    codes[i] = self.run_container(
                        container, volume_dirs, objects, ids, self.main_status, i, True
                    )

                threads.append(threading.Thread(target=run, daemon=True))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            succeeded = all(codes.get(i) == 0 for i in range(len(threads)))
            final = ("Succeeded" if succeeded else "Failed", True)
        finally:
            # Free the devices before the terminal phase is visible: the scheduler binds the next
            # GPU pod as soon as it sees this one finished, as a real kubelet's device manager allows.
            self.kubelet.release_gpus(gpu_ids)
            if final is not None:
                self.report(*final)

    def wait_for_objects(self) -> podrun.Objects | None:
        """ConfigMaps, Secrets and a token the pod uses; like a kubelet, wait until they exist."""
        configmaps, secrets, wants_token = podrun.referenced_objects(self.pod)
        core = self.kubelet.core
        while not self.kill.is_set():
            try:
                objects = podrun.Objects()
                for name in configmaps:
                    objects.configmaps[name] = (
                        core.read_namespaced_config_map(name, self.namespace).data or {}
                    )
                for name in secrets:
                    secret = self.kubelet.api.sanitize_for_serialization(
                        core.read_namespaced_secret(name, self.namespace)
                    )
                    objects.secrets[name] = podrun.decoded(secret)
                if wants_token:
                    request = {
                        "spec": {
                            "expirationSeconds": 3600,
                            "audiences": [],
                            "boundObjectRef": {
                                "apiVersion": "v1",
                                "kind": "Pod",
                                "name": self.name,
                                "uid": self.uid,
                            },
                        }
                    }
                    account = self.pod["spec"].get("serviceAccountName") or "default"
                    objects.token = core.create_namespaced_service_account_token(
                        account, self.namespace, request
                    ).status.token
                for claim in podrun.claim_names(self.pod):
                    objects.claims[claim] = str(self.claim_dir(claim))
                return objects
            except (ApiException, LookupError) as e:
                if isinstance(e, ApiException) and e.status != 404:
                    raise
                log.info("pod %s waits for what it uses: %s", self.name, getattr(e, "reason", e))
                self.kill.wait(2)
        return None

    def prepare_volumes(self, objects: podrun.Objects) -> dict[str, Path]:
        dirs: dict[str, Path] = {}
        for volume in self.pod["spec"].get("volumes") or []:
            local = self.dir / "volumes" / volume["name"]
            if "persistentVolumeClaim" in volume:
                local = Path(objects.claims[volume["persistentVolumeClaim"]["claimName"]])
            elif "hostPath" in volume:
                local = Path(volume["hostPath"]["path"])
            files = podrun.volume_files(self.pod, volume, objects)
            local.mkdir(parents=True, exist_ok=True)
            for relative, content in (files or {}).items():
                (local / relative).parent.mkdir(parents=True, exist_ok=True)
                (local / relative).write_text(content)
            dirs[volume["name"]] = local
        return dirs

    def claim_dir(self, claim: str) -> Path:
        """The bound PV's hostPath or local path, else a directory per claim; LookupError until bound."""
        core = self.kubelet.core
        volume_name = core.read_namespaced_persistent_volume_claim(
            claim, self.namespace
        ).spec.volume_name
        if not volume_name:
            raise LookupError(f"PersistentVolumeClaim {claim} is not bound yet")
        pv = core.read_persistent_volume(volume_name).spec
        if pv.host_path:
            return Path(pv.host_path.path)
        if pv.local:
            return Path(pv.local.path)
        return self.kubelet.state_dir / "claims" / self.namespace / claim

    def run_container(
        self,
        container: dict,
        volume_dirs: dict[str, Path],
        objects: podrun.Objects,
        gpu_ids: list[int],
        statuses: list[dict],
        index: int,
        initialized: bool,
    ) -> int:
        """Run one container to its end, restarting it as the pod's restartPolicy says."""
        policy = self.pod["spec"].get("restartPolicy") or "Always"
        kubelet, restarts = self.kubelet, 0
        root = podrun.image_root(container["image"], kubelet.images, kubelet.default_root)
        container_dir = self.dir / "containers" / container["name"]
        (container_dir / "home").mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(container)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        last_state: dict = {}  # containerStatuses is replaced whole on each patch: resend it

        def show(status: dict) -> None:
            statuses[index] = {**status, "lastState": last_state}

        while True:
            started = podrun.now()
            try:
                process = podrun.build_process(
                    self.pod,
                    container,
                    root=root,
                    volume_dirs=volume_dirs,
                    container_dir=container_dir,
                    objects=objects,
                    base_env=kubelet.base_env,
                    gpu_ids=gpu_ids,
                    unshare=kubelet.unshare,
                )
                process.termination_log.unlink(missing_ok=True)
                with open(log_path, "ab") as out:
                    proc = subprocess.Popen(
                        process.argv,
                        cwd=process.cwd,
                        env=process.env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
            except (OSError, ValueError) as e:  # no such executable: the runtime's StartError
                show(
                    podrun.terminated_status(
                        container, started, restarts, None, 128, str(e), "StartError"
                    )
                )
                code = 128
            else:
                show(podrun.running_status(container, started, restarts, proc.pid))
                self.report("Running" if initialized else "Pending", initialized)
                code = self.wait(proc)
                message = podrun.termination_message(
                    container, log_path, process.termination_log, code
                )
                show(
                    podrun.terminated_status(container, started, restarts, proc.pid, code, message)
                )
            if self.kill.is_set() or policy == "Never" or (policy == "OnFailure" and code == 0):
                return code
            restarts += 1
            last_state = statuses[index]["state"]
            show(
                {
                    **statuses[index],
                    "restartCount": restarts,
                    "ready": False,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }
            )
            self.report("Running" if initialized else "Pending", initialized)
            if self.kill.wait(min(2**restarts, 30)):
                return code

    def wait(self, proc: subprocess.Popen) -> int:
        """Wait for the process; on pod deletion SIGTERM its group, then SIGKILL after the grace period."""
        while proc.poll() is None:
            if self.kill.wait(0.2):
                self.signal(proc, signal.SIGTERM)
                try:
                    proc.wait(self.grace)
                except subprocess.TimeoutExpired:
                    self.signal(proc, signal.SIGKILL)
                    proc.wait()
        return podrun.exit_code_of(proc.returncode)

    @staticmethod
    def signal(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
