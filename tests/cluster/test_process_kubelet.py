"""Pods on a process-kubelet node really run, and the real Job controller and scheduler see it."""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import datetime
from pathlib import Path

import process_kubelet
import pytest
import testcluster
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster


def shell_job(name: str, node: str, script: str, gpus: int = 0) -> dict:
    """A Job with one `sh -c script` container pinned to `node`; it fails on the first error."""
    container = {"name": "train", "image": "trainer:latest", "command": ["sh", "-c", script]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "containers": [container],
                }
            },
        },
    }


def job_condition(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    """`Complete` or `Failed` once the Job controller has decided, else None."""
    status = batch.read_namespaced_job_status(name, namespace).status
    for cond in status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond.type
    return None


def job_pod(cluster, namespace: str, job: str) -> client.V1Pod | None:
    """The Job's one pod, once the Job controller has created it."""
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    assert len(pods) <= 1, [p.metadata.name for p in pods]
    return pods[0] if pods else None


def job_pod_phase(cluster, namespace: str, job: str) -> str | None:
    pod = job_pod(cluster, namespace, job)
    return pod.status.phase if pod else None


def test_gpu_jobs_run_one_at_a_time_on_a_one_gpu_node(cluster, namespace, process_node):
    node = process_node(f"gpu-{secrets.token_hex(3)}", gpus=1)
    batch = client.BatchV1Api(cluster.api)
    script = (
        "sleep {s}; echo gpus=$CUDA_VISIBLE_DEVICES; printf 'val_bpb: {v}' > /dev/termination-log"
    )
    batch.create_namespaced_job(
        namespace, shell_job("first", node.name, script.format(s=4, v=1.25), gpus=1)
    )
    testcluster.wait_for(
        lambda: job_pod_phase(cluster, namespace, "first") == "Running",
        30,
        "the first GPU pod to run",
    )
    batch.create_namespaced_job(
        namespace, shell_job("second", node.name, script.format(s=0, v=1.5), gpus=1)
    )

    def second_unschedulable():
        pod = job_pod(cluster, namespace, "second")
        if pod is None:
            return None
        return next(
            (
                c
                for c in pod.status.conditions or []
                if c.type == "PodScheduled" and c.reason == "Unschedulable"
            ),
            None,
        )

    waiting = testcluster.wait_for(
        second_unschedulable, 20, "the scheduler to hold the second GPU pod"
    )
    assert "Insufficient nvidia.com/gpu" in waiting.message

    testcluster.wait_for(
        lambda: job_condition(batch, namespace, "first"), 60, "the first Job to finish"
    )
    assert job_condition(batch, namespace, "first") == "Complete"
    first = job_pod(cluster, namespace, "first")
    done = first.status.container_statuses[0].state.terminated
    assert (done.exit_code, done.reason, done.message) == (0, "Completed", "val_bpb: 1.25")
    assert node.pod_log(namespace, first.metadata.name).strip() == "gpus=0"

    testcluster.wait_for(
        lambda: job_condition(batch, namespace, "second"), 60, "the second Job to finish"
    )
    assert job_condition(batch, namespace, "second") == "Complete"
    second = job_pod(cluster, namespace, "second").status.container_statuses[0].state.terminated
    assert second.message == "val_bpb: 1.5"
    assert second.started_at >= done.finished_at  # it ran only once the GPU was free


def test_a_failing_container_fails_its_job_with_exit_code_and_message(
    cluster, namespace, process_node
):
    node = process_node(f"cpu-{secrets.token_hex(3)}")
    batch = client.BatchV1Api(cluster.api)
    script = "echo boom >&2; printf 'diverged: loss is NaN' > /dev/termination-log; exit 3"
    batch.create_namespaced_job(namespace, shell_job("diverges", node.name, script))

    testcluster.wait_for(
        lambda: job_condition(batch, namespace, "diverges"), 60, "the Job to finish"
    )
    assert job_condition(batch, namespace, "diverges") == "Failed"
    reasons = {
        c.type: c.reason
        for c in batch.read_namespaced_job_status("diverges", namespace).status.conditions
    }
    assert reasons["Failed"] == "BackoffLimitExceeded"
    pod = job_pod(cluster, namespace, "diverges")
    done = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, done.exit_code, done.reason, done.message) == (
        "Failed",
        3,
        "Error",
        "diverged: loss is NaN",
    )
    assert node.pod_log(namespace, pod.metadata.name) == "boom\n"


