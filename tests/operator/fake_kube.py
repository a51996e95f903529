"""A tiny in-process Kubernetes API for the operator's tests: just the calls the operator makes.

It stores Jobs, ConfigMaps and Secrets, answers 409 for a name that exists, records status
patches and lets the test decide how each Job ends (`finish`). It does not pretend to be a
cluster: pods exist only as the status the test's `finish` function returns for a Job.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubernetes import client

NOW = "2025-01-01T00:00:00Z"
# finish(job, configmaps) -> None while the Job runs, else (job condition, container states).
Finish = Callable[[dict, dict], tuple[str, dict[str, dict]] | None]


def terminated(message: str = "", exit_code: int = 0) -> dict:
    return {
        "terminated": {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": message,
            "startedAt": NOW,
            "finishedAt": NOW,
        }
    }


class FakeKube:
    def __init__(self, finish: Finish):
        self.finish = finish
        self.lock = threading.Lock()
        self.jobs: dict[str, dict] = {}
        self.configmaps: dict[str, dict] = {}
        self.secrets: dict[str, dict] = {}
        self.status_patches: list[dict] = []
        self.created_jobs: list[str] = []  # names, in creation order (a 409 adds nothing)
        self.requests: list[tuple[str, str]] = []
        self.fail_next: list[int] = []  # status codes to answer the next requests with
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeKube:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()

    def api_client(self) -> client.ApiClient:
        conf = client.Configuration()
        conf.host = f"http://127.0.0.1:{self.server.server_port}"
        return client.ApiClient(conf)

    @property
    def last_status(self) -> dict:
        with self.lock:
            return self.status_patches[-1] if self.status_patches else {}

    # -- the API ----------------------------------------------------------------------------

    def _job_view(self, name: str) -> dict:
        job = self.jobs[name]
        ending = self.finish(job, self.configmaps)
        if ending is not None:
            condition, _states = ending
            job["status"] = {
                "conditions": [
                    {"type": condition, "status": "True", "reason": "Done", "message": ""}
                ]
            }
        return job

    def _pods(self, job_name: str) -> list[dict]:
        job = self.jobs.get(job_name)
        ending = self.finish(job, self.configmaps) if job else None
        if job is None or ending is None:
            return []
        _condition, states = ending
        pod_spec = job["spec"]["template"]["spec"]
        init = [c["name"] for c in pod_spec.get("initContainers", [])]
        statuses = {
            name: {"name": name, "image": "i", "imageID": "", "ready": False, "restartCount": 0,
                   "state": state}
            for name, state in states.items()
        }  # fmt: skip
        return [
            {
                "metadata": {"name": f"{job_name}-pod", "creationTimestamp": NOW},
                "status": {
                    "phase": "Succeeded",
                    "startTime": NOW,
                    "initContainerStatuses": [statuses[n] for n in init if n in statuses],
                    "containerStatuses": [s for n, s in statuses.items() if n not in init],
                },
            }
        ]

    def handle(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path))
            if self.fail_next:
                return self.fail_next.pop(0), {"kind": "Status", "message": "injected"}
            m = re.fullmatch(r"/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?", path)
            if m:
                return self._jobs(method, m.group(1), m.group(2), body)
            m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/(configmaps|secrets)(?:/([^/]+))?", path)
            if m:
                store = self.configmaps if m.group(2) == "configmaps" else self.secrets
                return self._simple(store, method, m.group(1), m.group(3), body)
            m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path)
            if m:
                selector = query.get("labelSelector", [""])[0]
                job_name = selector.split("=", 1)[1]
                return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                             "items": self._pods(job_name)}  # fmt: skip
            if re.fullmatch(r"/api/v1/namespaces/[^/]+/pods/[^/]+/log", path):
                return 400, {"kind": "Status", "message": "no kubelet here"}
            m = re.fullmatch(
                r"/apis/autoresearch.dev/v1alpha1/namespaces/([^/]+)/researchorgs/([^/]+)/status",
                path,
            )
            if m and method == "PATCH":
                self.status_patches.append(body["status"])
                return 200, body
        return 404, {"kind": "Status", "message": f"no route {method} {path}"}

    def _jobs(self, method: str, ns: str, name: str | None, body: Any) -> tuple[int, Any]:
        if method == "POST":
            name = body["metadata"]["name"]
            if name in self.jobs:
                return 409, {"kind": "Status", "reason": "AlreadyExists"}
            body["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=NOW)
            self.jobs[name] = body
            self.created_jobs.append(name)
            return 201, body
        if name not in self.jobs:
            return 404, {"kind": "Status", "reason": "NotFound"}
        if method == "DELETE":
            del self.jobs[name]
            # The garbage collector: the Job's ConfigMap goes with it.
            self.configmaps = {
                k: v
                for k, v in self.configmaps.items()
                if all(o["name"] != name for o in v["metadata"].get("ownerReferences", []))
            }
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        return 200, self._job_view(name)

    def _simple(
        self, store: dict, method: str, ns: str, name: str | None, body: Any
    ) -> tuple[int, Any]:
        if method == "POST":
            if body["metadata"]["name"] in store:
                return 409, {"kind": "Status", "reason": "AlreadyExists"}
            store[body["metadata"]["name"]] = body
            return 201, body
        if name not in store:
            return 404, {"kind": "Status", "reason": "NotFound"}
        return 200, store[name]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                status, answer = fake.handle(self.command, url.path, parse_qs(url.query), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
