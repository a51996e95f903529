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
# The trainer image keeps harness.py and prepare.py in /app. Commands name them relative to
# workingDir /app, so the same Job also runs where an image is just a directory (the process
# kubelet of hack/cluster runs a container in its image's directory).
APP_DIR = "/app"
HARNESS = "harness.py"
PREPARE = "prepare.py"
TTL_AFTER_FINISHED = 3600
POD_MARGIN_SECONDS = (
    600  # image pull, scheduling and the evaluate container, past the harness's kill
)


def experiment_job_name(org: str, experiment: int) -> str:
    """Deterministic, so re-creating a Job after an operator restart is a no-op (409)."""
    return _name_with_suffix(org, f"-exp-{experiment:05d}")


def prepare_job_name(data_claim: str) -> str:
    """One prepare Job per data claim (all orgs of a namespace share the prepared data)."""
    return _name_with_suffix(data_claim, "-prepare")


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


def _name_with_suffix(base: str, suffix: str) -> str:
    """`base + suffix`, shortened with a hash of `base` to stay a 63-character DNS label."""
    if len(base) + len(suffix) <= 63:
        return base + suffix
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    return f"{base[: 63 - len(suffix) - 7]}-{digest}{suffix}"


def _restricted_container() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _locked_down_pod() -> dict[str, Any]:
    return {
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
        "workingDir": APP_DIR,
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
        # Should the harness itself fail here, its last log lines become the crash's log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "data", "mountPath": "/data/train", "subPath": "train", "readOnly": True},
            {"name": "candidate", "mountPath": "/candidate", "readOnly": True},
            *mounts,
        ],
    }
    evaluate = {
        "name": "evaluate",
        "image": trainer.image,
        "workingDir": APP_DIR,
        "command": [
            "python",
            HARNESS,
            "--phase",
            "evaluate",
            *common,
            "--termination-log",
            "/dev/termination-log",
        ],
        "resources": trainer.resources,
        "securityContext": _restricted_container(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}, *mounts],
    }
    pod_spec: dict[str, Any] = {
        **_locked_down_pod(),
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
            # the harness kills training at budget + grace; evaluation and pod start come on top
            "activeDeadlineSeconds": trainer.timeBudgetSeconds
            + trainer.grace_seconds
            + POD_MARGIN_SECONDS,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }


def prepare_job(
    namespace: str,
    *,
    image: str,
    data_claim: str,
    sources: list[str] | tuple[str, ...],
    vocab_size: int | None = None,
) -> dict[str, Any]:
    """The Job that tokenizes the corpus into the data claim once (prepare.py is idempotent).

    Shared by every org of the namespace, so no org owns it; it expires after TTL_AFTER_FINISHED
    and the next org to start re-creates it, which then finds the work done.
    """
    if not sources:
        raise ValueError("prepare_job needs at least one source")
    command = ["python", PREPARE, "--data-dir", "/data"]
    for source in sources:
        command += ["--source", source]
    if vocab_size:
        command += ["--vocab-size", str(vocab_size)]
    job_labels = {**MANAGED_BY, LABEL_COMPONENT: "prepare"}
    container = {
        "name": "prepare",
        "image": image,
        "workingDir": APP_DIR,
        "command": command,
        "env": [{"name": "HOME", "value": "/tmp"}],  # libraries may cache under $HOME
        "securityContext": _restricted_container(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": prepare_job_name(data_claim),
            "namespace": namespace,
            "labels": job_labels,
            "annotations": {f"{API_GROUP}/sources": " ".join(sources)},
        },
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "template": {
                "metadata": {"labels": job_labels},
                "spec": {
                    **_locked_down_pod(),
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": data_claim}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
