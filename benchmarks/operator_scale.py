"""The operator at scale on simulated (kwok) GPU nodes: scheduling, CPU, memory, API requests.

Many orgs, many kwok GPU nodes, pods that kwok completes with a synthetic harness result. Reports
the time to schedule, the operator's CPU and memory, and the API requests it makes per experiment.

    .venv/bin/python benchmarks/operator_scale.py            # 50 orgs x 4 experiments, 200 nodes
    .venv/bin/python benchmarks/operator_scale.py --orgs 10 --experiments 3 --nodes 20

What it does, start to end (2 to 3 minutes on two busy cores with the defaults):

1. Starts its own cluster, `autoresearch-scale` (--cluster-name), with the binaries of hack/cluster
   (built first when missing) and kwokctl's config hack/cluster/kwokctl.yaml plus
   benchmarks/kwok-scale-stages.yaml: kwok's default stages, except that a Job's pod completes
   --pod-seconds after Running and an experiment pod's `evaluate` container ends with a result
   JSON as its termination message. The shared test cluster (`autoresearch`) is never touched;
   this one is taken down at the end, also after a failure or Ctrl-C.
2. Adds --nodes kwok nodes with --gpus-per-node `nvidia.com/gpu` each, tainted as kwok nodes are
   by default (the orgs' trainers tolerate it and select them), and one untainted kwok node for
   the namespace's data-prepare Job, which kwok completes too.
3. Runs `autoresearch operator` as a local process, as the cluster tests do: the ServiceAccount
   of deploy/rbac.yaml, one namespace, a data claim. Its kubeconfig points at a counting reverse
   proxy on 127.0.0.1 (tests/support/counting_proxy.py), which forwards to the API server and
   counts every request the operator makes by verb and resource. The proxy adds a hop to each
   request; the operator's own CPU is read from /proc and does not include it.
4. Creates --orgs ResearchOrgs (mutate proposer, --experiments each, the baseline included,
   each trainer requesting one `nvidia.com/gpu`) at once and waits until all are Completed.
   Watches on the Jobs, pods and orgs, taken here, timestamp every step, so the latencies include
   watch delivery on a loaded machine, the operator's Job polling (--poll-seconds) and its status
   throttling (--status-interval-seconds).

Nothing here trains: the numbers are the operator's and the control plane's overhead. On two
shared cores the operator, the control plane, kwok, the proxy and these watches compete for the
same CPUs, so wall times are upper bounds for a real cluster. With kwokctl's default client rate
limits (the controller manager's 20 requests/s), the Job controller creating pods for 50 Jobs at
once dominates the time to schedule; --disable-qps-limits lifts them to show the rest. kwok never
shows the `train` container running, so the operator's per-poll progress read of the training
log (`get pods/log`, one per poll on a real cluster) does not happen here.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cluster_bench import ROOT, percentile  # sets the test helpers' import paths

# isort: split
import testcluster  # noqa: E402
import yaml
from kubernetes import client, watch  # noqa: E402
from on_cluster import (  # noqa: E402
    CRD,
    GROUP,
    PLURAL,
    VERSION,
    DataClaim,
    OperatorProcess,
    Orgs,
    operator_account_kubeconfig,
    research_org,
)

from support.counting_proxy import CountingProxy  # noqa: E402

STAGES = Path(__file__).resolve().parent / "kwok-scale-stages.yaml"
KWOKCTL_CONFIG = ROOT / "hack" / "cluster" / "kwokctl.yaml"
SHARED_CLUSTER = "autoresearch"  # the tests' cluster: never started or stopped from here
GPU = "nvidia.com/gpu"
POOL_LABEL = f"{GROUP}/pool"
EXPERIMENT_PODS = "app.kubernetes.io/component=experiment"
TOLERATE_KWOK = {**testcluster.KWOK_TAINT, "operator": "Equal"}


# --------------------------------------------------------------------------- the scale cluster


def cluster_settings() -> dict[str, str]:
    """hack/cluster/env.sh's paths and versions for the cluster named in the environment."""
    names = ["CLUSTER_CACHE", "KUBE_VERSION", "KWOK_VERSION", "KUBE_BIN", "ETCD_BIN", "KWOK_BIN"]
    names.append("KWOK_WORKDIR")
    script = f"source {ROOT / 'hack/cluster/env.sh'}; " + "; ".join(
        f'echo "${n}"' for n in names + ["CLUSTER_DIR"]
    )
    values = subprocess.run(
        ["bash", "-c", script], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return dict(zip([*names, "CLUSTER_DIR"], values, strict=True))


def start_cluster(stages: Path, log: Path, *, unlimited_qps: bool) -> testcluster.Cluster:
    """Start the cluster named by AUTORESEARCH_CLUSTER_NAME as `cluster.sh up` does, with the
    extra kwokctl config `stages` (cluster.sh always passes hack/cluster/kwokctl.yaml alone)."""
    testcluster.build()  # seconds when everything is built
    stop_cluster()  # state left by an earlier run that was killed
    env = cluster_settings()
    name = os.environ["AUTORESEARCH_CLUSTER_NAME"]
    kwok_env = {
        **os.environ,
        "KWOK_WORKDIR": env["KWOK_WORKDIR"],
        "KWOK_KUBE_VERSION": env["KUBE_VERSION"],
        "KWOK_KUBE_APISERVER_BINARY": f"{env['KUBE_BIN']}/kube-apiserver",
        "KWOK_KUBE_CONTROLLER_MANAGER_BINARY": f"{env['KUBE_BIN']}/kube-controller-manager",
        "KWOK_KUBE_SCHEDULER_BINARY": f"{env['KUBE_BIN']}/kube-scheduler",
        "KWOK_KUBECTL_BINARY": f"{env['KUBE_BIN']}/kubectl",
        "KWOK_ETCD_BINARY": f"{env['ETCD_BIN']}/etcd",
        "KWOK_CONTROLLER_BINARY": f"{env['KWOK_BIN']}/kwok",
    }
    argv = [
        f"{env['KWOK_BIN']}/kwokctl", "create", "cluster", "--name", name,
        "--config", str(KWOKCTL_CONFIG), "--config", str(stages),
        "--kubeconfig", "", "--wait", "3m",
    ]  # fmt: skip
    if unlimited_qps:  # no client-side rate limit in the controller manager and the scheduler
        argv.append("--disable-qps-limits")
    # cluster.sh's lock: one cluster command at a time in the cache (the daemons kwokctl starts
    # do not inherit it: subprocess closes other descriptors).
    with open(Path(env["CLUSTER_CACHE"]) / "cluster.lock", "w") as lock, log.open("w") as out:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(argv, env=kwok_env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"kwokctl create cluster {name} failed:\n{log.read_text()[-3000:]}")
    return testcluster.Cluster(Path(env["CLUSTER_DIR"]) / "kubeconfig.yaml")


def stop_cluster() -> None:
    subprocess.run(
        [str(testcluster.CLUSTER_SH), "down"], check=True, capture_output=True, text=True
    )


def control_plane_pids() -> dict[str, int]:
    """The cluster's components (kwokctl's pid files), by name."""
    pids = {}
    for file in (Path(cluster_settings()["CLUSTER_DIR"]) / "pids").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pids[file.stem] = int(file.read_text().strip())
    return pids


def render_stages(pod_seconds: float, directory: Path) -> Path:
    """kwok-scale-stages.yaml with pod-complete's delay set to `pod_seconds`."""
    stages = list(yaml.safe_load_all(STAGES.read_text()))
    for stage in stages:
        if stage["metadata"]["name"] == "pod-complete":
            stage["spec"]["delay"]["durationMilliseconds"] = int(pod_seconds * 1000)
    path = directory / "kwok-stages.yaml"
    path.write_text(yaml.safe_dump_all(stages, sort_keys=False))
    return path


def wait_nodes_ready(cluster: testcluster.Cluster, count: int, timeout: float) -> None:
    def ready() -> bool:
        nodes = cluster.core.list_node(label_selector="type=kwok").items
        up = [
            n
            for n in nodes
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            and not any(t.key.startswith("node.kubernetes.io/") for t in n.spec.taints or [])
        ]
        return len(up) >= count

    testcluster.wait_for(ready, timeout, f"{count} kwok nodes to be Ready", interval=2)


# --------------------------------------------------------------------------- measurements


def read_proc(pid: int) -> dict[str, float]:
    """CPU seconds (own, and of reaped children such as git) and memory of a live process."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) / ticks for f in fields[11:15])
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return {"cpu": utime + stime, "children_cpu": cutime + cstime, **memory}


class ProcessSampler:
    """Samples a process every `interval` seconds from /proc (a thread) for RSS over time."""

    def __init__(self, pid: int, interval: float = 1.0):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.time(), read_proc(self.pid)))
            self._stop.wait(self.interval)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


Key = tuple[str, int]  # (org, experiment)


class Timeline:
    """When each experiment's Job and pod reached each step, and when its org's status counted it,
    as seen by watches here (wall-clock seconds). One thread per watched kind."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.api, self.namespace = api, namespace
        self.job_created: dict[Key, float] = {}
        self.job_done: dict[Key, float] = {}
        self.pod_created: dict[Key, float] = {}
        self.pod_bound: dict[Key, float] = {}
        self.pod_running: dict[Key, float] = {}
        self.pod_succeeded: dict[Key, float] = {}
        self.node_of: dict[Key, str] = {}
        self.recorded: dict[Key, float] = {}
        self.journaled: dict[Key, float] = {}  # the operator had the run's result (its clock)
        self.org_completed: dict[str, float] = {}
        self.org_status: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        self._stop = threading.Event()
        core, objects = client.CoreV1Api(api), client.CustomObjectsApi(api)
        ns = namespace

        # Plain functions without a return type: the watch hands back dicts, not models.
        def jobs(**kw: Any) -> Any:
            return objects.list_namespaced_custom_object("batch", "v1", ns, "jobs", **kw)

        def pods(**kw: Any) -> Any:
            return core.list_namespaced_pod(ns, **kw)

        def orgs(**kw: Any) -> Any:
            return objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, **kw)

        self._threads = [
            threading.Thread(target=self._watch, args=(jobs, self._on_job), daemon=True),
            threading.Thread(target=self._watch, args=(pods, self._on_pod), daemon=True),
            threading.Thread(target=self._watch, args=(orgs, self._on_org), daemon=True),
        ]

    def __enter__(self) -> Timeline:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _watch(self, list_fn: Callable[..., Any], on_object: Callable[[float, dict], None]) -> None:
        """Watch forever, resuming from the last resourceVersion (a relist after 410 Gone)."""
        version: str | None = None
        while not self._stop.is_set():
            kwargs: dict[str, Any] = {"timeout_seconds": 10, "allow_watch_bookmarks": True}
            if version:
                kwargs["resource_version"] = version
            try:
                for event in watch.Watch().stream(list_fn, deserialize=False, **kwargs):
                    obj = event["object"]
                    version = obj["metadata"].get("resourceVersion") or version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        on_object(time.time(), obj)
                    if self._stop.is_set():
                        return
            except Exception:  # 410 Gone, or a connection dropped under load: relist
                version = None
                time.sleep(1)

    @staticmethod
    def _key(obj: dict) -> Key | None:
        labels = obj["metadata"].get("labels") or {}
        if f"{GROUP}/experiment" not in labels:
            return None
        return labels[f"{GROUP}/org"], int(labels[f"{GROUP}/experiment"])

    def _on_job(self, now: float, job: dict) -> None:
        key = self._key(job)
        if key is None:
            return
        self.job_created.setdefault(key, now)
        conditions = (job.get("status") or {}).get("conditions") or []
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions):
            self.job_done.setdefault(key, now)

    def _on_pod(self, now: float, pod: dict) -> None:
        key = self._key(pod)
        if key is None:
            return
        self.pod_created.setdefault(key, now)
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            self.pod_bound.setdefault(key, now)
            self.node_of[key] = node
        phase = (pod.get("status") or {}).get("phase")
        if phase == "Running":
            self.pod_running.setdefault(key, now)
        if phase == "Succeeded":
            self.pod_succeeded.setdefault(key, now)

    def _on_org(self, now: float, org: dict) -> None:
        name, status = org["metadata"]["name"], org.get("status") or {}
        self.org_status[name] = status
        for summary in status.get("recentExperiments") or []:
            self.recorded.setdefault((name, int(summary["experiment"])), now)
        if status.get("phase") == "Completed":
            self.org_completed.setdefault(name, now)
        elif status.get("phase") == "Failed":
            self.failed[name] = status.get("message", "")


