"""Operator overhead on the local control plane: how long after an experiment's Job completes
does the org's status record it, and does the next experiment's Job get created.

Starts (or reuses) the test cluster of hack/cluster, a process-kubelet node, and the operator
as a local process with its ServiceAccount's token, then runs one tiny org with the mutate
proposer. Timestamps come from watches on the Jobs and on the org, taken here, so the numbers
include the operator's Job polling (AUTORESEARCH_POLL_SECONDS) and status throttling.

    .venv/bin/python benchmarks/operator_overhead.py --experiments 6 --poll-seconds 1
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

from cluster_bench import percentile  # sets the test helpers' import paths

# isort: split
import testcluster  # noqa: E402
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

ORG = "overhead"


class Timeline:
    """Wall-clock times at which each experiment's Job appeared and completed, and at which the
    org's status first counted it; one watch thread each for the Jobs and the org."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.api, self.namespace = api, namespace
        self.created: dict[int, float] = {}
        self.completed: dict[int, float] = {}
        self.recorded: dict[int, float] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._forever, args=(f,), daemon=True)
            for f in (self._watch_jobs, self._watch_org)
        ]

    def __enter__(self) -> Timeline:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _forever(self, watch_once) -> None:
        while not self._stop.is_set():
            watch_once()

    def _watch_jobs(self) -> None:
        batch = client.BatchV1Api(self.api)
        for event in watch.Watch().stream(
            batch.list_namespaced_job, self.namespace,
            label_selector=f"{GROUP}/org={ORG}", timeout_seconds=5,
        ):  # fmt: skip
            now, job = time.time(), event["object"]
            n = int(job.metadata.labels[f"{GROUP}/experiment"])
            self.created.setdefault(n, now)
            done = [c for c in job.status.conditions or [] if c.type in ("Complete", "Failed")]
            if any(c.status == "True" for c in done):
                self.completed.setdefault(n, now)

    def _watch_org(self) -> None:
        objects = client.CustomObjectsApi(self.api)
        for event in watch.Watch().stream(
            objects.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
            timeout_seconds=5,
        ):  # fmt: skip
            now = time.time()
            total = ((event["object"].get("status") or {}).get("counts") or {}).get("total", 0)
            for n in range(total):
                self.recorded.setdefault(n, now)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=6)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--status-interval-seconds", type=float, default=1.0)
    parser.add_argument("--time-budget", type=int, default=3)
    args = parser.parse_args()

    cluster = testcluster.Cluster.up()
    namespace = cluster.create_namespace("operator-overhead")
    scratch = Path(tempfile.mkdtemp(prefix="operator-overhead-"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{PLURAL}.{GROUP}")
    claim = DataClaim.create(cluster, namespace)
    node = cluster.start_process_node(f"bench-{secrets.token_hex(3)}")
    operator = OperatorProcess.watching(
        namespace, kubeconfig=operator_account_kubeconfig(cluster, scratch),
        data_claim=claim.name, directory=scratch,
    )  # fmt: skip
    operator.env["AUTORESEARCH_POLL_SECONDS"] = str(args.poll_seconds)
    operator.env["AUTORESEARCH_STATUS_INTERVAL_SECONDS"] = str(args.status_interval_seconds)
    try:
        operator.start()
        with Timeline(cluster.api, namespace) as timeline:
            body = research_org(ORG, args.experiments)
            body["spec"]["trainer"]["timeBudgetSeconds"] = args.time_budget
            orgs = Orgs(cluster, namespace)
            orgs.create(body)
            orgs.wait_completed(ORG, operator, 300 + 120 * args.experiments)
            time.sleep(2)  # let the watches deliver the last events
    finally:
        operator.stop()
        node.stop()
        cluster.delete_namespace(namespace)
        claim.delete()
        cluster.release()

    to_status = [timeline.recorded[n] - timeline.completed[n] for n in sorted(timeline.completed)]
    to_next = [
        timeline.created[n + 1] - timeline.completed[n]
        for n in sorted(timeline.completed)
        if n + 1 in timeline.created
    ]
    report = {
        "experiments": args.experiments,
        "poll_seconds": args.poll_seconds,
        "status_interval_seconds": args.status_interval_seconds,
        "job_complete_to_status_s": {
            "p50": round(percentile(to_status, 50), 3), "p95": round(percentile(to_status, 95), 3),
            "samples": [round(v, 3) for v in to_status],
        },
        "job_complete_to_next_job_s": {
            "p50": round(percentile(to_next, 50), 3), "p95": round(percentile(to_next, 95), 3),
            "samples": [round(v, 3) for v in to_next],
        },
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