def test_volumes_env_and_working_dir_are_mapped_to_local_paths(
    cluster, namespace, process_node, tmp_path
):
    image_root = tmp_path / "image"
    image_root.mkdir()
    (image_root / "train.py").write_text("print('from the image')\n")
    node = process_node(
        f"cpu-{secrets.token_hex(3)}", images={"registry.example/trainer": image_root}
    )

    cluster.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"lr": "0.004", "steps": "10"}}
    )
    data = tmp_path / "pv"
    volume_name = f"pv-{namespace}"
    cluster.core.create_persistent_volume(
        {
            "metadata": {"name": volume_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "manual",
                "hostPath": {"path": str(data), "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": namespace, "name": "data"},
            },
        }
    )
    try:
        cluster.core.create_namespaced_persistent_volume_claim(
            namespace,
            {
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "manual",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        script = (
            "python train.py > /data/out.txt; cat /etc/settings/lr >> /data/out.txt; echo >> /data/out.txt;"
            ' echo "$POD $STEPS $LR" >> /data/out.txt; touch /scratch/x && echo scratch >> /data/out.txt'
        )
        cluster.core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": "mapped"},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeName": node.name,
                    "containers": [
                        {
                            "name": "c",
                            "image": "registry.example/trainer:v1",
                            "command": ["sh", "-c", script],
                            "env": [
                                {
                                    "name": "POD",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                                {
                                    "name": "LR",
                                    "valueFrom": {
                                        "configMapKeyRef": {"name": "settings", "key": "lr"}
                                    },
                                },
                                {"name": "STEPS", "value": "$(LR)x"},
                            ],
                            "volumeMounts": [
                                {"name": "settings", "mountPath": "/etc/settings"},
                                {"name": "data", "mountPath": "/data"},
                                {"name": "scratch", "mountPath": "/scratch"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "settings", "configMap": {"name": "settings"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                        {"name": "scratch", "emptyDir": {}},
                    ],
                },
            },
        )

        def finished():
            phase = cluster.core.read_namespaced_pod_status("mapped", namespace).status.phase
            return phase if phase in ("Succeeded", "Failed") else None

        phase = testcluster.wait_for(finished, 60, "the pod to finish")
        assert phase == "Succeeded", node.pod_log(namespace, "mapped")
        assert (data / "out.txt").read_text().splitlines() == [
            "from the image",
            "0.004",
            "mapped 0.004x 0.004",
            "scratch",
        ]
    finally:
        cluster.core.delete_persistent_volume(volume_name)


def run_then_delete(
    cluster, namespace: str, node, name: str, script: str, grace: int
) -> tuple[int, float]:
    """Start a pod running `sh -c script`, delete it once it runs; (its process's pid, seconds
    from the delete until the pod was gone)."""
    cluster.core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "nodeName": node.name,
                "terminationGracePeriodSeconds": grace,
                "containers": [{"name": "c", "image": "any", "command": ["sh", "-c", script]}],
            },
        },
    )

    def running_pid():
        status = cluster.core.read_namespaced_pod_status(name, namespace).status
        if status.phase == "Running":
            return int(status.container_statuses[0].container_id.removeprefix("process://"))
        return None

    pid = testcluster.wait_for(running_pid, 30, "the pod to run")
    started = datetime.now()
    cluster.core.delete_namespaced_pod(name, namespace)

    def gone() -> bool:
        try:
            cluster.core.read_namespaced_pod(name, namespace)
            return False
        except ApiException as e:
            return e.status == 404

    testcluster.wait_for(gone, 15 + grace, "the pod to be deleted")
    return pid, (datetime.now() - started).total_seconds()


def test_deleting_a_running_pod_stops_its_process(cluster, namespace, process_node):
    node = process_node(f"cpu-{secrets.token_hex(3)}")
    # The container's process is PID 1, which, as under a container runtime, ends on SIGTERM
    # only if it handles it.
    pid, seconds = run_then_delete(
        cluster, namespace, node, "sleeper", "trap 'exit 0' TERM; sleep 300 & wait", grace=5
    )
    assert seconds < 5  # SIGTERM ended it before the grace period
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_container_is_pid_1_of_its_own_pid_namespace(cluster, namespace, process_node):
    """What the harness's `--sandbox container` needs: a real runtime starts it as PID 1."""
    if process_kubelet.pid_namespace_runner() is None:
        pytest.skip("no PID namespaces here (the process kubelet needs root and unshare)")
    node = process_node(f"cpu-{secrets.token_hex(3)}")
    batch = client.BatchV1Api(cluster.api)
    script = 'printf "pid $$$$" > /dev/termination-log'  # $$ is a pod command's escaped $
    batch.create_namespaced_job(namespace, shell_job("pid", node.name, script))
    testcluster.wait_for(lambda: job_condition(batch, namespace, "pid"), 60, "the Job to finish")
    done = job_pod(cluster, namespace, "pid").status.container_statuses[0].state.terminated
    assert (done.exit_code, done.message) == (0, "pid 1")


def test_what_a_container_started_dies_with_it_even_outside_its_process_group(
    cluster, namespace, process_node
):
    """PID 1 ignores SIGTERM, so the pod is killed after its grace period; a child that left
    the process group (setsid), which a signal to the group misses, goes with PID 1."""
    if process_kubelet.pid_namespace_runner() is None:
        pytest.skip("no PID namespaces here (the process kubelet needs root and unshare)")
    node = process_node(f"cpu-{secrets.token_hex(3)}")
    marker = f"{3000 + secrets.randbelow(1000)}.{secrets.randbelow(10**6):06d}"
    pid, seconds = run_then_delete(
        cluster, namespace, node, "escaper", f"setsid sleep {marker} & exec sleep 300", grace=2
    )
    assert seconds >= 2  # SIGTERM did nothing; SIGKILL came after the grace period
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    def left_behind() -> list[str]:
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                if marker.encode() in cmdline.read_bytes():
                    found.append(cmdline.parent.name)
        return found

    testcluster.wait_for(lambda: not left_behind(), 5, "the escaped child to die")


def test_init_containers_run_first_and_on_failure_restarts_the_container(
    cluster, namespace, process_node
):
    node = process_node(f"cpu-{secrets.token_hex(3)}")
    # The main container fails until the init container's file has been seen once.
    script = "test -e /work/seen && exit 0; test -e /work/ready && touch /work/seen; exit 1"
    cluster.core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "retry"},
            "spec": {
                "nodeName": node.name,
                "restartPolicy": "OnFailure",
                "initContainers": [
                    {
                        "name": "init",
                        "image": "i",
                        "command": ["touch", "/work/ready"],
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                    }
                ],
                "containers": [
                    {
                        "name": "main",
                        "image": "i",
                        "command": ["sh", "-c", script],
                        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                    }
                ],
                "volumes": [{"name": "work", "emptyDir": {}}],
            },
        },
    )

    def finished():
        status = cluster.core.read_namespaced_pod_status("retry", namespace).status
        return status if status.phase in ("Succeeded", "Failed") else None

    status = testcluster.wait_for(finished, 30, "the pod to finish")
    assert status.phase == "Succeeded"
    assert status.init_container_statuses[0].state.terminated.exit_code == 0
    main = status.container_statuses[0]
    assert (main.restart_count, main.state.terminated.exit_code) == (1, 0)
    assert main.last_state.terminated.exit_code == 1
