"""The operator's Jobs of one namespace, kept current by one list and one watch.

Every org's loop in the namespace waits on this cache for its runs to finish instead of polling
the API server for each Job: one watch stream per namespace replaces a GET per running Job per
poll. A restart lists once and resumes from the watch; a watch that expires (410 Gone) or fails
lists again. Waiters still read their Job directly now and then (JobClient.wait_finished), so a
missed event costs a delay, never a run.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, cast

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from .builders import MANAGED_BY

_JOBS = ("batch", "v1")
SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items() if k.endswith("managed-by"))
WATCH_SECONDS = 300  # the API server ends a watch after this; it is resumed from its version
RETRY_SECONDS = (1, 2, 4, 8, 15, 30)
REMEMBER_DELETED = 10000  # names of deleted Jobs kept, so a waiter learns its Job is gone


class JobInformer:
    """A thread that lists and watches the operator's Jobs in `namespace`; `lookup` and
    `wait_change` serve the org loops' threads."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        *,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ):
        self.objects = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._deleted: OrderedDict[str, str] = OrderedDict()  # name -> uid, last seen deleted
        self._changed: dict[str, threading.Event] = {}  # name -> set when that Job changes
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"jobs-informer-{namespace}", daemon=True
        )

    def start(self) -> JobInformer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def synced(self) -> bool:
        """The first list has landed: an absent Job is absent, not merely not yet seen."""
        return self._synced.is_set()

    def lookup(self, name: str, uid: str | None) -> tuple[dict[str, Any] | None, bool]:
        """(the Job as last seen, or None; whether the Job with `uid` is known to be gone)."""
        with self._lock:
            job = self._jobs.get(name)
            if job is not None and uid is not None and job["metadata"].get("uid") != uid:
                return None, True  # replaced by another Job of that name
            return job, uid is not None and self._deleted.get(name) == uid

    def wait_change(self, name: str, timeout: float) -> None:
        """Until the Job `name` changes or `timeout` passes."""
        with self._lock:
            event = self._changed.setdefault(name, threading.Event())
        event.wait(timeout)
        event.clear()

    def forget_waiter(self, name: str) -> None:
        with self._lock:
            self._changed.pop(name, None)

    # -- the watch thread -------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version: str | None = self._list()
                failures = 0
                while version is not None and not self._stop.is_set():
                    version = self._watch(version)  # None: expired, list again
            except Exception as err:  # the API server restarts, a network blip: list again
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                self.log.warning("watching Jobs in %s failed (%s); again in %ss",
                                 self.namespace, err, delay)  # fmt: skip
                self._stop.wait(delay)

    def _list(self) -> str:
        listed = cast(
            dict[str, Any],
            self.objects.list_namespaced_custom_object(
                *_JOBS, self.namespace, "jobs", label_selector=SELECTOR
            ),
        )
        jobs = {j["metadata"]["name"]: j for j in listed.get("items") or []}
        with self._lock:
            gone = set(self._jobs) - set(jobs)
            for name in gone:
                self._forget(name, self._jobs[name]["metadata"].get("uid", ""))
            self._jobs = jobs
            changed = [e for n, e in self._changed.items() if n in jobs or n in gone]
        self._synced.set()
        for event in changed:
            event.set()
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str | None:
        """Apply events from `version` on; the version to resume from, or None to list again."""
        stream = watch.Watch()
        try:
            for event in stream.stream(
                self.objects.list_namespaced_custom_object, *_JOBS, self.namespace, "jobs",
                label_selector=SELECTOR, resource_version=version,
                timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True,
            ):  # fmt: skip
                kind, job = event["type"], event["object"]
                if kind == "ERROR":
                    return None  # 410 Gone: the version is too old
                version = job["metadata"]["resourceVersion"]
                if kind != "BOOKMARK":
                    self._apply(kind, job)
                if self._stop.is_set():
                    return version
        except ApiException as err:
            if err.status == 410:
                return None
            raise
        finally:
            stream.stop()
        return version

    def _apply(self, kind: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._jobs.pop(name, None)
                self._forget(name, job["metadata"].get("uid", ""))
            else:
                self._jobs[name] = job
                self._deleted.pop(name, None)
            event = self._changed.get(name)
        if event is not None:
            event.set()

    def _forget(self, name: str, uid: str) -> None:
        self._deleted[name] = uid
        self._deleted.move_to_end(name)
        while len(self._deleted) > REMEMBER_DELETED:
            self._deleted.popitem(last=False)
