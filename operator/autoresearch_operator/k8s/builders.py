"""Pure builders for what the operator creates: plain dicts in, plain dicts out.

One place sets names, labels, owner references and the trainer pod's lockdown, so every object
the operator makes is findable by label, garbage-collected with its owner, and least-privileged.

The experiment pod splits the trusted harness in two so the training code never sees the val or
test split: an init container `train` (the harness as the container's PID 1 with the candidate's
train.py as its child, only data/train mounted, killed at the end of its window: start-up +
budget + export) and a container `evaluate` (the harness alone, with its own /tmp, only data/val
mounted, and data/test only when this experiment asks for a test score) that writes the result
JSON to its termination message.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..harness_cli import harness_args
from ..spec import API_GROUP, API_VERSION, KIND, Org

LABEL_ORG = f"{API_GROUP}/org"
LABEL_EXPERIMENT = f"{API_GROUP}/experiment"
LABEL_RUN = f"{API_GROUP}/run"
# Set on GPU nodes by NVIDIA's GPU feature discovery (e.g. NVIDIA-H100-80GB-HBM3): a confirmation
# run and its champion re-run prefer the same value, so a faster GPU type never looks like a
# better candidate. Nodes without it are scheduled as usual.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
LABEL_COMMIT = f"{API_GROUP}/commit"
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = {
    "app.kubernetes.io/managed-by": "autoresearch-operator",
    "app.kubernetes.io/part-of": "autoresearch",
}
# Above 10000, so it is no user of the node (the trainer image creates this user too).
TRAINER_UID = 10100
NETWORK_POLICY = "autoresearch-experiments"
PREPARE_TMP_SIZE = "4Gi"
# The trainer image keeps harness.py and prepare.py in /app. Commands name them relative to
# workingDir /app, so the same Job also runs where an image is just a directory (the process
# kubelet of hack/cluster runs a container in its image's directory).
APP_DIR = "/app"
HARNESS = "harness.py"
PREPARE = "prepare.py"
TTL_AFTER_FINISHED = 3600
# Past the harness's own limits: image pull, scheduling and two interpreter start-ups.
POD_MARGIN_SECONDS = 600


def experiment_job_name(org: str, experiment: int, run: int) -> str:
    """One Job per run of an experiment (core/policy.py numbers them). Deterministic, so
    re-creating a Job after an operator restart is a no-op (409) and the running one is adopted."""
    return _name_with_suffix(org, f"-exp-{experiment:05d}-run-{run}")


def same_gpu_type_as_experiment(org: str, experiment: int) -> dict[str, Any]:
    """Prefer a node with the GPU product of the experiment's other running pods (its paired
    run), so each confirmation run and its champion re-run meet the same hardware."""
    return {
        "podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {
                            "matchLabels": {LABEL_ORG: org, LABEL_EXPERIMENT: str(experiment)}
                        },
                        "topologyKey": GPU_PRODUCT_LABEL,
                    },
                }
            ]
        }
    }


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


def experiment_pod_selector() -> dict[str, str]:
    """Exactly the experiment pods (never the prepare Job's, which downloads its sources)."""
    return {"app.kubernetes.io/managed-by": MANAGED_BY["app.kubernetes.io/managed-by"],
            LABEL_COMPONENT: "experiment"}  # fmt: skip


def network_policy(namespace: str) -> dict[str, Any]:
    """Deny all ingress and egress of the experiment pods: candidate code can reach neither the
    internet (a downloaded checkpoint would cheat the metric), nor in-cluster services, the API
    server or the cloud metadata endpoint. Enforced only by a CNI that implements policies."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": NETWORK_POLICY,
            "namespace": namespace,
            "labels": {**MANAGED_BY, LABEL_COMPONENT: "experiment"},
            "annotations": {
                f"{API_GROUP}/description": "no network for code an LLM wrote: experiment pods "
                "may neither send nor receive anything"
            },
        },
        "spec": {
            "podSelector": {"matchLabels": experiment_pod_selector()},
            "policyTypes": ["Ingress", "Egress"],  # and no rule of either kind: nothing passes
        },
    }


def bounded(resources: dict[str, Any], scratch: str) -> dict[str, Any]:
    """`resources` with an ephemeral-storage limit of `scratch` when it has no say on it."""
    out = {k: dict(v) for k, v in resources.items()}
    if not any("ephemeral-storage" in (out.get(k) or {}) for k in ("requests", "limits")):
        out.setdefault("limits", {})["ephemeral-storage"] = scratch
    return out


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
    run: int = 0,
    seed: int = 0,
    test_if_val_below: float | None = None,
) -> dict[str, Any]:
    """The Job that trains and evaluates one run of an experiment: `commit` is what it trains
    (the candidate, or the best for a champion re-run). The train.py ConfigMap is made after it.

    `seed` orders the training data; `test_if_val_below`, when set, asks the evaluation to score
    the held-out test split too if val_bpb is below it (and only then is that split mounted).
    """
    trainer = org.spec.trainer
    namespace = org_body["metadata"]["namespace"]
    name = experiment_job_name(org.name, experiment, run)
    job_labels = labels(
        org.name,
        "experiment",
        **{LABEL_EXPERIMENT: str(experiment), LABEL_RUN: str(run), LABEL_COMMIT: commit[:40]},
    )
    if trainer.queueName:
        job_labels["kueue.x-k8s.io/queue-name"] = trainer.queueName

    def harness(phase: str, **extra: Any) -> list[str]:
        return ["python", HARNESS, *harness_args(
            phase=phase, data_dir="/data", output_dir="/work", profile=trainer.profile,
            time_budget=trainer.timeBudgetSeconds, startup_seconds=trainer.startup_seconds,
            seed=seed, sandbox="container", **extra,
        )]  # fmt: skip

    resources = bounded(trainer.resources, trainer.scratchSize)  # both containers alike
    train = {
        "name": "train",
        "image": trainer.image,
        "workingDir": APP_DIR,
        # The harness is PID 1 of the container: nothing the candidate starts outlives it.
        "command": harness("train", train_py="/candidate/train.py"),
        "resources": resources,
        "securityContext": _restricted_container(),
        # Should the harness itself fail here, its last log lines become the crash's log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "data", "mountPath": "/data/train", "subPath": "train", "readOnly": True},
            {"name": "candidate", "mountPath": "/candidate", "readOnly": True},
            {"name": "work", "mountPath": "/work"},
            {"name": "train-tmp", "mountPath": "/tmp"},
        ],
    }
    held_out = (
        [{"name": "data", "mountPath": "/data/test", "subPath": "test", "readOnly": True}]
        if test_if_val_below is not None
        else []
    )
    evaluate = {
        "name": "evaluate",
        "image": trainer.image,
        "workingDir": APP_DIR,
        "command": harness(
            "evaluate",
            test_if_val_below=test_if_val_below,
            termination_log="/dev/termination-log",
        ),
        "resources": resources,
        "securityContext": _restricted_container(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # /work is what the training side left (hostile: the harness reads only the exported
        # weights from it); /tmp is the evaluation's own, never the one training wrote.
        "volumeMounts": [
            {"name": "data", "mountPath": "/data/val", "subPath": "val", "readOnly": True},
            *held_out,
            {"name": "work", "mountPath": "/work"},
            {"name": "evaluate-tmp", "mountPath": "/tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        **_locked_down_pod(),
        "initContainers": [train],
        "containers": [evaluate],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": data_claim, "readOnly": True}},
            {"name": "candidate", "configMap": {"name": f"{name}-train-py"}},
            # bounded: a candidate that writes without end is evicted, the node's disk is not full
            {"name": "work", "emptyDir": {"sizeLimit": trainer.scratchSize}},
            {"name": "train-tmp", "emptyDir": {"sizeLimit": trainer.scratchSize}},
            {"name": "evaluate-tmp", "emptyDir": {"sizeLimit": trainer.scratchSize}},
        ],
    }
    if trainer.nodeSelector:
        pod_spec["nodeSelector"] = dict(trainer.nodeSelector)
    if trainer.tolerations:
        pod_spec["tolerations"] = list(trainer.tolerations)
    if trainer.priorityClassName:
        pod_spec["priorityClassName"] = trainer.priorityClassName
    if run > 0:  # confirmation runs and champion re-runs: beside the other runs of this experiment
        pod_spec["affinity"] = same_gpu_type_as_experiment(org.name, experiment)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": job_labels,
            "annotations": {
                f"{API_GROUP}/description": f"experiment {experiment}, run {run}: train.py of "
                f"commit {commit[:7]}, seed {seed}"
            },
            "ownerReferences": [org_owner(org_body)],
        },
        "spec": {
            "backoffLimit": 0,
            # the harness's own limits (its window, then its evaluation) and the pod's start
            "activeDeadlineSeconds": trainer.harness_deadline_seconds + POD_MARGIN_SECONDS,
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
    resources: dict[str, Any] | None = None,
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
        "resources": bounded(resources or {}, PREPARE_TMP_SIZE),
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
                        {"name": "tmp", "emptyDir": {"sizeLimit": PREPARE_TMP_SIZE}},
                    ],
                },
            },
        },
    }
