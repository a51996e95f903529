"""Jobs, ConfigMaps and pods through the Kubernetes API, robust to a flaky API server.

Transient failures (connection errors, 429, 5xx) are retried with backoff for as long as the
caller is not stopping; everything else surfaces. Objects go and come back as plain camelCase
dicts, the shape the pure functions in results.py and builders.py work on: Jobs travel through
the generic CustomObjectsApi and pods are read as raw JSON, because the typed client validates
bodies more strictly than the API server does (it refuses `nvidia.com/gpu: 1`, an integer
quantity that the API server and every ResearchOrg example use).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from .informer import JOB_NAME_LABEL, JobInformer, PodInformer
from .results import job_finished, pods_settled

T = TypeVar("T")
# With an informer, a waiter still reads its Job this often: a missed watch event costs a delay.
RECHECK_SECONDS = 120.0
# A finished Job's pods are read from the pod watch once it has caught up (it trails the Job's
# by milliseconds); after this long they are listed directly.
POD_SETTLE_SECONDS = 5.0
TRANSIENT_STATUS = {0, 408, 429, 500, 502, 503, 504}
BACKOFF_SECONDS = (1, 2, 4, 8, 15, 30)
_JOBS = ("batch", "v1")  # group and version, for CustomObjectsApi


class Interrupted(Exception):
    """The operator is stopping. Whatever was in flight is left as it is (a running Job keeps
    running, an experiment stays committed but unrecorded) and is adopted on the next start."""


class KubernetesError(Exception):
    """The API refused a request that retrying will not fix (RBAC, an invalid object, ...)."""


def is_transient(err: BaseException) -> bool:
    if isinstance(err, ApiException):
        return (err.status or 0) in TRANSIENT_STATUS
    return isinstance(err, urllib3.exceptions.HTTPError | OSError)


def api_error(what: str, err: ApiException) -> KubernetesError:
    return KubernetesError(f"{what}: {err.status} {err.reason}: {(err.body or '')[:300]}")


class JobClient:
    """The calls the operator makes in one namespace. `wait(seconds)` sleeps and returns True
    when the caller is stopping (a kopf daemon's `stopped.wait`, a threading.Event's wait)."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        *,
        wait: Callable[[float], bool],
        poll_seconds: float = 10.0,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        informer: JobInformer | None = None,
        pods: PodInformer | None = None,
    ):
        self.objects, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.networking = client.NetworkingV1Api(api)
        self.namespace = namespace
        self.wait, self.poll_seconds = wait, poll_seconds
        self.informer, self.pods = informer, pods
        self.log = log or logging.getLogger(__name__)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs), retrying transient failures; raises Interrupted when stopping."""
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    raise
                delay = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                self.log.warning("%s failed (%s); retrying in %ss", what, err, delay)
                attempt += 1
                if self.wait(delay):
                    raise Interrupted(what) from err

    # -- Jobs ---------------------------------------------------------------------------------

    def read_job(self, name: str) -> dict[str, Any] | None:
        try:
            job = self.call(
                f"read Job {name}", self.objects.get_namespaced_custom_object,
                *_JOBS, self.namespace, "jobs", name,
            )  # fmt: skip
        except ApiException as err:
            if err.status == 404:
                return None
            raise api_error(f"read Job {name}", err) from err
        return cast(dict[str, Any], job)

    def create_or_adopt_job(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(the Job, created?): an existing Job of that name (409) is adopted as it is."""
        name = body["metadata"]["name"]
        try:
            job = self.call(
                f"create Job {name}", self.objects.create_namespaced_custom_object,
                *_JOBS, self.namespace, "jobs", body,
            )  # fmt: skip
            return cast(dict[str, Any], job), True
        except ApiException as err:
            if err.status != 409:
                raise api_error(f"create Job {name}", err) from err
        existing = self.read_job(name)
        if existing is None:  # deleted between the 409 and the read: try once more
            return self.create_or_adopt_job(body)
        return existing, False

    def delete_job(self, name: str) -> None:
        """Delete a Job with its pods and wait until it is gone."""
        try:
            self.call(
                f"delete Job {name}", self.objects.delete_namespaced_custom_object,
                *_JOBS, self.namespace, "jobs", name, propagation_policy="Foreground",
            )  # fmt: skip
        except ApiException as err:
            if err.status != 404:
                raise api_error(f"delete Job {name}", err) from err
        while self.read_job(name) is not None:
            if self.wait(1.0):
                raise Interrupted(f"waiting for Job {name} to be deleted")

    def wait_finished(
        self,
        name: str,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
        uid: str | None = None,
    ) -> dict[str, Any] | None:
        """Until the Job (with `uid`, when given) is Complete or Failed; None if it disappeared
        first. With an informer it waits on the namespace's watch, reading the Job itself only
        every RECHECK_SECONDS; without one it reads it every poll_seconds. `on_poll` is called
        every poll_seconds either way."""
        if self.informer is not None:
            return self._wait_watched(self.informer, name, on_poll, uid)
        while True:
            job = self.read_job(name)
            if job is None or job_finished(job):
                return job
            if on_poll is not None:
                on_poll(job)
            if self.wait(self.poll_seconds):
                raise Interrupted(f"waiting for Job {name}")

    def _wait_watched(
        self,
        informer: JobInformer,
        name: str,
        on_poll: Callable[[dict[str, Any]], None] | None,
        uid: str | None,
    ) -> dict[str, Any] | None:
        now = time.monotonic()
        # a Job just created (its uid known) is not read again before the first recheck
        recheck, next_poll = (now + RECHECK_SECONDS if uid else now), now
        try:
            while True:
                job, gone = informer.lookup(name, uid) if informer.synced else (None, False)
                if gone:
                    return None
                if time.monotonic() >= recheck:  # never trust the watch alone
                    cached, job = job, self.read_job(name)
                    if job is None or (uid and job["metadata"].get("uid") != uid):
                        return None
                    if job_finished(job) and not (cached and job_finished(cached)):
                        self._watch_missed(informer, job, cached)
                    uid = job["metadata"].get("uid")
                    recheck = time.monotonic() + RECHECK_SECONDS
                if job is not None and job_finished(job):
                    return job
                if on_poll is not None and time.monotonic() >= next_poll:
                    on_poll(job or {})
                    next_poll = time.monotonic() + self.poll_seconds
                informer.wait_change(name, 1.0)
                if self.wait(0):
                    raise Interrupted(f"waiting for Job {name}")
        finally:
            informer.forget_waiter(name)

    def _watch_missed(
        self, informer: JobInformer, job: dict[str, Any], cached: dict[str, Any] | None
    ) -> None:
        """A recheck found the Job finished before the watch said so: how far behind it was."""
        at, version = informer.last_event
        self.log.warning(
            "Job %s finished (resourceVersion %s) but its watch still had %s; the watch's last "
            "event (resourceVersion %s) came %.1f s ago",
            job["metadata"]["name"], job["metadata"].get("resourceVersion"),
            (cached or {}).get("metadata", {}).get("resourceVersion", "nothing"),
            version, time.monotonic() - at,
        )  # fmt: skip

    # -- ConfigMaps, pods, logs -------------------------------------------------------------------

    def _create_unless_exists(self, create: Callable[..., Any], body: dict[str, Any]) -> bool:
        """Create `body`; True when created, False when one of its name exists already (409)."""
        what = f"create {body['kind']} {self.namespace}/{body['metadata']['name']}"
        try:
            self.call(what, create, self.namespace, body)
        except ApiException as err:
            if err.status != 409:
                raise api_error(what, err) from err
            return False
        return True

    def create_configmap(self, body: dict[str, Any]) -> None:
        """Create a ConfigMap; one that exists already (409) is fine."""
        self._create_unless_exists(self.core.create_namespaced_config_map, body)

    def job_pods(self, job_name: str) -> list[dict[str, Any]]:
        """The Job's pods as they are now: from the pod watch where there is one."""
        if self.pods is not None and self.pods.synced:
            return self.pods.pods_of(job_name)
        return self.list_job_pods(job_name)

    def finished_pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """The pods of a finished Job, to tell how it ended: from the pod watch once it shows
        them stopped (Succeeded or Failed), else listed directly, so a watch that is behind or
        missed an event costs a request, never a wrong verdict."""
        name, uid = job["metadata"]["name"], job["metadata"].get("uid")
        pods = self.pods
        if pods is None:
            return self.list_job_pods(name)
        deadline = time.monotonic() + POD_SETTLE_SECONDS
        try:
            while pods.synced:
                cached = pods.pods_of(name, uid)
                if pods_settled(cached):
                    return cached
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                pods.wait_change(name, min(left, 1.0))
        finally:
            pods.forget_waiter(name)
        return self.list_job_pods(name)

    def list_job_pods(self, job_name: str) -> list[dict[str, Any]]:
        try:
            raw = self.call(
                f"list pods of Job {job_name}", self.core.list_namespaced_pod, self.namespace,
                label_selector=f"{JOB_NAME_LABEL}={job_name}", _preload_content=False,
            )  # fmt: skip
        except ApiException as err:
            raise api_error(f"list pods of Job {job_name}", err) from err
        # _preload_content=False: the raw response, not a V1PodList
        return list(json.loads(cast(Any, raw).data)["items"])

    def log_tail(self, pod: str, container: str, lines: int = 40) -> str | None:
        """The container's last lines, or None where logs cannot be read (best effort, no retry)."""
        try:
            text = self.core.read_namespaced_pod_log(
                pod, self.namespace, container=container, tail_lines=lines, _request_timeout=10
            )
        except Exception:  # logs are a nicety: a missing kubelet or RBAC rule must not fail a run
            return None
        return str(text)

    def read_secret_key(
        self, name: str, key: str, check: Callable[[dict[str, str]], None] | None = None
    ) -> str:
        """A Secret's value, decoded; KubernetesError names the Secret and key when missing.
        `check(annotations)` runs first and may refuse (k8s/secrets.py: where it may go)."""
        try:
            secret = self.call(
                f"read Secret {name}", self.core.read_namespaced_secret, name, self.namespace
            )
        except ApiException as err:
            raise api_error(f"read Secret {self.namespace}/{name}", err) from err
        if check is not None:
            check(dict((secret.metadata and secret.metadata.annotations) or {}))
        data = secret.data or {}
        if key not in data:
            raise KubernetesError(
                f"Secret {self.namespace}/{name} has no key {key!r} (keys: {', '.join(sorted(data)) or 'none'})"
            )
        return base64.b64decode(data[key]).decode()

    def ensure_network_policy(self, body: dict[str, Any]) -> bool:
        """Create the NetworkPolicy unless one of that name exists; True when it was created.
        An existing one is left as it is (an administrator may have widened it on purpose)."""
        return self._create_unless_exists(self.networking.create_namespaced_network_policy, body)

    def read_configmap_key(self, name: str, key: str) -> str:
        try:
            cm = self.call(
                f"read ConfigMap {name}", self.core.read_namespaced_config_map, name, self.namespace
            )
        except ApiException as err:
            raise api_error(f"read ConfigMap {self.namespace}/{name}", err) from err
        data = cm.data or {}
        if key not in data:
            raise KubernetesError(
                f"ConfigMap {self.namespace}/{name} has no key {key!r} (keys: {', '.join(sorted(data)) or 'none'})"
            )
        return str(data[key])
