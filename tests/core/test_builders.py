from autoresearch_operator.k8s.builders import (
    LABEL_EXPERIMENT,
    LABEL_ORG,
    POD_MARGIN_SECONDS,
    candidate_configmap,
    experiment_job,
    experiment_job_name,
)
from autoresearch_operator.spec import org_from_resource

BODY = {
    "apiVersion": "autoresearch.dev/v1alpha1",
    "kind": "ResearchOrg",
    "metadata": {"name": "explorer", "namespace": "research", "uid": "u-123"},
    "spec": {"program": "x", "trainer": {"timeBudgetSeconds": 300, "queueName": "gpu-queue",
             "nodeSelector": {"gpu": "h200"}}},
}  # fmt: skip


def job(n: int = 7):
    return experiment_job(
        org_from_resource(BODY), BODY, n, "a" * 40, data_claim="autoresearch-data"
    )


def test_job_name_is_deterministic_and_a_valid_label_for_long_org_names():
    assert experiment_job_name("explorer", 7) == "explorer-exp-00007"
    long = "o" * 63
    name = experiment_job_name(long, 12)
    assert len(name) <= 63 and name.endswith("-exp-00012")
    assert name == experiment_job_name(long, 12) != experiment_job_name("o" * 62 + "p", 12)


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
    # the harness kills at budget + grace; the Job allows evaluation and start-up on top
    assert spec["activeDeadlineSeconds"] == 300 + 60 + 60 + POD_MARGIN_SECONDS
    assert spec["ttlSecondsAfterFinished"] > 0


def test_training_container_never_mounts_the_val_split_and_evaluation_does():
    pod = job()["spec"]["template"]["spec"]
    [train], [evaluate] = pod["initContainers"], pod["containers"]
    data_mounts = [m for m in train["volumeMounts"] if m["name"] == "data"]
    assert data_mounts == [
        {"name": "data", "mountPath": "/data/train", "subPath": "train", "readOnly": True}
    ]
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in evaluate["volumeMounts"]
    assert evaluate["terminationMessagePath"] == "/dev/termination-log"


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
        assert c["resources"] == {"limits": {"nvidia.com/gpu": 1}}


def test_candidate_configmap_is_owned_by_its_job():
    j = job()
    j["metadata"]["uid"] = "job-uid"
    cm = candidate_configmap(j, "print('hi')\n")
    assert cm["metadata"]["name"] == "explorer-exp-00007-train-py"
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "job-uid"
    assert cm["data"] == {"train.py": "print('hi')\n"}
    volumes = {v["name"]: v for v in j["spec"]["template"]["spec"]["volumes"]}
    assert volumes["candidate"]["configMap"]["name"] == cm["metadata"]["name"]
