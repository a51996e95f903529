"""The operator's Jobs and their pods in one namespace, kept current by one list and one watch each.

Every org's loop in the namespace waits on these caches for its runs to finish, and reads how a
run ended from its pod, instead of polling the API server: one watch stream per namespace and
kind replaces a GET per running Job per poll and a list of pods per run. A restart lists once
and resumes from the watch; a watch that expires (410 Gone) or fails lists again. Waiters still
read their Job directly now and then (JobClient.wait_finished), and read the pods directly when
the cache has not caught up, so a missed event costs a delay, never a run.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Self, cast

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from .builders import MANAGED_BY

_JOBS = ("batch", "v1")
SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items() if k.endswith("managed-by"))
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
WATCH_SECONDS = 300  # the API server ends a watch after this; it is resumed from its version
RETRY_SECONDS = (1, 2, 4, 8, 15, 30)
REMEMBER_DELETED = 10000  # names of deleted objects kept, so a waiter learns its Job is gone


class Informer:
    """A thread that lists and watches one kind of the operator's objects in `namespace`; the
    org loops' threads read the cache and wait for changes under a key (a Job's name: the Job
    itself, or its pods). Subclasses say which list call and which key."""

    KIND = "objects"

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        *,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ):
        self.api = api
        self.namespace = namespace
        self.log = log or logging.getLogger(__name__)
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {}  # name -> object as last seen
        self._deleted: OrderedDict[str, str] = OrderedDict()  # name -> uid, last seen deleted
        self._changed: dict[str, threading.Event] = {}  # key -> set when one of its objects changes
        self._synced = threading.Event()
        self._stop = threading.Event()
        self.last_event: tuple[float, str] = (0.0, "")  # (monotonic time, resourceVersion)
        self._thread = threading.Thread(
            target=self._run, name=f"{self.KIND}-informer-{namespace}", daemon=True
        )

    # -- what a subclass says -------------------------------------------------------------------

    def _list_call(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The list method (also streamed for the watch) and its positional arguments."""
        raise NotImplementedError

    def _key(self, obj: dict[str, Any]) -> str | None:
        """The key waiters wait on for this object."""
        return str(obj["metadata"]["name"])

    def _listed(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> dict[str, Any]:
        return cast(dict[str, Any], fn(*args, label_selector=SELECTOR))

    # -- for the org loops ------------------------------------------------------------------------

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def synced(self) -> bool:
        """The first list has landed: an absent object is absent, not merely not yet seen."""
        return self._synced.is_set()

    def wait_change(self, key: str, timeout: float) -> None:
        """Until an object under `key` changes or `timeout` passes."""
        with self._lock:
            event = self._changed.setdefault(key, threading.Event())
        event.wait(timeout)
        event.clear()

    def forget_waiter(self, key: str) -> None:
        with self._lock:
            self._changed.pop(key, None)

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
                self.log.warning("watching %s in %s failed (%s); again in %ss",
                                 self.KIND, self.namespace, err, delay)  # fmt: skip
                self._stop.wait(delay)

    def _list(self) -> str:
        fn, args = self._list_call()
        listed = self._listed(fn, args)
        objects = {o["metadata"]["name"]: _slim(o) for o in listed.get("items") or []}
        with self._lock:
            gone = {n: self._objects[n] for n in set(self._objects) - set(objects)}
            for name, obj in gone.items():
                self._forget(name, obj["metadata"].get("uid", ""))
            self._objects = objects
            keys = {self._key(o) for o in (*objects.values(), *gone.values())}
            changed = [e for k, e in self._changed.items() if k in keys]
        self._synced.set()
        for event in changed:
            event.set()
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str | None:
        """Apply events from `version` on; the version to resume from, or None to list again."""
        fn, args = self._list_call()
        stream = watch.Watch()
        # deserialize=False: plain JSON dicts, as the cache keeps them; turning each event into
        # the client's models first costs ~25 times the CPU (0.87 ms a pod event, measured).
        events = stream.stream(
            fn, *args, label_selector=SELECTOR, resource_version=version,
            timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True, deserialize=False,
        )  # fmt: skip
        try:
            while True:
                try:
                    event = next(events)
                except StopIteration:
                    break
                except KeyError:  # an ERROR event (410 Gone), which the client's stream reads
                    return None  # through a key that only deserialized events have: list again
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    return None  # 410 Gone: the version is too old
                version = obj["metadata"]["resourceVersion"]
                self.last_event = (time.monotonic(), version)
                if kind != "BOOKMARK":
                    self._apply(kind, _slim(obj))
                if self._stop.is_set():
                    return version
        except ApiException as err:
            if err.status == 410:
                return None
            raise
        finally:
            stream.stop()
        return version

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._objects.pop(name, None)
                self._forget(name, obj["metadata"].get("uid", ""))
            else:
                self._objects[name] = obj
                self._deleted.pop(name, None)
            key = self._key(obj)
            event = self._changed.get(key) if key is not None else None
        if event is not None:
            event.set()

    def _forget(self, name: str, uid: str) -> None:
        self._deleted[name] = uid
        self._deleted.move_to_end(name)
        while len(self._deleted) > REMEMBER_DELETED:
            self._deleted.popitem(last=False)


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the cache keeps: managedFields are most of an object and nothing here reads them."""
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


class JobInformer(Informer):
    """The operator's Jobs; waiters wait under the Job's name."""

    KIND = "Jobs"

    def _list_call(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        objects = client.CustomObjectsApi(self.api)
        return objects.list_namespaced_custom_object, (*_JOBS, self.namespace, "jobs")

    def lookup(self, name: str, uid: str | None) -> tuple[dict[str, Any] | None, bool]:
        """(the Job as last seen, or None; whether the Job with `uid` is known to be gone)."""
        with self._lock:
            job = self._objects.get(name)
            if job is not None and uid is not None and job["metadata"].get("uid") != uid:
                return None, True  # replaced by another Job of that name
            return job, uid is not None and self._deleted.get(name) == uid


class PodInformer(Informer):
    """The pods of the operator's Jobs; waiters wait under their Job's name. Pods come as raw
    JSON, like JobClient.job_pods (the typed client refuses some valid quantities)."""

    KIND = "pods"

    def _list_call(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return client.CoreV1Api(self.api).list_namespaced_pod, (self.namespace,)

    def _listed(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> dict[str, Any]:
        raw = fn(*args, label_selector=SELECTOR, _preload_content=False)
        return cast(dict[str, Any], json.loads(raw.data))

    def _key(self, obj: dict[str, Any]) -> str | None:
        return (obj["metadata"].get("labels") or {}).get(JOB_NAME_LABEL)

    def pods_of(self, job_name: str, job_uid: str | None = None) -> list[dict[str, Any]]:
        """The cached pods of Job `job_name` (of the Job with `job_uid`, when given)."""
        with self._lock:
            return [
                p
                for p in self._objects.values()
                if self._key(p) == job_name
                and (job_uid is None or _controller_uid(p) in (None, job_uid))
            ]


def _controller_uid(pod: dict[str, Any]) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return cast(str | None, ref.get("uid"))
    return None