def journaled_runs(state_dir: Path, namespace: str) -> dict[Key, float]:
    """When the operator journaled each experiment's first run: the moment its loop had the
    result, on this machine's clock like the watches' times (read after the orgs completed)."""
    out: dict[Key, float] = {}
    for journal in sorted((state_dir / namespace).glob("*/experiments.jsonl")):
        for line in journal.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") == "run" and rec.get("run") == 0:
                out[(journal.parent.name, int(rec["experiment"]))] = float(rec["finished_at"])
    return out


def gaps(start: dict[Key, float], end: dict[Key, float]) -> list[float]:
    return [end[k] - start[k] for k in start if k in end]


# --------------------------------------------------------------------------- the report


def slot_refills(t: Timeline) -> list[float]:
    """Seconds from each Job's completion to the org's next Job creation that fills the slot it
    freed: per org, completions and creations in time order, each completion paired with the
    first creation after it not yet paired (with parallelism > 1, the next experiment number
    may have been created long before)."""
    out: list[float] = []
    for org in {o for o, _ in t.job_done}:
        created = sorted(at for (o, _), at in t.job_created.items() if o == org)
        done = sorted(at for (o, _), at in t.job_done.items() if o == org)
        i = 0
        for finished in done:
            while i < len(created) and created[i] < finished:
                i += 1
            if i == len(created):
                break  # the budget is spent: nothing refills the last slots
            out.append(created[i] - finished)
            i += 1
    return out


