import math

from autoresearch_operator.k8s.builders import (
    LABEL_EXPERIMENT,
    LABEL_ORG,
    POD_MARGIN_SECONDS,
    candidate_configmap,
    experiment_job,
    experiment_job_name,
)
from autoresearch_operator.spec import EVALUATION_SECONDS, EXPORT_SECONDS, org_from_resource

BODY = {
    "apiVersion": "autoresearch.dev/v1alpha1",
    "kind": "ResearchOrg",
    "metadata": {"name": "explorer", "namespace": "research", "uid": "u-123"},
    "spec": {"program": "x", "trainer": {"timeBudgetSeconds": 300, "queueName": "gpu-queue",
             "nodeSelector": {"gpu": "h200"}}},
}  # fmt: skip


def job(n: int = 7, **extra):
    return experiment_job(
        org_from_resource(BODY), BODY, n, "a" * 40, data_claim="autoresearch-data", **extra
    )


def containers(j: dict) -> tuple[dict, dict]:
    pod = j["spec"]["template"]["spec"]
    [train], [evaluate] = pod["initContainers"], pod["containers"]
    return train, evaluate


def flag(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def test_job_name_is_deterministic_and_a_valid_label_for_long_org_names():
    assert experiment_job_name("explorer", 7, 0) == "explorer-exp-00007-run-0"
    assert experiment_job_name("explorer", 7, 3) == "explorer-exp-00007-run-3"
    long = "o" * 63
    name = experiment_job_name(long, 12, 2)
    assert len(name) <= 63 and name.endswith("-exp-00012-run-2")
    assert name == experiment_job_name(long, 12, 2) != experiment_job_name("o" * 62 + "p", 12, 2)


def test_job_is_owned_labelled_and_bounded_in_time():
    j = job()
    meta, spec = j["metadata"], j["spec"]
    assert meta["ownerReferences"][0] | {} == {
        "apiVersion": "autoresearch.dev/v1alpha1", "kind": "ResearchOrg", "name": "explorer",
        "uid": "u-123", "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip
    assert meta["labels"][LABEL_ORG] == "explorer" and meta["labels"][LABEL_EXPERIMENT] == "7"
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert spec["backoffLimit"] == 0
    # the harness's window (start-up 120 by default for 'full' + budget + export), then its
    # evaluation; the Job allows the pod's start on top
    window = 120 + 300 + EXPORT_SECONDS["full"]
    assert spec["activeDeadlineSeconds"] == window + EVALUATION_SECONDS["full"] + POD_MARGIN_SECONDS
    assert spec["ttlSecondsAfterFinished"] > 0


def test_both_phases_get_the_same_window_and_seed_and_training_runs_as_the_containers_pid_1():
    train, evaluate = containers(job(seed=5))
    for c in (train, evaluate):
        assert c["command"][:2] == ["python", "harness.py"]
        assert flag(c["command"], "--time-budget") == "300"
        assert flag(c["command"], "--startup-seconds") == "120"
        assert flag(c["command"], "--profile") == "full"
        assert flag(c["command"], "--seed") == "5"
        assert flag(c["command"], "--sandbox") == "container"
        assert "--grace" not in c["command"]
    assert flag(train["command"], "--phase") == "train"
    assert flag(train["command"], "--train-py") == "/candidate/train.py"
    assert flag(evaluate["command"], "--phase") == "evaluate"
    assert flag(evaluate["command"], "--termination-log") == "/dev/termination-log"
    assert evaluate["terminationMessagePath"] == "/dev/termination-log"


def test_training_mounts_only_the_train_split_and_evaluation_only_val_when_no_test_is_asked():
    train, evaluate = containers(job())
    assert [m for m in train["volumeMounts"] if m["name"] == "data"] == [
        {"name": "data", "mountPath": "/data/train", "subPath": "train", "readOnly": True}
    ]
    assert [m for m in evaluate["volumeMounts"] if m["name"] == "data"] == [
        {"name": "data", "mountPath": "/data/val", "subPath": "val", "readOnly": True}
    ]
    assert "--test-if-val-below" not in evaluate["command"]
    assert "--test-if-val-below" not in train["command"]


def test_the_test_split_is_mounted_into_evaluation_only_when_this_experiment_asks_for_it():
    for threshold, value in ((math.inf, "inf"), (1.2345, "1.2345")):
        train, evaluate = containers(job(test_if_val_below=threshold))
        assert flag(evaluate["command"], "--test-if-val-below") == value
        assert {"name": "data", "mountPath": "/data/test", "subPath": "test", "readOnly": True} in (
            evaluate["volumeMounts"]
        )
        assert "--test-if-val-below" not in train["command"]
        assert not any("test" in m["mountPath"] for m in train["volumeMounts"])


def test_evaluation_has_its_own_tmp_not_the_one_the_training_side_wrote():
    j = job()
    train, evaluate = containers(j)
    tmp = {c["name"]: next(m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
           for c in (train, evaluate)}  # fmt: skip
    assert tmp["train"] != tmp["evaluate"]
    volumes = {v["name"]: v for v in j["spec"]["template"]["spec"]["volumes"]}
    assert volumes[tmp["evaluate"]] == {"name": tmp["evaluate"], "emptyDir": {"sizeLimit": "20Gi"}}
    # the exported weights are the one thing evaluation reads from the training side
    assert {"name": "work", "mountPath": "/work"} in evaluate["volumeMounts"]


def test_trainer_pod_is_locked_down_and_carries_no_credentials():
    pod = job()["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["nodeSelector"] == {"gpu": "h200"}
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "env" not in c and "envFrom" not in c  # no API key ever reaches a trainer
        # the org's own resources, and never an unbounded disk: a limit of its scratchSize
        assert c["resources"] == {"limits": {"nvidia.com/gpu": 1, "ephemeral-storage": "20Gi"}}
    assert pod["securityContext"]["runAsUser"] >= 10000
    scratch = [v for v in pod["volumes"] if "emptyDir" in v]
    assert len(scratch) == 3 and all(v["emptyDir"] == {"sizeLimit": "20Gi"} for v in scratch)


def test_candidate_configmap_is_owned_by_its_job():
    j = job()
    j["metadata"]["uid"] = "job-uid"
    cm = candidate_configmap(j, "print('hi')\n")
    assert cm["metadata"]["name"] == "explorer-exp-00007-run-0-train-py"
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "job-uid"
    assert cm["data"] == {"train.py": "print('hi')\n"}
    volumes = {v["name"]: v for v in j["spec"]["template"]["spec"]["volumes"]}
    assert volumes["candidate"]["configMap"]["name"] == cm["metadata"]["name"]


def test_verification_runs_prefer_the_gpu_type_of_their_experiments_other_runs():
    assert "affinity" not in job(7, run=0)["spec"]["template"]["spec"]
    confirm = job(7, run=3)
    (term,) = confirm["spec"]["template"]["spec"]["affinity"]["podAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "nvidia.com/gpu.product"
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    pod_labels = confirm["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()  # the pair's pods match each other
    assert (
        selector["autoresearch.dev/experiment"] == "7" and pod_labels["autoresearch.dev/run"] == "3"
    )
