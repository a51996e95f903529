"""How the process kubelet maps a container onto a local process (no cluster needed)."""

from __future__ import annotations

import json
from pathlib import Path

import podrun


def pod_with(container: dict, volumes: list[dict] | None = None) -> dict:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"}},
        "spec": {"nodeName": "n", "containers": [container], "volumes": volumes or []},
    }


def test_mount_paths_are_rewritten_only_at_path_boundaries():
    mounts = {"/data": "/tmp/v/data", "/data/cache": "/tmp/v/cache"}
    assert (
        podrun.rewrite_paths("--out=/data/run1 --cache /data/cache/x", mounts)
        == "--out=/tmp/v/data/run1 --cache /tmp/v/cache/x"
    )
    assert (
        podrun.rewrite_paths("/database /x/data /data", mounts) == "/database /x/data /tmp/v/data"
    )


def test_dollar_paren_expansion_follows_kubernetes_rules():
    env = {"A": "1"}
    assert podrun.expand_vars("$(A)-$(B)-$$(A)", env) == "1-$(B)-$(A)"


def test_images_map_by_reference_then_name_then_default(tmp_path):
    images = {"ghcr.io/x/trainer": tmp_path / "t", "cpu:v2": tmp_path / "c"}
    assert podrun.image_root("ghcr.io/x/trainer:v1", images, tmp_path) == tmp_path / "t"
    assert podrun.image_root("ghcr.io/x/trainer@sha256:ab", images, tmp_path) == tmp_path / "t"
    assert podrun.image_root("cpu:v2", images, tmp_path) == tmp_path / "c"
    assert podrun.image_root("cpu:v3", images, tmp_path) == tmp_path


def test_process_gets_rewritten_command_env_gpus_and_termination_log(tmp_path):
    container = {
        "name": "train",
        "image": "trainer",
        "command": ["python", "train.py"],
        "args": ["--out", "/runs/$(RUN)", "--msg", "/dev/termination-log"],
        "env": [
            {"name": "RUN", "value": "r1"},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ],
        "volumeMounts": [{"name": "runs", "mountPath": "/runs"}],
        "workingDir": "/runs",
    }
    process = podrun.build_process(
        pod_with(container),
        container,
        root=tmp_path / "image",
        volume_dirs={"runs": tmp_path / "v"},
        container_dir=tmp_path / "c",
        objects=podrun.Objects(),
        base_env={"PATH": "/bin"},
        gpu_ids=[1],
    )
    log = str(tmp_path / "c" / "termination-log")
    assert process.argv == ["python", "train.py", "--out", f"{tmp_path}/v/r1", "--msg", log]
    assert process.cwd == str(tmp_path / "v")
    assert (process.env["RUN"], process.env["NODE"], process.env["APP"]) == ("r1", "n", "a")
    assert process.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert json.loads(process.env["PROCESS_KUBELET_MOUNTS"])["/runs"] == str(tmp_path / "v")


def test_with_unshare_the_process_is_pid_1_of_its_own_pid_namespace(tmp_path):
    container = {"name": "train", "image": "trainer", "command": ["python", "harness.py"]}
    process = podrun.build_process(
        pod_with(container), container, root=tmp_path, volume_dirs={}, container_dir=tmp_path / "c",
        objects=podrun.Objects(), base_env={}, gpu_ids=None, unshare="/usr/bin/unshare",
    )  # fmt: skip
    # --kill-child: the kubelet signals unshare's group, and unshare's death takes PID 1 along
    assert process.argv == [
        "/usr/bin/unshare", "--pid", "--fork", "--kill-child", "--", "python", "harness.py"
    ]  # fmt: skip
    assert podrun.in_own_pid_namespace(["sleep", "1"], None) == ["sleep", "1"]


def test_configmap_and_projected_volumes_become_files():
    objects = podrun.Objects(
        configmaps={"cfg": {"a": "1", "b": "2"}, "kube-root-ca.crt": {"ca.crt": "CA"}}, token="tok"
    )
    pod = pod_with({"name": "c", "image": "i"})
    only_b = {
        "name": "v",
        "configMap": {"name": "cfg", "items": [{"key": "b", "path": "sub/b.txt"}]},
    }
    assert podrun.volume_files(pod, only_b, objects) == {"sub/b.txt": "2"}
    projected = {
        "name": "kube-api-access",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    }
    assert podrun.volume_files(pod, projected, objects) == {
        "token": "tok",
        "ca.crt": "CA",
        "namespace": "ns",
    }
    assert podrun.volume_files(pod, {"name": "e", "emptyDir": {}}, objects) is None


def test_termination_message_falls_back_to_logs_only_when_asked_and_failed(tmp_path: Path):
    log, message = tmp_path / "log", tmp_path / "msg"
    log.write_text("line1\nTraceback: boom\n")
    fallback = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    assert podrun.termination_message(fallback, log, message, 1) == "line1\nTraceback: boom"
    assert podrun.termination_message(fallback, log, message, 0) == ""
    assert podrun.termination_message({}, log, message, 1) == ""
    message.write_text("x" * 5000)
    assert len(podrun.termination_message({}, log, message, 0)) == podrun.TERMINATION_MESSAGE_LIMIT


def test_signal_deaths_read_as_128_plus_the_signal():
    assert podrun.exit_code_of(-15) == 143
    assert podrun.exit_code_of(3) == 3


def test_rewrite_is_one_pass_so_a_local_path_is_never_rewritten_again():
    mounts = {"/data/train": "/tmp/pod/vol/train", "/tmp": "/tmp/pod/tmp"}
    assert podrun.rewrite_paths("--data /data/train --tmp /tmp", mounts) == (
        "--data /tmp/pod/vol/train --tmp /tmp/pod/tmp"
    )


def test_a_nested_mount_makes_its_parent_a_directory_holding_only_that_mount(tmp_path):
    train = tmp_path / "volume" / "train"
    train.mkdir(parents=True)
    (train / "train.bin").write_text("tokens")
    (tmp_path / "volume" / "val").mkdir()  # beside train in the volume, not mounted
    mounts = podrun.with_parent_dirs({"/data/train": str(train), "/work": "/w"}, tmp_path / "c")
    data = mounts["/data"]
    assert podrun.rewrite_paths("--data-dir /data", mounts) == f"--data-dir {data}"
    assert sorted(p.name for p in (tmp_path / "c" / "rootfs" / "data").iterdir()) == ["train"]
    assert (tmp_path / "c" / "rootfs" / "data" / "train" / "train.bin").read_text() == "tokens"
    assert "/work" in mounts and "/" not in mounts