def latency_rows(t: Timeline, orgs_created: float) -> list[tuple[str, list[float]]]:
    first_job: dict[str, float] = {}
    for (org, _), at in t.job_created.items():
        first_job[org] = min(at, first_job.get(org, at))
    next_job = slot_refills(t)
    return [
        ("orgs created -> each org's first Job", [at - orgs_created for at in first_job.values()]),
        ("Job created -> pod created", gaps(t.job_created, t.pod_created)),
        ("pod created -> pod bound to a node", gaps(t.pod_created, t.pod_bound)),
        ("Job created -> pod bound (time to schedule)", gaps(t.job_created, t.pod_bound)),
        ("pod bound -> Running (kwok)", gaps(t.pod_bound, t.pod_running)),
        ("pod Succeeded -> Job Complete", gaps(t.pod_succeeded, t.job_done)),
        ("pod Succeeded -> org status counts it", gaps(t.pod_succeeded, t.recorded)),
        ("Job Complete -> org status counts it", gaps(t.job_done, t.recorded)),
        # the two halves, split by the operator's own journal: is it the operator being late
        # to learn of the end (watch), or its status reaching the API server and this watch?
        ("  Job Complete -> operator has the result", gaps(t.job_done, t.journaled)),
        ("  operator has the result -> status counts it", gaps(t.journaled, t.recorded)),
        ("Job Complete -> the org's next Job created", next_job),
    ]


