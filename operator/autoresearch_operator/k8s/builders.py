"""Pure builders for what the operator creates: plain dicts in, plain dicts out.

One place sets names, labels, owner references and the trainer pod's lockdown, so every object
the operator makes is findable by label, garbage-collected with its owner, and least-privileged.

The experiment pod splits the trusted harness in two so the training code never sees the val
split: an init container `train` (the candidate's train.py, only data/train mounted, killed at
budget + grace) and a container `evaluate` (the harness alone, val mounted) that writes the result
JSON to its termination message.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..spec import API_GROUP, API_VERSION, KIND, Org

LABEL_ORG = f"{API_GROUP}/org"
LABEL_EXPERIMENT = f"{API_GROUP}/experiment"
LABEL_COMMIT = f"{API_GROUP}/commit"
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = {
    "app.kubernetes.io/managed-by": "autoresearch-operator",
    "app.kubernetes.io/part-of": "autoresearch",
}
TRAINER_UID = 1000
HARNESS = "/app/harness.py"
TTL_AFTER_FINISHED = 3600


def experiment_job_name(org: str, experiment: int) -> str:
    """Deterministic, so re-creating a Job after an operator restart is a no-op (409)."""
    suffix = f"-exp-{experiment:05d}"
    if len(org) + len(suffix) <= 63:
        return org + suffix
    digest = hashlib.sha256(org.encode()).hexdigest()[:6]
    return f"{org[: 63 - len(suffix) - 7]}-{digest}{suffix}"


def labels(org: str, component: str, **extra: str) -> dict[str, str]:
    return {**MANAGED_BY, LABEL_ORG: org, LABEL_COMPONENT: component, **extra}


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """An owner reference to a body we read from the API (ResearchOrg or Job)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def org_owner(org_body: dict[str, Any]) -> dict[str, Any]:
    return owner_reference({**org_body, "apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND})


def candidate_configmap(job_body: dict[str, Any], train_py: str) -> dict[str, Any]:
    """The candidate train.py, owned by its Job so both go away together."""
    meta = job_body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{meta['name']}-train-py",
            "namespace": meta["namespace"],
            "labels": dict(meta["labels"]),
            "ownerReferences": [
                owner_reference({**job_body, "apiVersion": "batch/v1", "kind": "Job"})
            ],
        },
        "data": {"train.py": train_py},
    }


def _restricted_container() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def experiment_job(
    org: Org,
    org_body: dict[str, Any],
    experiment: int,
    commit: str,
    *,
    data_claim: str,
) -> dict[str, Any]:
    """The Job that trains and evaluates one candidate. The train.py ConfigMap is made after it."""
    trainer = org.spec.trainer
    namespace = org_body["metadata"]["namespace"]
    name = experiment_job_name(org.name, experiment)
    job_labels = labels(
        org.name, "experiment", **{LABEL_EXPERIMENT: str(experiment), LABEL_COMMIT: commit[:40]}
    )
    if trainer.queueName:
        job_labels["kueue.x-k8s.io/queue-name"] = trainer.queueName
    common = [
        "--data-dir", "/data",
        "--output-dir", "/work",
        "--time-budget", str(trainer.timeBudgetSeconds),
        "--grace", str(trainer.grace_seconds),
        "--profile", trainer.profile,
        "--sandbox", "none",  # the val split is not mounted into the training container at all
    ]  # fmt: skip
    mounts = [{"name": "work", "mountPath": "/work"}, {"name": "tmp", "mountPath": "/tmp"}]
    train = {
        "name": "train",
        "image": trainer.image,
        "command": [
            "python",
            HARNESS,
            "--phase",
            "train",
            "--train-py",
            "/candidate/train.py",
            *common,
        ],
        "resources": trainer.resources,
        "securityContext": _restricted_container(),
        "volumeMounts": [
            {"name": "data", "mountPath": "/data/train", "subPath": "train", "readOnly": True},
            {"name": "candidate", "mountPath": "/candidate", "readOnly": True},
            *mounts,
        ],
    }
    evaluate = {
        "name": "evaluate",
        "image": trainer.image,
        "command": ["python", HARNESS, "--phase", "evaluate", *common],
        "resources": trainer.resources,
        "securityContext": _restricted_container(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}, *mounts],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [train],
        "containers": [evaluate],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": data_claim, "readOnly": True}},
            {"name": "candidate", "configMap": {"name": f"{name}-train-py"}},
            {"name": "work", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if trainer.nodeSelector:
        pod_spec["nodeSelector"] = dict(trainer.nodeSelector)
    if trainer.tolerations:
        pod_spec["tolerations"] = list(trainer.tolerations)
    if trainer.priorityClassName:
        pod_spec["priorityClassName"] = trainer.priorityClassName
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": job_labels,
            "annotations": {
                f"{API_GROUP}/description": f"candidate train.py of experiment {experiment}"
            },
            "ownerReferences": [org_owner(org_body)],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": trainer.timeBudgetSeconds + trainer.grace_seconds,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }
