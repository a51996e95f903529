"""How the process kubelet turns a pod's container into a local process: pure functions.

Nothing here talks to Kubernetes; `process_kubelet.py` fetches what these functions need
(ConfigMaps, Secrets, tokens) and applies what they return. Pods are plain dicts as the API
server returns them (camelCase keys, e.g. from `ApiClient.sanitize_for_serialization`).

Paths: a process sees the host filesystem, not the image's. Each volume mount (and the
container's terminationMessagePath) is a local directory or file; every occurrence of the
in-container path in the command, args, env values and workingDir is rewritten to the local
path, and PROCESS_KUBELET_MOUNTS holds the whole mapping as JSON for programs that build paths
themselves. A path hard-coded inside a program is not rewritten.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

GPU = "nvidia.com/gpu"
TERMINATION_MESSAGE_LIMIT = 4096  # bytes, as the real kubelet truncates
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError keeps this many trailing log lines


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_root(image: str, images: Mapping[str, Path], default: Path) -> Path:
    """The local directory an image stands for: exact reference, then the name without tag/digest."""
    if image in images:
        return images[image]
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    for candidate in (name, name.rsplit("/", 1)[-1]):
        if candidate in images:
            return images[candidate]
    return default


def gpus_requested(container: dict) -> int:
    resources = container.get("resources") or {}
    for kind in ("limits", "requests"):
        value = (resources.get(kind) or {}).get(GPU)
        if value is not None:
            return int(value)
    return 0


# ---------------------------------------------------------------- path rewriting


def rewrite_paths(text: str, mounts: Mapping[str, str]) -> str:
    """Replace each in-container path (at a path boundary) by its local path, in one pass.

    One pass, longest path first at each position, so a local path that itself contains a
    mount path (a host /tmp/... under a pod's /tmp mount) is never rewritten again.
    """
    if not mounts:
        return text
    paths = sorted((p.rstrip("/") or "/" for p in mounts), key=len, reverse=True)
    local = {p.rstrip("/") or "/": v.rstrip("/") for p, v in mounts.items()}
    pattern = r"(?<![\w./-])(" + "|".join(map(re.escape, paths)) + r")(?=/|$|[^\w.-])"
    return re.sub(pattern, lambda m: local[m.group(1)], text)


def with_parent_dirs(mounts: Mapping[str, str], container_dir: Path) -> dict[str, str]:
    """Add the parents of nested mounts, as a container sees them.

    A container that mounts only /data/train still has a /data directory, holding just `train`.
    Each such parent maps to a directory under `container_dir/rootfs` whose children are links
    to the mounted local paths, so `--data-dir /data` finds /data/train and nothing else.
    """
    out = dict(mounts)
    rootfs = container_dir / "rootfs"
    for path, target in mounts.items():
        parts = Path(path).parts
        for depth in range(2, len(parts)):
            parent = str(Path(*parts[:depth]))
            if parent in mounts:
                break  # a real mount: the rest is inside it
            out[parent] = str(rootfs / parent.lstrip("/"))
        else:
            if len(parts) > 2:
                link = rootfs / path.lstrip("/")
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(target)
    return out


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` escapes, others stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", replace, text)


# ---------------------------------------------------------------- fields and volumes


def field_value(pod: dict, path: str) -> str:
    """A downward-API fieldRef such as `metadata.name` or `metadata.labels['app']`."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
        "status.podIP": status.get("podIP", "127.0.0.1"),
    }
    if path in simple:
        return simple[path] or ""
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ValueError(f"unsupported fieldRef {path!r}")


def decoded(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def key_files(data: Mapping[str, str], items: list[dict] | None) -> dict[str, str]:
    """Files a configMap/secret volume shows: every key, or only `items` under their paths."""
    if not items:
        return dict(data)
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}


@dataclass
class Objects:
    """What a pod refers to, fetched by the kubelet: `configmaps[name]` is its data dict."""

    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    token: str = ""  # a service-account token for the pod, when a projected volume asks for one
    claims: dict[str, str] = field(default_factory=dict)  # PVC name -> local directory


def volume_files(pod: dict, volume: dict, objects: Objects) -> dict[str, str] | None:
    """Files to write for a volume (relative path -> content), or None for a plain directory."""
    if "configMap" in volume:
        source = volume["configMap"]
        return key_files(objects.configmaps.get(source["name"], {}), source.get("items"))
    if "secret" in volume:
        source = volume["secret"]
        return key_files(objects.secrets.get(source["secretName"], {}), source.get("items"))
    if "downwardAPI" in volume:
        return {
            i["path"]: field_value(pod, i["fieldRef"]["fieldPath"])
            for i in volume["downwardAPI"].get("items", [])
            if "fieldRef" in i
        }
    if "projected" in volume:
        files: dict[str, str] = {}
        for source in volume["projected"].get("sources") or []:
            if "serviceAccountToken" in source:
                files[source["serviceAccountToken"]["path"]] = objects.token
            else:
                files.update(volume_files(pod, source, objects) or {})
        return files
    return None


def referenced_objects(pod: dict) -> tuple[set[str], set[str], bool]:
    """ConfigMap names, Secret names, and whether a token is needed, for this pod."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    token = False
    sources = []
    for volume in pod["spec"].get("volumes") or []:
        sources.append(volume)
        sources.extend((volume.get("projected") or {}).get("sources") or [])
    for source in sources:
        if "configMap" in source:
            configmaps.add(source["configMap"]["name"])
        if "secret" in source:
            secrets.add(source["secret"].get("secretName") or source["secret"].get("name"))
        token = token or "serviceAccountToken" in source
    for container in all_containers(pod):
        for env in container.get("env") or []:
            ref = env.get("valueFrom") or {}
            if "configMapKeyRef" in ref:
                configmaps.add(ref["configMapKeyRef"]["name"])
            if "secretKeyRef" in ref:
                secrets.add(ref["secretKeyRef"]["name"])
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                configmaps.add(source["configMapRef"]["name"])
            if "secretRef" in source:
                secrets.add(source["secretRef"]["name"])
    return configmaps, secrets, token


def claim_names(pod: dict) -> set[str]:
    return {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"].get("volumes") or []
        if "persistentVolumeClaim" in v
    }


def all_containers(pod: dict) -> list[dict]:
    return list(pod["spec"].get("initContainers") or []) + list(pod["spec"]["containers"])


# ---------------------------------------------------------------- the process


def in_own_pid_namespace(argv: list[str], unshare: str | None) -> list[str]:
    """argv run as PID 1 of a new PID namespace, as a container runtime starts a container's
    process (`unshare`: its path; None runs argv as it is). PID 1 sees only what it started, and
    when it dies the kernel kills everything in the namespace, a child that left the process
    group included. The kubelet signals unshare's process group; --kill-child makes the child
    die with unshare should unshare die first."""
    if unshare is None:
        return list(argv)
    return [unshare, "--pid", "--fork", "--kill-child", "--", *argv]


@dataclass
class Process:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    termination_log: Path


def container_env(pod: dict, container: dict, objects: Objects) -> dict[str, str]:
    """The container's own environment (envFrom, then env, with `$(VAR)` expansion)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = objects.configmaps.get(source["configMapRef"]["name"], {})
        else:
            data = objects.secrets.get(source["secretRef"]["name"], {})
        env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        ref = var.get("valueFrom")
        if ref is None:
            env[var["name"]] = expand_vars(var.get("value", ""), env)
        elif "fieldRef" in ref:
            env[var["name"]] = field_value(pod, ref["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[var["name"]] = objects.configmaps.get(key["name"], {}).get(key["key"], "")
        elif "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            env[var["name"]] = objects.secrets.get(key["name"], {}).get(key["key"], "")
        elif "resourceFieldRef" in ref:
            resource = ref["resourceFieldRef"]["resource"]  # e.g. limits.cpu
            kind, name = resource.split(".", 1)
            env[var["name"]] = str(
                ((container.get("resources") or {}).get(kind) or {}).get(name, "")
            )
    return env


def build_process(
    pod: dict,
    container: dict,
    *,
    root: Path,
    volume_dirs: Mapping[str, Path],
    container_dir: Path,
    objects: Objects,
    base_env: Mapping[str, str],
    gpu_ids: list[int] | None,
    unshare: str | None = None,
) -> Process:
    """Command line, working directory and environment for one container; with `unshare`, the
    process is PID 1 of its own PID namespace (see in_own_pid_namespace)."""
    termination_path = container.get("terminationMessagePath") or "/dev/termination-log"
    termination_log = container_dir / "termination-log"
    mounts = {termination_path: str(termination_log)}
    for mount in container.get("volumeMounts") or []:
        local = volume_dirs[mount["name"]] / mount.get("subPath", "")
        mounts[mount["mountPath"]] = str(local)
    mounts = with_parent_dirs(mounts, container_dir)

    own_env = container_env(pod, container, objects)
    env = dict(base_env)
    env.update(
        {
            "HOSTNAME": pod["metadata"]["name"],
            "HOME": str(container_dir / "home"),
            "PROCESS_KUBELET_MOUNTS": json.dumps(mounts, sort_keys=True),
            # Containers see only the GPUs allocated to them (an empty list hides the host's).
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpu_ids or [])),
            "NVIDIA_VISIBLE_DEVICES": ",".join(map(str, gpu_ids or [])) or "void",
        }
    )
    env.update({k: rewrite_paths(v, mounts) for k, v in own_env.items()})

    command = [expand_vars(a, own_env) for a in container.get("command") or []]
    args = [expand_vars(a, own_env) for a in container.get("args") or []]
    argv = [rewrite_paths(a, mounts) for a in command + args]
    if not argv:
        raise ValueError(
            f"container {container['name']!r} has no command: images have no entrypoint here"
        )

    cwd = root
    if container.get("workingDir"):
        rewritten = rewrite_paths(container["workingDir"], mounts)
        if rewritten != container["workingDir"]:
            cwd = Path(rewritten)  # under a volume; any other in-image path is the image root
    return Process(
        argv=in_own_pid_namespace(argv, unshare),
        cwd=str(cwd),
        env=env,
        termination_log=termination_log,
    )


def termination_message(container: dict, log_path: Path, message_path: Path, exit_code: int) -> str:
    """What the kubelet reports as the terminated container's message."""
    message = ""
    if message_path.exists():
        message = message_path.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
    policy = container.get("terminationMessagePolicy") or "File"
    if not message and exit_code != 0 and policy == "FallbackToLogsOnError" and log_path.exists():
        lines = log_path.read_bytes().decode(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
        message = "\n".join(lines)[-2048:]
    return message


def exit_code_of(returncode: int) -> int:
    """Popen reports death by signal N as -N; a container runtime reports 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


# ---------------------------------------------------------------- status


def running_status(container: dict, started_at: str, restarts: int, pid: int) -> dict:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": f"process://{container['image']}",
        "containerID": f"process://{pid}",
        "ready": True,
        "started": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": started_at}},
    }


def terminated_status(
    container: dict,
    started_at: str,
    restarts: int,
    pid: int | None,
    exit_code: int,
    message: str,
    reason: str | None = None,
) -> dict:
    terminated = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "startedAt": started_at,
        "finishedAt": now(),
    }
    if message:
        terminated["message"] = message
    status = {
        "name": container["name"],
        "image": container["image"],
        "imageID": f"process://{container['image']}",
        "ready": False,
        "started": False,
        "restartCount": restarts,
        "state": {"terminated": terminated},
    }
    if pid is not None:
        status["containerID"] = terminated["containerID"] = f"process://{pid}"
    return status


def waiting_status(container: dict, reason: str = "PodInitializing") -> dict:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": False,
        "started": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason}},
    }


def condition(kind: str, status: bool, reason: str | None = None) -> dict:
    # A null reason removes an earlier one: conditions are merged by type.
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "lastTransitionTime": now(),
    }


def pod_status(
    phase: str, *, started_at: str, init: list[dict], main: list[dict], initialized: bool
) -> dict:
    """A whole pod status, sent as a strategic merge patch: conditions merge by type, the
    container status lists replace the old ones whole."""
    ready = phase == "Running" and all(s["ready"] for s in main)
    reason = "PodCompleted" if phase in ("Succeeded", "Failed") else None
    return {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": started_at,
        "conditions": [
            condition("PodReadyToStartContainers", phase in ("Pending", "Running")),
            condition(
                "Initialized", initialized, None if initialized else "ContainersNotInitialized"
            ),
            condition("ContainersReady", ready, reason),
            condition("Ready", ready, reason),
        ],
        "initContainerStatuses": init,
        "containerStatuses": main,
    }