def print_report(
    args: argparse.Namespace,
    t: Timeline,
    *,
    started: float,
    finished: float,
    cpu: tuple[dict[str, float], dict[str, float], dict[str, float]],
    rss: list[float],
    requests: tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]],
    control_plane: dict[str, float],
    versions: tuple[str, str],
    operator_log: Path,
) -> None:
    experiments = args.orgs * args.experiments
    wall = finished - started
    print()
    print(
        f"operator at scale on kwok: {args.orgs} orgs x {args.experiments} experiments = "
        f"{experiments} experiments, {args.nodes} GPU nodes ({args.gpus_per_node} {GPU} each), "
        f"pods complete {args.pod_seconds:g} s after Running"
    )
    print(
        f"AUTORESEARCH_POLL_SECONDS={args.poll_seconds:g} "
        f"AUTORESEARCH_STATUS_INTERVAL_SECONDS={args.status_interval_seconds:g}, "
        f"parallelism {args.parallelism}; Kubernetes {versions[0]}, kwok {versions[1]}"
        f"{' (control plane QPS limits off)' if args.disable_qps_limits else ''}; "
        f"{os.cpu_count()} CPUs shared with everything else on this machine"
    )
    print()
    print(f"{'latency (s)':<46}{'n':>5}{'p50':>8}{'p95':>8}{'max':>8}")
    for label, values in latency_rows(t, started):
        if values:
            print(
                f"  {label:<44}{len(values):>5}{percentile(values, 50):>8.2f}"
                f"{percentile(values, 95):>8.2f}{max(values):>8.2f}"
            )
        else:
            print(f"  {label:<44}{0:>5}{'-':>8}{'-':>8}{'-':>8}")
    counts: Counter[str] = Counter()
    for status in t.org_status.values():
        for outcome, n in (status.get("counts") or {}).items():
            counts[outcome] += int(n)
    on_gpu_nodes = sum(1 for node in t.node_of.values() if node.startswith("kwok-gpu-"))
    print()
    print("throughput")
    print(f"  orgs created -> all {args.orgs} Completed{wall:>22.1f} s")
    print(f"  experiments per minute{experiments / wall * 60:>27.1f}")
    print(
        f"  recorded: {counts['total']} experiments (kept {counts['kept']}, discarded "
        f"{counts['discarded']}, crashed {counts['crashed']}); pods on kwok GPU nodes: "
        f"{on_gpu_nodes}/{len(t.node_of)} on {len(set(t.node_of.values()))} distinct nodes"
    )
    at_start, at_orgs, at_end = cpu
    run_cpu = at_end["cpu"] - at_orgs["cpu"]
    print()
    print("operator process (/proc)")
    print(
        f"  CPU s, user+sys: {at_end['cpu']:.1f} in all, {at_orgs['cpu'] - at_start['cpu']:.1f} "
        f"to start, {run_cpu:.1f} while the orgs ran ({run_cpu / experiments:.3f} per "
        f"experiment, {run_cpu / wall:.2f} cores on average)"
    )
    print(f"  CPU s of its reaped child processes (git), in all: {at_end['children_cpu']:.1f}")
    print(
        f"  RSS MiB: {rss[0]:.0f} before the orgs, {max(rss):.0f} peak sampled, "
        f"{at_end['VmHWM']:.0f} VmHWM, {at_end['VmRSS']:.0f} at the end"
    )
    if control_plane:
        print(
            "  for comparison, CPU s while the orgs ran: "
            + ", ".join(f"{name} {s:.1f}" for name, s in sorted(control_plane.items()))
        )
    startup, during = requests
    print()
    print(
        f"API requests by the operator (counting proxy): {sum(startup.values())} before the "
        f"orgs were created, {sum(during.values())} while they ran "
        f"= {sum(during.values()) / experiments:.1f} per experiment"
    )
    print(f"  {'verb':<10}{'resource':<40}{'total':>8}{'per exp':>10}")
    for (verb, resource), n in sorted(during.items(), key=lambda item: -item[1]):
        print(f"  {verb:<10}{resource:<40}{n:>8}{n / experiments:>10.2f}")
    log = operator_log.read_text(errors="replace").splitlines()
    retried = sum("retrying in" in line for line in log)
    forbidden = sum("Forbidden" in line for line in log)
    missed = sum("but its watch still had" in line for line in log)
    print(f"\noperator log: {retried} API calls retried, {forbidden} lines with Forbidden, "
          f"{missed} Job ends found by a direct read before the watch told")  # fmt: skip
    if t.failed:
        print(f"FAILED orgs: {t.failed}")


# --------------------------------------------------------------------------- the run


def org_body(name: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    body = research_org(name, args.experiments, parallelism=args.parallelism)
    body["spec"]["proposer"]["seed"] = seed
    body["spec"]["trainer"].update(
        resources={"limits": {GPU: 1}},
        nodeSelector={POOL_LABEL: "gpu"},
        tolerations=[TOLERATE_KWOK],
    )
    return body


def wait_all_completed(
    t: Timeline, orgs: list[str], operator: OperatorProcess, timeout: float
) -> None:
    deadline, last_report = time.monotonic() + timeout, 0.0
    while len(t.org_completed) < len(orgs):
        if t.failed:
            raise RuntimeError(f"orgs failed: {t.failed}\n{operator.log_tail()}")
        if operator.proc is not None and operator.proc.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{operator.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(t.org_completed)}/{len(orgs)} orgs Completed after {timeout:.0f} s\n"
                f"{operator.log_tail()}"
            )
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            print(
                f"    {len(t.org_completed)}/{len(orgs)} orgs Completed, "
                f"{len(t.recorded)} experiments recorded, {len(t.job_created)} Jobs created",
                file=sys.stderr, flush=True,
            )  # fmt: skip
        time.sleep(1)


def run(args: argparse.Namespace, scratch: Path, cleanup: contextlib.ExitStack) -> None:
    def step(message: str) -> None:
        print(f"==> {message}", file=sys.stderr, flush=True)

    began = time.monotonic()
    step(f"starting cluster {args.cluster_name} (kwok stages: {STAGES.name})")
    cleanup.callback(stop_cluster)
    cluster = start_cluster(
        render_stages(args.pod_seconds, scratch),
        scratch / "kwokctl.log",
        unlimited_qps=args.disable_qps_limits,
    )
    env = cluster_settings()
    versions = (env["KUBE_VERSION"], env["KWOK_VERSION"])
    step(f"cluster up in {time.monotonic() - began:.0f} s; adding {args.nodes} kwok GPU nodes")
    began = time.monotonic()
    cluster.add_kwok_nodes(
        args.nodes, prefix="kwok-gpu-", gpus=args.gpus_per_node, labels={POOL_LABEL: "gpu"}
    )
    cluster.add_kwok_nodes(1, prefix="kwok-cpu-", taint=False)  # the data-prepare Job's pod
    wait_nodes_ready(cluster, args.nodes + 1, timeout=300)
    step(f"{args.nodes + 1} nodes Ready in {time.monotonic() - began:.0f} s")

    cluster.kubectl("apply", "--server-side", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    namespace = cluster.create_namespace("scale")
    claim = DataClaim.create(cluster, namespace)
    settings = cluster.api.configuration
    proxy = CountingProxy(settings.host, ca_file=settings.ssl_ca_cert).start()
    cleanup.callback(proxy.stop)
    kubeconfig = operator_account_kubeconfig(cluster, scratch)
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"][0]["cluster"] = {"server": proxy.url}  # plain HTTP to the proxy
    kubeconfig.write_text(yaml.safe_dump(config))
    operator = OperatorProcess.watching(
        namespace, kubeconfig=kubeconfig, data_claim=claim.name, directory=scratch
    )
    operator.env["AUTORESEARCH_POLL_SECONDS"] = str(args.poll_seconds)
    operator.env["AUTORESEARCH_STATUS_INTERVAL_SECONDS"] = str(args.status_interval_seconds)
    operator.env["AUTORESEARCH_MAX_ORGS"] = str(max(64, args.orgs))
    step(f"starting the operator (log: {operator.log})")
    operator.start()
    cleanup.callback(operator.stop)
    assert operator.proc is not None
    pid = operator.proc.pid
    at_start = read_proc(pid)
    testcluster.wait_for(lambda: _healthy(operator), 120, "the operator's /healthz", interval=0.5)
    time.sleep(2)  # kopf's watch on ResearchOrgs is open by now
    components = control_plane_pids()
    with Timeline(cluster.api, namespace) as timeline, ProcessSampler(pid) as sampler:
        names = [f"org-{i:03d}" for i in range(args.orgs)]
        step(f"creating {len(names)} orgs x {args.experiments} experiments")
        startup_requests, at_orgs = proxy.counts(), read_proc(pid)
        rss_before = at_orgs["VmRSS"]
        plane_before = {name: _cpu(p) for name, p in components.items()}
        plane_before["this benchmark (proxy, watches)"] = _cpu(os.getpid())
        started = time.time()
        orgs = Orgs(cluster, namespace)
        for i, name in enumerate(names):
            orgs.create(org_body(name, args, seed=i))
        wait_all_completed(timeline, names, operator, args.timeout)
        finished = max(timeline.org_completed.values())
        at_end, total_requests = read_proc(pid), proxy.counts()
        components["this benchmark (proxy, watches)"] = os.getpid()
        plane = {name: _cpu(p) - plane_before[name] for name, p in components.items()}
        time.sleep(2)  # the last watch events
    timeline.journaled = journaled_runs(operator.state_dir, namespace)
    step("all orgs Completed; stopping")
    print_report(
        args, timeline, started=started, finished=finished, cpu=(at_start, at_orgs, at_end),
        rss=[rss_before] + [s["VmRSS"] for _, s in sampler.samples if "VmRSS" in s],
        requests=(startup_requests, total_requests - startup_requests),
        control_plane={k: v for k, v in plane.items() if not math.isnan(v)},
        versions=versions, operator_log=operator.log,
    )  # fmt: skip


def _healthy(operator: OperatorProcess) -> bool:
    if operator.proc is not None and operator.proc.poll() is not None:
        raise RuntimeError(f"the operator exited:\n{operator.log_tail()}")
    try:
        with urllib.request.urlopen(f"{operator.metrics_url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _cpu(pid: int) -> float:
    try:
        return read_proc(pid)["cpu"]
    except OSError:
        return math.nan


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the cluster still comes down."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--experiments", type=int, default=4, help="per org, baseline included")
    parser.add_argument("--nodes", type=int, default=200, help="kwok GPU nodes")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--parallelism", type=int, default=1, help="experiments at once per org")
    parser.add_argument("--pod-seconds", type=float, default=5.0, help="Running -> Succeeded")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--status-interval-seconds", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=1500, help="for all orgs to complete")
    parser.add_argument(
        "--disable-qps-limits",
        action="store_true",
        help="kwokctl's: lift the controller manager's and scheduler's API rate limits",
    )
    parser.add_argument("--cluster-name", default="autoresearch-scale")
    parser.add_argument("--keep-scratch", action="store_true", help="keep the operator's state/log")
    args = parser.parse_args()
    if args.cluster_name == SHARED_CLUSTER:
        parser.error(f"--cluster-name {SHARED_CLUSTER} is the tests' shared cluster; pick another")
    # cluster.sh, testcluster and the operator's helpers all act on the cluster named here.
    os.environ["AUTORESEARCH_CLUSTER_NAME"] = args.cluster_name
    scratch = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    failed = True
    try:
        # The stack stops the operator, the proxy and the cluster, in that order, however run ends.
        with terminated_as_exit(), contextlib.ExitStack() as cleanup:
            run(args, scratch, cleanup)
        failed = False
    finally:
        if failed:
            log = scratch / "operator.log"
            if log.exists():
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            print(f"kept the operator's log and state, kwokctl's log: {scratch}", file=sys.stderr)
        elif not args.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
